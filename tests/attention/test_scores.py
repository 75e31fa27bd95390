"""Each score against a hand-written formula; the registry; gradcheck of every variant."""

from __future__ import annotations

import math

import pytest
import torch

from attend.attention import SCORES, AttentionPooling, CrossModalAttention, MultiHeadAttention, build_score

B, H, LQ, LK, D = 2, 3, 4, 5, 6


def _qk(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, H, LQ, D, dtype=dtype), torch.randn(B, H, LK, D, dtype=dtype)


def _loop_scores(fn) -> torch.Tensor:
    """Score every (b, h, i, j) pair one at a time with a scalar formula."""
    q, k = _qk()
    out = torch.empty(B, H, LQ, LK, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(LQ):
                for j in range(LK):
                    out[b, h, i, j] = fn(q[b, h, i], k[b, h, j], h)
    return q, k, out


def test_registry_has_the_five_scores_and_rejects_unknown_names() -> None:
    assert {"dot", "scaled_dot", "additive", "cosine", "bilinear"} <= set(SCORES)
    with pytest.raises(ValueError, match=r"unknown score 'dotty'.*'additive'.*'scaled_dot'"):
        build_score("dotty", D, H)
    with pytest.raises(ValueError, match="unknown score"):
        MultiHeadAttention(12, 3, score="nope")


def test_dot_and_scaled_dot() -> None:
    dot = build_score("dot", D, H).double()
    scaled = build_score("scaled_dot", D, H).double()
    q, k, expected = _loop_scores(lambda qi, kj, h: (qi * kj).sum())
    torch.testing.assert_close(dot(q, k), expected)
    torch.testing.assert_close(scaled(q, k), expected / math.sqrt(D))


def test_cosine_with_temperature() -> None:
    score = build_score("cosine", D, H, init_tau=5.0).double()
    with torch.no_grad():
        score.log_tau.copy_(torch.log(torch.tensor([1.0, 2.0, 7.0], dtype=torch.float64)))
    taus = [1.0, 2.0, 7.0]
    q, k, expected = _loop_scores(lambda qi, kj, h: taus[h] * (qi @ kj) / (qi.norm() * kj.norm()))
    torch.testing.assert_close(score(q, k), expected)
    assert score(q, k).abs().max() <= 7.0 + 1e-9  # bounded by the temperature
    for bad in (0.0, -1.0, math.inf, math.nan):  # inf and NaN had given NaN rows
        with pytest.raises(ValueError, match=r"init_tau=.* must be a positive finite number"):
            build_score("cosine", D, H, init_tau=bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_maps_beside_the_fused_output_are_finite(dtype: torch.dtype) -> None:
    """The maps were scored in the inputs' dtype: float16 logits past 65504 made them NaN, while
    SDPA's output, accumulated in float32, stayed finite."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 2, score="dot").eval()
    x = torch.randn(2, 5, 16) * 1e3
    with torch.no_grad():
        out, weights = attention.to(dtype)(x.to(dtype), need_weights=True)
        _, reference = attention.float()(x, need_weights=True)
    assert weights.dtype == dtype and torch.isfinite(out).all() and torch.isfinite(weights).all()
    torch.testing.assert_close(weights.float(), reference, atol=2e-2, rtol=0)


def test_bilinear() -> None:
    score = build_score("bilinear", D, H).double()
    with torch.no_grad():
        score.weight.copy_(torch.randn(H, D, D, dtype=torch.float64))
    w = score.weight.detach()
    q, k, expected = _loop_scores(lambda qi, kj, h: qi @ w[h] @ kj / math.sqrt(D))
    torch.testing.assert_close(score(q, k), expected)


def test_bilinear_starts_as_scaled_dot() -> None:
    q, k = _qk()
    bilinear = build_score("bilinear", D, H).double()
    scaled = build_score("scaled_dot", D, H).double()
    torch.testing.assert_close(bilinear(q, k), scaled(q, k))


def test_additive() -> None:
    score = build_score("additive", D, H, hidden_dim=4).double()
    wq, wk, v = score.w_query.detach(), score.w_key.detach(), score.v.detach()
    q, k, expected = _loop_scores(lambda qi, kj, h: v[h] @ torch.tanh(qi @ wq[h] + kj @ wk[h]))
    torch.testing.assert_close(score(q, k), expected)
    assert not score.fusable


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "cosine", "bilinear"])
def test_fusable_scores_equal_their_dot_form(name: str) -> None:
    score = build_score(name, D, H, learn_temperature=True).double()
    with torch.no_grad():
        score.log_temperature.copy_(torch.tensor([0.1, -0.3, 0.5]))
    q, k = _qk()
    q2, k2, scale = score.as_dot(q, k)
    torch.testing.assert_close(score(q, k), scale * q2 @ k2.transpose(-2, -1))


def test_learned_temperature_multiplies_each_head() -> None:
    plain = build_score("additive", D, H).double()
    tempered = build_score("additive", D, H, learn_temperature=True).double()
    tempered.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        tempered.log_temperature.copy_(torch.log(torch.tensor([0.5, 1.0, 3.0])))
    q, k = _qk()
    expected = plain(q, k) * torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64).view(1, H, 1, 1)
    torch.testing.assert_close(tempered(q, k), expected)


# --- gradcheck of every variant, float64 -------------------------------------------------

E = 8
VARIANTS = {
    **{f"score-{s}": {"score": s} for s in ["dot", "scaled_dot", "additive", "cosine", "bilinear"]},
    "eager": {"backend": "eager"},
    "temperature": {"learn_temperature": True},
    "gate": {"gate": True},
    "adaptive-span": {"adaptive_span": 4, "span_ramp": 2},
    "window-full": {"window": 1},
    "local": {"attention": "local", "window": 1},
    "local-additive": {"attention": "local", "window": 2, "score": "additive"},
    "linear": {"attention": "linear"},
    "performer": {"attention": "performer", "num_features": 16},
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradcheck(variant: str, causal: bool) -> None:
    module = MultiHeadAttention(E, 2, **VARIANTS[variant]).double()
    if module.span is not None:
        with torch.no_grad():  # keep every distance off the ramp's kinks
            module.span.span_fraction.copy_(torch.tensor([0.3, 0.61], dtype=torch.float64))
    x = torch.randn(2, 5, E, dtype=torch.float64, requires_grad=True)
    kpm = torch.tensor([[False] * 5, [False, False, False, True, True]])

    def fn(inp: torch.Tensor) -> torch.Tensor:
        out, weights = module(inp, key_padding_mask=kpm, is_causal=causal, need_weights=True)
        return out.sum() + (weights * torch.arange(5, dtype=torch.float64)).sum()

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_gradcheck_cross_attention_pooling_and_crossmodal() -> None:
    torch.manual_seed(1)
    cross = MultiHeadAttention(E, 2, kdim=5, vdim=3).double()
    q = torch.randn(2, 4, E, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: cross(a, b, c)[0], (q, k, v))

    pool = AttentionPooling(E).double()
    kpm = torch.tensor([[False] * 6, [False, False, True, True, True, True]])
    x = torch.randn(2, 6, E, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: pool(a, kpm)[0], (x,))

    block = CrossModalAttention(E, 5, 2, ffn_dim=16).double()
    assert torch.autograd.gradcheck(lambda a, b: block(a, b)[0], (q, k))
