"""The trainer through its real entry point: DeepSpeed on CPU with gloo, one and two ranks.

Each run is a process of its own through ``python -m pretrain``'s ``main``, forked from a process that
has already imported torch and DeepSpeed (:mod:`tests.launch`; several ranks as torchrun starts
them). The launchers themselves (torchrun, DeepSpeed's), a signal to a run, a killed rank and the exit
of a finished run are tested through real interpreters (``subprocess``, :func:`command`).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import launch
from tests.conftest import built_once

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arguments(dataset, run_dir, *overrides) -> list[str]:
    """``python -m pretrain``'s arguments for a test run."""
    # wandb (its start and finish: ~6 s a process) only where a test reads it back: the metrics test
    return ["--config", "configs/tiny-cpu.yaml", f"data.path={dataset}", f"run_dir={run_dir}",
            "logging.every_steps=1", "data.num_workers=0", "optim.warmup_steps=2", "logging.wandb=disabled",
            *overrides]


def command(dataset, run_dir, *overrides, ranks=1):
    """A real interpreter's command line: ``python -m pretrain``, or torchrun with ``ranks`` ranks."""
    args = arguments(dataset, run_dir, *overrides)
    if ranks == 1:
        return [sys.executable, "-m", "pretrain", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
            "--master_port", str(free_port()), "-m", "pretrain", *args]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}


def train(dataset, run_dir, *overrides, ranks=1, check=True):
    proc = launch.run("pretrain", arguments(dataset, run_dir, *overrides), env(), ROOT, ranks=ranks)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def grad_norms(run_dir) -> list[float]:
    records = map(json.loads, open(Path(run_dir) / "metrics.jsonl"))
    return [r["grad_norm"] for r in records if "loss" in r]


def losses(run_dir) -> dict[int, float]:
    records = map(json.loads, open(Path(run_dir) / "metrics.jsonl"))
    return {r["step"]: r["loss"] for r in records if "loss" in r}  # training records, not evaluation ones


# ZeRO-2 resumes on 2 ranks in the Slurm tests; other shapes in the universal-checkpoint tests below.
# The uninterrupted run also checks LAMB over ZeRO-3's partitions on 2 ranks against the unpartitioned
# reference (see test_lamb_under_zero_matches_lamb_without_zero).
@pytest.mark.parametrize("stage,ranks", [(3, 2)])
def test_resume_repeats_the_uninterrupted_losses_exactly(dataset, tmp_path, uninterrupted, stage, ranks):
    steps = (*SHAPE_COMMON, "optim.name=lamb", f"deepspeed.zero_stage={stage}")
    train(dataset, tmp_path / "straight", *steps, ranks=ranks)
    train(dataset, tmp_path / "resumed", *steps, "stop_at_step=3", ranks=ranks)
    assert sorted(losses(tmp_path / "resumed")) == [1, 2, 3]
    proc = train(dataset, tmp_path / "resumed", *steps, ranks=ranks)
    assert "resumed from step 3" in proc.stderr
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(straight) == sorted(resumed) == list(range(1, 7))
    assert straight == resumed  # exact, fp32 on CPU
    assert straight[6] < straight[1]
    assert_same_training(tmp_path / "straight", uninterrupted("lamb"))


# Shape changes through DeepSpeed's universal checkpoints: fewer ranks (ZeRO-2 -> 1), more ranks onto
# ZeRO-3 (ZeRO-1/2 and ZeRO-3 store the optimizer state differently), and ZeRO-3 back to ZeRO-2 on
# more ranks (LAMB's pieces at ZeRO-2 on 2 ranks). Weight decay high enough to tell groups apart.
SHAPE_COMMON = ("optim.total_steps=6", "checkpoint.every_steps=3", "optim.weight_decay=0.5", "optim.lr=0.01",
                "eval.every_steps=0")


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    """The run directory of an uninterrupted run on 1 rank at ZeRO-0 (nothing partitioned, the
    gradient norm measured by the trainer), per optimizer: its losses and gradient norms are those of
    any world size and stage (see the world-size test)."""
    def get(optimizer: str) -> Path:
        return built_once(tmp_path_factory, f"straight-{optimizer}", lambda run: train(
            dataset, run, *SHAPE_COMMON, f"optim.name={optimizer}", "deepspeed.zero_stage=0"))

    return get


