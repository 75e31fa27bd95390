"""Transformer-encoder text classifier, built only from :mod:`attend.attention`.

Reads top to bottom: positions, block, model. Token + position embeddings, ``num_layers``
pre-norm Transformer blocks (Vaswani et al. 2017; pre-norm after Xiong et al. 2020, which
trains without warm-up tricks), then attention pooling (or ``[CLS]``, or the mean) and a
linear head. Any attention variant is one config entry away: ``attention={"score":
"cosine"}``, ``{"attention": "local", "window": 16}``, ``{"adaptive_span": 64}``, ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attend.attention import AttentionPooling, MultiHeadAttention
from attend.attention.dropout import Dropout
from attend.attention.unpad import TokenLayout
from attend.config import check_arguments, check_pad_id, check_positive, check_unit_interval
from attend.models.base import (
    ClassifierConfig,
    ModelOutput,
    forward_with_attentions,
    kept_heads,
    normalise_pruned_heads,
    register_model,
)

__all__ = ["EncoderClassifier", "EncoderConfig"]

POOLINGS = ("attention", "cls", "mean")

#: A padded position's cost against a real token's when the blocks unpad (only attention sees
#: padding). Measured with the demo's shape (128 wide, 2 blocks, one thread): 16 texts, 15 of
#: 12 tokens and one of L, take 2.65 ms at L = 12, 3.10 at 24 and 4.61 at 64, i.e. 0.11 of a
#: real token per padded position.
UNPADDED_PADDING_COST = 0.12


@dataclass
class EncoderConfig(ClassifierConfig):
    """Config of :class:`EncoderClassifier`.

    Attributes:
        vocab_size: Tokenizer vocabulary size.
        dim: Model width.
        num_layers: Transformer blocks.
        num_heads: Attention heads per block.
        ffn_dim: Feed-forward width (default ``4 * dim``).
        max_length: Longest input, in tokens (learned positions need it).
        positional: ``"sinusoidal"`` (fixed, extrapolates) or ``"learned"``.
        pooling: ``"attention"`` (additive attention pooling), ``"cls"`` or ``"mean"``.
        dropout: Dropout on embeddings, residual branches and the head.
        attention_dropout: Dropout on attention weights.
        attention: Extra :class:`~attend.attention.MultiHeadAttention` options.
        pad_id: Id of the padding token.
        pruned_heads: Heads removed by pruning, ``{"layer": [original head indices]}``
            (see :func:`attend.deploy.pruning.prune`); each layer keeps the others at width
            ``dim // num_heads``.
    """

    vocab_size: int = 16000
    dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int | None = None
    max_length: int = 512
    positional: str = "sinusoidal"
    pooling: str = "attention"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    attention: dict[str, Any] = field(default_factory=dict)
    pad_id: int = 0
    pruned_heads: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.positional not in ("sinusoidal", "learned"):
            raise ValueError(f"positional={self.positional!r}; choose 'sinusoidal' or 'learned'")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; choose one of {list(POOLINGS)}")
        check_positive(self, "vocab_size", "dim", "num_layers", "num_heads", "max_length")
        if self.ffn_dim is not None:  # 0 had been the default width in silence, -5 a traceback from torch
            check_positive(self, "ffn_dim")
        check_pad_id(self)
        check_unit_interval(self, "dropout", "attention_dropout")
        reserved = {"embed_dim", "num_heads", "dropout", "kdim", "vdim", "bias", "head_dim"} & set(self.attention)
        if reserved:  # embed_dim and num_heads had failed on "got multiple values for argument"
            raise ValueError(f"attention options {sorted(reserved)} are set by the encoder itself (embed_dim is dim, "
                             "num_heads and dropout are its num_heads and attention_dropout)")  # fmt: skip
        check_arguments(MultiHeadAttention.__init__, self.attention, what="attention")
        kernel = self.attention.get("attention")
        if kernel in ("linear", "performer") and self.attention_dropout:  # the error had named dropout
            raise ValueError(f"attention_dropout={self.attention_dropout} cannot be combined with attention "
                             f"{kernel!r} (it has no softmax weights to drop): set it to 0")  # fmt: skip
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        self.pruned_heads = normalise_pruned_heads(
            self.pruned_heads, num_layers=self.num_layers, num_heads=self.num_heads
        )


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """The fixed sin/cos position table of Vaswani et al. 2017, ``(length, dim)``."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``."""

    def __init__(self, config: EncoderConfig, layer: int = 0) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.dim)
        heads = len(kept_heads(config.pruned_heads, layer, config.num_heads))
        self.attn = MultiHeadAttention(
            config.dim,
            heads,
            head_dim=config.dim // config.num_heads,
            dropout=config.attention_dropout,
            **config.attention,
        )
        self.norm_ffn = nn.LayerNorm(config.dim)
        hidden = config.ffn_dim or 4 * config.dim
        self.ffn = nn.Sequential(
            nn.Linear(config.dim, hidden), nn.GELU(), Dropout(config.dropout), nn.Linear(hidden, config.dim)
        )
        self.drop = Dropout(config.dropout)

    def forward(self, x: Tensor, padding: Tensor, layout: TokenLayout | None = None) -> Tensor:
        """``x (B, L, E)``, or with a ``layout`` the packed ``(T, E)`` real tokens (the layout carries the mask)."""
        h = self.norm_attn(x)
        attended = self.attn(h, layout=layout)[0] if layout is not None else self.attn(h, key_padding_mask=padding)[0]
        x = x + self.drop(attended)
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class EncoderClassifier(nn.Module):
    """Token embeddings -> Transformer blocks -> pooling -> label logits."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_id)
        # Scaled by sqrt(dim) in forward, so start at std dim^-0.5: token vectors of unit scale,
        # comparable to the positions and to what the blocks add. (nn.Embedding's N(0, 1) would
        # make them sqrt(dim) times larger and drown every block's contribution: on WordNet
        # topics that cost 22 points of dev accuracy after two epochs on 20k examples.)
        nn.init.normal_(self.embed.weight, 0.0, config.dim**-0.5)
        with torch.no_grad():
            self.embed.weight[config.pad_id].zero_()
        if config.positional == "learned":
            self.positions = nn.Parameter(torch.randn(config.max_length, config.dim) * 0.02)
        else:
            self.register_buffer("positions", sinusoidal_positions(config.max_length, config.dim), persistent=False)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config, layer) for layer in range(config.num_layers))
        self.norm = nn.LayerNorm(config.dim)
        self.pool = AttentionPooling(config.dim) if config.pooling == "attention" else None
        self.head = nn.Linear(config.dim, config.num_labels)
        #: Run the blocks on real tokens only when a batch has enough padding; same results.
        self.unpad = True
        #: Unpad in a traced graph too (``attend export --unpad``): every batch unpads there.
        self.unpad_traced = False

    def forward(self, batch: Mapping[str, Tensor], *, output_attentions: bool = False) -> ModelOutput:
        return forward_with_attentions(self, lambda: self._forward(batch), output_attentions)

    @property
    def padding_cost(self) -> float:
        """A padded position's cost against a real token's in a forward pass (the batch planner's
        input, :meth:`attend.runtime.TextClassifier.plan`): :data:`UNPADDED_PADDING_COST` when unpadding."""
        return UNPADDED_PADDING_COST if self.unpad else 1.0

    def input_embeddings(self) -> nn.Embedding:
        """The token embedding table (gradient-based explanations attribute to its output)."""
        return self.embed

    def _forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        input_ids = batch["input_ids"]  # (B, L)
        length = input_ids.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"input has {length} tokens, more than max_length={self.config.max_length}")
        padding = batch["attention_mask"] == 0  # (B, L), True = padding
        tokens = batch["inputs_embeds"] if "inputs_embeds" in batch else self.embed(input_ids)  # (B, L, E)
        x = self.drop(tokens * math.sqrt(self.config.dim) + self.positions[:length])  # (B, L, E)
        # With enough padding the blocks run on real tokens only (attend.attention.unpad).
        layout = TokenLayout.when_worth_it(padding, traced=self.unpad_traced) if self.unpad else None
        if layout is not None:
            x = layout.pack(x)  # (T, E)
        for block in self.blocks:
            x = block(x, padding, layout)
        x = self.norm(x)
        if layout is not None:
            x = layout.unpack(x)  # (B, L, E), zeros at padding
        pooling_weights = None
        if self.pool is not None:
            pooled, pooling_weights = self.pool(x, padding)
        elif self.config.pooling == "cls":
            pooled = x[:, 0]
        else:
            keep = (~padding).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        logits = self.head(self.drop(pooled))  # (B, num_labels)
        return ModelOutput(logits=logits, pooling_weights=pooling_weights, hidden_states=x)


@register_model("encoder", EncoderConfig)
def build_encoder(config: EncoderConfig) -> EncoderClassifier:
    return EncoderClassifier(config)
