"""Strict JSON for what the command line prints: no bare NaN (imports nothing heavy, so the CLI's
parser can use it)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps_json", "finite_json"]


def finite_json(data: Any, where: str = "") -> Any:
    """``data`` with every NaN or infinite float replaced by None: JSON has no NaN (``json.dumps``
    writes a bare ``NaN`` that strict parsers refuse), and "no figure" is what they mean here.

    Anything else JSON cannot hold raises ``ValueError`` naming its place in ``data`` (``where``
    names ``data`` itself), where ``json.dumps`` had raised a bare ``TypeError``.
    """
    if data is None or isinstance(data, str | bool | int):
        return data
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value, f"{where}.{key}" if where else str(key)) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite_json(value, f"{where}[{i}]") for i, value in enumerate(data)]
    kind = type(data)
    raise ValueError(f"{where or 'the value'} is a {kind.__module__}.{kind.__qualname__}, which JSON cannot hold "
                     "(text, numbers, true/false, null, lists and objects only)")  # fmt: skip


def dumps_json(data: Any) -> str:
    """One line of strict JSON (non-finite floats as null, text as written): what ``--json`` prints."""
    return json.dumps(finite_json(data), ensure_ascii=False, allow_nan=False)
