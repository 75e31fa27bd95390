"""Masks: one helper that every attention backend uses to decide which keys a query may see.

Conventions (those of :class:`torch.nn.MultiheadAttention`, whose interface ours mirrors):

* ``key_padding_mask``: bool ``(B, Lk)``, True marks a padding key that nobody may attend to.
* ``attn_mask``: bool, True marks a *forbidden* query/key pair; or float, added to the scores
  (``-inf`` forbids). Shapes ``(Lq, Lk)``, ``(B * H, Lq, Lk)`` or ``(B | 1, H | 1, Lq, Lk)``.
* ``is_causal``: query ``i`` sees keys ``j <= i`` (top-left aligned, like
  :func:`torch.nn.functional.scaled_dot_product_attention`).
* ``window``: query ``i`` sees keys with ``|i - j| <= window`` (a band; with ``is_causal``, the
  last ``window + 1`` keys).

Positional rules (causal, window) are computed by :func:`positional_mask` from query and key
positions, so the dense backends (a full ``Lq x Lk`` bias) and the local backend (bias per
block) apply literally the same rule. A query row whose keys are all masked yields zeros: the
helper reports such rows in :attr:`AttentionMask.empty_rows` and neutralises their bias so no
NaN is ever produced, in the values or in the gradients.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from attend.attention._ops import check_flag

__all__ = [
    "AttentionMask",
    "MaskSpec",
    "causal_mask",
    "check_padding_mask",
    "masked_softmax",
    "neutralise_empty_rows",
    "positional_mask",
    "window_mask",
]


def check_padding_mask(mask: Tensor, batch: int, length: int, name: str = "key_padding_mask") -> None:
    """Refuse a padding mask that is not a bool ``(batch, length)`` tensor (True = padding), naming
    the argument as the caller's signature does, its dtype or shape, and the expected shape.

    A ``(B, 1)`` mask broadcast silently (one flag for a whole row), and an integer one (1 = keep,
    as Hugging Face writes it) reached ``masked_fill`` as a raw PyTorch error.
    """
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__} (torch.as_tensor converts it)")
    if mask.dtype != torch.bool:
        hint = " (an integer mask with 1 = keep is `mask == 0`)" if not mask.dtype.is_floating_point else ""
        raise ValueError(f"{name} must be a bool tensor (True = padding), got dtype {mask.dtype}{hint}")
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected (batch, key_len) = {(batch, length)}")


def neutralise_empty_rows(bias: Tensor, empty: Tensor | None = None, *, always: bool = False
                          ) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """``bias`` with the rows that mask every key (all ``-inf``) set to 0, and those rows (or None).

    A softmax over such a row would be NaN; the callers zero its weights through ``empty_rows``
    instead. ``empty``: the rows, when the caller knows them more cheaply. Without ``always`` the
    fill is skipped when no row is empty, which asks the device (a host sync); a traced graph
    (torch.export, torch.compile) cannot branch on data, so it always fills, as ``always`` does:
    for rows that are not empty the fill changes nothing.
    """
    empty = torch.isneginf(bias).all(-1, keepdim=True) if empty is None else empty
    if always or torch.compiler.is_compiling() or bool(empty.any()):
        return bias.masked_fill(empty, 0.0), empty
    return bias, None


def positional_mask(
    q_pos: Tensor, k_pos: Tensor, *, is_causal: bool = False, window: int | None = None
) -> Tensor | None:
    """Bool "may attend" for every (query, key) position pair, broadcast from the two inputs.

    Args:
        q_pos: Integer positions of the queries, e.g. ``arange(Lq)[:, None]``.
        k_pos: Integer positions of the keys, e.g. ``arange(Lk)[None, :]``.
        is_causal: Forbid keys after the query.
        window: Forbid keys further than ``window`` positions away.

    Returns:
        A bool tensor (True = allowed), or None when no positional rule applies.
    """
    allowed: Tensor | None = None
    if is_causal:
        allowed = k_pos <= q_pos
    if window is not None:
        band = (q_pos - k_pos).abs() <= window
        allowed = band if allowed is None else allowed & band
    return allowed


def causal_mask(q_len: int, k_len: int | None = None, *, device: torch.device | None = None) -> Tensor:
    """Bool ``(Lq, Lk)`` attn_mask in torch's convention (True = forbidden) for causal attention."""
    k_len = q_len if k_len is None else k_len
    return ~_dense_positional(q_len, k_len, is_causal=True, window=None, device=device)


