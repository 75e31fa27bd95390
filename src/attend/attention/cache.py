"""Key/value caches for incremental decoding.

An autoregressive decoder writes one token per step. Without a cache every step projects the
keys and values of the whole prefix again (and of the whole source, for cross-attention):
O(T^2) projections for T output tokens. A :class:`KeyValueCache` keeps one layer's *projected*
keys and values, ``(B, H, L, d)``, between steps, so each step projects only its new token:

* self-attention (``static=False``): the new token's key and value are appended;
* cross-attention (``static=True``): the memory's keys and values are projected on the first
  call and reused unchanged afterwards.

Beam search reorders the batch after each step (a hypothesis continues another beam's prefix):
:meth:`KeyValueCache.reorder` gathers the cached rows by index. Caches are plain tensors, so a
traced decoder step (ONNX) can take them as inputs and return them as outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KeyValueCache", "cached_causal_mask"]


@dataclass
class KeyValueCache:
    """One attention layer's projected keys and values, kept across decoding steps.

    Attributes:
        key: ``(B, H, L, d)`` projected keys of the tokens seen so far, or None before the first step.
        value: ``(B, H, L, dv)`` projected values, alongside ``key``.
        static: Keys come from a fixed memory (cross-attention): filled once, never appended to.
    """

    key: Tensor | None = None
    value: Tensor | None = None
    static: bool = False

    @property
    def length(self) -> int:
        """Cached positions (0 before the first step)."""
        return 0 if self.key is None else int(self.key.shape[2])

    @property
    def filled(self) -> bool:
        return self.key is not None

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' keys and values; return every cached position's."""
        if self.static and self.key is not None:
            raise RuntimeError("a static (cross-attention) cache is filled once; reset it to change the memory")
        if self.key is not None and self.value is not None:
            key = torch.cat([self.key, key], dim=2)
            value = torch.cat([self.value, value], dim=2)
        self.key, self.value = key, value
        return key, value

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (long ``(B',)``), e.g. the beams that survived a search step."""
        if self.key is not None and self.value is not None:
            self.key = self.key.index_select(0, index)
            self.value = self.value.index_select(0, index)


def cached_causal_mask(q_len: int, past: int, device: torch.device | None = None) -> Tensor:
    """Bool attn_mask ``(Lq, past + Lq)`` (True = forbidden) for ``q_len`` new queries after ``past``
    cached positions: query ``i`` sits at position ``past + i`` and sees keys up to it (causal,
    aligned to the end of the keys rather than to their start)."""
    q_pos = torch.arange(q_len, device=device)[:, None] + past
    k_pos = torch.arange(past + q_len, device=device)[None, :]
    return k_pos > q_pos
