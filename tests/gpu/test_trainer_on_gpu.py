"""The trainer on one GPU, through its real entry point: bf16, ZeRO-1 and ZeRO-2, LAMB and AdamW,
evaluation, checkpoint, resume, export, and the host synchronisations left in the step.

Skipped without CUDA. The dataset is made beforehand by the preprocess job (the GPU machine may
have no Beam) and named by ``PRETRAIN_GPU_DATA``; ``bench/gpu_check.sh`` sets it up and runs these.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = os.environ.get("PRETRAIN_GPU_DATA")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not DATA, reason="set PRETRAIN_GPU_DATA to a dataset made by the preprocess job"),
]
COMMON = ("model.size=mini", "deepspeed.precision=bf16", "data.micro_batch_size=32",
          "deepspeed.global_batch_size=64", "optim.total_steps=20", "optim.warmup_steps=4",
          "checkpoint.every_steps=10", "eval.every_steps=10", "eval.max_sequences=256", "logging.every_steps=1",
          "logging.wandb=disabled", "data.num_workers=2")


def env() -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "MASTER_PORT": str(port)}


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run("pretrain", "--config", "configs/tiny-cpu.yaml", f"data.path={DATA}", f"run_dir={run_dir}",
               *COMMON, *overrides)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir) if "loss" in r}


@pytest.mark.parametrize("optimizer,stage", [("lamb", 1), ("adamw", 2)])
def test_train_evaluate_checkpoint_resume_and_export_on_one_gpu(tmp_path, optimizer, stage):
    shape = (f"optim.name={optimizer}", f"deepspeed.zero_stage={stage}")
    train(tmp_path / "straight", *shape, "logging.count_host_syncs=true")
    train(tmp_path / "resumed", *shape, "stop_at_step=10")
    proc = train(tmp_path / "resumed", *shape)
    assert "resumed from step 10" in proc.stderr
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 21))
    for step in range(11, 21):  # bf16 kernels need not be bitwise deterministic
        assert resumed[step] == pytest.approx(straight[step], rel=1e-3), step
    assert straight[20] < straight[1]
    evals = [r for r in records(tmp_path / "straight") if "eval_mlm_loss" in r]
    assert len(evals) == 2 and all(0 < r["eval_mlm_accuracy"] <= 1 for r in evals)
    assert all(r["grad_norm"] == r["grad_norm"] and r["grad_norm"] > 0 for r in records(tmp_path / "straight")
               if "loss" in r)  # finite, not NaN
    logged = [r for r in records(tmp_path / "straight") if "loss" in r]
    assert all(r["optimizer_ms"] > 0 and r["host_syncs_per_step"] >= 0 for r in logged)
    print(optimizer, stage, {k: logged[-1][k] for k in ("optimizer_ms", "host_syncs_per_step")})

    run("pretrain", "export", str(tmp_path / "straight"), str(tmp_path / "export"))
    from transformers import BertForPreTraining

    model = BertForPreTraining.from_pretrained(str(tmp_path / "export"))
    assert model.config.hidden_size == 256


def test_the_training_step_asks_the_host_for_nothing_on_a_gpu(tmp_path):
    proc = run("bench.host_syncs", "--config", "configs/tiny-cpu.yaml", f"data.path={DATA}",
               f"run_dir={tmp_path / 'run'}", *COMMON, "optim.total_steps=12", "logging.every_steps=6",
               "eval.every_steps=0", "checkpoint.every_steps=100")
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    print(json.dumps(result, indent=1))  # every synchronisation left, by caller (pytest -s shows it)
    assert "project" not in result["per_step"], result["sites"]
    assert not [w for w in result.get("cuda_sync_warnings", {}) if w.startswith("project")], result


def test_packed_rows_train_as_the_same_sequences_unpadded_on_a_gpu(tmp_path):
    """FlashAttention's varlen kernel on packed rows and on padded rows, eager and compiled: without
    dropout, the same global batches give the same losses (to bf16's precision)."""
    common = ("model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0", "eval.every_steps=0",
              "optim.total_steps=10", "deepspeed.zero_stage=1")
    train(tmp_path / "padded", *common)
    train(tmp_path / "packed", *common, "data.packing=true", "data.micro_batch_size=16")
    # compiled by inductor (fused kernels; the varlen attention op inside the graph)
    proc = train(tmp_path / "compiled", *common, "data.packing=true", "data.micro_batch_size=16", "model.compile=true",
                 "logging.count_host_syncs=true")
    assert "model compiled with torch.compile (backend inductor)" in proc.stderr
    padded, packed, compiled = (losses(tmp_path / d) for d in ("padded", "packed", "compiled"))
    for step in padded:
        assert packed[step] == pytest.approx(padded[step], rel=2e-2), step
        assert compiled[step] == pytest.approx(packed[step], rel=2e-2), step
    logged = [r for r in records(tmp_path / "packed") if "loss" in r]
    assert all(r["sequences_per_row"] >= 1 for r in logged)
    print({k: logged[-1][k] for k in ("tokens_per_s", "packing_efficiency", "sequences_per_row")})


def test_micro_batch_size_auto_fills_the_memory_budget_and_a_resume_keeps_it(tmp_path):
    """auto under a small budget (1% of the card): the size chosen peaked within it, every size tried
    above it did not, training stays within it, and the resumed run reuses the recorded size."""
    import yaml

    auto = ("data.micro_batch_size=auto", "data.auto_memory_fraction=0.01", "deepspeed.global_batch_size=1024",
            "optim.total_steps=4", "eval.every_steps=0", "checkpoint.every_steps=100")
    proc = train(tmp_path / "run", *auto, "stop_at_step=2")
    record = json.loads((tmp_path / "run" / "micro_batch.json").read_text())
    print(record, [line for line in proc.stderr.splitlines() if "auto" in line])
    m, budget, peaks = record["micro_batch_size"], record["budget_gb"], record["peaks_gb"]
    assert peaks[str(m)] <= budget and all(int(size) > m for size, peak in peaks.items() if peak > budget)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["micro_batch_size"] == m
    assert max(r["memory_gb"] for r in records(tmp_path / "run") if "loss" in r) <= budget * 1.05
    proc = train(tmp_path / "run", *auto)
    assert f"data.micro_batch_size auto: {m} rows, as measured at the run's start" in proc.stderr
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3, 4]


