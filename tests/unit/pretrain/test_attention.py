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


@pytest.mark.parametrize("packed", [True, False])
def test_the_collators_cu_seqlens_cut_the_same_blocks_as_its_sequence_ids(packed):
    """What the varlen kernel computes (attention within each cu_seqlens segment of the flattened
    tokens, here by SDPA segment by segment) equals the CPU path's block-diagonal mask, for the
    collator's own packed and padded batches: the layout the GPU kernel gets is the one tested on CPU."""
    from pretrain.data import Layout
    from tests.conftest import collated

    lengths_by_row = [[8, 6, 5], [20], [3]] if packed else [[8], [20], [3], [11]]
    inputs = collated(lengths_by_row, Layout(0, 8, rows=4, capacity=20, max_per_row=3) if packed else Layout(0, 8))
    ids, cu = inputs["sequence_ids"], inputs["cu_seqlens"]
    b, s = ids.shape
    q, k, v = qkv(b=b, s=s)
    blocks = attention(q, k, v, boundary(q.flatten(2), 16, sequence_ids=ids, cu_seqlens=cu), 0.0)
    flat = [t.reshape(b * s, 4, 16) for t in (q, k, v)]
    segments = torch.zeros_like(flat[0])
    assert cu[0] == 0 and cu[-1] == b * s and (cu[1:] >= cu[:-1]).all()  # every token in exactly one segment
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if hi > lo:
            segments[lo:hi] = attention(*(t[None, lo:hi] for t in flat), Sequences(), 0.0)[0]
    torch.testing.assert_close(segments.view(b, s, 4, 16), blocks, rtol=1e-5, atol=1e-5)
