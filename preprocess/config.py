"""Typed, validated configuration of a preprocessing run, and its command line.

Our own options are parsed here; every other argument is handed to Beam's
``PipelineOptions`` untouched, so ``--runner DataflowRunner --project ...`` or
``--direct_num_workers 8`` work as in any Beam job.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

from preprocess.documents import ReadParams
from preprocess.masking import MaskingParams
from preprocess.pairs import PairingParams


class ConfigError(ValueError):
    """An invalid option; the message names the option and what to do."""


@dataclass(frozen=True)
class PreprocessConfig:
    inputs: tuple[str, ...]
    output: str
    vocab: str
    lower_case: bool = True
    max_seq_length: int = 128
    dupe_factor: int = 5
    num_shards: int = 64
    seed: int = 12345
    validation_fraction: float = 0.0
    whole_word_mask: bool = False
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    short_seq_prob: float = 0.1
    input_format: str = "auto"
    text_field: str = "text"
    language: str = "en"
    read: ReadParams = field(default_factory=ReadParams)

    def validate(self) -> PreprocessConfig:
        problems = []
        if not self.inputs:
            problems.append("--input: give at least one file or glob")
        if not self.output:
            problems.append("--output: required")
        if not self.vocab:
            problems.append("--vocab: required (vocab.txt or tokenizer.json; bert-train-vocab makes one)")
        if not 8 <= self.max_seq_length <= 65535:
            problems.append(f"--max-seq-length {self.max_seq_length}: must be in [8, 65535]")
        if self.dupe_factor < 1:
            problems.append(f"--dupe-factor {self.dupe_factor}: must be at least 1")
        if self.num_shards < 1:
            problems.append(f"--num-shards {self.num_shards}: must be at least 1")
        if not 0.0 <= self.validation_fraction < 1.0:
            problems.append(f"--validation-fraction {self.validation_fraction}: must be in [0, 1)")
        if not 0.0 < self.masked_lm_prob < 1.0:
            problems.append(f"--masked-lm-prob {self.masked_lm_prob}: must be in (0, 1)")
        if self.max_predictions_per_seq < 1:
            problems.append(f"--max-predictions-per-seq {self.max_predictions_per_seq}: must be at least 1")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            problems.append(f"--short-seq-prob {self.short_seq_prob}: must be in [0, 1]")
        if self.input_format not in ("auto", "text", "jsonl"):
            problems.append(f"--input-format {self.input_format}: must be auto, text or jsonl")
        if not 0 <= self.seed < 2**63:
            problems.append(f"--seed {self.seed}: must be in [0, 2**63)")
        if problems:
            raise ConfigError("invalid preprocessing options:\n  " + "\n  ".join(problems))
        return self

    @property
    def pairing(self) -> PairingParams:
        return PairingParams(self.max_seq_length, self.short_seq_prob)

    @property
    def masking(self) -> MaskingParams:
        return MaskingParams(self.masked_lm_prob, self.max_predictions_per_seq, self.whole_word_mask)

    @property
    def read_params(self) -> ReadParams:
        return ReadParams(
            input_format=self.input_format,
            text_field=self.text_field,
            max_line_bytes=self.read.max_line_bytes,
            max_document_bytes=self.read.max_document_bytes,
            max_json_line_bytes=self.read.max_json_line_bytes,
        )

    @property
    def validation_shards(self) -> int:
        if self.validation_fraction <= 0:
            return 0
        return max(1, round(self.num_shards * self.validation_fraction))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["inputs"] = list(self.inputs)
        return d


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m preprocess",
        description="Shard raw text into tokenized, masked BERT sentence pairs (Arrow). "
        "Unrecognised options go to Apache Beam (e.g. --runner, --direct_num_workers).",
    )
    p.add_argument("--input", action="append", dest="inputs", required=True, metavar="GLOB",
                   help="input file or glob (local, gs://, s3://, hdfs://); repeat for more")
    p.add_argument("--output", required=True, help="dataset directory for shards and manifest.json")
    p.add_argument("--vocab", required=True, help="WordPiece vocab.txt or a tokenizers tokenizer.json")
    p.add_argument("--lower-case", action=argparse.BooleanOptionalAction, default=True,
                   help="lower-case and strip accents (vocab.txt only; default: on)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--dupe-factor", type=int, default=5, help="passes over the corpus, each with new pairs and masks")
    p.add_argument("--num-shards", type=int, default=64, help="training shards (validation gets its share)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--validation-fraction", type=float, default=0.0,
                   help="fraction of documents (by id hash) held out as the validation split")
    p.add_argument("--whole-word-mask", action="store_true")
    p.add_argument("--masked-lm-prob", type=float, default=0.15)
    p.add_argument("--max-predictions-per-seq", type=int, default=20)
    p.add_argument("--short-seq-prob", type=float, default=0.1)
    p.add_argument("--input-format", default="auto", choices=["auto", "text", "jsonl"],
                   help="auto: .jsonl/.ndjson/.json (optionally compressed) are JSON Lines, the rest text")
    p.add_argument("--text-field", default="text", help="JSON Lines field holding the document text")
    p.add_argument("--language", default="en", help="language code for sentence segmentation")
    p.add_argument("--max-line-bytes", type=int, default=ReadParams.max_line_bytes)
    p.add_argument("--max-document-bytes", type=int, default=ReadParams.max_document_bytes)
    return p


def parse_args(argv: list[str]) -> tuple[PreprocessConfig, list[str]]:
    """Our config and the remaining (Beam) arguments."""
    args, beam_args = build_parser().parse_known_args(argv)
    cfg = PreprocessConfig(
        inputs=tuple(args.inputs),
        output=args.output,
        vocab=args.vocab,
        lower_case=args.lower_case,
        max_seq_length=args.max_seq_length,
        dupe_factor=args.dupe_factor,
        num_shards=args.num_shards,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        whole_word_mask=args.whole_word_mask,
        masked_lm_prob=args.masked_lm_prob,
        max_predictions_per_seq=args.max_predictions_per_seq,
        short_seq_prob=args.short_seq_prob,
        input_format=args.input_format,
        text_field=args.text_field,
        language=args.language,
        read=ReadParams(max_line_bytes=args.max_line_bytes, max_document_bytes=args.max_document_bytes),
    )
    return cfg.validate(), beam_args
