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
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import torch

from preprocess.progress import Progress
from pretrain.run_dir import RunDir

# Host counts a micro-batch carries (made by the collator) and an interval sums, over ranks too.
COUNTS = ("real_tokens", "attention_pairs", "predictions", "capacity", "rows_used", "sequences")


class Interval:
    """Throughput over the steps since the last log line (host-side counts only)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.steps = 0
        self.counts = dict.fromkeys(COUNTS, 0)
        self.waited = 0.0
        self.optimizer_seconds = 0.0  # summed over ranks, set at the logging step (DeviceTimer.read)
        self.host_syncs: float | None = None  # likewise, where counted (HostSyncs)

    def add(self, counts: dict[str, int], waited: float) -> None:
        """One step's ``COUNTS`` (this rank's) and seconds spent waiting for data."""
        self.steps += 1
        for k in COUNTS:
            self.counts[k] += counts[k]
        self.waited += waited

    def rates(self, global_batch: int, flops: Callable[[int, int, int], float], world: int,
              peak_tflops: float) -> dict[str, float]:
        """samples/s; tokens/s (real, non-pad); achieved TFLOP/s per device (``flops(tokens, attention pairs,
        predictions)``, see :func:`pretrain.model_config.training_flops`: real work only); MFU against
        ``peak_tflops``; share of time waiting for data; real tokens over the rows' capacity, and sequences
        per non-empty row. ``counts`` and ``waited`` are summed over ranks."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        c = self.counts
        tflops = flops(c["real_tokens"], c["attention_pairs"], c["predictions"]) / elapsed / 1e12 / world
        out = {"samples_per_s": self.steps * global_batch / elapsed, "tokens_per_s": c["real_tokens"] / elapsed,
               "tflops_per_device": tflops, "data_wait_share": self.waited / world / elapsed,
               "packing_efficiency": c["real_tokens"] / max(1, c["capacity"]),
               "sequences_per_row": c["sequences"] / max(1, c["rows_used"]),
               "optimizer_ms": self.optimizer_seconds / world / max(1, self.steps) * 1e3}
        if peak_tflops:
            out["mfu"] = tflops / peak_tflops
        if self.host_syncs is not None:
            out["host_syncs_per_step"] = self.host_syncs / world / max(1, self.steps)
        return out


class DeviceTimer:
    """Seconds the device spends in a region (the optimizer step), summed until :meth:`read`: timed by
    CUDA events on a GPU, which the host does not wait for until it reads them (at a logging step,
    which waits anyway); by the host clock on CPU, where the host runs the work itself."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.seconds = 0.0

    @contextmanager
    def timing(self, on: bool = True) -> Iterator[None]:
        if not on:
            yield
        elif self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((start, end))
        else:
            t = time.perf_counter()
            yield
            self.seconds += time.perf_counter() - t

    def reset(self) -> None:
        """Drop what was timed since the last read, without waiting for it."""
        self.seconds, self.events = 0.0, []

    def read(self) -> float:
        """The seconds since the last read or reset (on a GPU, waits for the last timed region to end)."""
        for start, end in self.events:
            end.synchronize()
            self.seconds += start.elapsed_time(end) / 1e3
        seconds, self.seconds, self.events = self.seconds, 0.0, []
        return seconds


class HostSyncs:
    """The synchronisations CUDA reports inside :meth:`counting`, summed until :meth:`read`: each call
    that makes the host wait for the GPU (``.item()``, ``bool()`` of a tensor, a blocking copy to the
    host, ``nonzero``...), by ``torch.cuda.set_sync_debug_mode("warn")``. A diagnostic
    (``logging.count_host_syncs``): each one costs a Python warning, nothing when the step has none.
    Other warnings raised inside are passed on."""

    def __init__(self):
        self.count = 0

    @contextmanager
    def counting(self) -> Iterator[None]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode(before)
        for w in caught:
            if "a synchronizing" in str(w.message):  # "called a synchronizing CUDA operation"
                self.count += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def read(self) -> int:
        count, self.count = self.count, 0
        return count


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


class Eta:
    """Seconds left to ``total_steps``, from the pace of recent steady-state steps.

    :meth:`tick` is called as each step ends. The first step of a process (start-up,
    compilation, DeepSpeed's lazy set-up) is left out: the pace is measured from its end,
    over a moving window of the last ``window`` steps, so the first estimate is already
    a steady-state one and later ones follow changes of pace.
    """

    def __init__(self, total_steps: int, window: int = 100, clock: Callable[[], float] = time.perf_counter):
        self.total_steps, self.clock = total_steps, clock
        self.ticks: deque[tuple[int, float]] = deque(maxlen=window + 1)

    def tick(self, step: int) -> None:
        self.ticks.append((step, self.clock()))

    def seconds_left(self) -> float | None:
        """None until two steps have ended."""
        if len(self.ticks) < 2:
            return None
        (s0, t0), (s1, t1) = self.ticks[0], self.ticks[-1]
        return (self.total_steps - s1) * (t1 - t0) / (s1 - s0)


def format_seconds(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class MetricsLogger:
    """Rank 0 writes each record to metrics.jsonl, wandb and the console; the console also shows
    progress (a bar on a terminal, else a plain line every 30 s between records)."""

    def __init__(self, run_dir: RunDir, rank: int, total_steps: int, wandb: WandbSink | None = None,
                 clock: Callable[[], float] = time.perf_counter, stream: IO[str] | None = None,
                 wandb_after: int | None = None):
        """``wandb_after``: the last step wandb has already seen (a resume that went back over steps);
        wandb's steps must increase, so later records reach it from the step after."""
        self.rank, self.run_dir = rank, run_dir
        self.wandb_after = wandb_after
        self.last_logged = wandb_after
        self.total_steps = total_steps
        self.eta = Eta(total_steps, clock=clock)
        self.file = open(run_dir.metrics, "a", encoding="utf-8") if rank == 0 else None
        self.wandb = wandb if rank == 0 else None
        self.progress = Progress(total_steps, "train", "steps", stream=stream or sys.stderr) if rank == 0 else None

    def tick(self, step: int) -> None:
        """A training step has ended (for the ETA and the progress display)."""
        self.eta.tick(step)
        if self.progress is not None:
            left = self.eta.seconds_left()
            self.progress.update(step, eta=format_seconds(left) if left is not None else "-")

    def log(self, step: int, metrics: dict) -> None:
        if self.rank != 0:
            return
        record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb and (self.wandb_after is None or step > self.wandb_after):
            self.wandb.log(step, metrics)
        self.last_logged = max(step, self.last_logged or 0)
        left = self.eta.seconds_left()
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        eta = f" eta {format_seconds(left)}" if left is not None else ""
        self.progress.write(f"step {step}/{self.total_steps} {shown}{eta}")

    def rewind(self, step: int) -> None:
        """The run goes back to ``step`` (a roll-back): later records move to metrics-superseded.jsonl, as
        on a resume, and wandb, which has seen them, gets records again from the step after its last."""
        if self.rank != 0:
            return
        self.file.close()
        self.run_dir.supersede_metrics(step)
        self.file = open(self.run_dir.metrics, "a", encoding="utf-8")
        self.wandb_after = self.last_logged
        self.eta.ticks.clear()  # the pace is measured again from the steps trained after it

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.file:
            self.file.close()
        if self.wandb:
            self.wandb.close()
