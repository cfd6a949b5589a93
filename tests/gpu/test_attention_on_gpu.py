"""FlashAttention's variable-length kernel (pretrain.attention) against the CPU path's block-diagonal SDPA.

Skipped without a CUDA GPU of compute capability 8.0 or more (``bench/gpu_check.sh`` runs these).
"""

import pytest
import torch

from pretrain.attention import Sequences, attention, boundary
from pretrain.data import Layout
from tests.conftest import collated

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                       reason="needs a CUDA GPU with FlashAttention (sm80+)"),
]


def packed_layout(lengths_by_row, capacity=128):
    """sequence_ids and cu_seqlens from the real collator, for rows holding these sequence lengths
    (one more row left empty)."""
    inputs = collated(lengths_by_row, Layout(0, 8, rows=len(lengths_by_row) + 1, capacity=capacity, max_per_row=3))
    return inputs["sequence_ids"].cuda(), inputs["cu_seqlens"].cuda()


def qkv(b, s, heads=16, size=64, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(b, s, heads, size, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
            for _ in range(3)]


def test_varlen_kernel_matches_block_diagonal_sdpa_forward_and_backward():
    ids, cu = packed_layout([[60, 40, 28], [128], [17, 5]])
    q, k, v = qkv(4, 128)
    fused = boundary(q.flatten(2), 64, sequence_ids=ids, cu_seqlens=cu)
    assert fused.cu_seqlens is not None and fused.mask is None  # the varlen kernel was chosen
    reference = Sequences(mask=ids[:, None, :, None] == ids[:, None, None, :])
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    out = attention(q, k, v, fused, 0.0)
    ref = attention(*ref_in, reference, 0.0)
    real = ids > 0
    torch.testing.assert_close(out.float()[real], ref[real], rtol=2e-2, atol=2e-2)
    grad = torch.randn_like(ref) * real[..., None, None]  # padding's outputs are never read
    out.backward(grad.to(out.dtype))
    ref.backward(grad)
    for a, b in zip((q, k, v), ref_in):
        torch.testing.assert_close(a.grad.float()[real], b.grad[real], rtol=3e-2, atol=3e-2)


def test_varlen_kernel_applies_attention_dropout_and_replays_it_in_backward():
    ids, cu = packed_layout([[60, 40, 28], [100]])
    q, k, v = qkv(3, 128)
    seqs = boundary(q.flatten(2), 64, sequence_ids=ids, cu_seqlens=cu)
    plain = attention(q, k, v, seqs, 0.0)
    torch.manual_seed(3)
    dropped = attention(q, k, v, seqs, 0.1)
    torch.manual_seed(3)
    again = attention(q, k, v, seqs, 0.1)
    real = ids > 0
    assert not torch.allclose(dropped[real], plain[real])  # dropout applied
    torch.testing.assert_close(dropped, again)  # keyed by torch's generator: resumable, rank-independent
    assert (dropped[real].float() - plain[real].float()).abs().mean() < 0.5 * plain[real].float().abs().mean()
    dropped.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
