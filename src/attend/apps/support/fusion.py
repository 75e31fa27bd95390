"""Hybrid retrieval: the attention encoder's ranking and BM25's, fused into one score per FAQ entry.

Neither side wins everywhere. The encoder finds answers asked in other words; BM25 finds rare
terms (a package name, an error message) and reads any script, while all-MiniLM-L6-v2 cannot
read Chinese (more than half of the Debian FAQ's Chinese word pieces are ``[UNK]`` to it).

* **Dense** score: the encoder's cosine score of :func:`attend.apps.support.index.entry_scores`.
* **Lexical** score: ``w * BM25(question) / s_q + (1 - w) * BM25(answer) / s_a``, the same split
  between an entry's stored question and its answer as the dense side (``w`` = question weight),
  each BM25 divided by a scale fixed at build (the median, over the FAQ's own questions, of the
  best BM25 score), so the two sides are on comparable scales for every query alike.
* **Weighted fusion** (the default): ``alpha * dense + (1 - alpha) * lexical``. ``alpha`` is chosen
  when the index is built, on the FAQ's own questions (as written and reworded, each searched
  against the answers only, with no stored question to find: the leave-one-out case), as the grid
  value with the best mean reciprocal rank, and recorded in the index. One global scale, so the
  fused score keeps its meaning across queries and the hand-off threshold can be calibrated on it.
* **Reciprocal-rank fusion** (``fusion="rrf"``): ``1 / (60 + rank_dense) + 1 / (60 + rank_bm25)``
  (Cormack et al. 2009). Parameter-free, but a rank sum pulls a strong ranker towards a weak one:
  on the English Debian FAQ it scored MRR 0.60 where the encoder alone scored 0.65, so it is not
  the default. Its scores are ranks only (the first entry scores about ``2 / 61`` whatever the
  question), so they order the entries but the hand-off judges the two sides' own scores of the
  entry ranked first (:meth:`attend.apps.support.index.Ranker.judged`).

Where the encoder cannot read the text, the lexical side answers alone, and says so: when more
than :data:`MAX_UNKNOWN` of the FAQ's word pieces are unreadable to the encoder (unknown to it, or
letters of a script it has no words for, as it spells out Korean:
:meth:`~attend.apps.support.encoder.SentenceEncoder.unreadable_share`), the index is built
lexical-only; when they are in a question, that question is answered lexically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from attend.apps.support.faq import FaqEntry, _is_question
from attend.apps.support.lexical import CJK, CJK_CHAR

__all__ = [
    "FUSIONS",
    "MAX_UNKNOWN",
    "RETRIEVALS",
    "Retrieval",
    "choose_alpha",
    "fuse",
    "lexical_scale",
    "mean_reciprocal_rank",
    "question_queries",
    "ranks",
    "reword_question",
]

RETRIEVALS = ("hybrid", "dense", "bm25")
FUSIONS = ("weighted", "rrf")
#: Share of a text's word pieces the encoder may not read (``[UNK]``, or a letter of a script it has no
#: words for) and still be trusted to read it.
MAX_UNKNOWN = 0.25
#: The constant of reciprocal-rank fusion (Cormack et al. 2009's).
RRF_K = 60
#: The weights of the dense side that the build tries.
ALPHAS = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))

#: What an unreadable word piece is, in words.
_UNREADABLE = "unknown to it, or letters of a script it has no words for"
# A CJK character is a word (as NFKC reads it: half-width ``ﾊﾟ`` is one character, not part of a word)
_WORD_OR_CJK = re.compile(rf"{CJK_CHAR}|[^\W_{CJK}]+")


@dataclass
class Retrieval:
    """How an index ranks entries (recorded in its ``config.json``).

    Attributes:
        mode: ``"hybrid"``, ``"dense"`` (encoder only) or ``"bm25"`` (lexical only).
        fusion: ``"weighted"`` or ``"rrf"`` (for ``hybrid``).
        alpha: Weight of the dense side in weighted fusion, chosen at build.
        question_scale: BM25 score of stored questions that counts as 1.
        answer_scale: BM25 score of answers that counts as 1.
        dense_readable: Whether the encoder can read the FAQ (else ``hybrid`` is lexical only).
        unknown_share: Share of the FAQ's word pieces the encoder cannot read (``[UNK]`` to it, or letters
            of a script it has no words for; until 2026-12-07, ``[UNK]`` alone).
        search: Mean reciprocal rank of each ``alpha`` tried at build, for the record.
    """

    mode: str = "hybrid"
    fusion: str = "weighted"
    alpha: float = 1.0
    question_scale: float = 1.0
    answer_scale: float = 1.0
    dense_readable: bool = True
    unknown_share: float = 0.0
    search: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in RETRIEVALS:
            raise ValueError(f"retrieval={self.mode!r}; choose one of {list(RETRIEVALS)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r}; choose one of {list(FUSIONS)}")
        if self.mode == "dense" and not self.dense_readable:
            raise ValueError(
                f"retrieval='dense': the encoder cannot read this FAQ ({self.unknown_share:.1%} of its word pieces are "
                f"{_UNREADABLE}); use 'bm25' or 'hybrid'"
            )

    @property
    def effective(self) -> str:
        """What actually ranks: ``hybrid`` falls back to ``bm25`` where the encoder cannot read the FAQ."""
        return "bm25" if self.mode == "hybrid" and not self.dense_readable else self.mode

    def note(self) -> str:
        """One sentence on how this index ranks, for people."""
        if self.effective == "bm25" and self.mode == "hybrid":
            return (f"lexical only (BM25): the encoder cannot read this FAQ ({self.unknown_share:.1%} of its word "
                    f"pieces are {_UNREADABLE})")  # fmt: skip
        if self.effective == "bm25":
            return "lexical only (BM25)"
        if self.effective == "dense":
            return "the attention encoder only"
        if self.fusion == "rrf":
            return f"hybrid: reciprocal-rank fusion of the encoder and BM25 (k={RRF_K})"
        return f"hybrid: {self.alpha:g} x encoder + {1 - self.alpha:g} x BM25 (weight chosen on the FAQ's questions)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reword_question(question: str) -> str:
    """The search-box form of a question: the first two words dropped (the question word and its
    auxiliary; one word when the question has two or three) and the final punctuation removed. CJK
    characters count as words, punctuation does not. The question itself if too short."""
    words = list(_WORD_OR_CJK.finditer(question))
    drop = 2 if len(words) >= 4 else 1 if len(words) >= 2 else 0
    rest = question[words[drop].start() :] if drop else question
    return re.sub(r"[\W_]+$", "", rest).strip() or question


def question_queries(entries: Sequence[FaqEntry]) -> list[tuple[int, str, str]]:
    """``(entry, question, reworded)`` for every entry whose question is a question (ends with ``?``).

    Section titles ("dpkg", "Authors") stay in the index as answers but are not queries.
    """
    return [(i, e.question, reword_question(e.question)) for i, e in enumerate(entries) if _is_question(e.question)]


def ranks(scores: np.ndarray, gold: Sequence[int]) -> np.ndarray:
    """1-based rank of each query's right entry; ties with it count as ranked above it."""
    matrix = np.asarray(scores, dtype=np.float64)
    right = matrix[np.arange(len(gold)), np.asarray(gold)][:, None]
    return 1 + (matrix > right).sum(1) + ((matrix == right).sum(1) - 1)


