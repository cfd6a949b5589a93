"""The DeepSpeed engine around the model: ZeRO stage, precision, optimizer, schedule.

This module builds the engine and nothing else: the process group is started by
:mod:`pretrain.distributed`, the optimizers and schedule come from :mod:`pretrain.optim`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from pretrain.config import TrainConfig
from pretrain.optim import Lamb, lr_lambda, parameter_groups

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

FP16_MIN_LOSS_SCALE = 1  # fp16: the dynamic loss scale goes no lower (train.fp16_min_scale_steps watches it)

def deepspeed_config(cfg: TrainConfig, world_size: int, on_gpu: bool | None = None,
                     load_universal: bool = False) -> dict:
    """DeepSpeed's JSON config for ``cfg`` at ``world_size`` ranks; ``load_universal``: the engine
    will load a universal checkpoint (:mod:`pretrain.checkpoint`)."""
    d = cfg.deepspeed
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    accumulation = cfg.accumulation_steps(world_size)
    conf: dict = {
        # the trainer marks each step's last micro-batch itself (packed steps have varying counts), so
        # DeepSpeed's batch arithmetic only has to be consistent
        "train_batch_size": cfg.data.micro_batch_size * accumulation * world_size,
        "train_micro_batch_size_per_gpu": cfg.data.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": cfg.optim.grad_clip,
        "steps_per_print": 10**9,
        "zero_optimization": {"stage": d.zero_stage},
    }
    if load_universal:
        conf["checkpoint"] = {"load_universal": True}
    if cfg.optim.name == "adamw":
        conf["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": cfg.optim.lr, "betas": list(cfg.optim.betas), "eps": cfg.optim.eps,
                       "weight_decay": cfg.optim.weight_decay,
                       # torch's AdamW: no JIT build (DeepSpeed's FusedAdam needs one); fused kernel on GPU
                       "torch_adam": True, **({"fused": True} if on_gpu else {})},
        }
    else:
        conf["zero_allow_untested_optimizer"] = True  # our LAMB is ZeRO-aware (pretrain.optim)
    if d.offload_optimizer:
        conf["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if d.precision == "bf16":
        conf["bf16"] = {"enabled": True}
    elif d.precision == "fp16":
        conf["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "hysteresis": 2,
                        "min_loss_scale": FP16_MIN_LOSS_SCALE}
    return conf


def build_engine(cfg: TrainConfig, model: torch.nn.Module, world_size: int,
                 load_universal: bool = False) -> DeepSpeedEngine:
    """``deepspeed.initialize`` with our parameter groups, optimizer and schedule."""
    import deepspeed

    o = cfg.optim
    groups = parameter_groups(model, o.weight_decay)
    optimizer = Lamb(groups, lr=o.lr, betas=o.betas, eps=o.eps) if o.name == "lamb" else None
    schedule = lr_lambda(o.warmup_steps, o.total_steps, o.schedule, o.power)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=groups,
        optimizer=optimizer,
        config=deepspeed_config(cfg, world_size, load_universal=load_universal),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
    )
    if optimizer is not None:
        optimizer.attach(engine.optimizer, model)
    return engine


def grad_norm(engine: DeepSpeedEngine) -> float:
    """The last step's global gradient norm; NaN where DeepSpeed does not report one."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        return float("nan")
    norm = float(norm)
    return norm if math.isfinite(norm) else float("nan")
