"""Property tests: invariants that hold for every input, every score and every backend."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attend.attention import MultiHeadAttention

E, H = 8, 2
CONFIGS = [
    {"score": "scaled_dot"},
    {"score": "dot", "backend": "eager"},
    {"score": "additive"},
    {"score": "cosine"},
    {"score": "bilinear"},
    {"attention": "local", "window": 2},
    {"attention": "linear"},
    {"attention": "performer", "num_features": 16},
]
MODULES = [MultiHeadAttention(E, H, **c).eval() for c in CONFIGS]


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, torch.Tensor, torch.Tensor, bool]:
    index = draw(st.integers(0, len(MODULES) - 1))
    batch = draw(st.integers(1, 3))
    length = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, E, generator=generator)
    lengths = [draw(st.integers(0, length)) for _ in range(batch)]  # 0 = all padding
    kpm = torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]
    causal = draw(st.booleans())
    return index, x, kpm, causal


@settings(max_examples=60, deadline=None)
@given(batches())
def test_rows_sum_to_one_masked_keys_get_zero_and_empty_rows_are_zero(case) -> None:
    index, x, kpm, causal = case
    with torch.no_grad():
        out, weights = MODULES[index](x, key_padding_mask=kpm, is_causal=causal, need_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert (weights >= 0).all()
    # Masked keys get exactly zero weight.
    assert (weights.masked_select(kpm[:, None, None, :].expand_as(weights)) == 0).all()
    if causal:
        assert (weights.triu(1) == 0).all()
    sums = weights.sum(-1)  # (B, H, L)
    length = x.shape[1]
    i, j = torch.arange(length)[:, None], torch.arange(length)[None, :]
    visible = ~kpm[:, None, :].expand(-1, length, -1)  # (B, Lq, Lk): keys each query may see
    if causal:
        visible = visible & (j <= i)
    if MODULES[index].window is not None:
        visible = visible & ((i - j).abs() <= MODULES[index].window)
    has_key = visible.any(-1)[:, None, :].expand(sums.shape)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
    assert (sums[~has_key] == 0).all()  # rows with no visible key are zeros, not NaN


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(MODULES) - 1), st.integers(2, 9), st.integers(0, 2**16))
def test_self_attention_without_positions_is_permutation_equivariant(index: int, length: int, seed: int) -> None:
    module = MODULES[index]
    if module.attention == "local":
        return  # a window is a positional rule: local attention is equivariant only to shifts
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, E, generator=generator)
    perm = torch.randperm(length, generator=generator)
    with torch.no_grad():
        out, weights = module(x, need_weights=True)
        out_p, weights_p = module(x[:, perm], need_weights=True)
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights_p, weights[:, :, perm][:, :, :, perm], atol=1e-6, rtol=1e-5)
