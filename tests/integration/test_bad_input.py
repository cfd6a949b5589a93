"""Bad input to both command lines, case by case: the exit code, one clear line naming what and
where, no traceback, and nothing else lost (no output made, the dataset and run left as they were).

Bad *content* among good input (binary, empty, NUL-only, fake or truncated gzip, a 50 MB line,
broken JSON lines) is not an error but a counted skip: see
``test_preprocess_job.py::test_bad_input_is_counted_and_every_usable_document_contributes``.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import launch

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_process(*args: str) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in a process of its own, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


# Cases that go through a process of their own: one of each command line's refusals (the real entry
# point, exit code and stderr), and the one that starts training (a process group) before it refuses.
IN_A_PROCESS = {"glob matching nothing", "missing config file", "bit-flipped shards"}


@pytest.fixture
def run(request, monkeypatch, capsys):
    """``run(module, *args)``: the command's exit code and output; in this process (its ``main``, the same
    code less the interpreter's start), or through :func:`run_process` for the cases in ``IN_A_PROCESS``."""
    case = request.node.callspec.params.get("case")
    saved = dict(os.environ)  # a run sets RANK, WORLD_SIZE, MASTER_PORT...: none may reach later tests

    def restore() -> None:
        os.environ.clear()
        os.environ.update(saved)

    request.addfinalizer(restore)

    def call(module: str, *args: str) -> subprocess.CompletedProcess:
        if case in IN_A_PROCESS:
            return run_process(module, *args)
        from preprocess.__main__ import main as preprocess_main
        from pretrain.__main__ import main as pretrain_main

        monkeypatch.chdir(ROOT)
        monkeypatch.setenv("WANDB_MODE", "disabled")
        capsys.readouterr()
        try:
            code = {"preprocess": preprocess_main, "pretrain": pretrain_main}[module](list(args))
        except SystemExit as e:  # argparse's own refusals
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess([module, *args], code, out, err)

    return call


def assert_one_clear_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    message = errors[0] + "\n" + proc.stderr.split(errors[0], 1)[1]  # with its indented detail lines
    for needle in needles:
        assert needle in message, (needle, message)
    return errors[0]


# --------------------------------------------------------------------------- python -m preprocess
def _file(tmp: Path, name: str, data: bytes) -> str:
    (tmp / name).write_bytes(data)
    return str(tmp / name)


PREPROCESS_CASES = {
    # name: (argument changes given (tmp, corpus_dir, vocab), exit code, what the line must say)
    "directory as input": (lambda t, c, v: {"--input": str(c)}, 2, ["is a directory", "**/*.txt"]),
    "glob matching nothing": (lambda t, c, v: {"--input": str(c / "*.nope")}, 2, ["*.nope: no files match"]),
    "missing vocabulary": (lambda t, c, v: {"--vocab": str(t / "missing.txt")}, 2,
                           ["cannot read vocabulary", "missing.txt"]),
    "binary vocabulary": (lambda t, c, v: {"--vocab": _file(t, "v.bin", bytes(range(256)) * 8)}, 2,
                          ["v.bin is not UTF-8"]),
    "vocabulary without specials": (lambda t, c, v: {"--vocab": _file(t, "v.txt", b"[UNK]\na\nb\n")}, 2,
                                    ["v.txt lacks BERT special tokens: [PAD], [CLS]"]),
    "output is a file": (lambda t, c, v: {"--output": _file(t, "taken", b"keep me")}, 2,
                         ["--output", "taken: is a file"]),
    "output under a file": (lambda t, c, v: {"--output": _file(t, "taken", b"keep me") + "/out"}, 2,
                            ["--output", "taken/out: cannot create it (Not a directory at", "taken",
                             "whose parent exists and is writable"]),
    "zero shards": (lambda t, c, v: {"--num-shards": "0"}, 2, ["--num-shards 0: Input should be greater"]),
    "sequence length too short": (lambda t, c, v: {"--max-seq-length": "4"}, 2, ["--max-seq-length 4"]),
    "sequence length too long": (lambda t, c, v: {"--max-seq-length": "70000"}, 2, ["--max-seq-length 70000"]),
    "probability above 1": (lambda t, c, v: {"--masked-lm-prob": "1.5"}, 2, ["--masked-lm-prob 1.5"]),
    "negative probability": (lambda t, c, v: {"--short-seq-prob": "-0.1"}, 2, ["--short-seq-prob -0.1"]),
    "not a number": (lambda t, c, v: {"--dupe-factor": "five"}, 2, ["--dupe-factor", "invalid int value"]),
    "misspelt option": (lambda t, c, v: {"--max-seq-lenght": "256"}, 2, ["did you mean --max-seq-length?"]),
    "only empty input": (lambda t, c, v: {"--input": _file(t, "empty.txt", b"")}, 1,
                         ["no training sequences were produced"]),
}


