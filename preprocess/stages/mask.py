"""Stage 4, mask: a bucket's blocks -> masked rows, placed at their global position, in files.

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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from preprocess import progress
from preprocess.manifest import add_stats
from preprocess.packed import DonorBlock, PairBlock, RequestBlock
from preprocess.pairs import resolve_random_next, truncate_pairs
from preprocess.shards import RowSpec, ShardWriter, build_rows, part_name, schema
from preprocess.sizing import ShardSizing, shard_count
from preprocess.stages.counting import SCRATCH, STATS, ByTag, increment
from preprocess.stages.pair import Blocks, SpilledBlocks

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


def sum_counts(counts: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """Rows and tokens summed (associative: Beam may combine partial sums)."""
    rows = tokens = 0
    for r, t in counts:
        rows, tokens = rows + r, tokens + t
    return rows, tokens


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


class _ResolveAndMaskFn(beam.DoFn):
    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int):
        self.output, self.split, self.spec, self.max_num_tokens = output, split, spec, max_num_tokens

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]):
        bucket, joined = element
        groups = [g.load() if isinstance(g, SpilledBlocks) else g for g in joined["blocks"]]
        place = next(iter(joined["place"]), None)
        first, total, shards = place if place else (0, 0, 0)  # no place: a bucket of donors only
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
        scratch = 0
        for shard, position, writer in runs:
            size, _ = writer.close()
            scratch += size
            yield "rows", ((shard, shards), (position, ParkedRows(writer.path, writer.rows, size)))
        if runs:
            yield STATS, (SCRATCH, {"bytes": scratch})
        progress.flush()


class MaskInstances(beam.PTransform):
    """Resolve random-next B segments, truncate, mask.

    In: (bucket, blocks) items, and ``counts``: (bucket, (rows, tokens)) records, summed here.
    Out: ``rows``: ((shard, shards), (position, ParkedRows)); ``stats``.
    """

    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, sizing: ShardSizing,
                 counts: beam.PCollection):
        super().__init__()
        self.args = (output, split, spec, max_num_tokens)
        self.sizing, self.counts = sizing, counts

    def expand(self, items: beam.PCollection):  # -> {tag: PCollection}, see ByTag.expand
        places = (
            self.counts
            | "CountRows" >> beam.CombinePerKey(sum_counts)
            | "KeyAll" >> beam.Map(lambda bucket_rows: (0, bucket_rows))
            | "AllCounts" >> beam.GroupByKey()
            | "Place" >> beam.FlatMap(lambda all_counts, sizing: placements(dict(all_counts[1]), sizing), self.sizing)
        )
        return (
            {"blocks": items, "place": places}
            | "GroupByBucket" >> beam.CoGroupByKey()
            | "ResolveMask" >> beam.ParDo(_ResolveAndMaskFn(*self.args))
            | ByTag("rows", STATS)
        )
