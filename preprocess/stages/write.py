"""Stage 5, write: each shard's pieces -> one Arrow file; then, last, the manifest.

:func:`shard_bytes` orders a shard's pieces by position and encodes them with the
dataset's metadata; the manifest is written after every shard, by the pipeline's one
final transform, which joins every shard's record with the summed stats under one key
(and the ``.parts/`` scratch directory is removed just before it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from preprocess import progress
from preprocess.manifest import MANIFEST_NAME, build_manifest, dumps, split_summary
from preprocess.shards import (
    ShardInfo,
    checksum,
    encode_shard,
    remove_parts,
    schema,
    shard_name,
    write_atomically,
)
from preprocess.stages.counting import NAMESPACE
from preprocess.stages.mask import ParkedRows


def shard_bytes(pieces: Iterable[tuple[int, pa.RecordBatch | ParkedRows]], token_dtype: str,
                metadata: dict[str, str]) -> tuple[bytes, int, int]:
    """The Arrow IPC file of a shard's pieces in position order; its bytes, rows and tokens."""
    pieces = sorted(pieces, key=lambda x: x[0])
    sch = schema(np.dtype(token_dtype), metadata)
    batches = [b.replace_schema_metadata(sch.metadata) for _, rows in pieces
               for b in ([rows] if isinstance(rows, pa.RecordBatch) else rows.load())]
    rows = sum(b.num_rows for b in batches)
    tokens = sum(len(b.column(0).flatten()) for b in batches)
    return encode_shard(batches, sch), rows, tokens


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, split: str, token_dtype: str, metadata: dict[str, str]):
        self.output, self.split, self.token_dtype, self.metadata = output, split, token_dtype, metadata

    def process(self, element: tuple[tuple[int, int], Iterable[tuple[int, pa.RecordBatch | ParkedRows]]]):
        (shard, shards), pieces = element
        meta = {**self.metadata, "split": self.split, "shard": str(shard), "shards": str(shards)}
        data, rows, tokens = shard_bytes(pieces, self.token_dtype, meta)
        rel = shard_name(self.split, shard, shards)
        write_atomically(FileSystems.join(self.output, rel), data)
        Metrics.counter(NAMESPACE, "shards_written").inc()
        progress.report(shards=1)
        progress.flush()
        yield ShardInfo(rel, rows, tokens, len(data), checksum(data))


class WriteShards(beam.PTransform):
    def __init__(self, output: str, split: str, token_dtype: str, metadata: dict[str, str]):
        super().__init__()
        self.args = (output, split, token_dtype, metadata)

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return rows | "GroupByShard" >> beam.GroupByKey() | "Write" >> beam.ParDo(_WriteShardFn(*self.args))


def manifest_of(header: dict[str, Any], shards: list[ShardInfo], stats: dict[str, dict]) -> dict[str, Any]:
    """The manifest from the job's header (config, vocab, inputs, split names), its shards and summed stats."""
    splits = {}
    for split in header["split_names"]:
        mine = [s for s in shards if s.path.startswith(split + "/")]
        splits[split] = split_summary(mine, stats.get(split, {}))
    return build_manifest(header["config"], header["vocab"], header["inputs"], stats.get("documents", {}), splits)


class _WriteManifestFn(beam.DoFn):
    def __init__(self, output: str, header: dict[str, Any]):
        self.output, self.header = output, header

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]):
        _, joined = element
        manifest = manifest_of(self.header, list(joined["shards"]), dict(joined["stats"]))
        remove_parts(self.output)
        write_atomically(FileSystems.join(self.output, MANIFEST_NAME), dumps(manifest))
        yield manifest


class WriteManifest(beam.PTransform):
    """Writes the manifest once every shard is written: ``shards`` (ShardInfo) and ``stats``
    ((group, summed counts)) meet under one key, so the write depends on every branch."""

    def __init__(self, output: str, header: dict[str, Any]):
        super().__init__()
        self.output, self.header = output, header

    def expand(self, inputs) -> beam.PCollection:  # inputs: {tag: PCollection}, see ByTag.expand
        keyed = {tag: pcoll | f"Key[{tag}]" >> beam.Map(lambda v: (0, v)) for tag, pcoll in inputs.items()}
        return (
            keyed
            | "Gather" >> beam.CoGroupByKey()
            | "WriteManifest" >> beam.ParDo(_WriteManifestFn(self.output, self.header))
        )