def assert_same_training(run: Path, reference: Path, grad_rel: float = 1e-4) -> None:
    """The same loss and gradient norm at every step as ``reference``, up to the order of sums."""
    got, want = losses(run), losses(reference)
    assert sorted(got) == sorted(want) == list(range(1, 7))
    assert want[6] < want[1]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5), step
    assert grad_norms(run) == pytest.approx(grad_norms(reference), rel=grad_rel)


@pytest.mark.parametrize("optimizer,before,after", [("lamb", (2, 2), (1, 1)), ("adamw", (1, 1), (2, 3)),
                                                    ("lamb", (1, 3), (2, 2))])
def test_a_checkpoint_resumes_at_another_world_size_and_zero_stage_with_the_same_losses(
        dataset, tmp_path, uninterrupted, optimizer, before, after):
    run = tmp_path / "run"
    (ranks, stage), (new_ranks, new_stage) = before, after
    train(dataset, run, *SHAPE_COMMON, f"optim.name={optimizer}", f"deepspeed.zero_stage={stage}", "stop_at_step=3",
          ranks=ranks)
    # resumed compiled where the stage allows it (model.compile: not with ZeRO-3); aot_eager traces and compiles
    # the graphs without generating kernels, so the losses equal eager ones (inductor costs ~40 s of CPU a
    # process; the GPU tests run it)
    compiled = ("model.compile=true", "model.compile_backend=aot_eager") if new_stage < 3 else ()
    proc = train(dataset, run, *SHAPE_COMMON, f"optim.name={optimizer}", f"deepspeed.zero_stage={new_stage}",
                 *compiled, ranks=new_ranks)
    if compiled:
        assert "model compiled with torch.compile (backend aot_eager)" in proc.stderr
    rank_s = lambda n: f"{n} rank{'s' if n > 1 else ''}"  # noqa: E731
    assert (f"written by {rank_s(ranks)} at ZeRO-{stage}; this run is {rank_s(new_ranks)} at ZeRO-{new_stage}: "
            "converting it to DeepSpeed's universal format") in proc.stderr
    assert "resumed from step 3" in proc.stderr
    assert (run / "checkpoints" / "step_00000003" / "universal" / "zero").is_dir()
    marker = json.loads((run / "checkpoints" / "step_00000006" / "COMPLETE").read_text())
    assert marker["shape"] == {"world_size": new_ranks, "zero_stage": new_stage}
    # before the change of shape and after it (AdamW's norms after 3 ranks' sums: within 2e-4)
    assert_same_training(run, uninterrupted(optimizer), grad_rel=1e-3)


def test_a_zero_0_checkpoint_resumes_at_any_world_size_and_no_other_stage(dataset, tmp_path):
    run = tmp_path / "run"
    common = ("optim.total_steps=4", "checkpoint.every_steps=2", "eval.every_steps=0")
    train(dataset, run, *common, "deepspeed.zero_stage=0", "stop_at_step=2", ranks=2)
    proc = train(dataset, run, *common, "deepspeed.zero_stage=1", "stop_at_step=3", check=False)
    assert proc.returncode != 0
    assert "was written at ZeRO-0; this run is at ZeRO-1" in proc.stderr
    assert "Resume with deepspeed.zero_stage=0 (at any world size)" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = train(dataset, run, *common, "deepspeed.zero_stage=0")
    assert "ZeRO-0 holds the whole optimizer state on every rank" in proc.stderr
    assert "resumed from step 2" in proc.stderr and sorted(losses(run)) == [1, 2, 3, 4]