@pytest.mark.parametrize("case", sorted(PREPROCESS_CASES))
def test_preprocess_rejects(case, corpus_dir, vocab_file, tmp_path, run):
    change, code, needles = PREPROCESS_CASES[case]
    options = {"--input": str(corpus_dir / "part-000.txt"), "--output": str(tmp_path / "out"), "--vocab": vocab_file,
               "--num-shards": "1", "--dupe-factor": "1"}
    options.update(change(tmp_path, corpus_dir, Path(vocab_file)))
    args = [a for k, v in options.items() for a in (k, v)] + ["--direct_running_mode=in_memory"]
    proc = run("preprocess", *args)
    if case == "not a number":  # argparse's own message: usage, then one error line
        assert proc.returncode == 2 and "invalid int value: 'five'" in proc.stderr and "Traceback" not in proc.stderr
        return
    assert_one_clear_line(proc, code, *needles)
    if code == 2:  # refused before any work: nothing written
        assert not (tmp_path / "out").exists()
    if case in ("output is a file", "output under a file"):
        assert (tmp_path / "taken").read_bytes() == b"keep me"


# --------------------------------------------------------------------------- python -m pretrain
def _flip(path: Path, every: int = 256) -> None:
    """Bit rot throughout a file, its size unchanged: one byte in ``every`` inverted past the header."""
    data = bytearray(path.read_bytes())
    for i in range(4096, len(data) - 4096, every):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _shard(d: Path) -> Path:
    return sorted((d / "train").glob("shard-*.arrow"))[0]


