"""Local and linear attention: equal to their dense definitions, and never L x L in memory."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attend.attention import MultiHeadAttention, window_mask
from attend.attention.efficient import causal_linear_attention

from .conftest import padding_mask

E, H = 16, 2


class _LargestTensor(TorchDispatchMode):
    """Record the largest tensor any op produces: a memory bound that needs no timing."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("score", ["scaled_dot", "additive", "cosine"])
@pytest.mark.parametrize(("length", "window"), [(37, 3), (64, 40), (10, 0), (5, 9)])
def test_local_equals_full_attention_under_a_band_mask(causal: bool, score: str, length: int, window: int) -> None:
    local = MultiHeadAttention(E, H, attention="local", window=window, score=score).eval()
    full = MultiHeadAttention(E, H, score=score).eval()
    full.load_state_dict(local.state_dict())
    x = torch.randn(3, length, E)
    kpm = padding_mask([length, max(length - 4, 1), max(length // 2, 1)], length)
    out_l, w_l = local(x, key_padding_mask=kpm, is_causal=causal, need_weights=True)
    out_f, w_f = full(
        x, key_padding_mask=kpm, attn_mask=window_mask(length, window=window), is_causal=causal, need_weights=True
    )
    torch.testing.assert_close(out_l, out_f, atol=1e-5, rtol=0)
    torch.testing.assert_close(w_l, w_f, atol=1e-6, rtol=0)
    # The full module's own window= option builds the same band.
    banded = MultiHeadAttention(E, H, score=score, window=window).eval()
    banded.load_state_dict(local.state_dict())
    torch.testing.assert_close(banded(x, key_padding_mask=kpm, is_causal=causal)[0], out_l, atol=1e-5, rtol=0)


def test_local_memory_grows_with_length_times_window_not_length_squared() -> None:
    window, batch = 8, 1
    module = MultiHeadAttention(E, H, attention="local", window=window).eval()
    largest = {}
    for length in (512, 2048):
        with torch.no_grad(), _LargestTensor() as probe:
            module(torch.randn(batch, length, E))
        largest[length] = probe.largest
    # 4x the length -> ~4x the largest tensor (not 16x), and far below one L x L map.
    assert largest[2048] <= 4.5 * largest[512]
    assert largest[2048] < batch * H * 2048 * 2048 / 8


@pytest.mark.parametrize("attention", ["linear", "performer"])
def test_linear_memory_grows_linearly(attention: str) -> None:
    module = MultiHeadAttention(E, H, attention=attention, num_features=32).eval()
    for causal in (False, True):
        largest = {}
        for length in (512, 2048):
            with torch.no_grad(), _LargestTensor() as probe:
                module(torch.randn(1, length, E), is_causal=causal)
            largest[length] = probe.largest
        assert largest[2048] <= 4.5 * largest[512], (causal, largest)


def _kernel_attention_quadratic(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, causal: bool):
    kernel = phi_q @ phi_k.transpose(-2, -1)
    if causal:
        kernel = kernel.tril()
    return (kernel / kernel.sum(-1, keepdim=True)) @ v


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64])
def test_causal_linear_attention_equals_its_quadratic_form(chunk_size: int) -> None:
    phi_q = torch.rand(2, 3, 23, 5, dtype=torch.float64) + 0.1
    phi_k = torch.rand(2, 3, 23, 5, dtype=torch.float64) + 0.1
    v = torch.randn(2, 3, 23, 4, dtype=torch.float64)
    chunked = causal_linear_attention(phi_q, phi_k, v, chunk_size=chunk_size)
    torch.testing.assert_close(chunked, _kernel_attention_quadratic(phi_q, phi_k, v, causal=True))


@pytest.mark.parametrize("attention", ["linear", "performer"])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_module_output_equals_its_weights_times_values(attention: str, causal: bool) -> None:
    """The weights a linear module reports are exactly the distribution its output used."""
    module = MultiHeadAttention(E, H, attention=attention, chunk_size=5).double().eval()
    x = torch.randn(2, 13, E, dtype=torch.float64)
    kpm = padding_mask([13, 8], 13)
    out, weights = module(x, key_padding_mask=kpm, is_causal=causal, need_weights=True)
    v = module._split_heads(module.v_proj(x))
    expected = module.out_proj((weights @ v).transpose(1, 2).reshape(2, 13, E))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, H, 13, dtype=torch.float64))
    assert (weights[1][..., 8:] == 0).all()
    if causal:
        assert (weights.triu(1) == 0).all()


