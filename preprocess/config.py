"""The preprocessing options, defined once: typed, validated, and the command line made from them.

:class:`PreprocessConfig` is a pydantic model: each field carries its type, default,
bounds and help text, and :func:`build_parser` derives the ``argparse`` options from the
fields (``max_seq_length`` -> ``--max-seq-length``; booleans get ``--x/--no-x``), so
``--help`` shows every default and nothing is spelled twice.

Every other argument belongs to Apache Beam (``--runner DataflowRunner --project ...``,
``--direct_num_workers 8``). It must be an option of one of Beam's options classes
(those of every runner installed: local, Dataflow, Flink, Spark, portable, Dask); an
argument that is neither ours nor Beam's is refused before any work, with the closest
names suggested, rather than silently ignored.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError

from preprocess.cli import parser
from preprocess.documents import ReadParams
from preprocess.input_parts import PART_BYTES
from preprocess.masking import MaskingParams
from preprocess.pairs import PairingParams
from preprocess.sizing import ShardSizing

# Large enough for long sequential reads from object stores and few files at terabyte scale
# (2 TB of text at dupe factor 5 makes ~50,000); small enough that every worker of a cluster
# has shards to write. A shard is written piece by piece: its size costs no memory.
SHARD_SIZE = 256 << 20


class ConfigError(ValueError):
    """An invalid option; the message names the option and what to do."""


class PreprocessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: tuple[str, ...] = Field(..., min_length=1, json_schema_extra={"flag": "--input"},
                                    description="input file or glob (local, gs://, s3://, hdfs://); repeat for more")
    output: str = Field(..., min_length=1, description="dataset directory for shards and manifest.json")
    vocab: str = Field(..., min_length=1,
                       description="WordPiece vocab.txt or a tokenizers tokenizer.json (bert-train-vocab makes one)")
    lower_case: bool = Field(True, description="lower-case and strip accents (vocab.txt only)")
    max_seq_length: int = Field(128, ge=8, le=65535, description="tokens per sequence, [CLS] and both [SEP] included")
    dupe_factor: int = Field(5, ge=1, description="passes over the corpus, each with new pairs and masks")
    shard_size: ByteSize = Field(SHARD_SIZE, ge=1 << 20, description="bytes of output per shard (e.g. 256MB, 1GiB): "
                                 "the shard count of each split follows from its size")
    num_shards: int | None = Field(None, ge=1, description="a fixed count of training shards instead "
                                   "(validation gets its share); overrides --shard-size")
    seed: int = Field(12345, ge=0, lt=2**63, description="all randomness derives from it and stable document ids")
    validation_fraction: float = Field(0.0, ge=0, lt=1,
                                       description="fraction of documents (by id hash) held out as the validation split")
    whole_word_mask: bool = Field(False, description="mask whole words (## pieces with their word)")
    masked_lm_prob: float = Field(0.15, gt=0, lt=1, description="share of tokens masked")
    max_predictions_per_seq: int = Field(20, ge=1, description="most masked positions per sequence")
    short_seq_prob: float = Field(0.1, ge=0, le=1, description="chance of a shorter target length, per document and pass")
    input_format: Literal["auto", "text", "jsonl", "parquet", "mediawiki"] = Field(
        "auto", description="auto: by extension: .jsonl/.ndjson/.json JSON Lines, .parquet/.pq Parquet, .xml a "
        "MediaWiki dump (Wikipedia's pages-articles), the rest text; all but Parquet optionally compressed")
    text_field: str = Field("text", description="JSON Lines field or Parquet column holding the document text")
    input_part_bytes: int = Field(PART_BYTES, ge=4096, description="inputs larger than this (uncompressed text "
                                  "and JSON Lines, Parquet, MediaWiki dumps) are read in parts of about this size "
                                  "by several workers (the same output for any size)")
    language: str = Field("en", description="language code for sentence segmentation")
    max_line_bytes: int = Field(ReadParams.max_line_bytes, ge=1024, description="longer lines are cut at whitespace")
    max_document_bytes: int = Field(ReadParams.max_document_bytes, ge=1024,
                                    description="larger documents are split at a line boundary")
    max_json_line_bytes: int = Field(ReadParams.max_json_line_bytes, ge=1024,
                                     description="longer JSON lines are skipped and counted")

    @property
    def pairing(self) -> PairingParams:
        return PairingParams(self.max_seq_length, self.short_seq_prob)

    @property
    def masking(self) -> MaskingParams:
        return MaskingParams(self.masked_lm_prob, self.max_predictions_per_seq, self.whole_word_mask)

    @property
    def read_params(self) -> ReadParams:
        return ReadParams(self.input_format, self.text_field, self.max_line_bytes, self.max_document_bytes,
                          self.max_json_line_bytes)

    @property
    def split_shares(self) -> dict[str, float]:
        """The splits the job makes and each one's share of the documents: train, and validation if asked for."""
        return {"train": 1 - self.validation_fraction} | (
            {"validation": self.validation_fraction} if self.validation_fraction > 0 else {})

    def shard_sizing(self, split: str, token_bytes: int) -> ShardSizing:
        """How the shard count of ``split`` follows: ``--num-shards`` (validation: its share), or ``--shard-size``."""
        count = self.num_shards
        if count is not None and split == "validation":
            count = max(1, round(count * self.validation_fraction))
        return ShardSizing(count, int(self.shard_size), token_bytes, self.masked_lm_prob, self.max_predictions_per_seq)

    def to_dict(self) -> dict[str, Any]:
        """The options as the manifest's ``config`` section records them (reading limits under ``read``)."""
        d = self.model_dump(exclude={"max_line_bytes", "max_document_bytes", "max_json_line_bytes",
                                     "input_part_bytes"})  # how the work is cut, not what it makes
        d["inputs"] = list(self.inputs)
        d["read"] = vars(self.read_params)
        return d


