"""SASRec: causal self-attention over what a user did, predicting what they do next.

Kang & McAuley 2018 ("Self-Attentive Sequential Recommendation"). A user's items, oldest first,
are embedded (item vector + learned position), passed through pre-norm Transformer blocks whose
attention is causal (position ``t`` sees items ``<= t`` only), and the state at ``t`` is scored
against every item of the catalogue by a dot product with the same item vectors (tied): the
score of item ``j`` as the item at ``t + 1``. Training uses every position of every sequence.

Sequences are right-aligned (padding on the left, id 0), so the last real item is always at the
last position and the learned positions count back from "now". Top-k over the whole catalogue is
one matrix product of the last state with the item table.

Losses (``loss``): ``"softmax"`` (full cross-entropy over the catalogue; the default, and exact),
``"sampled"`` (cross-entropy over the target and ``negatives`` uniformly sampled items, for
large catalogues) or ``"bce"`` (the paper's binary cross-entropy with one negative per position).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attend.attention import MultiHeadAttention, recordable_names
from attend.attention.dropout import Dropout
from attend.models.base import ModelConfig, ModelOutput, forward_with_attentions, register_model
from attend.models.items import ItemEncoder, check_item_spec

__all__ = ["SASRec", "SASRecConfig"]

LOSSES = ("softmax", "sampled", "bce")


@dataclass
class SASRecConfig(ModelConfig):
    """SASRec's shape.

    Attributes:
        num_items: Catalogue size (item indices 1..num_items; 0 is padding).
        dim: Width of item vectors and states.
        num_layers: Transformer blocks.
        num_heads: Attention heads per block.
        max_length: Longest history read (the most recent items).
        dropout: Dropout on embeddings, attention and residual branches.
        loss: ``"softmax"``, ``"sampled"`` or ``"bce"`` (see the module docstring).
        negatives: Sampled negatives per position for ``"sampled"``.
        items: The item feature spec (:func:`~attend.models.items.check_item_spec`); None: ids only.
    """

    num_items: int = 1
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_length: int = 50
    dropout: float = 0.2
    loss: str = "softmax"
    negatives: int = 100
    items: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("num_items", "dim", "num_layers", "num_heads", "max_length", "negatives"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; choose one of {list(LOSSES)}")
        check_item_spec(self.items)


class _Block(nn.Module):
    """Pre-norm block: causal self-attention, then a position-wise feed-forward, each with a residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), Dropout(dropout), nn.Linear(dim, dim))
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        attended, _ = self.attn(self.norm1(x), key_padding_mask=padding, is_causal=True)
        x = x + self.drop(attended)
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    """The model; see the module docstring. ``forward(batch)`` reads ``batch["items"]`` ``(B, L)``."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_encoder = ItemEncoder(config.num_items, config.dim, config.items, dropout=0.0)
        self.positions = nn.Embedding(config.max_length, config.dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config.dim, config.num_heads, config.dropout)
                                    for _ in range(config.num_layers))  # fmt: skip
        self.norm = nn.LayerNorm(config.dim)

    def states(self, items: Tensor, table: Tensor | None = None) -> Tensor:
        """Hidden states ``(B, L, dim)`` of right-aligned item sequences ``(B, L)`` (0 = padding)."""
        if items.dim() != 2:
            raise ValueError(f"items has shape {tuple(items.shape)}, expected (batch, length)")
        items = items[:, -self.config.max_length :]
        table = self.item_encoder() if table is None else table
        length = items.shape[1]
        positions = torch.arange(self.config.max_length - length, self.config.max_length, device=items.device)
        padding = items == 0
        x = self.drop(table[items] * self.config.dim**0.5 + self.positions(positions))
        x = x * (~padding).unsqueeze(-1)
        for block in self.blocks:
            x = block(x, padding)
        return self.norm(x) * (~padding).unsqueeze(-1)

    def forward(self, batch: Mapping[str, Tensor], *, output_attentions: bool = False) -> ModelOutput:
        """Scores of the next item at every position.

        ``batch["items"]`` ``(B, L)``; with ``batch["candidates"]`` ``(B, L, C)`` the logits are the
        scores of those items only ``(B, L, C)`` (sampled losses); with ``batch["select"]`` (bool
        ``(B, L)``) the whole catalogue's scores at the selected positions ``(N, num_items + 1)``;
        with neither, at every position ``(B, L, num_items + 1)``.
        """

        def run() -> ModelOutput:
            table = self.item_encoder()
            hidden = self.states(batch["items"], table)
            if "candidates" in batch:
                logits = (hidden.unsqueeze(2) * table[batch["candidates"]]).sum(-1)
            elif "select" in batch:  # only the positions that have a target: no work on padding
                logits = hidden[batch["select"]] @ table.T
            else:
                logits = hidden @ table.T
            return ModelOutput(logits=logits, hidden_states=hidden)

        return forward_with_attentions(self, run, output_attentions, names=self.sequence_attention_names())

    def sequence_attention_names(self) -> list[str]:
        """The attention modules of the sequence layers, by qualified name, first layer first: not an
        item encoder's feature fusion (``--fusion attention``), whose maps are over an item's features."""
        return [name for name in recordable_names(self) if name.startswith("blocks.")]

    def score_last(self, items: Tensor, table: Tensor | None = None) -> Tensor:
        """Scores ``(B, num_items + 1)`` of every item as the next one after each sequence (one matmul)."""
        table = self.item_encoder() if table is None else table
        return self.states(items, table)[:, -1] @ table.T


@register_model("sasrec", SASRecConfig)
def _build(config: SASRecConfig) -> nn.Module:
    return SASRec(config)
