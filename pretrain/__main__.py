"""``python -m pretrain --config configs/<recipe>.yaml [section.field=value ...]`` trains;
``python -m pretrain export RUN_DIR [OUT] [--step N]`` writes a Hugging Face directory;
``python -m pretrain plot RUN_DIR`` draws the loss and accuracy curves;
``python -m pretrain status RUN_DIR`` says where a run stands (exit 0 once finished);
``python -m pretrain path RUN_DIR NAME`` prints a path inside a run directory (for batch scripts);
``python -m pretrain config-doc`` writes docs/configuration.md from the typed configuration;
``python -m pretrain plan --config RECIPE --gpus N --gpu KIND`` predicts memory, time and checkpoints.

Training runs the same under ``torchrun``, ``deepspeed`` or ``srun`` for many ranks.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    if command == "export":
        from pretrain.export import main as export_main

        return export_main(argv[1:])
    if command == "plot":
        from pretrain.plot import main as plot_main

        return plot_main(argv[1:])
    if command == "config-doc":
        from pretrain.config_doc import main as config_doc_main

        return config_doc_main(argv[1:])
    if command == "plan":
        from pretrain.plan import main as plan_main

        return plan_main(argv[1:])
    if command in ("status", "path"):
        from pretrain import status

        return (status.main if command == "status" else status.path_main)(argv[1:])
    from preprocess.cli import parser
    from pretrain.config_doc import usage_sections

    p = parser("python -m pretrain", __doc__.split("\n\n")[0],
               epilog="config sections (every field: docs/configuration.md, or python -m pretrain config-doc):\n"
               + usage_sections())
    p.add_argument("--config", required=True, action="append",
                   help="YAML recipe, e.g. configs/tiny-cpu.yaml; repeat to merge (e.g. configs/deepspeed/zero3.yaml)")
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. optim.lr=3e-4")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    p.add_argument("--verbose", action="store_true", help="show third-party libraries' logs and warnings too")
    args = p.parse_args(argv)
    from preprocess import logs

    logs.setup(args.verbose)
    from preprocess.dataset import DatasetError
    from pretrain.checkpoint import CheckpointError
    from pretrain.config import ConfigError, load_config
    from pretrain.guard import RUN_STOPPED

    try:
        cfg = load_config(args.config, args.overrides)
        from pretrain.distributed import world_from_env
        from pretrain.run import train

        state = train(cfg, world_from_env())
    except (ConfigError, DatasetError, CheckpointError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except RUN_STOPPED as e:  # every rank stops at the same step, saying so
        print(f"error: {e}", file=sys.stderr)
        return 1
    if state["finished"]:
        print(f"finished at step {state['step']} ({state['samples']} samples)")
    else:
        print(f"stopped at step {state['step']} ({state['samples']} samples), checkpointed: run again to resume")
    return 0


def one_line(e: Exception) -> str:
    """The error's own message: a DataLoader worker's error arrives wrapped with the worker's
    traceback ("Caught DatasetError in DataLoader worker process 0. Original Traceback ...")."""
    text = str(e)
    marker = f"{type(e).__name__}: "
    return text.rsplit(marker, 1)[1].strip() if "Original Traceback" in text and marker in text else text


if __name__ == "__main__":
    sys.exit(main())
