"""Shared builders for the attention tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def padding_mask(lengths: list[int], max_len: int, *, left: bool = False) -> torch.Tensor:
    """Bool (B, L) key_padding_mask, True = padding, padded on the right (or the left)."""
    positions = torch.arange(max_len)[None, :]
    lengths_t = torch.tensor(lengths)[:, None]
    if left:
        return positions < (max_len - lengths_t)
    return positions >= lengths_t
