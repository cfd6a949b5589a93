"""Preprocessing at growing input sizes: time, memory and scratch disk, local and Dask runners.

    python -m bench.preprocess_scale [--sizes 30 200 1000] [--runs local1 local2 dask1 dask2]

Input: real prose, the Python 3.11 and Linux 6.1 documentation sources (Debian's ``python3.11-doc``
and ``linux-doc-6.1``, ~33 MB, one document per source, paragraphs as lines; fetched into
``--cache``), replicated up to each size with a distinct prefix on every line of every copy, so that
no two copies are equal. Vocabulary: bert-base-uncased's. Job: ``python -m preprocess`` with its
default options (seq 128, dupe factor 5, 10 predictions a sequence ...), output on the local disk.

``--buckets-per-group K``: also run each job as a corpus of terabytes is cut (its buckets, of the
usual size, travel ``K`` to a group and a masking task spreads its group into files per bucket,
:mod:`preprocess.sizing`), which a corpus under ~1.7 GB never is.

Runs: ``local1``/``local2``: the local runner with 1 and 2 worker processes
(``--direct_num_workers``); ``dask1``/``dask2``: Beam's Dask runner on a ``dask.distributed``
cluster of 1 and 2 single-threaded worker processes started for the run (``dask scheduler`` and
``dask worker``, as a cluster would, with Dask's background work set as ``slurm/preprocess.sbatch``
sets it). A 1-worker run is held to one core (``taskset``: every process
of it, the launcher and Dask's scheduler included), so that 1 and 2 workers compare one core with
two; a 2-worker run has every core.

Measured per run (``--repeat N``: N interleaved rounds, the median wall time with its range):
wall time; input MB/s; the rate beyond start-up (the input over the wall time less
the same run's time on a 20 KB input); the peak resident memory of each process (the largest over
the job's processes: the launcher, Beam's workers, Dask's scheduler and workers) and of all of them
together, sampled every 0.2 s; the shards (count, and the smallest and largest file); the scratch
directory ``.parts/`` at its largest, sampled every 0.5 s. Results as a Markdown table, JSON
(``--json``) and a plot of memory and throughput against the input size (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.preprocess_throughput import build_corpus, fetch_package, fetch_vocab, rst_sources
from preprocess.cluster import environment

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("local1", "local2", "dask1", "dask2")


def replicate(base: list[str], out: Path, mb: float, files: int = 16) -> list[str]:
    """``base`` files' lines, copied with a distinct prefix on every line of each copy, until ``mb`` MB."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [line for f in base for line in open(f, encoding="utf-8")]
    handles = [open(out / f"part-{i:02d}.txt", "w", encoding="utf-8") for i in range(files)]
    written, copy, target = 0, 0, mb * 1e6
    while written < target:
        for i, line in enumerate(lines):
            text = f"c{copy} {line}" if line.strip() else line  # blank lines end documents: kept blank
            handles[(i * files // len(lines))].write(text)
            written += len(text.encode("utf-8"))
            if written >= target and not line.strip():
                break
        copy += 1
    for h in handles:
        h.close()
    return sorted(str(p) for p in out.glob("*.txt"))


class Sampler(threading.Thread):
    """Peak resident memory of each process under ``roots`` (and their children) and of all of them
    together; the largest size of ``scratch``."""

    def __init__(self, roots: list[int], scratch: Path):
        super().__init__(daemon=True)
        self.roots, self.scratch = roots, scratch
        self.per_process, self.total, self.scratch_peak = 0, 0, 0
        self._done, self._tick = threading.Event(), 0

    def run(self) -> None:
        while not self._done.wait(0.2):
            procs = []
            for pid in self.roots:
                try:
                    root = psutil.Process(pid)
                    procs += [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    pass
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            if rss:
                self.per_process, self.total = max(self.per_process, max(rss)), max(self.total, sum(rss))
            self._tick += 1
            if self._tick % 3 == 0:
                self.scratch_peak = max(self.scratch_peak, du(self.scratch))

    def stop(self) -> None:
        self._done.set()
        self.join()


def du(path: Path) -> int:
    total = 0
    for d, _, names in os.walk(path):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(d, n))
            except OSError:
                pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The job as a corpus of terabytes runs it: its buckets (of the usual size) ``K`` to a group.
GROUPED = ("import sys, preprocess.sizing as s; s.GROUPS_MIN, s.BUCKETS_PER_GROUP_MAX = 1, {k}; "
           "from preprocess.__main__ import main; sys.exit(main())")


def run(kind: str, inputs: str, out: Path, vocab: Path, buckets_per_group: int | None = None) -> dict:
    """One job: its wall time, memory, scratch and shards."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = ["-c", GROUPED.format(k=buckets_per_group)] if buckets_per_group else ["-m", "preprocess"]
    cmd = [sys.executable, *job, "--input", inputs, "--output", str(out), "--vocab", str(vocab)]
    workers = int(kind[-1])
    pin = ["taskset", "-c", "0"] if workers == 1 else []  # one worker: one core, whatever it starts
    cluster = []
    if kind.startswith("local"):
        cmd.append(f"--direct_num_workers={workers}")
    else:
        port = free_port()
        env = {**env, **environment()}  # as slurm/preprocess.sbatch starts its scheduler and workers
        cluster.append(subprocess.Popen([*pin, sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", str(port),
                                         "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        cluster.append(subprocess.Popen([*pin, sys.executable, "-m", "distributed.cli.dask_worker",
                                         f"tcp://127.0.0.1:{port}", "--nworkers", str(workers), "--nthreads", "1",
                                         "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        cmd += ["--runner", "dask", f"--dask_client_address=tcp://127.0.0.1:{port}"]
    try:
        t = time.perf_counter()
        job = subprocess.Popen([*pin, *cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = Sampler([job.pid, *(c.pid for c in cluster)], out / ".parts")
        sampler.start()
        stdout, stderr = job.communicate()
        wall = time.perf_counter() - t
        sampler.stop()
        if job.returncode != 0:
            raise SystemExit(f"{kind} failed:\n{stderr[-3000:]}")
    finally:
        for c in reversed(cluster):
            c.terminate()
            c.wait(30)
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = [s["bytes"] for split in manifest["splits"].values() for s in split["shards"]]
    return {"wall": wall, "per_process_mb": sampler.per_process / 1e6, "total_mb": sampler.total / 1e6,
            "scratch_mb": sampler.scratch_peak / 1e6, "output_mb": sum(sizes) / 1e6, "shards": len(sizes),
            "shard_min_mb": min(sizes) / 1e6, "shard_max_mb": max(sizes) / 1e6}


def summarise(rounds: list[dict]) -> dict:
    """Several runs of one job: the median wall time (and every run's), the largest memory and scratch."""
    out = dict(rounds[0])
    out["walls"] = sorted(r["wall"] for r in rounds)
    out["wall"] = statistics.median(out["walls"])
    for key in ("per_process_mb", "total_mb", "scratch_mb"):
        out[key] = max(r[key] for r in rounds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[30, 200, 1000], help="input sizes, MB")
    ap.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    ap.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--plot", type=Path, help="plot memory and throughput against input size here (PNG)")
    ap.add_argument("--buckets-per-group", type=int, nargs="+", default=[0], metavar="K",
                    help="also run each job as a corpus of terabytes is cut (buckets of the usual size, K to a "
                    "group; 0: as the input's size cuts it), interleaved with the others")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every run at each size, interleaved; the "
                    "median wall time is reported with its range, the largest memory")
    args = ap.parse_args()
    vocab = fetch_vocab(args.cache)
    sources = rst_sources(fetch_package(args.cache, "python3.11-doc")) + rst_sources(
        fetch_package(args.cache, "linux-doc-6.1"))
    work = Path(args.work or tempfile.mkdtemp(prefix="preprocess-scale-"))
    base, base_mb = build_corpus(sources, work / "base")
    print(f"base text {base_mb:.1f} MB; {os.cpu_count()} cores", flush=True)
    tiny = work / "tiny"
    tiny.mkdir(exist_ok=True)
    (tiny / "t.txt").write_text(Path(base[0]).read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    startup = {kind: run(kind, str(tiny / "*.txt"), work / "out-tiny", vocab)["wall"] for kind in args.runs}
    print("start-up (20 KB input): " + ", ".join(f"{k} {v:.1f} s" for k, v in startup.items()), flush=True)
    results = []
    print("| input MB | run | wall s | MB/s | MB/s beyond start-up | peak MB a process | peak MB all | shards "
          "(smallest-largest MB) | output MB | scratch peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mb in args.sizes:
        corpus = work / f"corpus-{mb:g}"
        files = replicate(base, corpus, mb)
        size = sum(os.path.getsize(f) for f in files) / 1e6
        kinds = [(kind, k) for kind in args.runs for k in args.buckets_per_group]
        rounds: dict[tuple[str, int], list[dict]] = {kk: [] for kk in kinds}
        for _ in range(args.repeat):  # interleaved, so that a slow spell of the machine hits every run alike
            for kind, k in kinds:
                rounds[kind, k].append(run(kind, str(corpus / "*.txt"), work / "out", vocab, k))
                shutil.rmtree(work / "out")
        for (kind, k), found in rounds.items():
            r = summarise(found)
            kind_startup = startup[kind]
            kind = f"{kind} ({k} buckets a group)" if k else kind
            r.update(kind=kind, input_mb=size, rate=size / r["wall"], rate_beyond=size / (r["wall"] - kind_startup))
            results.append(r)
            spread = f" ({min(r['walls']):.1f}-{max(r['walls']):.1f})" if len(r["walls"]) > 1 else ""
            print(f"| {size:.0f} | {kind} | {r['wall']:.1f}{spread} | {r['rate']:.2f} | {r['rate_beyond']:.2f} | "
                  f"{r['per_process_mb']:.0f} | {r['total_mb']:.0f} | {r['shards']} ({r['shard_min_mb']:.1f}-"
                  f"{r['shard_max_mb']:.1f}) | {r['output_mb']:.0f} | {r['scratch_mb']:.0f} |", flush=True)
        shutil.rmtree(corpus)
    by = {(r["input_mb"], r["kind"]): r for r in results}
    for mb in sorted({r["input_mb"] for r in results}):
        line = []
        for runner in ("local", "dask"):
            one, two = by.get((mb, f"{runner}1")), by.get((mb, f"{runner}2"))
            if one and two:
                line.append(f"{runner} 2 workers / 1 beyond start-up {two['rate_beyond'] / one['rate_beyond']:.2f}x")
        if (mb, "local2") in by and (mb, "dask2") in by:
            line.append(f"dask2 / local2 {by[(mb, 'dask2')]['rate'] / by[(mb, 'local2')]['rate']:.2f}x")
        print(f"{mb:.0f} MB: " + "; ".join(line))
    if args.json:
        args.json.write_text(json.dumps({"startup": startup, "results": results}, indent=1))
    if args.plot:
        plot(results, args.plot)
    if not args.work:
        shutil.rmtree(work)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, rate) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in RUNS:
        rs = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["input_mb"])
        if rs:
            x = [r["input_mb"] for r in rs]
            mem.plot(x, [r["per_process_mb"] for r in rs], marker="o", label=f"{kind}: a process")
            mem.plot(x, [r["total_mb"] for r in rs], marker="x", linestyle="--", label=f"{kind}: all")
            rate.plot(x, [r["rate"] for r in rs], marker="o", label=kind)
    for ax, title, unit in ((mem, "peak resident memory", "MB"), (rate, "throughput", "input MB/s")):
        ax.set_xscale("log")
        ax.set_xlabel("input MB")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
