"""Cross-modal attention: one modality's tokens query another modality's features.

Text tokens attending to image patches, or to a row of tabular features embedded as tokens,
is how attention fuses modalities (ViLBERT's co-attention, Flamingo's cross-attention layers).
:class:`CrossModalAttention` is one such block: pre-norm cross-attention with a residual,
then a pre-norm feed-forward with a residual. The context keeps its own width
(``context_dim``), mapped into the query space by the attention's key/value projections.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from attend.attention._ops import check_features
from attend.attention.dropout import Dropout
from attend.attention.masks import check_padding_mask
from attend.attention.multihead import MultiHeadAttention

__all__ = ["CrossModalAttention"]


class CrossModalAttention(nn.Module):
    """Queries ``(B, Lq, E)`` attend to a context ``(B, Lc, context_dim)`` from another modality.

    Args:
        embed_dim: Width ``E`` of the querying modality (and of the output).
        context_dim: Width of the other modality's features.
        num_heads: Attention heads.
        ffn_dim: Hidden width of the feed-forward (default ``4 * embed_dim``); 0 disables it.
        dropout: Dropout on attention weights and residual branches.
        attention_options: Extra :class:`MultiHeadAttention` options (score, attention kind, ...).
    """

    def __init__(
        self,
        embed_dim: int,
        context_dim: int,
        num_heads: int,
        *,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        attention_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        options = dict(attention_options or {})
        given_here = sorted({"embed_dim", "num_heads", "kdim", "vdim", "dropout"} & options.keys())
        if given_here:  # a raw "got multiple values for keyword argument" TypeError had said it
            raise ValueError(f"attention_options {given_here}: CrossModalAttention sets them itself (embed_dim and "
                             "num_heads from its own arguments, kdim and vdim from context_dim, dropout from its own "
                             "argument)")  # fmt: skip
        if ffn_dim is not None and (isinstance(ffn_dim, bool) or not isinstance(ffn_dim, int) or ffn_dim < 0):
            raise ValueError(f"ffn_dim={ffn_dim!r} must be a whole number >= 0 (0: no feed-forward block; None: "
                             "4 * embed_dim)")  # fmt: skip
        if options.get("attention") == "local":  # accepted, then refused on any context of another length
            raise ValueError("attention_options attention='local' needs a query and a context of one length (its band "
                             "is positions apart); cross-modal attention attends across lengths: use 'full', "
                             "'linear' or 'performer'")  # fmt: skip
        self.norm_query = nn.LayerNorm(embed_dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.attn = MultiHeadAttention(embed_dim, num_heads, kdim=context_dim, vdim=context_dim, dropout=dropout,
                                       **options)  # fmt: skip
        hidden = 4 * embed_dim if ffn_dim is None else ffn_dim
        self.ffn: nn.Module | None = None
        if hidden:
            self.norm_ffn = nn.LayerNorm(embed_dim)
            self.ffn = nn.Sequential(
                nn.Linear(embed_dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, embed_dim)
            )
        self.drop = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        *,
        context_padding_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Return ``(fused (B, Lq, E), weights (B, H, Lq, Lc) | None)``."""
        check_features("x", x, self.norm_query.weight.dtype)
        # integer features had failed inside LayerNorm ("mixed dtype")
        check_features("context", context, self.norm_context.weight.dtype)
        if x.dim() != 3 or x.shape[-1] != self.attn.embed_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (batch, length, embed_dim={self.attn.embed_dim})")
        if context.dim() != 3 or context.shape[-1] != self.attn.kdim:
            raise ValueError(
                f"context has shape {tuple(context.shape)}, expected (batch, context_len, kdim={self.attn.kdim})"
            )
        if x.shape[0] != context.shape[0]:  # said by the attention inside, it had named query, key and value
            raise ValueError(f"batch sizes differ: x {tuple(x.shape)}, context {tuple(context.shape)}")
        if context_padding_mask is not None:
            check_padding_mask(context_padding_mask, context.shape[0], context.shape[1], "context_padding_mask")
        ctx = self.norm_context(context)
        attended, weights = self.attn(
            self.norm_query(x), ctx, ctx, key_padding_mask=context_padding_mask, need_weights=need_weights
        )
        x = x + self.drop(attended)
        if self.ffn is not None:
            x = x + self.drop(self.ffn(self.norm_ffn(x)))
        return x, weights
