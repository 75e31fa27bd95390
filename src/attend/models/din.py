"""DIN: the probability that a user likes a candidate item, read from the past items like it.

Zhou et al. 2018 ("Deep Interest Network for Click-Through Rate Prediction"). The user's
behaviour history (here: the items they liked before the event) is weighed against the candidate
by :class:`~attend.attention.TargetAttention` (the activation unit; weights not softmax-normalised
by default, as in the paper), summed into an interest vector, and an MLP over
``[user, interest, candidate, interest * candidate]`` plus a user and an item bias gives the
logit. The weights are the explanation: which past items made this candidate likely.

A user the model has not seen (a history given directly) uses the reserved user 0; training
replaces the user with 0 for a share of events (``user_dropout``) so that row is learned.

With ``offsets`` (the default of the CTR task) the logit also adds fixed per-user and per-item
offsets from a bias-only logistic regression fitted first (a "wide" part, as in Wide & Deep): on
small logs the network alone overfits the biases (MovieLens-100K: AUC 0.768 alone vs 0.775 for
the regression), while on top of them it only has to learn what the history adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attend.attention import TargetAttention
from attend.attention.dropout import Dropout
from attend.models.base import ModelConfig, ModelOutput, register_model
from attend.models.items import ItemEncoder, check_item_spec

__all__ = ["DIN", "DINConfig"]


@dataclass
class DINConfig(ModelConfig):
    """DIN's shape.

    Attributes:
        num_items: Catalogue size (indices 1..num_items; 0 is padding).
        num_users: Users seen in training (indices 1..num_users; 0 is "unknown user").
        dim: Width of item and user vectors.
        attention_hidden: Hidden widths of the activation unit.
        mlp: Hidden widths of the output MLP.
        normalise: Softmax the attention weights (default: raw, as in the paper).
        max_history: Most recent liked items read per event.
        dropout: Dropout in the output MLP.
        user_dropout: Share of training events whose user is replaced by the unknown user.
        offsets: Add fixed per-user and per-item logit offsets (buffers ``user_offset``,
            ``item_offset``, ``offset_intercept``, filled from a bias-only logistic regression fitted
            before training): a "wide" part, so the network learns what the history adds to them.
        user_embedding: Feed a learned user vector to the MLP beside the history (off: the history
            alone stands for the user, as in the paper, which had user profile features instead).
        items: The item feature spec (:func:`~attend.models.items.check_item_spec`); None: ids only.
    """

    num_items: int = 1
    num_users: int = 1
    dim: int = 32
    attention_hidden: list[int] = field(default_factory=lambda: [80, 40])
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    normalise: bool = False
    max_history: int = 50
    dropout: float = 0.3
    user_dropout: float = 0.1
    offsets: bool = False
    user_embedding: bool = True
    items: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("num_items", "num_users", "dim", "max_history"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("dropout", "user_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")
        check_item_spec(self.items)


class DIN(nn.Module):
    """The model; ``forward(batch)`` reads ``user (B,)``, ``candidate (B,)``, ``history (B, L)``."""

    def __init__(self, config: DINConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.item_encoder = ItemEncoder(config.num_items, dim, config.items)
        # Only built when used: a parameter that never gets a gradient stalls DDP (torchrun).
        self.users: nn.Embedding | None = None
        if config.user_embedding:
            self.users = nn.Embedding(config.num_users + 1, dim)
            nn.init.normal_(self.users.weight, std=dim**-0.5)
        self.user_bias = nn.Embedding(config.num_users + 1, 1)
        self.item_bias = nn.Embedding(config.num_items + 1, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.attention = TargetAttention(dim, config.attention_hidden, normalise=config.normalise)
        layers: list[nn.Module] = []
        width = 4 * dim
        for size in config.mlp:
            layers += [nn.Linear(width, size), nn.PReLU(), Dropout(config.dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        if config.offsets:
            self.register_buffer("user_offset", torch.zeros(config.num_users + 1))
            self.register_buffer("item_offset", torch.zeros(config.num_items + 1))
            self.register_buffer("offset_intercept", torch.zeros(()))

    def forward(self, batch: Mapping[str, Tensor], *, output_attentions: bool = False) -> ModelOutput:
        """Logits ``(B,)`` of "likes the candidate", and the history weights ``(B, L)`` as ``pooling_weights``."""
        user, candidate, history = batch["user"], batch["candidate"], batch["history"]
        history = history[:, -self.config.max_history :]
        if self.training and self.config.user_dropout > 0:
            keep = torch.rand(user.shape, device=user.device) >= self.config.user_dropout
            user = user * keep
        table = self.item_encoder()
        target = table[candidate]
        interest, weights = self.attention(table[history], target, key_padding_mask=history == 0)
        person = self.users(user) if self.users is not None else torch.zeros_like(target)
        features = torch.cat([person, interest, target, interest * target], dim=-1)
        logits = (
            self.mlp(features).squeeze(-1) + self.user_bias(user).squeeze(-1) + self.item_bias(candidate).squeeze(-1)
        )
        if self.config.offsets:
            logits = logits + self.offset_intercept + self.user_offset[user] + self.item_offset[candidate]
        return ModelOutput(logits=logits, pooling_weights=weights if output_attentions else None)


@register_model("din", DINConfig)
def _build(config: DINConfig) -> nn.Module:
    return DIN(config)
