"""Encoder-decoder Transformer translator, built only from :mod:`attend.attention`.

Vaswani et al. 2017, pre-norm (Xiong et al. 2020). The encoder is the classifier's block stack
(self-attention over the source); each decoder block has causal self-attention over the output
so far, cross-attention from the output to the source, and a feed-forward layer. Token vectors
are scaled by ``sqrt(dim)`` and added to fixed sinusoidal positions (no length limit learned
into the weights). The output projection is the target embedding table itself (tied, Press &
Wolf 2017); with one shared vocabulary the encoder's table is that same table too.

Batch contract: ``input_ids``/``attention_mask`` (the source, ``(B, S)``, 1 = real token) and
``decoder_input_ids`` (``(B, T)``: ``<s>`` then the target shifted right, padded at the end).
:meth:`Seq2Seq.forward` returns logits ``(B, T, V)`` for the next token at every position;
with ``logit_positions`` (bool ``(B, T)``, e.g. ``labels != pad``) only those positions' logits,
``(N, V)`` in row-major order, so training spends no output projection or softmax on padding.
Target padding needs no mask: it only ever follows the real tokens, which causal attention
keeps from seeing it, and the loss ignores it. Source padding is masked; with enough of it the
encoder's per-token layers run on the real tokens only (:mod:`attend.attention.unpad`).

Incremental decoding (:mod:`attend.models.generation`): :meth:`Seq2Seq.encode` once, then
:meth:`Seq2Seq.step` per output token with a :class:`DecoderCache` of each layer's projected
keys and values, so a step costs one token's work instead of the whole prefix's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attend.attention import KeyValueCache, MultiHeadAttention
from attend.attention.dropout import Dropout
from attend.attention.unpad import TokenLayout
from attend.config import check_arguments, check_positive, check_unit_interval
from attend.models.base import ModelConfig, ModelOutput, forward_with_attentions, register_model
from attend.models.encoder import EncoderBlock, EncoderConfig, sinusoidal_positions

__all__ = ["DecoderCache", "Seq2Seq", "Seq2SeqConfig"]


@dataclass
class Seq2SeqConfig(ModelConfig):
    """Config of :class:`Seq2Seq`.

    Attributes:
        vocab_size: Source vocabulary (the only one when ``target_vocab_size`` is None).
        target_vocab_size: Target vocabulary when source and target have separate tokenizers;
            None: one shared vocabulary and one embedding table for both sides.
        dim: Model width.
        encoder_layers: Encoder blocks.
        decoder_layers: Decoder blocks.
        num_heads: Attention heads per attention layer.
        ffn_dim: Feed-forward width (default ``4 * dim``).
        max_length: Longest source or output, in tokens (the position table's size).
        dropout: Dropout on embeddings, residual branches and the feed-forward hidden layer.
        attention_dropout: Dropout on attention weights.
        attention: Extra :class:`~attend.attention.MultiHeadAttention` options for every layer
            (full attention only, so the decoder can cache keys and values).
        pad_id: Padding token id (both vocabularies).
        bos_id: Id of ``<s>``, the first decoder input.
        eos_id: Id of ``</s>``, which ends an output.
    """

    vocab_size: int = 8000
    target_vocab_size: int | None = None
    dim: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    num_heads: int = 4
    ffn_dim: int | None = None
    max_length: int = 256
    dropout: float = 0.1
    attention_dropout: float = 0.0
    attention: dict[str, Any] = field(default_factory=dict)
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "dim", "encoder_layers", "decoder_layers", "num_heads", "max_length")
        if self.target_vocab_size is not None:
            check_positive(self, "target_vocab_size")
        check_unit_interval(self, "dropout", "attention_dropout")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        own = {"embed_dim", "num_heads", "dropout", "kdim", "vdim", "bias", "head_dim"} & set(self.attention)
        if own:  # embed_dim and num_heads had failed on "got multiple values for argument"
            raise ValueError(f"attention options {sorted(own)} are set by the model itself (embed_dim is dim, "
                             "num_heads and dropout are its num_heads and attention_dropout)")  # fmt: skip
        cached = {"attention", "window", "adaptive_span"} & set(self.attention)
        if cached:
            raise ValueError(f"attention options {sorted(cached)} cannot be set for seq2seq (the decoder caches keys)")
        check_arguments(MultiHeadAttention.__init__, self.attention, what="attention")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < min(self.vocab_size, self.output_vocab_size):
                raise ValueError(f"{name}={value} is outside the vocabulary")

    @property
    def output_vocab_size(self) -> int:
        return self.vocab_size if self.target_vocab_size is None else self.target_vocab_size

    def encoder_config(self) -> EncoderConfig:
        """The encoder blocks' shape, in the classifier encoder's terms (the blocks are shared code)."""
        return EncoderConfig(
            vocab_size=self.vocab_size, dim=self.dim, num_layers=self.encoder_layers, num_heads=self.num_heads,
            ffn_dim=self.ffn_dim, max_length=self.max_length, dropout=self.dropout,
            attention_dropout=self.attention_dropout, attention=dict(self.attention), pad_id=self.pad_id,
        )  # fmt: skip


@dataclass
class DecoderCache:
    """Per decoder layer, the self-attention cache (grows a token per step) and the
    cross-attention cache (the source's keys and values, projected once)."""

    layers: list[tuple[KeyValueCache, KeyValueCache]]

    @classmethod
    def empty(cls, num_layers: int) -> DecoderCache:
        return cls([(KeyValueCache(), KeyValueCache(static=True)) for _ in range(num_layers)])

    @property
    def length(self) -> int:
        """Output tokens already decoded (and cached)."""
        return self.layers[0][0].length if self.layers else 0

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of every cache (beam search: the beams that continue)."""
        for own, cross in self.layers:
            own.reorder(index)
            cross.reorder(index)


class DecoderBlock(nn.Module):
    """Pre-norm: ``x + self_attn(norm(x))`` (causal), ``x + cross_attn(norm(x), memory)``, ``x + ffn(norm(x))``."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        options = {"dropout": config.attention_dropout, **config.attention}
        self.norm_self = nn.LayerNorm(config.dim)
        self.self_attn = MultiHeadAttention(config.dim, config.num_heads, **options)
        self.norm_cross = nn.LayerNorm(config.dim)
        self.cross_attn = MultiHeadAttention(config.dim, config.num_heads, **options)
        self.norm_ffn = nn.LayerNorm(config.dim)
        hidden = config.ffn_dim or 4 * config.dim
        self.ffn = nn.Sequential(
            nn.Linear(config.dim, hidden), nn.GELU(), Dropout(config.dropout), nn.Linear(hidden, config.dim)
        )
        self.drop = Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_padding: Tensor | None,
        cache: tuple[KeyValueCache, KeyValueCache] | None = None,
    ) -> Tensor:
        own, cross = cache if cache is not None else (None, None)
        h = self.norm_self(x)
        x = x + self.drop(self.self_attn(h, is_causal=True, cache=own)[0])
        h = self.norm_cross(x)
        x = x + self.drop(self.cross_attn(h, memory, key_padding_mask=memory_padding, cache=cross)[0])
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class Seq2Seq(nn.Module):
    """Source tokens -> encoder -> decoder with cross-attention -> next-token logits."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = self._embedding(config.vocab_size)
        # With one shared vocabulary the decoder reads and writes the encoder's table (registered once,
        # so safetensors stores it once); otherwise it has its own.
        self.separate_target_embed = (
            None if config.target_vocab_size is None else self._embedding(config.target_vocab_size)
        )
        self.register_buffer("positions", sinusoidal_positions(config.max_length, config.dim), persistent=False)
        self.drop = Dropout(config.dropout)
        encoder_config = config.encoder_config()
        self.encoder = nn.ModuleList(EncoderBlock(encoder_config, layer) for layer in range(config.encoder_layers))
        self.encoder_norm = nn.LayerNorm(config.dim)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.decoder_norm = nn.LayerNorm(config.dim)
        #: Run the encoder's per-token layers on real source tokens only when a batch has enough
        #: padding (False: the padded layout, e.g. to measure what skipping it buys).
        self.unpad = True

    def _embedding(self, size: int) -> nn.Embedding:
        table = nn.Embedding(size, self.config.dim, padding_idx=self.config.pad_id)
        # Scaled by sqrt(dim) in use, so unit-scale vectors (as the encoder classifier does).
        nn.init.normal_(table.weight, 0.0, self.config.dim**-0.5)
        with torch.no_grad():
            table.weight[self.config.pad_id].zero_()
        return table

    @property
    def target_embed(self) -> nn.Embedding:
        """The target side's embedding table, which is also the output projection (tied)."""
        return self.embed if self.separate_target_embed is None else self.separate_target_embed

    def input_embeddings(self) -> nn.Embedding:
        """The source embedding table (gradient-based explanations attribute to its output)."""
        return self.embed

    def _check_length(self, length: int, what: str) -> None:
        if length > self.config.max_length:
            raise ValueError(f"{what} has {length} tokens, more than max_length={self.config.max_length}")

    def encode(self, input_ids: Tensor, attention_mask: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        """The source's final states ``(B, S, E)`` (zeros are not guaranteed at padding: mask them)."""
        length = input_ids.shape[1]
        self._check_length(length, "the source")
        padding = attention_mask == 0
        tokens = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        x = self.drop(tokens * math.sqrt(self.config.dim) + self.positions[:length])
        layout = TokenLayout.when_worth_it(padding) if self.unpad else None  # per-token layers on real tokens
        if layout is not None:
            x = layout.pack(x)  # (T, E)
        for block in self.encoder:
            x = block(x, padding, layout)
        x = self.encoder_norm(x)
        return x if layout is None else layout.unpack(x)  # (B, S, E), zeros at padding

    def decode(
        self,
        decoder_input_ids: Tensor,
        memory: Tensor,
        memory_padding: Tensor | None,
        cache: DecoderCache | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Next-token logits ``(B, T, V)`` for output tokens ``decoder_input_ids (B, T)``; with
        ``positions`` (bool ``(B, T)``) only those positions' logits, ``(N, V)`` in row-major order.

        With a ``cache``, ``decoder_input_ids`` are the tokens after the cached ones (usually one)
        and the cache is extended with them.
        """
        start = 0 if cache is None else cache.length
        length = decoder_input_ids.shape[1]
        self._check_length(start + length, "the output")
        tokens = self.target_embed(decoder_input_ids) * math.sqrt(self.config.dim)
        x = self.drop(tokens + self.positions[start : start + length])
        for i, block in enumerate(self.decoder):
            x = block(x, memory, memory_padding, None if cache is None else cache.layers[i])
        x = self.decoder_norm(x)
        if positions is not None:
            x = x[positions]  # (N, E): no output projection for positions nobody reads
        return x @ self.target_embed.weight.t()  # tied output projection

    def new_cache(self) -> DecoderCache:
        """An empty cache for :meth:`step`."""
        return DecoderCache.empty(len(self.decoder))

    def step(self, tokens: Tensor, memory: Tensor, memory_padding: Tensor | None, cache: DecoderCache) -> Tensor:
        """Log-probabilities ``(B, V)`` of the token after ``tokens (B, 1)``, extending ``cache``."""
        logits = self.decode(tokens, memory, memory_padding, cache)[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def forward(self, batch: Mapping[str, Tensor], *, output_attentions: bool = False) -> ModelOutput:
        return forward_with_attentions(self, lambda: self._forward(batch), output_attentions)

    def _forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        memory = self.encode(batch["input_ids"], batch["attention_mask"], batch.get("inputs_embeds"))
        logits = self.decode(batch["decoder_input_ids"], memory, batch["attention_mask"] == 0,
                             positions=batch.get("logit_positions"))  # fmt: skip
        return ModelOutput(logits=logits)

    def cross_attention_names(self) -> list[str]:
        """Module names of the decoder's cross-attention layers, in order (for a capture's ``names``)."""
        return [f"decoder.{i}.cross_attn" for i in range(len(self.decoder))]


@register_model("seq2seq", Seq2SeqConfig)
def build_seq2seq(config: Seq2SeqConfig) -> Seq2Seq:
    return Seq2Seq(config)
