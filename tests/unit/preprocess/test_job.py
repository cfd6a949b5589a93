import os

import pytest

from preprocess.config import ConfigError
from preprocess.job import expand_inputs


def test_inputs_are_sorted_deduplicated_and_unmatched_patterns_fail(tmp_path):
    for name in ("b.txt", "a.txt", "c.jsonl"):
        (tmp_path / name).write_text("x\n")
    files = expand_inputs((str(tmp_path / "*.txt"), str(tmp_path / "a.txt"), str(tmp_path / "*.jsonl")))
    assert [os.path.basename(f) for f in files] == ["a.txt", "b.txt", "c.jsonl"]
    with pytest.raises(ConfigError, match="no files match"):
        expand_inputs((str(tmp_path / "*.gz"),))


def test_a_directory_is_its_parquet_files_at_any_depth(tmp_path):
    for name in ("train-0.parquet", "sub/train-1.parquet", "sub/deeper/x.pq", "README.md", "_SUCCESS",
                 "_temporary/part-9.parquet", ".git/objects/y.parquet", "sub/.hidden.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"PAR1")
    files = expand_inputs((str(tmp_path),))
    assert [os.path.relpath(f, tmp_path) for f in files] == ["sub/deeper/x.pq", "sub/train-1.parquet",
                                                              "train-0.parquet"]
    assert expand_inputs((str(tmp_path) + "/",)) == files
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x\n")
    with pytest.raises(ConfigError, match="is a directory without Parquet files; give files or a glob"):
        expand_inputs((str(tmp_path / "text"),))
