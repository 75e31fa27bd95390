"""Every registered model, by iterating the registry: it builds, trains a step, and rebuilds from its config."""

from __future__ import annotations

import pytest
import torch

from attend.models import MODELS, build, config_from_dict
from tests.conftest import SMALL_MODELS


def _batch(vocab: int = 50) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, vocab, (3, 7), generator=generator)
    attention_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


def test_every_registered_model_has_a_small_config_here() -> None:
    assert set(MODELS) <= set(SMALL_MODELS), f"add a small config for {sorted(set(MODELS) - set(SMALL_MODELS))}"


@pytest.mark.parametrize("name", sorted(MODELS))
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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_round_trips_through_json_and_rebuilds_the_same_model(name: str) -> None:
    torch.manual_seed(0)
    model = build({"model_type": name, **SMALL_MODELS[name]}).eval()
    config = model.config.to_dict()
    rebuilt = build(config_from_dict(config)).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(_batch()).logits, model(_batch()).logits)
