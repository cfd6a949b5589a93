"""``python -m pretrain plan --config RECIPE [overrides] --gpus N --gpu KIND``: before a job is queued,
whether the recipe fits the card, the largest micro-batch that does, how long the run takes and what
its checkpoints cost. Seconds on a CPU; nothing is allocated (:mod:`pretrain.memory`).

Memory per GPU: the model states and the traced step (:func:`pretrain.memory.step_memory`), then
fixed costs: the CUDA context, NCCL's buffers (more than one GPU), and a margin for the caching
allocator's fragmentation. Time: the project's FLOP count of a step of full-length sequences
(:func:`pretrain.model_config.training_flops`) at an MFU (``--mfu``; what docs/benchmarks.md measured
on the card, else an assumption, said so). Checkpoints: DeepSpeed writes the 16-bit weights, the fp32
master weights and both moments; their size, ``keep_last`` of them on disk, and their write time at
``--fs-gbps``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pretrain.memory import (
    BYTES,
    Part,
    Shape,
    States,
    has_master_copy,
    parameter_counts,
    step_memory,
)
from pretrain.model_config import BertConfig, training_flops

if TYPE_CHECKING:
    from pretrain.config import TrainConfig

GiB = 2**30


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # what torch.cuda.get_device_properties reports as total_memory
    bf16_tflops: float  # dense tensor-core peak, bf16/fp16
    hbm_tbps: float


GPUS = {
    "a100-40gb": Gpu("A100 SXM 40 GB", 39.4, 312, 1.56),
    "a100-80gb": Gpu("A100 SXM 80 GB", 79.1, 312, 2.04),
    "h100": Gpu("H100 SXM 80 GB", 79.1, 989, 3.35),
    "h200": Gpu("H200 141 GB", 139.8, 989, 4.8),
}
CUDA_CONTEXT = 0.6 * GiB  # the CUDA context and torch's kernels, per process
NCCL_BUFFERS = 0.5 * GiB  # NCCL's channels and buffers, more than one rank
FRAGMENTATION = 0.05  # the caching allocator's reserve beyond the tensors' peak
ASSUMED_MFU = 0.40  # where docs/benchmarks.md has no figure for the card
FP32_TFLOPS_SHARE = 1 / 16  # fp32 runs on a GPU's CUDA cores (no TF32 here): roughly this share of bf16 peak


@dataclass(frozen=True)
class Data:
    """The dataset's shape (what :meth:`BertConfig.for_dataset` reads of one) and its size."""

    max_seq_length: int
    max_predictions_per_seq: int
    vocab_size: int
    train_sequences: int | None  # from the manifest, when the dataset exists
    source: str


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    from pretrain.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
        data = _data(cfg, args)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gpu = GPUS[args.gpu]
    memory_gib = args.gpu_memory or gpu.memory_gib
    plan = make_plan(cfg, data, args.gpus, memory_gib, args.peak_tflops or gpu.bf16_tflops, args.mfu, args.fs_gbps,
                     gpu.name if not args.gpu_memory else f"{gpu.name}, {memory_gib:g} GiB")
    if args.json:
        print(json.dumps(plan, indent=1))
    else:
        print(report(plan))
    return 0 if plan["fits"] else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pretrain plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, action="append", help="YAML recipe; repeat to merge")
    p.add_argument("overrides", nargs="*", help="section.field=value, as for training")
    p.add_argument("--gpus", type=int, required=True, help="GPUs in the job (one rank each)")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="the card (default h100)")
    p.add_argument("--gpu-memory", type=float, help="GiB per card, for a card not in the table (or a cap)")
    p.add_argument("--peak-tflops", type=float, help="dense bf16 TFLOPS per card, for a card not in the table")
    p.add_argument("--mfu", type=float, help=f"model FLOPs utilisation for the time (default: {ASSUMED_MFU:g}, "
                   "an assumption until a GPU benchmark measures it)")
    p.add_argument("--fs-gbps", type=float, default=2.0, help="checkpoint write speed, GB/s in all (default 2)")
    p.add_argument("--max-seq-length", type=int, help="where data.path has no dataset yet: its sequence length")
    p.add_argument("--max-predictions-per-seq", type=int, help="... its masked positions per sequence")
    p.add_argument("--vocab-size", type=int, default=30522, help="... its vocabulary (default 30522)")
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    return p


