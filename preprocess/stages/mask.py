"""Stage 4, mask: a group's blocks -> masked rows, placed at their global position, in files.

A task takes one group of buckets (:func:`~preprocess.sizing.group_count`): a group of one
bucket is masked from its spilled blocks directly; a larger one is first spread into one
file per bucket (:class:`BucketFiles`, one pass over the group's spill), then masked a
bucket at a time, so a task holds one bucket whatever its group's size.
:func:`mask_bucket` resolves the bucket's random-next requests with its donors,
truncates, masks and sorts the rows by key; since buckets are key ranges, a row's global
position is the rows of earlier buckets plus its rank in its own, and shard ``s`` of
``S`` takes positions ``[s*N/S, (s+1)*N/S)``. Each bucket learns where it starts and how
many shards its split has (:func:`placements`, from every bucket's rows and tokens, see
:mod:`preprocess.sizing`) through a join with its blocks, not a side input: Beam's Dask
runner recomputes a side input inside each task that reads it. A bucket's rows go to one
shard or a few; each run of them is written to a file as it is built (:class:`ParkedRows`),
and only a reference travels to the shard's writer.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from preprocess import progress
from preprocess.manifest import add_stats
from preprocess.packed import DonorBlock, PairBlock, RequestBlock
from preprocess.pairs import resolve_random_next, truncate_pairs
from preprocess.shards import PARTS_DIR, RowSpec, ShardWriter, build_rows, part_name, schema
from preprocess.sizing import ShardSizing, group_buckets, group_of, shard_count
from preprocess.stages.counting import SCRATCH, STATS, ByTag, increment
from preprocess.stages.pair import Blocks, SpilledBlocks, split_by_bucket

ROWS_PER_BUILD = 16384  # bounds the masking scratch memory per call


def placements(counts: dict[int, tuple[int, int]], sizing: ShardSizing) -> list[tuple[int, tuple[int, int, int]]]:
    """(rows, tokens) per bucket (before truncation, which drops no row) -> per bucket
    ``(first position, rows of the split, shards of the split)``."""
    total = sum(rows for rows, _ in counts.values())
    shards = shard_count(total, sum(tokens for _, tokens in counts.values()), sizing)
    first, out = 0, []
    for bucket in sorted(counts):
        out.append((bucket, (first, total, shards)))
        first += counts[bucket][0]
    return out


def sum_counts(counts: Iterable[dict[int, tuple[int, int]]]) -> dict[int, tuple[int, int]]:
    """Rows and tokens per bucket, summed (associative: Beam may combine partial sums)."""
    out: dict[int, tuple[int, int]] = {}
    for part in counts:
        for bucket, (r, t) in part.items():
            rows, tokens = out.get(bucket, (0, 0))
            out[bucket] = (rows + r, tokens + t)
    return out


def group_placements(counts: Iterable[dict[int, tuple[int, int]]], sizing: ShardSizing, buckets: int,
                     groups: int) -> list[tuple[int, dict[int, tuple[int, int, int]]]]:
    """Every group's counts -> per group, its buckets' :func:`placements`."""
    out: dict[int, dict[int, tuple[int, int, int]]] = {}
    for bucket, place in placements(sum_counts(counts), sizing):
        out.setdefault(group_of(bucket, buckets, groups), {})[bucket] = place
    return sorted(out.items())


def mask_bucket(bucket: int, groups: list[Blocks], first: int, total: int, shards: int, spec: RowSpec,
                max_num_tokens: int) -> Iterator[tuple[int, int, pa.RecordBatch] | dict[str, Any]]:
    """Yields ``(shard, first position, rows)`` pieces in position order, then the stats.

    ``first``: the position of the bucket's first row; ``total``, ``shards``: the rows and shards
    of the split (:func:`placements`).
    """
    resolved, unresolved = resolve_random_next(
        RequestBlock.concat([g[1] for g in groups]), DonorBlock.concat([g[2] for g in groups])
    )
    pairs = PairBlock.concat([g[0] for g in groups] + [resolved])
    pairs, truncated = truncate_pairs(pairs, max_num_tokens)
    stats: dict[str, Any] = {"random_next_unresolved": unresolved, "tokens_truncated": truncated}
    increment(stats)
    if len(pairs):
        order = np.argsort(pairs.key, kind="stable")
        for lo in range(0, len(pairs), ROWS_PER_BUILD):
            chunk = pairs.take(order[lo : lo + ROWS_PER_BUILD])
            batch, row_stats = build_rows(chunk, spec)
            stats = add_stats(stats, row_stats)
            positions = first + lo + np.arange(len(chunk))
            shard_of = positions * shards // total
            for s in np.unique(shard_of).tolist():
                idx = np.flatnonzero(shard_of == s)
                # take() copies: a slice would drag (and pickle) the whole batch's buffers
                yield int(s), int(positions[idx[0]]), batch if len(idx) == len(batch) else batch.take(idx)
    yield stats


@dataclass(frozen=True)
class ParkedRows:
    """Rows a bucket gives one shard, left in a file for the shard's writer."""

    path: str
    rows: int
    size: int  # bytes

    def load(self) -> list[pa.RecordBatch]:
        with FileSystems.open(self.path) as f:
            table = pa.ipc.open_file(pa.py_buffer(f.read())).read_all()
        if table.num_rows != self.rows:
            raise OSError(f"{self.path}: {table.num_rows} rows, {self.rows} written")
        return table.to_batches()


