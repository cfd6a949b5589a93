"""Packed, columnar batches of variable-length token sequences.

Pairing, resolving, truncation and masking all work on these, never on one Python
object per instance: a batch of 10,000 pairs is a dozen numpy arrays, gathered and
sliced with vectorised index arithmetic, and pickled between Beam stages as a few
contiguous buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


def gather_ranges(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``flat[starts[i] : starts[i] + lengths[i]]`` for all i, without a loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return flat[:0]
    out_starts = np.cumsum(lengths) - lengths
    idx = np.repeat(np.asarray(starts, dtype=np.int64) - out_starts, lengths) + np.arange(total)
    return flat[idx]


def group_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive groups of ``values``, ``counts[i]`` of them in group i (none 0)."""
    return np.add.reduceat(values, offsets_of(counts)[:-1]) if len(counts) else values[:0]


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


class Ragged:
    """Rows of different lengths: row i is ``buffer[starts[i] : starts[i] + lengths[i]]``.

    Selecting rows (:meth:`take`) and trimming them (:meth:`window`) touch only the row
    table: the tokens stay where they are until they are needed packed, which happens
    once, when the rows are pickled for a shuffle (only the rows are written, back to
    back) or framed into sequences. ``Ragged(values, offsets)`` builds packed rows.
    """

    __slots__ = ("buffer", "starts", "lengths")

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        offsets = np.asarray(offsets, dtype=np.int64)
        self.buffer = values
        self.starts = offsets[:-1]
        self.lengths = np.diff(offsets)

    @classmethod
    def over(cls, buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> Ragged:
        """Rows that are ranges of ``buffer``, in place."""
        r = cls.__new__(cls)
        r.buffer = buffer
        r.starts = np.asarray(starts, dtype=np.int64)
        r.lengths = np.asarray(lengths, dtype=np.int64)
        return r

    @classmethod
    def empty(cls, dtype: np.typing.DTypeLike = np.int32) -> Ragged:
        return cls(np.zeros(0, dtype=dtype), np.zeros(1, dtype=np.int64))

    @classmethod
    def concat(cls, parts: list[Ragged]) -> Ragged:
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        if all(p.buffer is parts[0].buffer for p in parts):
            return cls.over(parts[0].buffer, np.concatenate([p.starts for p in parts]),
                            np.concatenate([p.lengths for p in parts]))
        return cls(np.concatenate([p.values for p in parts]), offsets_of(np.concatenate([p.lengths for p in parts])))

    def __len__(self) -> int:
        return len(self.starts)

    def __reduce__(self):
        offsets = self.offsets
        if offsets[-1] < 2**31:
            offsets = offsets.astype(np.int32)  # half the bytes in the shuffle; widened on load
        return Ragged, (self.values, offsets)

    @property
    def packed(self) -> bool:
        """Whether the rows lie back to back from the buffer's start."""
        return len(self) == 0 or (
            self.starts[0] == 0 and bool(np.array_equal(self.starts[1:], np.cumsum(self.lengths[:-1])))
        )

    @property
    def values(self) -> np.ndarray:
        """All rows back to back."""
        if self.packed:
            return self.buffer[: int(self.lengths.sum())]
        return gather_ranges(self.buffer, self.starts, self.lengths)

    @property
    def offsets(self) -> np.ndarray:
        return offsets_of(self.lengths)

    def row(self, i: int) -> np.ndarray:
        return self.buffer[self.starts[i] : self.starts[i] + self.lengths[i]]

    def take(self, idx: np.ndarray) -> Ragged:
        idx = np.asarray(idx, dtype=np.int64)
        return Ragged.over(self.buffer, self.starts[idx], self.lengths[idx])

    def window(self, cut_front: np.ndarray, cut_back: np.ndarray) -> Ragged:
        """Each row without ``cut_front[i]`` leading and ``cut_back[i]`` trailing values."""
        return Ragged.over(self.buffer, self.starts + cut_front, self.lengths - cut_front - cut_back)


class _Columns:
    """Shared operations for dataclasses whose fields are row-aligned arrays or Ragged."""

    def __len__(self) -> int:
        return len(self.key)  # type: ignore[attr-defined]

    def take(self, idx: np.ndarray):
        return type(self)(**{f.name: getattr(self, f.name)[idx] if not isinstance(getattr(self, f.name), Ragged)
                             else getattr(self, f.name).take(idx) for f in fields(self)})  # type: ignore[arg-type]

    @classmethod
    def concat(cls, parts: list):
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()  # type: ignore[attr-defined]
        if len(parts) == 1:
            return parts[0]
        out = {}
        for f in fields(cls):  # type: ignore[arg-type]
            cols = [getattr(p, f.name) for p in parts]
            out[f.name] = Ragged.concat(cols) if isinstance(cols[0], Ragged) else np.concatenate(cols)
        return cls(**out)


@dataclass
class PairBlock(_Columns):
    """Complete A/B pairs."""

    key: np.ndarray  # (n,) uint64 instance keys
    doc_a: np.ndarray  # (n,) uint64
    doc_b: np.ndarray  # (n,) uint64
    random_next: np.ndarray  # (n,) int8: 1 = B is from another document
    a: Ragged
    b: Ragged

    @classmethod
    def empty(cls) -> PairBlock:
        z = np.zeros(0, dtype=np.uint64)
        return cls(z, z, z, np.zeros(0, dtype=np.int8), Ragged.empty(), Ragged.empty())


@dataclass
class RequestBlock(_Columns):
    """Segments A waiting for a random B of at least ``target_b`` tokens."""

    key: np.ndarray
    doc: np.ndarray
    target_b: np.ndarray  # (n,) int32
    a: Ragged

    @classmethod
    def empty(cls) -> RequestBlock:
        z = np.zeros(0, dtype=np.uint64)
        return cls(z, z, np.zeros(0, dtype=np.int32), Ragged.empty())


@dataclass
class DonorBlock(_Columns):
    """Runs of whole sentences offered as random B segments."""

    key: np.ndarray
    doc: np.ndarray
    tokens: Ragged
    sentence_ends: Ragged  # per donor: cumulative sentence lengths, the last = its token count

    @classmethod
    def empty(cls) -> DonorBlock:
        z = np.zeros(0, dtype=np.uint64)
        return cls(z, z, Ragged.empty(), Ragged.empty(np.int32))


@dataclass
class DocumentBatch:
    """Tokenized documents: each one's sentence token counts, and all tokens back to back.

    Document d has sentences ``lengths[s0:s1]`` where ``[s0, s1)`` is its range in
    ``offsets_of(sentences)``; its tokens follow those of document d - 1.
    """

    doc_id: np.ndarray  # (docs,) uint64
    sentences: np.ndarray  # (docs,) int64: sentence count, none 0
    lengths: np.ndarray  # (all sentences,) int64: token counts, none 0
    tokens: np.ndarray  # (all tokens,) the shard token dtype

    def __len__(self) -> int:
        return len(self.doc_id)

    @property
    def sizes(self) -> np.ndarray:
        """Tokens per document."""
        return group_sums(self.lengths, self.sentences)

    def take(self, idx: np.ndarray) -> DocumentBatch:
        idx = np.asarray(idx, dtype=np.int64)
        sentence_starts = offsets_of(self.sentences)[:-1]
        sizes = self.sizes
        return DocumentBatch(
            self.doc_id[idx],
            self.sentences[idx],
            gather_ranges(self.lengths, sentence_starts[idx], self.sentences[idx]),
            gather_ranges(self.tokens, offsets_of(sizes)[:-1][idx], sizes[idx]),
        )

    @classmethod
    def from_sentences(
        cls, doc_id: np.ndarray, sentences: np.ndarray, lengths: np.ndarray, tokens: np.ndarray, cap: int
    ) -> tuple[DocumentBatch, dict[str, int]]:
        """Pack tokenized sentences (``sentences[d]`` of them for document d, any length).

        Sentences of no tokens are dropped, one longer than ``cap`` becomes pieces of
        ``cap`` (the last shorter), and documents left with no sentence are dropped.
        Returns the batch and counts of what was done.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        pieces = (lengths + cap - 1) // cap  # 0 for an empty sentence
        sentence = np.repeat(np.arange(len(lengths)), pieces)
        nth = np.arange(len(sentence)) - np.repeat(offsets_of(pieces)[:-1], pieces)
        piece_lengths = np.minimum(cap, lengths[sentence] - nth * cap)
        per_doc = np.bincount(np.repeat(np.arange(len(doc_id)), sentences)[sentence], minlength=len(doc_id))
        used = per_doc > 0
        stats = {
            "sentences_cut_long": int((lengths > cap).sum()),
            "document_no_tokens": int((~used).sum()),
            "documents_used": int(used.sum()),
            "sentences": len(piece_lengths),
            "documents_single_sentence": int((per_doc == 1).sum()),
        }
        batch = cls(np.asarray(doc_id, dtype=np.uint64)[used], per_doc[used].astype(np.int64), piece_lengths, tokens)
        return batch, stats
