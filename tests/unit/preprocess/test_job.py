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
