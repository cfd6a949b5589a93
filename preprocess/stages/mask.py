"""Stage 4, mask: a bucket's blocks -> masked rows, placed at their global position.

:func:`mask_bucket` resolves the bucket's random-next requests with its donors,
truncates, masks and sorts the rows by key; since buckets are key ranges, a row's global
position is the rows of earlier buckets plus its rank in its own, and shard ``s`` of
``S`` takes positions ``[s*N/S, (s+1)*N/S)``. Bucket ``s`` holds nearly the rows of
shard ``s``: those stay in a file (:class:`ParkedRows`), and only the rows near its ends
travel through the shuffle to the neighbouring shard's writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsDict, TaggedOutput

from preprocess import progress
from preprocess.manifest import add_stats
from preprocess.packed import DonorBlock, PairBlock, RequestBlock
from preprocess.pairs import resolve_random_next, truncate_pairs
from preprocess.shards import RowSpec, build_rows, encode_shard, part_name, write_atomically
from preprocess.stages.counting import STATS, increment
from preprocess.stages.pair import Blocks, SpilledBlocks

ROWS_PER_BUILD = 16384  # bounds the masking scratch memory per call


def mask_bucket(bucket: int, groups: list[Blocks], counts: dict[int, int], spec: RowSpec, max_num_tokens: int,
                num_shards: int) -> Iterator[tuple[int, int, int, pa.RecordBatch] | dict[str, Any]]:
    """Yields ``(shard, shards, first position, rows)`` pieces in position order, then the stats.

    ``counts``: rows per bucket over the split (before truncation, which drops no row).
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
        total = sum(counts.values())
        shards = min(num_shards, total)
        first = sum(c for b, c in counts.items() if b < bucket)
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

    def finish_bundle(self) -> None:
        progress.flush()

    def process(self, element: tuple[int, list], counts: dict[int, int]):
        bucket, groups = element
        groups = [g.load() if isinstance(g, SpilledBlocks) else g for g in groups]
        home: list[tuple[int, pa.RecordBatch]] = []
        shards = 0
        for piece in mask_bucket(bucket, groups, counts, self.spec, self.max_num_tokens, self.num_shards):
            if isinstance(piece, dict):
                yield TaggedOutput(STATS, (self.split, piece))
                continue
            shard, shards, position, rows = piece
            progress.report(pairs=rows.num_rows)
            if shard == bucket:
                home.append((position, rows))
            else:
                yield (shard, shards), (position, rows)
        if home:
            yield (bucket, shards), (home[0][0], self._park(bucket, shards, [b for _, b in home]))

    def _park(self, shard: int, shards: int, batches: list[pa.RecordBatch]) -> ParkedRows:
        path = FileSystems.join(self.output, part_name(self.split, shard, shards))
        write_atomically(path, encode_shard(batches, batches[0].schema))
        return ParkedRows(path, sum(b.num_rows for b in batches))


class MaskInstances(beam.PTransform):
    """Resolve random-next B segments, truncate, mask; -> ((shard, shards), (position, rows or ParkedRows))."""

    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, num_shards: int,
                 counts: beam.PCollection):
        super().__init__()
        self.args = (output, split, spec, max_num_tokens, num_shards)
        self.counts = counts

    def expand(self, items: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            items
            | "GroupByBucket" >> beam.GroupByKey()
            | "ResolveMask" >> beam.ParDo(_ResolveAndMaskFn(*self.args), counts=AsDict(self.counts)).with_outputs(
                STATS, main="rows"
            )
        )
