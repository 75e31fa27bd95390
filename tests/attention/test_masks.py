"""The shared mask helper, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attend.attention import (
    CrossModalAttention,
    MaskSpec,
    MultiHeadAttention,
    causal_mask,
    positional_mask,
    window_mask,
)


def test_positional_rules() -> None:
    q = torch.arange(4)[:, None]
    k = torch.arange(4)[None, :]
    assert positional_mask(q, k) is None
    assert torch.equal(positional_mask(q, k, is_causal=True), torch.ones(4, 4, dtype=torch.bool).tril())
    band = positional_mask(q, k, window=1)
    assert band.sum().item() == 4 + 3 + 3
    causal_band = positional_mask(q, k, is_causal=True, window=1)
    assert torch.equal(causal_band, band & torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(causal_mask(3), ~torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.equal(window_mask(4, window=1), ~band)


def test_resolve_combines_every_mask_into_one_bias() -> None:
    kpm = torch.tensor([[False, False, True], [False, True, True]])
    user = torch.tensor([[False, True, False]] * 3)
    spec = MaskSpec.validate(
        batch_size=2, num_heads=2, q_len=3, k_len=3, key_padding_mask=kpm, attn_mask=user, is_causal=True
    )
    mask = spec.resolve(torch.float32, torch.device("cpu"))
    assert not mask.is_causal
    allowed = torch.isfinite(mask.bias) & (mask.bias == 0)
    # query 0 sees key 0; query 1 sees key 0 (key 1 forbidden by user); query 2 sees key 0 (key 2 padding)
    expected = torch.tensor([[[True, False, False], [True, False, False], [True, False, False]]])
    assert torch.equal(allowed[0, 0], expected[0])
    assert mask.empty_rows is None


def test_causal_alone_stays_a_flag_for_the_fused_kernel() -> None:
    spec = MaskSpec.validate(batch_size=1, num_heads=1, q_len=3, k_len=3, is_causal=True)
    mask = spec.resolve(torch.float32, torch.device("cpu"))
    assert mask.bias is None and mask.is_causal
    dense = mask.dense_bias(3, 3, torch.float32, torch.device("cpu"))
    assert torch.equal(torch.isneginf(dense), causal_mask(3))


def test_empty_rows_are_reported_and_neutralised() -> None:
    kpm = torch.tensor([[False, False], [True, True]])
    spec = MaskSpec.validate(batch_size=2, num_heads=1, q_len=2, k_len=2, key_padding_mask=kpm)
    mask = spec.resolve(torch.float32, torch.device("cpu"))
    assert mask.empty_rows is not None and mask.empty_rows.flatten().tolist() == [False, True]
    assert torch.isfinite(mask.bias[1]).all()


M = MultiHeadAttention(16, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": torch.randn(2, 5, 12)}, r"query has shape \(2, 5, 12\).*embed_dim=16"),
        ({"query": torch.randn(5, 16)}, r"query has shape \(5, 16\)"),
        ({"query": torch.randn(2, 5, 16), "key": torch.randn(3, 5, 16)}, r"batch sizes differ"),
        (
            {"query": torch.randn(2, 5, 16), "key": torch.randn(2, 5, 16), "value": torch.randn(2, 6, 16)},
            r"same length",
        ),
        ({"query": torch.randn(2, 5, 16), "key_padding_mask": torch.zeros(2, 5)}, r"key_padding_mask must be a bool"),
        (
            {"query": torch.randn(2, 5, 16), "key_padding_mask": torch.zeros(2, 4, dtype=torch.bool)},
            r"key_padding_mask has shape \(2, 4\), expected .* \(2, 5\)",
        ),
        ({"query": torch.randn(2, 5, 16), "attn_mask": torch.zeros(5, 5, dtype=torch.long)}, r"attn_mask must be bool"),
        ({"query": torch.randn(2, 5, 16), "attn_mask": torch.zeros(5, 4)}, r"attn_mask has shape \(5, 4\)"),
        ({"query": torch.randn(2, 5, 16), "attn_mask": torch.zeros(3, 5, 5)}, r"attn_mask has shape \(3, 5, 5\)"),
    ],
)
def test_bad_input_names_the_shapes(kwargs: dict, message: str) -> None:
    query = kwargs.pop("query")
    with pytest.raises(ValueError, match=message):
        M(query, **kwargs)


def test_the_callers_own_names_are_in_the_shape_errors() -> None:
    """Cross-modal attention's batch error had named the inner attention's query, key and value; a
    value left out for a key of another width had been blamed on the value never given."""
    from attend.attention import CrossModalAttention

    with pytest.raises(ValueError, match=r"^batch sizes differ: x \(2, 5, 16\), context \(3, 6, 10\)$"):
        CrossModalAttention(16, 10, 4)(torch.randn(2, 5, 16), torch.randn(3, 6, 10))
    with pytest.raises(ValueError, match=r"vdim=16\) \(value=None reuses key: pass value, or make the module with "
                                         r"vdim=kdim\)"):  # fmt: skip
        MultiHeadAttention(16, 4, kdim=6)(torch.randn(2, 6, 16), torch.randn(2, 3, 6))
    out, _ = MultiHeadAttention(16, 4, kdim=6, vdim=6)(torch.randn(2, 6, 16), torch.randn(2, 3, 6))
    assert out.shape == (2, 6, 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embed_dim": 10, "num_heads": 3}, "embed_dim=10 is not divisible by num_heads=3"),
        ({"embed_dim": 0, "num_heads": 1}, "must be positive"),
        ({"num_heads": 2.0}, "num_heads=2.0 must be an integer"),  # it failed inside torch.empty
        ({"head_dim": True}, "head_dim=True must be an integer"),
        ({"dropout": 1.5}, "dropout=1.5"),
        ({"attention": "sparse"}, "unknown attention='sparse'"),
        ({"attention": "local"}, "needs window="),
        ({"attention": "linear", "score": "additive"}, "score='additive'"),
        ({"attention": "performer", "adaptive_span": 8}, "adaptive_span=8"),
        ({"attention": "linear", "dropout": 0.1}, "dropout=0.1"),
        ({"score": "additive", "backend": "sdpa"}, "score='additive' is not a dot product"),
        ({"backend": "flash"}, "backend='flash'"),
        ({"window": -1}, "window=-1"),
        ({"kdim": 0}, "kdim=0 must be positive"),
        ({"vdim": -1}, "vdim=-1 must be positive"),
        ({"score_options": {"bogus": 1}}, r"'scaled_dot' takes no option 'bogus' \(score_options\); .*none"),
        ({"score": "additive", "score_options": {"hiden_dim": 8}}, r"'hiden_dim' .*options: \['hidden_dim'\]"),
    ],
)
def test_incompatible_options_fail_at_construction(kwargs: dict, message: str) -> None:
    args = {"embed_dim": 16, "num_heads": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(args.pop("embed_dim"), args.pop("num_heads"), **args)


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(TypeError):
        MultiHeadAttention(16, 4, heads=4)  # type: ignore[call-arg]


def test_efficient_backends_reject_masks_they_cannot_honour() -> None:
    x = torch.randn(1, 6, 16)
    with pytest.raises(ValueError, match="takes no attn_mask"):
        MultiHeadAttention(16, 4, attention="local", window=2)(x, attn_mask=causal_mask(6))
    with pytest.raises(ValueError, match="not attn_mask or window"):
        MultiHeadAttention(16, 4, attention="linear")(x, attn_mask=causal_mask(6))
    with pytest.raises(ValueError, match="equal query and key lengths"):
        MultiHeadAttention(16, 4, attention="local", window=2)(x, torch.randn(1, 7, 16))


def test_masks_that_are_not_tensors_and_inputs_of_the_wrong_width_are_named() -> None:
    module = MultiHeadAttention(16, 4)
    x = torch.randn(1, 3, 16)
    with pytest.raises(ValueError, match=r"key_padding_mask must be a torch\.Tensor, got ndarray"):
        module(x, key_padding_mask=np.zeros((1, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"attn_mask must be a torch\.Tensor, got list"):
        module(x, attn_mask=[[False] * 3] * 3)
    fusion = CrossModalAttention(16, 10, 4)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 17\), expected \(batch, length, embed_dim=16\)"):
        fusion(torch.randn(2, 5, 17), torch.randn(2, 4, 10))


@pytest.mark.parametrize("options", [{"backend": "eager"}, {"backend": "sdpa", "weights": True},
                                     {"score": "additive"}])  # fmt: skip
def test_a_learned_bias_gets_its_gradient_with_the_projections_frozen(options: dict) -> None:
    """A learned relative-position bias trained beside frozen projections: the in-place softmax,
    chosen because the scores needed no gradient, had refused autograd (``_softmax(): functions with
    out=... arguments don't support automatic differentiation``)."""
    options = dict(options)
    weights = options.pop("weights", False)
    torch.manual_seed(0)
    module = MultiHeadAttention(8, 2, **options).requires_grad_(False)
    bias = torch.nn.Parameter(torch.randn(1, 2, 5, 5) * 0.1)
    x = torch.randn(2, 5, 8)
    out = module(x, attn_mask=bias, need_weights=weights)[0]
    out.pow(2).sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    # The gradient is the one autograd gives with the projections trainable (the tracked path throughout).
    twin = MultiHeadAttention(8, 2, **options)
    twin.load_state_dict(module.state_dict())
    other = torch.nn.Parameter(bias.detach().clone())
    twin(x, attn_mask=other, need_weights=weights)[0].pow(2).sum().backward()
    torch.testing.assert_close(bias.grad, other.grad)


def test_an_adaptive_span_trains_with_the_projections_frozen() -> None:
    module = MultiHeadAttention(8, 2, attention="local", window=4, adaptive_span=4)
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(name.startswith("span."))
    module(torch.randn(2, 6, 8))[0].pow(2).sum().backward()
    spans = [p for name, p in module.named_parameters() if name.startswith("span.")]
    assert spans and all(p.grad is not None and torch.isfinite(p.grad).all() for p in spans)
