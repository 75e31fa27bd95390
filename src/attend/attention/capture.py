"""Capture post-softmax attention weights from any model without leaving the fast path.

Explanations need the weights; speed needs the fused kernel, which never materialises them.
:class:`AttentionCapture` resolves that: while it is active, every attention module of the
watched model (any :class:`Recordable`) computes its weights from the same projected queries
and keys as the fused call and hands them to the capture, while the output the model sees
still comes from :func:`torch.nn.functional.scaled_dot_product_attention`. Nothing is
threaded through ``forward`` signatures and no module is switched to another code path.

Activity is tracked in a :class:`contextvars.ContextVar`, so a capture in one thread or asyncio
task (an ``/explain`` request, say) does not make concurrent forwards elsewhere pay for weights.

Example:
    >>> with capture_attention(model) as cap:
    ...     logits = model(batch)
    >>> [w.shape for w in cap.weights]  # one (B, H, Lq, Lk) tensor per attention call
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType

from torch import Tensor, nn

__all__ = ["AttentionCapture", "CapturedAttention", "Recordable", "capture_attention", "recordable_names"]

_ACTIVE: ContextVar[tuple[AttentionCapture, ...]] = ContextVar("attend_attention_captures", default=())


class Recordable:
    """Mixin for modules whose attention weights a capture can record.

    Subclasses set ``capture_kind`` and call :meth:`_captures` in ``forward`` to learn whether
    weights are wanted, then :meth:`_record` with them.
    """

    capture_kind: str = "attention"

    def _captures(self) -> tuple[AttentionCapture, ...]:
        active = _ACTIVE.get()
        if not active:
            return ()
        return tuple(c for c in active if c.watches(self))  # type: ignore[arg-type]

    def _record(self, captures: tuple[AttentionCapture, ...], weights: Tensor) -> None:
        for capture in captures:
            capture.record(self, weights)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CapturedAttention:
    """One attention call's weights.

    Attributes:
        name: The module's qualified name in the model (``""`` for the model itself).
        kind: ``"attention"`` for ``(B, H, Lq, Lk)`` maps, ``"pooling"`` for ``(B, L)`` weights.
        weights: Post-softmax weights; rows of fully masked queries are zeros.
    """

    name: str
    kind: str
    weights: Tensor


@dataclass
class AttentionCapture:
    """Context manager recording the attention weights of every watched module, in call order.

    Args:
        model: Every :class:`Recordable` submodule of it is watched.
        names: Watch only the Recordable submodules with these qualified names (default: all).
            Capturing one layer instead of six costs a sixth of the extra work.
        grad: Keep the weights in the autograd graph (and ``retain_grad`` them) so gradient-
            weighted explanations can read ``record.weights.grad`` after ``backward()``. The
            fused output is kept as the forward value; gradients are routed through the
            weights so they are exactly those of the explicit computation.
    """

    model: nn.Module
    grad: bool = False
    names: frozenset[str] | None = None
    records: list[CapturedAttention] = field(default_factory=list)
    _names: dict[int, str] = field(default_factory=dict, repr=False)
    _token: Token[tuple[AttentionCapture, ...]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        everything = {id(m): name for name, m in self.model.named_modules() if isinstance(m, Recordable)}
        if not everything:
            raise ValueError(f"{type(self.model).__name__} contains no attend attention modules to capture")
        if self.names is not None:
            unknown = sorted(set(self.names) - set(everything.values()))
            if unknown:
                raise ValueError(f"no attention module named {unknown} in {type(self.model).__name__}; "
                                 f"it has {sorted(everything.values())}")  # fmt: skip
            everything = {key: name for key, name in everything.items() if name in self.names}
        self._names = everything

    def watches(self, module: nn.Module) -> bool:
        return id(module) in self._names

    def record(self, module: nn.Module, weights: Tensor) -> None:
        if self.grad and weights.requires_grad:
            weights.retain_grad()
        elif not self.grad:
            weights = weights.detach()
        kind = getattr(module, "capture_kind", "attention")
        self.records.append(CapturedAttention(self._names[id(module)], kind, weights))

    @property
    def weights(self) -> list[Tensor]:
        """The ``(B, H, Lq, Lk)`` maps of every multi-head attention call, in call order."""
        return [r.weights for r in self.records if r.kind == "attention"]

    @property
    def pooling_weights(self) -> list[Tensor]:
        """The ``(B, L)`` weights of every attention-pooling call, in call order."""
        return [r.weights for r in self.records if r.kind == "pooling"]

    def by_name(self) -> dict[str, list[Tensor]]:
        """Weights grouped by module name (a module called twice has two entries)."""
        grouped: dict[str, list[Tensor]] = {}
        for r in self.records:
            grouped.setdefault(r.name, []).append(r.weights)
        return grouped

    def clear(self) -> None:
        self.records.clear()

    def __enter__(self) -> AttentionCapture:
        if self._token is not None:
            raise RuntimeError("this AttentionCapture is already active")
        self._token = _ACTIVE.set((*_ACTIVE.get(), self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._token is not None
        # This capture alone stops, in whatever order captures are left: resetting the token would
        # restore the tuple from before it was entered, with a capture left since then (enter a,
        # enter b, exit a, exit b had kept a recording for ever).
        _ACTIVE.set(tuple(c for c in _ACTIVE.get() if c is not self))
        self._token = None


def capture_attention(model: nn.Module, *, grad: bool = False, names: Iterable[str] | None = None) -> AttentionCapture:
    """Watch every attend attention module in ``model`` (or those ``names``); ``with capture_attention(m) as cap``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return AttentionCapture(model, grad=grad, names=frozenset(names) if names is not None else None)


def recordable_names(model: nn.Module, kind: str | None = None) -> list[str]:
    """Qualified names of ``model``'s Recordable submodules (of one ``capture_kind``), in module order."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, Recordable) and (kind is None or getattr(m, "capture_kind", "attention") == kind)
    ]
