"""Writing whole model directories atomically, and reading the files compression adds to them.

A directory written by ``export``, ``prune`` or ``quantize`` is built in a hidden staging
directory beside its destination and renamed into place when complete, so an interrupted run
never leaves a half-written model where a service could load it. An existing destination is
replaced only if it is a model directory (anything else is refused, so a typo cannot delete
unrelated files).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attend.io import PICKLE_SUFFIXES, ModelDirError, atomic_write_json

__all__ = [
    "check_output_directory",
    "merge_metrics",
    "publish_directory",
    "read_config",
    "refuse_pickles",
    "staging_directory",
]


def refuse_pickles(path: Path) -> None:
    """Raise if ``path`` holds a file format that can run code when loaded (as :func:`attend.io.read_model_dir`)."""
    unsafe = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if unsafe:
        raise ModelDirError(
            f"{path} contains pickle-format file(s) {unsafe}: refusing to load a model directory that could run code; "
            "attend models are safetensors, ONNX and JSON only"
        )


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a model directory, with errors that name the file."""
    if not path.is_dir():
        raise ModelDirError(f"{path}: no such model directory")
    file = path / "config.json"
    if not file.is_file():
        raise ModelDirError(f"{path} is not a model directory: config.json is missing")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model" not in config or "labels" not in config:
        raise ModelDirError(f"{file} lacks the 'model' and 'labels' entries of an attend model")
    return config


def _is_model_directory(path: Path) -> bool:
    weights = (path / "model.safetensors").is_file() or (path / "model.onnx").is_file()
    return (path / "config.json").is_file() and weights


def check_output_directory(out: Path, *, source: Path | None) -> None:
    """Refuse an output that would overwrite the source model or something that is not a model directory."""
    if source is not None:
        out_abs, source_abs = out.resolve(), source.resolve()
        if out_abs == source_abs or out_abs in source_abs.parents:
            raise ValueError(
                f"output directory {out} would overwrite the model it is made from ({source}); choose another"
            )
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} exists and is not a directory; choose another output directory")
        if any(out.iterdir()) and not _is_model_directory(out):
            raise ValueError(
                f"{out} exists, is not empty and is not a model directory; choose another output directory"
            )


@contextlib.contextmanager
def staging_directory(out: Path) -> Iterator[Path]:
    """A fresh hidden directory beside ``out`` to build into; removed if the build fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_directory(staging: Path, out: Path) -> None:
    """Swap a complete ``staging`` directory into ``out`` (two renames; the old one is removed last)."""
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def merge_metrics(path: Path, key: str, value: Any) -> dict[str, Any]:
    """Set ``metrics.json[key]`` (merging into a dict already there), keeping every other key; atomic."""
    file = path / "metrics.json"
    metrics: dict[str, Any] = {}
    if file.is_file():
        try:
            metrics = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{file} is not valid JSON ({exc}); fix or remove it") from None
        if not isinstance(metrics, dict):
            raise ModelDirError(f"{file} does not hold a JSON object; fix or remove it")
    if isinstance(metrics.get(key), dict) and isinstance(value, dict):
        metrics[key] = {**metrics[key], **value}
    else:
        metrics[key] = value
    atomic_write_json(file, metrics)
    return metrics
