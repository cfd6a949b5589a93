"""The Dask cluster a job runs on: the one its options name, or a local one started for it; the
settings its processes run with; and the plugin that sets up each of its workers."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator

from apache_beam.options.pipeline_options import PipelineOptions

from preprocess import logs
from preprocess.config import ConfigError
from preprocess.runners import restore_malloc_thresholds

log = logging.getLogger("preprocess")

# Dask's background work in every process of a cluster, for its dashboard and diagnostics, at what
# this job needs. Each of these wakes a worker's event loop, which then takes the GIL from the thread
# running the stages: with Dask's defaults, a worker held to one core took ~0.5 s of involuntary
# switches and run-queue waits from that thread on 47 MB, and its event loop ~0.25 s more CPU; with
# these, ~0.15 s (docs/benchmarks.md). Dask's defaults in the comments.
QUIET = {
    # every thread's stack sampled every 10 ms for the dashboard's profiles: ~4% of a worker's CPU
    "distributed.worker.profile.enabled": False,
    # the event loop's health measured 50 times a second; it still warns of a loop blocked > 3 s
    "distributed.admin.tick.interval": "1s",
    # the process's memory against its limits, 10 times a second (spilling, pausing, the nanny's restart)
    "distributed.worker.memory.monitor-interval": "500ms",
    # CPU, memory, disk and network figures for the dashboard, twice a second
    "distributed.admin.system-monitor.interval": "2s",
}


def _variable(key: str) -> str:
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def environment() -> dict[str, str]:
    """:data:`QUIET` as the environment variables Dask reads when a process starts."""
    return {_variable(key): str(value) for key, value in QUIET.items()}


def louder_than_quiet() -> list[str]:
    """The settings of :data:`QUIET` this process runs more often, by their variables (for ``Client.run``)."""
    import distributed  # noqa: F401  (Dask's defaults for it)
    from dask import config
    from dask.utils import parse_timedelta

    def louder(value: object, quiet: object) -> bool:
        return value != quiet if isinstance(quiet, bool) else parse_timedelta(value) < parse_timedelta(quiet)

    return [_variable(key) for key, quiet in QUIET.items() if louder(config.get(key), quiet)]


def dask_options(opts: PipelineOptions) -> object:
    try:
        import distributed  # noqa: F401
        from apache_beam.runners.dask.dask_runner import DaskOptions
    except ImportError as e:
        raise ConfigError(f"--runner dask: {e}; install the extra: pip install 'bert-pipeline[dask]'") from e
    return opts.view_as(DaskOptions)


@contextlib.contextmanager
def dask_cluster(opts: PipelineOptions, parts: int) -> Iterator[int]:
    """Point ``opts`` at the cluster they name, or at a local one started for this job, with one
    partition per input part. Set before the pipeline is made (a pipeline copies its options).

    A local cluster has one single-threaded worker process per core, so the tokenizer in
    each runs one thread (:func:`preprocess.stages.tokenize.dask_worker_threads`), and every process
    runs with :data:`QUIET` (on other clusters, the job says what to set). Yields the worker threads.
    """
    from dask import config as dask_config
    from distributed import Client, LocalCluster

    dask = dask_options(opts)
    cluster = None
    if not dask.address and not dask.scheduler_file:
        with dask_config.set(QUIET):  # the nannies hand their config to the workers
            cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        dask.address = cluster.scheduler_address
    try:
        kwargs = {"scheduler_file": dask.scheduler_file} if dask.scheduler_file else {"address": dask.address}
        with Client(timeout=dask.timeout or 60, **kwargs) as client:
            client.wait_for_workers(1, timeout=300)
            threads = sum(client.nthreads().values())
            client.register_plugin(_worker_setup(logs.is_quiet()), name="bert-pipeline-worker")
            louder = sorted({name for names in client.run(louder_than_quiet).values() for name in names})
            if louder:
                log.info("Dask runner: the workers run Dask's background work more often than this job needs "
                         "(each wake-up takes the GIL from the stages); start them with %s, as slurm/preprocess.sbatch does",
                         " ".join(f"{name}={value}" for name, value in environment().items() if name in louder))
        if not dask.npartitions and not dask.partition_size:
            dask.npartitions = max(1, parts)
        log.info("Dask runner: %d worker threads; the input parts in %s partitions", threads,
                 dask.npartitions or f"{dask.partition_size}-file")
        yield threads
    finally:
        if cluster is not None:
            cluster.close()


def release_bundle_outputs() -> None:
    """Let a Dask worker free each ParDo's outputs once the next task has them.

    Beam's Dask runner runs a ``DoFn`` over a partition in ``apply_dofn_to_bundle``, which collects
    the outputs in a receiver, one of the task's own arguments, and returns a new list of them. The
    worker keeps a task's arguments while the job runs, so every ParDo's whole output stayed alive:
    530 MB of documents, sentences and token batches (pickled) at the end of a 100 MB job on one
    worker. The receiver is emptied once the list is made. Applied in each worker, before any task.
    """
    from apache_beam.runners.dask import transform_evaluator

    original = transform_evaluator.apply_dofn_to_bundle
    if getattr(original, "releases_outputs", False):
        return

    @functools.wraps(original)
    def apply_dofn_to_bundle(items, do_fn_invoker_args, do_fn_invoker_kwargs, tagged_receivers):
        try:
            return original(items, do_fn_invoker_args, do_fn_invoker_kwargs, tagged_receivers)
        finally:
            tagged_receivers.values.clear()

    apply_dofn_to_bundle.releases_outputs = True  # type: ignore[attr-defined]
    transform_evaluator.apply_dofn_to_bundle = apply_dofn_to_bundle


def _worker_setup(quiet: bool) -> object:
    """A Dask worker plugin: glibc's allocation thresholds back (:func:`restore_malloc_thresholds`) and,
    when ``quiet``, the filters :func:`preprocess.logs.setup` sets here (workers import Beam, which logs
    a notice on import). Registered by the client, so it reaches the workers of any cluster."""
    from distributed import WorkerPlugin

    class WorkerSetup(WorkerPlugin):
        def setup(self, worker: object) -> None:
            restore_malloc_thresholds()
            release_bundle_outputs()
            if quiet:
                logs.drop_beam_import_notice()

    return WorkerSetup()