def mean_reciprocal_rank(scores: np.ndarray, gold: Sequence[int]) -> float:
    return float((1.0 / ranks(scores, gold)).mean())


def _rank_positions(scores: np.ndarray) -> np.ndarray:
    """Each entry's 1-based rank per row (ties broken by entry order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    positions = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    positions[rows, order] = np.arange(1, scores.shape[1] + 1)
    return positions


def fuse(dense: np.ndarray | None, lexical: np.ndarray, retrieval: Retrieval, readable: np.ndarray | None = None
         ) -> np.ndarray:  # fmt: skip
    """Fused ``(M, N)`` scores from the two sides' ``(M, N)`` scores.

    Args:
        dense: The encoder's scores (None where it is not used).
        lexical: The scaled BM25 scores.
        retrieval: How to fuse.
        readable: ``(M,)`` whether the encoder could read each query; unreadable rows are lexical only.
    """
    mode = retrieval.effective
    if mode == "bm25" or dense is None:
        return lexical if mode == "bm25" else np.zeros_like(lexical)
    if mode == "dense":
        return dense
    keep = np.ones(len(lexical), dtype=bool) if readable is None else np.asarray(readable, dtype=bool)
    if retrieval.fusion == "rrf":
        dense_part = np.where(keep[:, None], 1.0 / (RRF_K + _rank_positions(dense)), 0.0)
        return dense_part + 1.0 / (RRF_K + _rank_positions(lexical))
    # A side weighted 0 is left out, not multiplied by 0: a -inf score there (an entry left out of
    # a calibration trial) would give 0 * -inf = NaN.
    alpha = retrieval.alpha
    dense_part = np.where(keep[:, None], alpha * dense, 0.0) if alpha > 0 else np.zeros_like(lexical)
    fused = dense_part + ((1.0 - alpha) * lexical if alpha < 1 else 0.0)
    # A query the encoder cannot read is ranked by BM25 alone: at alpha 1 its lexical side had been
    # dropped with the dense one, and every entry scored 0 (a Chinese question in a random order).
    return np.where(keep[:, None], fused, lexical)


def lexical_scale(raw: np.ndarray) -> float:
    """The BM25 score that counts as 1: the median over queries of their best score (1 if none scores)."""
    best = np.asarray(raw, dtype=np.float64).max(1) if raw.size else np.zeros(0)
    best = best[best > 0]
    return float(np.median(best)) if len(best) else 1.0


def choose_alpha(dense: Sequence[np.ndarray], lexical: Sequence[np.ndarray], gold: Sequence[Sequence[int]]
                 ) -> tuple[float, dict[str, float]]:  # fmt: skip
    """The dense weight with the best mean MRR over the query sets (ties: the more balanced weight).

    Args:
        dense: Per query set, the encoder's ``(M, N)`` scores.
        lexical: Per query set, the scaled BM25 scores.
        gold: Per query set, each query's right entry.

    Returns:
        The weight, and the mean MRR of every weight tried (keys are the weights as text).
    """
    table = {}
    for alpha in ALPHAS:
        mrr = [mean_reciprocal_rank(alpha * d + (1 - alpha) * x, g)
               for d, x, g in zip(dense, lexical, gold, strict=True)]  # fmt: skip
        table[f"{alpha:g}"] = float(np.mean(mrr))
    best = max(table.values())
    winners = [float(a) for a, v in table.items() if v >= best - 1e-12]
    return min(winners, key=lambda a: abs(a - 0.5)), table
