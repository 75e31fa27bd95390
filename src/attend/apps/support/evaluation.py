"""How well an FAQ index answers: BM25, the attention encoder and their fusion, and the hand-off it makes.

The task is the one a support desk has: given a customer's question, find the answer that
answers it among *all the FAQ's answers* (the stored questions are not used, or the FAQ's own
questions would find themselves). Queries are derived from the FAQ's questions without
looking at any answer (:func:`~attend.apps.support.fusion.question_queries`):

* the question as written;
* a reworded, search-box form (:func:`~attend.apps.support.fusion.reword_question`): the first
  two words dropped (the question word and its auxiliary: "How do I install a source package?"
  becomes "I install a source package"; one word when the question has two or three) and the
  final punctuation removed. CJK characters count as words.

Metrics: top-1 accuracy and mean reciprocal rank (MRR) of the right answer. Ties count against
the query (an answer tied with the right one ranks above it), so a query sharing no term with any
answer (all BM25 scores 0) is not counted as a success.

Rankers (:mod:`attend.apps.support.fusion`): BM25 (Okapi, over the terms of
:mod:`attend.apps.support.lexical`), the encoder (the index's answer score: lead and best
passage), and hybrid retrieval. The hybrid weight is chosen on the FAQ's own questions, as the
index build does, so the ``hybrid`` row is in-sample for that one number; ``hybrid_2fold``
chooses it on half the questions and scores the other half (and the other way round), the
figure to expect on questions the weight never saw.

Hand-off (:func:`evaluate_handoff`) uses two folds of the FAQ: each half is indexed and
calibrated on its own (exactly as :func:`attend.apps.support.build_index` does), its questions
are the *answerable* queries, and the other half's questions are *unanswerable* (their
answers are not in the index), the case where a person should take over.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attend.apps.support.encoder import SentenceEncoder
from attend.apps.support.faq import FaqEntry, answer_key
from attend.apps.support.fusion import choose_alpha, fuse, question_queries, ranks, reword_question
from attend.apps.support.index import Ranker, best_passage_scores, calibrate_threshold, choose_retrieval, self_retrieval
from attend.apps.support.lexical import terms

__all__ = [
    "bm25_tokens",
    "evaluate_handoff",
    "evaluate_rerank",
    "evaluate_retrieval",
    "question_queries",
    "ranks",
    "reword_question",
    "subset_tensors",
]

#: The terms BM25 counts (the same as the index's lexical side).
bm25_tokens = terms


def _metrics(found: np.ndarray) -> dict[str, float]:
    return {"top1": float((found == 1).mean()), "mrr": float((1.0 / found).mean()), "n": len(found)}


def _ranker(entries: Sequence[FaqEntry], tensors: dict[str, Tensor], encoder: SentenceEncoder, mode: str = "hybrid",
            fusion: str = "weighted") -> Ranker:  # fmt: skip
    retrieval = choose_retrieval(encoder, entries, tensors, mode, fusion)
    return Ranker(encoder, [e.question for e in entries], [e.answer for e in entries], tensors, retrieval, 0.0)


def evaluate_retrieval(
    entries: Sequence[FaqEntry], tensors: dict[str, Tensor], encoder: SentenceEncoder, *, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Top-1 and MRR of question -> answer retrieval for BM25, the encoder (and its parts), and hybrids.

    Args:
        entries: The FAQ.
        tensors: Its vectors (:func:`attend.apps.support.index.embed_entries`).
        encoder: The encoder that made them (embeds the queries).
        seed: Seeds the two folds of ``hybrid_2fold``.

    Returns:
        ``{method: {"original": metrics, "reworded": metrics}}`` for ``bm25``, ``encoder`` (the
        index's answer score: lead and best passage), ``encoder_lead``, ``encoder_passages``,
        ``hybrid`` (weight chosen on these questions, as the build does), ``hybrid_2fold`` (weight
        chosen on the other half of the questions) and ``rrf`` (reciprocal-rank fusion).
    """
    queries = question_queries(entries)
    if not queries:
        raise ValueError("no entry's question ends with '?': nothing to evaluate")
    gold = np.asarray([i for i, _, _ in queries])
    ranker = _ranker(entries, tensors, encoder)
    retrieval = ranker.retrieval
    rrf = replace(retrieval, fusion="rrf")
    sides = {}
    for form, texts in (("original", [q for _, q, _ in queries]), ("reworded", [r for _, _, r in queries])):
        vectors = encoder.embed(texts)
        lead = (vectors @ tensors["heads"].T).numpy()  # (M, N)
        passages = best_passage_scores(vectors, tensors["passages"], tensors["passage_entry"], len(entries)).numpy()
        sides[form] = (ranker.dense(vectors, 0.0), ranker.lexical(texts, 0.0), ranker.readable(texts), lead, passages)
    folds = np.random.default_rng(seed).permutation(len(queries)) % 2
    fold_alpha = [retrieval.alpha, retrieval.alpha]
    for fold in (0, 1) if retrieval.effective == "hybrid" else ():  # each fold's weight: from the other fold
        train = folds != fold
        dense = [sides[f][0][train] for f in sides]
        lexical = [sides[f][1][train] for f in sides]
        fold_alpha[fold] = choose_alpha(dense, lexical, [gold[train], gold[train]])[0]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for form, (dense, lexical, readable, lead, passages) in sides.items():
        cross = np.zeros_like(dense)
        for fold in (0, 1):
            rows = folds == fold
            held = replace(retrieval, alpha=fold_alpha[fold]) if retrieval.effective == "hybrid" else retrieval
            cross[rows] = fuse(dense[rows], lexical[rows], held, readable[rows])
        scored = {
            "bm25": lexical,
            "encoder": dense,
            "encoder_lead": lead,
            "encoder_passages": passages,
            "hybrid": fuse(dense, lexical, retrieval, readable),
            "hybrid_2fold": cross,
            "rrf": fuse(dense, lexical, rrf, readable),
        }
        for name, matrix in scored.items():
            results.setdefault(name, {})[form] = _metrics(ranks(matrix, gold))
    results["hybrid"]["alpha"] = {"in_sample": retrieval.alpha, "folds": fold_alpha}  # type: ignore[assignment]
    results["hybrid"]["mode"] = retrieval.effective  # type: ignore[assignment]
    return results


