"""Small inputs shared by the stage tests."""

import numpy as np
import pyarrow as pa

from preprocess.masking import MaskingParams
from preprocess.packed import DocumentBatch
from preprocess.shards import RowSpec
from preprocess.tokenization import TokenizerSpec, build_tokenizer, vocab_info


def docs(n=12):
    r = np.random.default_rng(0)
    lengths = r.integers(3, 12, 8 * n)
    batch = DocumentBatch(np.arange(n, dtype=np.uint64), np.full(n, 8), lengths,
                          r.integers(5, 300, int(lengths.sum())).astype(np.uint16))
    return [batch.take(np.arange(i, min(i + 5, n))) for i in range(0, n, 5)]


def row_spec(vocab_file, seq=32):
    spec = TokenizerSpec(vocab_file)
    info = vocab_info(build_tokenizer(spec), spec)
    return RowSpec(seq, info.cls_id, info.sep_id, info.unk_id, info.token_dtype.name, MaskingParams(0.15, 5),
                   info.mask_vocab())


def rows_of(piece):
    """A piece of a shard: rows, or rows parked in a file for the shard's writer."""
    if isinstance(piece, pa.RecordBatch):
        return pa.Table.from_batches([piece])
    return pa.ipc.open_file(piece.path).read_all()
