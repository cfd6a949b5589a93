"""The model is exactly transformers' BertForPreTraining, computed differently."""

import pytest
import torch

from pretrain.model import (
    BertConfig,
    BertForPreTraining,
    build_model,
    flops_per_token,
    init_weights,
    set_activation_checkpointing,
)

transformers = pytest.importorskip("transformers")

CFG = dict(vocab_size=211, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
           max_position_embeddings=64)


def hf_model(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    hc = transformers.BertConfig(**CFG, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                 attn_implementation="eager")
    return transformers.BertForPreTraining(hc)


def ours_from(hf, dropout=0.0):
    m = BertForPreTraining(BertConfig(**CFG, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    m.load_state_dict(hf.state_dict(), strict=True)
    return m


def batch(b=4, s=24, p=5, pad=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, CFG["vocab_size"], (b, s), generator=g)
    types = (torch.arange(s) >= s // 2).long().expand(b, s).clone()
    mask = torch.ones(b, s, dtype=torch.long)
    if pad:
        for i in range(b):
            mask[i, s - 3 * i :] = 0
    real = mask.sum(1).tolist()  # masked positions lie inside each row's real tokens, as in the data
    positions = torch.stack([torch.randperm(n - 2, generator=g)[:p] + 1 for n in real])
    labels = torch.randint(5, CFG["vocab_size"], (b, p), generator=g)
    labels[0, -2:] = -100  # padding of the prediction list
    positions[0, -2:] = 0
    nsp = torch.tensor([0, 1] * (b // 2))
    return ids, types, mask, positions, labels, nsp


def dense_labels(ids, positions, labels):
    dense = torch.full_like(ids, -100)
    for i in range(ids.shape[0]):
        for p, lab in zip(positions[i].tolist(), labels[i].tolist()):
            if lab != -100:
                dense[i, p] = lab
    return dense


def test_state_dict_names_match_transformers_both_ways():
    hf = hf_model()
    ours = ours_from(hf)
    assert set(ours.state_dict()) == set(hf.state_dict())
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


def test_outputs_losses_and_gradients_match_transformers():
    hf = hf_model()
    ours = ours_from(hf)
    ids, types, mask, positions, labels, nsp = batch()
    ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=dense_labels(ids, positions, labels),
             next_sentence_label=nsp, output_hidden_states=True)
    out = ours(ids, types, mask, positions, labels, nsp)
    real = mask.bool()
    torch.testing.assert_close(out.last_hidden_state[real], ref.hidden_states[-1][real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, rtol=1e-5, atol=1e-5)
    keep = labels != -100
    rows = torch.arange(ids.shape[0])[:, None].expand_as(positions)[keep]
    torch.testing.assert_close(out.mlm_logits[keep.reshape(-1)], ref.prediction_logits[rows, positions[keep]],
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    ref.loss.backward()
    hf_params = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, hf_params[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    assert out.mlm_total.item() == keep.sum().item()
    assert out.nsp_total.item() == 4


def test_sparse_head_equals_dense_head_on_every_prediction_slot():
    model = build_model(BertConfig(**CFG)).eval()
    ids, types, mask, positions, labels, nsp = batch()
    sparse = model(ids, types, mask, positions, labels, nsp).mlm_logits
    dense = model(ids, types, mask).mlm_logits  # (B, S, V)
    rows = torch.arange(ids.shape[0])[:, None].expand_as(positions)
    assert sparse.shape == (positions.numel(), dense.shape[-1])  # static: B x P slots, padding included
    torch.testing.assert_close(sparse, dense[rows, positions].reshape(sparse.shape))


@pytest.mark.parametrize("every", [1, 2])
def test_checkpointing_gives_identical_gradients_with_dropout(every):
    def grads(ckpt):
        torch.manual_seed(0)
        model = build_model(BertConfig(**CFG, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
        set_activation_checkpointing(model, ckpt)
        torch.manual_seed(123)
        model(*batch()).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, ckpt = grads(0), grads(every)
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=0, atol=0, msg=n)


def saved_activation_bytes(model, inputs) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*inputs).loss.backward()
    return total


def test_checkpointing_saves_far_less_activation_memory():
    model = build_model(BertConfig(**{**CFG, "num_hidden_layers": 6}))
    inputs = batch(b=8, s=48)
    plain = saved_activation_bytes(model, inputs)
    set_activation_checkpointing(model, 1)
    ckpt = saved_activation_bytes(model, inputs)
    assert ckpt * 3 < plain


def sequences(lengths, seed=2):
    """Rows as the dataset gives them: [CLS] A [SEP] B [SEP] with masked positions and an NSP label."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = torch.randint(5, CFG["vocab_size"], (n,), generator=g)
        ids[0], ids[n // 2], ids[-1] = 2, 3, 3
        k = max(1, n // 6)
        positions = (torch.randperm(n - 2, generator=g)[:k] + 1).sort().values
        out.append({"input_ids": ids.numpy(), "token_type_ids": (torch.arange(n) > n // 2).to(torch.int8).numpy(),
                    "masked_lm_positions": positions.numpy(),
                    "masked_lm_labels": torch.randint(5, CFG["vocab_size"], (k,), generator=g).numpy(),
                    "next_sentence_label": i % 2})
    return out


def laid_out(rows, packed_rows=None, capacity=0):
    """The collator's batch of ``rows``: one per row, or packed into ``packed_rows`` (lists of indices)."""
    from pretrain.data import Collator, Layout, MicroBatch

    total = sum(len(r["masked_lm_positions"]) for r in rows)
    if packed_rows is None:
        order, slots, layout = list(range(len(rows))), list(range(len(rows))), Layout(0, 6)
    else:
        order = [i for r in packed_rows for i in r]
        slots = [s for s, r in enumerate(packed_rows) for _ in r]
        layout = Layout(0, 6, rows=len(packed_rows) + 1, capacity=capacity, max_per_row=3)  # + an empty row
    plan = MicroBatch(tuple((i, 0) for i in order), tuple(slots), 0, 0, 0, 1, total, len(rows))
    return Collator(layout)((plan, [rows[i] for i in order]))["inputs"], plan


def normalised_loss(out, plan):
    return out.mlm_loss_sum / plan.masked_tokens + out.nsp_loss_sum / plan.sequences


def test_a_packed_batch_equals_the_same_sequences_unpacked():
    """Loss, accuracies and gradients of packed rows equal those of the same sequences one per row."""
    hf = hf_model()
    plain, packed = ours_from(hf), ours_from(hf)
    rows = sequences([20, 9, 14, 30, 6, 11, 25])
    a_batch, plan = laid_out(rows)
    b_batch, _ = laid_out(rows, packed_rows=[[0, 1, 4], [3], [6, 5], [2]], capacity=36)
    assert b_batch["input_ids"].shape == (5, 36) and b_batch["cls_positions"].shape == (5, 3)
    a, b = plain(**a_batch), packed(**b_batch)
    for name in ("mlm_loss_sum", "nsp_loss_sum", "mlm_correct", "mlm_total", "nsp_correct", "nsp_total"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-5, msg=name)
    assert int(b.nsp_total) == 7 and int(b.mlm_total) == plan.masked_tokens
    normalised_loss(a, plan).backward()
    normalised_loss(b, plan).backward()
    for (n, p), q in zip(plain.named_parameters(), packed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_a_sequence_is_unchanged_by_what_is_packed_beside_it():
    model = build_model(BertConfig(**CFG)).eval()
    rows = sequences([12, 20, 7])
    alone, _ = laid_out(rows[:1], packed_rows=[[0]], capacity=40)
    beside, _ = laid_out(rows, packed_rows=[[1, 0, 2]], capacity=40)  # sequence 0 at offset 20
    with torch.no_grad():
        x = model(**alone).last_hidden_state[0, :12]
        y = model(**beside).last_hidden_state[0, 20:32]
        nsp_alone, nsp_beside = model(**alone).nsp_logits[0], model(**beside).nsp_logits[1]
    torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nsp_beside, nsp_alone, rtol=1e-5, atol=1e-5)


def test_no_mask_equals_all_ones_mask():
    model = build_model(BertConfig(**CFG)).eval()
    ids, types, _, positions, labels, nsp = batch(pad=False)
    a = model(ids, types, None, positions, labels, nsp)
    b = model(ids, types, torch.ones_like(ids), positions, labels, nsp)
    torch.testing.assert_close(a.loss, b.loss)


def test_meta_build_initialises_every_weight_as_bert():
    model = build_model(BertConfig.named("mini", vocab_size=3000))
    assert not any(p.is_meta for p in model.parameters())
    q = model.bert.encoder.layer[0].attention.self.query
    assert abs(q.weight.std().item() - 0.02) < 0.001 and q.bias.abs().sum() == 0
    ln = model.bert.encoder.layer[3].output.LayerNorm
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)
    assert torch.all(model.bert.embeddings.word_embeddings.weight[0] == 0)  # [PAD]
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    init_weights(model)  # idempotent in structure: still tied
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_autocast_is_finite_and_close(dtype):
    model = build_model(BertConfig(**CFG))
    inputs = batch()
    full = model(*inputs).loss
    with torch.autocast("cpu", dtype=dtype):
        low = model(*inputs)
    assert low.loss.dtype == torch.float32  # losses are computed in fp32
    assert torch.isfinite(low.loss) and abs(low.loss.item() - full.item()) < 0.05
    low.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_named_sizes_and_config_validation():
    large = BertConfig.named("large")
    assert (large.num_hidden_layers, large.hidden_size, large.num_attention_heads) == (24, 1024, 16)
    assert BertConfig.named("base").intermediate_size == 3072
    with pytest.raises(ValueError, match="unknown model size"):
        BertConfig.named("huge")
    with pytest.raises(ValueError, match="not a multiple"):
        BertConfig(hidden_size=100, num_attention_heads=3)
    # BERT-Large: ~335M parameters (with the MLM head's transform and bias)
    with torch.device("meta"):  # shapes only: nothing allocated or initialised
        model = BertForPreTraining(large)
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert 334e6 < n < 337e6
    assert flops_per_token(large, 128, 20) > 6 * 300e6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_as_an_engine_runs_them(dtype):
    model = build_model(BertConfig(**CFG)).to(dtype)
    ids, types, mask, positions, labels, nsp = batch()
    out = model(ids, types, mask, positions, labels, nsp)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
