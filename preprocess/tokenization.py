"""WordPiece tokenization with the ``tokenizers`` library, set up to match Google's BERT.

A ``vocab.txt`` is turned into the pipeline Google's ``FullTokenizer`` runs: BERT's
normaliser (drop NUL, U+FFFD and control characters, whitespace to space, spaces
around CJK ideographs, and when lower-casing: lower-case, NFD, strip combining
marks), split on whitespace and punctuation, greedy longest-match WordPiece with
``##`` continuations. ``max_input_chars_per_word`` is set to the reference's 200
(``tokenizers`` defaults to 100). A ``tokenizer.json`` is used as it is.

Known differences from the reference are listed in the README ("Tokenization").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from preprocess.masking import MaskVocab

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_INPUT_CHARS_PER_WORD = 200  # Google's WordpieceTokenizer default


class VocabError(ValueError):
    """The vocabulary file is missing, unreadable or lacks BERT's special tokens."""


@dataclass(frozen=True)
class TokenizerSpec:
    """Where the vocabulary comes from; picklable, so workers rebuild the tokenizer."""

    path: str
    lower_case: bool = True

    @property
    def is_json(self) -> bool:
        return self.path.endswith(".json")


def read_vocab_text(path: str) -> list[str]:
    """Tokens of a ``vocab.txt``, one per line, in id order (Beam filesystems paths)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            raw = f.read()
    except Exception as e:  # noqa: BLE001 - any filesystem error is reported the same way
        raise VocabError(f"cannot read vocabulary {path}: {e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VocabError(f"vocabulary {path} is not UTF-8 (byte {e.start})") from e
    return vocab_lines(text)


def vocab_lines(text: str) -> list[str]:
    """Tokens of a ``vocab.txt``'s text, one per line, in id order (blank lines keep their id)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line starts no token
    return [line.strip() for line in lines]


def build_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """The ``tokenizers`` pipeline for ``spec``; raises :class:`VocabError` on bad input."""
    if spec.is_json:
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(spec.path) as f:
                tok = Tokenizer.from_str(f.read().decode("utf-8"))
        except Exception as e:  # noqa: BLE001
            raise VocabError(f"cannot load tokenizer {spec.path}: {e}") from e
    else:
        tokens = read_vocab_text(spec.path)
        vocab: dict[str, int] = {}
        for i, t in enumerate(tokens):
            vocab[t] = i  # on a duplicate line the later id wins, as in the reference
        if "[UNK]" not in vocab:
            raise VocabError(f"vocabulary {spec.path} has no [UNK] token")
        tok = Tokenizer(
            models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD)
        )
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=spec.lower_case
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = tok.get_vocab(with_added_tokens=True)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise VocabError(f"vocabulary {spec.path} lacks BERT special tokens: {', '.join(missing)}")
    return tok


@dataclass(frozen=True)
class VocabInfo:
    size: int
    fingerprint: str  # sha256 over the id-ordered tokens and the normaliser settings
    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    unk_id: int
    tokens: tuple[str, ...]

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.size <= 65536 else np.dtype(np.int32)

    def mask_vocab(self) -> MaskVocab:
        return mask_vocab_of(self.tokens)


def mask_vocab_of(tokens: list[str] | tuple[str, ...]) -> MaskVocab:
    """What masking needs from a vocabulary (id order): [MASK], the ordinary tokens a random
    replacement draws from (no [PAD]/[CLS]/[unused*] ...), the ``##`` continuation pieces."""
    random_ids = np.array([i for i, t in enumerate(tokens) if not (t.startswith("[") and t.endswith("]"))],
                          dtype=np.int64)
    is_cont = np.array([t.startswith("##") for t in tokens], dtype=bool)
    return MaskVocab(mask_id=list(tokens).index("[MASK]"), random_ids=random_ids, is_continuation=is_cont)


def vocab_info(tok: Tokenizer, spec: TokenizerSpec) -> VocabInfo:
    vocab = tok.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1
    tokens = [""] * size
    for t, i in vocab.items():
        tokens[i] = t
    h = hashlib.sha256()
    h.update(json.dumps(tokens, ensure_ascii=False).encode("utf-8"))
    h.update(tok.normalizer.__getstate__() if tok.normalizer is not None else b"")
    return VocabInfo(
        size=size,
        fingerprint=h.hexdigest()[:32],
        cls_id=vocab["[CLS]"],
        sep_id=vocab["[SEP]"],
        mask_id=vocab["[MASK]"],
        pad_id=vocab["[PAD]"],
        unk_id=vocab["[UNK]"],
        tokens=tuple(tokens),
    )


def encode_sentences(tok: Tokenizer, sentences: list[str]) -> list[np.ndarray]:
    """Token ids of each sentence (no special tokens), batched on all cores by ``tokenizers``."""
    encodings = tok.encode_batch_fast(sentences, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int32) for e in encodings]


def save_vocab_copy(spec: TokenizerSpec, out_dir: str) -> str:
    """Copy the vocabulary beside the shards so the dataset is self-contained."""
    from apache_beam.io.filesystems import FileSystems

    name = "tokenizer.json" if spec.is_json else "vocab.txt"
    dest = FileSystems.join(out_dir, name)
    with FileSystems.open(spec.path) as src:
        data = src.read()
    with FileSystems.create(dest) as f:
        f.write(data)
    return name