def flag_of(name: str) -> str:
    extra = PreprocessConfig.model_fields[name].json_schema_extra or {}
    return extra.get("flag") or "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """``argparse`` options made from :class:`PreprocessConfig`'s fields."""
    p = parser("python -m preprocess",
               "Shard raw text into tokenized, masked BERT sentence pairs (Arrow). Other options go to Apache "
               "Beam (e.g. --runner, --direct_num_workers); an option neither ours nor Beam's is an error.")
    for name, field in PreprocessConfig.model_fields.items():
        kw: dict[str, Any] = {"dest": name, "help": field.description}
        if field.is_required():
            kw.update(required=True, default=argparse.SUPPRESS)
        else:
            kw["default"] = field.default
        kind = field.annotation
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is tuple:
            kw.update(action="append", metavar="GLOB")
        elif get_origin(kind) is Literal:
            kw["choices"] = list(get_args(kind))
        elif kind is ByteSize:
            kw["type"] = str  # "256MB", "1GiB" or bytes: pydantic parses it
        else:
            kw["type"] = int if kind == int | None else kind
        p.add_argument(flag_of(name), **kw)
    p.add_argument("--verbose", action="store_true", help="show third-party libraries' logs and warnings too")
    return p


def beam_option_names() -> set[str]:
    """Every option of Beam's options classes, those of each installed runner included."""
    from apache_beam.options.pipeline_options import PipelineOptions

    try:  # the Dask runner's options class is defined with the runner (needs dask installed)
        import apache_beam.runners.dask.dask_runner  # noqa: F401
    except ImportError:
        pass
    parser = argparse.ArgumentParser(add_help=False)
    classes, todo = set(), [PipelineOptions]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in classes:
                classes.add(sub)
                todo.append(sub)
    for cls in classes:
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            pass  # an option two classes define: already known
    return {s for a in parser._actions for s in a.option_strings}


def check_beam_args(beam_args: list[str]) -> None:
    """Refuse an option that no Beam options class knows, suggesting the closest names."""
    unknown = [a.split("=", 1)[0] for a in beam_args if a.startswith("--")]
    if not unknown:
        return
    known = beam_option_names()
    ours = [flag_of(n) for n in PreprocessConfig.model_fields]
    bad = [a for a in unknown if a not in known]
    if bad:
        lines = []
        for a in bad:
            close = difflib.get_close_matches(a, ours + sorted(known), n=1, cutoff=0.6)
            lines.append(f"{a}: not an option of this job or of Apache Beam"
                         + (f"; did you mean {close[0]}?" if close else ""))
        raise ConfigError("unknown options (nothing was run):\n  " + "\n  ".join(lines))


def parse_args(argv: list[str]) -> tuple[PreprocessConfig, list[str]]:
    """Our validated config and the remaining (Beam) arguments; :class:`ConfigError` names each bad option."""
    args, beam_args = build_parser().parse_known_args(argv)
    check_beam_args(beam_args)
    options = {k: v for k, v in vars(args).items() if k != "verbose"}
    try:
        return PreprocessConfig(**options), beam_args
    except ValidationError as e:
        problems = [f"{flag_of(str(err['loc'][0]))} {_given(args, err['loc'][0])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid preprocessing options:\n  " + "\n  ".join(problems)) from None


def _given(args: argparse.Namespace, name: str) -> str:
    value = getattr(args, name, None)
    return " ".join(value) if isinstance(value, (list, tuple)) else str(value)
