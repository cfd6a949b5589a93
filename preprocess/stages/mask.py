"""Stage 4, mask: a bucket's blocks -> masked rows, placed at their global position.

:func:`mask_bucket` resolves the bucket's random-next requests with its donors,
truncates, masks and sorts the rows by key; since buckets are key ranges, a row's global
position is the rows of earlier buckets plus its rank in its own, and shard ``s`` of
``S`` takes positions ``[s*N/S, (s+1)*N/S)``. Each bucket learns where it starts
(:func:`placements`, from every bucket's row count) through a join with its blocks, not
a side input: Beam's Dask runner recomputes a side input inside each task that reads it.
Bucket ``s`` holds nearly the rows of shard ``s``: those stay in a file
(:class:`ParkedRows`), and only the rows near its ends travel through the shuffle to the
neighbouring shard's writer.
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
from preprocess.shards import RowSpec, build_rows, encode_shard, part_name, write_atomically
from preprocess.stages.counting import STATS, ByTag, increment
from preprocess.stages.pair import Blocks, SpilledBlocks

ROWS_PER_BUILD = 16384  # bounds the masking scratch memory per call


def placements(counts: dict[int, int]) -> list[tuple[int, tuple[int, int]]]:
    """Rows per bucket (before truncation, which drops no row) -> per bucket ``(first position, rows of the split)``."""
    total, first, out = sum(counts.values()), 0, []
    for bucket in sorted(counts):
        out.append((bucket, (first, total)))
        first += counts[bucket]
    return out


def mask_bucket(bucket: int, groups: list[Blocks], first: int, total: int, spec: RowSpec, max_num_tokens: int,
                num_shards: int) -> Iterator[tuple[int, int, int, pa.RecordBatch] | dict[str, Any]]:
    """Yields ``(shard, shards, first position, rows)`` pieces in position order, then the stats.

    ``first``: the position of the bucket's first row; ``total``: the rows of the split (:func:`placements`).
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
        shards = min(num_shards, total)
        for lo in range(0, len(pairs), ROWS_PER_BUILD):
            chunk = pairs.take(order[lo : lo + ROWS_PER_BUILD])
            batch, row_stats = build_rows(chunk, spec)
            stats = add_stats(stats, row_stats)
            positions = first + lo + np.arange(len(chunk))
            shard_of = positions * shards // total
            for s in np.unique(shard_of).tolist():
                idx = np.flatnonzero(shard_of == s)
                # take() copies: a slice would drag (and pickle) the whole batch's buffers
                yield int(s), shards, int(positions[idx[0]]), batch if len(idx) == len(batch) else batch.take(idx)
    yield stats


@dataclass(frozen=True)
class ParkedRows:
    """Rows a bucket keeps for the shard of the same number, left in a file for its writer."""

    path: str
    rows: int

    def load(self) -> list[pa.RecordBatch]:
        with FileSystems.open(self.path) as f:
            table = pa.ipc.open_file(pa.py_buffer(f.read())).read_all()
        if table.num_rows != self.rows:
            raise OSError(f"{self.path}: {table.num_rows} rows, {self.rows} written")
        return table.to_batches()


class _ResolveAndMaskFn(beam.DoFn):
    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, num_shards: int):
        self.output, self.split, self.spec = output, split, spec
        self.max_num_tokens, self.num_shards = max_num_tokens, num_shards

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]):
        bucket, joined = element
        groups = [g.load() if isinstance(g, SpilledBlocks) else g for g in joined["blocks"]]
        place = next(iter(joined["place"]), None)
        first, total = place if place else (0, 0)  # no place: a bucket of donors only
        home: list[tuple[int, pa.RecordBatch]] = []
        shards = 0
        for piece in mask_bucket(bucket, groups, first, total, self.spec, self.max_num_tokens, self.num_shards):
            if isinstance(piece, dict):
                yield STATS, (self.split, piece)
                continue
            shard, shards, position, rows = piece
            progress.report(pairs=rows.num_rows)
            if shard == bucket:
                home.append((position, rows))
            else:
                yield "rows", ((shard, shards), (position, rows))
        if home:
            yield "rows", ((bucket, shards), (home[0][0], self._park(bucket, shards, [b for _, b in home])))
        progress.flush()

    def _park(self, shard: int, shards: int, batches: list[pa.RecordBatch]) -> ParkedRows:
        path = FileSystems.join(self.output, part_name(self.split, shard, shards))
        write_atomically(path, encode_shard(batches, batches[0].schema))
        return ParkedRows(path, sum(b.num_rows for b in batches))


class MaskInstances(beam.PTransform):
    """Resolve random-next B segments, truncate, mask.

    In: (bucket, blocks) items, and ``counts``: (bucket, rows) records, summed here.
    Out: ``rows``: ((shard, shards), (position, rows or ParkedRows)); ``stats``.
    """

    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, num_shards: int,
                 counts: beam.PCollection):
        super().__init__()
        self.args = (output, split, spec, max_num_tokens, num_shards)
        self.counts = counts

    def expand(self, items: beam.PCollection):  # -> {tag: PCollection}, see ByTag.expand
        places = (
            self.counts
            | "CountRows" >> beam.CombinePerKey(sum)
            | "KeyAll" >> beam.Map(lambda bucket_rows: (0, bucket_rows))
            | "AllCounts" >> beam.GroupByKey()
            | "Place" >> beam.FlatMap(lambda all_counts: placements(dict(all_counts[1])))
        )
        return (
            {"blocks": items, "place": places}
            | "GroupByBucket" >> beam.CoGroupByKey()
            | "ResolveMask" >> beam.ParDo(_ResolveAndMaskFn(*self.args))
            | ByTag("rows", STATS)
        )
