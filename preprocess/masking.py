"""Masked-LM target selection, vectorised over a batch of sequences.

Plain functions on numpy arrays. A batch is a flat token array plus row offsets
(the layout of an Arrow list column), so thousands of sequences are masked with a
handful of numpy calls. Every random draw is keyed by (instance key, position), so a
sequence gets the same mask whichever batch it lands in.

Rules, as in Google's reference:

* candidates are every position but [CLS] and the two [SEP]s (never [PAD]: rows are
  stored unpadded);
* ``n = min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob)))``
  with Python's half-to-even rounding, ``len`` counting the special tokens;
* each chosen position: 80% [MASK], 10% unchanged, 10% a random token. The reference
  draws the random token from the whole vocabulary, special and ``[unused*]`` entries
  included; here it is drawn from ordinary tokens only (see :class:`MaskVocab`);
* with whole-word masking, ``##`` continuation pieces join their word, words are
  taken in random order, and a word that would overflow ``n`` is skipped.

The original ids are recoverable: ``input_ids[positions] = labels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocess import rng

ACTION_MASK, ACTION_KEEP, ACTION_RANDOM = 0, 1, 2


@dataclass(frozen=True)
class MaskingParams:
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_mask: bool = False


@dataclass(frozen=True)
class MaskVocab:
    """What masking needs to know about the vocabulary."""

    mask_id: int
    random_ids: np.ndarray  # ids a "random token" replacement draws from
    is_continuation: np.ndarray  # bool per id: a "##" piece that joins the previous token


@dataclass
class MaskedBatch:
    input_ids: np.ndarray  # flat, masked
    positions: np.ndarray  # flat, sorted within each row
    labels: np.ndarray  # flat original ids at ``positions``
    label_offsets: np.ndarray  # (rows + 1,) row boundaries into positions/labels
    actions: np.ndarray  # (3,) counts of [MASK] / unchanged / random replacements


def num_to_predict(lengths: np.ndarray, params: MaskingParams) -> np.ndarray:
    """Prediction budget per row; ``lengths`` count [CLS] and both [SEP]s."""
    n = np.maximum(1, np.round(lengths * params.masked_lm_prob).astype(np.int64))
    n = np.minimum(n, params.max_predictions_per_seq)
    return np.minimum(n, np.maximum(lengths - 3, 0))


def mask_batch(
    tokens: np.ndarray,
    offsets: np.ndarray,
    b_starts: np.ndarray,
    keys: np.ndarray,
    params: MaskingParams,
    vocab: MaskVocab,
) -> MaskedBatch:
    """Mask a batch of ``[CLS] A [SEP] B [SEP]`` rows.

    tokens: (total_tokens,) ids of all rows back to back; offsets: (rows + 1,);
    b_starts: (rows,) index in each row where B starts (so its first [SEP] is at
    ``b_start - 1``); keys: (rows,) uint64 instance keys.
    """
    rows = len(offsets) - 1
    lengths = np.diff(offsets)
    budget = num_to_predict(lengths, params)
    if params.whole_word_mask:
        row_of = np.repeat(np.arange(rows), lengths)
        pos = np.arange(len(tokens)) - np.repeat(offsets[:-1], lengths)
        candidate = (pos != 0) & (pos != np.repeat(b_starts - 1, lengths)) & (pos != np.repeat(lengths - 1, lengths))
        # Random order of positions within a row; the low 16 bits hold the position so
        # that no two positions of a row tie.
        order = rng.position_hash(keys, rng.PURPOSE_MASK_ORDER, row_of, pos)
        order = (order & ~np.uint64(0xFFFF)) | pos.astype(np.uint64)
        idx = np.flatnonzero(_choose_whole_words(tokens, offsets, candidate, budget, order, vocab))
        r, p = row_of[idx], pos[idx]  # ascending: rows in order, positions sorted within rows
    else:
        r, p = _choose_tokens(keys, lengths, b_starts, budget)
        idx = offsets[:-1][r] + p
    labels = tokens[idx]
    masked = tokens.copy()
    # One 64-bit hash per chosen position, three independent draws from its bits:
    # 24 bits for the action, 1 for keep-vs-random, 32 for the random token.
    h = rng.position_hash(keys, rng.PURPOSE_MASK_ACTION, r, p)
    u_action = (h >> np.uint64(40)).astype(np.float64) * (1.0 / (1 << 24))
    keep = ((h >> np.uint64(39)) & np.uint64(1)) == 0
    u_token = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / (1 << 32))
    action = np.where(u_action < 0.8, ACTION_MASK, np.where(keep, ACTION_KEEP, ACTION_RANDOM))
    random_ids = vocab.random_ids[(u_token * len(vocab.random_ids)).astype(np.int64)]
    masked[idx] = np.where(action == ACTION_MASK, vocab.mask_id, np.where(action == ACTION_KEEP, labels, random_ids))

    per_row = np.bincount(r, minlength=rows)
    label_offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(per_row, out=label_offsets[1:])
    return MaskedBatch(
        input_ids=masked,
        positions=p,
        labels=labels,
        label_offsets=label_offsets,
        actions=np.bincount(action, minlength=3),
    )


def _choose_tokens(keys, lengths, b_starts, budget) -> tuple[np.ndarray, np.ndarray]:
    """``budget[r]`` distinct random candidate positions of each row r, sorted.

    A partial Fisher-Yates shuffle of each row's candidate indices, all rows at once:
    step j swaps place j with a keyed-random place in [j, candidates). Only the chosen
    places are drawn, not one hash per token. Returns (row, position) pairs, rows
    ascending and positions ascending within a row.
    """
    rows = len(lengths)
    kmax = int(budget.max(initial=0))
    if kmax == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n = lengths - 3  # candidates: every place but [CLS] and the two [SEP]s
    width = int(n.max())
    places = np.tile(np.arange(width, dtype=np.int16), rows)  # row r's places at [r * width, (r + 1) * width)
    row_start = np.arange(rows, dtype=np.int64) * width
    room = np.maximum(n, 1).astype(np.float64)
    base = rng.mix(keys, rng.PURPOSE_MASK_ORDER)
    for j in range(kmax):
        u = rng.uniform(rng.mix(base, j))
        here = row_start + j
        there = row_start + j + (u * np.maximum(room - j, 1.0)).astype(np.int64)
        places[here], places[there] = places[there], places[here]
    chosen = places.reshape(rows, width)[:, :kmax].astype(np.int64) + 1
    # candidate c is place c + 1, or c + 2 from B's [SEP] - 1 on
    chosen += chosen >= (b_starts - 1)[:, None]
    chosen[np.arange(kmax)[None, :] >= budget[:, None]] = np.iinfo(np.int64).max
    chosen.sort(axis=1)
    keep = np.arange(kmax)[None, :] < budget[:, None]
    return np.repeat(np.arange(rows), budget), chosen[keep]


def _choose_whole_words(tokens, offsets, candidate, budget, order, vocab) -> np.ndarray:
    """Greedy whole-word selection, per row (the skip-if-overflow rule is sequential)."""
    chosen = np.zeros(len(tokens), dtype=bool)
    joins = vocab.is_continuation[tokens] & candidate
    word_start = candidate & ~joins  # a word starts at every candidate that is not a "##" piece
    for r in range(len(offsets) - 1):
        lo, hi = int(offsets[r]), int(offsets[r + 1])
        starts = np.flatnonzero(word_start[lo:hi])
        if len(starts) == 0:
            continue
        # a word runs from its start through the continuation pieces that follow it
        words = []
        for s in starts.tolist():
            e = s + 1
            while e < hi - lo and joins[lo + e]:
                e += 1
            words.append((s, e))
        n, taken = int(budget[r]), 0
        for w in np.argsort(order[lo + starts], kind="stable").tolist():
            if taken >= n:
                break
            s, e = words[w]
            if taken + (e - s) > n:
                continue
            chosen[lo + s : lo + e] = True
            taken += e - s
    return chosen
