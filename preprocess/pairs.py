"""Sentence-pair construction for masked LM + next-sentence prediction.

Plain functions; the Beam layer only wires them together.

The algorithm follows Google's ``create_pretraining_data.py`` (target length with
``short_seq_prob`` drawn once per document and pass, whole sentences accumulated
into a chunk, a random A/B split point, unused sentences put back after a random
next, truncation of the longer side from the front or back) with two corrections:

* **NSP is 50/50.** The label is a fair coin drawn first for every chunk. The
  reference makes every single-sentence chunk a random next, which gives ~55%
  NotNext on real text. Here a single-sentence chunk whose coin says IsNext is split
  inside the sentence at a random token boundary, so B really follows A.
* **A random next never comes from A's document.** Random B segments are donated by
  documents across the whole split (see :func:`plan_document`) and matched to
  requests by :func:`resolve_random_next`, which skips donors of the requesting
  document.

The walk over a document (:func:`plan_document`) sees only sentence lengths and
returns token ranges; :func:`plan_blocks` then gathers the tokens of a batch of
documents' pairs at once into packed blocks (:mod:`preprocess.packed`).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np

from preprocess import rng
from preprocess.packed import (
    DocumentBatch,
    DonorBlock,
    PairBlock,
    Ragged,
    RequestBlock,
    gather_ranges,
    offsets_of,
)


@dataclass(frozen=True)
class PairingParams:
    max_seq_length: int = 128
    short_seq_prob: float = 0.1

    @property
    def max_num_tokens(self) -> int:
        """Room for A and B: three places go to [CLS], [SEP], [SEP]."""
        return self.max_seq_length - 3


@dataclass
class DocumentPlan:
    """One document's instances as token offsets into the document's token array.

    An instance is named by (pass, index within the pass); its 64-bit key, from
    which all its later randomness derives, is :func:`instance_keys` of that name.
    """

    pairs: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)  # pass, index, a0, a1, b0, b1
    requests: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # pass, index, a0, a1, target_b
    donors: list[tuple[int, int]] = field(default_factory=list)  # pass, index
    unpairable: int = 0  # IsNext drawn for a 1-token chunk: nothing to split, skipped


def instance_keys(seed: int, doc_id: int, passes: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return rng.mix(seed, rng.PURPOSE_INSTANCE, doc_id, passes.astype(np.uint64), indices.astype(np.uint64))


def donor_keys(seed: int, doc_id: int, passes: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return rng.mix(seed, rng.PURPOSE_DONOR, doc_id, passes.astype(np.uint64), indices.astype(np.uint64))


def plan_document(
    doc_id: int,
    lengths: list[int],
    pass_index: int,
    seed: int,
    params: PairingParams,
    plan: DocumentPlan | None = None,
) -> DocumentPlan:
    """Add one pass over a document (its sentence token counts, none 0) to ``plan``.

    The walk is the reference's: accumulate sentences until the chunk reaches the
    target length or the document ends, then split it into A and B. One donor is
    made per random-next request, so the donor pool is as large as the request pool
    and documents donate in proportion to their length.
    """
    plan = plan if plan is not None else DocumentPlan()
    draw = rng.python_rng(seed, rng.PURPOSE_DOCUMENT, doc_id, pass_index).random
    # ``lo + int(draw() * k)`` is uniform on [lo, lo + k): randint's cost, ~4x, adds up here.
    target = params.max_num_tokens
    if draw() < params.short_seq_prob:
        target = 2 + int(draw() * (params.max_num_tokens - 1))
    starts = list(accumulate(lengths, initial=0))
    n = len(lengths)
    first = 0  # first sentence of the current chunk
    index = 0
    requests = 0
    while first < n:
        # the chunk ends at the first sentence that brings it to the target, or the document's end
        i = bisect_left(starts, starts[first] + target, first + 1, n) - 1
        size = i - first + 1
        is_random_next = draw() < 0.5
        a_end = first + (1 + int(draw() * (size - 1)) if size >= 2 else 1)  # sentence index after A
        if is_random_next:
            a_len = starts[a_end] - starts[first]
            plan.requests.append((pass_index, index, starts[first], starts[a_end], max(1, target - a_len)))
            plan.donors.append((pass_index, requests))
            requests += 1
            i = a_end - 1  # put the unused sentences back
        elif size >= 2:
            plan.pairs.append((pass_index, index, starts[first], starts[a_end], starts[a_end], starts[i + 1]))
        elif lengths[first] >= 2:
            cut = starts[first] + 1 + int(draw() * (lengths[first] - 1))
            plan.pairs.append((pass_index, index, starts[first], cut, cut, starts[first + 1]))
        else:
            plan.unpairable += 1
        index += 1
        first = i + 1
    return plan


def plan_blocks(
    docs: DocumentBatch, plans: list[DocumentPlan], seed: int, max_num_tokens: int
) -> tuple[PairBlock, RequestBlock, DonorBlock]:
    """Gather the tokens of planned pairs, requests and donors for a batch of documents.

    ``plans[d]`` is the plan of document d of ``docs``. Each block costs one
    vectorised gather however many documents the batch has.
    """
    doc_ids = docs.doc_id
    flat = docs.tokens
    base = offsets_of(docs.sizes)[:-1]  # where each document starts in ``flat``
    counts = docs.sentences
    first_start = offsets_of(counts + 1)[:-1]  # index of each document's first start
    # sentence starts of all documents, each document's n + 1 entries side by side
    starts = gather_ranges(offsets_of(docs.lengths), offsets_of(counts)[:-1], counts + 1)

    def table(rows: list, width: int) -> np.ndarray:
        return np.array(rows, dtype=np.int64).reshape(-1, width)

    p = table([(k, *t) for k, plan in enumerate(plans) for t in plan.pairs], 7)
    if len(p):
        k, off = p[:, 0], base[p[:, 0]]
        pairs = PairBlock(
            key=instance_keys(seed, doc_ids[k], p[:, 1], p[:, 2]), doc_a=doc_ids[k], doc_b=doc_ids[k],
            random_next=np.zeros(len(p), dtype=np.int8),
            a=Ragged.over(flat, off + p[:, 3], p[:, 4] - p[:, 3]),
            b=Ragged.over(flat, off + p[:, 5], p[:, 6] - p[:, 5]),
        )
    else:
        pairs = PairBlock.empty()

    q = table([(k, *t) for k, plan in enumerate(plans) for t in plan.requests], 6)
    if len(q):
        k = q[:, 0]
        requests = RequestBlock(
            key=instance_keys(seed, doc_ids[k], q[:, 1], q[:, 2]), doc=doc_ids[k], target_b=q[:, 5].astype(np.int32),
            a=Ragged.over(flat, base[k] + q[:, 3], q[:, 4] - q[:, 3]),
        )
    else:
        requests = RequestBlock.empty()

    d = table([(k, *t) for k, plan in enumerate(plans) for t in plan.donors], 3)
    if len(d):
        k = d[:, 0]
        keys = donor_keys(seed, doc_ids[k], d[:, 1], d[:, 2])
        n = counts[k]
        first = (keys % n.astype(np.uint64)).astype(np.int64)  # a uniformly random starting sentence
        lo = first_start[k] + first  # index of the donor's first sentence start in ``starts``
        # whole sentences from there until max_num_tokens is reached or the document ends
        doc_end = first_start[k] + n
        stop = np.searchsorted(starts, starts[lo] + max_num_tokens, side="left")
        stop = np.clip(stop, lo + 1, doc_end)
        ends = gather_ranges(starts, lo + 1, stop - lo) - np.repeat(starts[lo], stop - lo)
        ends = Ragged(ends.astype(np.int32), offsets_of(stop - lo))  # a donor's length fits easily
        donors = DonorBlock(
            key=keys, doc=doc_ids[k],
            tokens=Ragged.over(flat, starts[lo], starts[stop] - starts[lo]),
            sentence_ends=ends,
        )
    else:
        donors = DonorBlock.empty()
    return pairs, requests, donors


def resolve_random_next(requests: RequestBlock, donors: DonorBlock) -> tuple[PairBlock, int]:
    """Give each request a B from a random donor of another document.

    Donors are drawn with replacement (as the reference draws documents), the draw
    keyed by the request's own key; a donor of the requesting document is passed
    over for the next one. B is the donor's sentences up to the first that reaches
    the request's target length, as in the reference. Returns the pairs and how many
    requests found no donor of another document (possible only when a bucket holds
    donors of a single document). The result does not depend on input order.
    """
    if len(requests) == 0:
        return PairBlock.empty(), 0
    if len(donors) == 0:
        return PairBlock.empty(), len(requests)
    requests = requests.take(np.argsort(requests.key, kind="stable"))
    donors = donors.take(np.argsort(donors.key, kind="stable"))
    nd = len(donors)
    first = (rng.uniform(rng.mix(requests.key, rng.PURPOSE_DONOR)) * nd).astype(np.int64)
    choice = first.copy()
    conflict = donors.doc[choice] == requests.doc
    for step in range(1, nd):
        if not conflict.any():
            break
        idx = np.flatnonzero(conflict)
        choice[idx] = (first[idx] + step) % nd
        conflict[idx] = donors.doc[choice[idx]] == requests.doc[idx]
    ok = np.flatnonzero(~conflict)
    d = choice[ok]
    target = requests.target_b[ok]

    # First sentence end >= target within each chosen donor, as one sorted search.
    ends = donors.sentence_ends
    segment = np.repeat(np.arange(nd, dtype=np.int64), ends.lengths)
    composite = (segment << 32) + ends.values
    pos = np.searchsorted(composite, (d << 32) + target, side="left")
    pos = np.minimum(pos, ends.offsets[d + 1] - 1)
    b_len = ends.values[pos]
    pairs = PairBlock(
        key=requests.key[ok], doc_a=requests.doc[ok], doc_b=donors.doc[d],
        random_next=np.ones(len(ok), dtype=np.int8),
        a=requests.a.take(ok),
        b=Ragged.over(donors.tokens.buffer, donors.tokens.starts[d], b_len),
    )
    return pairs, int(len(requests) - len(ok))


def truncation_counts(
    len_a: np.ndarray, len_b: np.ndarray, max_num_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens the reference's truncation loop removes from A and from B.

    The loop drops one token at a time from the longer side (A on ties, as Python's
    ``max`` returns the first of equals) until the pair fits; this is its closed form.
    """
    len_a = len_a.astype(np.int64)
    len_b = len_b.astype(np.int64)
    excess = np.maximum(len_a + len_b - max_num_tokens, 0)
    diff = np.abs(len_a - len_b)
    first = np.minimum(excess, diff)  # taken from the longer side until both are equal
    rest = excess - first  # then alternately, A first
    from_a = np.where(len_a >= len_b, first, 0) + (rest + 1) // 2
    from_b = np.where(len_a >= len_b, 0, first) + rest // 2
    return from_a, from_b