def evaluate_rerank(
    entries: Sequence[FaqEntry], tensors: dict[str, Tensor], encoder: SentenceEncoder, *, seed: int = 0
) -> dict[str, Any]:
    """The re-ranker on the same queries and protocol as :func:`evaluate_retrieval`: fitted as the
    build fits it (on questions derived from these same ones, so in-sample for its two values) over
    the hybrid first stage, with ``report`` giving its held-out halves (what decides whether a build
    keeps it).

    Returns:
        ``{"original": metrics, "reworded": metrics, "report": fit report}``.
    """
    import torch.nn.functional as F

    from attend.apps.support.index import fit_rerank
    from attend.apps.support.rerank import DEPTH, LEAD_TOKENS, interaction, reranked

    ranker = _ranker(entries, tensors, encoder)
    _, report = fit_rerank(ranker, entries, seed)
    tau, beta = report["tau"], report["beta"]
    answers, answer_mask = encoder.token_states([e.answer for e in entries], LEAD_TOKENS)
    answers = F.normalize(answers, dim=-1) * answer_mask[..., None]
    queries = question_queries(entries)
    gold = [i for i, _, _ in queries]
    results: dict[str, Any] = {"report": report}
    for form, texts in (("original", [q for _, q, _ in queries]), ("reworded", [r for _, _, r in queries])):
        first = ranker.ranked(texts, question_weight=0.0)[0]
        states, mask = encoder.token_states(texts, LEAD_TOKENS)
        found = []
        for row, right in enumerate(gold):
            order = [int(i) for i in np.argsort(-first[row], kind="stable")]
            head = order[:DEPTH]
            tokens = F.normalize(states[row][mask[row]], dim=-1)
            scores = interaction(tokens, answers[head], answer_mask[head], tau).numpy()
            order = [head[i] for i in reranked(first[row, head], scores, beta)] + order[DEPTH:]
            found.append(order.index(right) + 1)
        results[form] = _metrics(np.asarray(found))
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
    retrieval: str = "hybrid",
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
        ranker = _ranker(part_entries, part, encoder, retrieval)  # chosen on this half alone, as a build would
        ranker.question_weight = question_weight
        scores, correct, _ = self_retrieval(ranker, part_entries, seed)
        threshold = calibrate_threshold(scores, correct)["threshold"]
        thresholds.append(threshold)
        for form, slot in (("original", 0), ("reworded", 1)):
            asked = [(pos, queries[i][slot]) for pos, i in enumerate(inside) if i in queries]
            if not asked:
                continue
            # judged as the build calibrates: the score the hand-off judges of the entry ranked first
            # (under RRF not the rank sum), right when that entry gives the question's answer
            found, judged, _ = ranker.ranked([t for _, t in asked])
            for (pos, _), index, value in zip(asked, found.argmax(1), judged[np.arange(len(asked)), found.argmax(1)],
                                              strict=True):  # fmt: skip
                right = answer_key(part_entries[int(index)].answer) == answer_key(part_entries[pos].answer)
                tallies[form].append((bool(value >= threshold), right))
        foreign = [queries[i][0] for i in outside if i in queries]
        if foreign:
            found, judged, _ = ranker.ranked(foreign)
            best = judged[np.arange(len(foreign)), found.argmax(1)]
            tallies["unanswerable"].extend((bool(value >= threshold), False) for value in best)

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
        "retrieval": retrieval,
    }
