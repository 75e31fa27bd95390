"""Checks on texts handed to a model: every error names the field, the index and the value."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["validate_texts"]


def validate_texts(texts: Sequence[str] | str, *, field: str = "texts") -> list[str]:
    """Check a batch of texts; errors name the field, the index and the value."""
    if isinstance(texts, str):
        raise ValueError(f"{field} must be a list of strings, not one string (wrap it in a list)")
    checked = list(texts)
    if not checked:
        raise ValueError(f"{field} is empty")
    for i, text in enumerate(checked):
        if not isinstance(text, str):
            raise ValueError(f"{field}[{i}] is {type(text).__name__} {text!r}, expected a string")
        if not text.strip():
            raise ValueError(f"{field}[{i}] is an empty text")
    return checked
