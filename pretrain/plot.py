"""``python -m pretrain plot RUN_DIR [--out FILE.png]``: loss and accuracy curves from
``RUN_DIR/metrics.jsonl``, for people without wandb."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pretrain.run_dir import RunDir


def load(run: RunDir) -> tuple[list[dict], list[dict]]:
    """Training records and evaluation records of a run's metrics.jsonl."""
    records = [json.loads(line) for line in open(run.metrics, encoding="utf-8")]
    return [r for r in records if "loss" in r], [r for r in records if "eval_mlm_loss" in r]


def plot(run_dir: str, out: str | None = None) -> Path:
    """Draw loss, accuracy and learning-rate curves to ``out`` (default: the run's curves.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir(run_dir)
    train, evals = load(run)
    if not train:
        raise ValueError(f"{run.metrics}: no training records yet")
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for key, label in (("loss", "total"), ("mlm_loss", "MLM"), ("nsp_loss", "NSP")):
        ax.plot(steps, [r[key] for r in train], label=f"train {label}")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_mlm_loss"] for r in evals], "o-", label="eval MLM")
    ax.set(title="loss", xlabel="step")
    ax.legend()
    ax = axes[1]
    ax.plot(steps, [r["mlm_accuracy"] for r in train], label="train MLM")
    ax.plot(steps, [r["nsp_accuracy"] for r in train], label="train NSP")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_mlm_accuracy"] for r in evals], "o-", label="eval MLM")
        ax.plot([r["step"] for r in evals], [r["eval_nsp_accuracy"] for r in evals], "o-", label="eval NSP")
    ax.set(title="accuracy", xlabel="step", ylim=(0, 1))
    ax.legend()
    ax = axes[2]
    ax.plot(steps, [r["lr"] for r in train], color="tab:gray")
    ax.set(title="learning rate", xlabel="step")
    fig.suptitle(str(run.root))
    fig.tight_layout()
    path = Path(out) if out else run.curves
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain plot", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png)")
    args = p.parse_args(argv)
    try:
        path = plot(args.run_dir, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
