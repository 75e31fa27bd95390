"""What explanation needs of a runtime, as a protocol: :class:`attend.runtime.TextClassifier` provides it.

The runtime layer sits above :mod:`attend.explain` (it offers ``explain()`` as a method), so this
package states the interface it relies on instead of importing the runtime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import Tensor

from attend.data.tokenization import TextTokenizer

__all__ = ["Capable", "Combined", "Explainable", "Recorded", "check_classifier"]


class Recorded(Protocol):
    """One forward pass with its attention (:class:`attend.runtime.AttentionOutputs`)."""

    logits: Tensor
    maps: list[Tensor]
    pooling: Tensor | None


class Capable(Protocol):
    """What a runtime can be explained with (:class:`attend.runtime.Capabilities`)."""

    maps: bool
    pooling: bool
    gradients: bool


class Explainable(Protocol):
    """What explanation needs of a runtime (:class:`attend.runtime.TextClassifier` provides it)."""

    tokenizer: TextTokenizer
    labels: list[str]
    config: dict[str, Any]

    @property
    def multi_label(self) -> bool: ...

    @property
    def pooling(self) -> str: ...

    @property
    def model_type(self) -> str: ...

    @property
    def capabilities(self) -> Capable: ...

    def plan(self, texts: Sequence[str], batch_size: int) -> list[list[int]]: ...

    def probabilities(self, encoded: dict[str, Any]) -> np.ndarray: ...

    def attention_outputs(self, encoded: dict[str, Any], *, layers: Sequence[int] | None = None,
                          grad: bool = False) -> Recorded: ...  # fmt: skip


@runtime_checkable
class Combined(Protocol):
    """A runtime whose probabilities are a weighted mean of other runtimes' (an ensemble,
    :class:`attend.runtime.ensemble.EnsembleClassifier`).

    It has no tokens or attention of its own, so it is explained through its members: each
    member's importance is moved onto the words of the text and averaged there with the
    members' weights (:func:`attend.explain.explain`).

    Attributes:
        members: The runtimes combined, each :class:`Explainable`.
        member_weights: Their weights, in the order of ``members`` (not necessarily summing to 1).
        labels: The combined labels (every member has them, possibly in another order).
    """

    members: Sequence[Explainable]
    member_weights: Sequence[float]
    labels: list[str]

    @property
    def multi_label(self) -> bool: ...

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...


def check_classifier(runtime: Any, doing: str) -> None:
    """Refuse what is not a loaded text classifier where ``doing`` (``"explain()"``) reads one: a path
    (a TypeError), or a translator or recommender :func:`attend.load` gave (a ValueError naming its
    task; they had failed on a bare AttributeError, ``'Translator' object has no attribute 'plan'``)."""
    if isinstance(runtime, (str, os.PathLike)):
        path = os.fspath(runtime)
        raise TypeError(f"runtime={path!r} is a path: {doing} takes a loaded model, attend.load({path!r})")
    task = getattr(runtime, "task", "classification")
    if task != "classification":
        how = {"translation": "its translate(texts, alignments=True)"}.get(task, "its own explain()")
        raise ValueError(f"{doing} reads a text classifier's predictions; this is a {task} model: use {how}")