def _data(cfg: TrainConfig, args: argparse.Namespace) -> Data:
    manifest = os.path.join(cfg.data.path, "manifest.json")
    if os.path.exists(manifest):
        from preprocess.dataset import DatasetInfo

        info = DatasetInfo.load(cfg.data.path)
        split = info.splits.get(cfg.data.train_split)
        return Data(info.max_seq_length, info.max_predictions_per_seq, info.vocab_size,
                    split.rows if split else None, f"the dataset {cfg.data.path}")
    if not (args.max_seq_length and args.max_predictions_per_seq):
        raise ValueError(f"data.path {cfg.data.path} has no dataset yet (no manifest.json): give "
                         "--max-seq-length and --max-predictions-per-seq (and --vocab-size, default 30522)")
    return Data(args.max_seq_length, args.max_predictions_per_seq, args.vocab_size, None,
                "--max-seq-length, --max-predictions-per-seq and --vocab-size")


def make_plan(cfg: TrainConfig, data: Data, gpus: int, memory_gib: float, peak_tflops: float, mfu: float | None,
              fs_gbps: float, gpu_name: str) -> dict:
    from pretrain.config import micro_batch_sizes

    config = BertConfig.for_dataset(cfg.model.size, data)
    d = cfg.deepspeed
    states = States(gpus, d.zero_stage, d.precision, d.offload_optimizer)
    budget = memory_gib * GiB

    def memory(m: int) -> tuple[list[Part], str]:
        shape = Shape(m, data.max_seq_length, data.max_predictions_per_seq, d.precision, cfg.model.activation_checkpointing,
                      cfg.data.packing, cfg.data.max_sequences_per_row)
        parts, at = step_memory(config, shape, states)
        tensors = sum(p.bytes for p in parts)
        parts = parts + [Part("CUDA context", CUDA_CONTEXT, "per process")]
        if gpus > 1:
            parts.append(Part("NCCL buffers", NCCL_BUFFERS))
        parts.append(Part("allocator margin", FRAGMENTATION * tensors, f"{FRAGMENTATION:.0%} of the tensors"))
        return parts, at

    allowed = micro_batch_sizes(d.global_batch_size, gpus, cfg.data.packing)
    wanted = cfg.data.micro_batch_size
    largest, largest_total = _largest(memory, allowed, budget)
    # the parts shown: the recipe's micro-batch; with auto, the largest that fits (else the smallest)
    parts, at = memory(wanted if wanted != "auto" else largest or allowed[0])
    total = sum(p.bytes for p in parts)
    params, _ = parameter_counts(config)
    time = _time(cfg, config, data, gpus, peak_tflops, mfu, d.precision)
    ckpt = _checkpoints(cfg, params, d.precision, fs_gbps, time["hours"])
    # micro_batch_size auto: the run measures it on the GPU; the recipe fits if any allowed size does
    fits = total <= budget if wanted != "auto" else largest is not None
    return {
        "recipe": {"model": cfg.model.size, "parameters": params, "gpus": gpus, "gpu": gpu_name,
                   "zero_stage": d.zero_stage, "precision": d.precision, "offload_optimizer": d.offload_optimizer,
                   "micro_batch_size": wanted, "activation_checkpointing": cfg.model.activation_checkpointing,
                   "packing": cfg.data.packing, "seq_len": data.max_seq_length, "predictions": data.max_predictions_per_seq,
                   "data_from": data.source},
        "memory": {"parts": [asdict(p) for p in parts], "total": total, "card": budget, "peak_at": at,
                   "largest_micro_batch": largest, "largest_micro_batch_total": largest_total},
        "time": time, "checkpoints": ckpt, "fits": fits,
    }


def _largest(memory, allowed: list[int], budget: float) -> tuple[int | None, float | None]:
    """The largest allowed micro-batch whose step fits: bisection (the step's memory grows with the rows)."""
    lo, hi, best = 0, len(allowed) - 1, (None, None)
    while lo <= hi:
        mid = (lo + hi) // 2
        total = sum(p.bytes for p in memory(allowed[mid])[0])
        if total <= budget:
            best, lo = (allowed[mid], total), mid + 1
        else:
            hi = mid - 1
    return best