def test_world_sizes_1_2_and_3_and_both_launchers_give_the_same_losses(dataset, tmp_path):
    # dropout on: its masks are keyed by the micro-batch's place in the global batch, not by the rank.
    # Packed: each step's 48 sequences fill ~44 rows, so 11 or 12 micro-batches of 4 rows, as the step's
    # packing gives (1 rank: all; 3 ranks: 4 each, the last places empty).
    # Evaluation too: the same 60 rows (8 micro-batches, the last of 4) at any world size.
    common = ("optim.total_steps=4", "deepspeed.global_batch_size=48", "data.micro_batch_size=4", "data.packing=true",
              "eval.every_steps=4", "eval.max_sequences=60")
    train(dataset, tmp_path / "world1", *common)
    # 3 ranks through torchrun, 2 (3 micro-batches each) through DeepSpeed's own launcher: the README offers both
    for cmd in (command(dataset, tmp_path / "world3", *common, ranks=3),
                [sys.executable, "-m", "deepspeed.launcher.runner", "--num_accelerators", "2", "--master_port",
                 str(free_port()), "--module", "pretrain", *arguments(dataset, tmp_path / "world2", *common)]):
        proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = losses(tmp_path / "world1")
    assert sorted(one) == [1, 2, 3, 4]
    evaluated = evaluation(tmp_path / "world1")
    assert set(evaluated) == {"eval_mlm_loss", "eval_mlm_accuracy", "eval_nsp_accuracy"}
    for ranks in (2, 3):
        other = losses(tmp_path / f"world{ranks}")
        for step in one:
            assert other[step] == pytest.approx(one[step], rel=1e-5), (ranks, step)
        assert evaluation(tmp_path / f"world{ranks}") == pytest.approx(evaluated, rel=1e-5), ranks


def test_packed_training_equals_unpacked_training(dataset, tmp_path):
    """Without dropout, packed rows (2 ranks, ZeRO-3, as many micro-batches as each step's packing needs)
    train exactly as the same sequences one per row (1 rank, ZeRO-2, fixed accumulation)."""
    common = ("optim.total_steps=4", "deepspeed.global_batch_size=48", "model.hidden_dropout_prob=0",
              "model.attention_probs_dropout_prob=0", "eval.every_steps=0")
    train(dataset, tmp_path / "padded", *common, "data.micro_batch_size=8", ranks=1)
    train(dataset, tmp_path / "packed", *common, "data.packing=true", "data.micro_batch_size=4",
          "deepspeed.zero_stage=3", ranks=2)
    padded, packed = losses(tmp_path / "padded"), losses(tmp_path / "packed")
    assert sorted(padded) == sorted(packed) == [1, 2, 3, 4]
    for step in padded:
        assert packed[step] == pytest.approx(padded[step], rel=1e-5), step
    records = [r for r in map(json.loads, open(tmp_path / "packed" / "metrics.jsonl")) if "loss" in r]
    assert all(r["sequences_per_row"] > 1 for r in records)


def evaluation(run_dir) -> dict[str, float]:
    records = [r for r in map(json.loads, open(Path(run_dir) / "metrics.jsonl")) if "eval_mlm_loss" in r]
    return {k: v for k, v in records[-1].items() if k.startswith("eval_")}


def test_the_training_step_asks_the_host_for_nothing(dataset, tmp_path, optimizer="lamb"):
    # bench.host_syncs counts .item()/bool(), nonzero, boolean-mask indexing and the like while steps
    # train (logging, checkpointing and the stop check left out: they read the host on purpose); packed
    # rows with fresh masks each epoch, the loader's busiest layout
    proc = subprocess.run([sys.executable, "-m", "bench.host_syncs", *arguments(
        dataset, tmp_path / "run", "optim.total_steps=12", "logging.every_steps=6", "eval.every_steps=0",
        f"optim.name={optimizer}", "data.packing=true", "data.dynamic_masking=true")],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["steps"] == 12
    assert "project" not in result["per_step"], result["sites"]
    assert result["stop_checks"] == 1  # every 10th step, not every step
    # DeepSpeed checks each parameter group's gradient norm on the host (3 a step with two groups; torch's
    # AdamW on CPU reads its step counters too): few groups, few reads, where one group per tensor made ~50
    assert result["per_step"].get("deepspeed", 0) <= 6, result["sites"]


def logged_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, open(run_dir / "metrics.jsonl")) if "loss" in r]


