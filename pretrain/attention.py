"""The one attention boundary, and the unpadding helpers it needs.

Every attention call in the model goes through :func:`attention`. It calls
``torch.nn.functional.scaled_dot_product_attention``, which on GPU picks
FlashAttention or the memory-efficient kernel. A dense boolean padding mask rules
FlashAttention out, so:

* a batch without padding passes ``mask=None`` (the collator knows this on the host,
  without a device sync);
* a padded batch can instead run *unpadded*: tokens of all sequences packed into
  ``(total_nnz, hidden)`` for every dense layer (no compute spent on padding), and
  re-padded only around the attention product itself.

Shapes: B batch, S sequence, nh heads, hs head size, H = nh * hs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    """(B, nh, S, hs) x3 -> (B, nh, S, hs). ``mask``: (B, 1, 1, S) bool, True = attend, or None."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


@dataclass
class Unpadded:
    """Where the real tokens of a padded batch are."""

    indices: torch.Tensor  # (total_nnz,) flat indices into B * S
    batch: int
    seq: int
    mask: torch.Tensor  # (B, 1, 1, S) bool, for the attention product


def unpad_info(attention_mask: torch.Tensor) -> Unpadded:
    """attention_mask: (B, S), 1 for real tokens."""
    b, s = attention_mask.shape
    indices = torch.nonzero(attention_mask.reshape(-1), as_tuple=False).flatten()
    return Unpadded(indices, b, s, attention_mask.bool()[:, None, None, :])


def unpad(x: torch.Tensor, info: Unpadded) -> torch.Tensor:
    """(B, S, H) -> (total_nnz, H)."""
    return x.reshape(info.batch * info.seq, -1).index_select(0, info.indices)


def pad(x: torch.Tensor, info: Unpadded) -> torch.Tensor:
    """(total_nnz, H) -> (B, S, H), zeros where padding was."""
    out = x.new_zeros(info.batch * info.seq, x.shape[-1])
    out = out.index_copy(0, info.indices, x)
    return out.reshape(info.batch, info.seq, -1)
