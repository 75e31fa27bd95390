"""Deployment: an HTTP service with micro-batching and metrics; ONNX export, int8, head pruning."""

# Compression and export (ONNX, int8, head pruning). Imported on first use, so that importing the
# HTTP service does not pull in onnx/onnxruntime unless a model is actually exported or served by them.
_LAZY = {
    "export_onnx": "attend.serve.export",
    "ExportParityError": "attend.serve.export",
    "OnnxPredictor": "attend.serve.onnx_runtime",
    "load_onnx": "attend.serve.onnx_runtime",
    "load_runtime": "attend.serve.onnx_runtime",
    "quantize": "attend.serve.compress",
    "prune": "attend.serve.compress",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attend.serve' has no attribute {name!r}")
