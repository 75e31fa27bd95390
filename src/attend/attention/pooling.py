"""Attention pooling: a learned summary of a sequence, with the weights that made it.

Yang et al. 2016 ("Hierarchical Attention Networks"): each position ``h_t`` is scored against
a learned context vector ``u`` through a small tanh layer, ``s_t = u . tanh(W h_t + b)``, and
the sequence is summarised as ``sum_t softmax(s)_t h_t``. The weights say directly which
tokens the summary, and so the classifier built on it, rests on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attend.attention._ops import check_features
from attend.attention.capture import Recordable
from attend.attention.masks import check_padding_mask

__all__ = ["AttentionPooling"]


class AttentionPooling(Recordable, nn.Module):
    """Additive attention from a sequence ``(B, L, E)`` to one vector ``(B, E)``.

    Args:
        embed_dim: Feature size ``E`` of the sequence.
        hidden_dim: Width of the tanh scoring layer (default ``embed_dim``).
    """

    capture_kind = "pooling"

    def __init__(self, embed_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim={embed_dim} must be positive")
        if hidden_dim is not None and hidden_dim <= 0:  # 0 had been read as "the default"
            raise ValueError(f"hidden_dim={hidden_dim} must be positive (None: embed_dim)")
        hidden = embed_dim if hidden_dim is None else hidden_dim
        self.embed_dim = embed_dim
        self.proj = nn.Linear(embed_dim, hidden)
        self.context = nn.Parameter(torch.empty(hidden).normal_(0.0, hidden**-0.5))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(pooled (B, E), weights (B, L))``; a fully padded row pools to zeros.

        Args:
            x: Sequence ``(B, L, E)``.
            key_padding_mask: Bool ``(B, L)``, True = padding (never attended).
        """
        check_features("x", x, self.context.dtype)  # a numpy array had failed on x.dim()
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (batch, length, embed_dim={self.embed_dim})")
        scores = torch.tanh(self.proj(x)) @ self.context  # (B, L)
        empty = None
        if key_padding_mask is not None:
            check_padding_mask(key_padding_mask, x.shape[0], x.shape[1])
            empty = key_padding_mask.all(-1, keepdim=True)  # (B, 1)
            # Fully padded rows keep finite scores (then zeroed) so no NaN reaches the gradients.
            scores = scores.masked_fill(key_padding_mask & ~empty, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if empty is not None:
            weights = weights.masked_fill(empty, 0.0)
        captures = self._captures()
        if captures:
            self._record(captures, weights)
        pooled = (weights.unsqueeze(-1) * x).sum(1)  # (B, E)
        return pooled, weights
