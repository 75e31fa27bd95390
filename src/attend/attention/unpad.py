"""Padding-free ("unpadded") token layout: run the per-token work on real tokens only.

A padded batch ``(B, L, E)`` of texts of different lengths spends most of an encoder's work on
per-token products (the q/k/v, output and feed-forward projections, layer norms, GELU) that
give padding positions values nobody reads. :class:`TokenLayout` packs the real tokens into one
``(T, E)`` matrix, ``T`` = number of real tokens, so those products cost what the text costs;
only attention itself, which needs each text's tokens side by side, runs on the padded
``(B, L)`` grid (and there the padding keys are masked as before). This is the "unpadding" of
efficient BERT inference servers (e.g. Hugging Face's text-embeddings-inference and
FlashAttention's BERT, which pack the same way around a variable-length attention kernel).

Packing is exact: it only moves rows, so each real token meets the same arithmetic as on the
padded grid (up to the float rounding of a GEMM of another height).

Shapes: ``B`` batch, ``L`` padded length, ``T`` real tokens, ``*`` trailing features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .masks import check_padding_mask

__all__ = ["UNPAD_MIN_PADDING", "TokenLayout", "unpadding_modules"]

#: Least share of padding positions for which :meth:`TokenLayout.when_worth_it` unpads.
#: Unpadding moves ~4 D floats per real token per layer (q/k/v onto the padded grid, attention's
#: output back): measured 1-4% of a MiniLM forward (one thread) on batches with a single
#: padded position, which is what 1-4% padding costs the padded layout.
UNPAD_MIN_PADDING = 0.05


@dataclass(frozen=True)
class TokenLayout:
    """Where the real tokens of a padded ``(B, L)`` batch sit, and how to move between layouts.

    Attributes:
        index: Long ``(T,)`` positions of the real tokens in the flattened ``(B * L)`` grid, in
            row-major order (text by text, left to right).
        batch: ``B``.
        length: ``L``.
        key_padding_mask: Bool ``(B, L)``, True = padding (as :mod:`attend.attention.masks`).
    """

    index: Tensor
    batch: int
    length: int
    key_padding_mask: Tensor

    @classmethod
    def from_padding_mask(cls, key_padding_mask: Tensor) -> TokenLayout:
        """The layout of a batch whose padding is True in ``key_padding_mask (B, L)``."""
        if isinstance(key_padding_mask, Tensor) and key_padding_mask.dim() != 2:
            raise ValueError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)}, expected (batch, length)")
        # an integer mask (1 = keep, as Hugging Face writes it) would have been inverted silently
        check_padding_mask(key_padding_mask, *getattr(key_padding_mask, "shape", (0, 0)))
        mask = key_padding_mask
        index = torch.nonzero(~mask.reshape(-1), as_tuple=False).squeeze(1)  # (T,)
        batch, length = mask.shape
        return cls(index=index, batch=batch, length=length, key_padding_mask=mask)

    @classmethod
    def when_worth_it(
        cls, key_padding_mask: Tensor | None, *, min_padding: float = UNPAD_MIN_PADDING, traced: bool = False
    ) -> TokenLayout | None:
        """The layout of this batch if unpadding it pays (None: run the padded layout).

        None when there is no mask and when padding is under ``min_padding`` of the positions.
        Inside ``torch.export`` / ``torch.compile`` tracing a graph cannot branch on the data:
        it gets the padded layout, or with ``traced=True`` always the unpadded one (an ONNX
        graph whose token count is computed from the mask, ``attend export --unpad``).
        """
        if key_padding_mask is None:
            return None
        if torch.compiler.is_compiling():
            return cls.from_padding_mask(key_padding_mask) if traced else None
        if key_padding_mask.float().mean().item() < min_padding:
            return None
        return cls.from_padding_mask(key_padding_mask)

    @property
    def tokens(self) -> int:
        """``T``, the number of real tokens (symbolic while tracing: it depends on the data)."""
        return self.index.shape[0]

    def pack(self, x: Tensor) -> Tensor:
        """``(B, L, *)`` -> ``(T, *)``: the real tokens' rows."""
        if tuple(x.shape[:2]) != (self.batch, self.length):
            raise ValueError(f"expected a ({self.batch}, {self.length}, ...) tensor to pack, got {tuple(x.shape)}")
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    @cached_property
    def grid_rows(self) -> Tensor:
        """Long ``(B, L)``: each grid position's row among the ``T`` packed ones; 0 (the batch's
        first real token) at padding positions, for :meth:`unpack_heads`."""
        real = ~self.key_padding_mask
        rank = torch.cumsum(real.reshape(-1).long(), 0).view(self.batch, self.length) - 1
        return torch.where(real, rank, torch.zeros_like(rank))

    def unpack_heads(self, x: Tensor, parts: int, heads: int) -> list[Tensor]:
        """``(T, parts * heads * d)`` -> ``parts`` tensors ``(B, heads, L, d)``: the unpack and the
        head split as one row gather per part (q, k and v of a packed projection: ``parts=3``).

        For a traced graph (ONNX), where it replaces a scatter, a transpose and a slice per part.
        Padding positions get a copy of the batch's first real token rather than zeros: as keys
        and values they are masked out (weight exactly 0), and as queries their rows are dropped
        by :meth:`pack_heads`, so no output reads them (and no zero row has to be appended).
        """
        tokens, width = x.shape
        d = width // (parts * heads)
        rank = self.grid_rows[:, None, :]  # (B, 1, L)
        head = torch.arange(heads, device=x.device)[None, :, None]
        source = x.reshape(tokens * parts * heads, d)
        shape = (self.batch, heads, self.length, d)
        return [source.index_select(0, ((rank * parts + part) * heads + head).reshape(-1)).view(shape)
                for part in range(parts)]  # fmt: skip

    def pack_heads(self, x: Tensor) -> Tensor:
        """``(B, heads, L, d)`` -> ``(T, heads * d)``: the head merge and the pack in one row gather."""
        heads, d = x.shape[1], x.shape[3]
        text = self.index // self.length
        position = self.index - text * self.length  # (a remainder op does not export with a symbolic length)
        head = torch.arange(heads, device=x.device)[None, :]
        rows = (text[:, None] * heads + head) * self.length + position[:, None]  # (T, heads)
        return x.reshape(-1, d).index_select(0, rows.reshape(-1)).view(-1, heads * d)

    def unpack(self, x: Tensor) -> Tensor:
        """``(T, *)`` -> ``(B, L, *)`` with zeros at padding positions (differentiable in ``x``)."""
        if x.shape[0] != self.tokens:
            raise ValueError(f"expected {self.tokens} packed rows to unpack, got {tuple(x.shape)}")
        grid = x.new_zeros(self.batch * self.length, *x.shape[1:])
        if torch.is_grad_enabled() and x.requires_grad:
            grid = grid.index_copy(0, self.index, x)  # out of place: autograd tracks x through it
        else:
            grid.index_copy_(0, self.index, x)  # serving: no second copy of the grid
        return grid.view(self.batch, self.length, *x.shape[1:])


def unpadding_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of ``model`` that hold an unpadding switch (``unpad``, ``unpad_traced``):
    MiniLM's encoder, the Transformer-encoder classifier. Empty for a model that cannot unpad."""
    return [module for module in model.modules() if hasattr(module, "unpad") and hasattr(module, "unpad_traced")]
