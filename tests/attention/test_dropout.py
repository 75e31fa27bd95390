"""Dropout with 16-bit mask draws: the rate asked for, on every position, unbiased, seeded, and
PyTorch's own dropout where ours does not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attend.attention import Dropout
from attend.attention.dropout import MASK_LEVELS, dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_each_element_is_dropped_with_probability_p_and_the_rest_scaled(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    out = dropout(x, p)
    dropped = out == 0
    # 400k draws: the standard error of the rate is below 0.001.
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.004)
    kept_scale = MASK_LEVELS / (MASK_LEVELS - round(p * MASK_LEVELS))
    assert torch.allclose(out[~dropped], torch.full_like(out[~dropped], kept_scale))
    # The four 16-bit slices of each 64-bit draw are all uniform (a biased slice would show here).
    lanes = dropped.flatten()[: 400 * 1000 // 4 * 4].view(-1, 4).float().mean(0)
    assert torch.allclose(lanes, torch.full_like(lanes, p), atol=0.006)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is the input


def test_the_gradient_flows_through_the_kept_elements_only() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    out = dropout(x, 0.25)
    out.sum().backward()
    assert x.grad is not None
    scale = MASK_LEVELS / (MASK_LEVELS - MASK_LEVELS // 4)
    assert torch.equal(x.grad, torch.where(out != 0, scale, 0.0))


def test_same_seed_same_mask_and_eval_or_p_zero_is_the_identity() -> None:
    x = torch.randn(8, 50)
    torch.manual_seed(3)
    first = dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.2), first)
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x
    module = Dropout(0.2)
    module.eval()
    assert module(x) is x and module.state_dict() == {}


def test_bf16_stays_bf16_and_p_of_one_drops_everything() -> None:
    x = torch.randn(4, 100, dtype=torch.bfloat16)
    assert dropout(x, 0.1).dtype == torch.bfloat16
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # PyTorch's own dropout, as for p = 1


def test_in_place_dropout_is_pytorchs() -> None:
    x = torch.ones(10, 10)
    torch.manual_seed(0)
    out = Dropout(0.5, inplace=True)(x)
    torch.manual_seed(0)
    assert out is x and torch.equal(out, F.dropout(torch.ones(10, 10), 0.5))
