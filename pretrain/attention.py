"""The one attention boundary: which tokens attend to which, and the kernel that computes it.

A batch's rows hold one sequence each (padded) or several (packed, :mod:`preprocess.packing`).
:func:`boundary` turns the batch's description into a :class:`Sequences` once per forward,
choosing the kernel there; :func:`attention` is the only attention call in the model:

* **no padding, one sequence per row**: ``scaled_dot_product_attention`` without a mask
  (FlashAttention on GPU);
* **packed or padded rows on a GPU** (CUDA, bf16/fp16, head size a multiple of 8 up to 256):
  FlashAttention's variable-length kernel over the flattened ``(B*S, nh, hs)`` tokens, each
  sequence (and each row's padding) its own block by ``cu_seqlens``: nothing is re-padded and
  no FLOP is spent between sequences. torch's ``varlen_attn`` fixes dropout at 0, so the
  forward and backward FlashAttention ops are wrapped here in one autograd function that
  takes BERT's attention dropout (:class:`_VarlenAttention`);
* **otherwise** (CPU, fp32, the tests): the same function by SDPA with a block-diagonal mask
  built from ``sequence_ids`` (a token attends to the tokens of its own sequence; padding to
  padding, whose outputs nobody reads);
* **the plain path** (an exported model, transformers parity): a (B, S) padding mask.

:func:`planned_flash` stands in for the GPU kernels when ``python -m pretrain plan`` traces a step on a
CPU without data (:mod:`pretrain.memory`): it allocates what FlashAttention keeps and makes, and
computes nothing.

Shapes: B batch rows, S row length, nh heads, hs head size, T = B * S tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Sequences:
    """Which tokens attend to which, in the form the chosen kernel takes; None everywhere: all of a row."""

    mask: torch.Tensor | None = None  # (B, 1, 1, S) padding or (B, 1, S, S) block-diagonal, True = attend
    cu_seqlens: torch.Tensor | None = None  # (N + 1,) int32 boundaries in the flattened B*S tokens (varlen kernel)
    max_seqlen: int = 0


def varlen_supported(x: torch.Tensor, head_size: int) -> bool:
    """FlashAttention's variable-length kernel: CUDA (sm80+), half precision, head size % 8 == 0 and <= 256."""
    # get_device_properties: torch.compile folds it to a constant (no graph break)
    return (x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and head_size % 8 == 0 and head_size <= 256
            and torch.cuda.get_device_properties(x.device).major >= 8)


def boundary(x: torch.Tensor, head_size: int, attention_mask: torch.Tensor | None = None,
             sequence_ids: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None) -> Sequences:
    """The batch's :class:`Sequences` for hidden states ``x`` (B, S, H): from ``sequence_ids`` (B, S), 1.. for
    each sequence of a row and 0 for padding, with their ``cu_seqlens`` (the collator's), or from a plain
    ``attention_mask`` (B, S), 1 for real tokens; neither: every token of a row attends to all of it."""
    if sequence_ids is not None:
        if cu_seqlens is not None and varlen_supported(x, head_size):
            return Sequences(cu_seqlens=cu_seqlens.to(torch.int32), max_seqlen=x.shape[1])
        return Sequences(mask=(sequence_ids[:, None, :, None] == sequence_ids[:, None, None, :]))  # (B, 1, S, S)
    if attention_mask is not None:
        return Sequences(mask=attention_mask.bool()[:, None, None, :])
    return Sequences()


_PLANNING = {"flash": False}  # set by planned_flash


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqs: Sequences, dropout_p: float) -> torch.Tensor:
    """(B, S, nh, hs) x3 -> (B, S, nh, hs)."""
    b, s, nh, hs = q.shape
    if _PLANNING["flash"]:
        return _PlannedFlash.apply(q, k, v)
    if seqs.cu_seqlens is not None:
        flat = lambda t: t.reshape(b * s, nh, hs)  # noqa: E731 (T, nh, hs)
        y = _VarlenAttention.apply(flat(q), flat(k), flat(v), seqs.cu_seqlens, seqs.max_seqlen, dropout_p)
        return y.view(b, s, nh, hs)
    heads = lambda t: t.transpose(1, 2)  # noqa: E731 (B, nh, S, hs)
    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=seqs.mask, dropout_p=dropout_p)
    return y.transpose(1, 2)


class _VarlenAttention(torch.autograd.Function):
    """FlashAttention's variable-length forward and backward (torch's own ops), with dropout.

    The forward returns the random state its dropout used; the backward replays it, so the
    gradients are those of the mask the forward drew.
    """

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen: int, dropout_p: float):  # (T, nh, hs) x3
        out, lse, rng_state, unused, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, False, False)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens, rng_state, unused)
        ctx.max_seqlen, ctx.dropout_p = max_seqlen, dropout_p
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, cu_seqlens, rng_state, unused = ctx.saved_tensors
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad.contiguous(), q, k, v, out, lse, cu_seqlens, cu_seqlens, ctx.max_seqlen, ctx.max_seqlen,
            ctx.dropout_p, False, rng_state, unused)
        return dq, dk, dv, None, None, None


class planned_flash:  # noqa: N801 (a context manager, used as ``with planned_flash():``)
    """Within it, :func:`attention` allocates what FlashAttention's forward and backward (dense or
    variable-length, with or without dropout: the same tensors) keep and make, from the shapes alone.
    For the planner's traces on fake tensors, never for training: its outputs hold no values."""

    def __enter__(self) -> planned_flash:
        _PLANNING["flash"] = True
        return self

    def __exit__(self, *exc) -> None:
        _PLANNING["flash"] = False


class _PlannedFlash(torch.autograd.Function):
    """Forward: the output (B, S, nh, hs) and the softmax's log-sum-exp (B, nh, S) in fp32, kept with q, k
    and v for the backward (dropout is replayed from a random state, not kept as a mask). Backward: dq,
    dk, dv, and FlashAttention-2's fp32 accumulator for dq and its fp32 row sums (B, nh, S), freed after."""

    @staticmethod
    def forward(ctx, q, k, v):
        b, s, nh, hs = q.shape
        out = q.new_empty(b, s, nh, hs)
        lse = q.new_empty(b, nh, s, dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved_tensors
        dq_accum, row_sums = torch.empty_like(q, dtype=torch.float32), torch.empty_like(lse)  # noqa: F841
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
