"""Adaptive attention: span, temperature and gate."""

from __future__ import annotations

import pytest
import torch

from attend.attention import AdaptiveSpan, MultiHeadAttention

E, H = 16, 4


def test_adaptive_span_at_full_span_equals_plain_attention() -> None:
    length = 20
    for attention, extra in (("full", {}), ("local", {"window": 6})):
        plain = MultiHeadAttention(E, H, attention=attention, **extra).eval()
        spanned = MultiHeadAttention(E, H, attention=attention, adaptive_span=length, **extra).eval()
        spanned.load_state_dict(plain.state_dict(), strict=False)
        x = torch.randn(2, length, E)
        out_p, w_p = plain(x, need_weights=True, is_causal=True)
        out_s, w_s = spanned(x, need_weights=True, is_causal=True)
        torch.testing.assert_close(out_s, out_p, atol=1e-6, rtol=0)
        torch.testing.assert_close(w_s, w_p, atol=1e-7, rtol=0)


def test_short_span_cuts_distant_keys_with_a_soft_ramp() -> None:
    span = AdaptiveSpan(num_heads=2, max_span=10, ramp=2)
    with torch.no_grad():
        span.span_fraction.copy_(torch.tensor([0.3, 1.0]))  # spans of 3 and 10 tokens
    distance = torch.arange(8).float()[None, :]  # (1, 8)
    mask = span.bias(distance, torch.float32).exp()  # m(x) per head
    # head 0: m(x) = clamp((2 + 3 - x) / 2, 0, 1): 1 up to x=3, 0.5 at 4, 0 from 5
    torch.testing.assert_close(mask[0, 0], torch.tensor([1, 1, 1, 1, 0.5, 0, 0, 0], dtype=torch.float32))
    assert (mask[1] == 1).all()

    module = MultiHeadAttention(E, 2, adaptive_span=10, span_ramp=2)
    with torch.no_grad():
        module.span.span_fraction.copy_(torch.tensor([0.3, 1.0]))
    _, weights = module(torch.randn(1, 12, E), need_weights=True)
    distance = (torch.arange(12)[:, None] - torch.arange(12)[None, :]).abs()
    assert (weights[0, 0][distance >= 5] == 0).all()
    assert (weights[0, 1] > 0).all()


def test_queries_the_span_leaves_no_key_give_zeros_not_nan() -> None:
    # Two real tokens, six padding: a padded query more than span + ramp from both real keys sees
    # no key at all. Its row is zeros (as padding alone gives), in outputs, maps and gradients, never NaN.
    pad = torch.zeros(1, 8, dtype=torch.bool)
    pad[0, 2:] = True
    for extra in ({"backend": "eager"}, {"score": "additive"}, {"attention": "local", "window": 4}, {}):
        torch.manual_seed(0)
        module = MultiHeadAttention(E, 2, adaptive_span=2, span_ramp=1, **extra)
        x = torch.randn(1, 8, E, requires_grad=True)
        out, weights = module(x, key_padding_mask=pad, need_weights=True)
        out[:, :2].sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(weights).all(), extra
        assert (weights[0, :, 5:] == 0).all(), extra  # before the output projection the rows are zero:
        torch.testing.assert_close(out[0, 5:], module.out_proj.bias.expand(3, E).detach())  # the output is its bias
        assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None), extra
        assert torch.isfinite(x.grad).all(), extra


@pytest.mark.parametrize(
    ("q_len", "k_len", "masks"),
    [
        (8, 8, {"padding": True}),
        (8, 8, {"padding": True, "is_causal": True}),
        (8, 8, {"attn_mask": True}),
        (8, 8, {"attn_mask": True, "padding": True}),
        (12, 3, {}),  # cross-attention: queries past the last key may be out of every key's reach
        (12, 3, {"padding": True}),
        (8, 8, {}),
    ],
)
def test_span_rows_without_a_key_are_found_for_every_mask(q_len: int, k_len: int, masks: dict) -> None:
    """Whichever way the empty rows are found (from the shapes, a product with the padding, or a pass
    over the bias), they are exactly the rows where span and mask leave no key: zeros there, a
    distribution over the allowed keys everywhere else."""
    torch.manual_seed(1)
    module = MultiHeadAttention(E, 2, adaptive_span=2, span_ramp=1).eval()
    with torch.no_grad():
        module.span.span_fraction.copy_(torch.tensor([0.5, 1.0]))
    x, memory = torch.randn(2, q_len, E), torch.randn(2, k_len, E)
    pad = torch.zeros(2, k_len, dtype=torch.bool)
    if masks.get("padding"):
        pad[0, 2:] = True
    forbidden = torch.rand(2, 1, q_len, k_len) < 0.5 if masks.get("attn_mask") else None
    causal = masks.get("is_causal", False)
    _, weights = module(x, memory, key_padding_mask=pad if masks.get("padding") else None, attn_mask=forbidden,
                        is_causal=causal, need_weights=True)  # fmt: skip
    distance = (torch.arange(q_len)[:, None] - torch.arange(k_len)[None, :]).abs()
    allowed = torch.isfinite(module.span.bias(distance, torch.float32))[None] & ~pad[:, None, None, :]
    if forbidden is not None:
        allowed = allowed & ~forbidden
    if causal:
        allowed = allowed & (torch.arange(k_len)[None, :] <= torch.arange(q_len)[:, None])
    empty = ~allowed.any(-1)  # (B, H, Lq)
    assert torch.isfinite(weights).all()
    assert (weights[empty] == 0).all() and (weights[~allowed] == 0).all()
    torch.testing.assert_close(weights.sum(-1)[~empty], torch.ones(int((~empty).sum())))
    if q_len > k_len:
        assert empty.any()  # the case is exercised


