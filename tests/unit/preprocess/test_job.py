import os

import pytest

from preprocess.config import ConfigError
from preprocess.job import expand_inputs, local_tokenizer_threads, pipeline_options


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


def test_inputs_are_sorted_deduplicated_and_unmatched_patterns_fail(tmp_path):
    for name in ("b.txt", "a.txt", "c.jsonl"):
        (tmp_path / name).write_text("x\n")
    files = expand_inputs((str(tmp_path / "*.txt"), str(tmp_path / "a.txt"), str(tmp_path / "*.jsonl")))
    assert [os.path.basename(f) for f in files] == ["a.txt", "b.txt", "c.jsonl"]
    with pytest.raises(ConfigError, match="no files match"):
        expand_inputs((str(tmp_path / "*.gz"),))
