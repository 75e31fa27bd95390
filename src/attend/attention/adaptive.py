"""Adaptive attention: heads that learn how far to look.

:class:`AdaptiveSpan` implements Sukhbaatar et al. 2019, "Adaptive Attention Span in
Transformers". Each head ``h`` learns a span ``z_h``; a key at distance ``x`` from the query is
weighted by the soft ramp ``m(x) = clamp((R + z_h - x) / R, 0, 1)`` and the weights are
renormalised. Since ``m * exp(s) / sum(m * exp(s)) == softmax(s + log m)``, the span is an
additive bias ``log m`` (``-inf`` past the ramp), which the fused kernel accepts like any other
mask, so adaptive span does not leave the fast path. ``penalty()`` is the paper's L1 term on
the spans, to be added to the training loss so that heads only keep the context they use.

The other two adaptive mechanisms live where they act: the learnable per-head temperature on
:class:`attend.attention.scores.Score`, and the sigmoid output gate on
:class:`attend.attention.MultiHeadAttention` (``gate=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AdaptiveSpan", "clamp_spans"]


class AdaptiveSpan(nn.Module):
    """Learned per-head attention span with a soft ramp.

    Args:
        num_heads: One span per head.
        max_span: Largest span ``S`` a head can learn, in tokens.
        ramp: Width ``R`` of the soft edge, in tokens; it keeps the span differentiable.
        init_fraction: Initial span as a fraction of ``max_span`` (1.0: start seeing everything).
    """

    def __init__(self, num_heads: int, max_span: int, *, ramp: int = 32, init_fraction: float = 1.0) -> None:
        super().__init__()
        if max_span <= 0:
            raise ValueError(f"max_span={max_span} must be positive")
        if ramp <= 0:
            raise ValueError(f"ramp={ramp} must be positive")
        if not 0.0 <= init_fraction <= 1.0:
            raise ValueError(f"init_fraction={init_fraction} must be in [0, 1]")
        self.max_span = max_span
        self.ramp = ramp
        self.span_fraction = nn.Parameter(torch.full((num_heads,), float(init_fraction)))

    @property
    def spans(self) -> Tensor:
        """Current span of each head in tokens, ``(H,)``."""
        return self.span_fraction.clamp(0.0, 1.0) * self.max_span

    def bias(self, distance: Tensor, dtype: torch.dtype) -> Tensor:
        """Additive ``log m(distance)`` per head: ``(H, *distance.shape)``, ``-inf`` past the ramp.

        Args:
            distance: Non-negative query-key distances, any shape ending in ``(Lq, Lk)``.
            dtype: Float dtype of the scores the bias is added to.
        """
        spans = self.spans.to(dtype).view(-1, *([1] * distance.dim()))
        ramp_value = ((self.ramp + spans - distance.to(dtype)) / self.ramp).clamp(0.0, 1.0)
        visible = ramp_value > 0
        # log(0) would be -inf with an infinite derivative (NaN after the clamp's zero grad),
        # so the cut-off keys get a constant -inf and the log only sees positive values.
        safe_log = torch.log(torch.where(visible, ramp_value, torch.ones_like(ramp_value)))
        return torch.where(visible, safe_log, torch.full_like(ramp_value, float("-inf")))

    def clamp_(self) -> AdaptiveSpan:
        """Bring each span back into ``[0, max_span]``: call it after every optimiser step (the paper's
        code does; :class:`~attend.training.Trainer` does). Past either end the clamp in
        :attr:`spans` gives the span no gradient, from the task or the penalty, so a head that one
        step pushed below 0 or above 1 had stayed there for the rest of training."""
        with torch.no_grad():
            self.span_fraction.clamp_(0.0, 1.0)
        return self

    def penalty(self) -> Tensor:
        """The paper's span loss, ``max_span * mean(z / max_span)``: add ``coef * penalty()`` to the loss."""
        return self.spans.mean()

    def extra_repr(self) -> str:
        return f"num_heads={self.span_fraction.numel()}, max_span={self.max_span}, ramp={self.ramp}"


def clamp_spans(model: nn.Module) -> None:
    """:meth:`AdaptiveSpan.clamp_` every adaptive span of ``model``: after each optimiser step of a
    training loop of one's own."""
    for module in model.modules():
        if isinstance(module, AdaptiveSpan):
            module.clamp_()
