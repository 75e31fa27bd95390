"""An optional re-ranker: the question's tokens attend to each candidate answer's tokens.

The first stage (:mod:`attend.apps.support.fusion`) compares a question with an answer through two
fixed vectors. The re-ranker compares them token by token, by cross-attention in the encoder's own
token space: each question token ``q_i`` attends over the answer's lead tokens ``a_j`` (its first
:data:`LEAD_TOKENS`, unit vectors) with weights ``softmax_j(cos(q_i, a_j) / tau)``, and what it finds
is scored by the same cosines, ``s_i = sum_j w_ij cos(q_i, a_j)``; the interaction score is the mean of
``s_i`` over the question's tokens (``tau`` near 0 is late interaction's MaxSim, large ``tau`` a plain
mean). A candidate's new score is ``first stage + beta * interaction``.

Fitted on the FAQ alone: ``tau`` and ``beta`` are chosen on the FAQ's own question/answer pairs, with
queries derived from each question without the answers (as written, reworded, and twice with a third
of its words dropped) and the first stage's top :data:`DEPTH` answers as candidates, as the values with
the best mean reciprocal rank. A learned projection of the token states (a trained cross-attention
layer) was tried first and dropped: on the Debian FAQ it memorised the training answers (held-out MRR
0.48 against the first stage's 0.64 after a single epoch).

**Used only where it wins on held-out questions**: at build time the two values are chosen on half of
the entries' questions and scored on the other half's (and the other way round); only if the
re-ranked MRR beats the first stage's on both halves is it kept (values chosen on all questions).
The index records the comparison either way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BETAS", "DEPTH", "LEAD_TOKENS", "TAUS", "fit_reranker", "interaction", "reranked"]

#: Candidates the re-ranker reorders.
DEPTH = 10
#: Tokens of an answer's lead that the question attends to.
LEAD_TOKENS = 64
#: Temperatures and weights tried.
TAUS = (0.02, 0.05, 0.1, 0.2)
BETAS = (0.1, 0.25, 0.5, 1.0, 2.0)

Trial = tuple[int, list[int], np.ndarray]  # (query row, candidate entries, their first-stage scores)


def interaction(question: Tensor, answers: Tensor, answer_mask: Tensor, tau: float) -> Tensor:
    """``(K,)`` cross-attention interaction scores of one question with ``K`` answers.

    Args:
        question: ``(Lq, E)`` unit token vectors of the question (its real tokens).
        answers: ``(K, La, E)`` unit token vectors of the answers' leads, zero at padding.
        answer_mask: ``(K, La)`` True = token.
        tau: Attention temperature.
    """
    similarity = torch.einsum("qe,kle->kql", question.float(), answers.float())  # (K, Lq, La)
    logits = (similarity / tau).masked_fill(~answer_mask[:, None, :], float("-inf"))
    weights = torch.softmax(logits, -1)  # (K, Lq, La): each question token attends over the answer
    return (weights * similarity).sum(-1).mean(-1)  # (K,)


def reranked(first: np.ndarray, scores: np.ndarray, beta: float) -> np.ndarray:
    """Candidate order (indices into the candidates) by ``first + beta * scores``, best first."""
    return np.argsort(-(first + beta * scores), kind="stable")


def _candidates(first: np.ndarray, gold: Sequence[int]) -> list[Trial]:
    """Per query: the top :data:`DEPTH` entries by the first stage (the right one put last if missing)."""
    trials = []
    for row, right in enumerate(gold):
        top = [int(i) for i in np.argsort(-first[row], kind="stable")[:DEPTH]]
        if right not in top:
            top[-1] = right
        trials.append((row, top, first[row, top]))
    return trials


def _reciprocal(order: np.ndarray, candidates: list[int], right: int) -> float:
    ranked = [candidates[i] for i in order]
    return 1.0 / (ranked.index(right) + 1)


def _mrr(trials: Sequence[Trial], table: dict[int, np.ndarray], gold: Sequence[int], beta: float) -> float:
    if not trials:  # nothing to rank (an FAQ too small to split): no setting is better than another
        return 0.0
    return float(np.mean([_reciprocal(reranked(first, table[row], beta), candidates, gold[row])
                          for row, candidates, first in trials]))  # fmt: skip


def _best(trials: Sequence[Trial], tables: dict[float, dict[int, np.ndarray]], gold: Sequence[int]
          ) -> tuple[float, float, float]:  # fmt: skip
    """``(tau, beta, mrr)`` with the best MRR on ``trials``."""
    return max(((tau, beta, _mrr(trials, tables[tau], gold, beta)) for tau in TAUS for beta in BETAS),
               key=lambda found: found[2])  # fmt: skip


def fit_reranker(
    token_states: Callable[[Sequence[str], int], tuple[Tensor, Tensor]],
    answers: Sequence[str],
    queries: Sequence[str],
    gold: Sequence[int],
    first: np.ndarray,
    *,
    seed: int = 0,
) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
    """Choose ``tau`` and ``beta`` on the FAQ's derived questions and keep the re-ranker only where it wins.

    Args:
        token_states: ``(texts, max_tokens) -> (token states (M, L, E), mask (M, L))`` of the encoder.
        answers: The FAQ's answers.
        queries: The derived questions; ``gold``: each one's entry.
        first: ``(M, N)`` the first stage's answers-only scores of the queries.
        seed: Seeds the two halves.

    Returns:
        ``(tensors to store | None, report)``: the answers' unit lead vectors when the re-ranker won
        on both held-out halves, else None; the report gives ``tau``, ``beta`` and every MRR compared.
    """
    gold = list(gold)
    answer_states, answer_mask = token_states(list(answers), LEAD_TOKENS)
    answer_states = F.normalize(answer_states, dim=-1) * answer_mask[..., None]
    question_states, question_mask = token_states(list(queries), LEAD_TOKENS)
    question_states = F.normalize(question_states, dim=-1)
    trials = _candidates(first, gold)
    tables: dict[float, dict[int, np.ndarray]] = {tau: {} for tau in TAUS}
    for row, candidates, _ in trials:
        question = question_states[row][question_mask[row]]
        for tau in TAUS:
            tables[tau][row] = interaction(question, answer_states[candidates], answer_mask[candidates], tau).numpy()
    entries = sorted(set(gold))
    half = {entry: i % 2 for i, entry in enumerate(random.Random(seed).sample(entries, len(entries)))}
    report: dict[str, Any] = {"depth": DEPTH, "lead_tokens": LEAD_TOKENS, "halves": []}
    for side in (0, 1):  # choose on one half of the entries' questions, judge on the other half's
        train = [t for t in trials if half[gold[t[0]]] != side]
        held = [t for t in trials if half[gold[t[0]]] == side]
        tau, beta, _ = _best(train, tables, gold)
        if not held or not train:  # too few entries to split: nothing to judge on (JSON has no NaN)
            report["halves"].append({"tau": tau, "beta": beta, "first_stage_mrr": None, "reranked_mrr": None})
            continue
        before, after = _mrr(held, tables[tau], gold, 0.0), _mrr(held, tables[tau], gold, beta)
        report["halves"].append({"tau": tau, "beta": beta, "first_stage_mrr": round(before, 4),
                                 "reranked_mrr": round(after, 4)})  # fmt: skip
    report["used"] = all(h["reranked_mrr"] is not None and h["reranked_mrr"] > h["first_stage_mrr"]
                         for h in report["halves"])  # fmt: skip
    report["tau"], report["beta"], _ = _best(trials, tables, gold)
    if not report["used"]:
        return None, report
    return {"rerank_states": answer_states.half(), "rerank_mask": answer_mask}, report
