"""Checks on texts handed to a model: every error names the field, the index and the value."""

from __future__ import annotations

import html
import math
import numbers
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence, Set

__all__ = [
    "PAGE_POLICY",
    "display_width",
    "displayable",
    "is_missing_number",
    "padded",
    "page_text",
    "text_problem",
    "validate_texts",
]

#: Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): shown in a page
#: or a terminal, one reverses what follows it beyond the user's own text (numbers, labels, the
#: page's words); C0 and C1 control characters but tab and line breaks (NUL, BEL, ESC: a terminal
#: obeys ESC sequences).
_UNSHOWABLE = re.compile("[\u202a-\u202e\u2066-\u2069]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def displayable(text: str) -> str:
    """``text`` as it may be shown in a page or printed to a terminal: bidirectional controls
    dropped, other control characters shown as U+FFFD (the model still reads the text as given)."""
    return _UNSHOWABLE.sub(lambda m: "" if "\u202a" <= m.group(0) <= "\u2069" else "\ufffd", text)


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: two for a wide or full-width character (CJK, kana, hangul),
    none for a combining mark or format character, one for the rest."""
    def columns(c: str) -> int:
        if unicodedata.combining(c) or unicodedata.category(c) == "Cf":
            return 0
        return 2 if unicodedata.east_asian_width(c) in "WF" else 1

    return sum(columns(c) for c in text)


def padded(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` terminal columns (``f"{text:<{width}}"`` counts
    characters, so a column of Chinese labels pushed the figures after it out of line)."""
    return text + " " * max(0, width - display_width(text))


#: The policy of a script-free page (the dashboards): nothing loads or runs but its own inline
#: styles and data: images, so text that escaped escaping could still neither run nor call out.
PAGE_POLICY = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
               "img-src data:; form-action 'none'\">")


def page_text(value: object, quote: bool = True) -> str:
    """``value`` as HTML text (:func:`displayable`, then escaped; quotes too, for attributes)."""
    return html.escape(displayable(str(value)), quote=quote)

_SURROGATE = re.compile("[\ud800-\udfff]")


def is_missing_number(value: object) -> bool:
    """Whether a cell holds NaN: pandas' and Parquet's missing value (``NaN`` in JSONL), never a text."""
    return isinstance(value, float) and math.isnan(value)


#: Unicode categories of characters that show nothing: controls, format characters (zero-width space,
#: byte-order mark), separators. Not unassigned ones (Cn) nor private use (Co): an emoji newer than
#: Python's Unicode tables (U+1FA77, 🩷, is Cn to Python 3.11) had made a text "empty".
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def text_problem(text: object) -> str | None:
    """What makes ``text`` unusable as a model's input, in words, or None if it is fine.

    Refused: a non-string; a text with no visible character (empty, blank, or only control and
    format characters such as NUL, a zero-width space or a byte-order mark, which tokenizers
    drop); and an unpaired UTF-16 surrogate (``"\\ud800"`` in JSON, or a command-line argument
    whose bytes were not valid UTF-8), which is not Unicode text and cannot be encoded.
    """
    if not isinstance(text, str):
        return f"is {type(text).__name__} {text!r}, expected a string"
    bad = _SURROGATE.search(text)
    if bad is not None:
        return (
            f"contains an unpaired surrogate {bad.group()!a} at character {bad.start()}, which is not valid "
            "Unicode (bytes that are not UTF-8?)"
        )
    if all(character.isspace() or unicodedata.category(character) in _INVISIBLE for character in text):
        return "is an empty text" if not text.strip() else "is an empty text (only invisible characters)"
    return None


def is_empty(problem: str | None) -> bool:
    """Whether :func:`text_problem`'s answer says the text is empty (blank, or invisible characters
    alone), as against unusable for another reason (a lone surrogate)."""
    return problem is not None and problem.startswith("is an empty text")


def validate_texts(texts: Sequence[str] | str, *, field: str = "texts", allow_empty: bool = False) -> list[str]:
    """Check a batch of texts; errors name the field, the index and the value. ``allow_empty``: no
    texts is no error (a batch API answers an empty batch with an empty answer)."""
    if isinstance(texts, str):
        raise ValueError(f"{field} must be a list of strings, not one string (wrap it in a list)")
    if not isinstance(texts, Iterable) or isinstance(texts, Mapping | Set | bytes):
        # A dict's keys or a set's members came back in an order nobody could line answers up with.
        raise ValueError(f"{field} must be a list of strings, not {type(texts).__name__}")
    checked = list(texts)
    if not checked and not allow_empty:
        raise ValueError(f"{field} is empty")
    for i, text in enumerate(checked):
        problem = text_problem(text)
        if problem is not None:
            raise ValueError(f"{field}[{i}] {problem}")
    return checked


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is True or False, else a ValueError naming ``name`` ("no" and "false" had been
    read as True)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")
    return bool(value)


def check_count(name: str, value: object) -> int:
    """``value`` as a whole number of at least 1, or a ValueError naming ``name`` (a float, None or a
    bool slipped into a count failed deep inside: an IndexError, a comparison of None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}={value!r} must be a whole number of at least 1")
    number = int(value)
    if number < 1:
        raise ValueError(f"{name}={value!r} must be a whole number of at least 1")
    return number
