"""Runner choice, and the pipeline shapes Beam's Dask runner would run wrongly, refused before any work."""

import os
from collections.abc import Iterable

import apache_beam as beam
import pytest

from preprocess.config import ConfigError, parse_args
from preprocess.runners import (
    DASK_RUNNER,
    check_dask_shape,
    is_dask,
    local_tokenizer_threads,
    pipeline_options,
)


def test_default_local_run_uses_every_core_in_worker_processes():
    opts, runner = pipeline_options([])
    direct = opts.get_all_options()
    assert runner is not None
    assert direct["direct_num_workers"] == (os.cpu_count() or 1)
    expected = "multi_processing" if (os.cpu_count() or 1) > 1 else "in_memory"
    assert direct["direct_running_mode"] == expected


def test_explicit_beam_options_are_kept():
    opts, runner = pipeline_options(["--direct_num_workers=3", "--direct_running_mode=multi_threading"])
    assert opts.get_all_options()["direct_num_workers"] == 3
    assert opts.get_all_options()["direct_running_mode"] == "multi_threading"
    _, runner = pipeline_options(["--runner", "DataflowRunner"])
    assert runner is None  # any named runner is Beam's to build


def test_worker_processes_share_the_cores_for_tokenization():
    opts, _ = pipeline_options(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert local_tokenizer_threads(opts) == max(1, (os.cpu_count() or 1) // 2)
    opts, _ = pipeline_options(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert local_tokenizer_threads(opts) is None


def test_tokenize_fn_caps_its_thread_pool(monkeypatch, vocab_file):
    from preprocess.stages.tokenize import _TokenizeFn
    from preprocess.tokenization import TokenizerSpec

    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    _TokenizeFn(TokenizerSpec(vocab_file), 64, "uint16", threads=3).setup()
    assert os.environ["RAYON_NUM_THREADS"] == "3"


def test_dask_runner_short_names_name_beams_dask_runner():
    for name in ("dask", "DaskRunner", DASK_RUNNER):
        opts, runner = pipeline_options(["--runner", name])
        assert runner is None and is_dask(opts)
        assert opts.get_all_options()["runner"] == DASK_RUNNER
    assert not is_dask(pipeline_options(["--runner", "DataflowRunner"])[0])


class _TwoOutputs(beam.DoFn):
    def process(self, x):
        yield x
        yield beam.pvalue.TaggedOutput("other", x)


class _EmitsAtBundleEnd(beam.DoFn):
    def process(self, x):
        yield x

    def finish_bundle(self):
        pass


def _problems(build) -> str:
    p = beam.Pipeline()
    build(p)
    with pytest.raises(ConfigError) as e:
        check_dask_shape(p)
    return str(e.value)


def _sink(pcoll, label="Sink"):
    return pcoll | label >> beam.Map(lambda x: x)


def test_multi_output_pardo_is_refused():
    def build(p):
        out = p | beam.Create([1, 2]) | "Two" >> beam.ParDo(_TwoOutputs()).with_outputs("other", main="main")
        (out.main, out.other) | beam.Flatten() | beam.Map(print)

    assert "Two/ParDo(_TwoOutputs): a ParDo with several outputs" in _problems(build)


def test_side_inputs_are_refused():
    def build(p):
        side = p | "Side" >> beam.Create([1])
        p | beam.Create([1, 2]) | "UsesSide" >> beam.Map(lambda x, s: x, s=beam.pvalue.AsList(side))

    assert "UsesSide: side inputs" in _problems(build)


def test_finish_bundle_outputs_reshuffle_and_reads_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    assert "_EmitsAtBundleEnd.finish_bundle" in _problems(
        lambda p: p | beam.Create([1]) | "Ends" >> beam.ParDo(_EmitsAtBundleEnd()))
    assert "_GlobalWindowsBatchingDoFn.finish_bundle" in _problems(
        lambda p: p | beam.Create([1]) | beam.BatchElements())
    assert "Reshuffle is not translated" in _problems(lambda p: _sink(p | beam.Create([1]) | beam.Reshuffle()))
    assert "Read is not translated" in _problems(lambda p: _sink(p | beam.io.ReadFromText(str(tmp_path / "a.txt"))))


def test_a_second_sink_is_refused():
    def build(p):
        data = p | beam.Create([1, 2])
        _sink(data, "First")
        _sink(data, "Second")

    assert "several sinks (First, Second)" in _problems(build)


@pytest.mark.parametrize("validation", ["0", "0.1"])
def test_the_jobs_own_pipeline_has_the_shape_the_dask_runner_runs(vocab_file, tmp_path, validation):
    from preprocess.job import job_pipeline
    from preprocess.tokenization import TokenizerSpec, build_tokenizer, vocab_info

    cfg, beam_args = parse_args(["--input", "x.txt", "--output", str(tmp_path), "--vocab", vocab_file,
                                 "--validation-fraction", validation, "--runner", "dask"])
    spec = TokenizerSpec(vocab_file)
    opts, _ = pipeline_options(beam_args)
    check_dask_shape(job_pipeline(cfg, ["x.txt"], vocab_info(build_tokenizer(spec), spec), opts))


def new_mappings_after_allocating(size: int = 1 << 20) -> int:
    """glibc's mmapped chunks (``malloc_info``'s count) that allocating five buffers of ``size`` adds."""
    import ctypes
    import re
    import tempfile

    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]

    def mmapped() -> int:
        with tempfile.NamedTemporaryFile("r") as out:
            f = libc.fopen(out.name.encode(), b"w")
            libc.malloc_info(0, f)
            libc.fclose(f)
            return int(re.search(r'<total type="mmap" count="(\d+)"', out.read()).group(1))

    before = mmapped()
    keep = [bytearray(size) for _ in range(5)]
    return mmapped() - before + 0 * len(keep)


GLIBC = os.path.exists("/lib/x86_64-linux-gnu/libc.so.6") or os.path.exists("/lib64/libc.so.6")


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_dask_workers_get_glibcs_allocation_thresholds_back():
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold
    at 128 KiB: every 1 MiB array is a fresh mapping. Restored, arrays of that size come from the heap."""
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    script = ("import sys; from preprocess.runners import restore_malloc_thresholds as r; "
              "from tests.unit.preprocess.test_runners import new_mappings_after_allocating as n; "
              "assert sys.argv[1] != 'restore' or r(); print(n())")

    def new_mappings(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True, text=True,
                             check=True, cwd=os.path.dirname(__file__) + "/../../..")
        return int(out.stdout.split()[-1])

    assert new_mappings("as-dask-starts-it") == 5
    assert new_mappings("restore") == 0


def write_group(directory: str):
    def write(group: tuple[int, Iterable[int]]) -> None:
        key, values = group
        with open(os.path.join(directory, f"{key}.txt"), "w") as f:
            f.write(" ".join(map(str, sorted(values))))

    return write


@pytest.mark.integration
def test_run_on_dask_runs_the_very_pipeline_it_checked(monkeypatch, tmp_path):
    """Not a copy made through Beam's portable form (Pipeline.run's test_runner_api), which pickles
    every stage again first; the runner gets the object whose shape was checked, and runs it."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.dask_runner import DaskRunner
    from distributed import LocalCluster

    from preprocess.runners import run_on_dask

    given = []
    run_pipeline = DaskRunner.run_pipeline

    def spy(self, pipeline, options):
        given.append(pipeline)
        return run_pipeline(self, pipeline, options)

    monkeypatch.setattr(DaskRunner, "run_pipeline", spy)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        opts = PipelineOptions(["--runner", DASK_RUNNER, "--dask_client_address", cluster.scheduler_address])
        p = beam.Pipeline(options=opts)
        _ = (p | beam.Create(range(10)) | beam.Map(lambda x: (x % 2, x)) | beam.GroupByKey()
             | beam.Map(write_group(str(tmp_path))))
        run_on_dask(p)
    assert given == [p]
    assert (tmp_path / "0.txt").read_text() == "0 2 4 6 8" and (tmp_path / "1.txt").read_text() == "1 3 5 7 9"


def test_a_shuffle_on_dask_joins_its_inputs_partitions_first():
    pytest.importorskip("distributed")
    import dask
    from apache_beam.runners.dask.dask_runner import DaskRunner
    from apache_beam.runners.dask.overrides import dask_overrides

    from preprocess.cluster import release_bundle_outputs
    from preprocess.runners import coalesced_shuffles

    release_bundle_outputs()  # in one process, as here, the runner's receivers are shared by the partitions

    def translate(partitions, label="GroupByKey", heavy=None):
        p = beam.Pipeline()
        _ = (p | beam.Create(range(400)) | beam.Map(lambda x: (x % 7, x)) | label >> beam.GroupByKey()
             | beam.MapTuple(lambda k, vs: (k, sorted(vs))))
        p.replace_all(dask_overrides())  # as the runner translates a pipeline
        visitor = DaskRunner.to_dask_bag_visitor({"npartitions": 40})
        with dask.config.set({"dataframe.shuffle.method": "tasks"}):  # as run_on_dask has it
            if partitions:
                with coalesced_shuffles(partitions, heavy):
                    p.visit(visitor)
            else:
                p.visit(visitor)
        last = list(visitor.bags.values())[-1]
        keys = [k[0] if isinstance(k, tuple) else k for k in dict(last.__dask_graph__())]
        return last, sum(str(k).startswith("shuffle-") for k in keys)

    plain, plain_tasks = translate(None)
    joined, joined_tasks = translate(4)
    assert plain.npartitions >= 40 and joined.npartitions == 4
    assert joined_tasks * 10 < plain_tasks  # the shuffle's own tasks: ~n x k x stages for n partitions
    # a shuffle before the heavy work puts its groups in more, smaller partitions; others do not
    spread, _ = translate(4, "GatherGroups", heavy=16)
    assert spread.npartitions == 16 and translate(4, "SumStats", heavy=16)[0].npartitions == 4
    def result(bag):  # the runner's elements are windowed values
        return sorted((v.value if hasattr(v, "value") else v) for v in bag.compute(scheduler="sync"))

    expected = [(k, [x for x in range(400) if x % 7 == k]) for k in range(7)]
    assert result(joined) == result(plain) == result(spread) == expected
