import pytest
import torch

from pretrain.model import BertConfig, build_model
from pretrain.optim import Lamb, Segments, lr_lambda, parameter_groups


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
    opt = Lamb([{"params": [p], "weight_decay": 0.01}], lr=0.1)
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


def test_segments_cover_a_partition_with_padding_between_pieces():
    seg = Segments.cover([(2, 3, 0), (5, 2, 1)], 9, pad=7, device=torch.device("cpu"))
    assert seg.lengths.tolist() == [2, 3, 2, 2] and seg.ids.tolist() == [7, 0, 1, 7]
    x = torch.arange(9.0)
    assert seg.sum(x).tolist() == [1.0, 9.0, 11.0, 15.0]
    assert seg.spread(torch.tensor([0.0, 1.0, 2.0, 3.0])).tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="overlapping"):
        Segments.cover([(0, 3, 0), (2, 2, 1)], 9, pad=7, device=torch.device("cpu"))


def test_a_flat_partition_steps_as_its_parameters_would_each_with_its_own_ratio():
    # Two parameters and alignment padding in one flat tensor, as ZeRO lays a group out (here on
    # one rank; across ranks the per-parameter sums are all-reduced: tests/integration/test_trainer.py)
    torch.manual_seed(0)
    a, b = torch.randn(6), torch.randn(4) * 5
    ga, gb = torch.randn(6), torch.randn(4)
    whole = [torch.nn.Parameter(a.clone()), torch.nn.Parameter(b.clone())]
    ref = Lamb([{"params": whole, "weight_decay": 0.01}], lr=0.1)
    flat = torch.nn.Parameter(torch.cat([a, b, torch.zeros(2)]))
    opt = Lamb([{"params": [flat], "weight_decay": 0.01}], lr=0.1)
    opt._segments[flat] = Segments.cover([(0, 6, 0), (6, 4, 1)], 12, pad=2, device=flat.device)
    opt._parameters = 3
    for _ in range(3):
        ga, gb = torch.randn(6), torch.randn(4)
        whole[0].grad, whole[1].grad = ga, gb
        flat.grad = torch.cat([ga, gb, torch.zeros(2)])
        ref.step()
        opt.step()
        torch.testing.assert_close(flat.data, torch.cat([whole[0].data, whole[1].data, torch.zeros(2)]))
    assert opt.state[flat]["exp_avg"].shape == (12,) and set(opt.state[flat]) == {"step", "exp_avg", "exp_avg_sq"}


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
