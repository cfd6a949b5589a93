"""What verifying every row costs the data loader, measured side by side.

    python -m bench.row_checks [--seconds 4] [--repeats 3]

The built-in example corpus is preprocessed at seq 128; then the trainer's own loader
(sampler, batched fetch, collator) runs over it with the per-row checks on and off
(checksums and range checks, :mod:`preprocess.integrity`), interleaved, in one process
(0 workers: the loader's whole cost on one core) and with 2 worker processes. Prints
rows/s and the checks' cost as a share of loader throughput (target <= 1%). A record
batch is checked once, at its first read, so over a run the checks cost one pass over
the data per rank: the last line measures that pass (``verify_all``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rows_per_s(data_dir: Path, check: bool, workers: int, seconds: float, verified: bool = False,
               micro: int = 32) -> float:
    from preprocess.reader import PretrainingDataset
    from pretrain.data import BatchPlan, make_loader

    data = PretrainingDataset(str(data_dir), check_rows=check)
    if check and verified:
        data.verify_all()  # as after the first pass of a run: every batch checked once (workers inherit it)
    plan = BatchPlan(len(data), micro, micro, 1, 0, 1234)
    loader = iter(make_loader(data, plan, 0, num_workers=workers))
    for _ in range(3):
        next(loader)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        n += next(loader)["counts"]["sequences"]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rows-"))
    subprocess.run([sys.executable, "-m", "preprocess.example", "--output", str(work / "demo")], cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    data_dir = work / "demo" / "data"
    print(f"seq 128, micro-batch 32, {os.cpu_count()} cores; best of {args.repeats} interleaved runs "
          f"of {args.seconds:.0f} s")
    for workers in (0, 2):
        off, fresh, steady = [], [], []
        for _ in range(args.repeats):
            off.append(rows_per_s(data_dir, False, workers, args.seconds))
            fresh.append(rows_per_s(data_dir, True, workers, args.seconds))
            steady.append(rows_per_s(data_dir, True, workers, args.seconds, verified=True))
        print(f"loader, {workers} workers: checks off {max(off):9.0f} rows/s; on, first pass in the window "
              f"{max(fresh):9.0f} rows/s ({1 - max(fresh) / max(off):+.2%}); on, after the first pass "
              f"{max(steady):9.0f} rows/s ({1 - max(steady) / max(off):+.2%}; target <= 1%)")
    from preprocess.reader import PretrainingDataset

    best = 0.0
    for _ in range(args.repeats):
        data = PretrainingDataset(str(data_dir))
        t = time.perf_counter()
        rows = data.verify_all()
        best = max(best, rows / (time.perf_counter() - t))
    size = sum(s.bytes for s in data.info.split("train").shards)
    print(f"one pass of the checks over every row: {best:,.0f} rows/s, {best * size / len(data) / 1e6:.0f} MB/s "
          f"of shards, one core")


if __name__ == "__main__":
    main()
