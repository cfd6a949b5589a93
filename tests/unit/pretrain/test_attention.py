import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pretrain.attention import Sequences, attention, boundary


def explicit(q, k, v, mask):
    """(B, S, nh, hs) attention written out; ``mask`` (B, 1, S|1, S), True = attend."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores.float(), -1).to(q.dtype) @ v).transpose(1, 2)


def qkv(b=3, s=20, h=4, d=16):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, s, h, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("backend", [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION])
def test_every_kernel_gives_the_explicit_result_without_a_mask(backend):
    q, k, v = qkv()
    with sdpa_kernel([backend]):
        out = attention(q, k, v, Sequences(), 0.0)
    torch.testing.assert_close(out, explicit(q, k, v, None), rtol=1e-5, atol=1e-5)


def test_padding_mask_matches_the_explicit_result():
    q, k, v = qkv()
    am = (torch.arange(20)[None, :] < torch.tensor([20, 13, 5])[:, None]).long()
    seqs = boundary(q, 16, attention_mask=am)
    assert seqs.mask.shape == (3, 1, 1, 20) and seqs.cu_seqlens is None
    torch.testing.assert_close(attention(q, k, v, seqs, 0.0), explicit(q, k, v, seqs.mask), rtol=1e-5, atol=1e-5)


def test_packed_sequences_attend_only_within_themselves():
    """Each sequence of a packed row gets exactly what it would get alone in its own row."""
    q, k, v = qkv(b=2, s=20)
    ids = torch.tensor([[1] * 8 + [2] * 5 + [3] * 4 + [0] * 3, [1] * 20])
    seqs = boundary(q, 16, sequence_ids=ids, cu_seqlens=torch.tensor([0, 8, 13, 17, 20, 40, 40, 40, 40]))
    assert seqs.mask.shape == (2, 1, 20, 20) and seqs.cu_seqlens is None  # CPU: block-diagonal SDPA
    out = attention(q, k, v, seqs, 0.0)
    for row, lo, hi in [(0, 0, 8), (0, 8, 13), (0, 13, 17), (1, 0, 20)]:
        alone = attention(*(t[row : row + 1, lo:hi] for t in (q, k, v)), Sequences(), 0.0)
        torch.testing.assert_close(out[row : row + 1, lo:hi], alone, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all()  # padding attends to padding: no row without a key
