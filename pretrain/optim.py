"""Optimizers, the weight-decay rule and the learning-rate schedule: everything that updates weights.

* :func:`decayed_parameters`: BERT's weight-decay rule (none on biases and LayerNorm),
  used by every optimizer's parameter groups;
* :func:`parameter_groups` (AdamW: two groups) and :func:`lamb_groups` (LAMB: one per tensor);
* :class:`Lamb`: LAMB that stays correct under ZeRO partitioning (below);
* :func:`lr_lambda`: linear warmup, then linear or polynomial decay to zero.

LAMB (You et al., 2019) scales each tensor's Adam update by a trust ratio ``||w|| / ||update||``.
ZeRO (stages 1-3, and DeepSpeed's bf16 optimizer) flattens every parameter group and
hands each rank a slice of the flat buffer, so a per-tensor norm computed on what
the optimizer sees is wrong (DeepSpeed's own LAMB is not ZeRO-aware for that reason).
Here every parameter gets its own group (:func:`lamb_groups`) and the group records
the tensor's full size. A group whose tensor is smaller than that is a shard (ZeRO
pads shards with zeros, which add nothing to a norm): its squared norms are summed
across the data-parallel ranks in one all-reduce per step for all parameters, so
every rank computes the same trust ratio as unsharded LAMB.

Update (bias-corrected Adam moments, decoupled weight decay, as NVIDIA's LAMB):
``u = m_hat / (sqrt(v_hat) + eps) + wd * w``; ``w -= lr * r * u`` with
``r = ||w|| / ||u||`` (1 where either norm is 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn


def decayed_parameters(model: nn.Module) -> list[tuple[nn.Parameter, bool]]:
    """Each parameter once (tied weights appear once) and whether weight decay applies:
    BERT's rule, none on biases and LayerNorm weights."""
    out, seen = [], set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append((p, not (name.endswith("bias") or "LayerNorm" in name)))
    return out


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups, with and without weight decay (AdamW)."""
    params = decayed_parameters(model)
    return [{"params": [p for p, d in params if d], "weight_decay": weight_decay},
            {"params": [p for p, d in params if not d], "weight_decay": 0.0}]


def lr_lambda(warmup: int, total: int, schedule: str = "linear", power: float = 1.0) -> Callable[[int], float]:
    """Multiplier of the peak LR at a step: linear warmup over ``warmup`` steps, then linear
    (``schedule="linear"``) or polynomial (``"poly"``, exponent ``power``) decay to zero at ``total``."""
    if schedule == "linear":
        power = 1.0

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1 - (step - warmup) / max(1, total - warmup)) ** power

    return f


def lamb_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """One group per parameter (so ZeRO shards never mix tensors); no decay on bias/LayerNorm."""
    return [{"params": [p], "weight_decay": weight_decay if decays else 0.0, "full_numel": p.numel()}
            for p, decays in decayed_parameters(model)]


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, full_numel=None))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        updates, sums, sharded = [], [], []
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    updates.append(None)
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, dtype=torch.float32)
                    state["v"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                g = p.grad.float()
                state["m"].mul_(b1).add_(g, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = state["m"] / (1 - b1 ** state["step"])
                v_hat = state["v"] / (1 - b2 ** state["step"])
                u = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    u.add_(p.float(), alpha=group["weight_decay"])
                updates.append(u)
                sums.append(torch.stack([p.float().pow(2).sum(), u.pow(2).sum()]))
                full = group.get("full_numel")
                sharded.append(full is not None and p.numel() != full)

        if not sums:
            return loss
        sq = torch.stack(sums)  # (n, 2): squared norms of w and u
        if any(sharded) and dist.is_available() and dist.is_initialized():
            mask = torch.tensor(sharded, dtype=sq.dtype, device=sq.device)[:, None]
            total = sq * mask
            dist.all_reduce(total)  # only shards are summed; whole tensors are the same on every rank
            sq = total + sq * (1 - mask)
        norms = sq.sqrt()
        ratio = torch.where((norms[:, 0] > 0) & (norms[:, 1] > 0), norms[:, 0] / norms[:, 1], torch.ones_like(norms[:, 0]))

        i = 0
        k = 0
        for group in self.param_groups:
            for p in group["params"]:
                u = updates[i]
                i += 1
                if u is None:
                    continue
                p.add_(u.mul_(ratio[k]).to(p.dtype), alpha=-group["lr"])  # ratio stays on the device: no sync
                k += 1
        return loss
