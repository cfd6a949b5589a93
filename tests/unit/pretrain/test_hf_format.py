import json

import pytest
import torch
from safetensors.torch import save_file

from preprocess.tokenization import vocab_file_fingerprint
from pretrain.hf_format import (
    CheckpointFormatError,
    load_pretrained,
    save_pretrained,
    vocab_fingerprint,
)
from pretrain.model import BertConfig, build_model

transformers = pytest.importorskip("transformers")

CFG = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
           max_position_embeddings=40)


def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 120, (3, 16), generator=g)
    return ids, (torch.arange(16) >= 8).long().expand(3, 16).clone(), torch.ones(3, 16, dtype=torch.long)


def test_export_loads_in_transformers_with_no_missing_keys_and_same_outputs(tmp_path, vocab_file):
    ours = build_model(BertConfig(**CFG)).eval()
    save_pretrained(ours, str(tmp_path), vocab_file=vocab_file)
    hf, info = transformers.BertForPreTraining.from_pretrained(str(tmp_path), output_loading_info=True)
    hf.eval()
    assert info["missing_keys"] in ([], set()) and info["unexpected_keys"] in ([], set())
    ids, types, mask = inputs()
    ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    out = ours(ids, types, mask)
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, rtol=1e-5, atol=1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok.convert_tokens_to_ids("[MASK]") == open(vocab_file).read().split("\n").index("[MASK]")


def test_round_trip_through_our_loader(tmp_path):
    ours = build_model(BertConfig(**CFG)).eval()
    save_pretrained(ours, str(tmp_path))
    again, report = load_pretrained(str(tmp_path))
    assert report["initialized"] == []
    for (n, a), b in zip(ours.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    assert again.config == ours.config


def test_the_vocabulary_fingerprint_is_recorded_or_computed_from_vocab_txt(tmp_path, vocab_file):
    ours = build_model(BertConfig(**CFG))
    save_pretrained(ours, str(tmp_path / "recorded"), vocab_file=vocab_file, vocab_fingerprint="abc123")
    assert vocab_fingerprint(str(tmp_path / "recorded")) == "abc123"
    assert transformers.BertConfig.from_pretrained(str(tmp_path / "recorded")).vocab_fingerprint == "abc123"
    save_pretrained(ours, str(tmp_path / "plain"), vocab_file=vocab_file)  # as a checkpoint from elsewhere
    assert vocab_fingerprint(str(tmp_path / "plain")) == vocab_file_fingerprint(vocab_file, lower_case=True)
    assert vocab_fingerprint(str(tmp_path / "plain")) != vocab_file_fingerprint(vocab_file, lower_case=False)
    save_pretrained(ours, str(tmp_path / "bare"))
    assert vocab_fingerprint(str(tmp_path / "bare")) is None


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_encoder_only_checkpoint_imports_and_reports_initialized_heads(tmp_path, prefix):
    torch.manual_seed(0)
    enc = transformers.BertModel(transformers.BertConfig(**CFG)).eval()
    if prefix:
        state = {prefix + k: v.contiguous() for k, v in enc.state_dict().items()}
        save_file(state, str(tmp_path / "model.safetensors"))
        enc.config.to_json_file(str(tmp_path / "config.json"))
    else:
        enc.save_pretrained(str(tmp_path))  # safetensors by default
    model, report = load_pretrained(str(tmp_path))
    assert report["initialized"] and all(k.startswith("cls.") for k in report["initialized"])
    ids, types, mask = inputs()
    hidden, _ = model.eval().bert(ids, types, mask)
    torch.testing.assert_close(hidden, enc(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state,
                               rtol=1e-5, atol=1e-5)


def test_pickle_checkpoints_are_refused_with_a_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointFormatError, match=r"pytorch_model\.bin: pickle files are not loaded"):
        load_pretrained(str(tmp_path))


def test_foreign_or_mismatched_weights_are_refused(tmp_path):
    ours = build_model(BertConfig(**CFG))
    save_pretrained(ours, str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["hidden_size"], cfg["intermediate_size"] = 64, 128
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointFormatError, match="shapes differ from config.json"):
        load_pretrained(str(tmp_path))
