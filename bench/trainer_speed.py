"""Trainer overhead and data loader headroom, in one run; on a GPU, the trainer's speed matrix.

    python -m bench.trainer_speed [--size mini] [--steps 40]
    python -m bench.trainer_speed --gpu --data128 DIR --data512 DIR [--steps 30] [--json OUT]

On CPU at world size 1: samples/s of ``python -m pretrain`` (DeepSpeed engine, data
loader, metrics) against a plain loop over the same model, optimizer (torch AdamW),
micro-batch and rows (target: overhead <= 10%); and samples/s of the data loader alone
against what the trainer consumes (target >= 50x). The data is the built-in example
corpus preprocessed at seq 128.

With ``--gpu`` (one GPU, world size 1, BERT-Large, bf16, ZeRO-1): ``python -m pretrain`` on
datasets made by the preprocess job at seq 128 and 512, for AdamW and LAMB, padded and packed,
attention dropout 0.1 and 0, eager and compiled; each run's steady-state real tokens/s,
sequences/s, TFLOP/s and MFU (real work only, :func:`pretrain.model_config.training_flops`),
data wait, peak memory, optimizer-step milliseconds and the host synchronisations CUDA reports
per step, from its own ``metrics.jsonl`` (the first third of the steps left out); and the bare compiled loop (:func:`bare_loop`: the model and torch's fused AdamW alone) on
the same batches, for the trainer's overhead. Printed as a table and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pretrain.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(data_dir: Path, size: str, micro: int, steps: int, warm: int, device: str = "cpu", compile: bool = False,
              packing: bool = False, peak_tflops: float = 0.0) -> dict[str, float]:
    """The model alone on the trainer's batches: our loader (same rows, same order, seed 1234), the model
    (autocast bf16 and compiled where asked), torch's AdamW (fused on GPU), one optimizer step a micro-batch.
    Steady-state rates after ``warm`` steps, FLOPs on real work as the trainer counts them."""
    from preprocess.reader import PretrainingDataset
    from pretrain.data import BatchPlan, make_loader
    from pretrain.model import BertConfig, build_model
    from pretrain.model_config import training_flops

    data = PretrainingDataset(str(data_dir))
    torch.manual_seed(0)
    model = build_model(BertConfig.for_dataset(size, data.info), device=device)
    if compile:
        model.compile()
    cuda = device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **({"fused": True} if cuda else {}))
    plan = BatchPlan(len(data), micro, micro, 1, 0, 1234, packing=packing, capacity=data.info.max_seq_length,
                     max_predictions=data.info.max_predictions_per_seq)
    loader = iter(make_loader(data, plan, 0, num_workers=4 if cuda else 2, pin_memory=cuda))
    sequences = flops = tokens = 0
    for step in range(steps):
        if step == warm:
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            sequences = flops = tokens = 0
        batch = next(loader)
        counts = batch["counts"]
        batch = {k: (v.to(device, non_blocking=True) if v is not None else None) for k, v in batch["inputs"].items()}
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sequences += counts["sequences"]
        tokens += counts["real_tokens"]
        flops += training_flops(model.config, counts["real_tokens"], counts["attention_pairs"], counts["predictions"])
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t
    out = {"samples_per_s": sequences / elapsed, "tokens_per_s": tokens / elapsed,
           "tflops_per_device": flops / elapsed / 1e12}
    out["mfu"] = out["tflops_per_device"] / peak_tflops if peak_tflops else 0.0
    if cuda:
        out["memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


RATES = ("tokens_per_s", "samples_per_s", "tflops_per_device", "mfu", "data_wait_share", "packing_efficiency",
         "sequences_per_row", "memory_gb", "optimizer_ms", "host_syncs_per_step")


def trainer_rates(data: Path, run: Path, steps: int, warm: int, *overrides: str) -> dict[str, float]:
    """``python -m pretrain`` on the tiny recipe with ``overrides``, ``steps`` steps logged every ``warm``: the
    means of its logged :data:`RATES` after step ``warm`` (those it logs). A failed run raises
    CalledProcessError (its stderr attached)."""
    cmd = [sys.executable, "-m", "pretrain", "--config", "configs/tiny-cpu.yaml", f"data.path={data}",
           f"run_dir={run}", f"optim.total_steps={steps}", "optim.warmup_steps=1", f"logging.every_steps={warm}",
           "eval.every_steps=0", "logging.wandb=disabled", "checkpoint.every_steps=100000", *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    steady = [r for r in map(json.loads, open(RunDir(run).metrics)) if "loss" in r and r["step"] > warm]
    return {k: sum(r[k] for r in steady) / len(steady) for k in RATES if k in steady[0]}


# The GPU matrix: name -> (sequence length, overrides). Micro-batches fill an 80 GB card without
# activation checkpointing (BERT-Large bf16: ~0.45 GB per 128-token row, ~2.2 GB per 512-token row).
GPU_RUNS = {
    "seq128 adamw padded": (128, ("optim.name=adamw", "data.micro_batch_size=128")),
    "seq128 lamb padded": (128, ("optim.name=lamb", "data.micro_batch_size=128")),
    "seq128 lamb packed": (128, ("optim.name=lamb", "data.micro_batch_size=128", "data.packing=true")),
    "seq128 lamb packed compiled": (128, ("optim.name=lamb", "data.micro_batch_size=128", "data.packing=true",
                                          "model.compile=true")),
    "seq512 lamb padded": (512, ("optim.name=lamb", "data.micro_batch_size=32")),
    "seq512 lamb packed": (512, ("optim.name=lamb", "data.micro_batch_size=32", "data.packing=true")),
    "seq512 lamb packed, attention dropout 0": (512, ("optim.name=lamb", "data.micro_batch_size=32",
                                                      "data.packing=true", "model.attention_probs_dropout_prob=0")),
    "seq512 lamb packed compiled": (512, ("optim.name=lamb", "data.micro_batch_size=32", "data.packing=true",
                                          "model.compile=true")),
}


def gpu_matrix(args) -> None:
    """``python -m pretrain`` over :data:`GPU_RUNS` (or ``--runs``), one after the other."""
    results = {}
    work = Path(tempfile.mkdtemp(prefix="bench-trainer-gpu-"))
    for name, (seq, overrides) in GPU_RUNS.items():
        if args.runs and not any(r in name for r in args.runs):
            continue
        data = args.data128 if seq == 128 else args.data512
        micro = int(next(o for o in overrides if o.startswith("data.micro_batch_size=")).split("=")[1])
        run = work / name.replace(" ", "-").replace(",", "")
        try:
            results[name] = trainer_rates(
                data, run, args.steps, args.steps // 3, f"model.size={args.size}", "deepspeed.precision=bf16",
                "deepspeed.zero_stage=1", f"deepspeed.global_batch_size={2 * micro}", "data.num_workers=4",
                f"logging.peak_tflops_per_device={args.peak_tflops}",
                f"logging.count_host_syncs={torch.cuda.is_available()}", *overrides)
        except subprocess.CalledProcessError as e:
            results[name] = {"error": e.stderr[-2000:]}
            print(f"{name}: failed\n{e.stderr[-2000:]}", flush=True)
            continue
        r = results[name]
        print(f"{name:42} {r['tokens_per_s']:10.0f} tok/s {r['samples_per_s']:8.1f} seq/s "
              f"{r['tflops_per_device']:6.1f} TFLOP/s MFU {r['mfu']:6.1%} wait {r['data_wait_share']:5.1%} "
              f"rows {r['packing_efficiency']:6.1%} full, {r['sequences_per_row']:.2f} seq/row, "
              f"{r['memory_gb']:.1f} GB, optimizer step {r['optimizer_ms']:.1f} ms, "
              f"{r.get('host_syncs_per_step', float('nan')):.1f} host syncs/step", flush=True)
    for seq, micro, data in ((128, 128, args.data128), (512, 32, args.data512)):
        name = f"seq{seq} bare loop, compiled, AdamW, padded"
        if args.runs and not any(r in name for r in args.runs):
            continue
        try:  # the trainer runs' batches: same rows, same order, same micro-batch
            results[name] = r = bare_loop(data, args.size, micro, args.steps, args.steps // 3, "cuda", compile=True,
                                          peak_tflops=args.peak_tflops)
            print(f"{name:42} {r['tokens_per_s']:10.0f} tok/s {r['samples_per_s']:8.1f} seq/s "
                  f"{r['tflops_per_device']:6.1f} TFLOP/s MFU {r['mfu']:6.1%} {r.get('memory_gb', 0):.1f} GB", flush=True)
        except Exception as e:  # noqa: BLE001 (one failed measurement must not lose the others)
            results[name] = {"error": repr(e)}
            print(f"{name}: failed: {e!r}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name() if torch.cuda.is_available()
                                               else "cpu", "steps": args.steps, "size": args.size,
                                               "runs": results}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default=None, help="model size (default: mini on CPU, large with --gpu)")
    ap.add_argument("--steps", type=int, default=None, help="default: 40 on CPU, 30 with --gpu")
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--gpu", action="store_true", help="the GPU matrix (see above)")
    ap.add_argument("--data128", type=Path, help="--gpu: a dataset at seq 128")
    ap.add_argument("--data512", type=Path, help="--gpu: a dataset at seq 512")
    ap.add_argument("--runs", nargs="*", help="--gpu: only the runs whose names contain one of these")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="--gpu: for MFU (H100/H200 bf16 dense: 989)")
    ap.add_argument("--json", help="--gpu: write the results here")
    args = ap.parse_args()
    if args.gpu:
        args.size, args.steps = args.size or "large", args.steps or 30
        return gpu_matrix(args)
    args.size, args.steps = args.size or "mini", args.steps or 40
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "preprocess.example", "--output", str(work / "demo")], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    data_dir = work / "demo" / "data"
    warm = args.steps // 4
    trainer = trainer_rates(data_dir, work / "run", args.steps, warm, f"model.size={args.size}",
                            f"data.micro_batch_size={args.micro_batch}",
                            f"deepspeed.global_batch_size={args.micro_batch}", "deepspeed.zero_stage=0",
                            "data.num_workers=2")["samples_per_s"]

    from preprocess.reader import PretrainingDataset
    from pretrain.data import BatchPlan, make_loader

    plain = bare_loop(data_dir, args.size, args.micro_batch, args.steps, warm)["samples_per_s"]
    data = PretrainingDataset(str(data_dir))
    plan = BatchPlan(len(data), args.micro_batch, args.micro_batch, 1, 0, 1234)
    loader = iter(make_loader(data, plan, 0, num_workers=2))
    next(loader)
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < 5:
        n += next(loader)["counts"]["sequences"]
    loading = n / (time.perf_counter() - t)

    print(f"model {args.size}, seq 128, micro-batch {args.micro_batch}, world size 1, CPU 2 threads, "
          f"{args.steps - warm} measured steps")
    print(f"plain loop (model + AdamW):        {plain:8.1f} samples/s")
    print(f"python -m pretrain (DeepSpeed):    {trainer:8.1f} samples/s  overhead {1 - trainer / plain:+.1%} "
          "(target <= 10%)")
    print(f"data loader alone (2 workers):     {loading:8.1f} samples/s  {loading / trainer:.0f}x the trainer's "
          "consumption (target >= 50x)")


if __name__ == "__main__":
    main()
