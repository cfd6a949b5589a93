"""Training metrics from rank 0: a console line with ETA, ``metrics.jsonl`` in the run
directory, and wandb (online, offline or disabled; offline when no API key is set);
and the throughput figures of an interval of steps (:class:`Interval`).

A resumed run continues the same wandb run: its id is kept in the run directory.
"""

from __future__ import annotations

import json
import netrc
import os
import resource
import sys
import time
import uuid

import torch

from pretrain.run_dir import RunDir


class Interval:
    """Throughput over the steps since the last log line (host-side counts only)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.steps = self.tokens = 0
        self.waited = 0.0

    def add(self, tokens: int, waited: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.waited += waited

    def rates(self, global_batch: int, flops_per_token: float, world: int, peak_tflops: float) -> dict[str, float]:
        """samples/s; tokens/s (real, non-pad); achieved TFLOP/s per device (``flops_per_token`` x tokens/s,
        see :func:`pretrain.model_config.flops_per_token`); MFU against ``peak_tflops``; share of time
        waiting for data. ``tokens`` and ``waited`` are summed over ranks."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        tokens_s = self.tokens / elapsed
        tflops = tokens_s * flops_per_token / 1e12 / world
        out = {"samples_per_s": self.steps * global_batch / elapsed, "tokens_per_s": tokens_s,
               "tflops_per_device": tflops, "data_wait_share": self.waited / world / elapsed}
        if peak_tflops:
            out["mfu"] = tflops / peak_tflops
        return out


def memory_gb() -> float:
    """Peak accelerator memory, or this process's peak resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def wandb_mode(requested: str) -> str:
    """``auto`` means online when credentials exist (WANDB_API_KEY or ~/.netrc), else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandbSink:
    def __init__(self, run_dir: RunDir, mode: str, project: str, name: str | None, config: dict):
        import wandb

        id_file = run_dir.wandb_id
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(run_dir.root),
                              mode=mode, config=config)

    def log(self, step: int, metrics: dict) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MetricsLogger:
    def __init__(self, run_dir: RunDir, rank: int, total_steps: int, wandb: WandbSink | None = None):
        self.rank = rank
        self.total_steps = total_steps
        self.start = time.perf_counter()
        self.first_step: int | None = None
        self.file = open(run_dir.metrics, "a", encoding="utf-8") if rank == 0 else None
        self.wandb = wandb if rank == 0 else None

    def log(self, step: int, metrics: dict) -> None:
        if self.rank != 0:
            return
        record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb:
            self.wandb.log(step, metrics)
        if self.first_step is None:
            self.first_step = step - 1
        elapsed = time.perf_counter() - self.start
        done = (step - self.first_step) / max(1, self.total_steps - self.first_step)
        eta = elapsed / done * (1 - done) if done > 0 else float("nan")
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"step {step}/{self.total_steps} {shown} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.wandb:
            self.wandb.close()
