import pytest
import torch

from pretrain.model import BertConfig, build_model
from pretrain.optim import Lamb, lamb_groups, lr_lambda, parameter_groups


def reference_lamb(w, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.01):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps) + wd * w
    r = w.norm() / u.norm() if w.norm() > 0 and u.norm() > 0 else 1.0
    return w - lr * r * u, m, v


def test_matches_the_per_tensor_formula_over_several_steps():
    torch.manual_seed(0)
    w = torch.randn(7, 5)
    p = torch.nn.Parameter(w.clone())
    opt = Lamb([{"params": [p], "weight_decay": 0.01, "full_numel": p.numel()}], lr=0.1)
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t in range(1, 5):
        g = torch.randn(7, 5)
        p.grad = g.clone()
        opt.step()
        w, m, v = reference_lamb(w, g, m, v, t, 0.1)
        torch.testing.assert_close(p.data, w, rtol=1e-6, atol=1e-7)


def test_trust_ratio_is_per_tensor():
    a = torch.nn.Parameter(torch.full((4,), 10.0))
    b = torch.nn.Parameter(torch.full((4,), 0.1))
    opt = Lamb([{"params": [a], "weight_decay": 0.0}, {"params": [b], "weight_decay": 0.0}], lr=0.01)
    a.grad = torch.ones(4)
    b.grad = torch.ones(4)
    opt.step()
    # Adam's first update is ~1 per element for both; LAMB scales it by ||w|| / ||u||
    assert abs((10.0 - a.data[0].item()) / (0.1 - b.data[0].item()) - 100) < 1e-3


def test_groups_one_tensor_each_without_decay_for_bias_and_layernorm():
    model = build_model(BertConfig.named("tiny", vocab_size=64))
    groups = lamb_groups(model, 0.01)
    assert all(len(g["params"]) == 1 and g["full_numel"] == g["params"][0].numel() for g in groups)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        name = names[id(g["params"][0])]
        assert (g["weight_decay"] == 0.0) == (name.endswith("bias") or "LayerNorm" in name)


def test_warmup_then_linear_or_polynomial_decay():
    f = lr_lambda(warmup=10, total=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0
    poly = lr_lambda(warmup=10, total=110, schedule="poly", power=2)
    assert poly(60) == pytest.approx(0.25)


def test_no_weight_decay_on_biases_and_layernorm():
    model = build_model(BertConfig.named("tiny", vocab_size=64))
    decay, no_decay = parameter_groups(model, 0.01)
    assert no_decay["weight_decay"] == 0.0
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())  # tied weight once
    assert all(p.dim() == 1 for p in no_decay["params"])
