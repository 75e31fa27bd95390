"""Every registered model, by iterating the registry: it builds, trains a step, and rebuilds from its config."""

from __future__ import annotations

import pytest
import torch

from attend.models import MODELS, build, config_from_dict
from tests.conftest import SMALL_MODELS, SMALL_RECOMMENDERS, SMALL_SEQ2SEQ


def _batch(vocab: int = 50) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, vocab, (3, 7), generator=generator)
    attention_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


def _recommender_batch(name: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    history = torch.randint(1, 21, (3, 6), generator=generator)
    history[1, :2] = 0
    history[2, :5] = 0
    if name == "sasrec":
        return {"items": history}
    return {"user": torch.tensor([1, 0, 4]), "candidate": torch.tensor([3, 5, 7]), "history": history}


def _with_features(model: torch.nn.Module) -> torch.nn.Module:
    """Fill the item feature buffers with something other than zeros, so their projections learn."""
    generator = torch.Generator().manual_seed(1)
    for name, buffer in model.item_encoder.named_buffers():
        filled = torch.randint(0, 5, buffer.shape, generator=generator) if buffer.dtype == torch.long else \
            torch.randn(buffer.shape, generator=generator)  # fmt: skip
        model.item_encoder.set_features({name: filled})
    return model


def test_every_registered_model_has_a_small_config_here() -> None:
    small = set(SMALL_MODELS) | set(SMALL_RECOMMENDERS) | set(SMALL_SEQ2SEQ)
    assert set(MODELS) <= small, f"add a small config for {sorted(set(MODELS) - small)}"


@pytest.mark.parametrize("name", sorted(SMALL_RECOMMENDERS))
def test_recommenders_learn_in_every_parameter_and_round_trip_through_json(name: str) -> None:
    torch.manual_seed(0)
    model = _with_features(build({"model_type": name, **SMALL_RECOMMENDERS[name]})).train()
    batch = _recommender_batch(name)
    logits = model(batch).logits
    assert torch.isfinite(logits).all()
    logits.float().pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"parameters without a gradient: {missing}"
    model.eval()
    rebuilt = build(config_from_dict(model.config.to_dict())).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch).logits, model(batch).logits)


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_forward_backward_no_nan_and_every_parameter_learns(name: str) -> None:
    torch.manual_seed(0)
    model = build({"model_type": name, **SMALL_MODELS[name], "num_labels": 3})
    model.train()
    output = model(_batch(), output_attentions=True)
    assert output.logits.shape == (3, 3) and torch.isfinite(output.logits).all()
    torch.nn.functional.cross_entropy(output.logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"parameters without a gradient: {missing}"
    for weights in output.attentions or []:
        assert torch.isfinite(weights).all()


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_config_round_trips_through_json_and_rebuilds_the_same_model(name: str) -> None:
    torch.manual_seed(0)
    model = build({"model_type": name, **SMALL_MODELS[name]}).eval()
    config = model.config.to_dict()
    rebuilt = build(config_from_dict(config)).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(_batch()).logits, model(_batch()).logits)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "encoder", "ffn_dim": -5}, r"ffn_dim=-5 must be at least 1"),  # a torch traceback
        ({"model_type": "encoder", "ffn_dim": 0}, r"ffn_dim=0 must be at least 1"),  # 4 * dim in silence
        ({"model_type": "bilstm_attention", "attention_dim": 0}, r"attention_dim=0 must be at least 1"),
        ({"model_type": "encoder", "pad_id": -1}, r"pad_id=-1 must be in \[0, vocab_size=20\)"),  # froze the last row
        ({"model_type": "bilstm_attention", "pad_id": 20}, r"pad_id=20 must be in \[0, vocab_size=20\)"),
    ],
)
def test_widths_and_the_padding_row_are_checked(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build({**config, "num_labels": 2, "vocab_size": 20})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # "got multiple values for argument 'num_heads'" had come from inside the model
        ({"model_type": "encoder", "attention": {"num_heads": 2}},
         r"attention options \['num_heads'\] are set by the encoder itself"),
        ({"model_type": "seq2seq", "attention": {"embed_dim": 8}},
         r"attention options \['embed_dim'\] are set by the model itself"),
        # the errors had named dropout= and max_span=, which the config does not have
        ({"model_type": "encoder", "attention": {"attention": "linear"}, "attention_dropout": 0.1},
         r"attention_dropout=0.1 cannot be combined with attention 'linear'"),
        ({"model_type": "encoder", "attention": {"adaptive_span": 0}}, r"adaptive_span=0 must be positive"),
        # a softmax over one label, which answered it always
        ({"model_type": "encoder", "num_labels": 1}, r"num_labels=1: a single-label classifier needs at least two"),
    ],
)  # fmt: skip
def test_attention_options_are_refused_under_the_configs_own_names(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(config)


def test_one_label_is_a_multi_label_model() -> None:
    model = build({"model_type": "encoder", "vocab_size": 20, "dim": 8, "num_heads": 2, "num_layers": 1,
                   "num_labels": 1, "multi_label": True})  # fmt: skip
    assert model.config.num_labels == 1
