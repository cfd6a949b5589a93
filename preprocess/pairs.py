"""Sentence-pair construction for masked LM + next-sentence prediction.

Plain functions on token arrays; the Beam layer only wires them together.

The algorithm follows Google's ``create_pretraining_data.py`` (target length with
``short_seq_prob`` drawn once per document and pass, whole sentences accumulated
into a chunk, a random A/B split point, unused sentences put back after a random
next, truncation of the longer side from the front or back) with two corrections:

* **NSP is 50/50.** The label is a fair coin drawn first for every chunk. The
  reference makes every single-sentence chunk a random next, which gives ~55%
  NotNext on real text. Here a single-sentence chunk whose coin says IsNext is split
  inside the sentence at a random token boundary, so B really follows A.
* **A random next never comes from A's document.** Random B segments are donated by
  documents across the whole split (see :func:`make_donors`) and matched to
  requests by :func:`resolve_random_next`, which skips donors of the requesting
  document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from preprocess import rng


@dataclass(frozen=True)
class PairingParams:
    max_seq_length: int = 128
    short_seq_prob: float = 0.1

    @property
    def max_num_tokens(self) -> int:
        """Room for A and B: three places go to [CLS], [SEP], [SEP]."""
        return self.max_seq_length - 3


class Pair(NamedTuple):
    """A complete A/B pair before truncation and masking."""

    key: int  # stable 64-bit instance key: all later randomness derives from it
    doc_id_a: int
    doc_id_b: int
    tokens_a: np.ndarray
    tokens_b: np.ndarray
    is_random_next: bool


class RandomNextRequest(NamedTuple):
    """Segment A waiting for a random B of at least ``target_b_length`` tokens."""

    key: int
    doc_id: int
    tokens_a: np.ndarray
    target_b_length: int


class Donor(NamedTuple):
    """Whole sentences from a random start in one document, offered as a random B."""

    key: int
    doc_id: int
    sentences: tuple[np.ndarray, ...]


@dataclass
class DocumentPairs:
    pairs: list[Pair] = field(default_factory=list)
    requests: list[RandomNextRequest] = field(default_factory=list)
    donors: list[Donor] = field(default_factory=list)
    unpairable: int = 0  # IsNext drawn for a 1-token chunk: nothing to split, skipped


def instance_key(seed: int, doc_id: int, pass_index: int, index: int) -> int:
    return rng.mix_int(seed, rng.PURPOSE_INSTANCE, doc_id, pass_index, index)


def pair_document(
    doc_id: int,
    sentences: list[np.ndarray],
    pass_index: int,
    seed: int,
    params: PairingParams,
) -> DocumentPairs:
    """Turn one document's tokenized sentences into pairs and random-next requests.

    ``sentences`` is a list of 1-D token id arrays, none empty. The walk is the
    reference's: accumulate sentences until the chunk reaches the target length or
    the document ends, then split it into A and B. Donors for other documents'
    requests are made here too, one per request, so the donor pool is as large as
    the request pool and each document donates in proportion to its length.
    """
    out = DocumentPairs()
    r = rng.python_rng(seed, rng.PURPOSE_DOCUMENT, doc_id, pass_index)
    max_num_tokens = params.max_num_tokens
    target = max_num_tokens
    if r.random() < params.short_seq_prob:
        target = r.randint(2, max_num_tokens)

    n = len(sentences)
    chunk: list[np.ndarray] = []
    length = 0
    index = 0
    i = 0
    while i < n:
        chunk.append(sentences[i])
        length += len(sentences[i])
        if i == n - 1 or length >= target:
            is_random_next = r.random() < 0.5
            a_end = r.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            key = instance_key(seed, doc_id, pass_index, index)
            index += 1
            if is_random_next:
                tokens_a = _concat(chunk[:a_end])
                target_b = max(1, target - len(tokens_a))
                out.requests.append(RandomNextRequest(key, doc_id, tokens_a, target_b))
                i -= len(chunk) - a_end  # put the unused sentences back
            elif len(chunk) >= 2:
                out.pairs.append(
                    Pair(key, doc_id, doc_id, _concat(chunk[:a_end]), _concat(chunk[a_end:]), False)
                )
            elif len(chunk[0]) >= 2:
                cut = r.randint(1, len(chunk[0]) - 1)
                out.pairs.append(Pair(key, doc_id, doc_id, chunk[0][:cut], chunk[0][cut:], False))
            else:
                out.unpairable += 1
            chunk = []
            length = 0
        i += 1

    out.donors = make_donors(doc_id, sentences, pass_index, seed, len(out.requests), max_num_tokens)
    return out


def make_donors(
    doc_id: int,
    sentences: list[np.ndarray],
    pass_index: int,
    seed: int,
    count: int,
    max_num_tokens: int,
) -> list[Donor]:
    """``count`` segments of whole sentences, each from a random start, up to the longest B."""
    donors = []
    for j in range(count):
        key = rng.mix_int(seed, rng.PURPOSE_DONOR, doc_id, pass_index, j)
        start = key % len(sentences)
        taken, total = [], 0
        for s in sentences[start:]:
            taken.append(s)
            total += len(s)
            if total >= max_num_tokens:
                break
        donors.append(Donor(key, doc_id, tuple(taken)))
    return donors


def resolve_random_next(
    requests: list[RandomNextRequest], donors: list[Donor]
) -> tuple[list[Pair], int]:
    """Give each request a B from a random donor of another document.

    Donors are drawn with replacement (as the reference draws documents), the draw
    keyed by the request's own key; a donor of the requesting document is passed over
    for the next one. B is the donor's sentences up to the first that reaches the
    request's target length, as in the reference. Returns the pairs and the number of
    requests that found no donor from another document (only possible when a
    partition holds a single document).
    """
    if not requests:
        return [], 0
    donors = sorted(donors, key=lambda d: d.key)
    requests = sorted(requests, key=lambda q: q.key)
    nd = len(donors)
    pairs: list[Pair] = []
    unresolved = 0
    if nd == 0:
        return pairs, len(requests)
    keys = np.array([q.key for q in requests], dtype=np.uint64)
    draws = (rng.uniform(rng.mix(keys, rng.PURPOSE_DONOR)) * nd).astype(np.int64)
    for q, first in zip(requests, draws.tolist()):
        donor = None
        for probe in range(nd):
            candidate = donors[(first + probe) % nd]
            if candidate.doc_id != q.doc_id:
                donor = candidate
                break
        if donor is None:
            unresolved += 1
            continue
        taken, total = [], 0
        for s in donor.sentences:
            taken.append(s)
            total += len(s)
            if total >= q.target_b_length:
                break
        pairs.append(Pair(q.key, q.doc_id, donor.doc_id, q.tokens_a, _concat(taken), True))
    return pairs, unresolved


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
    if len(keys) == 0:
        return fronts
    words = int((removed.max() + 63) // 64) if removed.size else 0
    for w in range(words):
        bits = rng.mix(keys, rng.PURPOSE_TRUNCATE, side, w)
        nbits = np.clip(removed - 64 * w, 0, 64)
        mask = np.where(
            nbits >= 64,
            np.uint64(0xFFFFFFFFFFFFFFFF),
            (np.uint64(1) << nbits.astype(np.uint64)) - np.uint64(1),
        )
        fronts += np.bitwise_count(bits & mask).astype(np.int64)
    return fronts


def truncate_pairs(pairs: list[Pair], max_num_tokens: int) -> tuple[list[Pair], int]:
    """Truncate every pair to ``max_num_tokens``; returns the pairs and tokens removed."""
    if not pairs:
        return pairs, 0
    keys = np.array([p.key for p in pairs], dtype=np.uint64)
    len_a = np.array([len(p.tokens_a) for p in pairs], dtype=np.int64)
    len_b = np.array([len(p.tokens_b) for p in pairs], dtype=np.int64)
    cut_a, cut_b = truncation_counts(len_a, len_b, max_num_tokens)
    if not (cut_a.any() or cut_b.any()):
        return pairs, 0
    front_a = front_counts(keys, 0, cut_a)
    front_b = front_counts(keys, 1, cut_b)
    out = []
    for p, la, lb, ca, cb, fa, fb in zip(
        pairs, len_a.tolist(), len_b.tolist(), cut_a.tolist(), cut_b.tolist(),
        front_a.tolist(), front_b.tolist(),
    ):
        if ca or cb:
            p = p._replace(
                tokens_a=p.tokens_a[fa : la - (ca - fa)], tokens_b=p.tokens_b[fb : lb - (cb - fb)]
            )
        out.append(p)
    return out, int(cut_a.sum() + cut_b.sum())


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
