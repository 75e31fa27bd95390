"""Scoring functions: how strongly a query matches each key.

Every score maps per-head queries ``(B, H, *, Lq, d)`` and keys ``(B, H, *, Lk, d)`` to
scores ``(B, H, *, Lq, Lk)``; softmax over the last axis turns them into attention weights.

Most classic scores are a dot product in disguise: dot, scaled dot (Vaswani et al. 2017),
cosine (a dot product of unit vectors, times a temperature) and bilinear (``q W k^T`` is the
dot product of ``qW`` and ``k``). Such a score is *fusable*: :meth:`Score.as_dot` returns the
transformed ``(q', k', scale)`` so that ``scores = scale * q' @ k'^T``, and the attention can
run inside :func:`torch.nn.functional.scaled_dot_product_attention` without ever
materialising the score matrix. Additive (Bahdanau et al. 2015) puts a ``tanh`` between the
query and the key, so it cannot be fused and always takes the explicit path.

Each score may also carry a learnable per-head temperature (adaptive attention): the head
learns how sharp its softmax should be. For fusable scores the temperature is folded into
``q'`` so it stays on the fused path.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attend.attention._ops import per_head_matrix, per_head_scalar, per_head_vector

__all__ = [
    "SCORES",
    "AdditiveScore",
    "BilinearScore",
    "CosineScore",
    "DotScore",
    "ScaledDotScore",
    "Score",
    "build_score",
]


class Score(nn.Module):
    """Base class: a scoring function with optional learnable per-head temperature.

    Args:
        head_dim: Size ``d`` of one head's query/key vectors.
        num_heads: Number of heads ``H``; per-head parameters have a leading ``H`` axis.
        learn_temperature: Learn one multiplier per head, ``exp(log_temperature)``, starting
            at 1 so a fresh module scores exactly like the plain function.
    """

    #: Whether :meth:`as_dot` is available, i.e. the score can run on the fused kernel.
    fusable: bool = True

    def __init__(self, head_dim: int, num_heads: int, *, learn_temperature: bool = False) -> None:
        super().__init__()
        if head_dim <= 0 or num_heads <= 0:
            raise ValueError(f"head_dim={head_dim} and num_heads={num_heads} must be positive")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.log_temperature: nn.Parameter | None = nn.Parameter(torch.zeros(num_heads)) if learn_temperature else None

    @property
    def temperature(self) -> Tensor | None:
        """Per-head multipliers ``(H,)``, or None when not learned."""
        return None if self.log_temperature is None else self.log_temperature.exp()

    def _dot_inputs(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float]:
        """The score as ``scale * q' @ k'^T``, before the temperature. Fusable scores override."""
        raise NotImplementedError(f"{type(self).__name__} is not a dot-product score")

    def as_dot(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float]:
        """Return ``(q', k', scale)`` with ``scores == scale * q' @ k'^T`` (temperature folded in)."""
        q2, k2, scale = self._dot_inputs(q, k)
        if self.log_temperature is not None:
            q2 = q2 * per_head_scalar(self.temperature, q2.dim())  # type: ignore[arg-type]
        return q2, k2, scale

    def raw_scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Scores without the temperature; non-fusable scores override this."""
        q2, k2, scale = self._dot_inputs(q, k)
        return (q2 * scale) @ k2.transpose(-2, -1)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """Scores ``(B, H, *, Lq, Lk)`` for queries ``(B, H, *, Lq, d)`` and keys ``(B, H, *, Lk, d)``."""
        scores = self.raw_scores(q, k)
        if self.log_temperature is not None:
            scores = scores * per_head_scalar(self.temperature, scores.dim())  # type: ignore[arg-type]
        return scores


class DotScore(Score):
    """``q · k``: Luong et al. 2015's "dot" score. Grows with ``d``, so softmax saturates early."""

    def _dot_inputs(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float]:
        return q, k, 1.0


class ScaledDotScore(Score):
    """``q · k / sqrt(d)`` (Vaswani et al. 2017): keeps score variance near 1 for any ``d``."""

    def _dot_inputs(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float]:
        return q, k, 1.0 / math.sqrt(self.head_dim)


