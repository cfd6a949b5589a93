import json
import shutil

import pytest

from preprocess.dataset import DatasetError, DatasetInfo
from preprocess.manifest import seal
from preprocess.masking import MaskingParams
from preprocess.tokenization import vocab_file_fingerprint


def test_the_dataset_face_answers_from_the_manifest(dataset):
    info = DatasetInfo.load(str(dataset))
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert info.max_seq_length == 64 and info.masking == MaskingParams(0.15, 20, False)
    assert info.vocab_size == manifest["vocab"]["size"] and info.lower_case
    assert set(info.splits) == {"train", "validation"}
    train = info.split("train")
    assert train.rows == sum(s.rows for s in train.shards) == manifest["splits"]["train"]["rows"]
    assert [s.path for s in train.shards] == [s["path"] for s in manifest["splits"]["train"]["shards"]]
    assert info.rows("nope") == 0
    tokens = info.tokens()
    assert len(tokens) == info.vocab_size and tokens[info.token_id("[MASK]")] == "[MASK]"
    # the recorded fingerprint is the one of the vocabulary file beside the shards
    assert info.vocab_fingerprint == vocab_file_fingerprint(info.vocab_file, info.lower_case)


def test_unknown_split_and_damaged_manifest_name_the_file(dataset, tmp_path):
    with pytest.raises(DatasetError, match=r"manifest.json: no split 'test' \(has train, validation\)"):
        DatasetInfo.load(str(dataset)).split("test")
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    changed = json.loads(json.dumps(manifest))
    changed["splits"]["train"]["rows"] += 1  # a damaged manifest that is still valid JSON
    (copy / "manifest.json").write_text(json.dumps(changed))
    with pytest.raises(DatasetError, match=r"manifest.json: damaged \(its content does not match its checksum\)"):
        DatasetInfo.load(str(copy))
    del manifest["config"]["max_seq_length"]  # consistent, but not what a reader needs
    (copy / "manifest.json").write_text(json.dumps(seal(manifest)))
    with pytest.raises(DatasetError, match=r"manifest.json: missing or malformed entry .*max_seq_length"):
        DatasetInfo.load(str(copy))
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a manifest"):
        DatasetInfo.load(str(copy))


def test_another_vocabulary_is_an_error_naming_both(dataset):
    info = DatasetInfo.load(str(dataset))
    info.check_vocab(info.vocab_fingerprint, "the export")
    info.check_vocab(None, "a checkpoint without a vocabulary")  # nothing to compare
    with pytest.raises(DatasetError) as e:
        info.check_vocab("0" * 32, "model.init_from runs/p1/export")
    assert "model.init_from runs/p1/export was made with vocabulary 00000000" in str(e.value)
    assert info.vocab_fingerprint in str(e.value)