def test_performer_approximates_softmax_attention() -> None:
    torch.manual_seed(3)
    exact = MultiHeadAttention(E, H).double().eval()
    approx = MultiHeadAttention(E, H, attention="performer", num_features=4096).double().eval()
    approx.load_state_dict(exact.state_dict(), strict=False)
    x = 0.5 * torch.randn(2, 12, E, dtype=torch.float64)
    _, w_exact = exact(x, need_weights=True)
    _, w_approx = approx(x, need_weights=True)
    # Random features: an estimate, whose error shrinks as 1/sqrt(F).
    assert (w_exact - w_approx).abs().max() < 0.02
    coarse = MultiHeadAttention(E, H, attention="performer", num_features=16).double().eval()
    coarse.load_state_dict(exact.state_dict(), strict=False)
    _, w_coarse = coarse(x, need_weights=True)
    assert (w_exact - w_coarse).abs().mean() > (w_exact - w_approx).abs().mean()


def test_performer_features_are_saved_and_redrawable() -> None:
    module = MultiHeadAttention(E, H, attention="performer", num_features=8)
    assert "feature_map.projection" in module.state_dict()
    again = MultiHeadAttention(E, H, attention="performer", num_features=8)
    assert torch.equal(module.feature_map.projection, again.feature_map.projection)  # same seed, same features
    before = module.feature_map.projection.clone()
    module.feature_map.redraw(torch.Generator().manual_seed(5))
    assert not torch.equal(before, module.feature_map.projection)


@pytest.mark.parametrize(
    ("options", "q_shape", "k_shape"),
    [
        ({"attention": "local", "window": 2}, (2, 0, E), (2, 0, E)),  # no tokens
        ({"attention": "local", "window": 2}, (0, 3, E), (0, 3, E)),  # no batch
        ({"attention": "performer"}, (2, 3, E), (2, 0, E)),  # no keys
        ({"attention": "linear"}, (2, 0, E), (2, 0, E)),
        ({}, (2, 3, E), (2, 0, E)),
    ],
)
def test_empty_inputs_give_empty_rows_as_full_attention_does(options: dict, q_shape: tuple, k_shape: tuple) -> None:
    module = MultiHeadAttention(E, H, **options)
    key = torch.randn(*k_shape)
    out, weights = module(torch.randn(*q_shape), key, key, is_causal=options.get("attention") == "linear",
                          need_weights=True)  # fmt: skip
    assert out.shape == q_shape and weights.shape == (q_shape[0], H, q_shape[1], k_shape[1])
    assert (weights == 0).all() and torch.isfinite(out).all()
    if out.numel():  # before the output projection every row is zero: the output is its bias
        torch.testing.assert_close(out, module.out_proj.bias.detach().expand(*q_shape))


@pytest.mark.parametrize("attention", ["linear", "performer"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_attention_in_half_precision_matches_float32_on_a_long_sequence(
    attention: str, dtype: torch.dtype, causal: bool
) -> None:
    """In float16 the normaliser passed 65504 at about a thousand keys: 94% of the outputs came back 0."""
    torch.manual_seed(0)
    module = MultiHeadAttention(64, 1, attention=attention, bias=False).eval()
    x = torch.randn(1, 1024, 64)
    with torch.no_grad():
        reference, _ = module(x, is_causal=causal, need_weights=False)
        half, weights = module.to(dtype)(x.to(dtype), is_causal=causal, need_weights=True)
    assert half.dtype == dtype and weights is not None and weights.dtype == dtype
    # bfloat16 keeps 8 bits of each input: its outputs are that far from float32's, not zeros.
    torch.testing.assert_close(half.float(), reference, atol=2e-3 if dtype == torch.float16 else 6e-3, rtol=0.05)
