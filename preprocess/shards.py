"""The on-disk format: Arrow IPC shards of masked sentence pairs.

One row per training sequence, stored unpadded (the trainer pads per batch):

========================  ==================  ===================================================
column                    type                meaning
========================  ==================  ===================================================
``input_ids``             list<uint16|int32>  ``[CLS] A [SEP] B [SEP]`` with masking applied
``b_start``               uint16              index where segment B starts; token_type_ids are 0
                                              before it and 1 from it (so the first [SEP] is 0)
``masked_lm_positions``   list<uint16>        positions chosen for prediction, ascending
``masked_lm_labels``      list<uint16|int32>  original ids at those positions
``next_sentence_label``   int8                0 = B follows A, 1 = B is random (BERT's convention)
``doc_id_a``/``doc_id_b`` uint64              source documents (see :mod:`preprocess.documents`)
``row_checksum``          uint64              a hash of the row's values (:mod:`preprocess.integrity`)
========================  ==================  ===================================================

Token columns are uint16 when the vocabulary has at most 65,536 entries, else int32.
The original sequence is ``input_ids`` with ``masked_lm_labels`` written back at
``masked_lm_positions``, so the trainer can re-mask dynamically.

Format version 2 added ``row_checksum`` (version 1 shards, without it, are verified by
their sha256 instead). Schema metadata carries the format version, vocabulary fingerprint and size,
max_seq_length, masking parameters and seed; the reader checks them against the
manifest. Shards are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from preprocess.integrity import Rows, row_checksums
from preprocess.masking import MaskingParams, MaskVocab, mask_batch
from preprocess.packed import PairBlock, offsets_of

FORMAT_NAME = "bert-pretraining-arrow"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no row_checksum column
BATCH_ROWS = 8192


def schema(token_dtype: np.dtype, metadata: dict[str, str] | None = None) -> pa.Schema:
    tok = pa.from_numpy_dtype(token_dtype)
    fields = [
        pa.field("input_ids", pa.list_(tok), nullable=False),
        pa.field("b_start", pa.uint16(), nullable=False),
        pa.field("masked_lm_positions", pa.list_(pa.uint16()), nullable=False),
        pa.field("masked_lm_labels", pa.list_(tok), nullable=False),
        pa.field("next_sentence_label", pa.int8(), nullable=False),
        pa.field("doc_id_a", pa.uint64(), nullable=False),
        pa.field("doc_id_b", pa.uint64(), nullable=False),
        pa.field("row_checksum", pa.uint64(), nullable=False),
    ]
    return pa.schema(fields, metadata={k.encode(): v.encode() for k, v in (metadata or {}).items()})


@dataclass(frozen=True)
class RowSpec:
    """Everything needed to turn pairs into rows; picklable for Beam workers."""

    max_seq_length: int
    cls_id: int
    sep_id: int
    unk_id: int
    token_dtype: str
    masking: MaskingParams
    mask_vocab: MaskVocab


def frame_pairs(pairs: PairBlock, cls_id: int, sep_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[CLS] A [SEP] B [SEP]`` for every pair: (tokens, row offsets, b_starts)."""
    la, lb = pairs.a.lengths, pairs.b.lengths
    offsets = offsets_of(la + lb + 3)
    starts = offsets[:-1]
    dtype = np.result_type(pairs.a.buffer.dtype, np.min_scalar_type(sep_id))
    tokens = np.empty(int(offsets[-1]), dtype=dtype)
    tokens[starts] = cls_id
    tokens[starts + la + 1] = sep_id
    tokens[offsets[1:] - 1] = sep_id
    for side, first in ((pairs.a, starts + 1), (pairs.b, starts + la + 2)):
        n = int(side.lengths.sum())
        if n:  # one pass: each token read from its source range and written to its place
            step = np.repeat(side.starts - first, side.lengths)
            at = np.arange(n) + np.repeat(first - offsets_of(side.lengths)[:-1], side.lengths)
            tokens[at] = side.buffer[at + step]
    return tokens, offsets, la + 2


