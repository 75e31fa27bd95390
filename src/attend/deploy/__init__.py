"""Deployment: ONNX export (checked against PyTorch; classifiers and translators), dynamic int8
quantisation, head pruning.

Each is measured on the model's own held-out data and writes a model directory that
:func:`attend.load` and ``attend serve`` take as they take a trained one. Modules load on first
use (onnx and onnxruntime are large).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExportParityError", "OnnxTranslator", "export_onnx", "export_translator", "prune", "quantize"]

_WHERE = {"export_onnx": "export", "ExportParityError": "export", "quantize": "quantization", "prune": "pruning",
          "export_translator": "export_seq2seq", "OnnxTranslator": "export_seq2seq"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"attend.deploy.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'attend.deploy' has no attribute {name!r}")
