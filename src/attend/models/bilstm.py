"""BiLSTM with attention pooling: the classic attention text classifier (Yang et al. 2016).

A bidirectional LSTM reads the tokens; additive attention pooling weighs its states into one
vector, and those weights are the explanation: which words the decision rests on.

Padding is kept out of the LSTM by packing the batch. Packed sequences cannot be traced
(``torch.export``, and so the ONNX exporter, sees data-dependent sizes), so a traced forward
runs :meth:`BiLSTMAttentionClassifier.bidirectional_by_reversal` instead: the same weights,
the backward direction reading each text's real tokens reversed in place, which gives the
packed path's states exactly (tests check it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attend.attention import AttentionPooling
from attend.attention.dropout import Dropout, dropout
from attend.config import check_pad_id, check_positive, check_unit_interval
from attend.models.base import ClassifierConfig, ModelOutput, forward_with_attentions, register_model

__all__ = ["BiLSTMAttentionClassifier", "BiLSTMAttentionConfig"]


@dataclass
class BiLSTMAttentionConfig(ClassifierConfig):
    """Config of :class:`BiLSTMAttentionClassifier`.

    Attributes:
        vocab_size: Tokenizer vocabulary size.
        embed_dim: Token embedding width.
        hidden_dim: LSTM state width per direction.
        num_layers: Stacked LSTM layers.
        attention_dim: Width of the pooling's tanh layer (default ``2 * hidden_dim``).
        dropout: Dropout on embeddings, between LSTM layers and before the head.
        pad_id: Id of the padding token.
    """

    vocab_size: int = 16000
    embed_dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 1
    attention_dim: int | None = None
    dropout: float = 0.2
    pad_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "vocab_size", "embed_dim", "hidden_dim", "num_layers")
        if self.attention_dim is not None:  # 0 had been the default width in silence, -2 a traceback from torch
            check_positive(self, "attention_dim")
        check_pad_id(self)
        check_unit_interval(self, "dropout")


class BiLSTMAttentionClassifier(nn.Module):
    """Embeddings -> BiLSTM -> additive attention pooling -> label logits."""

    def __init__(self, config: BiLSTMAttentionConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_id)
        self.drop = Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden_dim,
            num_layers=config.num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.pool = AttentionPooling(2 * config.hidden_dim, config.attention_dim)
        self.head = nn.Linear(2 * config.hidden_dim, config.num_labels)

    def forward(self, batch: Mapping[str, Tensor], *, output_attentions: bool = False) -> ModelOutput:
        return forward_with_attentions(self, lambda: self._forward(batch), output_attentions)

    def input_embeddings(self) -> nn.Embedding:
        """The token embedding table (gradient-based explanations attribute to its output)."""
        return self.embed

    def _forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        input_ids, mask = batch["input_ids"], batch["attention_mask"]  # (B, L)
        lengths = mask.sum(1).clamp_min(1)
        x = self.drop(batch["inputs_embeds"] if "inputs_embeds" in batch else self.embed(input_ids))  # (B, L, E)
        if torch.compiler.is_compiling():
            states = self.bidirectional_by_reversal(x, lengths)  # (B, L, 2h)
        else:
            # Packing keeps the backward direction from reading padding first.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            states, _ = self.lstm(packed)
            states, _ = pad_packed_sequence(states, batch_first=True, total_length=input_ids.shape[1])  # (B, L, 2h)
        pooled, weights = self.pool(states, mask == 0)
        return ModelOutput(logits=self.head(self.drop(pooled)), pooling_weights=weights, hidden_states=states)


    def bidirectional_by_reversal(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The packed BiLSTM's states ``(B, L, 2h)`` from a padded batch, with no packing.

        The forward direction never sees the padding that follows a text. The backward one
        reads each text's real tokens flipped in place (position ``t`` <-> ``len - 1 - t``)
        and its outputs are flipped back, so it starts at the last real token, as packing
        makes it. Layer by layer, since layer ``l + 1`` reads both directions of layer ``l``;
        positions past a text's end are zeroed, as ``pad_packed_sequence`` leaves them.

        Args:
            x: Embedded tokens ``(B, L, E)``, real tokens first.
            lengths: Real tokens per text ``(B,)``, at least 1.
        """
        batch, length, _ = x.shape
        positions = torch.arange(length, device=x.device).unsqueeze(0)  # (1, L)
        lengths = lengths.to(x.device).unsqueeze(1)  # (B, 1)
        real = positions < lengths  # (B, L)
        flip = torch.where(real, lengths - 1 - positions, positions)  # (B, L), its own inverse

        def flipped(t: Tensor) -> Tensor:
            # Expand only the feature axis: batch and length come from ``flip`` itself, so a traced
            # graph never takes them from the LSTM's output, whose length the ONNX LSTM op fixes.
            return t.gather(1, flip.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

        lstm = self.lstm
        for layer in range(lstm.num_layers):
            directions = []
            for suffix in ("", "_reverse"):
                params = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih",
                                                                                 "bias_hh")]  # fmt: skip
                h0 = x.new_zeros(1, batch, lstm.hidden_size)
                source = flipped(x) if suffix else x
                out = torch.lstm(source, (h0, h0), params, True, 1, 0.0, self.training, False, True)[0]  # (B, L, h)
                directions.append(flipped(out) if suffix else out)
            x = torch.cat(directions, dim=-1)  # (B, L, 2h)
            if layer < lstm.num_layers - 1 and lstm.dropout:
                x = dropout(x, lstm.dropout, self.training)
        return x * real.unsqueeze(-1).to(x.dtype)


@register_model("bilstm_attention", BiLSTMAttentionConfig)
def build_bilstm_attention(config: BiLSTMAttentionConfig) -> BiLSTMAttentionClassifier:
    return BiLSTMAttentionClassifier(config)