class CosineScore(Score):
    """``tau_h * cos(q, k)``: bounded scores, with a learned per-head temperature ``tau_h``.

    Bounding the scores to ``[-tau, tau]`` stops one large-norm key from taking all the
    weight (Swin Transformer V2 uses it for that reason). ``tau`` starts at ``init_tau`` and
    is learned in log space so it stays positive.
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        *,
        learn_temperature: bool = False,
        init_tau: float = 10.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(head_dim, num_heads, learn_temperature=learn_temperature)
        if not math.isfinite(init_tau) or init_tau <= 0:  # inf or NaN had given NaN rows
            raise ValueError(f"init_tau={init_tau} must be a positive finite number")
        self.log_tau = nn.Parameter(torch.full((num_heads,), math.log(init_tau)))
        self.eps = eps

    def _dot_inputs(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float]:
        q_unit = F.normalize(q, dim=-1, eps=self.eps)
        k_unit = F.normalize(k, dim=-1, eps=self.eps)
        return q_unit * per_head_scalar(self.log_tau.exp(), q.dim()), k_unit, 1.0


class BilinearScore(Score):
    """``q W_h k / sqrt(d)`` with a learned ``d x d`` matrix per head (Luong et al.'s "general").

    ``W_h`` starts as the identity, so a fresh module scores exactly like scaled dot; the
    score is fusable because ``q W k^T`` is the dot product of ``qW`` with ``k``.
    """

    def __init__(self, head_dim: int, num_heads: int, *, learn_temperature: bool = False) -> None:
        super().__init__(head_dim, num_heads, learn_temperature=learn_temperature)
        self.weight = nn.Parameter(torch.eye(head_dim).repeat(num_heads, 1, 1))  # (H, d, d)

    def _dot_inputs(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float]:
        return q @ per_head_matrix(self.weight, q.dim()), k, 1.0 / math.sqrt(self.head_dim)


class AdditiveScore(Score):
    """``v_h · tanh(q W_q + k W_k)``: Bahdanau et al. 2015's additive (concat) score.

    A small per-head MLP over each query/key pair. It can model matches a dot product
    cannot, but it needs a ``(B, H, Lq, Lk, hidden)`` intermediate and never fuses.

    Args:
        hidden_dim: Width of the tanh layer; defaults to ``head_dim``.
    """

    fusable = False

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        *,
        learn_temperature: bool = False,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(head_dim, num_heads, learn_temperature=learn_temperature)
        if hidden_dim is not None and hidden_dim <= 0:  # 0 had been read as "the default"
            raise ValueError(f"hidden_dim={hidden_dim} must be positive (None: head_dim)")
        hidden = head_dim if hidden_dim is None else hidden_dim
        bound = 1.0 / math.sqrt(head_dim)
        self.w_query = nn.Parameter(torch.empty(num_heads, head_dim, hidden).uniform_(-bound, bound))
        self.w_key = nn.Parameter(torch.empty(num_heads, head_dim, hidden).uniform_(-bound, bound))
        self.v = nn.Parameter(torch.empty(num_heads, hidden).uniform_(-bound, bound))

    def raw_scores(self, q: Tensor, k: Tensor) -> Tensor:
        ndim = q.dim()
        q_hidden = q @ per_head_matrix(self.w_query, ndim)  # (B, H, *, Lq, hidden)
        k_hidden = k @ per_head_matrix(self.w_key, ndim)  # (B, H, *, Lk, hidden)
        mixed = torch.tanh(q_hidden.unsqueeze(-2) + k_hidden.unsqueeze(-3))  # (B, H, *, Lq, Lk, hidden)
        v = per_head_vector(self.v, ndim)  # (H, 1.., hidden) -> broadcast over (Lq, Lk)
        return (mixed * v.unsqueeze(-2)).sum(-1)  # (B, H, *, Lq, Lk)


ScoreFactory = Callable[..., Score]

#: Scoring functions by name. Add a variant by adding one entry.
SCORES: dict[str, ScoreFactory] = {
    "dot": DotScore,
    "scaled_dot": ScaledDotScore,
    "additive": AdditiveScore,
    "cosine": CosineScore,
    "bilinear": BilinearScore,
}


def build_score(name: str, head_dim: int, num_heads: int, **options: object) -> Score:
    """Build the score registered as ``name``; unknown names raise ``ValueError`` with the choices."""
    try:
        factory = SCORES[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; choose one of {sorted(SCORES)}") from None
    try:
        return factory(head_dim, num_heads, **options)
    except TypeError as exc:  # an option the score does not take: name it, not the constructor
        parameters = set(inspect.signature(factory).parameters) - {"self", "head_dim", "num_heads"}
        unknown = sorted(set(options) - parameters)
        if not unknown:
            raise
        raise ValueError(
            f"score {name!r} takes no option {', '.join(map(repr, unknown))} (score_options); "
            f"its options: {sorted(parameters - {'learn_temperature'}) or 'none'}"
        ) from exc
