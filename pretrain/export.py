"""Export a training checkpoint to the Hugging Face directory format.

``python -m pretrain export RUN_DIR [OUT] [--step N]`` takes the newest complete
checkpoint (or step N), consolidates ZeRO shards of any stage into one fp32 state
dict, and writes ``OUT`` (default ``RUN_DIR/export``) with config.json, model.safetensors
and the dataset's vocabulary, loadable by ``transformers.BertForPreTraining.from_pretrained(OUT)``.
The vocabulary file must still be the one the run trained with (its fingerprint is
checked), and the fingerprint is recorded in config.json for phase 2 to check.
The checkpoint files read here are the run's own (DeepSpeed writes them with pickle).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import torch

from preprocess.cli import parser
from preprocess.tokenization import VocabError, vocab_file_fingerprint
from pretrain.checkpoint import CheckpointManager
from pretrain.hf_format import save_pretrained
from pretrain.model import BertForPreTraining
from pretrain.run_dir import RunDir, directory_problem


class ExportError(ValueError):
    """The run directory cannot be exported; the message says why."""


def consolidated_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of a DeepSpeed checkpoint directory, ZeRO shards merged."""
    if any(checkpoint.glob("*zero_pp_rank_*_optim_states.pt")):
        from preprocess import logs

        # named, so that DeepSpeed does not probe for an accelerator and warn (as in distributed.py)
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # DeepSpeed prints each step of the merge; kept for --verbose (errors still raise)
        quiet = contextlib.redirect_stdout(io.StringIO()) if logs.is_quiet() else contextlib.nullcontext()
        with quiet:
            return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    states = torch.load(checkpoint / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return {k: v.float() for k, v in states["module"].items()}


def export_checkpoint(run_dir: str, out: str | None = None, step: int | None = None) -> Path:
    """Write the newest complete checkpoint (or step ``step``) of ``run_dir`` to ``out``
    (default: the run directory's ``export/``); the checkpoint exported."""
    run = RunDir(run_dir)
    target = Path(out) if out else run.export
    if problem := directory_problem(target):
        raise ExportError(f"output {target}: {problem}; give a directory (it is created if missing)")
    manager = CheckpointManager(run.checkpoints, keep_last=1, rank=0)
    done = manager.complete()
    if step is not None:
        done = [d for d in done if d.name == CheckpointManager.tag(step)]
    if not done:
        raise ExportError(f"{run.checkpoints}: no complete checkpoint" + (f" at step {step}" if step else ""))
    checkpoint = done[-1]
    problem = manager.verify(checkpoint)
    if problem:
        raise ExportError(f"checkpoint {checkpoint}: {problem}; export an earlier one with --step")
    ref = run.data_ref()
    if ref is None:
        raise ExportError(f"{run.data_file}: missing; is {run.root} a run directory?")
    try:
        found = vocab_file_fingerprint(ref.vocab_file, ref.lower_case)
    except VocabError as e:
        raise ExportError(f"the run's vocabulary: {e}") from e
    if found != ref.fingerprint:
        raise ExportError(f"{ref.vocab_file} has fingerprint {found}, the run trained with {ref.fingerprint}: "
                          "the dataset was re-made with another vocabulary since")
    model = BertForPreTraining(run.model_config())
    model.load_state_dict(consolidated_state(checkpoint), strict=True)
    model.tie_weights()
    save_pretrained(model, str(target), vocab_file=ref.vocab_file, lower_case=ref.lower_case,
                    vocab_fingerprint=ref.fingerprint)
    return checkpoint


def main(argv: list[str]) -> int:
    p = parser("python -m pretrain export", __doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run directory of python -m pretrain")
    p.add_argument("out", nargs="?", help="output directory (default: RUN_DIR/export)")
    p.add_argument("--step", type=int, help="the checkpoint of this step (default: the newest complete one)")
    p.add_argument("--verbose", action="store_true", help="show third-party libraries' logs and output too")
    args = p.parse_args(argv)
    from preprocess import logs

    logs.setup(args.verbose)
    try:
        checkpoint = export_checkpoint(args.run_dir, args.out, args.step)
    except (ExportError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {checkpoint} to {args.out or RunDir(args.run_dir).export}")
    return 0
