"""Helpers for the typed config dataclasses: strict loading and field checks.

Configs are the API (they serialise to ``config.json``), so they are validated at the boundary
and every error names the field and the bad value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["check_positive", "check_unit_interval", "strict_from_dict"]

T = TypeVar("T")


def strict_from_dict(cls: type[T], data: Mapping[str, Any], *, what: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise instead of being silently dropped."""
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


def check_positive(config: object, *names: str) -> None:
    """Raise ``ValueError`` naming the first of ``names`` whose value is not > 0."""
    for name in names:
        value = getattr(config, name)
        if value <= 0:
            raise ValueError(f"{name}={value!r} must be positive")


def check_unit_interval(config: object, *names: str) -> None:
    """Raise ``ValueError`` for a probability-like field outside ``[0, 1)`` (dropout, ratios)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value!r} must be in [0, 1)")
