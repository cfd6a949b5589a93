"""Row checksums and range checks: how a reader knows a row is the one the job wrote.

Every row of a shard carries ``row_checksum``, a 64-bit hash of all its values: the
token ids, masked positions and labels (each weighted by its place in the row), segment
B's start, the NSP label, both document ids and the lengths. It is computed with a few
vectorised numpy passes over a whole batch of rows, by the job as it builds rows and by
the reader for each micro-batch it decodes, so checking costs about as much as reading.

Every value is multiplied by an odd weight before summing modulo 2^64, and the sum goes
through a bijective mixer, so **any single-bit error in a row is always detected**, and
other damage is missed with probability ~2^-64 per row. It is a check against bit rot,
bad copies and truncation, not a cryptographic hash (the manifest's per-shard sha256 is
that; ``python -m preprocess inspect DIR --verify checksum`` checks it).

:func:`check_rows` adds the range checks a corrupt-but-consistent row would still fail:
ids and labels inside the vocabulary, positions inside the row, B after [CLS] A [SEP],
the NSP label 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocess.rng import mix

# Odd constants (from SplitMix64's and xxhash's primes), one per kind of value.
_ODD = np.array([0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xC2B2AE3D27D4EB4F,
                 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0x85EBCA77C2B2AE63, 0xFF51AFD7ED558CCD,
                 0xC4CEB9FE1A85EC53], dtype=np.uint64)


@dataclass(frozen=True)
class Rows:
    """A batch of rows as flat arrays (the shard's own buffers, or a gather of some rows)."""

    ids: np.ndarray  # (total tokens,)
    id_offsets: np.ndarray  # (rows + 1,)
    positions: np.ndarray  # (total predictions,)
    labels: np.ndarray  # (total predictions,)
    label_offsets: np.ndarray  # (rows + 1,)
    b_start: np.ndarray  # (rows,)
    nsp: np.ndarray
    doc_a: np.ndarray
    doc_b: np.ndarray


def _ragged_sums(values: np.ndarray, offsets: np.ndarray, constant: np.uint64) -> np.ndarray:
    """Per row: sum of (value + 1) x (2 x place in row + 1) x constant, modulo 2^64."""
    offsets = offsets.astype(np.int64)
    n = int(offsets[-1] - offsets[0])
    if n == 0:
        return np.zeros(len(offsets) - 1, dtype=np.uint64)
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    weight = np.arange(n, dtype=np.int64)
    weight -= np.repeat(starts, lengths)  # place in the row
    weight = weight.view(np.uint64)
    weight *= np.uint64(2)
    weight += np.uint64(1)
    term = values[offsets[0] : offsets[-1]].astype(np.uint64)
    term += np.uint64(1)
    term *= weight
    term *= constant
    total = np.empty(n + 1, dtype=np.uint64)
    total[0] = 0
    np.cumsum(term, out=total[1:])
    return total[starts + lengths] - total[starts]


def row_checksums(rows: Rows) -> np.ndarray:
    """(rows,) uint64: the checksum of every row (see the module docstring)."""
    with np.errstate(over="ignore"):
        h = _ragged_sums(rows.ids, rows.id_offsets, _ODD[0])
        h += _ragged_sums(rows.positions, rows.label_offsets, _ODD[1])
        h += _ragged_sums(rows.labels, rows.label_offsets, _ODD[2])
        scalars = (rows.b_start, rows.nsp, rows.doc_a, rows.doc_b, np.diff(rows.id_offsets),
                   np.diff(rows.label_offsets))
        for value, k in zip(scalars, _ODD[3:]):
            h += (np.asarray(value).astype(np.int64).astype(np.uint64) + np.uint64(1)) * k
    return mix(h)


def check_rows(rows: Rows, vocab_size: int) -> np.ndarray:
    """(rows,) bool: True where a row's values are out of range for a BERT pre-training row."""
    n = np.diff(rows.id_offsets.astype(np.int64))
    k = np.diff(rows.label_offsets.astype(np.int64))
    b_start = rows.b_start.astype(np.int64)
    nsp = rows.nsp.astype(np.int64)
    bad = (n < 3) | (b_start < 2) | (b_start > n - 1) | (nsp < 0) | (nsp > 1)
    ids = rows.ids[rows.id_offsets[0] : rows.id_offsets[-1]]
    lo, hi = rows.label_offsets[0], rows.label_offsets[-1]
    labels, positions = rows.labels[lo:hi], rows.positions[lo:hi]
    bad_id = _outside(ids, 0, vocab_size)
    if bad_id is not None:  # rare: find the rows
        bad |= np.bincount(np.repeat(np.arange(len(n)), n)[bad_id], minlength=len(n)) > 0
    row_end = np.repeat(n, k) - 1  # the last [SEP]; positions lie strictly between [CLS] and it
    bad_label = _outside(labels, 0, vocab_size)
    if bad_label is None and positions.size and (positions.min() < 1 or (positions >= row_end).any()):
        bad_label = np.zeros(len(positions), dtype=bool)
    if bad_label is not None:
        bad_label |= (positions.astype(np.int64) < 1) | (positions >= row_end)
        bad |= np.bincount(np.repeat(np.arange(len(k)), k)[bad_label], minlength=len(n)) > 0
    return bad


def _outside(values: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
    """None when every value lies in [lo, hi) (one min and one max); else the mask of those outside."""
    if values.size == 0 or (int(values.min()) >= lo and int(values.max()) < hi):
        return None
    v = values.astype(np.int64)
    return (v < lo) | (v >= hi)
