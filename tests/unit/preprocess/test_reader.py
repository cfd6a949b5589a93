import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from preprocess.manifest import seal
from preprocess.reader import DatasetError, PretrainingDataset


@pytest.fixture
def copy(dataset, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(dataset, dest)
    return dest


def test_rows_are_random_access_and_consistent_with_the_manifest(dataset):
    ds = PretrainingDataset(str(dataset), "train", verify="checksum")
    split = ds.info.split("train")
    assert len(ds) == split.rows > 1000
    total = 0
    for i in range(len(ds)):
        row = ds[i]
        n = len(row["input_ids"])
        total += n
        assert n <= 64
        assert row["token_type_ids"][0] == 0 and row["token_type_ids"][-1] == 1
        assert len(row["masked_lm_positions"]) == len(row["masked_lm_labels"]) >= 1
    assert total == split.tokens
    assert np.array_equal(ds[-1]["input_ids"], ds[len(ds) - 1]["input_ids"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_original_ids_restore_the_masked_tokens(dataset):
    ds = PretrainingDataset(str(dataset))
    row = ds[5]
    orig = ds.original_ids(5)
    assert np.array_equal(orig[row["masked_lm_positions"]], row["masked_lm_labels"])
    assert ds.info.vocab_size > int(orig.max())


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match="no manifest"):
        PretrainingDataset(str(tmp_path))


def test_missing_shard_names_the_file(copy):
    victim = copy / "train" / "shard-00002-of-00004.arrow"
    victim.unlink()
    with pytest.raises(DatasetError, match=r"shard-00002-of-00004\.arrow: listed in the manifest but missing"):
        PretrainingDataset(str(copy))


def test_truncated_shard_is_caught_by_size(copy):
    victim = copy / "train" / "shard-00001-of-00004.arrow"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"shard-00001-of-00004\.arrow: \d+ bytes, the manifest says \d+: truncated"):
        PretrainingDataset(str(copy))


def test_corrupt_bytes_are_caught_by_checksum(copy):
    victim = copy / "train" / "shard-00000-of-00004.arrow"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    PretrainingDataset(str(copy), verify="size")  # same size: only a checksum sees it
    with pytest.raises(DatasetError, match="sha256 does not match"):
        PretrainingDataset(str(copy), verify="checksum")


def flip_middle(path, n=200):
    """Bit rot of the right size: ``n`` bytes in the middle of the file inverted."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def test_a_damaged_row_is_never_returned(copy):
    clean = PretrainingDataset(str(copy))
    flip_middle(copy / "train" / "shard-00001-of-00004.arrow")
    ds = PretrainingDataset(str(copy))  # opens: sizes, schemas and row counts are intact
    first_of_shard_1 = ds.info.split("train").shards[0].rows
    bad = []
    for i in range(len(ds)):
        try:
            row = ds[i]
        except DatasetError as e:
            assert "shard-00001-of-00004.arrow: row " in str(e) and "is damaged" in str(e)
            bad.append(i)
            continue
        assert np.array_equal(row["input_ids"], clean[i]["input_ids"])  # every row returned is intact
    assert bad and all(first_of_shard_1 <= i < first_of_shard_1 + ds.info.split("train").shards[1].rows for i in bad)
    with pytest.raises(DatasetError, match=r"shard-00001-of-00004\.arrow: row \d+ is damaged"):
        ds.verify_all()
    with pytest.raises(DatasetError, match=r"shard-00001-of-00004\.arrow: row \d+ is damaged"):
        ds.rows(list(range(len(ds))))  # one damaged row fails the micro-batch that holds it


def test_format_1_shards_without_row_checksums_are_verified_whole(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    for s in manifest["splits"]["train"]["shards"]:
        path = copy / s["path"]
        table = pa.ipc.open_file(str(path)).read_all().drop_columns(["row_checksum"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        data = sink.getvalue().to_pybytes()
        path.write_bytes(data)
        s["bytes"], s["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    manifest["format_version"] = 1
    del manifest["checksum"]  # format 1 had none
    (copy / "manifest.json").write_text(json.dumps(manifest))
    ds = PretrainingDataset(str(copy))
    assert ds.info.format_version == 1 and len(ds.rows(list(range(10)))) == 10
    flip_middle(copy / "train" / "shard-00002-of-00004.arrow")
    ds = PretrainingDataset(str(copy))
    ds[0]  # shard 0 is intact
    with pytest.raises(DatasetError, match=r"shard-00002-of-00004\.arrow: sha256 does not match"):
        ds[sum(s.rows for s in ds.info.split("train").shards[:2])]  # the first row of shard 2


def test_shard_from_another_vocabulary_is_rejected(copy):
    victim = copy / "train" / "shard-00003-of-00004.arrow"
    table = pa.ipc.open_file(str(victim)).read_all()
    meta = dict(table.schema.metadata)
    meta[b"vocab_fingerprint"] = b"0" * 32
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema.with_metadata(meta)) as w:
        w.write_table(table)
    data = sink.getvalue().to_pybytes()
    victim.write_bytes(data)
    manifest = json.loads((copy / "manifest.json").read_text())
    for s in manifest["splits"]["train"]["shards"]:
        if s["path"].endswith("shard-00003-of-00004.arrow"):
            s["bytes"] = len(data)
    (copy / "manifest.json").write_text(json.dumps(seal(manifest)))
    with pytest.raises(DatasetError, match=r"shard-00003-of-00004\.arrow: made with vocabulary 0+, .*another dataset"):
        PretrainingDataset(str(copy))


def test_expectations_of_the_trainer_are_checked(dataset):
    with pytest.raises(DatasetError, match="made with vocabulary"):
        PretrainingDataset(str(dataset), expect_vocab_fingerprint="f" * 32)
    with pytest.raises(DatasetError, match="longer than the expected maximum 32"):
        PretrainingDataset(str(dataset), expect_max_seq_length=32)
    with pytest.raises(DatasetError, match="no split 'test'"):
        PretrainingDataset(str(dataset), "test")
    assert len(PretrainingDataset(str(dataset), "validation")) > 0
