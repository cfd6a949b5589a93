"""``python -m pretrain --config configs/<recipe>.yaml [section.field=value ...]`` trains;
``python -m pretrain export RUN_DIR OUT [--step N]`` writes a Hugging Face directory;
``python -m pretrain plot RUN_DIR`` draws the loss and accuracy curves.

Training runs the same under ``torchrun``, ``deepspeed`` or ``srun`` for many ranks.
"""

from __future__ import annotations

import argparse
import logging
import sys

from preprocess.reader import DatasetError
from pretrain.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        from pretrain.export import main as export_main

        return export_main(argv[1:])
    if argv and argv[0] == "plot":
        from pretrain.plot import main as plot_main

        return plot_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, action="append",
                   help="YAML recipe, e.g. configs/tiny-cpu.yaml; repeat to merge (e.g. configs/deepspeed/zero3.yaml)")
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. optim.lr=3e-4")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        from pretrain.engine import world_from_env
        from pretrain.trainer import train

        state = train(cfg, world_from_env())
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if state["finished"]:
        print(f"finished at step {state['step']} ({state['samples']} samples)")
    else:
        print(f"stopped at step {state['step']} ({state['samples']} samples), checkpointed: run again to resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
