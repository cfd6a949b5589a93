import numpy as np
import pyarrow as pa

from preprocess.masking import MaskingParams, MaskVocab
from preprocess.packed import PairBlock, Ragged
from preprocess.shards import (
    RowSpec,
    build_rows,
    encode_shard,
    frame_pairs,
    schema,
    write_atomically,
)

SPEC = RowSpec(16, cls_id=2, sep_id=3, unk_id=1, token_dtype="uint16", masking=MaskingParams(0.15, 3),
               mask_vocab=MaskVocab(4, np.arange(5, 50), np.zeros(50, dtype=bool)))


def pairs():
    a = Ragged(np.array([10, 11, 12, 20], dtype=np.uint16), np.array([0, 3, 4]))
    b = Ragged(np.array([13, 14, 1, 21, 22, 23], dtype=np.uint16), np.array([0, 3, 6]))
    ids = np.array([7, 8], dtype=np.uint64)
    return PairBlock(ids, np.array([1, 5], dtype=np.uint64), np.array([1, 9], dtype=np.uint64),
                     np.array([0, 1], dtype=np.int8), a, b)


def test_frame_pairs_lays_out_cls_a_sep_b_sep():
    tokens, offsets, b_starts = frame_pairs(pairs(), 2, 3)
    assert tokens[offsets[0]:offsets[1]].tolist() == [2, 10, 11, 12, 3, 13, 14, 1, 3]
    assert tokens[offsets[1]:offsets[2]].tolist() == [2, 20, 3, 21, 22, 23, 3]
    assert b_starts.tolist() == [5, 3]


def test_rows_carry_the_public_schema_and_statistics():
    batch, stats = build_rows(pairs(), SPEC)
    assert batch.schema.equals(schema(np.dtype("uint16")))
    assert batch.column("b_start").to_pylist() == [5, 3]
    assert batch.column("next_sentence_label").to_pylist() == [0, 1]
    assert batch.column("doc_id_b").to_pylist() == [1, 9]
    assert stats["rows"] == 2 and stats["tokens"] == 16 and stats["unk_tokens"] == 1
    assert stats["length_histogram"][9] == 1 and stats["length_histogram"][7] == 1
    assert stats["masked_positions"] == sum(len(x) for x in batch.column("masked_lm_positions").to_pylist())


def test_encode_and_atomic_write(tmp_path):
    batch, _ = build_rows(pairs(), SPEC)
    sch = schema(np.dtype("uint16"), {"seed": "7"})
    data = encode_shard([batch.replace_schema_metadata(sch.metadata)] * 3, sch)
    path = tmp_path / "shard.arrow"
    write_atomically(str(path), data)
    write_atomically(str(path), data)  # a re-run replaces it
    assert [p.name for p in tmp_path.iterdir()] == ["shard.arrow"]
    table = pa.ipc.open_file(str(path)).read_all()
    assert table.num_rows == 6 and table.schema.metadata[b"seed"] == b"7"
