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
========================  ==================  ===================================================

Token columns are uint16 when the vocabulary has at most 65,536 entries, else int32.
The original sequence is ``input_ids`` with ``masked_lm_labels`` written back at
``masked_lm_positions``, so the trainer can re-mask dynamically.

Schema metadata carries the format version, vocabulary fingerprint and size,
max_seq_length, masking parameters and seed; the reader checks them against the
manifest. Shards are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from preprocess.masking import MaskingParams, MaskVocab, mask_batch
from preprocess.pairs import Pair

FORMAT_NAME = "bert-pretraining-arrow"
FORMAT_VERSION = 1
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


def build_rows(pairs: list[Pair], spec: RowSpec) -> tuple[pa.RecordBatch, np.ndarray, dict]:
    """Frame, mask and pack already-truncated pairs.

    Returns the record batch, the rows' uint64 instance keys (the shuffle order) and
    statistics for the manifest.
    """
    n = len(pairs)
    dtype = np.dtype(spec.token_dtype)
    keys = np.fromiter((p.key for p in pairs), dtype=np.uint64, count=n)
    pieces = []
    cls = np.array([spec.cls_id], dtype=np.int32)
    sep = np.array([spec.sep_id], dtype=np.int32)
    lengths = np.empty(n, dtype=np.int64)
    b_starts = np.empty(n, dtype=np.int64)
    for i, p in enumerate(pairs):
        pieces += (cls, p.tokens_a, sep, p.tokens_b, sep)
        b_starts[i] = len(p.tokens_a) + 2
        lengths[i] = len(p.tokens_a) + len(p.tokens_b) + 3
    tokens = np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    masked = mask_batch(tokens, offsets, b_starts, keys, spec.masking, spec.mask_vocab)

    labels_nsp = np.fromiter((p.is_random_next for p in pairs), dtype=np.int8, count=n)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(masked.input_ids.astype(dtype))),
            pa.array(b_starts.astype(np.uint16)),
            pa.ListArray.from_arrays(
                pa.array(masked.label_offsets.astype(np.int32)), pa.array(masked.positions.astype(np.uint16))
            ),
            pa.ListArray.from_arrays(
                pa.array(masked.label_offsets.astype(np.int32)), pa.array(masked.labels.astype(dtype))
            ),
            pa.array(labels_nsp),
            pa.array(np.fromiter((p.doc_id_a for p in pairs), dtype=np.uint64, count=n)),
            pa.array(np.fromiter((p.doc_id_b for p in pairs), dtype=np.uint64, count=n)),
        ],
        schema=schema(dtype),
    )
    special = np.zeros(len(tokens), dtype=bool)
    special[offsets[:-1]] = True
    special[offsets[1:] - 1] = True
    special[offsets[:-1] + b_starts - 1] = True
    stats = {
        "rows": n,
        "tokens": int(lengths.sum()),
        "next_sentence_random": int(labels_nsp.sum()),
        "masked_positions": int(len(masked.positions)),
        "mask_token": int(masked.actions[0]),
        "mask_unchanged": int(masked.actions[1]),
        "mask_random": int(masked.actions[2]),
        "unk_tokens": int(((tokens == spec.unk_id) & ~special).sum()),
        "length_histogram": np.bincount(lengths, minlength=spec.max_seq_length + 1).tolist(),
    }
    return batch, keys, stats


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the dataset directory
    rows: int
    tokens: int
    bytes: int
    sha256: str


def encode_shard(batches: list[pa.RecordBatch], sch: pa.Schema) -> bytes:
    """Serialise rows as one Arrow IPC file in record batches of ``BATCH_ROWS``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, sch) as writer:
        if batches:
            table = pa.Table.from_batches(batches, schema=sch).combine_chunks()
            for b in table.to_batches(max_chunksize=BATCH_ROWS):
                writer.write_batch(b)
    return sink.getvalue().to_pybytes()


def write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name beside ``path``, then rename: readers never see half a file."""
    from apache_beam.io.filesystems import FileSystems

    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}/shard-{index:05d}-of-{count:05d}.arrow"


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
