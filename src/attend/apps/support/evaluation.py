"""How well an FAQ index answers: the attention encoder against BM25, and the hand-off it makes.

The task is the one a support desk has: given a customer's question, find the answer that
answers it among *all the FAQ's answers* (the stored questions are not used, or the FAQ's own
questions would find themselves). Queries are derived from the FAQ's questions without
looking at any answer:

* the question as written;
* a reworded, search-box form (:func:`reword_question`): the first two words dropped (the
  question word and its auxiliary: "How do I install a source package?" becomes "I install a
  source package"; one word when the question has two or three) and the final punctuation
  removed. CJK characters count as words, so Chinese questions lose their first two characters;
  punctuation does not count as a word.

Metrics: top-1 accuracy and mean reciprocal rank (MRR) of the right answer. Ties count
against the query (an answer tied with the right one ranks above it), so a query sharing no
term with any answer (all BM25 scores 0) is not counted as a success.

BM25 (Okapi, ``rank_bm25`` defaults k1=1.5, b=0.75) ranks whole answers by lower-cased word
tokens without English stop words (scikit-learn's generic list) and, for CJK text, character
unigrams and bigrams, since Chinese has no spaces to split words at.

Hand-off (:func:`evaluate_handoff`) uses two folds of the FAQ: each half is indexed and
calibrated on its own (exactly as :func:`attend.apps.support.build_index` does), its questions
are the *answerable* queries, and the other half's questions are *unanswerable* (their
answers are not in the index), the case where a person should take over.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attend.apps.support.encoder import SentenceEncoder
from attend.apps.support.faq import FaqEntry, _is_question
from attend.apps.support.index import best_passage_scores, calibrate_threshold, entry_scores, self_retrieval

__all__ = [
    "bm25_tokens",
    "evaluate_handoff",
    "evaluate_retrieval",
    "question_queries",
    "ranks",
    "reword_question",
    "subset_tensors",
]

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD_OR_CJK = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]+")
_LATIN_WORD = re.compile(rf"[^\W_{_CJK}]+")


def reword_question(question: str) -> str:
    """The search-box form of a question (see the module docstring); the question itself if too short."""
    words = list(_WORD_OR_CJK.finditer(question))
    drop = 2 if len(words) >= 4 else 1 if len(words) >= 2 else 0
    rest = question[words[drop].start() :] if drop else question
    return re.sub(r"[\W_]+$", "", rest).strip() or question


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words minus English stop words; CJK runs as character unigrams and bigrams."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    text = text.lower()
    tokens = [w for w in _LATIN_WORD.findall(_CJK_RUN.sub(" ", text)) if w not in ENGLISH_STOP_WORDS]
    for run in _CJK_RUN.findall(text):
        tokens.extend(run)
        tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
    return tokens


def ranks(scores: np.ndarray | Tensor, gold: Sequence[int]) -> np.ndarray:
    """1-based rank of each query's right entry; ties with it count as ranked above it."""
    matrix = np.asarray(scores, dtype=np.float64)
    right = matrix[np.arange(len(gold)), np.asarray(gold)][:, None]
    return 1 + (matrix > right).sum(1) + ((matrix == right).sum(1) - 1)


def _metrics(found: np.ndarray) -> dict[str, float]:
    return {"top1": float((found == 1).mean()), "mrr": float((1.0 / found).mean()), "n": len(found)}


def question_queries(entries: Sequence[FaqEntry]) -> list[tuple[int, str, str]]:
    """``(entry, question, reworded)`` for every entry whose question is a question (ends with ``?``).

    Section titles ("dpkg", "Authors") stay in the index as answers but are not queries.
    """
    return [(i, e.question, reword_question(e.question)) for i, e in enumerate(entries) if _is_question(e.question)]


def evaluate_retrieval(
    entries: Sequence[FaqEntry], tensors: dict[str, Tensor], encoder: SentenceEncoder
) -> dict[str, dict[str, dict[str, float]]]:
    """Top-1 and MRR of question -> answer retrieval for BM25 and the encoder (and its parts).

    Args:
        entries: The FAQ.
        tensors: Its vectors (:func:`attend.apps.support.index.embed_entries`).
        encoder: The encoder that made them (embeds the queries).

    Returns:
        ``{method: {"original": metrics, "reworded": metrics}}`` for ``bm25``, ``encoder``
        (the index's answer score: lead and best passage), ``encoder_lead`` and ``encoder_passages``.
    """
    from rank_bm25 import BM25Okapi

    queries = question_queries(entries)
    if not queries:
        raise ValueError("no entry's question ends with '?': nothing to evaluate")
    gold = [i for i, _, _ in queries]
    bm25 = BM25Okapi([bm25_tokens(e.answer) for e in entries])
    results: dict[str, dict[str, dict[str, float]]] = {}
    for form, texts in (("original", [q for _, q, _ in queries]), ("reworded", [r for _, _, r in queries])):
        vectors = encoder.embed(texts)
        lead = vectors @ tensors["heads"].T  # (M, N)
        best_passage = best_passage_scores(vectors, tensors["passages"], tensors["passage_entry"], len(entries))
        combined = 0.5 * (lead + best_passage)  # the index's answer score (question weight 0)
        scored = {
            "bm25": np.stack([bm25.get_scores(bm25_tokens(t)) for t in texts]),
            "encoder": combined.numpy(),
            "encoder_lead": lead.numpy(),
            "encoder_passages": best_passage.numpy(),
        }
        for name, matrix in scored.items():
            results.setdefault(name, {})[form] = _metrics(ranks(matrix, gold))
    return results


