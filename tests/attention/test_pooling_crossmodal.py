"""Attention pooling and cross-modal attention."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attend.attention import AttentionPooling, CrossModalAttention, MultiHeadAttention


def test_pooling_is_the_weighted_sum_of_its_weights() -> None:
    pool = AttentionPooling(8, hidden_dim=5)
    x = torch.randn(3, 6, 8)
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    kpm[2] = True
    pooled, weights = pool(x, kpm)
    assert weights.shape == (3, 6)
    torch.testing.assert_close(weights[:2].sum(-1), torch.ones(2))
    assert (weights[1, 4:] == 0).all() and (weights[2] == 0).all() and (pooled[2] == 0).all()
    torch.testing.assert_close(pooled, torch.einsum("bl,ble->be", weights, x))
    expected = torch.softmax(torch.tanh(pool.proj(x[0])) @ pool.context, dim=0)
    torch.testing.assert_close(weights[0], expected)


def test_pooling_learns_to_find_a_planted_token() -> None:
    torch.manual_seed(0)
    pool = AttentionPooling(4)
    head = torch.nn.Linear(4, 2)
    optimiser = torch.optim.Adam([*pool.parameters(), *head.parameters()], lr=0.05)
    for _ in range(150):
        x = torch.randn(32, 10, 4)
        marker = torch.randint(0, 10, (32,))
        label = torch.randint(0, 2, (32,))
        x[torch.arange(32), marker, 0] = 3.0  # the planted token carries the label in feature 1
        x[torch.arange(32), marker, 1] = label.float() * 4 - 2
        pooled, weights = pool(x)
        loss = torch.nn.functional.cross_entropy(head(pooled), label)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    top = weights.argmax(-1)
    assert (top == marker).float().mean() > 0.9


def test_pooling_rejects_bad_shapes() -> None:
    pool = AttentionPooling(8)
    with pytest.raises(ValueError, match=r"x has shape \(2, 8\)"):
        pool(torch.randn(2, 8))
    with pytest.raises(ValueError, match="key_padding_mask must be a bool tensor"):
        pool(torch.randn(2, 3, 8), torch.zeros(2, 3))


def test_target_and_cross_modal_attention_check_their_padding_masks_by_name() -> None:
    """TargetAttention broadcast a (B, 1) mask over the history (every weight 0) and passed an integer one
    to masked_fill; CrossModalAttention named its context_padding_mask key_padding_mask."""
    from attend.attention.target import TargetAttention

    target, history, candidate = TargetAttention(8), torch.randn(2, 4, 8), torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2, 1\), expected .* \(2, 4\)"):
        target(history, candidate, torch.zeros(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"got dtype torch.int64 \(an integer mask with 1 = keep is `mask == 0`\)"):
        target(history, candidate, torch.ones(2, 4, dtype=torch.long))
    # Its inputs are named too, as AttentionPooling's are (a float64 candidate failed inside a matmul).
    with pytest.raises(ValueError, match=r"^candidate has dtype torch.float64 and the module's weights torch.float32"):
        target(history, candidate.double())
    with pytest.raises(TypeError, match=r"^history must be a torch.Tensor, got ndarray"):
        target(history.numpy(), candidate)
    fused = CrossModalAttention(8, 6, 2)
    with pytest.raises(ValueError, match=r"context_padding_mask has shape \(2, 5\), expected .* \(2, 3\)"):
        fused(torch.randn(2, 3, 8), torch.randn(2, 3, 6), context_padding_mask=torch.zeros(2, 5, dtype=torch.bool))


def test_text_attends_to_image_patches_and_tabular_features() -> None:
    text = torch.randn(2, 5, 32)  # token embeddings
    patches = torch.randn(2, 16, 48)  # e.g. a 4x4 grid of image-patch features
    tabular = torch.randn(2, 6, 8)  # 6 tabular features, each embedded to 8 dims
    for context in (patches, tabular):
        block = CrossModalAttention(32, context.shape[-1], num_heads=4)
        padding = torch.zeros(2, context.shape[1], dtype=torch.bool)
        padding[1, -2:] = True
        fused, weights = block(text, context, context_padding_mask=padding, need_weights=True)
        assert fused.shape == text.shape
        assert weights.shape == (2, 4, 5, context.shape[1])
        assert (weights[1, ..., -2:] == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    with pytest.raises(ValueError, match="kdim=48"):
        CrossModalAttention(32, 48, num_heads=4)(text, tabular)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # accepted and read otherwise, or failed inside torch
        (lambda: MultiHeadAttention(8, 2, window=2.5), r"window=2\.5 must be an integer"),
        (lambda: MultiHeadAttention(8, 2, attention="local", window=True), r"window=True must be an integer"),
        (lambda: MultiHeadAttention(8, 2, kdim=3.5), r"kdim=3\.5 must be an integer"),
        (lambda: MultiHeadAttention(8, 2, attention="performer", score="dot"), r"cannot be combined with score='dot'"),
        (lambda: AttentionPooling(6, hidden_dim=0), r"hidden_dim=0 must be positive"),
        (lambda: MultiHeadAttention(8, 2, score="additive", score_options={"hidden_dim": 0}),
         r"hidden_dim=0 must be positive"),
        (lambda: CrossModalAttention(8, 5, 2, attention_options={"kdim": 5}),
         r"attention_options \['kdim'\]: CrossModalAttention sets them itself"),
        (lambda: CrossModalAttention(8, 5, 2, attention_options={"attention": "local", "window": 2}),
         r"attention='local' needs a query and a context of one length"),
        # nan had made every training loss NaN; strings had been read as True; 0 had been named max_span
        (lambda: MultiHeadAttention(8, 2, adaptive_span=3, span_loss=float("nan")),
         r"span_loss=nan must be a finite number >= 0"),
        (lambda: MultiHeadAttention(8, 2, gate="no"), r"gate='no' must be True or False"),
        (lambda: MultiHeadAttention(8, 2, bias="false"), r"bias='false' must be True or False"),
        (lambda: MultiHeadAttention(8, 2, learn_temperature="yes"), r"learn_temperature='yes' must be True or False"),
        (lambda: MultiHeadAttention(8, 2, dropout="0.1"), r"dropout='0.1' must be in \[0, 1\)"),
        (lambda: MultiHeadAttention(8, 2, adaptive_span=0), r"adaptive_span=0 must be positive"),
        (lambda: CrossModalAttention(8, 5, 2, ffn_dim=-1), r"ffn_dim=-1 must be a whole number >= 0"),
        (lambda: CrossModalAttention(8, 5, 2, attention_options={"num_heads": 4}),
         r"attention_options \['num_heads'\]: CrossModalAttention sets them itself"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_by_name(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_call_arguments_are_refused_by_name() -> None:
    module = MultiHeadAttention(8, 2)
    x = torch.randn(1, 3, 8)
    with pytest.raises(ValueError, match=r"is_causal='no' must be True or False"):  # it had run causal attention
        module(x, is_causal="no")  # type: ignore[arg-type]
    fusion = CrossModalAttention(8, 5, 2)
    with pytest.raises(ValueError, match=r"context has dtype torch.int64: attention reads floating-point features"):
        fusion(x, torch.ones(1, 4, 5, dtype=torch.long))  # it had failed inside LayerNorm ("mixed dtype")
    with pytest.raises(ValueError, match=r"need_weights='no' must be True or False"):  # the weights had come back
        module(x, need_weights="no")  # type: ignore[arg-type]
    # float64 features met float32 weights inside a matmul ("mat1 and mat2 must have the same dtype")
    with pytest.raises(ValueError, match=r"query has dtype torch.float64 and the module's weights torch.float32"):
        module(x.double())
    with pytest.raises(ValueError, match=r"x has dtype torch.float64 and the module's weights torch.float32"):
        fusion(x.double(), torch.randn(1, 4, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast converts them: not refused
        assert module(x.bfloat16())[0].shape == (1, 3, 8)
    assert module.double()(x.double())[0].dtype == torch.float64
    pooling = AttentionPooling(8)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got ndarray"):  # it had failed on x.dim()
        pooling(x.numpy())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x has dtype torch.int64: attention reads floating-point features"):
        pooling(torch.ones(1, 3, 8, dtype=torch.long))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao's own, as at load
def test_target_attention_runs_after_dynamic_int8() -> None:
    """Its input check read its unit's first parameter for the dtype: dynamic int8 leaves the unit
    none (a StopIteration)."""
    import copy

    from torch import nn

    from attend.attention.target import TargetAttention

    torch.manual_seed(0)
    plain = TargetAttention(8, activation="relu").eval()
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(plain), {nn.Linear}, dtype=torch.qint8)
    history, candidate = torch.randn(2, 5, 8), torch.randn(2, 8)
    summary, weights = quantized(history, candidate)
    assert summary.shape == (2, 8) and weights.shape == (2, 5)
    torch.testing.assert_close(weights, plain(history, candidate)[1], atol=0.05, rtol=0)
