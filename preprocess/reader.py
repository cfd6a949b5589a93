"""Reading a preprocessed dataset: validated, memory-mapped, random access by row.

``PretrainingDataset(dir, split)`` checks the manifest against the files before
anything is read: every listed shard must exist with the listed size (a truncated
copy is caught without reading it), carry the manifest's vocabulary fingerprint and
row count, and optionally match its sha256. Shards are memory-mapped: opening a
terabyte dataset costs page-table entries, not RAM, and every worker process shares
the page cache.

**No row is returned unverified.** The first time a row of a record batch (8,192 rows)
is asked for, :meth:`PretrainingDataset.rows` checks every row of that batch against its
``row_checksum`` and its values against their ranges (:mod:`preprocess.integrity`: a few
vectorised passes over the batch's buffers), in whichever process reads: the loader's
workers, off the training loop. A damaged row raises :class:`DatasetError` naming the
shard file and the row, before any row of its batch is returned. Which batches are
verified is kept in memory shared by the processes forked from the one that opened the
dataset, so a rank's loader workers verify each batch once between them: over a run, one
pass over the data per rank. A format-1 shard, which has no row checksums, is checked
whole against its sha256 the first time a process reads from it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from preprocess.dataset import DatasetError, DatasetInfo
from preprocess.integrity import Rows, check_rows, row_checksums
from preprocess.manifest import MANIFEST_NAME
from preprocess.shards import ShardInfo

__all__ = ["DatasetError", "PretrainingDataset", "original_ids"]


@dataclass
class _Batch:
    rows: int
    input_offsets: np.ndarray
    input_values: np.ndarray
    label_offsets: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    b_start: np.ndarray
    nsp: np.ndarray
    doc_a: np.ndarray
    doc_b: np.ndarray
    checksums: np.ndarray | None  # None for format-1 shards
    shard: int = 0  # index of its shard in the split
    first: int = 0  # row number of its first row in the shard


def _views(batch: pa.RecordBatch, shard: int, first: int) -> _Batch:
    """Zero-copy numpy views of one record batch's buffers."""

    def lst(name):
        col = batch.column(name)
        return col.offsets.to_numpy(), col.values.to_numpy()

    io, iv = lst("input_ids")
    lo, pos = lst("masked_lm_positions")
    _, lab = lst("masked_lm_labels")
    checksums = batch.column("row_checksum").to_numpy() if "row_checksum" in batch.schema.names else None
    return _Batch(
        batch.num_rows, io, iv, lo, pos, lab,
        batch.column("b_start").to_numpy(), batch.column("next_sentence_label").to_numpy(),
        batch.column("doc_id_a").to_numpy(), batch.column("doc_id_b").to_numpy(), checksums, shard, first,
    )


