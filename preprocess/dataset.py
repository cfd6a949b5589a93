"""The typed face of a preprocessed dataset: what a consumer may ask of it.

``DatasetInfo.load(path)`` reads and checks ``manifest.json`` and answers in
types: the vocabulary (file, fingerprint, size, case, tokens), the sequence length,
the masking parameters, the splits with their shards and statistics. The trainer
asks this object and never digs into the manifest dict, so the manifest's layout
has one reader (this module) besides the job that writes it
(:mod:`preprocess.manifest`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from preprocess.manifest import MANIFEST_NAME, content_checksum
from preprocess.masking import MaskingParams
from preprocess.shards import FORMAT_NAME, READABLE_VERSIONS, ShardInfo


class DatasetError(ValueError):
    """The dataset directory is incomplete, corrupt or does not fit what was expected."""


@dataclass(frozen=True)
class SplitInfo:
    """One split: its rows and tokens, its shards (in manifest order) and statistics."""

    name: str
    rows: int
    tokens: int
    shards: tuple[ShardInfo, ...]
    stats: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class DatasetInfo:
    """Everything a consumer needs to know about a dataset directory, typed."""

    path: str
    vocab_file: str  # the vocabulary copied beside the shards (vocab.txt or tokenizer.json)
    vocab_fingerprint: str  # sha256 prefix over the id-ordered tokens and the normaliser settings
    vocab_size: int
    lower_case: bool
    token_dtype: str
    format_version: int  # 1: no per-row checksums (shards are verified by sha256)
    max_seq_length: int
    masking: MaskingParams
    seed: int
    splits: dict[str, SplitInfo]
    inputs: tuple[str, ...]
    documents: dict[str, int] = field(repr=False)
    options: dict[str, Any] = field(repr=False)  # the preprocessing options as run (``config`` in the manifest)

    @classmethod
    def load(cls, path: str) -> DatasetInfo:
        """Read ``path/manifest.json``; :class:`DatasetError` naming the file if it is not a dataset."""
        manifest = read_manifest(path)
        where = os.path.join(path, MANIFEST_NAME)
        try:
            vocab, config = manifest["vocab"], manifest["config"]
            splits = {
                name: SplitInfo(name, int(s["rows"]), int(s["tokens"]),
                                tuple(ShardInfo(**shard) for shard in s["shards"]), s.get("stats", {}))
                for name, s in manifest["splits"].items()
            }
            return cls(
                path=path,
                vocab_file=os.path.join(path, vocab["file"]),
                vocab_fingerprint=vocab["fingerprint"],
                vocab_size=int(vocab["size"]),
                lower_case=bool(vocab.get("lower_case", True)),
                token_dtype=vocab.get("token_dtype", "int32"),
                format_version=int(manifest["format_version"]),
                max_seq_length=int(config["max_seq_length"]),
                masking=MaskingParams(float(config["masked_lm_prob"]), int(config["max_predictions_per_seq"]),
                                      bool(config["whole_word_mask"])),
                seed=int(config["seed"]),
                splits=splits,
                inputs=tuple(manifest.get("inputs", ())),
                documents=dict(manifest.get("documents", {})),
                options=dict(config),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{where}: missing or malformed entry ({type(e).__name__}: {e})") from e

    @property
    def max_predictions_per_seq(self) -> int:
        return self.masking.max_predictions_per_seq

    def split(self, name: str) -> SplitInfo:
        """The split called ``name``; :class:`DatasetError` listing the splits there are."""
        if name not in self.splits:
            raise DatasetError(f"{os.path.join(self.path, MANIFEST_NAME)}: no split {name!r} "
                               f"(has {', '.join(self.splits)})")
        return self.splits[name]

    def rows(self, name: str) -> int:
        """Rows in split ``name``; 0 when the dataset has no such split."""
        return self.splits[name].rows if name in self.splits else 0

    def tokens(self) -> list[str]:
        """The vocabulary in id order (read once per process and file)."""
        return list(_tokens(self.vocab_file, self.vocab_size))

    def token_id(self, token: str) -> int:
        return _tokens(self.vocab_file, self.vocab_size).index(token)

    def check_vocab(self, fingerprint: str | None, what: str) -> None:
        """Fail unless ``what`` (e.g. "model.init_from runs/p1/export") used this dataset's vocabulary."""
        if fingerprint and fingerprint != self.vocab_fingerprint:
            raise DatasetError(
                f"{what} was made with vocabulary {fingerprint}, the dataset {self.path} with "
                f"{self.vocab_fingerprint}: token ids would mean different words. Preprocess the corpus "
                "with the same vocab.txt (and the same --lower-case setting)"
            )


def read_manifest(path: str) -> dict[str, Any]:
    """The raw manifest of a finished dataset, format and version checked."""
    file = os.path.join(path, MANIFEST_NAME)
    if not os.path.exists(file):
        raise DatasetError(
            f"{file}: no manifest. The directory is not a finished dataset "
            "(the job writes manifest.json last); run or re-run `python -m preprocess`."
        )
    try:
        with open(file, encoding="utf-8") as f:
            manifest = json.load(f)
    except ValueError as e:
        raise DatasetError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise DatasetError(f"{file}: not a manifest (a JSON object is expected)")
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{file}: format {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise DatasetError(f"{file}: format version {version}, this reader reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version >= 2 and manifest.get("checksum") != content_checksum(manifest):
        raise DatasetError(f"{file}: damaged (its content does not match its checksum); restore it from "
                           "the dataset's source or re-run python -m preprocess")
    return manifest


@cache
def _tokens(file: str, size: int) -> tuple[str, ...]:
    if file.endswith(".json"):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(file)
        return tuple(tok.id_to_token(i) or "" for i in range(size))
    from preprocess.tokenization import vocab_lines

    with open(file, encoding="utf-8") as f:
        return tuple(vocab_lines(f.read())[:size])