def _time(cfg: TrainConfig, config: BertConfig, data: Data, gpus: int, peak_tflops: float, mfu: float | None,
          precision: str) -> dict:
    g, s = cfg.deepspeed.global_batch_size, data.max_seq_length
    flops = g * training_flops(config, s, s * s, data.max_predictions_per_seq)
    assumed = mfu is None
    mfu = ASSUMED_MFU if assumed else mfu
    peak = peak_tflops * (FP32_TFLOPS_SHARE if precision == "fp32" else 1)
    step_s = flops / (gpus * peak * 1e12 * mfu)
    steps = cfg.optim.total_steps
    hours = step_s * steps / 3600
    tokens = steps * g * s
    epochs = steps * g / data.train_sequences if data.train_sequences else None
    return {"flops_per_step": flops, "mfu": mfu, "mfu_assumed": assumed, "step_s": step_s, "steps": steps,
            "hours": hours, "gpu_hours": hours * gpus, "tokens": tokens, "epochs": epochs}


def _checkpoints(cfg: TrainConfig, params: int, precision: str, fs_gbps: float, run_hours: float) -> dict:
    # the weights as trained, the fp32 master weights where DeepSpeed keeps them apart, two fp32 moments
    size = params * (BYTES[precision] + 4 * has_master_copy(precision, cfg.deepspeed.zero_stage) + 8)
    count = cfg.optim.total_steps // cfg.checkpoint.every_steps + 1
    write_s = size / (fs_gbps * 1e9)
    return {"bytes": size, "kept": cfg.checkpoint.keep_last, "disk": size * cfg.checkpoint.keep_last,
            "count": count, "write_s": write_s, "share_of_run": count * write_s / 3600 / run_hours}


def report(plan: dict) -> str:
    r, m, t, c = plan["recipe"], plan["memory"], plan["time"], plan["checkpoints"]
    lines = [f"BERT-{r['model']} ({r['parameters'] / 1e6:.0f}M parameters) on {r['gpus']} x {r['gpu']}: ZeRO-"
             f"{r['zero_stage']}, {r['precision']}{', optimizer offloaded' if r['offload_optimizer'] else ''}, "
             f"micro-batch {r['micro_batch_size']}, seq {r['seq_len']} ({r['predictions']} predictions; from "
             f"{r['data_from']}), activation checkpointing {_every(r['activation_checkpointing'])}"
             f"{', packed' if r['packing'] else ''}",
             f"memory per GPU (peak at the {m['peak_at']}):"]
    for p in m["parts"]:
        lines.append(f"  {p['name']:<28} {p['bytes'] / GiB:7.2f} GiB  {p['note']}")
    lines.append(f"  {'total':<28} {m['total'] / GiB:7.2f} GiB of {m['card'] / GiB:.1f} GiB")
    if m["largest_micro_batch"]:
        lines.append(f"largest micro-batch that fits: {m['largest_micro_batch']} "
                     f"({m['largest_micro_batch_total'] / GiB:.1f} GiB)")
    else:
        lines.append("largest micro-batch that fits: none of those the batch arithmetic allows")
    lines.append(f"time: {t['flops_per_step'] / 1e12:,.0f} TFLOP a step, {t['step_s']:.2f} s a step at MFU "
                 f"{t['mfu']:.0%}{' (assumed: --mfu to set it)' if t['mfu_assumed'] else ''}; {t['steps']:,} steps "
                 f"{t['hours']:.1f} h, {t['gpu_hours']:,.0f} GPU-hours, {t['tokens'] / 1e9:.1f}B tokens"
                 + (f", {t['epochs']:.2f} epochs" if t["epochs"] else ""))
    lines.append(f"checkpoints: {c['bytes'] / 1e9:.1f} GB each, {c['disk'] / 1e9:.1f} GB kept ({c['kept']}); "
                 f"{c['count']} written, {c['write_s']:.0f} s each: {c['share_of_run']:.1%} of the run")
    spare = (m["card"] - m["total"]) / GiB
    if r["micro_batch_size"] == "auto":
        verdict = ("micro_batch_size auto: the run measures it on the GPU (the plan's largest: "
                   f"{m['largest_micro_batch']})" if plan["fits"] else "does not fit at any micro-batch")
    else:
        verdict = f"fits: {spare:.1f} GiB to spare" if plan["fits"] else f"does not fit: {-spare:.1f} GiB over"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def _every(k: int) -> str:
    return "off" if not k else "every layer" if k == 1 else f"every {k} layers"