def test_span_penalty_is_differentiable_and_shrinks_spans() -> None:
    module = MultiHeadAttention(E, H, adaptive_span=16)
    penalty = module.span_penalty()
    assert penalty.item() == 16.0
    penalty.backward()
    assert (module.span.span_fraction.grad > 0).all()
    assert MultiHeadAttention(E, H).span_penalty().item() == 0.0


def test_adaptive_span_learns_through_the_fused_kernel() -> None:
    module = MultiHeadAttention(E, H, adaptive_span=8, span_ramp=4)
    with torch.no_grad():
        module.span.span_fraction.fill_(0.5)
    assert module.backend_name == "sdpa"
    out, _ = module(torch.randn(2, 12, E))
    out.pow(2).sum().backward()
    assert module.span.span_fraction.grad.abs().sum() > 0


def test_learned_temperature_sharpens_and_stays_fused() -> None:
    module = MultiHeadAttention(E, H, learn_temperature=True).eval()
    assert module.backend_name == "sdpa"
    x = torch.randn(1, 10, E)
    _, cool = module(x, need_weights=True)
    with torch.no_grad():
        module.score.log_temperature.fill_(2.0)
    _, hot = module(x, need_weights=True)

    def entropy(w: torch.Tensor) -> torch.Tensor:
        return -(w * w.clamp_min(1e-12).log()).sum(-1).mean()

    assert entropy(hot) < entropy(cool)
    eager = MultiHeadAttention(E, H, learn_temperature=True, backend="eager").eval()
    eager.load_state_dict(module.state_dict())
    torch.testing.assert_close(eager(x)[0], module(x)[0], atol=1e-5, rtol=0)


def test_gate_scales_head_outputs() -> None:
    gated = MultiHeadAttention(E, H, gate=True).eval()
    plain = MultiHeadAttention(E, H).eval()
    plain.load_state_dict(gated.state_dict(), strict=False)
    x = torch.randn(2, 6, E)
    with torch.no_grad():
        gated.gate_proj.weight.zero_()
        gated.gate_proj.bias.fill_(50.0)  # gate fully open: same as no gate
        torch.testing.assert_close(gated(x)[0], plain(x)[0], atol=1e-5, rtol=0)
        gated.gate_proj.bias.fill_(-50.0)  # gate shut: only the output bias remains
        torch.testing.assert_close(gated(x)[0], gated.out_proj.bias.expand(2, 6, E), atol=1e-5, rtol=0)


def test_a_span_pushed_past_its_ends_is_clamped_back_and_learns_again() -> None:
    """Past 0 (or 1) the clamp in ``spans`` gives the fraction no gradient: without clamp_ after the
    step, a head stayed at span 0 for good (the paper's code clamps after each step)."""
    from attend.attention import clamp_spans

    module = MultiHeadAttention(8, 2, adaptive_span=4, span_ramp=2)
    with torch.no_grad():
        module.span.span_fraction.copy_(torch.tensor([-0.09, 1.3]))
    module.span_penalty().backward()
    assert torch.equal(module.span.span_fraction.grad, torch.zeros(2))  # stuck, as it was
    clamp_spans(module)
    assert torch.equal(module.span.span_fraction.detach(), torch.tensor([0.0, 1.0]))
    module.zero_grad()
    module.span_penalty().backward()
    assert (module.span.span_fraction.grad > 0).all()  # a gradient again, at the ends
