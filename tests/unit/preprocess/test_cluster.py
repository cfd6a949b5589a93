"""The Dask cluster a job runs on: the settings its processes run with, and its workers' set-up."""

import logging
import os
from pathlib import Path

import apache_beam as beam
import pytest

from preprocess.runners import DASK_RUNNER
from tests.unit.preprocess.test_runners import GLIBC, new_mappings_after_allocating

ROOT = Path(__file__).resolve().parents[3]


def test_the_quiet_settings_are_the_variables_dask_reads():
    """What the sbatch script and the benchmark export is what the job's own cluster sets."""
    import dask

    from preprocess.cluster import QUIET, environment

    read = dask.config.collect_env(environment())
    assert {key: dask.config.get(key, config=read) for key in QUIET} == QUIET


def background(dask_worker) -> dict[str, float]:
    """How often this Dask server wakes its event loop for Dask's background work (ms; 0: never)."""
    callbacks = dask_worker.periodic_callbacks
    return {name: callbacks[name].callback_time if name in callbacks else 0
            for name in ("profile", "tick", "memory_monitor", "monitor")}


@pytest.mark.integration
def test_the_jobs_own_dask_cluster_runs_quiet_and_a_louder_one_is_named(monkeypatch):
    """Dask's background work wakes a worker's event loop, which takes the GIL from the stages: the
    profiler every 10 ms, the tick every 20 ms, the memory monitor every 100 ms, the system monitor
    every 500 ms by default."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.dask_runner import DaskOptions
    from distributed import Client, LocalCluster

    from preprocess import cluster as cluster_module
    from preprocess.cluster import dask_cluster, environment

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("tests.dask-background-hint")  # the job's log, whatever earlier tests did to logging
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    monkeypatch.setattr(cluster_module, "log", logger)
    quiet = {"profile": 0, "tick": 1000, "memory_monitor": 500, "monitor": 2000}
    opts = PipelineOptions(["--runner", DASK_RUNNER])
    with dask_cluster(opts, 2):  # a local cluster of its own
        with Client(opts.view_as(DaskOptions).address) as client:
            assert list(client.run(background).values()) == [quiet] * (os.cpu_count() or 1)
            assert client.run_on_scheduler(background)["tick"] == 1000
    assert not any("background work" in r for r in records)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:  # Dask's defaults
        opts = PipelineOptions(["--runner", DASK_RUNNER, "--dask_client_address", cluster.scheduler_address])
        with dask_cluster(opts, 2):
            pass
    hint = [r for r in records if "background work" in r]
    assert len(hint) == 1 and all(f"{name}={value}" in hint[0] for name, value in environment().items())


def test_the_sbatch_script_starts_its_cluster_as_quiet_as_the_jobs_own():
    from preprocess.cluster import environment

    script = (ROOT / "slurm" / "preprocess.sbatch").read_text()
    for name, value in environment().items():
        assert f"{name}=${{{name}:-{value}}}" in script


@pytest.mark.integration
@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_the_jobs_worker_plugin_restores_them_on_a_dask_worker():
    from distributed import Client, LocalCluster

    from preprocess.cluster import _worker_setup

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            assert list(client.run(new_mappings_after_allocating).values()) == [5]  # as Dask starts a worker
            client.register_plugin(_worker_setup(quiet=False), name="bert-pipeline-worker")
            assert list(client.run(new_mappings_after_allocating).values()) == [0]


class Marker:
    """A stage's output whose copies a later stage can count."""


def markers_alive(_) -> list[int]:
    import gc

    return [sum(isinstance(o, Marker) for o in gc.get_objects())]


@pytest.mark.integration
def test_a_dask_worker_frees_each_stages_outputs_once_the_next_stage_has_them():
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to
    from distributed import Client, LocalCluster

    from preprocess.cluster import _worker_setup

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.register_plugin(_worker_setup(quiet=False), name="bert-pipeline-worker")
            opts = PipelineOptions(["--runner", DASK_RUNNER, "--dask_client_address", cluster.scheduler_address,
                                    "--dask_npartitions", "4"])
            with beam.Pipeline(options=opts) as p:
                alive = (p | beam.Create(range(40))
                         | "Make" >> beam.FlatMap(lambda i: [Marker() for _ in range(100)])
                         | "Drop" >> beam.Map(lambda m: (0, 1))
                         | beam.GroupByKey()  # every Make and Drop task has run when this is grouped
                         | "Count" >> beam.FlatMap(markers_alive))
                assert_that(alive, equal_to([0]))  # without the release: all 4,000 still alive