def records(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r}


def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_resumes_exactly(dataset, tmp_path):
    run = tmp_path / "run"
    steps = ("optim.total_steps=6", "checkpoint.every_steps=2", "checkpoint.keep_last=3")
    train(dataset, run, *steps, "stop_at_step=4")  # checkpoints at steps 2 and 4
    newest = run / "checkpoints" / "step_00000004"
    victim = max((p for p in newest.rglob("*.pt")), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated
    proc = train(dataset, run, *steps, "stop_at_step=4")
    rel = victim.relative_to(newest)
    assert f"{rel} is " in proc.stderr and "bytes, " in proc.stderr and "set aside" in proc.stderr
    assert "resumed from step 2" in proc.stderr
    assert (run / "checkpoints" / "set_aside" / "step_00000004").is_dir()
    superseded = records(run / "metrics-superseded.jsonl")
    assert sorted(superseded) == [3, 4] and logged_steps(run) == [1, 2, 3, 4]
    assert {s: losses(run)[s] for s in (3, 4)} == superseded  # steps 3-4 trained again, exactly as before
    (newest / rel).unlink()  # the new step 4 loses a file
    proc = train(dataset, run, *steps)
    assert f"{rel} is missing" in proc.stderr and "resumed from step 2" in proc.stderr
    assert (run / "checkpoints" / "set_aside" / "step_00000004-1").is_dir()
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6]  # metrics.jsonl: each step once, in order
    assert [p.name for p in sorted((run / "checkpoints").glob("step_*"))] == [
        "step_00000002", "step_00000004", "step_00000006"]


def test_bad_batch_arithmetic_fails_before_any_work(dataset, tmp_path):
    proc = train(dataset, tmp_path / "run", "deepspeed.global_batch_size=12", "data.micro_batch_size=8",
                 check=False)
    assert proc.returncode == 2
    assert "global_batch_size 12 is not a multiple of data.micro_batch_size x world size = 8 x 1; nearest valid " \
        "data.micro_batch_size at 1 ranks: 6 or 12" in proc.stderr
    assert not (tmp_path / "run").exists()
    proc = train(dataset, tmp_path / "run", "optim.lr=-1", "model.size=huge", check=False)
    assert proc.returncode == 2 and "optim.lr" in proc.stderr and "model.size" in proc.stderr


def test_lamb_under_zero_matches_lamb_without_zero(dataset, tmp_path, uninterrupted):
    """LAMB's trust ratios are those of whole tensors, however ZeRO partitions them: the losses and
    gradient norms of the unpartitioned reference (ZeRO-0, 1 rank) at ZeRO-1 on 2 ranks here, at ZeRO-2
    on 2 ranks and ZeRO-3 on 1 in the shape test ([lamb-...]), at ZeRO-3 on 2 ranks in the resume test."""
    reference = uninterrupted("lamb")
    steps = losses(reference)
    assert steps[6] < steps[1]
    assert all(0 < n < 1e3 for n in grad_norms(reference))  # measured by the trainer at ZeRO-0 (DeepSpeed reports none)
    train(dataset, tmp_path / "zero1", *SHAPE_COMMON, "optim.name=lamb", "deepspeed.zero_stage=1", ranks=2)
    assert_same_training(tmp_path / "zero1", reference)  # ZeRO's own gradient norm at 1-3


