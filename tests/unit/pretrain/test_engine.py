
from pretrain.config import load_config
from pretrain.engine import deepspeed_config


def test_deepspeed_config_carries_batch_arithmetic_precision_and_zero():
    cfg = load_config("configs/tiny-cpu.yaml", ["deepspeed.precision=fp16", "deepspeed.zero_stage=3",
                                                "deepspeed.offload_optimizer=true"])
    d = deepspeed_config(cfg, world_size=2, on_gpu=False)
    assert d["train_batch_size"] == 16 and d["gradient_accumulation_steps"] == 1
    assert d["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert d["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": False}}
    assert d["optimizer"]["params"]["torch_adam"] is True  # no JIT build
