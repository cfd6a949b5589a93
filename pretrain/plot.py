"""``python -m pretrain plot RUN_DIR [--out FILE.png]``: loss and accuracy curves from
``RUN_DIR/metrics.jsonl``, for people without wandb."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from preprocess.cli import parser
from pretrain.run_dir import RunDir


def load(run: RunDir) -> tuple[list[dict], list[dict]]:
    """Training records and evaluation records of a run's metrics.jsonl."""
    if not run.metrics.is_file():
        raise FileNotFoundError(f"{run.metrics}: no such file; is {run.root} a run directory that has "
                                "logged a step?")
    records = [json.loads(line) for line in open(run.metrics, encoding="utf-8")]
    return [r for r in records if "loss" in r], [r for r in records if "eval_mlm_loss" in r]


COLOURS = {"mlm": "tab:blue", "nsp": "tab:orange", "total": "tab:gray", "lr": "tab:green"}


def run_name(run: RunDir) -> str:
    """The run's name: ``logging.run_name`` from its resolved config, else the directory's name."""
    try:
        import yaml

        name = (yaml.safe_load(run.config.read_text()) or {}).get("logging", {}).get("run_name")
    except (OSError, ValueError):
        name = None
    return name or run.root.resolve().name


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
    e_steps = [r["step"] for r in evals]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]  # one colour per series, the same in every panel: MLM blue, NSP orange, total grey
    ax.plot(steps, [r["loss"] for r in train], color=COLOURS["total"], label="train total")
    ax.plot(steps, [r["mlm_loss"] for r in train], color=COLOURS["mlm"], label="train MLM")
    ax.plot(steps, [r["nsp_loss"] for r in train], color=COLOURS["nsp"], label="train NSP")
    if evals:
        ax.plot(e_steps, [r["eval_mlm_loss"] for r in evals], "o--", color=COLOURS["mlm"], label="held-out MLM")
    ax.set(title="loss", xlabel="step", ylabel="cross-entropy (nats)")
    ax.legend()
    ax = axes[1]
    ax.plot(steps, [r["mlm_accuracy"] for r in train], color=COLOURS["mlm"], label="train MLM")
    ax.plot(steps, [r["nsp_accuracy"] for r in train], color=COLOURS["nsp"], label="train NSP")
    if evals:
        ax.plot(e_steps, [r["eval_mlm_accuracy"] for r in evals], "o--", color=COLOURS["mlm"], label="held-out MLM")
        ax.plot(e_steps, [r["eval_nsp_accuracy"] for r in evals], "o--", color=COLOURS["nsp"], label="held-out NSP")
    ax.set(title="accuracy", xlabel="step", ylabel="share of predictions right", ylim=(0, 1))
    ax.legend()
    ax = axes[2]
    ax.plot(steps, [r["lr"] for r in train], color=COLOURS["lr"])
    ax.set(title="learning rate", xlabel="step", ylabel="learning rate")
    fig.suptitle(run_name(run))
    fig.tight_layout()
    path = Path(out) if out else run.curves
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    p = parser("python -m pretrain plot", __doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run directory of python -m pretrain")
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png)")
    args = p.parse_args(argv)
    try:
        path = plot(args.run_dir, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
