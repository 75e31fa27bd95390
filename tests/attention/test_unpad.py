"""Unpadded layout: packing moves rows only, and attention on packed tokens equals the padded call.

Tolerance: the projections run as a GEMM of another height (T rows instead of B*L), which may
round differently in the last bits; 1e-6 on outputs and weights is ~10x what that moves here.
"""

from __future__ import annotations

import pytest
import torch

from attend.attention import MultiHeadAttention
from attend.attention.unpad import TokenLayout
from attend.runtime import quantize_torch_model

from .conftest import padding_mask

E, H = 32, 4
ATOL = 1e-6


def test_pack_takes_real_rows_in_order_and_unpack_puts_them_back_with_zeros() -> None:
    mask = padding_mask([3, 1, 0, 2], 3)  # a fully padded row included
    layout = TokenLayout.from_padding_mask(mask)
    assert layout.tokens == 6 and (layout.batch, layout.length) == (4, 3)
    grid = torch.arange(4 * 3 * 2, dtype=torch.float32).view(4, 3, 2)
    packed = layout.pack(grid)
    torch.testing.assert_close(packed, grid[~mask])  # row-major: text by text, left to right
    back = layout.unpack(packed)
    torch.testing.assert_close(back[~mask], grid[~mask])
    assert (back[mask] == 0).all()


def test_head_gathers_equal_unpack_with_split_heads_and_merge_with_pack() -> None:
    """The traced (ONNX) path's row gathers move the same numbers as unpack + transposes + pack."""
    mask = padding_mask([3, 1, 2, 3], 3)
    layout = TokenLayout.from_padding_mask(mask)
    parts, heads, d = 3, 2, 4
    packed = torch.randn(layout.tokens, parts * heads * d)
    expected = layout.unpack(packed).view(4, 3, parts, heads, d).permute(2, 0, 3, 1, 4)  # (parts, B, H, L, d)
    real = ~mask[:, None, :, None].expand(4, heads, 3, d)
    for got, want in zip(layout.unpack_heads(packed, parts, heads), expected, strict=True):
        assert got.shape == (4, heads, 3, d)
        torch.testing.assert_close(got[real], want[real], rtol=0, atol=0)
        assert torch.isfinite(got).all()  # padding positions hold real rows, never garbage memory
    out = torch.randn(4, heads, 3, d)
    merged = layout.pack(out.transpose(1, 2).reshape(4, 3, heads * d))
    torch.testing.assert_close(layout.pack_heads(out), merged, rtol=0, atol=0)


def test_unpack_passes_gradients_to_the_packed_rows() -> None:
    layout = TokenLayout.from_padding_mask(padding_mask([2, 1], 2))
    packed = torch.randn(3, 4, requires_grad=True)
    (layout.unpack(packed) * torch.arange(16.0).view(2, 2, 4)).sum().backward()
    assert packed.grad is not None
    torch.testing.assert_close(packed.grad, torch.arange(16.0).view(4, 4)[[0, 1, 2]])


def test_layout_errors_name_the_shapes() -> None:
    layout = TokenLayout.from_padding_mask(padding_mask([2, 1], 2))
    with pytest.raises(ValueError, match=r"expected a \(2, 2, \.\.\.\) tensor to pack, got \(3, 2, 4\)"):
        layout.pack(torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match=r"expected 3 packed rows to unpack, got \(4, 8\)"):
        layout.unpack(torch.zeros(4, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2,\)"):
        TokenLayout.from_padding_mask(torch.zeros(2, dtype=torch.bool))
    # Hugging Face's 1 = keep integer mask would have kept the padding and dropped every real token.
    with pytest.raises(ValueError, match=r"must be a bool tensor .*got dtype torch.int64 .*`mask == 0`"):
        TokenLayout.from_padding_mask(torch.tensor([[1, 1, 0]]))


def _compare(module: MultiHeadAttention, lengths: list[int]) -> None:
    """Packed call vs padded call: outputs and weights at real query rows, and every gradient."""
    mask = padding_mask(lengths, max(lengths))
    x = torch.randn(len(lengths), max(lengths), E)
    real = ~mask

    padded_out, padded_w = module(x, key_padding_mask=mask, need_weights=True)
    padded_loss = padded_out[real].pow(2).sum()
    padded_grads = torch.autograd.grad(padded_loss, list(module.parameters()))

    layout = TokenLayout.from_padding_mask(mask)
    packed_out, packed_w = module(layout.pack(x), layout=layout, need_weights=True)
    assert packed_out.shape == (layout.tokens, E)
    torch.testing.assert_close(packed_out, padded_out[real], atol=ATOL, rtol=0)
    assert packed_w is not None and padded_w is not None and packed_w.shape == padded_w.shape
    rows = real[:, None, :, None].expand_as(packed_w)
    torch.testing.assert_close(packed_w[rows], padded_w[rows], atol=ATOL, rtol=0)
    packed_grads = torch.autograd.grad(packed_out.pow(2).sum(), list(module.parameters()))
    for name_param, a, b in zip(module.named_parameters(), packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"gradient of {name_param[0]}")


@pytest.mark.parametrize(
    "options",
    [
        {},  # fused SDPA, packed q/k/v projection
        {"score": "additive", "backend": "eager"},  # explicit scores
        {"gate": True},  # the gate projection runs on packed tokens too
        {"attention": "local", "window": 2},
    ],
    ids=["sdpa", "additive", "gate", "local"],
)
def test_packed_self_attention_equals_padded(options: dict) -> None:
    _compare(MultiHeadAttention(E, H, **options), [5, 3, 1, 4])


def test_packed_self_attention_with_int8_projections_equals_padded() -> None:
    # Dynamically quantised projections are not one packable tensor: q, k and v run apart.
    module = quantize_torch_model(MultiHeadAttention(E, H))  # as `attend quantize --runtime torch` does
    assert not module._packable()
    lengths = [5, 2, 4]
    mask = padding_mask(lengths, 5)
    x = torch.randn(3, 5, E)
    layout = TokenLayout.from_padding_mask(mask)
    with torch.no_grad():
        padded, _ = module(x, key_padding_mask=mask)
        packed, _ = module(layout.pack(x), layout=layout)
    # Dynamic int8 scales activations by the whole input's range; the padded input has
    # extra rows, so the two calls may quantise a little differently.
    torch.testing.assert_close(packed, padded[~mask], atol=0.05, rtol=0)


def test_layout_call_rejects_cross_attention_and_a_wrong_shape() -> None:
    module = MultiHeadAttention(E, H)
    layout = TokenLayout.from_padding_mask(padding_mask([2, 1], 2))
    packed = torch.randn(layout.tokens, E)
    with pytest.raises(ValueError, match="layout= is for self-attention"):
        module(packed, packed, layout=layout)
    with pytest.raises(ValueError, match="layout= is for self-attention"):
        module(packed, key_padding_mask=layout.key_padding_mask, layout=layout)
    with pytest.raises(ValueError, match=r"query has shape \(2, 2, 32\), expected the packed \(tokens=3"):
        module(torch.randn(2, 2, E), layout=layout)
