"""Trained models at run time: :func:`load` a model directory, get the runtime of its task.

The one API that :mod:`attend.explain`, :mod:`attend.serve`, :mod:`attend.deploy` and
:mod:`attend.apps` use. For classification the runtime is a :class:`TextClassifier`, run by
PyTorch (:class:`TorchTextClassifier`) or ONNX Runtime (:class:`~attend.runtime.onnx.OnnxTextClassifier`,
imported on first use so that PyTorch-only users never load onnxruntime). An ensemble directory
(:func:`make_ensemble`) loads as an :class:`EnsembleClassifier`, its members' weighted mean.
"""

from __future__ import annotations

import os
from typing import Any

from attend.data.readers import LabelledTexts
from attend.runtime import (
    loading,  # noqa: F401  (registers the classification loader)
    recommender,  # noqa: F401  (registers the recommenders' loader)
    translator,  # noqa: F401  (registers the translators' loader)
)
from attend.runtime.base import RUNTIMES, LoadOptions, Runtime, load, register_runtime
from attend.runtime.classifier import (
    AttentionOutputs,
    Capabilities,
    Predictions,
    TextClassifier,
    TorchTextClassifier,
    native_bf16,
    quantize_torch_model,
)
from attend.runtime.ensemble import EnsembleClassifier, make_ensemble
from attend.runtime.recommender import HistoryWeights, Recommendation, Recommender
from attend.runtime.translator import Translation, Translator

__all__ = [
    "RUNTIMES",
    "AttentionOutputs",
    "Capabilities",
    "EnsembleClassifier",
    "HistoryWeights",
    "LoadOptions",
    "Predictions",
    "Recommendation",
    "Recommender",
    "Runtime",
    "TextClassifier",
    "TorchTextClassifier",
    "Translation",
    "Translator",
    "evaluate",
    "load",
    "make_ensemble",
    "native_bf16",
    "quantize_torch_model",
    "register_runtime",
]


def evaluate(
    model: str | os.PathLike[str] | Runtime,
    data: str | os.PathLike[str] | LabelledTexts,
    **options: Any,
) -> dict[str, Any]:
    """Score a model (a directory or a loaded runtime) on labelled data; the body of ``attend evaluate``.

    ``options`` go to the runtime's ``evaluate`` (for a classifier: ``text_col``, ``label_col``,
    ``batch_size``). A label the model does not know is an error naming its line.
    """
    runtime = model if isinstance(model, Runtime) else load(model)
    return runtime.evaluate(data, **options)


def __getattr__(name: str) -> Any:
    # On first use (and not in __all__, so `import *` does not load it): PyTorch-only users never
    # load onnxruntime.
    if name == "OnnxTextClassifier":
        from attend.runtime.onnx import OnnxTextClassifier

        return OnnxTextClassifier
    raise AttributeError(f"module 'attend.runtime' has no attribute {name!r}")
