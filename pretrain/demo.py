"""The whole pipeline in one command, on CPU, in a few minutes.

    ./demo.sh                      # installs, then: python -m pretrain.demo --output demo

1. a corpus from every standard-library docstring (~1.2 MB of real technical prose);
2. a WordPiece vocabulary trained on it, and the Beam preprocessing job on all cores
   (seq 64, 5 passes, 2% of documents held out);
3. BERT-Tiny (L2 H128) trained with the real trainer: loss and MLM accuracy fall and
   rise on the held-out split; curves drawn to ``run/curves.png``;
4. the checkpoint exported to the Hugging Face format, then transformers'
   ``fill-mask`` pipeline on written prompts and on held-out sentences.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from preprocess.cli import parser

PROMPTS = [
    "Return a new [MASK] object.",
    "The default value is [MASK].",
    "This function returns the number of [MASK] in the list.",
    "The [MASK] module provides functions for working with files.",
    "Raise [MASK] if the key is not found.",
]


def scored(predictions: list[dict]) -> str:
    """fill-mask's top guesses with their probabilities: ``valueerror 0.41, keyerror 0.12, ...``."""
    return ", ".join(f"{r['token_str']} {r['score']:.2f}" for r in predictions)


def held_out_examples(data_dir: Path, n: int) -> list[tuple[str, str]]:
    """(text with one word masked, the word) from validation rows, masking a whole word."""
    from preprocess.reader import PretrainingDataset

    ds = PretrainingDataset(str(data_dir), "validation")
    tokens = ds.info.tokens()
    out = []
    for i in range(len(ds)):
        ids = ds.original_ids(i).tolist()
        words = [tokens[t] for t in ids]
        sep = words.index("[SEP]")
        a = words[1:sep]
        candidates = [j for j in range(1, len(a) - 1) if a[j].isalpha() and len(a[j]) > 3
                      and not a[j + 1].startswith("##") and not a[j].startswith("##")]
        if len(a) < 8 or not candidates:
            continue
        j = candidates[len(candidates) // 2]
        text = " ".join(["[MASK]" if k == j else w for k, w in enumerate(a)]).replace(" ##", "")
        out.append((text, a[j]))
        if len(out) == n:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = parser("python -m pretrain.demo", __doc__.split("\n\n")[0])
    ap.add_argument("--output", default="demo", help="directory for the corpus, data, run and export")
    ap.add_argument("--steps", type=int, default=2500, help="training steps")
    ap.add_argument("--verbose", action="store_true", help="show third-party libraries' logs and warnings too")
    args = ap.parse_args(argv)
    from preprocess import logs

    logs.setup(args.verbose)
    out = Path(args.output).resolve()
    t0 = time.time()

    from preprocess.example import prepare

    print("== 1-2. corpus, vocabulary, preprocessing", flush=True)
    # In-process: for 1.2 MB, Beam's worker processes cost more to start than they save (and print their own
    # start-up lines before any option reaches them).
    beam_args = ["--direct_running_mode=in_memory", "--direct_num_workers=1"] + (["--verbose"] if args.verbose else [])
    if prepare(out, vocab_size=8000, full=True, max_seq_length=64, beam_args=beam_args):
        return 1

    print("== 3. training BERT-Tiny", flush=True)
    from pretrain.config import TrainConfig
    from pretrain.distributed import world_from_env
    from pretrain.run import train
    from pretrain.run_dir import RunDir

    run = out / "run"
    cfg = TrainConfig.model_validate({
        "run_dir": str(run),
        "model": {"size": "tiny", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        "data": {"path": str(out / "data"), "micro_batch_size": 64, "num_workers": 2},
        "optim": {"lr": 2e-3, "warmup_steps": max(1, args.steps // 10), "total_steps": args.steps},
        "deepspeed": {"zero_stage": 0, "global_batch_size": 64},
        "checkpoint": {"every_steps": args.steps, "keep_last": 1},
        "eval": {"every_steps": max(1, args.steps // 5), "max_sequences": 1280},
        "logging": {"every_steps": max(1, args.steps // 5), "wandb": "disabled"},
    })
    train(cfg, world_from_env())
    records = [json.loads(line) for line in open(RunDir(run).metrics)]
    trained = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_mlm_loss" in r]
    from pretrain.plot import plot

    print(f"loss {trained[0]['loss']:.2f} -> {trained[-1]['loss']:.2f}; held-out MLM accuracy "
          f"{evals[0]['eval_mlm_accuracy']:.1%} -> {evals[-1]['eval_mlm_accuracy']:.1%}, NSP accuracy "
          f"{evals[-1]['eval_nsp_accuracy']:.1%}; curves: {plot(str(run))}")

    print("== 4. export and fill-mask through transformers", flush=True)
    from pretrain.export import export_checkpoint

    export = RunDir(run).export
    export_checkpoint(str(run))
    from transformers import logging as hf_logging
    from transformers import pipeline

    hf_logging.set_verbosity_error()  # the report lists the pooler and NSP head, which fill-mask does not use
    hf_logging.disable_progress_bar()  # "Loading weights" of a 2 MB model
    fill = pipeline("fill-mask", model=str(export), top_k=5)
    for text in PROMPTS:
        print(f"  {text}\n      -> {scored(fill(text))}")
    print("held-out sentences (true word in brackets):")
    for text, word in held_out_examples(out / "data", 5):
        found = fill(text)
        mark = "*" if word in [r["token_str"] for r in found] else " "
        print(f" {mark} {text[:150]}\n      [{word}] -> {scored(found)}")
    print(f"done in {time.time() - t0:.0f} s: data {out / 'data'}, run {run}, export {export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
