"""Attention backends: turn per-head ``q, k, v`` and a mask into outputs (and weights on request).

Every backend has one signature (after Hugging Face's ``AttentionInterface``)::

    fn(module, q, k, v, spec, *, dropout_p, need_weights, weights_grad) -> (out, weights | None)

with ``q (B, H, Lq, d)``, ``k (B, H, Lk, d)``, ``v (B, H, Lk, dv)``, ``out (B, H, Lq, dv)`` and
``weights (B, H, Lq, Lk)``. ``module`` supplies the score (``module.score``) and the optional
adaptive span (``module.span``); projections, gating and heads are the module's business, so
no backend repeats them. Masks come as one :class:`~attend.attention.masks.MaskSpec`, resolved
by the one helper in :mod:`attend.attention.masks`, so no two backends can disagree on them.

* ``sdpa``: the fused kernel. With ``need_weights`` the output still comes from SDPA; the
  weights are computed from the very same ``q'``, ``k'`` and bias.
* ``eager``: the explicit softmax(scores + bias) @ v, for any score.
* ``local`` and ``linear``: see :mod:`attend.attention.efficient`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from attend.attention._ops import grad_through_weights
from attend.attention.dropout import dropout
from attend.attention.efficient import linear_attention, local_attention
from attend.attention.masks import MaskSpec, _dense_positional, masked_softmax

if TYPE_CHECKING:
    from attend.attention.multihead import MultiHeadAttention

__all__ = ["BACKENDS", "AttentionBackend", "eager_attention", "get_backend", "sdpa_attention"]


class AttentionBackend(Protocol):
    def __call__(
        self,
        module: MultiHeadAttention,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        spec: MaskSpec,
        *,
        dropout_p: float,
        need_weights: bool,
        weights_grad: bool,
    ) -> tuple[Tensor, Tensor | None]: ...


def _span_bias(module: MultiHeadAttention, q_len: int, k_len: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    q_pos = torch.arange(q_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    assert module.span is not None
    return module.span.bias((q_pos - k_pos).abs(), dtype).unsqueeze(0)  # (1, H, Lq, Lk)


def _span_empty_rows(spec: MaskSpec, span: Tensor, bias: Tensor) -> Tensor | None:
    """The rows ``(B | 1, H, Lq, 1)`` that the span and the mask together leave without a key, or
    None where there can be none; found from their shapes alone (no host sync), and where the mask
    is padding (with causal or window rules) without a pass over the whole ``(B, H, Lq, Lk)`` bias."""
    if spec.attn_mask is None and spec.key_padding_mask is None and spec.q_len <= spec.k_len:
        return None  # each query sees the key at its own position: distance 0, always in the span
    if spec.attn_mask is not None:
        return bias.detach().amax(-1, keepdim=True) == float("-inf")
    seen = torch.isfinite(span[0])  # (H, Lq, Lk)
    if spec.is_causal or spec.window is not None:
        seen = seen & _dense_positional(spec.q_len, spec.k_len, is_causal=spec.is_causal, window=spec.window,
                                        device=span.device)  # fmt: skip
    padding = spec.key_padding_mask
    real = torch.ones(1, spec.k_len, device=span.device) if padding is None else (~padding).float()  # (B, Lk)
    return (torch.einsum("hqk,bk->bhq", seen.float(), real) == 0).unsqueeze(-1)


def _dense_bias(
    module: MultiHeadAttention, spec: MaskSpec, q: Tensor, fold_causal: bool
) -> tuple[Tensor | None, bool, Tensor | None]:
    """(bias, is_causal, empty_rows) for the dense backends, the adaptive span included."""
    mask = spec.resolve(q.dtype, q.device)
    q_len, k_len = spec.q_len, spec.k_len
    if module.span is None and not fold_causal:
        return mask.bias, mask.is_causal, mask.empty_rows
    bias = mask.dense_bias(q_len, k_len, q.dtype, q.device)
    empty_rows = mask.empty_rows
    if module.span is not None:
        span = _span_bias(module, q_len, k_len, q.dtype, q.device)
        bias = span if bias is None else bias + span
        # The span hides keys too: a padded query far from every real key sees none. Such rows get
        # zeros like any other empty row, not a softmax over nothing but -inf (NaN).
        beyond = _span_empty_rows(spec, span, bias)
        if beyond is not None:
            # Filled without asking whether any row is empty (no host sync on every layer's
            # forward); in place where the bias has the rows' shape (it is a fresh sum here).
            fits = torch.broadcast_shapes(bias.shape, beyond.shape) == bias.shape
            bias = bias.masked_fill_(beyond, 0.0) if fits else bias.masked_fill(beyond, 0.0)
            empty_rows = beyond if empty_rows is None else empty_rows | beyond
    return bias, False, empty_rows


def _map_weights(q2: Tensor, k2: Tensor, scale: float, bias: Tensor | None, empty_rows: Tensor | None) -> Tensor:
    """The attention maps beside SDPA's output: ``softmax((q * scale) k^T + bias)``, half-precision
    inputs scored in float32, as SDPA accumulates them (fp16's range ends at 65504: logits past it
    had made the maps NaN while the output stayed finite), and returned in the inputs' dtype."""
    if q2.dtype in (torch.float16, torch.bfloat16):
        return masked_softmax((q2.float() * scale) @ k2.float().transpose(-2, -1), bias, empty_rows).to(q2.dtype)
    return masked_softmax((q2 * scale) @ k2.transpose(-2, -1), bias, empty_rows)


