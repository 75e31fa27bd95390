"""Dropout with a cheaper mask on CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element (``bernoulli_``), and that draw was
a fifth of a translator's training step on 2 cores (``python benchmarks/dropout.py``). Here the
mask comes from 16-bit slices of 64-bit random integers (a quarter of the generator calls), kept
where the slice is at least ``p * 65536`` above its minimum, so the drop probability is ``p``
rounded to a multiple of 1/65536 (0.1 becomes 0.100006). Survivors are scaled by the inverse of
the rounded keep probability, so the expectation is the input, as with :func:`torch.nn.functional.dropout`.

Elsewhere (GPU, a traced or compiled graph, ``p`` of 1) it is PyTorch's dropout, which is fused there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MASK_LEVELS", "Dropout", "dropout"]

#: Drop probabilities are rounded to a multiple of 1 / MASK_LEVELS (16-bit mask draws).
MASK_LEVELS = 1 << 16


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` (rounded to 1/65536) and scale the rest
    by the inverse keep probability; ``x`` itself when not training or ``p`` is 0."""
    if not training or p == 0.0:
        return x
    cut = round(p * MASK_LEVELS)
    if x.device.type != "cpu" or not 0 < cut < MASK_LEVELS or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return F.dropout(x, p, training)
    n = x.numel()
    draws = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64)
    keep = draws.view(torch.int16)[:n].view(x.shape) >= cut - MASK_LEVELS // 2
    return torch.where(keep, x, 0.0) * (MASK_LEVELS / (MASK_LEVELS - cut))


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` through :func:`dropout` (same argument, same state dict: none)."""

    def forward(self, input: Tensor) -> Tensor:
        if self.inplace:
            return F.dropout(input, self.p, self.training, inplace=True)
        return dropout(input, self.p, self.training)
