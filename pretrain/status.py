"""``python -m pretrain status RUN_DIR`` and ``python -m pretrain path RUN_DIR NAME``: a run
directory as batch scripts see it, so that no script spells a file name of its own.

``status`` prints the newest complete checkpoint and whether the run has finished, and
exits 0 once it has (1 while it has not, 2 when RUN_DIR is not a run directory).
``path`` prints one path of :class:`pretrain.run_dir.RunDir`, e.g. ``export``.
"""

from __future__ import annotations

import sys

from preprocess.cli import parser
from pretrain.checkpoint import CheckpointManager
from pretrain.run_dir import RunDir

NAMES = {attr.removesuffix("_file").replace("_", "-"): attr for attr in RunDir.PATHS}  # e.g. model-config


def main(argv: list[str]) -> int:
    p = parser("python -m pretrain status", __doc__.split("\n\n")[1])
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    run = RunDir(args.run_dir)
    if not run.config.exists():
        print(f"error: {run.root}: not a run directory (no {run.config.name})", file=sys.stderr)
        return 2
    done = CheckpointManager(run.checkpoints, keep_last=1, rank=0).complete()
    finished = run.finished()
    newest = done[-1].name if done else "none"
    if finished:
        print(f"{run.root}: finished at step {finished['step']} ({finished['samples']} samples); "
              f"newest checkpoint {newest}")
        return 0
    print(f"{run.root}: not finished; newest checkpoint {newest}")
    return 1


def path_main(argv: list[str]) -> int:
    p = parser("python -m pretrain path", "Print a path inside a run directory.")
    p.add_argument("run_dir")
    p.add_argument("name", choices=sorted(NAMES))
    args = p.parse_args(argv)
    print(getattr(RunDir(args.run_dir), NAMES[args.name]))
    return 0