class BucketFiles:
    """A group's blocks spread into one file per bucket under ``directory`` (one file open per
    bucket: :data:`~preprocess.sizing.BUCKETS_PER_GROUP_MAX` at most), read back a bucket at a
    time and removed."""

    def __init__(self, directory: str, split: str, group: int):
        # A name of its own per attempt: a task run twice never writes into the other's files.
        self.prefix = FileSystems.join(directory, f"{split}-group-{group:06d}-{uuid.uuid4().hex}")
        self.files: dict[int, Any] = {}
        self.bytes = 0

    def path(self, bucket: int) -> str:
        return f"{self.prefix}-bucket-{bucket:06d}.blocks"

    def add(self, blocks: Blocks, buckets: int) -> None:
        """Append a group's blocks (from one batch) to their buckets' files."""
        split = [split_by_bucket(block, buckets) for block in blocks]
        empty = (PairBlock.empty(), RequestBlock.empty(), DonorBlock.empty())
        for bucket in sorted(set().union(*split)):
            part = tuple(by.get(bucket, e) for by, e in zip(split, empty))
            if bucket not in self.files:
                self.files[bucket] = FileSystems.create(self.path(bucket), compression_type=CompressionTypes.UNCOMPRESSED)
            data = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
            self.files[bucket].write(data)
            self.bytes += len(data)

    def buckets(self) -> Iterator[tuple[int, list[Blocks]]]:
        """Each bucket's blocks, in bucket order; its file is removed once read."""
        for f in self.files.values():
            f.close()
        for bucket in sorted(self.files):
            path, groups = self.path(bucket), []
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                while True:
                    try:
                        groups.append(pickle.load(f))
                    except EOFError:
                        break
            FileSystems.delete([path])
            yield bucket, groups


class _ResolveAndMaskFn(beam.DoFn):
    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, buckets: int, groups: int):
        self.output, self.split, self.spec, self.max_num_tokens = output, split, spec, max_num_tokens
        self.buckets, self.groups = buckets, groups

    def _buckets(self, group: int, blocks: Iterable[Any]) -> Iterator[tuple[int, list[Blocks]]]:
        members = group_buckets(group, self.buckets, self.groups)
        load = lambda b: b.load() if isinstance(b, SpilledBlocks) else b  # noqa: E731
        if len(members) == 1:
            yield members[0], [load(b) for b in blocks]
            return
        spread = BucketFiles(FileSystems.join(self.output, PARTS_DIR), self.split, group)
        for b in blocks:
            spread.add(load(b), self.buckets)
        self.spread_bytes += spread.bytes
        yield from spread.buckets()

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]):
        group, joined = element
        places = next(iter(joined["place"]), {})  # none: a group of donors only
        scratch = self.spread_bytes = 0
        for bucket, groups in self._buckets(group, joined["blocks"]):
            first, total, shards = places.get(bucket, (0, 0, 0))
            runs: list[tuple[int, int, ShardWriter]] = []  # (shard, first position, its rows' file)
            for piece in mask_bucket(bucket, groups, first, total, shards, self.spec, self.max_num_tokens):
                if isinstance(piece, dict):
                    yield STATS, (self.split, piece)
                    continue
                shard, position, rows = piece
                if not runs or runs[-1][0] != shard:  # the bucket's rows move on to the next shard
                    path = FileSystems.join(self.output, part_name(self.split, bucket, shard))
                    runs.append((shard, position, ShardWriter(path, schema(np.dtype(self.spec.token_dtype)))))
                runs[-1][2].write(rows)
                progress.report(pairs=rows.num_rows)
            for shard, position, writer in runs:
                size, _ = writer.close()
                scratch += size
                yield "rows", ((shard, shards), (position, ParkedRows(writer.path, writer.rows, size)))
        if scratch or self.spread_bytes:
            yield STATS, (SCRATCH, {"bytes": scratch + self.spread_bytes})
        progress.flush()


class MaskInstances(beam.PTransform):
    """Resolve random-next B segments, truncate, mask.

    In: (group, blocks) items, and ``counts``: (group, {bucket: (rows, tokens)}) records, summed here;
    ``buckets`` and ``groups``: as pairing cut them (:class:`~preprocess.stages.pair.CreatePairs`).
    Out: ``rows``: ((shard, shards), (position, ParkedRows)); ``stats``.
    """

    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, sizing: ShardSizing,
                 counts: beam.PCollection, buckets: int, groups: int | None = None):
        super().__init__()
        groups = groups or buckets
        self.args = (output, split, spec, max_num_tokens, buckets, groups)
        self.sizing, self.counts, self.cuts = sizing, counts, (buckets, groups)

    def expand(self, items: beam.PCollection):  # -> {tag: PCollection}, see ByTag.expand
        places = (
            self.counts
            | "CountRows" >> beam.CombinePerKey(sum_counts)
            | "KeyAll" >> beam.Map(lambda group_counts: (0, group_counts[1]))
            | "AllCounts" >> beam.GroupByKey()
            | "Place" >> beam.FlatMap(lambda all_counts, *args: group_placements(all_counts[1], *args),
                                      self.sizing, *self.cuts)
        )
        return (
            {"blocks": items, "place": places}
            | "GatherGroups" >> beam.CoGroupByKey()
            | "ResolveMask" >> beam.ParDo(_ResolveAndMaskFn(*self.args))
            | ByTag("rows", STATS)
        )