DATA512 = os.environ.get("PRETRAIN_GPU_DATA512")


@pytest.mark.parametrize("recipe", ["configs/bert-large-phase1.yaml", "configs/bert-large-phase2.yaml"])
def test_the_bert_large_recipes_micro_batch_fits_an_80_gb_card(tmp_path, recipe):
    """The recipe as written (BERT-Large, bf16, LAMB, ZeRO-1, its micro-batch and checkpointing) under an 80 GB
    cap on this card (torch.cuda.set_per_process_memory_fraction), one micro-batch a step."""
    from pretrain.config import load_config

    cfg = load_config(recipe)
    data = DATA if "phase1" in recipe else DATA512
    if not data:
        pytest.skip("set PRETRAIN_GPU_DATA512 to a seq-512 dataset")
    cap = 80 * 2**30 / torch.cuda.get_device_properties(0).total_memory
    wrapper = ("import runpy, sys, torch; torch.cuda.set_per_process_memory_fraction(float(sys.argv.pop(1))); "
               "sys.argv[0] = 'pretrain'; runpy.run_module('pretrain', run_name='__main__', alter_sys=True)")
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, str(min(1.0, cap)), "--config", recipe, f"data.path={data}",
         f"run_dir={tmp_path / 'run'}", "model.init_from=null", "optim.total_steps=4", "optim.warmup_steps=1",
         f"deepspeed.global_batch_size={cfg.data.micro_batch_size}", "eval.every_steps=0", "logging.every_steps=1",
         "checkpoint.every_steps=100", "logging.wandb=disabled", "data.num_workers=2"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    peak = max(r["memory_gb"] for r in records(tmp_path / "run") if "loss" in r)
    # what python -m pretrain plan predicted for this run: its tensors (the parts less the fixed costs)
    plan = subprocess.run([sys.executable, "-m", "pretrain", "plan", "--config", recipe, f"data.path={data}",
                           f"deepspeed.global_batch_size={cfg.data.micro_batch_size}", "--gpus", "1", "--json"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    parts = json.loads(plan.stdout)["memory"]["parts"]
    predicted = sum(p["bytes"] for p in parts if p["name"] not in ("CUDA context", "allocator margin")) / 2**30
    print(f"{recipe}: micro-batch {cfg.data.micro_batch_size}, peak {peak:.1f} GiB under the 80 GB cap; "
          f"planned {predicted:.1f} GiB of tensors")
    assert peak < 80 * 0.93  # headroom
    assert 0.75 < predicted / peak < 1.25
