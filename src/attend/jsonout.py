"""Strict JSON for what the command line prints: no bare NaN (imports nothing heavy, so the CLI's
parser can use it)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps_json", "finite_json", "python_values"]


#: What ``json.dumps`` takes as an object's key (it writes each as text).
_KEYS = (str, int, float, bool, type(None))


class _NotJson(Exception):
    pass


def finite_json(data: Any, where: str = "") -> Any:
    """``data`` with every NaN or infinite float replaced by None: JSON has no NaN (``json.dumps``
    writes a bare ``NaN`` that strict parsers refuse), and "no figure" is what they mean here.

    Anything else JSON cannot hold (a value or a key) raises ``ValueError`` naming its place in
    ``data`` (``where`` names ``data`` itself), where ``json.dumps`` had raised a bare ``TypeError``.
    """
    try:
        return _finite(data)
    except _NotJson:  # the place is found only now: spelling it for every value had cost 6x the walk
        raise ValueError(f"{_first_not_json(data, where)}, which JSON cannot hold (text, numbers, true/false, null, "
                         "lists and objects with text keys only)") from None  # fmt: skip


def _finite(data: Any) -> Any:
    if data is None or isinstance(data, str | bool | int):
        return data
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        if not all(isinstance(key, _KEYS) for key in data):
            raise _NotJson
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    raise _NotJson


def _first_not_json(data: Any, where: str) -> str | None:
    """Where the first value or key that JSON cannot hold is in ``data``, and what it is."""

    def kind(value: Any) -> str:
        return f"{type(value).__module__}.{type(value).__qualname__}"

    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, _KEYS):
                return f"{where or 'the object'} has a key that is a {kind(key)}"
            place = f"{where}.{key}" if where else str(key)
            if (found := _first_not_json(value, place)) is not None:
                return found
        return None
    if isinstance(data, list | tuple):
        for i, value in enumerate(data):
            if (found := _first_not_json(value, f"{where}[{i}]")) is not None:
                return found
        return None
    if data is None or isinstance(data, str | int | float):
        return None
    return f"{where or 'the value'} is a {kind(data)}"


def python_values(data: Any) -> Any:
    """``data`` with numpy's and PyTorch's numbers as Python's: a numpy scalar or a 0-d tensor becomes
    a number, an array a list (each has ``tolist()``: nothing is imported for them). What a task or a
    plugin's runtime returns as metrics may hold them (they print, and JSON had refused them)."""
    if isinstance(data, dict):
        return {key: python_values(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [python_values(value) for value in data]
    if not isinstance(data, str | bytes) and callable(getattr(data, "tolist", None)):
        return data.tolist()
    return data


def dumps_json(data: Any) -> str:
    """One line of strict JSON (non-finite floats as null, text as written): what ``--json`` prints."""
    return json.dumps(finite_json(data), ensure_ascii=False, allow_nan=False)
