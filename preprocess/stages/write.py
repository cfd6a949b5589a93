"""Stage 5, write: each shard's pieces -> one Arrow file; then, last, the manifest.

:func:`write_shard` writes a shard's pieces in position order with the dataset's
metadata, one piece in memory at a time; the manifest is written after every shard, by the pipeline's one
final transform, which joins every shard's record with the summed stats under one key
(and the ``.parts/`` scratch directory is removed just before it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from preprocess import progress
from preprocess.manifest import MANIFEST_NAME, build_manifest, dumps, split_summary
from preprocess.shards import (
    ShardInfo,
    ShardWriter,
    remove_parts,
    schema,
    shard_name,
    write_atomically,
)
from preprocess.stages.counting import NAMESPACE, SCRATCH
from preprocess.stages.mask import ParkedRows


def write_shard(path: str, pieces: Iterable[tuple[int, ParkedRows]], token_dtype: str,
                metadata: dict[str, str]) -> tuple[int, int, int, str]:
    """The Arrow IPC file of a shard's pieces in position order, written piece by piece; its rows,
    tokens, bytes and sha256."""
    writer = ShardWriter(path, schema(np.dtype(token_dtype), metadata))
    for _, rows in sorted(pieces, key=lambda x: x[0]):
        for batch in rows.load():
            writer.write(batch)
    size, digest = writer.close()
    return writer.rows, writer.tokens, size, digest


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, split: str, token_dtype: str, metadata: dict[str, str]):
        self.output, self.split, self.token_dtype, self.metadata = output, split, token_dtype, metadata

    def process(self, element: tuple[tuple[int, int], Iterable[tuple[int, ParkedRows]]]):
        (shard, shards), pieces = element
        meta = {**self.metadata, "split": self.split, "shard": str(shard), "shards": str(shards)}
        rel = shard_name(self.split, shard, shards)
        rows, tokens, size, digest = write_shard(FileSystems.join(self.output, rel), pieces, self.token_dtype, meta)
        Metrics.counter(NAMESPACE, "shards_written").inc()
        progress.report(shards=1)
        progress.flush()
        yield ShardInfo(rel, rows, tokens, size, digest)


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
    scratch = stats.get(SCRATCH, {}).get("bytes", 0)
    output = sum(s.bytes for s in shards)
    return build_manifest(header["config"], header["vocab"], header["inputs"], stats.get("documents", {}), splits,
                          {"peak_bytes": scratch, "output_bytes": output, "ratio": round(scratch / output, 3)
                           if output else 0.0})


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