def subset_tensors(tensors: dict[str, Tensor], keep: Sequence[int]) -> dict[str, Tensor]:
    """The vectors of the entries ``keep`` (renumbered 0..len(keep)-1), as if indexed alone."""
    keep_t = torch.as_tensor(list(keep), dtype=torch.long)
    new_id = torch.full((tensors["questions"].shape[0],), -1, dtype=torch.long)
    new_id[keep_t] = torch.arange(len(keep_t))
    owners = new_id[tensors["passage_entry"]]
    mine = owners >= 0
    return {"questions": tensors["questions"][keep_t], "heads": tensors["heads"][keep_t],
            "passages": tensors["passages"][mine], "passage_entry": owners[mine]}  # fmt: skip


def evaluate_handoff(
    entries: Sequence[FaqEntry],
    tensors: dict[str, Tensor],
    encoder: SentenceEncoder,
    *,
    question_weight: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Hand-off on two folds: each half indexed and calibrated alone, the other half unanswerable.

    Returns:
        ``answerable`` (per query form: ``handoff_rate``, ``answered_accuracy``, ``n``),
        ``unanswerable`` (``handoff_rate``, ``n``), ``overall_answered_accuracy`` (correct among
        everything answered, unanswerable queries answered counting as wrong), and the two
        folds' thresholds.
    """
    order = list(range(len(entries)))
    random.Random(seed).shuffle(order)
    halves = [sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])]
    queries = {i: (q, r) for i, q, r in question_queries(entries)}
    tallies: dict[str, list[tuple[bool, bool]]] = {"original": [], "reworded": [], "unanswerable": []}
    thresholds = []
    for fold, inside in enumerate(halves):
        outside = halves[1 - fold]
        part = subset_tensors(tensors, inside)
        part_entries = [entries[i] for i in inside]
        scores, correct, _ = self_retrieval(encoder, part_entries, part, question_weight, seed)
        threshold = calibrate_threshold(scores, correct)["threshold"]
        thresholds.append(threshold)
        for form, slot in (("original", 0), ("reworded", 1)):
            asked = [(pos, queries[i][slot]) for pos, i in enumerate(inside) if i in queries]
            if not asked:
                continue
            found = _score(encoder, part, [t for _, t in asked], question_weight)
            best = found.max(1)
            for (pos, _), value, index in zip(asked, best.values.tolist(), best.indices.tolist(), strict=True):
                tallies[form].append((value >= threshold, index == pos))
        foreign = [queries[i][0] for i in outside if i in queries]
        if foreign:
            best = _score(encoder, part, foreign, question_weight).max(1)
            tallies["unanswerable"].extend((value >= threshold, False) for value in best.values.tolist())

    def summary(rows: list[tuple[bool, bool]]) -> dict[str, Any]:
        answered = [hit for ok, hit in rows if ok]
        return {"handoff_rate": 1 - len(answered) / len(rows) if rows else float("nan"),
                "answered_accuracy": sum(answered) / len(answered) if answered else float("nan"),
                "n": len(rows)}  # fmt: skip

    everything = [row for rows in tallies.values() for row in rows]
    answered = [hit for ok, hit in everything if ok]
    return {
        "answerable": {form: summary(tallies[form]) for form in ("original", "reworded")},
        "unanswerable": {k: v for k, v in summary(tallies["unanswerable"]).items() if k != "answered_accuracy"},
        "overall_answered_accuracy": sum(answered) / len(answered) if answered else float("nan"),
        "thresholds": thresholds,
        "question_weight": question_weight,
    }


def _score(encoder: SentenceEncoder, part: dict[str, Tensor], texts: list[str], question_weight: float) -> Tensor:
    return entry_scores(encoder.embed(texts), part["questions"], part["heads"], part["passages"],
                        part["passage_entry"], question_weight)  # fmt: skip
