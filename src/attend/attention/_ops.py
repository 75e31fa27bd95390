"""Small tensor helpers shared by the attention modules and backends.

Attention tensors in this package are laid out ``(B, H, *, L, d)``: batch, heads, optional
extra batch dims (the local backend adds a block axis), sequence, features. A parameter with
one slice per head, shaped ``(H, *p)``, has to line up with the head axis whatever the number
of extra dims; these helpers do that reshaping in one place.
"""

from __future__ import annotations

import math
import numbers

import torch
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


def check_features(name: str, given: object, dtype: torch.dtype | None = None) -> None:
    """Refuse what is not a floating-point tensor of features, naming the argument: a numpy array or
    token ids had failed deep inside (``'ndarray' object has no attribute 'dim'``, a matmul's dtypes).

    With ``dtype`` (the module's weights'), a tensor of another dtype is refused too, unless autocast
    is on for its device (it converts them): float64 features had met float32 weights inside a matmul.
    """
    if not isinstance(given, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(given).__name__} (torch.as_tensor converts it)")
    if not given.is_floating_point():
        raise ValueError(f"{name} has dtype {given.dtype}: attention reads floating-point features (token ids "
                         "go through an embedding first)")  # fmt: skip
    if dtype is not None and given.dtype != dtype and not torch.is_autocast_enabled(given.device.type):
        raise ValueError(f"{name} has dtype {given.dtype} and the module's weights {dtype}: convert one to the other "
                         f"({name}.to({dtype}) or module.to({given.dtype}))")  # fmt: skip


def check_flag(name: str, value: object) -> None:
    """Refuse a flag that is not True or False, naming it: ``gate='no'`` had been read as True."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")


def check_rate(name: str, value: object, *, upper: float | None = None) -> None:
    """Refuse what is not a finite real number in ``[0, upper)`` (``[0, inf)`` without ``upper``), naming it:
    ``span_loss=nan`` had made every training loss NaN, ``dropout='0.1'`` failed on a comparison."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0 or (
            upper is not None and value >= upper):  # fmt: skip
        bound = f"in [0, {upper:g})" if upper is not None else "a finite number >= 0"
        raise ValueError(f"{name}={value!r} must be {bound}")