def sdpa_attention(
    module: MultiHeadAttention,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spec: MaskSpec,
    *,
    dropout_p: float,
    need_weights: bool,
    weights_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    q2, k2, scale = module.score.as_dot(q, k)
    if need_weights and not weights_grad and dropout_p == 0.0 and torch.compiler.is_compiling():
        # A traced graph (ONNX export with attention outputs): the maps are an output, so compute
        # them once and apply them, rather than SDPA plus a second softmax for the maps. Eager
        # PyTorch keeps the fused SDPA call below, whose output predict_proba's equals bit for bit.
        bias, _, empty_rows = _dense_bias(module, spec, q, fold_causal=True)
        weights = _map_weights(q2, k2, scale, bias, empty_rows)
        return weights @ v, weights
    if weights_grad and dropout_p > 0.0:
        # SDPA's dropout mask cannot be had: the explicit path, whose output and gradients use the
        # same dropped weights (the output had been SDPA's, its gradient the undropped weights').
        return eager_attention(module, q, k, v, spec, dropout_p=dropout_p, need_weights=True, weights_grad=True)
    bias, is_causal, empty_rows = _dense_bias(module, spec, q, fold_causal=False)
    out = F.scaled_dot_product_attention(
        q2, k2, v, attn_mask=bias, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    if empty_rows is not None:
        out = out.masked_fill_(empty_rows, 0.0) if not out.requires_grad else out.masked_fill(empty_rows, 0.0)
    if not need_weights:
        return out, None
    if is_causal:
        bias, _, _ = _dense_bias(module, spec, q, fold_causal=True)
    weights = _map_weights(q2, k2, scale, bias, empty_rows)
    if weights_grad:
        out = grad_through_weights(out, weights, v)
    return out, weights


def eager_attention(
    module: MultiHeadAttention,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spec: MaskSpec,
    *,
    dropout_p: float,
    need_weights: bool,
    weights_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    bias, _, empty_rows = _dense_bias(module, spec, q, fold_causal=True)
    weights = masked_softmax(module.score(q, k), bias, empty_rows)
    dropped = dropout(weights, dropout_p)
    return dropped @ v, (weights if need_weights else None)


#: Backends by name; :class:`~attend.attention.MultiHeadAttention` picks one at construction.
BACKENDS: dict[str, AttentionBackend] = {
    "sdpa": sdpa_attention,
    "eager": eager_attention,
    "local": local_attention,
    "linear": linear_attention,
}


def get_backend(name: str) -> AttentionBackend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {sorted(BACKENDS)}") from None
