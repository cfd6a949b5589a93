import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pretrain.attention import attention, pad, unpad, unpad_info


def explicit(q, k, v, mask):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), -1).to(q.dtype) @ v


def qkv(b=3, h=4, s=20, d=16):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, s, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("backend", [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION])
def test_every_kernel_gives_the_explicit_result_without_a_mask(backend):
    q, k, v = qkv()
    with sdpa_kernel([backend]):
        out = attention(q, k, v, None, 0.0)
    torch.testing.assert_close(out, explicit(q, k, v, None), rtol=1e-5, atol=1e-5)


def test_padding_mask_matches_the_explicit_result():
    q, k, v = qkv()
    lengths = torch.tensor([20, 13, 5])
    mask = (torch.arange(20)[None, :] < lengths[:, None])[:, None, None, :]
    torch.testing.assert_close(attention(q, k, v, mask, 0.0), explicit(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_unpad_then_pad_restores_real_tokens_and_zeroes_padding():
    am = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    x = torch.randn(2, 4, 3)
    info = unpad_info(am)
    packed = unpad(x, info)
    assert packed.shape == (4, 3)
    back = pad(packed, info)
    torch.testing.assert_close(back[am.bool()], x[am.bool()])
    assert torch.all(back[~am.bool()] == 0)
