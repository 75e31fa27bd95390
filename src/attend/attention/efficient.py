"""Efficient attention: memory that grows linearly in sequence length.

Two families, both selectable in :class:`attend.attention.MultiHeadAttention`:

* **Local (windowed) attention** (``attention="local", window=w``): query ``i`` sees keys with
  ``|i - j| <= w`` (or ``i - w <= j <= i`` when causal), as in Longformer's sliding window
  (Beltagy et al. 2020). The sequence is cut into blocks of ``b`` queries; each block is scored
  only against the ``b + 2w`` keys around it, taken as a strided view, so scores take
  ``O(L * (b + 2w))`` memory rather than the ``O(L^2)`` of a masked full matrix. The band rule
  is the same :func:`~attend.attention.masks.positional_mask` the dense path uses.
* **Linear (kernel) attention** (``attention="linear"`` or ``"performer"``): softmax
  ``exp(q.k)`` is replaced by a kernel ``phi(q).phi(k)``, so ``sum_j phi(q_i).phi(k_j) v_j``
  becomes ``phi(q_i) @ (phi(K)^T V)``, linear in ``L``. ``phi`` is ``elu(x) + 1``
  (Katharopoulos et al. 2020) or FAVOR+ positive orthogonal random features, whose kernel is
  an unbiased estimate of ``exp(q.k / sqrt(d))`` (Choromanski et al. 2021, Performer). The
  causal form carries the running sums ``sum phi(k) v^T`` across chunks: within a chunk the
  exact quadratic form is used, so memory is ``O(L * chunk + F * d)``.

Neither forms the ``L x L`` matrix unless weights are requested for explanation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attend.attention._ops import grad_through_weights
from attend.attention.dropout import dropout
from attend.attention.masks import MaskSpec, masked_softmax, neutralise_empty_rows, positional_mask

if TYPE_CHECKING:
    from attend.attention.multihead import MultiHeadAttention

__all__ = [
    "EluFeatureMap",
    "FavorFeatureMap",
    "causal_linear_attention",
    "linear_attention",
    "local_attention",
    "orthogonal_gaussian",
]

#: Smallest query block of the local backend; tiny blocks would waste the matmul units.
MIN_LOCAL_BLOCK = 32


def local_attention(
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
    """Sliding-window attention over blocks; any score, padding, causal and adaptive span."""
    if spec.attn_mask is not None:
        raise ValueError(
            "attention='local' takes no attn_mask: its band comes from window=; "
            "use attention='full' for an arbitrary mask"
        )
    if spec.q_len != spec.k_len:
        raise ValueError(f"attention='local' needs equal query and key lengths, got {spec.q_len} and {spec.k_len}")
    if spec.window is None:
        raise ValueError("attention='local' needs window=")
    batch, heads, length, head_dim = q.shape
    window = spec.window
    left, right = window, (0 if spec.is_causal else window)
    block = min(max(window, MIN_LOCAL_BLOCK), length)
    num_blocks = math.ceil(length / block)
    tail = num_blocks * block - length
    span = block + left + right  # keys seen by one block

    q_blocks = F.pad(q, (0, 0, 0, tail)).view(batch, heads, num_blocks, block, head_dim)
    # unfold gives a strided view (B, H, nb, d, span): no copy of the keys per block.
    k_blocks = F.pad(k, (0, 0, left, right + tail)).unfold(2, span, block).transpose(-1, -2)
    v_blocks = F.pad(v, (0, 0, left, right + tail)).unfold(2, span, block).transpose(-1, -2)

    device = q.device
    q_pos = torch.arange(num_blocks * block, device=device).view(num_blocks, block, 1)
    k_pos = (torch.arange(num_blocks, device=device) * block - left).view(num_blocks, 1, 1) + torch.arange(
        span, device=device
    ).view(1, 1, span)
    allowed = positional_mask(q_pos, k_pos, is_causal=spec.is_causal, window=window)
    assert allowed is not None
    allowed = (allowed & (k_pos >= 0) & (k_pos < length)).unsqueeze(0)  # (1, nb, b, span)
    if spec.key_padding_mask is not None:
        padded = F.pad(spec.key_padding_mask, (left, right + tail), value=True).unfold(1, span, block)  # (B, nb, span)
        allowed = allowed & ~padded[:, :, None, :]
    allowed = allowed.unsqueeze(1)  # (B | 1, 1, nb, b, span)

    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=device).masked_fill_(~allowed, float("-inf"))
    if module.span is not None:  # the span hides keys too, so empty rows are found after it
        bias = bias + module.span.bias((q_pos - k_pos).abs(), q.dtype)  # (H, nb, b, span)
    bias, empty_rows = neutralise_empty_rows(bias)

    weights = masked_softmax(module.score(q_blocks, k_blocks), bias, empty_rows)  # (B, H, nb, b, span)
    # With the weights' gradient asked for, the dropout mask is kept apart (the same draws, the
    # same values), for the gradient path below to drop what the output dropped.
    keep = dropout(torch.ones_like(weights), dropout_p) if weights_grad and dropout_p > 0 else None
    dropped = dropout(weights, dropout_p) if keep is None else weights * keep
    out = (dropped @ v_blocks).reshape(batch, heads, num_blocks * block, -1)[:, :, :length]
    if not need_weights:
        return out, None
    index = (k_pos + left).expand(weights.shape)
    width = num_blocks * block + left + right

    def dense_of(blocked: Tensor) -> Tensor:  # (B, H, nb, b, span) -> (B, H, L, L)
        dense = blocked.new_zeros(*blocked.shape[:-1], width).scatter(-1, index, blocked)
        return dense.view(batch, heads, num_blocks * block, width)[:, :, :length, left : left + length]

    dense = dense_of(weights)
    if weights_grad:
        # The output's gradient through the weights it used: dropped ones (the undropped weights'
        # had been taken, so every gradient of a training step with dropout was another model's).
        out = grad_through_weights(out, dense if keep is None else dense * dense_of(keep), v)
    return out, dense


class EluFeatureMap(nn.Module):
    """``phi(x) = elu(x) + 1``: positive, cheap, no parameters (Katharopoulos et al. 2020)."""

    def forward(self, x: Tensor, *, is_query: bool, key_padding_mask: Tensor | None = None) -> Tensor:
        return F.elu(x) + 1.0


def orthogonal_gaussian(num_rows: int, dim: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Random ``(num_rows, dim)`` projection with orthogonal rows of Gaussian-distributed norms.

    Orthogonal blocks lower the variance of the random-feature estimate (Performer, sec. 4).
    """
    blocks = []
    for _ in range(math.ceil(num_rows / dim)):
        gaussian = torch.randn(dim, dim, generator=generator)
        orthonormal, _ = torch.linalg.qr(gaussian)
        blocks.append(orthonormal.T)
    rows = torch.cat(blocks)[:num_rows]
    norms = torch.randn(num_rows, dim, generator=generator).norm(dim=1)
    return rows * norms[:, None]