def window_mask(
    q_len: int, k_len: int | None = None, *, window: int, is_causal: bool = False, device: torch.device | None = None
) -> Tensor:
    """Bool ``(Lq, Lk)`` attn_mask (True = forbidden) for a band of half-width ``window``."""
    k_len = q_len if k_len is None else k_len
    return ~_dense_positional(q_len, k_len, is_causal=is_causal, window=window, device=device)


def _dense_positional(
    q_len: int, k_len: int, *, is_causal: bool, window: int | None, device: torch.device | None
) -> Tensor:
    q_pos = torch.arange(q_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = positional_mask(q_pos, k_pos, is_causal=is_causal, window=window)
    assert allowed is not None
    return allowed


def _bool_to_bias(forbidden: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.zeros(forbidden.shape, dtype=dtype, device=forbidden.device).masked_fill_(forbidden, float("-inf"))


@dataclass(frozen=True)
class AttentionMask:
    """A mask resolved for the dense backends.

    Attributes:
        bias: Float additive bias broadcastable to ``(B, H, Lq, Lk)``, or None. Rows listed in
            ``empty_rows`` hold zeros here so that softmax stays finite.
        is_causal: Causal masking still to apply; only ever True when ``bias`` is None, so it
            can be handed to SDPA's own causal kernel.
        empty_rows: Bool broadcastable to ``(B, H, Lq, 1)``, True where every key is masked;
            those rows must come out as zeros. None when there are none.
    """

    bias: Tensor | None
    is_causal: bool
    empty_rows: Tensor | None

    def dense_bias(self, q_len: int, k_len: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        """The bias with causal masking folded in, for backends without a causal flag."""
        if not self.is_causal:
            return self.bias
        return _bool_to_bias(~_dense_positional(q_len, k_len, is_causal=True, window=None, device=device), dtype)


@dataclass(frozen=True)
class MaskSpec:
    """Validated masking inputs for one attention call; backends resolve it as they need.

    Build it with :meth:`validate`, which checks dtypes and shapes and raises ``ValueError``
    naming the offending argument, its shape and the shape expected.
    """

    batch_size: int
    num_heads: int
    q_len: int
    k_len: int
    key_padding_mask: Tensor | None
    attn_mask: Tensor | None  # 4-D (B | 1, H | 1, Lq, Lk), bool (True = forbidden) or float
    is_causal: bool
    window: int | None

    @classmethod
    def validate(
        cls,
        *,
        batch_size: int,
        num_heads: int,
        q_len: int,
        k_len: int,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        window: int | None = None,
    ) -> MaskSpec:
        for name, mask in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
            if mask is not None and not isinstance(mask, Tensor):
                raise ValueError(
                    f"{name} must be a torch.Tensor, got {type(mask).__name__} (torch.as_tensor converts it)"
                )
        if key_padding_mask is not None:
            check_padding_mask(key_padding_mask, batch_size, k_len)
        if attn_mask is not None:
            attn_mask = _normalise_attn_mask(attn_mask, batch_size, num_heads, q_len, k_len)
        if window is not None and (isinstance(window, bool) or not isinstance(window, numbers.Integral)):
            raise ValueError(f"window={window!r} must be a whole number of positions")
        if window is not None and window < 0:
            raise ValueError(f"window={window} must be >= 0")
        check_flag("is_causal", is_causal)  # "no" had been read as True
        return cls(batch_size, num_heads, q_len, k_len, key_padding_mask, attn_mask, bool(is_causal), window)

    @property
    def has_any(self) -> bool:
        return (
            self.key_padding_mask is not None or self.attn_mask is not None or self.is_causal or self.window is not None
        )

    def resolve(self, dtype: torch.dtype, device: torch.device) -> AttentionMask:
        """Combine every mask into one additive bias (plus a causal flag when that is all there is)."""
        if self.attn_mask is None and self.key_padding_mask is None and self.window is None:
            return AttentionMask(bias=None, is_causal=self.is_causal, empty_rows=None)

        bias: Tensor | None = None
        if self.key_padding_mask is not None:
            bias = _bool_to_bias(self.key_padding_mask[:, None, None, :], dtype)  # (B, 1, 1, Lk)
        if self.attn_mask is not None:
            user = (
                _bool_to_bias(self.attn_mask, dtype) if self.attn_mask.dtype == torch.bool else self.attn_mask.to(dtype)
            )
            bias = user if bias is None else bias + user
        if self.is_causal or self.window is not None:
            allowed = _dense_positional(
                self.q_len, self.k_len, is_causal=self.is_causal, window=self.window, device=device
            )
            positional = _bool_to_bias(~allowed, dtype)  # (Lq, Lk)
            bias = positional if bias is None else bias + positional

        assert bias is not None
        padding_alone = self.attn_mask is None and not self.is_causal and self.window is None
        # Padding alone: a row is empty exactly when its whole sequence is padding.
        empty = self.key_padding_mask.all(-1)[:, None, None, None] if padding_alone else None  # type: ignore[union-attr]
        bias, empty_rows = neutralise_empty_rows(bias, empty)
        while bias.dim() < 4:
            bias = bias.unsqueeze(0)
        if empty_rows is not None:
            while empty_rows.dim() < 4:
                empty_rows = empty_rows.unsqueeze(0)
        return AttentionMask(bias=bias, is_causal=False, empty_rows=empty_rows)


def _normalise_attn_mask(attn_mask: Tensor, batch_size: int, num_heads: int, q_len: int, k_len: int) -> Tensor:
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise ValueError(
            f"attn_mask must be bool (True = forbidden) or float (added to scores), got dtype {attn_mask.dtype}"
        )
    shape = tuple(attn_mask.shape)
    if shape[-2:] != (q_len, k_len):
        raise ValueError(
            f"attn_mask has shape {shape}; its last two dims must be (query_len, key_len) = {(q_len, k_len)}"
        )
    if attn_mask.dim() == 2:
        return attn_mask[None, None]
    if attn_mask.dim() == 3 and shape[0] == batch_size * num_heads:
        return attn_mask.view(batch_size, num_heads, q_len, k_len)
    if attn_mask.dim() == 4 and shape[0] in (1, batch_size) and shape[1] in (1, num_heads):
        return attn_mask
    raise ValueError(
        f"attn_mask has shape {shape}; expected (Lq, Lk), (B*H, Lq, Lk) = "
        f"{(batch_size * num_heads, q_len, k_len)} or (B|1, H|1, Lq, Lk) with B={batch_size}, H={num_heads}"
    )


def masked_softmax(scores: Tensor, bias: Tensor | None, empty_rows: Tensor | None) -> Tensor:
    """``softmax(scores + bias)`` over keys, with fully masked rows set to zero.

    ``scores`` must be a fresh tensor that autograd has not saved (a matmul or score output):
    when no gradient is needed the work is done in its memory. An ``L x L`` map is large
    enough that a new allocation (and its page faults) costs more than the softmax itself:
    on this path, in place is about 3x faster. Half-precision scores are normalised in float32.
    """
    # A bias may be what needs the gradient (a learned position bias, an adaptive span) with the
    # scores' projections frozen: the in-place softmax had refused autograd then.
    tracked = torch.is_grad_enabled() and (scores.requires_grad or (bias is not None and bias.requires_grad))
    if bias is not None:
        fits = scores.shape == torch.broadcast_shapes(scores.shape, bias.shape)
        scores = scores.add_(bias) if fits else scores + bias
    if scores.dtype in (torch.float16, torch.bfloat16):
        weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    elif tracked:
        weights = torch.softmax(scores, dim=-1)
    else:
        weights = torch._softmax(scores, -1, False, out=scores)
    if empty_rows is not None:
        weights = weights.masked_fill(empty_rows, 0.0) if tracked else weights.masked_fill_(empty_rows, 0.0)
    return weights