def build_rows(pairs: PairBlock, spec: RowSpec) -> tuple[pa.RecordBatch, dict]:
    """Frame, mask and pack already-truncated pairs into a record batch, with statistics."""
    dtype = np.dtype(spec.token_dtype)
    tokens, offsets, b_starts = frame_pairs(pairs, spec.cls_id, spec.sep_id)
    masked = mask_batch(tokens, offsets, b_starts, pairs.key, spec.masking, spec.mask_vocab)
    label_offsets = pa.array(masked.label_offsets.astype(np.int32))
    rows = Rows(masked.input_ids.astype(dtype), offsets, masked.positions.astype(np.uint16), masked.labels.astype(dtype),
                masked.label_offsets, b_starts.astype(np.uint16), pairs.random_next.astype(np.int8),
                pairs.doc_a.astype(np.uint64), pairs.doc_b.astype(np.uint64))
    batch = pa.RecordBatch.from_arrays(
        [
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(rows.ids)),
            pa.array(rows.b_start),
            pa.ListArray.from_arrays(label_offsets, pa.array(rows.positions)),
            pa.ListArray.from_arrays(label_offsets, pa.array(rows.labels)),
            pa.array(rows.nsp),
            pa.array(rows.doc_a),
            pa.array(rows.doc_b),
            pa.array(row_checksums(rows)),
        ],
        schema=schema(dtype),
    )
    lengths = np.diff(offsets)
    ordinary = len(tokens) - 3 * len(pairs)
    stats = {
        "rows": len(pairs),
        "tokens": int(offsets[-1]),
        "next_sentence_random": int(pairs.random_next.sum()),
        "masked_positions": int(len(masked.positions)),
        "mask_token": int(masked.actions[0]),
        "mask_unchanged": int(masked.actions[1]),
        "mask_random": int(masked.actions[2]),
        # [UNK] never appears among the special places, so counting all tokens is exact
        "unk_tokens": int(np.count_nonzero(tokens == spec.unk_id)) if ordinary else 0,
        "length_histogram": np.bincount(lengths, minlength=spec.max_seq_length + 1).tolist(),
    }
    return batch, stats


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the dataset directory
    rows: int
    tokens: int
    bytes: int
    sha256: str


class _Digest:
    """A binary sink that passes its bytes on, counting and hashing them."""

    def __init__(self, sink: BinaryIO):
        self.sink, self.hash, self.size, self.closed = sink, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ShardWriter:
    """Rows in, one Arrow IPC file out, written as they come: record batches of
    :data:`BATCH_ROWS` rows whatever the pieces' sizes, so the file's bytes depend on its rows
    only, and what is held at once is one record batch, not the file.

    ``path`` None: into memory (:func:`encode_shard`); else under a temporary name beside
    ``path``, renamed by :meth:`close` (readers never see half a file).
    """

    def __init__(self, path: str | None, sch: pa.Schema):
        from apache_beam.io.filesystems import FileSystems

        self.path, self.schema = path, sch
        self.tmp = f"{path}.tmp-{uuid.uuid4().hex}" if path else None
        self._file = FileSystems.create(self.tmp) if self.tmp else pa.BufferOutputStream()
        self._digest = _Digest(self._file) if self.tmp else None
        self._writer = pa.ipc.new_file(pa.PythonFile(self._digest, mode="w") if self._digest else self._file, sch)
        self._pending: list[pa.RecordBatch] = []
        self._held = 0
        self.rows = self.tokens = 0

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.replace_schema_metadata(self.schema.metadata)
        self._pending.append(batch)
        self._held += batch.num_rows
        self.rows += batch.num_rows
        self.tokens += len(batch.column(0).flatten())
        if self._held >= BATCH_ROWS:
            self._write_pending(final=False)

    def _write_pending(self, final: bool) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema).combine_chunks()
        full = table.num_rows if final else table.num_rows - table.num_rows % BATCH_ROWS
        for b in table.slice(0, full).to_batches(max_chunksize=BATCH_ROWS):
            self._writer.write_batch(b)
        rest = table.slice(full)
        self._pending = rest.to_batches() if rest.num_rows else []
        self._held = rest.num_rows

    def close(self) -> tuple[int, str]:
        """Finish the file; its size in bytes and sha256 (in memory: the bytes are :meth:`value`)."""
        self._write_pending(final=True)
        self._writer.close()
        if self._digest is None:
            data = self._file.getvalue()
            return data.size, hashlib.sha256(data).hexdigest()
        self._file.close()
        _move_into_place(self.tmp, self.path)
        return self._digest.size, self._digest.hash.hexdigest()

    def value(self) -> bytes:
        return self._file.getvalue().to_pybytes()


def encode_shard(batches: list[pa.RecordBatch], sch: pa.Schema) -> bytes:
    """Serialise rows as one Arrow IPC file in record batches of ``BATCH_ROWS``."""
    writer = ShardWriter(None, sch)
    for b in batches:
        writer.write(b)
    writer.close()
    return writer.value()


def write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name beside ``path``, then rename: readers never see half a file."""
    from apache_beam.io.filesystems import FileSystems

    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp) as f:
        f.write(data)
    _move_into_place(tmp, path)


def _move_into_place(tmp: str, path: str) -> None:
    """Rename a finished temporary file to ``path``, replacing what is there (a retried task's file)."""
    from apache_beam.io.filesystems import FileSystems

    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


PARTS_DIR = ".parts"  # rows parked between masking and shard writing; removed before the manifest


def part_name(split: str, bucket: int, shard: int) -> str:
    """The file of the rows ``bucket`` gives shard ``shard``: the same name on a retry, which replaces it."""
    return f"{PARTS_DIR}/{split}-bucket-{bucket:06d}-shard-{shard:05d}.arrow"


def remove_parts(output: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    parts = FileSystems.join(output, PARTS_DIR)
    if FileSystems.exists(parts):
        FileSystems.delete([parts])


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}/shard-{index:05d}-of-{count:05d}.arrow"


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