METRICS = {"loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "lr", "grad_norm", "skipped_steps",
           "samples_per_s", "tokens_per_s", "tflops_per_device", "mfu", "memory_gb", "data_wait_share",
           "optimizer_ms"}
EVAL = {"eval_mlm_loss", "eval_mlm_accuracy", "eval_nsp_accuracy"}


def wandb_history(run_dir: Path) -> dict[str, dict[int, dict]]:
    """{offline run directory name: {step: logged values}}, read back with `wandb leet inspect --json`."""
    out = {}
    for d in sorted((run_dir / "wandb").glob("offline-run-*")):
        proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(d)], capture_output=True, text=True,
                              timeout=120, check=True)
        history = {}
        for line in proc.stdout.splitlines():
            record = json.loads(line)
            if record.get("type") == "history":
                item = record["history"]["item"]
                history.setdefault(item["_step"], {}).update(item)
        out[d.name] = history
    return out


def test_sigterm_checkpoints_and_the_run_resumes_with_its_metrics_and_offline_wandb_whole(dataset, tmp_path):
    run = tmp_path / "run"
    common = ("optim.total_steps=5000", "checkpoint.every_steps=1000", "logging.every_steps=2", "eval.every_steps=2",
              "logging.wandb=offline", "logging.peak_tflops_per_device=1.0")
    proc = subprocess.Popen(command(dataset, run, *common), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    marker = sorted((run / "checkpoints").glob("step_*/COMPLETE"))
    assert len(marker) == 1
    stopped = json.loads(marker[0].read_text())["step"]
    assert 3 <= stopped < 5000 and stopped % 2 == 0 and f"checkpointed at step {stopped}" in err
    train(dataset, run, *common, f"stop_at_step={stopped + 2}")
    assert max(losses(run)) == stopped + 2
    # metrics.jsonl and wandb: every logged step once, across the stop
    records = [json.loads(line) for line in open(metrics)]
    train_records = {r["step"]: r for r in records if "loss" in r}
    eval_records = {r["step"]: r for r in records if "eval_mlm_loss" in r}
    logged = list(range(2, stopped + 3, 2))
    assert sorted(train_records) == sorted(eval_records) == logged
    last = logged[-1]
    assert METRICS <= set(train_records[last]) and EVAL <= set(eval_records[last])
    assert 0 < train_records[last]["tokens_per_s"] and 0 <= train_records[last]["data_wait_share"] < 1
    assert 0 < train_records[last]["optimizer_ms"] < 60e3
    history = wandb_history(run)
    assert len(history) == 2  # one offline segment per process ...
    run_id = (run / "wandb_run_id").read_text().strip()
    assert all(name.endswith(run_id) for name in history)  # ... of one wandb run
    steps = {s: v for h in history.values() for s, v in h.items()}
    assert sorted(steps) == logged
    for s in logged:
        assert steps[s]["loss"] == pytest.approx(train_records[s]["loss"], rel=1e-6)
        assert steps[s]["eval_mlm_loss"] == pytest.approx(eval_records[s]["eval_mlm_loss"], rel=1e-6)


@pytest.fixture(scope="module")
def phase1(dataset, tmp_path_factory) -> Path:
    """A finished 1-rank ZeRO-0 run (``run``: 30 steps at lr 3e-3, checkpoints at steps 10, 20 and 30)
    trained on the dataset named relative to the training's working directory, and its newest
    checkpoint exported (``export``). Shared: a test that changes either works on a copy."""
    def build(root: Path) -> None:
        train(os.path.relpath(dataset, ROOT), root / "run", "optim.total_steps=30", "optim.lr=3e-3",
              "deepspeed.zero_stage=0", "checkpoint.every_steps=10", "checkpoint.keep_last=3")
        export = launch.run("pretrain", ["export", str(root / "run"), str(root / "export")], env(), ROOT)
        assert export.returncode == 0, export.stderr[-3000:]

    return built_once(tmp_path_factory, "phase1", build)


def assert_exports_load_in_transformers(run: Path, out: Path, early: int) -> None:
    """Checkpoint ``early`` exported from another directory, and the newest one, load in transformers
    with every weight, give our model's logits, and hold their own checkpoints' weights."""
    transformers = pytest.importorskip("transformers")
    import torch

    proc = launch.run("pretrain", ["export", str(run), str(out / "hf"), "--step", str(early)], env(), out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [f"exported {run}/checkpoints/step_{early:08d} to {out / 'hf'}"]
    hf, info = transformers.BertForPreTraining.from_pretrained(str(out / "hf"), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    from pretrain.hf_format import load_pretrained

    ours = load_pretrained(str(out / "hf"))[0].eval()
    ids = torch.randint(5, 100, (2, 12))
    torch.testing.assert_close(ours(ids).mlm_logits, hf.eval()(input_ids=ids).prediction_logits, rtol=1e-5, atol=1e-5)
    assert launch.run("pretrain", ["export", str(run), str(out / "newest")], env(), ROOT).returncode == 0
    later = transformers.BertForPreTraining.from_pretrained(str(out / "newest"))
    moved = later.bert.encoder.layer[0].attention.self.query.weight - hf.bert.encoder.layer[0].attention.self.query.weight
    assert moved.abs().max() > 0  # each export holds its own checkpoint's trained weights
    tok = transformers.AutoTokenizer.from_pretrained(str(out / "hf"))
    assert tok.mask_token == "[MASK]"


def test_a_zero_0_checkpoint_of_one_rank_exports_to_a_directory_transformers_loads(phase1, tmp_path):
    assert_exports_load_in_transformers(phase1 / "run", tmp_path, early=10)


def test_a_zero_3_checkpoint_of_two_ranks_exports_to_a_directory_transformers_loads(dataset, tmp_path):
    run = tmp_path / "run"
    # the dataset named relative to the training's working directory, the export run from another
    train(os.path.relpath(dataset, ROOT), run, "optim.total_steps=3", "deepspeed.zero_stage=3",
          "checkpoint.every_steps=2", ranks=2)
    assert_exports_load_in_transformers(run, tmp_path, early=2)


def test_phase_2_starts_from_phase_1_weights_with_a_fresh_optimizer(dataset, phase1, tmp_path):
    proc = train(dataset, tmp_path / "phase2", f"model.init_from={phase1 / 'export'}", "optim.total_steps=3")
    assert "resumed" not in proc.stderr and "initialised (absent" not in proc.stderr
    fresh = losses(phase1 / "run")[1]
    phase1_end, phase2_start = losses(phase1 / "run")[30], losses(tmp_path / "phase2")[1]
    assert phase1_end < fresh - 0.3
    assert phase2_start < fresh - 0.3  # starts where phase 1 ended, not from scratch
    assert "step" in json.loads((tmp_path / "phase2" / "checkpoints" / "step_00000003" / "COMPLETE").read_text())


def test_a_dead_rank_ends_the_job_with_an_error_instead_of_a_hang(dataset, tmp_path):
    import psutil

    run = tmp_path / "run"
    proc = subprocess.Popen(command(dataset, run, "optim.total_steps=5000", "deepspeed.dist_timeout_minutes=1",
                                    ranks=2), cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "pretrain" in " ".join(c.cmdline())]
    victim = next(w for w in workers if w.environ().get("RANK") == "1")
    victim.kill()
    t = time.time()
    proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert time.time() - t < 120


def test_nan_loss_stops_the_run_naming_the_step(dataset, tmp_path):
    """train.on_nonfinite=stop; and rollback with no checkpoint yet to roll back to: one clear line each."""
    diverging = ("optim.lr=1e6", "optim.grad_clip=0", "optim.total_steps=50", "checkpoint.every_steps=100")
    proc = train(dataset, tmp_path / "run", *diverging, "train.on_nonfinite=stop", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(r"error: loss is not finite at step \d+: lower optim.lr", proc.stderr), proc.stderr[-2000:]
    proc = train(dataset, tmp_path / "run2", *diverging, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(r"error: loss is not finite at step \d+.*there is no checkpoint to roll back to yet",
                     proc.stderr), proc.stderr[-2000:]


# A fault at step 5 (train.inject_nonfinite_at), found at the logging step 6; the newest checkpoint is
# step 3's, so steps 4 (again, exactly) and 6 on are trained after the roll-back, and step 5 is skipped.
FAULT = ("optim.total_steps=9", "logging.every_steps=3", "checkpoint.every_steps=3", "eval.every_steps=0")


@pytest.fixture(scope="module")
def told_to_skip(dataset, tmp_path_factory):
    """Runs told from their start to skip step 5 (train.skip_steps), per (ZeRO stage, ranks)."""
    def get(stage: int, ranks: int) -> Path:
        return built_once(tmp_path_factory, f"skip-{stage}-{ranks}", lambda run: train(
            dataset, run, *FAULT, f"deepspeed.zero_stage={stage}", "train.skip_steps=[5]", ranks=ranks))

    return get


@pytest.mark.parametrize("stage,ranks", [(0, 1), (3, 2), (1, 2), (2, 2)])
def test_a_rolled_back_run_trains_as_one_told_to_skip_the_bad_step(dataset, tmp_path, told_to_skip, stage, ranks):
    proc = train(dataset, tmp_path / "fault", *FAULT, f"deepspeed.zero_stage={stage}", "train.inject_nonfinite_at=[5]",
                 ranks=ranks)
    assert "loss is not finite at step 5" in proc.stderr
    assert "rolled back to the checkpoint of step 3 (step_00000003); the global batch of step 5 (samples 64-79 " \
        "of the training order) will be skipped" in proc.stderr
    assert "finished at step 9" in proc.stdout
    fault = losses(tmp_path / "fault")
    assert sorted(fault) == [3, 6, 9]
    records = {r["step"]: r for r in map(json.loads, open(tmp_path / "fault" / "metrics.jsonl"))}
    assert records[5]["skipped_step"].startswith("loss is not finite; rolled back to step 3")
    assert records[5]["skipped_samples"] == "64-79"  # global batch 16: positions 64-79 of the order
    marker = json.loads((tmp_path / "fault" / "checkpoints" / "step_00000009" / "COMPLETE").read_text())
    assert list(marker["skipped"]) == ["5"]  # a resumed run skips it too
    if stage in (0, 3):  # the skip run of the same shape: exactly its losses
        skip = told_to_skip(stage, ranks)
        assert fault == losses(skip)  # the same weights, data and schedule at every step
        told = {r["step"]: r for r in map(json.loads, open(skip / "metrics.jsonl"))}
        assert told[5] == {"step": 5, "skipped_step": "train.skip_steps", "skipped_samples": "64-79"}
    else:  # ZeRO-1 and 2 on 2 ranks: the ZeRO-3 skip run's, up to the order of the sums
        skip = losses(told_to_skip(3, 2))
        assert fault == pytest.approx(skip, rel=1e-5)


def test_loss_spikes_are_rolled_back_and_skipped_as_a_run_told_to_skip_them(dataset, tmp_path):
    """The spike rule through a run: a factor of 1.01 over the median of the last 10 logged losses
    catches the ups of a tiny model's noisy loss; the steps it skipped, skipped from the start, give
    the same losses."""
    common = ("optim.total_steps=40", "eval.every_steps=0", "checkpoint.every_steps=5", "train.max_rollbacks=20")
    proc = train(dataset, tmp_path / "spikes", *common, "train.spike_factor=1.01", "train.spike_window=10")
    spikes = sorted(int(k) for k in json.loads(
        (tmp_path / "spikes" / "checkpoints" / "step_00000040" / "COMPLETE").read_text())["skipped"])
    assert spikes and all(s > 10 for s in spikes)  # some, and none before 10 losses were seen
    assert "loss spike (" in proc.stderr and "times the median of the last 10 logged losses) at step" in proc.stderr
    records = {r["step"]: r for r in map(json.loads, open(tmp_path / "spikes" / "metrics.jsonl"))}
    assert all(records[s]["skipped_step"].startswith("loss spike") for s in spikes)
    train(dataset, tmp_path / "told", *common, f"train.skip_steps={spikes}")
    assert losses(tmp_path / "spikes") == losses(tmp_path / "told")
    assert sorted(losses(tmp_path / "told")) == [s for s in range(1, 41) if s not in spikes]


def test_repeated_faults_stop_the_run_after_max_rollbacks(dataset, tmp_path):
    proc = train(dataset, tmp_path / "run", *FAULT, "checkpoint.every_steps=1", "logging.every_steps=1",
                 "train.inject_nonfinite_at=[2,4,5]", "train.max_rollbacks=2", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("rolled back to the checkpoint") == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "loss is not finite at step 5" in error[0] and "roll-back 3 within 1000 steps" in error[0]
    assert "bad steps 2, 4 were rolled back" in error[0] and "train.max_rollbacks" in error[0]
    assert sorted(losses(tmp_path / "run")) == [1, 3]


def test_length_bucketing_and_dynamic_masking_keep_resume_exact_past_a_half_written_checkpoint(dataset, tmp_path):
    steps = ("optim.total_steps=4", "data.length_bucketing=3", "data.dynamic_masking=true")
    train(dataset, tmp_path / "straight", *steps)
    train(dataset, tmp_path / "resumed", *steps, "stop_at_step=2")
    (tmp_path / "resumed" / "checkpoints" / "step_00000003").mkdir()  # a save that never completed
    proc = train(dataset, tmp_path / "resumed", *steps)
    assert "step_00000003 has no COMPLETE marker" in proc.stderr and "resumed from step 2" in proc.stderr
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


@pytest.mark.parametrize("extra", [("deepspeed.precision=bf16",), ("deepspeed.offload_optimizer=true",)])
def test_bf16_and_cpu_offload_train(dataset, tmp_path, extra):
    train(dataset, tmp_path / "run", "optim.total_steps=3", "deepspeed.zero_stage=2", *extra)
    run = losses(tmp_path / "run")
    assert sorted(run) == [1, 2, 3] and run[3] < run[1]
    assert all(0 < n < 1e3 for n in grad_norms(tmp_path / "run"))


def test_the_vocabulary_fingerprint_is_checked_by_export_phase_2_and_resume(dataset, phase1, tmp_path):
    import shutil

    from pretrain.run_dir import RunDir

    run = RunDir(tmp_path / "phase1")
    shutil.copytree(phase1 / "run", run.root)
    export = tmp_path / "export"
    shutil.copytree(phase1 / "export", export)
    fingerprint = run.data_ref().fingerprint
    assert json.loads((export / "config.json").read_text())["vocab_fingerprint"] == fingerprint
    config = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps({**config, "vocab_fingerprint": "0" * 32}))
    proc = train(dataset, tmp_path / "phase2", f"model.init_from={export}", check=False)
    assert proc.returncode == 2 and f"model.init_from {export} was made with vocabulary 00000000" in proc.stderr
    assert fingerprint in proc.stderr and "Traceback" not in proc.stderr

    ref = json.loads(run.data_file.read_text())
    run.data_file.write_text(json.dumps({**ref, "fingerprint": "1" * 32}))  # as if started on other data
    proc = train(dataset, run.root, "optim.total_steps=40", check=False)
    assert proc.returncode == 2 and f"run_dir {run.root} (started on {dataset}) was made with vocabulary 1111" \
        in proc.stderr
    proc = launch.run("pretrain", ["export", str(run.root)], env(), ROOT)
    assert proc.returncode == 2 and "the run trained with 1111" in proc.stderr
