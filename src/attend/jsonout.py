"""Strict JSON for what the command line prints: no bare NaN (imports nothing heavy, so the CLI's
parser can use it)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps_json", "finite_json"]


def finite_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None: JSON has no NaN (``json.dumps``
    writes a bare ``NaN`` that strict parsers refuse), and "no figure" is what they mean here."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite_json(value) for value in data]
    return data


def dumps_json(data: Any) -> str:
    """One line of strict JSON (non-finite floats as null, text as written): what ``--json`` prints."""
    return json.dumps(finite_json(data), ensure_ascii=False, allow_nan=False)
