"""Reading a preprocessed dataset: validated, memory-mapped, random access by row.

``PretrainingDataset(dir, split)`` checks the manifest against the files before
anything is read: every listed shard must exist with the listed size (a truncated
copy is caught without reading it), carry the manifest's vocabulary fingerprint and
row count, and optionally match its sha256. Errors name the file and say what is
wrong. Shards are memory-mapped: opening a terabyte dataset costs page-table
entries, not RAM, and every worker process shares the page cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from preprocess.dataset import DatasetError, DatasetInfo
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


def _views(batch: pa.RecordBatch) -> _Batch:
    """Zero-copy numpy views of one record batch's buffers."""

    def lst(name):
        col = batch.column(name)
        return col.offsets.to_numpy(), col.values.to_numpy()

    io, iv = lst("input_ids")
    lo, pos = lst("masked_lm_positions")
    _, lab = lst("masked_lm_labels")
    return _Batch(
        batch.num_rows, io, iv, lo, pos, lab,
        batch.column("b_start").to_numpy(), batch.column("next_sentence_label").to_numpy(),
        batch.column("doc_id_a").to_numpy(), batch.column("doc_id_b").to_numpy(),
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
    ):
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
        for shard in self.info.split(split).shards:
            self._batches += self._open_shard(shard, verify)
        counts = np.array([b.rows for b in self._batches], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    @property
    def path(self) -> str:
        return self.info.path

    def _open_shard(self, shard: ShardInfo, verify: str) -> list[_Batch]:
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
            h = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            if h.hexdigest() != shard.sha256:
                raise DatasetError(f"{file}: sha256 does not match the manifest: corrupt copy")
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
        batches = [_views(reader.get_batch(i)) for i in range(reader.num_record_batches)]
        rows = sum(b.rows for b in batches)
        if rows != shard.rows:
            raise DatasetError(f"{file}: {rows} rows, the manifest says {shard.rows}")
        self._files.append(source)
        return batches

    def __len__(self) -> int:
        return int(self._starts[-1])

    def lengths(self) -> np.ndarray:
        """(rows,) token count of every row, from the offsets alone (no row is read)."""
        if not self._batches:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(b.input_offsets).astype(np.int64) for b in self._batches])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One row: ``input_ids``, ``token_type_ids``, ``masked_lm_positions``,
        ``masked_lm_labels`` (numpy arrays), ``next_sentence_label``, ``doc_id_a``, ``doc_id_b``."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"row {index} out of range for {n} rows")
        bi = int(np.searchsorted(self._starts, index, side="right")) - 1
        b = self._batches[bi]
        r = index - int(self._starts[bi])
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

    def original_ids(self, index: int) -> np.ndarray:
        """The row before masking (for dynamic re-masking)."""
        return original_ids(self[index])


def original_ids(row: dict[str, Any]) -> np.ndarray:
    """A row's ids before masking: the labels written back at the masked positions."""
    ids = row["input_ids"].copy()
    ids[row["masked_lm_positions"]] = row["masked_lm_labels"]
    return ids