class PretrainingDataset:
    """Rows of one split, by global index in ``[0, len(self))``; ``.info`` is the dataset's
    :class:`~preprocess.dataset.DatasetInfo`.

    ``verify``: "size" (default) checks each shard's size, schema and row count;
    "checksum" also hashes every byte; "none" trusts the manifest.
    ``expect_vocab_fingerprint`` / ``expect_max_seq_length``: fail unless the data
    was made with that vocabulary / sequence length (the trainer passes its run's).
    """

    def __init__(
        self,
        path: str,
        split: str = "train",
        verify: str = "size",
        expect_vocab_fingerprint: str | None = None,
        expect_max_seq_length: int | None = None,
        check_rows: bool = True,
    ):
        """``check_rows=False`` skips the per-row checks (only for measuring what they cost)."""
        if verify not in ("none", "size", "checksum"):
            raise ValueError(f"verify={verify!r}: use none, size or checksum")
        self.info = DatasetInfo.load(path)
        self.split = self.info.split(split).name
        where = os.path.join(path, MANIFEST_NAME)
        self.info.check_vocab(expect_vocab_fingerprint, "the run")
        if expect_max_seq_length and expect_max_seq_length < self.info.max_seq_length:
            raise DatasetError(
                f"{where}: sequences up to {self.info.max_seq_length} tokens, "
                f"longer than the expected maximum {expect_max_seq_length}"
            )
        self._batches: list[_Batch] = []
        self._files = []
        self._shards = self.info.split(split).shards
        self._sha_checked: set[int] = set()  # format-1 shards hashed by this process
        self._check_rows = check_rows
        for i, shard in enumerate(self._shards):
            self._batches += self._open_shard(i, shard, verify)
        counts = np.array([b.rows for b in self._batches], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        # 1 where a record batch has been verified; anonymous shared memory, so forked workers share it
        self._verified = np.frombuffer(mmap.mmap(-1, max(1, len(self._batches))), dtype=np.uint8)

    @property
    def path(self) -> str:
        return self.info.path

    def _open_shard(self, index: int, shard: ShardInfo, verify: str) -> list[_Batch]:
        file = os.path.join(self.path, shard.path)
        if not os.path.exists(file):
            raise DatasetError(f"{file}: listed in the manifest but missing")
        if verify != "none":
            size = os.path.getsize(file)
            if size != shard.bytes:
                raise DatasetError(
                    f"{file}: {size} bytes, the manifest says {shard.bytes}: truncated or replaced; "
                    "copy it again or re-run preprocessing"
                )
        if verify == "checksum":
            self._check_sha256(index)
        try:
            source = pa.memory_map(file)
            reader = pa.ipc.open_file(source)
        except (pa.ArrowInvalid, OSError) as e:
            raise DatasetError(f"{file}: not a readable Arrow IPC file ({e})") from e
        meta = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
        if meta.get("vocab_fingerprint") != self.info.vocab_fingerprint:
            raise DatasetError(
                f"{file}: made with vocabulary {meta.get('vocab_fingerprint')}, "
                f"the manifest's is {self.info.vocab_fingerprint}: shard from another dataset"
            )
        batches, first = [], 0
        for i in range(reader.num_record_batches):
            batches.append(_views(reader.get_batch(i), index, first))
            first += batches[-1].rows
        rows = sum(b.rows for b in batches)
        if rows != shard.rows:
            raise DatasetError(f"{file}: {rows} rows, the manifest says {shard.rows}")
        self._files.append(source)
        return batches

    def __len__(self) -> int:
        return int(self._starts[-1])

    def lengths(self, dtype: type = np.int64) -> np.ndarray:
        """(rows,) token count of every row, from the offsets alone (no row is read); ``dtype``: e.g.
        uint16 to hold a hundred million rows in 200 MB."""
        if not self._batches:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([np.diff(b.input_offsets).astype(dtype) for b in self._batches])

    def prediction_counts(self, dtype: type = np.int64) -> np.ndarray:
        """(rows,) masked positions of every row, from the offsets alone (no row is read)."""
        if not self._batches:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([np.diff(b.label_offsets).astype(dtype) for b in self._batches])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One row: ``input_ids``, ``token_type_ids``, ``masked_lm_positions``,
        ``masked_lm_labels`` (numpy arrays), ``next_sentence_label``, ``doc_id_a``, ``doc_id_b``."""
        return self.rows([index])[0]

    def rows(self, indices: list[int] | np.ndarray) -> list[dict[str, Any]]:
        """Rows by index (negative counts from the end), each verified before it is returned."""
        n = len(self)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row {int(idx[(idx < 0) | (idx >= n)][0])} out of range for {n} rows")
        which = np.searchsorted(self._starts, idx, side="right") - 1
        out: list[dict[str, Any]] = [{}] * len(idx)
        for bi in np.unique(which).tolist():
            b = self._batches[bi]
            places = np.flatnonzero(which == bi)
            local = idx[places] - int(self._starts[bi])
            if self._check_rows and not self._verified[bi]:
                self._verify(b)
                self._verified[bi] = 1
            for place, r in zip(places.tolist(), local.tolist()):
                out[place] = _row(b, r)
        return out

    def _verify(self, b: _Batch) -> None:
        """Check every row of record batch ``b``: checksums and ranges (format 2), else the whole
        shard's sha256 once per process (format 1)."""
        if b.checksums is None:
            self._check_sha256(b.shard)
            return
        try:
            rows = Rows(b.input_values, b.input_offsets, b.positions, b.labels, b.label_offsets, b.b_start, b.nsp,
                        b.doc_a, b.doc_b)
            damaged = (row_checksums(rows) != b.checksums) | check_rows(rows, self.info.vocab_size)
        except (IndexError, ValueError):  # offsets pointing outside their buffers
            damaged = np.ones(b.rows, dtype=bool)
        if damaged.any():
            row = b.first + int(np.argmax(damaged))
            file = os.path.join(self.path, self._shards[b.shard].path)
            raise DatasetError(
                f"{file}: row {row} is damaged (its values do not match its checksum or are out of range): "
                f"copy the shard again or re-run preprocessing; `python -m preprocess inspect {self.path} "
                f"--split {self.split} --verify checksum` checks every shard"
            )

    def _check_sha256(self, index: int) -> None:
        if index in self._sha_checked:
            return
        shard = self._shards[index]
        file = os.path.join(self.path, shard.path)
        h = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        if h.hexdigest() != shard.sha256:
            raise DatasetError(f"{file}: sha256 does not match the manifest: corrupt copy; copy it again or "
                               "re-run preprocessing")
        self._sha_checked.add(index)

    def verify_all(self) -> int:
        """Check every row of the split (after ``verify="checksum"``'s sha256s); the rows checked."""
        for i, b in enumerate(self._batches):
            self._verify(b)
            self._verified[i] = 1
        return len(self)

    def original_ids(self, index: int) -> np.ndarray:
        """The row before masking (for dynamic re-masking)."""
        return original_ids(self[index])


def _row(b: _Batch, r: int) -> dict[str, Any]:
    ids = b.input_values[b.input_offsets[r] : b.input_offsets[r + 1]]
    lo, hi = b.label_offsets[r], b.label_offsets[r + 1]
    token_type = np.zeros(len(ids), dtype=np.int8)
    token_type[int(b.b_start[r]) :] = 1
    return {
        "input_ids": ids,
        "token_type_ids": token_type,
        "masked_lm_positions": b.positions[lo:hi],
        "masked_lm_labels": b.labels[lo:hi],
        "next_sentence_label": int(b.nsp[r]),
        "doc_id_a": int(b.doc_a[r]),
        "doc_id_b": int(b.doc_b[r]),
    }


def original_ids(row: dict[str, Any]) -> np.ndarray:
    """A row's ids before masking: the labels written back at the masked positions."""
    ids = row["input_ids"].copy()
    ids[row["masked_lm_positions"]] = row["masked_lm_labels"]
    return ids
