"""The README's one-command demo, shortened: preprocess, train, plot, export, fill-mask."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.run_dir import RunDir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_demo_runs_the_whole_pipeline(tmp_path):
    pytest.importorskip("transformers")
    proc = subprocess.run([sys.executable, "-m", "pretrain.demo", "--output", str(tmp_path / "demo"), "--steps", "200"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    line = next(x for x in out.splitlines() if x.startswith("loss "))
    first, last = (float(v) for v in line.split(";")[0].removeprefix("loss ").split(" -> "))
    accuracy = [float(v) for v in re.findall(r"(\d+\.\d)%", line.split("held-out MLM accuracy ")[1])[:2]]
    # visibly learning in 200 of the README demo's 2,500 steps. The demo is exact on a machine (vocabulary included), so
    # this is one fixed outcome: loss 6.50 -> 5.49, held-out MLM accuracy 7.0% -> 14.5% (measured 2026-12-07;
    # at 150 steps the model still sits on the plateau where it predicts frequent tokens: 5.2% -> 7.0%)
    assert last < first - 0.5, line
    assert accuracy[1] > accuracy[0] + 4, line
    assert "Return a new [MASK] object." in out
    held_out = [x.split("] -> ") for x in out.splitlines() if x.lstrip().startswith("[") and "] -> " in x]
    guesses = [re.findall(r"(\S+) (\d\.\d\d)(?:, |$)", g) for _, g in held_out]  # "token 0.12, ..."
    assert held_out and all(len(g) == 5 for g in guesses), held_out  # top-5 fill-mask guesses
    assert all(0 <= float(p) <= 1 for g in guesses for _, p in g)  # each with its probability
    progress = ("train: ", "preprocess: ")  # plain progress lines, one every 30 s without a terminal
    shown = [x for x in proc.stdout.splitlines() + proc.stderr.splitlines() if not x.startswith(progress)]
    assert len(shown) <= 45, proc.stderr[-3000:]
    run = RunDir(tmp_path / "demo" / "run")
    for path in (tmp_path / "demo" / "data" / "manifest.json", run.curves, run.export / "model.safetensors",
                 run.export / "vocab.txt"):
        assert path.exists(), path
