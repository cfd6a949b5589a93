"""Training metrics: a JSONL file in the run directory and a console line, from rank 0."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir: Path, rank: int, total_steps: int):
        self.rank = rank
        self.total_steps = total_steps
        self.start = time.perf_counter()
        self.file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None

    def log(self, step: int, metrics: dict) -> None:
        if self.rank != 0:
            return
        record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        done = step / self.total_steps
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(done, 1e-9) * (1 - done) if done > 0 else float("nan")
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"step {step}/{self.total_steps} {shown} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()