class FavorFeatureMap(nn.Module):
    """FAVOR+ positive random features: ``E[phi(q).phi(k)] = exp(q.k / sqrt(d))``.

    ``phi(x) = exp(w.x' - |x'|^2 / 2) / sqrt(F)`` with ``x' = x / d^(1/4)``. A stabiliser is
    subtracted before ``exp`` (per query row for queries, one constant per batch and head for
    keys); both cancel in the normalised attention, so it changes nothing but overflow.
    The projection is a buffer: saved with the model, so a reloaded model gives the same output.

    Args:
        head_dim: ``d``.
        num_features: ``F``; the estimate's variance falls as ``1/F``.
        seed: Seed for the projection, so the same config builds the same features.
    """

    def __init__(self, head_dim: int, num_features: int = 256, *, seed: int = 0) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"num_features={num_features} must be positive")
        self.head_dim = head_dim
        self.num_features = num_features
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", orthogonal_gaussian(num_features, head_dim, generator=generator))

    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draw a new projection (Performer redraws periodically during training)."""
        fresh = orthogonal_gaussian(self.num_features, self.head_dim, generator=generator)
        self.projection.copy_(fresh.to(self.projection))

    def forward(self, x: Tensor, *, is_query: bool, key_padding_mask: Tensor | None = None) -> Tensor:
        x = x * self.head_dim**-0.25
        logits = x @ self.projection.to(x.dtype).T - (x * x).sum(-1, keepdim=True) / 2  # (B, H, L, F)
        if is_query:
            stabiliser = logits.amax(-1, keepdim=True)
        else:
            masked = logits
            if key_padding_mask is not None:
                masked = logits.masked_fill(key_padding_mask[:, None, :, None], float("-inf"))
            stabiliser = masked.amax(dim=(-2, -1), keepdim=True)
            stabiliser = torch.where(torch.isfinite(stabiliser), stabiliser, torch.zeros_like(stabiliser))
        return torch.exp(logits - stabiliser.detach()) / math.sqrt(self.num_features)


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with zero where the denominator is zero (no key visible)."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, torch.ones_like(denominator)), 0.0)


def causal_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, *, chunk_size: int = 64) -> Tensor:
    """Causal kernel attention by chunks: exact quadratic form inside, running sums across.

    Args:
        phi_q, phi_k: Feature-mapped queries and keys ``(B, H, L, F)``.
        v: Values ``(B, H, L, dv)``.
        chunk_size: Queries per chunk; memory is ``O(L * chunk_size + F * dv)``.
    """
    batch, heads, length, features = phi_q.shape
    state = phi_q.new_zeros(batch, heads, features, v.shape[-1])  # sum_j phi(k_j) v_j^T so far
    normaliser = phi_q.new_zeros(batch, heads, features, 1)  # sum_j phi(k_j) so far
    outputs = []
    for start in range(0, length, chunk_size):
        chunk = slice(start, start + chunk_size)
        q_chunk, k_chunk, v_chunk = phi_q[:, :, chunk], phi_k[:, :, chunk], v[:, :, chunk]
        within = (q_chunk @ k_chunk.transpose(-2, -1)).tril()  # (B, H, C, C), keys j <= i
        numerator = q_chunk @ state + within @ v_chunk
        denominator = q_chunk @ normaliser + within.sum(-1, keepdim=True)
        outputs.append(_safe_divide(numerator, denominator))
        state = state + k_chunk.transpose(-2, -1) @ v_chunk
        normaliser = normaliser + k_chunk.sum(-2).unsqueeze(-1)
    return torch.cat(outputs, dim=2)


def linear_attention(
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
    """Kernel attention with padding and causal masks; weights are the normalised kernel."""
    if spec.attn_mask is not None or spec.window is not None:
        raise ValueError(
            "linear attention supports key_padding_mask and is_causal only, not attn_mask or window; "
            "use attention='full' or 'local'"
        )
    if spec.is_causal and spec.q_len != spec.k_len:
        raise ValueError(
            f"causal linear attention needs equal query and key lengths, got {spec.q_len} and {spec.k_len}"
        )
    feature_map = module.feature_map
    assert feature_map is not None
    dtype = q.dtype
    # The kernel's sums run over the whole sequence: in float16 the normaliser passed its largest
    # value (65504) from about a thousand keys, and the outputs came back as zeros; in bfloat16 the
    # sums lose precision. They are taken in float32, as the softmax of full attention is, autocast
    # (which would run the products in half precision again) off.
    wide = torch.promote_types(dtype, torch.float32)  # float64 stays float64
    with torch.autocast(q.device.type, enabled=False):
        out, weights = _linear_attention(module, q.to(wide), k.to(wide), v.to(wide), spec, feature_map,
                                         need_weights=need_weights, weights_grad=weights_grad)  # fmt: skip
    return out.to(dtype), (weights.to(dtype) if weights is not None else None)


def _linear_attention(module: MultiHeadAttention, q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, feature_map: Any,
                      *, need_weights: bool, weights_grad: bool) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    padding = spec.key_padding_mask
    phi_q = feature_map(q, is_query=True)
    phi_k = feature_map(k, is_query=False, key_padding_mask=padding)
    if padding is not None:
        phi_k = phi_k.masked_fill(padding[:, None, :, None], 0.0)
    if spec.is_causal:
        out = causal_linear_attention(phi_q, phi_k, v, chunk_size=module.chunk_size)
    else:
        kv = phi_k.transpose(-2, -1) @ v  # (B, H, F, dv)
        out = _safe_divide(phi_q @ kv, phi_q @ phi_k.sum(-2).unsqueeze(-1))
    if not need_weights:
        return out, None
    kernel = phi_q @ phi_k.transpose(-2, -1)  # (B, H, Lq, Lk)
    if spec.is_causal:
        kernel = kernel.tril()
    weights = _safe_divide(kernel, kernel.sum(-1, keepdim=True))
    if weights_grad:
        out = grad_through_weights(out, weights, v)
    return out, weights
