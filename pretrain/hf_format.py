"""Hugging Face interchange: the ``transformers`` directory format, safetensors only.

``save_pretrained(model, dir)`` writes ``config.json``, ``model.safetensors`` and,
given a vocabulary, the tokenizer files, so that
``transformers.BertForPreTraining.from_pretrained(dir)`` loads it with no missing or
unexpected keys. ``load_pretrained(dir)`` reads such a directory back, including
encoder-only checkpoints (a ``BertModel`` saved with or without the ``bert.``
prefix): the missing heads keep their fresh initialisation and are reported.
No pickle is ever loaded: weights come from safetensors files only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pretrain.model import BertConfig, BertForPreTraining, build_model

WEIGHTS = "model.safetensors"
TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")  # saved once, under their owners
HEADS = ("cls.", "bert.pooler.")
FINGERPRINT_KEY = "vocab_fingerprint"  # an extra config.json key; transformers keeps it as an attribute


class CheckpointFormatError(ValueError):
    """A directory that is not a loadable BERT checkpoint; the message says why."""


def save_pretrained(model: BertForPreTraining, directory: str, vocab_file: str | None = None,
                    lower_case: bool = True, vocab_fingerprint: str | None = None) -> None:
    """Write ``directory``; ``vocab_fingerprint`` (the dataset's) is recorded in config.json
    so that a run initialised from this directory can check its data's vocabulary."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf_dict()
    if vocab_fingerprint:
        config[FINGERPRINT_KEY] = vocab_fingerprint
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in TIED}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    if vocab_file:
        shutil.copyfile(vocab_file, out / "vocab.txt")
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "BertTokenizer", "do_lower_case": lower_case,
            "model_max_length": model.config.max_position_embeddings,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        }, indent=2) + "\n")


def vocab_fingerprint(directory: str) -> str | None:
    """The fingerprint of the vocabulary a directory's model was trained with: recorded in
    config.json by our export, else computed from its vocab.txt and tokenizer_config.json
    (a checkpoint from elsewhere); None when the directory has neither."""
    src = Path(directory)
    try:
        recorded = json.loads((src / "config.json").read_text()).get(FINGERPRINT_KEY)
    except (OSError, ValueError):
        recorded = None
    if recorded or not (src / "vocab.txt").exists():
        return recorded
    from preprocess.tokenization import vocab_file_fingerprint

    lower_case = True
    if (src / "tokenizer_config.json").exists():
        lower_case = bool(json.loads((src / "tokenizer_config.json").read_text()).get("do_lower_case", True))
    return vocab_file_fingerprint(str(src / "vocab.txt"), lower_case)


def load_pretrained(directory: str) -> tuple[BertForPreTraining, dict[str, list[str]]]:
    """The model and a report: ``initialized`` (keys absent from the checkpoint, e.g. heads)."""
    src = Path(directory)
    if not (src / "config.json").exists():
        raise CheckpointFormatError(f"{src}: no config.json")
    if not (src / WEIGHTS).exists():
        pickled = [p.name for p in src.glob("*.bin")] + [p.name for p in src.glob("*.pt")]
        hint = f" (found {', '.join(pickled)}: pickle files are not loaded; convert to safetensors)" if pickled else ""
        raise CheckpointFormatError(f"{src}: no {WEIGHTS}{hint}")
    config = BertConfig.from_hf_dict(json.loads((src / "config.json").read_text()))
    model = build_model(config)
    state = {k: v.float() for k, v in load_file(str(src / WEIGHTS)).items()}
    if not any(k.startswith(("bert.", "cls.")) for k in state):
        state = {f"bert.{k}": v for k, v in state.items()}  # a BertModel saved on its own
    state = {k: v for k, v in state.items() if not k.endswith(("position_ids", "token_type_ids"))}
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise CheckpointFormatError(f"{src / WEIGHTS}: keys that are not BERT's: {', '.join(unexpected[:8])}")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointFormatError(f"{src / WEIGHTS}: shapes differ from config.json: {'; '.join(bad[:4])}")
    missing = sorted(k for k in own if k not in state and k not in TIED)
    not_heads = [k for k in missing if not k.startswith(HEADS)]
    if not_heads:
        raise CheckpointFormatError(f"{src / WEIGHTS}: encoder weights missing: {', '.join(not_heads[:8])}")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model, {"initialized": missing}
