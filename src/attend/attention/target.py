"""Target attention: one candidate weighs each item of a history (DIN's activation unit).

Zhou et al. 2018 ("Deep Interest Network"): a user's interest in a candidate item is read from
the past items that resemble it. Each history item ``h_t`` is scored against the candidate ``c``
by a small MLP over ``[h_t, c, h_t - c, h_t * c]`` (the paper used the outer product; the
difference and the element-wise product are the common, cheaper choice), and the history is
summarised as ``sum_t w_t h_t``. The paper keeps the raw scores as weights, *not* softmax-
normalised, "to reserve the intensity of user interests": a history with many items like the
candidate sums to a larger vector than one with a single such item. ``normalise=True`` applies a
softmax over the real history items instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attend.attention._ops import check_features
from attend.attention.capture import Recordable
from attend.attention.masks import check_padding_mask

__all__ = ["TargetAttention"]


class TargetAttention(Recordable, nn.Module):
    """Weigh a history ``(B, L, E)`` by its relevance to a candidate ``(B, E)``.

    Args:
        embed_dim: Feature size ``E`` of history items and candidate.
        hidden: Widths of the activation unit's hidden layers (the paper's 80 and 40).
        normalise: Softmax the weights over the real history items (default: raw sigmoid-free
            scores, as in the paper).
        activation: ``"prelu"`` (the paper's choice before Dice) or ``"relu"``.
    """

    capture_kind = "target"

    def __init__(
        self, embed_dim: int, hidden: Sequence[int] = (80, 40), *, normalise: bool = False, activation: str = "prelu"
    ) -> None:
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim={embed_dim} must be positive")
        if activation not in ("prelu", "relu"):
            raise ValueError(f"activation={activation!r}; choose 'prelu' or 'relu'")
        layers: list[nn.Module] = []
        width = 4 * embed_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.PReLU() if activation == "prelu" else nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.embed_dim = embed_dim
        self.normalise = normalise
        self.unit = nn.Sequential(*layers)

    def forward(
        self, history: Tensor, candidate: Tensor, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(summary (B, E), weights (B, L))``; padding positions weigh exactly zero.

        Args:
            history: Past items ``(B, L, E)``.
            candidate: The item being scored ``(B, E)``.
            key_padding_mask: Bool ``(B, L)``, True = padding.
        """
        # None where the unit has no parameters left (dynamic int8 keeps its Linear weights packed)
        weights_dtype = next((p.dtype for p in self.unit.parameters()), None)
        check_features("history", history, weights_dtype)  # a numpy array had failed on history.dim()
        check_features("candidate", candidate, weights_dtype)  # float64 had failed in a matmul, unnamed
        if history.dim() != 3 or history.shape[-1] != self.embed_dim:
            raise ValueError(
                f"history has shape {tuple(history.shape)}, expected (batch, length, embed_dim={self.embed_dim})"
            )
        if candidate.shape != (history.shape[0], self.embed_dim):
            raise ValueError(f"candidate has shape {tuple(candidate.shape)}, expected ({history.shape[0]}, "
                             f"{self.embed_dim})")  # fmt: skip
        if key_padding_mask is not None:
            check_padding_mask(key_padding_mask, history.shape[0], history.shape[1])
        target = candidate.unsqueeze(1).expand_as(history)
        scores = self.unit(torch.cat([history, target, history - target, history * target], dim=-1)).squeeze(-1)
        if self.normalise:
            if key_padding_mask is not None:
                empty = key_padding_mask.all(-1, keepdim=True)
                scores = scores.masked_fill(key_padding_mask & ~empty, float("-inf"))
                weights = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
            else:
                weights = torch.softmax(scores, dim=-1)
        else:
            weights = scores if key_padding_mask is None else scores.masked_fill(key_padding_mask, 0.0)
        captures = self._captures()
        if captures:
            self._record(captures, weights)
        return (weights.unsqueeze(-1) * history).sum(1), weights
