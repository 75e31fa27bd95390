"""Units every tokenizer agrees on: the words of a text, and token importance moved onto them.

Models with different tokenizers cut one text into different tokens (``un`` ``##watch`` ``##able``
against ``unwatchable``), so their token importances cannot be averaged position by position.
Every token knows the characters it covers (``TextTokenizer`` offsets), so each model's
importance is moved onto the same units of the text itself and compared there. A unit is made of
whole grapheme clusters (a letter with its combining marks, an emoji with its skin tone or
zero-width joins): a run of them that start with a letter or digit, one CJK character or kana
(WordPiece splits those one by one, so a run of them is not a word), or one other non-space
cluster (punctuation, an emoji). A Hindi vowel sign, a Thai one or an NFD accent had been a unit
of its own, and a family emoji three. A token's value is shared among the units its characters
overlap, in proportion to the overlap; special tokens (no characters) contribute nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import regex

__all__ = ["onto_words", "word_spans"]

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: (``\p{No}`` with the word characters: the regex module's ``\w`` leaves out ``²`` and ``₂``, which
#: Python's keeps, and ``x²`` and ``H₂O`` had been cut in pieces.)
_UNIT = regex.compile(rf"(?:(?=[^\W{_CJK}]|\p{{No}})\X)+|(?=[{_CJK}])\X|(?=[^\w\s\p{{No}}])\X")


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the text's units, in order (see the module docstring)."""
    return [match.span() for match in _UNIT.finditer(text)]


def onto_words(
    units: Sequence[tuple[int, int]],
    token_spans: Sequence[tuple[int, int] | None],
    importance: Sequence[float],
) -> np.ndarray:
    """Token importances summed onto ``units`` by character overlap.

    Args:
        units: :func:`word_spans` of the text.
        token_spans: Each token's characters, None for a special token.
        importance: One value per token.

    Returns:
        ``(len(units),)`` float64: per unit, the sum over tokens of the token's value times the
        share of the token's overlap with the units that falls on this one. Tokens overlapping no
        unit (special tokens, whitespace) are dropped; a unit past the end of what the model
        read (a truncated text) gets 0.
    """
    if len(token_spans) != len(importance):
        raise ValueError(f"{len(token_spans)} token spans for {len(importance)} importance values")
    values = np.zeros(len(units), dtype=np.float64)
    starts = [start for start, _ in units]
    for span, value in zip(token_spans, importance, strict=True):
        if span is None or span[1] <= span[0]:
            continue
        start, end = span
        first = max(0, bisect.bisect_right(starts, start) - 1)  # the unit that may contain `start`
        overlaps = []
        for u in range(first, len(units)):
            unit_start, unit_end = units[u]
            if unit_start >= end:
                break
            overlap = min(end, unit_end) - max(start, unit_start)
            if overlap > 0:
                overlaps.append((u, overlap))
        total = sum(overlap for _, overlap in overlaps)
        for u, overlap in overlaps:
            values[u] += float(value) * overlap / total
    return values