def front_counts(keys: np.ndarray, side: int, removed: np.ndarray) -> np.ndarray:
    """How many of ``removed`` tokens come off the front: one fair coin per token.

    Equivalent in distribution to the reference's per-token front/back choice: the
    count of heads among ``removed`` keyed coins (popcount of keyed random bits).
    """
    fronts = np.zeros(len(keys), dtype=np.int64)
    if len(keys) == 0 or not removed.any():
        return fronts
    for w in range(int((removed.max() + 63) // 64)):
        bits = rng.mix(keys, rng.PURPOSE_TRUNCATE, side, w)
        nbits = np.clip(removed - 64 * w, 0, 64)
        mask = np.where(
            nbits >= 64,
            np.uint64(0xFFFFFFFFFFFFFFFF),
            (np.uint64(1) << nbits.astype(np.uint64)) - np.uint64(1),
        )
        fronts += np.bitwise_count(bits & mask).astype(np.int64)
    return fronts


def truncate_pairs(pairs: PairBlock, max_num_tokens: int) -> tuple[PairBlock, int]:
    """Truncate every pair to ``max_num_tokens``; returns the pairs and tokens removed."""
    if len(pairs) == 0:
        return pairs, 0
    cut_a, cut_b = truncation_counts(pairs.a.lengths, pairs.b.lengths, max_num_tokens)
    removed = int(cut_a.sum() + cut_b.sum())
    if removed == 0:
        return pairs, 0
    front_a = front_counts(pairs.key, 0, cut_a)
    front_b = front_counts(pairs.key, 1, cut_b)
    out = PairBlock(
        pairs.key, pairs.doc_a, pairs.doc_b, pairs.random_next,
        pairs.a.window(front_a, cut_a - front_a), pairs.b.window(front_b, cut_b - front_b),
    )
    return out, removed
