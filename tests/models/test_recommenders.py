"""SASRec, DIN, target attention and the multimodal item encoder: shapes, masks, causality, fusion."""

from __future__ import annotations

import pytest
import torch

from attend.attention import TargetAttention, capture_attention
from attend.models import build
from attend.models.items import ItemEncoder

FEATURES = {"categorical": {"genres": [6, 3]}, "numeric": ["year"], "text_dim": 8}


def _sasrec(**options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build({"model_type": "sasrec", "num_items": 30, "dim": 16, "num_heads": 2, "max_length": 12,
                  "dropout": 0.0, **options}).eval()  # fmt: skip


def test_sasrec_shapes_and_the_one_matrix_product_over_the_catalogue() -> None:
    model = _sasrec()
    items = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    out = model({"items": items})
    assert out.logits.shape == (2, 5, 31) and out.hidden_states.shape == (2, 5, 16)
    # The last position's scores are exactly score_last, and padding positions hold zero states.
    assert torch.allclose(out.logits[:, -1], model.score_last(items), atol=1e-5)
    assert torch.equal(out.hidden_states[0, :2], torch.zeros(2, 16))
    select = items > 0
    assert model({"items": items, "select": select}).logits.shape == (int(select.sum()), 31)
    candidates = torch.randint(1, 31, (2, 5, 4))
    assert model({"items": items, "candidates": candidates}).logits.shape == (2, 5, 4)


def test_sasrec_never_sees_the_future() -> None:
    """Changing the item at t+1 leaves every prediction at positions <= t unchanged."""
    model = _sasrec(num_layers=3)
    items = torch.tensor([[0, 4, 9, 2, 7, 11, 3]])
    before = model({"items": items}).logits
    for t in range(1, items.shape[1] - 1):
        changed = items.clone()
        changed[0, t + 1 :] = torch.randint(1, 31, (items.shape[1] - t - 1,))
        after = model({"items": changed}).logits
        assert torch.allclose(before[0, : t + 1], after[0, : t + 1], atol=1e-5), t


def test_sasrec_padding_does_not_change_the_prediction_and_attention_is_causal() -> None:
    model = _sasrec()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 3, 4, 5]])
    assert torch.allclose(model.score_last(short), model.score_last(padded), atol=1e-5)
    with capture_attention(model) as capture:
        model.score_last(padded)
    for weights in capture.weights:
        assert weights.shape == (1, 2, 6, 6)
        assert torch.equal(weights[0, :, :, :3], torch.zeros(2, 6, 3))  # padding keys get nothing
        assert torch.all(torch.triu(weights[0], diagonal=1) == 0)  # nor do later positions


def test_din_weights_are_raw_by_default_normalised_on_request_and_zero_on_padding() -> None:
    torch.manual_seed(0)
    batch = {"user": torch.tensor([1, 0]), "candidate": torch.tensor([3, 4]),
             "history": torch.tensor([[0, 0, 1, 2], [5, 6, 7, 8]])}  # fmt: skip
    raw = build({"model_type": "din", "num_items": 10, "num_users": 3, "dim": 8}).eval()
    out = raw(batch, output_attentions=True)
    assert out.logits.shape == (2,) and out.pooling_weights.shape == (2, 4)
    assert torch.equal(out.pooling_weights[0, :2], torch.zeros(2))
    assert not torch.allclose(out.pooling_weights[1].sum(), torch.tensor(1.0))
    normalised = build({"model_type": "din", "num_items": 10, "num_users": 3, "dim": 8, "normalise": True}).eval()
    weights = normalised(batch, output_attentions=True).pooling_weights
    assert torch.allclose(weights.sum(-1), torch.ones(2)) and torch.equal(weights[0, :2], torch.zeros(2))


def test_din_offsets_add_a_fixed_wide_part_to_the_logit() -> None:
    torch.manual_seed(0)
    model = build({"model_type": "din", "num_items": 10, "num_users": 3, "dim": 8, "offsets": True}).eval()
    batch = {"user": torch.tensor([1, 2]), "candidate": torch.tensor([3, 4]), "history": torch.tensor([[1, 2], [0, 5]])}
    before = model(batch).logits
    model.user_offset[1] = 2.0
    model.item_offset[4] = -1.5
    model.offset_intercept.fill_(0.25)
    after = model(batch).logits
    torch.testing.assert_close(after - before, torch.tensor([2.25, -1.25]))
    assert {"user_offset", "item_offset", "offset_intercept"} <= set(model.state_dict())


def test_target_attention_weighs_by_the_candidate_and_is_captured() -> None:
    torch.manual_seed(0)
    unit = TargetAttention(4, (8,))
    history = torch.randn(2, 5, 4)
    a, wa = unit(history, torch.randn(2, 4))
    _, wb = unit(history, torch.randn(2, 4))
    assert a.shape == (2, 4) and not torch.allclose(wa, wb)  # a different candidate, different weights
    with capture_attention(unit) as capture:
        unit(history, torch.randn(2, 4), key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    assert capture.records[0].kind == "target" and capture.records[0].weights.shape == (2, 5)
    with pytest.raises(ValueError, match="candidate has shape"):
        unit(history, torch.randn(3, 4))


@pytest.mark.parametrize("fusion", ["gated", "attention"])
def test_item_encoder_fuses_every_modality_and_reports_their_weights(fusion: str) -> None:
    torch.manual_seed(0)
    encoder = ItemEncoder(5, 16, {**FEATURES, "fusion": fusion})
    encoder.set_features({"cat_0": torch.tensor([[0, 0, 0], [1, 2, 0], [3, 0, 0], [1, 0, 0], [4, 5, 6], [0, 0, 0]]),
                          "numeric": torch.randn(6, 2), "text": torch.randn(6, 8)})  # fmt: skip
    table = encoder()
    assert table.shape == (6, 16) and torch.equal(table[0], torch.zeros(16))
    weights = encoder.modality_weights(torch.tensor([1, 2]))
    assert set(weights) == {"id", "genres", "numeric", "text"}
    assert torch.allclose(torch.tensor([sum(w[i] for w in weights.values()) for i in range(2)]), torch.ones(2))
    # The features are part of the model: a feature change changes the item's vector.
    before = encoder()[4].clone()
    encoder.set_features({"text": torch.zeros(6, 8)})
    assert not torch.allclose(before, encoder()[4])
    with pytest.raises(ValueError, match="shape"):
        encoder.set_features({"text": torch.zeros(6, 9)})
    assert {"cat_0", "numeric", "text"} <= set(encoder.state_dict())  # saved with the weights


def test_recommender_configs_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="loss="):
        build({"model_type": "sasrec", "num_items": 5, "loss": "hinge"})
    with pytest.raises(ValueError, match="fusion="):
        build({"model_type": "sasrec", "num_items": 5, "items": {"fusion": "concat"}})
    with pytest.raises(ValueError, match="user_dropout"):
        build({"model_type": "din", "num_items": 5, "num_users": 2, "user_dropout": 1.5})
