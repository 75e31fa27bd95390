"""Small tensor helpers shared by the attention modules and backends.

Attention tensors in this package are laid out ``(B, H, *, L, d)``: batch, heads, optional
extra batch dims (the local backend adds a block axis), sequence, features. A parameter with
one slice per head, shaped ``(H, *p)``, has to line up with the head axis whatever the number
of extra dims; these helpers do that reshaping in one place.
"""

from __future__ import annotations

from torch import Tensor


def per_head_matrix(param: Tensor, ndim: int) -> Tensor:
    """View an ``(H, a, b)`` parameter so that ``x @ view`` is a per-head matmul.

    ``x`` has ``ndim`` dims laid out ``(B, H, *, L, a)``; matmul broadcasts its batch dims
    ``(B, H, *)`` against ``(H, 1, ..., 1)`` aligned from the right.
    """
    heads, rows, cols = param.shape
    return param.view(heads, *([1] * (ndim - 4)), rows, cols)


def per_head_scalar(param: Tensor, ndim: int) -> Tensor:
    """View an ``(H,)`` parameter to scale a ``(B, H, *, L, X)`` tensor head by head."""
    return param.view(param.shape[0], *([1] * (ndim - 2)))


def per_head_vector(param: Tensor, ndim: int) -> Tensor:
    """View an ``(H, a)`` parameter to broadcast against ``(B, H, *, L, a)``."""
    heads, size = param.shape
    return param.view(heads, *([1] * (ndim - 3)), size)


def grad_through_weights(out: Tensor, weights: Tensor, v: Tensor) -> Tensor:
    """Keep ``out``'s value but take its gradient from ``weights @ v``.

    A fused or chunked kernel produced ``out`` without the weight matrix; gradient-weighted
    explanations need ``d loss / d weights``. ``out.detach() + (w@v - (w@v).detach())`` has
    exactly ``out``'s value (``x - x`` is exactly zero) and exactly the explicit path's
    gradients, for the weights and, through them, for the queries, keys and values.
    """
    mixed = weights @ v
    return out.detach() + (mixed - mixed.detach())