def _damage(kind: str, data: Path, tmp: Path, run_dir: Path) -> tuple[list[str], list[str]]:
    """Damage a copy of the dataset (or make a bad config or run directory); the extra arguments and
    what the line says."""
    if kind == "run directory is a file":
        run_dir.write_text("keep me")
        return [], [f"run_dir {run_dir}: is an existing file", "give a directory"]
    if kind == "run directory under a file":
        (tmp / "taken").write_text("keep me")
        return [f"run_dir={tmp / 'taken' / 'run'}"], ["run_dir", f"cannot be created: {tmp / 'taken'} is a file"]
    if kind == "resume with another model shape":  # a tiny run, checkpointed, then resumed as mini
        proc = launch.run("pretrain", [
            "--config", "configs/tiny-cpu.yaml", f"data.path={data}", f"run_dir={run_dir}", "data.num_workers=0",
            "optim.total_steps=2", "optim.warmup_steps=1", "logging.wandb=disabled", "eval.every_steps=0",
            "checkpoint.every_steps=2"], {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, ROOT)
        assert proc.returncode == 0 and (run_dir / "checkpoints").is_dir(), proc.stderr[-3000:]
        return ["model.size=mini", "optim.total_steps=4"], [
            "its checkpoints hold a model of shape tiny (hidden 128, 2 layers", "this config builds mini (hidden 256",
            "give a new run_dir", "model.init_from"]
    if kind == "missing initial weights":
        return [f"model.init_from={tmp / 'no-export'}"], ["model.init_from", "no-export: no config.json",
                                                          "python -m pretrain export"]
    if kind == "missing data directory":
        return [f"data.path={tmp / 'nowhere'}"], ["nowhere/manifest.json: no manifest"]
    if kind == "directory that is not a dataset":
        (tmp / "plain").mkdir()
        (tmp / "plain" / "notes.txt").write_text("hello")
        return [f"data.path={tmp / 'plain'}"], ["plain/manifest.json: no manifest"]
    if kind == "truncated shard":
        shard = _shard(data)
        shard.write_bytes(shard.read_bytes()[:-1000])
        return [], [shard.name, "truncated or replaced"]
    if kind == "manifest not JSON":
        (data / "manifest.json").write_text("{not json")
        return [], ["manifest.json: not valid JSON"]
    if kind == "manifest damaged":
        text = (data / "manifest.json").read_text()
        (data / "manifest.json").write_text(text.replace('"seed": 12345', '"seed": 12346'))
        return [], ["manifest.json: damaged"]
    if kind == "bit-flipped shards":
        for shard in (data / "train").glob("shard-*.arrow"):
            _flip(shard)
        return [], ["shard-0000", "arrow: row ", "is damaged", "--verify checksum"]
    if kind == "bad YAML":
        (tmp / "bad.yaml").write_text("optim: [unclosed\n")
        return ["--config", str(tmp / "bad.yaml")], ["bad.yaml: not valid YAML"]
    if kind == "unknown section":
        return ["optimiser.lr=1e-3"], ["override optimiser.lr=1e-3: optimiser: Extra inputs are not permitted"]
    if kind == "out-of-range value":
        return ["optim.lr=-1"], ["override optim.lr=-1: optim.lr: Input should be greater than 0"]
    if kind == "not a number":
        return ["optim.lr=abc"], ["override optim.lr=abc: optim.lr: Input should be a valid number"]
    if kind == "missing config file":
        return ["--config", str(tmp / "nope.yaml")], ["nope.yaml: No such file"]
    raise AssertionError(kind)


PRETRAIN_CASES = ["missing data directory", "directory that is not a dataset", "truncated shard",
                  "manifest not JSON", "manifest damaged", "bit-flipped shards", "bad YAML", "unknown section",
                  "out-of-range value", "not a number", "missing config file", "run directory is a file",
                  "run directory under a file", "resume with another model shape", "missing initial weights"]


def _tree(path: Path) -> object:
    """A path's whole content: None when absent, bytes for a file, {relative path: bytes} for a directory."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", PRETRAIN_CASES)
def test_pretrain_rejects(case, dataset, tmp_path, run):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    run_dir = tmp_path / "run"
    extra, needles = _damage(case, data, tmp_path, run_dir)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    run_before = _tree(run_dir), _tree(tmp_path / "taken")
    proc = run("pretrain", "--config", "configs/tiny-cpu.yaml", f"data.path={data}", f"run_dir={run_dir}",
               "data.num_workers=0", "optim.total_steps=20", "optim.warmup_steps=1", "logging.wandb=disabled",
               *extra)
    assert_one_clear_line(proc, 2, *needles)
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before  # the dataset is untouched
    if case != "bit-flipped shards":  # refused before any work: the run directory as it was (or absent)
        assert (_tree(run_dir), _tree(tmp_path / "taken")) == run_before
    else:  # stopped at the first damaged row, before any step used it: nothing was checkpointed
        assert not (run_dir / "checkpoints").exists()
        assert not (run_dir / "metrics.jsonl").exists() or not json.loads(
            "[" + ",".join((run_dir / "metrics.jsonl").read_text().split()) + "]")


# ------------------------------------------------------------- python -m pretrain export / plot
OTHER_CASES = {
    # name: (arguments given tmp, what the line says); each checked before anything is read or written
    "export to a file": (lambda t: ["export", str(t / "run"), _file(t, "taken", b"keep me")],
                         ["output", "taken: is an existing file"]),
    "export under a file": (lambda t: ["export", str(t / "run"), _file(t, "taken", b"keep me") + "/out"],
                            ["output", "taken/out: cannot be created:", "taken is a file"]),
    "plot without metrics": (lambda t: ["plot", str(t / "run")], ["run/metrics.jsonl: no such file",
                                                                  "a run directory that has logged a step"]),
}


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_pretrain_commands_reject(case, tmp_path, run):
    args, needles = OTHER_CASES[case]
    proc = run("pretrain", *args(tmp_path))
    assert_one_clear_line(proc, 2, *needles)
    assert not (tmp_path / "run").exists()
    if (tmp_path / "taken").exists():
        assert (tmp_path / "taken").read_bytes() == b"keep me"
