"""Atomic file writes and the model directory format (safetensors + JSON, never pickle).

A model directory holds ``config.json`` (model, tokenizer, labels, training args, library
version, and the SHA-256 of the weights), ``model.safetensors``, ``tokenizer.json`` and
``metrics.json``. Each file is written to a temporary name and renamed into place, so a
crash never leaves a half-written file; the weights hash in ``config.json`` (written last)
lets :func:`read_model_dir` tell a directory whose files do not belong together.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "PICKLE_SUFFIXES",
    "ModelDirError",
    "atomic_write_json",
    "atomic_write_text",
    "read_model_dir",
    "save_weights",
    "sha256_file",
]

#: Files that could execute code when loaded; a model directory holding one is refused.
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib"}


class ModelDirError(ValueError):
    """A model directory is missing, incomplete, unsafe or corrupt."""


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Write the model's state dict as safetensors, atomically; return its SHA-256."""
    path = Path(path)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(state, str(tmp), metadata={"format": "pt"})
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def read_model_dir(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read ``config.json`` and the weights of a model directory, refusing anything unsafe.

    Raises:
        ModelDirError: missing directory or file, a pickle-format file present, unreadable
            JSON, or weights that are corrupt or do not match the recorded hash.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"{path}: no such model directory")
    unsafe = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if unsafe:
        raise ModelDirError(
            f"{path} contains pickle-format file(s) {unsafe}: refusing to load a model directory that could run code; "
            "attend models are safetensors + JSON only"
        )
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise ModelDirError(f"{path} is not a complete model directory: {name} is missing")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path / 'config.json'} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model" not in config or "labels" not in config:
        raise ModelDirError(f"{path / 'config.json'} lacks the 'model' and 'labels' entries of an attend model")
    expected = config.get("weights_sha256")
    if expected and sha256_file(path / "model.safetensors") != expected:
        raise ModelDirError(
            f"{path / 'model.safetensors'} does not match the hash in config.json: the directory is corrupt "
            "or its files come from different runs"
        )
    try:
        weights = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"{path / 'model.safetensors'} is corrupt ({exc})") from None
    return config, weights
