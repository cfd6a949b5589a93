"""Optimizers, the weight-decay rule and the learning-rate schedule: everything that updates weights.

* :func:`decayed_parameters`: BERT's weight-decay rule (none on biases and LayerNorm),
  used by every optimizer's parameter groups;
* :func:`parameter_groups`: two groups, with and without weight decay (AdamW and LAMB);
* :class:`Lamb`: LAMB that stays correct under ZeRO partitioning (below);
* :func:`lr_lambda`: linear warmup, then linear or polynomial decay to zero.

LAMB (You et al., 2019) scales each tensor's Adam update by a trust ratio ``||w|| / ||update||``.
ZeRO (stages 1-3) flattens every parameter group and hands each rank a slice of the flat
buffer, so a norm computed on what the optimizer sees mixes parameters and misses their
other pieces (DeepSpeed's own LAMB is not ZeRO-aware for that reason). Here LAMB has the
same two groups as AdamW (few, large groups: ZeRO's per-group work and checks stay few,
and every rank holds a piece of each), and :meth:`Lamb.attach` reads from the ZeRO
optimizer where each parameter's piece lies in each flat partition. A step sums squared
norms per parameter piece (one segmented reduction per partition), all-reduces them across
the data-parallel ranks in one collective for all parameters, and spreads each parameter's
ratio back over its piece: every rank computes the trust ratios of unsharded LAMB, in a
fixed number of kernels per group and with no host synchronisation. The moments are named
as DeepSpeed's universal checkpoints expect (``exp_avg``, ``exp_avg_sq``).

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
    """Two groups, with and without weight decay (AdamW and LAMB)."""
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


class Lamb(torch.optim.Optimizer):
    """LAMB whose trust ratios are each parameter's, whatever flat tensors it is given to step.

    Without ZeRO it steps the model's parameters, each its own segment. Under ZeRO,
    :meth:`attach` tells it how the flat partitions it steps are cut into parameters.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._segments: dict[torch.Tensor, Segments] = {}
        self._parameters = 0  # parameters of the model, when attached; the norms' all-reduce spans them

    def attach(self, zero: object, model: nn.Module) -> None:
        """Learn how ``zero`` (DeepSpeed's ZeRO-1/2 or ZeRO-3 optimizer wrapping this one) lays the
        model's parameters out in the flat partitions it hands to :meth:`step`. Other wrappers
        (ZeRO-0 with bf16/fp16) step each parameter as its own tensor and need nothing."""
        index = {p: i for i, (p, _) in enumerate(decayed_parameters(model))}
        pad = len(index)  # the segment of ZeRO's alignment padding: zeros, its ratio unused
        if hasattr(zero, "single_partition_of_fp32_groups"):  # ZeRO-1/2: pieces of each group's params
            for flat, group in zip(zero.single_partition_of_fp32_groups, zero.bit16_groups, strict=True):
                pieces = sorted((p._hp_mapping.hp_fragment_address.start, p._hp_mapping.hp_fragment_address.numel,
                                 index[p]) for p in group if p._hp_mapping is not None)
                self._segments[flat] = Segments.cover(pieces, flat.numel(), pad, flat.device)
        elif hasattr(zero, "fp32_partitioned_groups_flat"):  # ZeRO-3: each param's partition, in order
            for flat, group, parts in zip(zero.fp32_partitioned_groups_flat, zero.fp16_groups,
                                          zero.fp16_partitioned_groups, strict=True):
                pieces, start = [], 0
                for p, part in zip(group, parts, strict=True):
                    pieces.append((start, part.numel(), index[p]))
                    start += part.numel()
                self._segments[flat] = Segments.cover(pieces, flat.numel(), pad, flat.device)
        else:
            return
        self._parameters = pad + 1

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        work = []
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                if torch.is_tensor(state["step"]):  # as a universal checkpoint restores it (a CPU tensor)
                    state["step"] = int(state["step"])
                state["step"] += 1
                t = state["step"]
                g = p.grad.float()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                u = (m / (1 - b1**t)).div_((v / (1 - b2**t)).sqrt_().add_(group["eps"]))
                if group["weight_decay"]:
                    u.add_(p.float(), alpha=group["weight_decay"])
                work.append((p, u, group["lr"]))
        if not work:
            return loss

        partitioned = self._parameters > 0
        device = work[0][0].device
        sums = torch.zeros(self._parameters if partitioned else len(work), 2, dtype=torch.float32, device=device)
        for k, (p, u, _) in enumerate(work):
            seg = self._segments.get(p)
            if seg is None:
                if partitioned:
                    raise RuntimeError("LAMB was given a tensor that is not one of the ZeRO partitions it was "
                                       "attached to")
                sums[k, 0] = p.float().pow(2).sum()
                sums[k, 1] = u.pow(2).sum()
            else:
                per = torch.stack([seg.sum(p.float().pow(2)), seg.sum(u.pow(2))], dim=1)
                sums.index_add_(0, seg.ids, per)
        if partitioned and dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)  # each parameter's pieces, summed over the ranks holding them
        norms = sums.sqrt()
        ratio = torch.where((norms[:, 0] > 0) & (norms[:, 1] > 0), norms[:, 0] / norms[:, 1],
                            torch.ones_like(norms[:, 0]))
        for k, (p, u, lr) in enumerate(work):
            seg = self._segments.get(p)
            r = ratio[k] if seg is None else seg.spread(ratio[seg.ids])  # stays on the device: no sync
            p.add_(u.mul_(r).to(p.dtype), alpha=-lr)
        return loss


class Segments:
    """A flat tensor cut into runs of elements, each of one parameter: ``lengths`` and ``ids``
    (the parameter of each run), on the tensor's device; sums per run and per-run values spread
    back over the elements, without a host synchronisation."""

    def __init__(self, lengths: list[int], ids: list[int], device: torch.device):
        self.numel = sum(lengths)
        self.lengths = torch.tensor(lengths, dtype=torch.long, device=device)
        self.ids = torch.tensor(ids, dtype=torch.long, device=device)

    @classmethod
    def cover(cls, pieces: list[tuple[int, int, int]], numel: int, pad: int, device: torch.device) -> Segments:
        """Segments of a tensor of ``numel`` elements from sorted ``(start, length, id)`` pieces; the
        gaps between them (alignment padding) get id ``pad``."""
        lengths, ids, at = [], [], 0
        for start, length, i in pieces:
            if start < at:
                raise ValueError(f"overlapping pieces at element {start}")
            if start > at:
                lengths.append(start - at)
                ids.append(pad)
            lengths.append(length)
            ids.append(i)
            at = start + length
        if at > numel:
            raise ValueError(f"pieces end at element {at}, beyond the tensor's {numel}")
        if at < numel:
            lengths.append(numel - at)
            ids.append(pad)
        return cls(lengths, ids, device)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.segment_reduce(x.reshape(-1), "sum", lengths=self.lengths, unsafe=True)

    def spread(self, per_segment: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(per_segment, self.lengths, output_size=self.numel)
