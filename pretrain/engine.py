"""The DeepSpeed engine around the model: ZeRO stage, precision, optimizer, schedule.

Distributed start-up lives here too: rank and address from torchrun/deepspeed
variables, or from Slurm's (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``)
under ``srun``, which DeepSpeed's own discovery does not read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from pretrain.config import TrainConfig


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int


def world_from_env() -> World:
    """RANK/WORLD_SIZE/LOCAL_RANK, filled from Slurm's variables when launched by srun."""
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env:
        env["RANK"] = env["SLURM_PROCID"]
        env["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        if "MASTER_ADDR" not in env:
            nodes = env.get("SLURM_JOB_NODELIST", "127.0.0.1")
            env["MASTER_ADDR"] = _first_host(nodes)
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000))
    env.setdefault("RANK", "0")
    env.setdefault("WORLD_SIZE", "1")
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")
    return World(int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"]))


def _first_host(nodelist: str) -> str:
    """First host of a Slurm node list such as ``node[03-05,07],other``."""
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        return prefix + rest.split("-")[0].split(",")[0].rstrip("]")
    return head


def init_distributed(cfg: TrainConfig, world: World) -> None:
    import deepspeed

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(world.local_rank)
    else:
        _skip_shm_comm_op()
    deepspeed.init_distributed(
        dist_backend="nccl" if on_gpu else "gloo",
        timeout=timedelta(minutes=cfg.deepspeed.dist_timeout_minutes),
    )


def _skip_shm_comm_op() -> None:
    """DeepSpeed JIT-builds its shared-memory all-reduce (~30 s) whenever communication
    starts on the CPU accelerator; only inference uses it. Declare it unavailable."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def lr_lambda(cfg: TrainConfig):
    """Linear warmup to the peak, then linear (power 1) or polynomial decay to zero."""
    warmup, total, power = cfg.optim.warmup_steps, cfg.optim.total_steps, cfg.optim.power
    if cfg.optim.schedule == "linear":
        power = 1.0

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1 - (step - warmup) / max(1, total - warmup)) ** power

    return f


def deepspeed_config(cfg: TrainConfig, world: World) -> dict:
    d = cfg.deepspeed
    on_gpu = torch.cuda.is_available()
    conf: dict = {
        "train_batch_size": d.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.data.micro_batch_size,
        "gradient_accumulation_steps": cfg.accumulation_steps(world.size),
        "gradient_clipping": cfg.optim.grad_clip,
        "steps_per_print": 10**9,
        "zero_optimization": {"stage": d.zero_stage},
    }
    if cfg.optim.name == "adamw":
        conf["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": cfg.optim.lr, "betas": list(cfg.optim.betas), "eps": cfg.optim.eps,
                       "weight_decay": cfg.optim.weight_decay,
                       # torch's AdamW: no JIT build (DeepSpeed's FusedAdam needs one); fused kernel on GPU
                       "torch_adam": True, **({"fused": True} if on_gpu else {})},
        }
    else:
        conf["zero_allow_untested_optimizer"] = True  # our LAMB is ZeRO-aware (pretrain.lamb)
    if d.offload_optimizer:
        conf["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if d.precision == "bf16":
        conf["bf16"] = {"enabled": True}
    elif d.precision == "fp16":
        conf["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "hysteresis": 2,
                        "min_loss_scale": 1}
    return conf


def decayed_parameters(model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, bool]]:
    """Each parameter once (tied weights appear once) and whether weight decay applies:
    BERT's rule, none on biases and LayerNorm weights."""
    out, seen = [], set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append((p, not (name.endswith("bias") or "LayerNorm" in name)))
    return out


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    params = decayed_parameters(model)
    return [{"params": [p for p, d in params if d], "weight_decay": weight_decay},
            {"params": [p for p, d in params if not d], "weight_decay": 0.0}]


def build_engine(cfg: TrainConfig, model: torch.nn.Module, world: World):
    import deepspeed

    optimizer = None
    if cfg.optim.name == "lamb":
        from pretrain.lamb import Lamb, lamb_groups

        groups = lamb_groups(model, cfg.optim.weight_decay)
        optimizer = Lamb(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)
    else:
        groups = parameter_groups(model, cfg.optim.weight_decay)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=groups,
        optimizer=optimizer,
        config=deepspeed_config(cfg, world),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg)),
    )
    return engine


def grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return float("nan")
    norm = float(norm)
    return norm if math.isfinite(norm) else float("nan")
