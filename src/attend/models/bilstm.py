"""BiLSTM with attention pooling: the classic attention text classifier (Yang et al. 2016).

A bidirectional LSTM reads the tokens; additive attention pooling weighs its states into one
vector, and those weights are the explanation: which words the decision rests on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attend.attention import AttentionPooling
from attend.config import check_positive, check_unit_interval
from attend.models.base import ModelConfig, ModelOutput, forward_with_attentions, register_model

__all__ = ["BiLSTMAttentionClassifier", "BiLSTMAttentionConfig"]


@dataclass
class BiLSTMAttentionConfig(ModelConfig):
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
        check_unit_interval(self, "dropout")


class BiLSTMAttentionClassifier(nn.Module):
    """Embeddings -> BiLSTM -> additive attention pooling -> label logits."""

    def __init__(self, config: BiLSTMAttentionConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_id)
        self.drop = nn.Dropout(config.dropout)
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
        lengths = mask.sum(1).clamp_min(1).cpu()
        x = self.drop(self.embed(input_ids))  # (B, L, E)
        # Packing keeps the backward direction from reading padding first.
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=input_ids.shape[1])  # (B, L, 2h)
        pooled, weights = self.pool(states, mask == 0)
        return ModelOutput(logits=self.head(self.drop(pooled)), pooling_weights=weights, hidden_states=states)


@register_model("bilstm_attention", BiLSTMAttentionConfig)
def build_bilstm_attention(config: BiLSTMAttentionConfig) -> BiLSTMAttentionClassifier:
    return BiLSTMAttentionClassifier(config)
