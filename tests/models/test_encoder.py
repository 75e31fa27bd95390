"""The Transformer-encoder classifier's unpadded blocks give the padded layout's answers.

Tolerance 1e-5: packing only moves rows; what differs is the float rounding of GEMMs of another
height (measured ~1e-7 here).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attend.models import build


def _batch(lengths: list[int], vocab: int = 500) -> dict[str, Tensor]:
    length = max(lengths)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": torch.randint(1, vocab, (len(lengths), length)) * mask, "attention_mask": mask}


def _model(attention: dict[str, Any], pooling: str) -> Any:
    torch.manual_seed(0)
    config = {"model_type": "encoder", "num_labels": 3, "vocab_size": 500, "dim": 32, "num_layers": 2,
              "num_heads": 4, "pooling": pooling, "attention": attention, "dropout": 0.0}  # fmt: skip
    return build(config).eval()


@pytest.mark.parametrize(
    "attention",
    [{}, {"attention": "local", "window": 2}, {"attention": "linear"}, {"adaptive_span": 8}, {"score": "additive"}],
    ids=["sdpa", "local", "linear", "adaptive_span", "additive"],
)
@pytest.mark.parametrize("pooling", ["attention", "mean", "cls"])
def test_unpadded_blocks_match_the_padded_layout(attention: dict[str, Any], pooling: str) -> None:
    model = _model(attention, pooling)
    batch = _batch([9, 2, 6, 1])
    rows: list[tuple[int, ...]] = []
    model.blocks[0].ffn[0].register_forward_hook(lambda m, i, o: rows.append(tuple(i[0].shape)))
    outputs, grads = [], []
    for unpad in (True, False):
        model.unpad = unpad
        model.zero_grad()
        output = model(batch, output_attentions=True)
        F.cross_entropy(output.logits, torch.tensor([0, 1, 2, 0])).backward()
        outputs.append(output)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert rows == [(18, 32), (4, 9, 32)]  # 18 real tokens packed, then the padded (B, L, E)
    unpadded, padded = outputs
    torch.testing.assert_close(unpadded.logits, padded.logits, atol=1e-5, rtol=0)
    real = batch["attention_mask"].bool()
    assert unpadded.hidden_states is not None and padded.hidden_states is not None
    torch.testing.assert_close(unpadded.hidden_states[real], padded.hidden_states[real], atol=1e-5, rtol=0)
    if pooling == "attention":
        torch.testing.assert_close(unpadded.pooling_weights, padded.pooling_weights, atol=1e-6, rtol=0)
    assert unpadded.attentions is not None and padded.attentions is not None
    for ours, reference in zip(unpadded.attentions, padded.attentions, strict=True):
        rows_real = real[:, None, :, None].expand_as(ours)
        torch.testing.assert_close(ours[rows_real], reference[rows_real], atol=1e-6, rtol=0)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_padding_cost_follows_the_switch() -> None:
    from attend.models.encoder import UNPADDED_PADDING_COST

    model = _model({}, "attention")
    assert model.padding_cost == UNPADDED_PADDING_COST < 1
    model.unpad = False
    assert model.padding_cost == 1.0
