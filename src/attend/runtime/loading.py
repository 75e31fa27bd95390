"""The loader of classification model directories: PyTorch or ONNX Runtime, as the directory and options say;
an ensemble (``config.json`` with an ``ensemble`` entry) as :class:`attend.runtime.ensemble.EnsembleClassifier`."""

from __future__ import annotations

from attend.io import ArtifactDir, ModelDirError
from attend.runtime.base import LoadOptions, register_runtime
from attend.runtime.classifier import TextClassifier, load_torch
from attend.runtime.ensemble import load_ensemble

__all__ = ["load_classifier"]


@register_runtime("classification")
def load_classifier(artifact: ArtifactDir, options: LoadOptions) -> TextClassifier:
    """The classifier in ``artifact``: ONNX Runtime for an ``attend export`` directory, else PyTorch."""
    path = artifact.path
    if isinstance(artifact.config.get("ensemble"), dict):
        return load_ensemble(artifact, options)
    is_onnx = isinstance(artifact.config.get("onnx"), dict)
    has_weights = artifact.has("model.safetensors")
    if options.runtime == "torch" or (options.runtime == "auto" and not is_onnx):
        if is_onnx and not has_weights:
            raise ModelDirError(
                f"{path} is an ONNX model directory (model.onnx, no PyTorch weights), which runs only with "
                "ONNX Runtime; this needs the PyTorch model directory it was exported from"
                + (f" ({artifact.config['onnx']['source']})" if artifact.config["onnx"].get("source") else "")
            )
        return load_torch(artifact, int8=options.int8, bf16=options.bf16)
    if options.bf16:
        raise ValueError(f"bf16 runs PyTorch weights in bfloat16; {path} is an ONNX model directory")
    if not is_onnx:
        exported = (path / "onnx" / "model.onnx").is_file()
        hint = f" (or serve {path / 'onnx'}, which `attend quantize` exported)" if exported else ""
        raise ModelDirError(
            f"{path} is a PyTorch model directory with no model.onnx: run `attend export {path} --onnx OUT` "
            f"and serve OUT{hint}"
        )
    from attend.runtime.onnx import load_onnx

    return load_onnx(artifact, quantized=options.int8, threads=options.threads)
