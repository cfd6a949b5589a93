"""Packed rows against padded rows on real prose at seq 512, side by side in one run (CPU).

    python -m bench.packing [--steps 16] [--size mini]

The Python 3.11 documentation (Debian's ``python3.11-doc``, as ``bench.preprocess_throughput``
fetches it) is preprocessed by ``python -m preprocess`` at seq 512 with the default
``short_seq_prob`` (bert-base-uncased's vocabulary). Printed: the dataset's padding share
against ``max_seq_length`` and what packing would give (``preprocess.packing.estimate``, as
``inspect`` shows it); then ``python -m pretrain`` on the same global batches of sequences
(same seed, one rank, fp32, ZeRO-0) three ways: padded to the longest row of each
micro-batch with length bucketing off, with it on, and packed (``data.packing``). Real tokens/s
and sequences/s are the trainer's own steady-state figures (the first quarter of the steps
left out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.preprocess_throughput import build_corpus, fetch_package, fetch_vocab, rst_sources
from bench.trainer_speed import trainer_rates
from preprocess.packing import estimate
from preprocess.reader import PretrainingDataset

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    ap.add_argument("--size", default="mini")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--global-batch", type=int, default=32)
    ap.add_argument("--micro-batch", type=int, default=8, help="rows per micro-batch (packed rows too)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-packing-"))
    _, mb = build_corpus(rst_sources(fetch_package(args.cache, "python3.11-doc")), work / "corpus")
    data = work / "data"
    subprocess.run([sys.executable, "-m", "preprocess", "--input", str(work / "corpus" / "*.txt"), "--output",
                    str(data), "--vocab", str(fetch_vocab(args.cache)), "--max-seq-length", "512",
                    "--max-predictions-per-seq", "80", "--dupe-factor", "1", "--num-shards", "4"],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    ds = PretrainingDataset(str(data))
    est = estimate(ds.lengths(), 512, args.global_batch, 3)
    print(f"Python 3.11 docs, {mb:.1f} MB -> {len(ds):,} sequences at seq 512 (default short_seq_prob 0.1); "
          f"{os.cpu_count()} cores")
    print(f"padding share against 512: {est['padding_share']:.1%}; packed in global batches of {args.global_batch} "
          f"(<= 3 per row): {est['packed_padding_share']:.1%} padding, {est['sequences_per_row']:.2f} sequences/row")
    common = (f"model.size={args.size}", f"data.micro_batch_size={args.micro_batch}",
              f"deepspeed.global_batch_size={args.global_batch}", "deepspeed.zero_stage=0", "data.num_workers=1")
    layouts = {"padded, bucketing off": (), "padded, bucketing on (8 steps)": ("data.length_bucketing=8",),
               "packed": ("data.packing=true",)}
    runs = {name: trainer_rates(data, work / f"run{i}", args.steps, args.steps // 4, *common, *extra)
            for i, (name, extra) in enumerate(layouts.items())}
    base = runs["padded, bucketing off"]["tokens_per_s"]
    print(f"\npython -m pretrain, model {args.size}, global batch {args.global_batch} sequences, micro-batch "
          f"{args.micro_batch} rows, fp32, {args.steps} steps (first {args.steps // 4} left out)")
    print(f"{'':32} {'real tokens/s':>14} {'sequences/s':>12} {'real/capacity':>14} {'seq/row':>8} {'vs padded':>10}")
    for name, r in runs.items():
        print(f"{name:32} {r['tokens_per_s']:14.0f} {r['samples_per_s']:12.2f} {r['packing_efficiency']:14.1%} "
              f"{r['sequences_per_row']:8.2f} {r['tokens_per_s'] / base:9.2f}x")


if __name__ == "__main__":
    main()
