"""No test can hang the suite: pytest-timeout is active with a limit per test, and a hung test fails
with a stack dump while the others go on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_has_a_time_limit():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < options["timeout"] <= 300


def test_a_hung_test_fails_with_its_stack_and_the_next_test_runs(tmp_path):
    (tmp_path / "test_hang.py").write_text(
        "import time\n\n"
        "def test_hangs():\n    time.sleep(600)\n\n"
        "def test_after():\n    assert True\n")
    started = time.time()
    # the project's own configuration (its addopts and limit), with a short limit for this check
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                           "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "--timeout", "1",
                           str(tmp_path / "test_hang.py")], capture_output=True, text=True, timeout=120)
    assert time.time() - started < 60
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "Timeout (>1.0s) from pytest-timeout" in proc.stdout and "time.sleep(600)" in proc.stdout  # where it hung
    assert "1 failed, 1 passed" in proc.stdout
