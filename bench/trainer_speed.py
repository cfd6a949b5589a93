"""Trainer overhead and data loader headroom, in one run.

    python -m bench.trainer_speed [--size mini] [--steps 40]

On CPU at world size 1: samples/s of ``python -m pretrain`` (DeepSpeed engine, data
loader, metrics) against a plain loop over the same model, optimizer (torch AdamW),
micro-batch and rows (target: overhead <= 10%); and samples/s of the data loader alone
against what the trainer consumes (target >= 50x). The data is the built-in example
corpus preprocessed at seq 128.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="mini")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--micro-batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "preprocess.example", "--output", str(work / "demo")], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    data_dir = work / "demo" / "data"
    warm = args.steps // 4
    subprocess.run([
        sys.executable, "-m", "pretrain", "--config", "configs/tiny-cpu.yaml", f"data.path={data_dir}",
        f"run_dir={work / 'run'}", f"model.size={args.size}", f"data.micro_batch_size={args.micro_batch}",
        f"deepspeed.global_batch_size={args.micro_batch}", "deepspeed.zero_stage=0", f"optim.total_steps={args.steps}",
        "optim.warmup_steps=1", f"logging.every_steps={warm}", "eval.every_steps=0", "logging.wandb=disabled",
        "checkpoint.every_steps=100000", "data.num_workers=2",
    ], cwd=ROOT, env=env, check=True, capture_output=True)
    records = [json.loads(line) for line in open(RunDir(work / "run").metrics)]
    steady = [r["samples_per_s"] for r in records if r["step"] > warm]
    trainer = sum(steady) / len(steady)

    from preprocess.reader import PretrainingDataset
    from pretrain.data import BatchPlan, make_loader
    from pretrain.metrics import COUNTS
    from pretrain.model import BertConfig, build_model

    data = PretrainingDataset(str(data_dir))
    torch.manual_seed(0)
    model = build_model(BertConfig.for_dataset(args.size, data.info))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    plan = BatchPlan(len(data), args.micro_batch, args.micro_batch, 1, 0, 1234)
    loader = iter(make_loader(data, plan, 0, num_workers=2))
    for step in range(args.steps):
        if step == warm:
            t = time.perf_counter()
        batch = {k: v for k, v in next(loader).items() if k not in ("plan", *COUNTS)}  # the model's inputs
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    plain = (args.steps - warm) * args.micro_batch / (time.perf_counter() - t)

    loader = iter(make_loader(data, plan, 0, num_workers=2))
    next(loader)
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < 5:
        n += len(next(loader)["input_ids"])
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
