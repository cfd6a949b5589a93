"""Stage 3, pair: DocumentBatch -> (group, (pairs, random-next requests, donor segments)).

:func:`pair_batch` plans each document's pairs (every pass of ``dupe_factor``) and groups
the resulting blocks by bucket: a bucket is a contiguous range of the random 64-bit row
keys (:func:`bucket_of`), so requests and donors meet at random across the whole split
and key order is bucket order. Buckets travel in groups of contiguous buckets
(:func:`~preprocess.sizing.group_count`): one item per batch and group. With a spill
directory, the blocks go to a file there and only references (:class:`SpilledBlocks`)
travel through the shuffle.
"""

from __future__ import annotations

import pickle
import uuid
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from preprocess.packed import DocumentBatch, DonorBlock, PairBlock, RequestBlock, offsets_of
from preprocess.pairs import DocumentPlan, PairingParams, plan_blocks, plan_document
from preprocess.sizing import group_of
from preprocess.stages.counting import SCRATCH, STATS, ByTag, count

Blocks = tuple[PairBlock, RequestBlock, DonorBlock]


def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    """Buckets are contiguous ranges of the 64-bit key space, so key order is bucket order."""
    return ((keys >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)


def split_by(block: PairBlock | RequestBlock | DonorBlock, of: np.ndarray) -> dict:
    """The rows of a block grouped by ``of`` (a value per row)."""
    if len(block) == 0:
        return {}
    order = np.argsort(of, kind="stable")
    values, starts = np.unique(of[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    return {int(v): block.take(order[a:b]) for v, a, b in zip(values, starts, ends)}


def split_by_bucket(block: PairBlock | RequestBlock | DonorBlock, buckets: int) -> dict:
    """The rows of a block grouped by the bucket of their key."""
    return split_by(block, bucket_of(block.key, buckets))


def row_token_counts(pairs: PairBlock, requests: RequestBlock, max_num_tokens: int) -> np.ndarray:
    """The tokens each row of these pairs, then of these requests, will hold once framed and
    truncated (a request at the length it asks of its B)."""
    a = np.concatenate([pairs.a.lengths + pairs.b.lengths, requests.a.lengths + requests.target_b])
    return np.minimum(a, max_num_tokens).astype(np.int64) + 3


def bucket_counts(pairs: PairBlock, requests: RequestBlock, buckets: int,
                  max_num_tokens: int) -> dict[int, tuple[int, int]]:
    """Rows and their tokens per bucket, for the buckets that have rows."""
    of = bucket_of(np.concatenate([pairs.key, requests.key]), buckets).astype(np.int64)
    rows = np.bincount(of, minlength=buckets)
    tokens = np.bincount(of, weights=row_token_counts(pairs, requests, max_num_tokens), minlength=buckets)
    return {int(b): (int(rows[b]), int(tokens[b])) for b in np.flatnonzero(rows)}


def pair_batch(docs: DocumentBatch, params: PairingParams, dupe_factor: int, seed: int, buckets: int,
               groups: int | None = None) -> tuple[list[tuple[int, Blocks]], list[tuple[int, dict]], Counter]:
    """A batch of documents -> per group of buckets its blocks, per group its buckets' rows and
    tokens (:func:`bucket_counts`), and counts. ``groups``: :func:`~preprocess.sizing.group_count`
    (None: a group per bucket)."""
    groups = groups or buckets
    stats: Counter = Counter(documents=len(docs))
    plans = []
    lengths = docs.lengths.tolist()
    bounds = offsets_of(docs.sentences).tolist()
    for k, doc_id in enumerate(docs.doc_id.tolist()):
        plan = DocumentPlan()
        for pass_index in range(dupe_factor):
            plan_document(doc_id, lengths[bounds[k] : bounds[k + 1]], pass_index, seed, params, plan)
        stats["pairs_unpairable"] += plan.unpairable
        plans.append(plan)
    blocks = plan_blocks(docs, plans, seed, params.max_num_tokens)
    by_group = [split_by(b, group_of(bucket_of(b.key, buckets), buckets, groups)) for b in blocks]
    items, counts = [], []
    for group in sorted(set().union(*by_group)):
        p = by_group[0].get(group, PairBlock.empty())
        q = by_group[1].get(group, RequestBlock.empty())
        d = by_group[2].get(group, DonorBlock.empty())
        if len(p) or len(q):
            counts.append((group, bucket_counts(p, q, buckets, params.max_num_tokens)))
        items.append((group, (p, q, d)))
    return items, counts, stats


@dataclass(frozen=True)
class SpilledBlocks:
    """One group's pairs, requests and donors from one batch of documents, in a file.

    The tokens between pairing and masking travel through files beside the output
    (as a distributed runner's shuffle does), and the GroupByKey moves only these
    references: Beam's local runner would otherwise pass every token through its
    controlling process, which costs more than the pairing itself.
    """

    path: str
    offset: int
    size: int

    def load(self) -> Blocks:
        with FileSystems.open(self.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.path}: {len(data)} bytes at {self.offset}, {self.size} written")
        return pickle.loads(data)


def spill(items: list[tuple[int, Blocks]], spill_dir: str, split: str) -> list[tuple[int, SpilledBlocks]]:
    """Write the blocks to one new file in ``spill_dir``; references to them."""
    # A name of its own per attempt: a retried bundle never overwrites what another read.
    path = FileSystems.join(spill_dir, f"{split}-{uuid.uuid4().hex}.blocks")
    refs, offset = [], 0
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for group, blocks in items:
            data = pickle.dumps(blocks, protocol=pickle.HIGHEST_PROTOCOL)
            f.write(data)
            refs.append((group, SpilledBlocks(path, offset, len(data))))
            offset += len(data)
    return refs


class _PairFn(beam.DoFn):
    def __init__(self, split: str, params: PairingParams, dupe_factor: int, seed: int, buckets: int,
                 groups: int | None, spill_dir: str | None):
        self.split, self.params, self.dupe_factor, self.seed, self.buckets = split, params, dupe_factor, seed, buckets
        self.groups, self.spill_dir = groups, spill_dir

    def process(self, docs: DocumentBatch):
        items, counts, stats = pair_batch(docs, self.params, self.dupe_factor, self.seed, self.buckets, self.groups)
        for c in counts:
            yield "counts", c
        if self.spill_dir:
            items = spill(items, self.spill_dir, self.split)
            yield count({"bytes": sum(ref.size for _, ref in items)}, SCRATCH)
        for item in items:
            yield "items", item
        yield count(stats, self.split)


class CreatePairs(beam.PTransform):
    """DocumentBatch -> ``items``: (group, (pairs, requests, donors)); ``counts``: (group, {bucket: (rows,
    tokens)}); ``stats``. ``groups``: of the buckets (None: one bucket each).

    With ``spill_dir`` the blocks are written there and (group, SpilledBlocks) emitted.
    """

    def __init__(self, split: str, params: PairingParams, dupe_factor: int, seed: int, buckets: int,
                 groups: int | None = None, spill_dir: str | None = None):
        super().__init__()
        self.args = (split, params, dupe_factor, seed, buckets, groups, spill_dir)

    def expand(self, docs: beam.PCollection):  # -> {tag: PCollection}, see ByTag.expand
        return docs | "Plan" >> beam.ParDo(_PairFn(*self.args)) | ByTag("items", "counts", STATS)
