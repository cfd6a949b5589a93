"""Runner choice, and the pipeline shapes Beam's Dask runner would run wrongly, refused before any work."""

import os

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
