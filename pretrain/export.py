"""Export a training checkpoint to the Hugging Face directory format.

``python -m pretrain export RUN_DIR OUT [--step N]`` takes the newest complete
checkpoint (or step N), consolidates ZeRO shards of any stage into one fp32 state
dict, and writes ``OUT`` with config.json, model.safetensors and the dataset's
vocabulary, loadable by ``transformers.BertForPreTraining.from_pretrained(OUT)``.
The checkpoint files read here are the run's own (DeepSpeed writes them with pickle).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pretrain.checkpoint import CheckpointManager
from pretrain.model import BertConfig, BertForPreTraining

MODEL_CONFIG = "model_config.json"  # written into the run directory at start-up


def consolidated_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of a DeepSpeed checkpoint directory, ZeRO shards merged."""
    if any(checkpoint.glob("*zero_pp_rank_*_optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    states = torch.load(checkpoint / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return {k: v.float() for k, v in states["module"].items()}


def export_checkpoint(run_dir: str, out: str, step: int | None = None) -> Path:
    run = Path(run_dir)
    manager = CheckpointManager(run / "checkpoints", keep_last=1, rank=0)
    done = manager.complete()
    if step is not None:
        done = [d for d in done if d.name == CheckpointManager.tag(step)]
    if not done:
        raise FileNotFoundError(f"{run / 'checkpoints'}: no complete checkpoint" + (f" at step {step}" if step else ""))
    checkpoint = done[-1]
    config = BertConfig.from_hf_dict(json.loads((run / MODEL_CONFIG).read_text()))
    model = BertForPreTraining(config)
    model.load_state_dict(consolidated_state(checkpoint), strict=True)
    model.tie_weights()
    resolved = json.loads((run / "data.json").read_text())
    model.save_pretrained(out, vocab_file=resolved["vocab_file"], lower_case=resolved["lower_case"])
    return checkpoint


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--step", type=int)
    args = p.parse_args(argv)
    try:
        checkpoint = export_checkpoint(args.run_dir, args.out, args.step)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {checkpoint} to {args.out}")
    return 0
