"""The planner's memory against the real trainer's, on this CPU: ``python -m bench.plan_memory``.

For BERT tiny, mini and base, two micro-batches each, without and with activation checkpointing
(every layer), at fp32, ZeRO-0, AdamW, one rank:

* **predicted**: :func:`pretrain.memory.step_memory` as ``python -m pretrain plan`` runs it, with the
  CPU's own attention path and no allocator rounding (``Shape.gpu=False``): the tensors' bytes at the
  step's peak;
* **measured**, independently of the plan's tracing, in a process of its own: the real engine
  (:class:`pretrain.fit.Probe`: the model and DeepSpeed engine built as the trainer builds them) takes
  a training step on a worst-case micro-batch (the first makes the optimizer state), then a second
  under torch.profiler's memory events (every allocation and free of the CPU allocator,
  ``profile_memory=True``); the measured peak is the bytes of every tensor alive before the second
  step (a census through the garbage collector) plus the highest sum of that step's allocations
  less its frees.

The data is the built-in example dataset (``python -m preprocess.example``, seq 128).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [(size, m, ckpt) for size, sizes in (("tiny", (8, 32)), ("mini", (8, 32)), ("base", (4, 16)))
         for m in sizes for ckpt in (0, 1)]


def overrides(data: str, size: str, m: int, ckpt: int) -> list[str]:
    return [f"data.path={data}", f"model.size={size}", f"model.activation_checkpointing={ckpt}",
            f"data.micro_batch_size={m}", f"deepspeed.global_batch_size={m}", "deepspeed.zero_stage=0",
            "deepspeed.precision=fp32", "optim.name=adamw", "data.num_workers=0"]


def predict(data: str, size: str, m: int, ckpt: int) -> float:
    from preprocess.dataset import DatasetInfo
    from pretrain.memory import Shape, States, step_memory
    from pretrain.model_config import BertConfig

    info = DatasetInfo.load(data)
    parts, _ = step_memory(BertConfig.for_dataset(size, info),
                           Shape(m, info.max_seq_length, info.max_predictions_per_seq, "fp32", ckpt, gpu=False),
                           States(1, 0, "fp32", False))
    return sum(p.bytes for p in parts)


def measure(data: str, size: str, m: int, ckpt: int) -> float:
    """In this process: the real engine's second step's peak of live CPU tensor bytes (see the module doc)."""
    from torch.profiler import ProfilerActivity, profile

    from preprocess.dataset import DatasetInfo
    from pretrain.config import load_config
    from pretrain.distributed import init_distributed, world_from_env
    from pretrain.fit import Probe
    from pretrain.model_config import BertConfig

    info = DatasetInfo.load(data)
    world = world_from_env()
    init_distributed(world, 5)
    cfg = load_config(str(ROOT / "configs/tiny-cpu.yaml"), overrides(data, size, m, ckpt))
    probe = Probe(cfg, BertConfig.for_dataset(size, info), info, world)
    probe.step(m)
    gc.collect()
    before = tensor_bytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        probe.step(m)
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    live, peak = 0, 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    peak += before
    return float(peak)


def tensor_bytes() -> int:
    """The bytes of every tensor alive in this process (each storage once), found through the garbage collector."""
    import torch

    seen, total = set(), 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            if storage._cdata not in seen:
                seen.add(storage._cdata)
                total += storage.nbytes()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", nargs=4, metavar=("DATA", "SIZE", "M", "CKPT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        data, size, m, ckpt = args.measure
        print(json.dumps({"measured": measure(data, size, int(m), int(ckpt))}))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, "-m", "preprocess.example", "--output", work], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        data = os.path.join(work, "data")
        print("| model | micro-batch | checkpointing | predicted MiB | measured MiB | predicted / measured |")
        print("|---|---|---|---|---|---|")
        worst = 0.0
        for size, m, ckpt in CASES:
            proc = subprocess.run([sys.executable, "-m", "bench.plan_memory", "--measure", data, size, str(m), str(ckpt)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            measured = json.loads(proc.stdout.strip().splitlines()[-1])["measured"]
            predicted = predict(data, size, m, ckpt)
            worst = max(worst, abs(predicted / measured - 1))
            print(f"| {size} | {m} | {'every layer' if ckpt else 'off'} | {predicted / 2**20:.1f} | "
                  f"{measured / 2**20:.1f} | {predicted / measured:.3f} |", flush=True)
        print(f"largest difference: {worst:.1%}")


if __name__ == "__main__":
    main()
