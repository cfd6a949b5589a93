import pytest

from pretrain.config import load_config
from pretrain.engine import (
    World,
    _first_host,
    deepspeed_config,
    lr_lambda,
    parameter_groups,
    world_from_env,
)
from pretrain.model import BertConfig, build_model


def test_warmup_then_linear_or_polynomial_decay():
    cfg = load_config("configs/tiny-cpu.yaml", ["optim.warmup_steps=10", "optim.total_steps=110"])
    f = lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0
    poly = lr_lambda(load_config("configs/tiny-cpu.yaml", ["optim.warmup_steps=10", "optim.total_steps=110",
                                                           "optim.schedule=poly", "optim.power=2"]))
    assert poly(60) == pytest.approx(0.25)


def test_no_weight_decay_on_biases_and_layernorm():
    model = build_model(BertConfig.named("tiny", vocab_size=64))
    decay, no_decay = parameter_groups(model, 0.01)
    assert no_decay["weight_decay"] == 0.0
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())  # tied weight once
    assert all(p.dim() == 1 for p in no_decay["params"])


def test_deepspeed_config_carries_batch_arithmetic_precision_and_zero():
    cfg = load_config("configs/tiny-cpu.yaml", ["deepspeed.precision=fp16", "deepspeed.zero_stage=3",
                                                "deepspeed.offload_optimizer=true"])
    d = deepspeed_config(cfg, World(0, 0, 2))
    assert d["train_batch_size"] == 16 and d["gradient_accumulation_steps"] == 1
    assert d["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert d["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": False}}
    assert d["optimizer"]["params"]["torch_adam"] is True  # no JIT build


def test_srun_variables_become_torch_distributed_ones(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-10],login")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    w = world_from_env()
    assert w == World(rank=5, local_rank=1, size=8)
    import os

    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] == str(29500 + 242)
    assert _first_host("nodeA") == "nodeA" and _first_host("n[1,3]") == "n1"
