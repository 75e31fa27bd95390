"""The lexical side of FAQ retrieval: BM25 over terms, with the term weights that explain a match.

Terms are lower-cased words minus English stop words (scikit-learn's generic list) and, for CJK
text, character unigrams and bigrams, since Chinese and Japanese have no spaces to split words at.
Each term is NFKC-normalised, as the classifiers' tokenizers normalise text, so full-width
``ＰａｙＰａｌ`` and ``PayPal`` (or a CJK compatibility ideograph and its unified form) are one
term; whether text is CJK is judged as NFKC reads it, so half-width ``ﾊﾟｽﾜｰﾄﾞ`` is the characters
and pairs of ``パスワード`` (it had been one word, matching nothing). Every term keeps its
character span, so a match can be shown in the user's own text.

BM25 is Okapi BM25 as ``rank_bm25`` implements it (k1=1.5, b=0.75). The index is rebuilt from
the FAQ's texts when an index is opened (a few milliseconds for a thousand entries), so nothing but
JSON and safetensors is ever stored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

__all__ = ["CJK", "CJK_CHAR", "Lexical", "Term", "term_spans", "terms"]

# Kana, CJK ideographs (and their compatibility forms), Hangul syllables.
_CJK_RANGES = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK_ONE = re.compile(f"[{_CJK_RANGES}]")


def _compatibility_cjk() -> str:
    """The characters outside those ranges that NFKC makes CJK: half-width katakana (``ﾊ``, and the
    ``ﾟ`` that NFKC joins to it), squared and enclosed forms (``㌔``, ``㈱``), Kangxi radicals."""
    blocks = ((0x2E80, 0x2FDF), (0x3000, 0x33FF), (0xFF00, 0xFFEF), (0x1F200, 0x1F2FF))
    found = (chr(c) for low, high in blocks for c in range(low, high + 1))
    return "".join(re.escape(c) for c in found
                   if not _CJK_ONE.match(c) and _CJK_ONE.search(unicodedata.normalize("NFKC", c)))  # fmt: skip


#: The characters read as CJK (a regular expression's character class, without its brackets).
CJK = _CJK_RANGES + _compatibility_cjk()
#: One CJK character, with the voiced-sound marks NFKC composes with it (``ﾊﾟ`` is ``パ``).
CJK_CHAR = rf"[{CJK}][\u3099\u309a\uff9e\uff9f]*"
_CJK_RUN = re.compile(f"[{CJK}]+")
_LATIN_WORD = re.compile(rf"[^\W_{CJK}]+")


@dataclass(frozen=True)
class Term:
    """One term of a text and where it is: ``text[start:end]``."""

    term: str
    start: int
    end: int


def term_spans(text: str) -> list[Term]:
    """The terms of ``text`` in order, each with its span (see the module docstring)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    found = []
    for match in _LATIN_WORD.finditer(text):
        word = unicodedata.normalize("NFKC", match.group()).lower()
        if word not in ENGLISH_STOP_WORDS:
            found.append(Term(word, match.start(), match.end()))
    for run in _CJK_RUN.finditer(text):
        for chars in _cjk_characters(run.group(), run.start()):
            found.extend(chars)
            found.extend(Term(a.term + b.term, a.start, b.end) for a, b in pairwise(chars))
    return sorted(found, key=lambda t: (t.start, t.end))


def _cjk_characters(run: str, start: int) -> list[list[Term]]:
    """A run of CJK text as NFKC reads it, one character a term, each spanning the characters it was
    made from: half-width ``ﾊﾟ`` is ``パ`` (two characters), squared ``㌔`` is ``キ`` and ``ロ`` (one
    each). What NFKC makes of it that is not CJK (the brackets of ``㈱``, ``(株)``) splits the run."""
    if unicodedata.is_normalized("NFKC", run):  # nearly all text: each character as it is
        return [[Term(c, start + i, start + i + 1) for i, c in enumerate(run)]]
    clusters: list[list[int]] = []  # [start, end) of each character with the marks NFKC composes it with
    for i, c in enumerate(run):
        if clusters and unicodedata.combining(unicodedata.normalize("NFKC", c)[0]):
            clusters[-1][1] = i + 1
        else:
            clusters.append([i, i + 1])
    runs: list[list[Term]] = [[]]
    for a, b in clusters:
        for c in unicodedata.normalize("NFKC", run[a:b]):
            if _CJK_ONE.match(c):
                runs[-1].append(Term(c, start + a, start + b))
            elif runs[-1]:
                runs.append([])
    return [chars for chars in runs if chars]


def terms(text: str) -> list[str]:
    """The terms of ``text`` (what BM25 counts)."""
    return [t.term for t in term_spans(text)]


class Lexical:
    """BM25 over a list of documents.

    Args:
        documents: One text per entry (an FAQ's answers, or its questions).
    """

    def __init__(self, documents: Sequence[str]) -> None:
        from rank_bm25 import BM25Okapi

        tokenized = [terms(d) for d in documents]
        # rank_bm25 divides by the mean document length: a corpus of term-less texts gets one dummy term.
        self.bm25 = BM25Okapi([t or ["\x00"] for t in tokenized])
        self.size = len(documents)

    def scores(self, query: str) -> np.ndarray:
        """``(N,)`` BM25 score of every document for ``query`` (zeros when it has no term).

        Each distinct term counts once: repeating a word ("refund refund refund ...") would
        otherwise add its weight again each time, with no bound, and lift any question over the
        hand-off threshold that was calibrated on ordinary questions."""
        words = list(dict.fromkeys(terms(query)))
        return np.asarray(self.bm25.get_scores(words), dtype=np.float64) if words else np.zeros(self.size)

    def matches(self, query: str) -> bool:
        """Whether some term of ``query`` occurs in the documents. Not ``scores(query).any()``: a term in
        half the documents (every term of a two-entry FAQ's) weighs 0, and RRF's scores are never 0."""
        return any(term in self.bm25.idf for term in terms(query))

    def contributions(self, text: str, document: int) -> list[tuple[Term, float]]:
        """Each term of ``text`` with what it adds to the BM25 score of ``document`` (matching terms only)."""
        bm25 = self.bm25
        counts = bm25.doc_freqs[document]
        norm = bm25.k1 * (1 - bm25.b + bm25.b * bm25.doc_len[document] / bm25.avgdl)
        found, seen = [], set()
        for term in term_spans(text):
            tf = counts.get(term.term, 0)
            if tf and term.term not in seen:  # each distinct term counts once, as in scores()
                seen.add(term.term)
                found.append((term, float(bm25.idf.get(term.term, 0.0) * tf * (bm25.k1 + 1) / (tf + norm))))
        return found
