"""Does a finished training run exit 0 every time? Many 2-rank runs, two at a time, exits counted.

    python -m bench.exit_stress [--runs 40] [--parallel 2] [--work DIR]

A run that trained to its end and then dies at exit (a C++ abort while the interpreter shuts down,
``terminate called without an active exception``) is a job that Slurm records as FAILED and a
requeue policy starts again. Such deaths are rare and depend on timing, so this launches many runs
under load: ``--parallel`` launches at once on the machine's cores, cycling through

  * ZeRO-3 on 2 ranks stopped at step 3 (``stop_at_step``), with evaluation;
  * the same run resumed to its end, step 6, with evaluation;
  * ZeRO-2 on 2 ranks, 6 steps, with evaluation;

each through ``torchrun`` on ``configs/tiny-cpu.yaml`` and the dataset ``python -m
preprocess.example`` makes. It prints one line per launch and the count of non-zero exits, with
the last lines of each failure's output; its exit status is the number of failed launches (capped).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KINDS = (
    ("zero3-stop", ("deepspeed.zero_stage=3", "stop_at_step=3")),
    ("zero3-resume", ("deepspeed.zero_stage=3",)),
    ("zero2", ("deepspeed.zero_stage=2",)),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(data: Path, run_dir: Path, overrides: tuple[str, ...]) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "-m", "pretrain", "--config", "configs/tiny-cpu.yaml", f"data.path={data}",
           f"run_dir={run_dir}", "optim.total_steps=6", "optim.warmup_steps=2", "logging.every_steps=1",
           "checkpoint.every_steps=100", "eval.every_steps=3", "data.num_workers=0", "logging.wandb=disabled",
           *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return proc.returncode, time.perf_counter() - t, (proc.stdout + proc.stderr)[-1500:]


def cycle(data: Path, work: Path, index: int) -> list[tuple[str, int, float, str]]:
    """One ZeRO-3 stop-and-resume pair and one ZeRO-2 run: three launches."""
    out = []
    for name, overrides in KINDS:
        run_dir = work / f"run-{index}-{'zero3' if name.startswith('zero3') else name}"
        code, sec, tail = launch(data, run_dir, overrides)
        out.append((name, code, sec, tail))
        print(f"{index:3d} {name:13s} exit {code:4d} in {sec:5.1f} s", flush=True)
    shutil.rmtree(work / f"run-{index}-zero3", ignore_errors=True)
    shutil.rmtree(work / f"run-{index}-zero2", ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40, help="launches in all (rounded up to whole cycles of three)")
    ap.add_argument("--parallel", type=int, default=2, help="launches at once")
    ap.add_argument("--work", type=Path, help="directory for the dataset and runs (default: a temporary one)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="exit-stress-"))
    data = work / "example" / "data"
    if not (data / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "preprocess.example", "--output", str(work / "example")], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    cycles = -(-args.runs // len(KINDS))
    print(f"{cycles * len(KINDS)} launches of 2 ranks, {args.parallel} at a time, on {os.cpu_count()} cores")
    t = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        results = [r for rs in pool.map(lambda i: cycle(data, work, i), range(cycles)) for r in rs]
    failed = [r for r in results if r[1] != 0]
    print(f"\n{len(results)} launches in {time.perf_counter() - t:.0f} s: {len(failed)} non-zero exits")
    for name, code, _, tail in failed:
        print(f"--- {name}: exit {code}\n{tail}")
    if args.work is None:
        shutil.rmtree(work)
    return min(len(failed), 100)


if __name__ == "__main__":
    sys.exit(main())
