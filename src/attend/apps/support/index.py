"""Build an FAQ index and answer questions from it, handing off to a person when unsure.

An index is a directory of safetensors and JSON only (never pickle, so opening one cannot run
code):

* ``embeddings.safetensors``: unit vectors of every question (``questions (N, E)``), of every
  answer's first tokens (``heads (N, E)``) and of its passages (``passages (P, E)`` with
  ``passage_entry (P,)``), and the intent classifier (``intent_weight (C, E)``,
  ``intent_bias (C,)``) when the FAQ has intents;
* ``entries.json``: the questions, answers and intents, in FAQ order;
* ``config.json`` (written last): the encoder (name or model directory, weights hash), the
  scoring weights, the hand-off threshold with how it was derived, the intent labels, and the
  SHA-256 of the other two files, so a directory whose files do not belong together is refused.

Scoring. ``score(q, i) = w * cos(q, question_i) + (1 - w) * answer_i(q)`` with
``answer_i(q) = (cos(q, head_i) + max_p cos(q, passage_p)) / 2``: the stored question is the
strongest evidence when the user asks it in similar words (``w`` = ``question_weight``, 0.5 by
default); the answer catches questions asked in other words. An answer is represented by its
lead (its first 256 tokens, where FAQ answers put the direct answer) *and* its best passage
(MaxP, for details further down): each alone misses what the other catches.

Hand-off threshold, calibrated on the FAQ itself (no user queries needed) by held-out
self-retrieval:

* *answerable* trials: each question with a seeded third of its words deleted (at least one
  word kept), searched against the whole index; correct when the entry ranked first gives its
  answer (its own, or another row with the same answer, case and spacing aside);
* *unanswerable* trials: each question searched against the index *without its own entry*
  (leave-one-out): an on-topic question this FAQ cannot answer, the hard case for hand-off
  (unless another row gives the same answer: found, that one is right).

The threshold maximises F1 of "answered and correct" over all trials (or, with
``target_precision``, is the lowest one whose answered trials are at least that precise), and
sits midway between the last answered score and the next one below it. The trial counts,
precision, recall and F1 at the threshold are stored in ``config.json`` with it. Under
reciprocal-rank fusion the score judged is not the rank sum (:meth:`Ranker.judged`).

Intents. With an ``intent`` column, a multinomial logistic regression on the same frozen
MiniLM question embeddings: FAQ intents have a handful of questions each, too few to fine-tune
a 22M-parameter encoder (or to train one from scratch), while a linear model on pretrained
sentence embeddings is the standard few-shot intent baseline, trains in well under a second on
CPU and costs nothing at query time (the query is embedded for retrieval anyway).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import random
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attend.apps.support.encoder import PACKAGE_MODEL, SentenceEncoder, Word, load_encoder
from attend.apps.support.faq import FaqEntry, answer_key, read_faq
from attend.apps.support.fusion import (
    MAX_UNKNOWN,
    Retrieval,
    choose_alpha,
    fuse,
    lexical_scale,
    question_queries,
)
from attend.apps.support.lexical import CJK, CJK_CHAR, Lexical, Term, term_spans, terms
from attend.apps.support.rerank import DEPTH, LEAD_TOKENS, fit_reranker, interaction
from attend.data.readers import DataError
from attend.data.validation import text_problem
from attend.io import ArtifactDir, ArtifactWriter, ModelDirError, atomic_write_json, save_tensors
from attend.version import __version__

__all__ = [
    "INDEX_FORMAT",
    "Ranker",
    "SupportIndex",
    "ask",
    "best_passage_scores",
    "build_index",
    "calibrate_threshold",
    "choose_retrieval",
    "conflicting_questions",
    "drop_words",
    "embed_entries",
    "entry_scores",
    "fit_rerank",
    "self_retrieval",
]

#: ``config.json`` "format" of a support index.
INDEX_FORMAT = "attend-support-index"
#: The layout of an index directory this code writes; it reads this one and every one before it.
INDEX_FORMAT_VERSION = 3  # 3: a reciprocal-rank-fusion index's threshold is on its judged scores
_FILES = ("config.json", "entries.json", "embeddings.safetensors")
#: Share of a question's words deleted to make an answerable calibration query.
DROP_FRACTION = 1 / 3
#: Inverse regularisation of the intent logistic regression. Features are unit vectors in 384
#: dimensions, so separating weights must be large; C=1 (sklearn's default) would leave every
#: probability near uniform.
INTENT_C = 10.0

# A word, or one CJK character (as NFKC reads it: half-width ``ﾊﾟ`` is one character, not part of a word)
_TOKEN = re.compile(rf"{CJK_CHAR}|[^\s{CJK}]+")


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def best_passage_scores(queries: Tensor, passages: Tensor, passage_entry: Tensor, entries: int) -> Tensor:
    """``(M, N)``: each query's best cosine over each entry's passages (MaxP)."""
    m = queries.shape[0]
    best = torch.full((m, entries), -2.0, dtype=queries.dtype)  # below any cosine
    return best.scatter_reduce(1, passage_entry.expand(m, -1), queries @ passages.T, reduce="amax", include_self=True)


def entry_scores(
    queries: Tensor,
    questions: Tensor,
    heads: Tensor,
    passages: Tensor,
    passage_entry: Tensor,
    question_weight: float,
) -> Tensor:
    """``(M, N)`` scores of ``M`` query vectors against ``N`` entries (see the module docstring).

    Args:
        queries: ``(M, E)`` unit vectors.
        questions: ``(N, E)`` question vectors.
        heads: ``(N, E)`` answer-lead vectors.
        passages: ``(P, E)`` passage vectors.
        passage_entry: ``(P,)`` the entry each passage belongs to (every entry has at least one).
        question_weight: ``w`` in ``w * question + (1 - w) * answer``.
    """
    best_passage = best_passage_scores(queries, passages, passage_entry, questions.shape[0])  # (M, N)
    answer = 0.5 * (queries @ heads.T + best_passage)  # (M, N)
    return question_weight * (queries @ questions.T) + (1.0 - question_weight) * answer


class Ranker:
    """Scores FAQ entries for query texts: the encoder's side, BM25's, fused as ``retrieval`` says.

    Args:
        encoder: The sentence encoder (embeds queries).
        questions: The entries' stored questions.
        answers: Their answers.
        tensors: The index's vectors (:func:`embed_entries`).
        retrieval: How to rank (:class:`~attend.apps.support.fusion.Retrieval`).
        question_weight: Weight of the stored question against the answer, on both sides.
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        questions: Sequence[str],
        answers: Sequence[str],
        tensors: dict[str, Tensor],
        retrieval: Retrieval,
        question_weight: float,
    ) -> None:
        self.encoder = encoder
        self.tensors = tensors
        self.retrieval = retrieval
        self.question_weight = question_weight
        self.lexical_questions = Lexical(questions)
        self.lexical_answers = Lexical(answers)

    def readable(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, whether the encoder can read it (at most :data:`MAX_UNKNOWN` of its pieces unreadable:
        :meth:`~attend.apps.support.encoder.SentenceEncoder.unreadable_share`)."""
        return np.asarray([share <= MAX_UNKNOWN for share in self.encoder.unreadable_share(texts)], dtype=bool)

    def dense(self, vectors: Tensor, question_weight: float | None = None) -> np.ndarray:
        """``(M, N)`` encoder scores of query vectors (:func:`entry_scores`)."""
        t, weight = self.tensors, self.question_weight if question_weight is None else question_weight
        return entry_scores(vectors, t["questions"], t["heads"], t["passages"], t["passage_entry"], weight).numpy()

    def lexical(self, texts: Sequence[str], question_weight: float | None = None) -> np.ndarray:
        """``(M, N)`` scaled BM25 scores: stored question and answer, weighted as on the dense side."""
        weight = self.question_weight if question_weight is None else question_weight
        answers = np.stack([self.lexical_answers.scores(t) for t in texts]) / self.retrieval.answer_scale
        if weight == 0:
            return answers
        questions = np.stack([self.lexical_questions.scores(t) for t in texts]) / self.retrieval.question_scale
        return weight * questions + (1.0 - weight) * answers

    def matches(self, text: str) -> bool:
        """Whether a word of ``text`` occurs in what BM25 reads: the answers and the stored questions,
        each where it carries weight (at ``question_weight`` 1 the answers count for nothing)."""
        weight = self.question_weight
        answers, questions = self.lexical_answers, self.lexical_questions
        return (weight < 1 and answers.matches(text)) or (weight > 0 and questions.matches(text))

    def searched(self) -> str:
        """What :meth:`matches` searches, in words."""
        weight = self.question_weight
        return "the FAQ's answers" if weight == 0 else "the FAQ's questions" if weight == 1 else "the FAQ"

    def ranked(
        self,
        texts: Sequence[str],
        *,
        vectors: Tensor | None = None,
        exclude: Sequence[int] | None = None,
        question_weight: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fused (M, N), judged (M, N), readable (M,))`` for these query texts: the scores that rank, and
        those the hand-off judges (the same array but under reciprocal-rank fusion, :meth:`judged`).

        Args:
            texts: The queries.
            vectors: Their embeddings, if already computed.
            exclude: Per query, an entry to leave out (scored ``-inf`` before fusing).
            question_weight: Override the index's (0: answers only, the evaluation protocol).
        """
        lexical = self.lexical(texts, question_weight)
        dense = None
        readable = np.ones(len(texts), dtype=bool)
        if self.retrieval.effective != "bm25":
            readable = self.readable(texts)
            dense = self.dense(self.encoder.embed(texts) if vectors is None else vectors, question_weight)
        if exclude is not None:
            rows, left_out = np.arange(len(texts)), np.asarray(exclude)
            lexical[rows, left_out] = -np.inf  # out of the rankings RRF fuses too
            if dense is not None:
                dense[rows, left_out] = -np.inf
        fused = fuse(dense, lexical, self.retrieval, readable)
        judged = self.judged(dense, lexical, readable) if self.rank_fused else fused
        if exclude is not None:
            # ... and out of the fused scores: a side weighted 0 (alpha 0 or 1) made 0 * -inf = NaN there,
            # and a NaN best score made the calibrated hand-off threshold NaN, so nothing was handed off.
            fused[rows, left_out] = -np.inf
            judged[rows, left_out] = -np.inf
        return fused, judged, readable

    @property
    def rank_fused(self) -> bool:
        """Whether entries are ranked by reciprocal-rank fusion (whose scores say nothing of confidence)."""
        return self.retrieval.effective == "hybrid" and self.retrieval.fusion == "rrf"

    def judged(self, dense: np.ndarray | None, lexical: np.ndarray, readable: np.ndarray) -> np.ndarray:
        """The scores the hand-off judges under reciprocal-rank fusion: the two sides' own scores, weighted
        equally as RRF weighs their votes (a question the encoder cannot read: BM25's alone).

        An RRF score depends on ranks alone: every question's best entry scores about ``2 / 61``, an
        off-topic question's as a clear one's, so a threshold on it could not tell them apart (7 of
        12 clear paraphrases of a 12-entry FAQ were handed off). What the two rankers score the
        entry RRF put first does say it."""
        return fuse(dense, lexical, dataclasses.replace(self.retrieval, fusion="weighted", alpha=0.5), readable)


def drop_words(text: str, rng: random.Random, fraction: float = DROP_FRACTION) -> str:
    """Delete ``fraction`` of the words of ``text`` at random (CJK characters count as words).

    At least one word is kept, and at least one deleted when there are two or more: a reworded
    question that shares most but not all of its words with the original.
    """
    words = _TOKEN.findall(text)
    if len(words) < 2:
        return text
    drop = min(len(words) - 1, max(1, round(len(words) * fraction)))
    gone = set(rng.sample(range(len(words)), drop))
    kept = [w for i, w in enumerate(words) if i not in gone]
    joined = " ".join(kept)
    return re.sub(r"(?<=[\u3400-\u9fff]) (?=[\u3400-\u9fff])", "", joined)  # no spaces inside CJK runs


# --------------------------------------------------------------------------------------------
# Hand-off calibration
# --------------------------------------------------------------------------------------------


def calibrate_threshold(
    scores: np.ndarray, correct: np.ndarray, *, target_precision: float | None = None
) -> dict[str, Any]:
    """The score threshold below which to hand off, from trials with known outcomes.

    Args:
        scores: Best-match score of each trial.
        correct: Whether each trial's best match was right (unanswerable trials: always False).
        target_precision: Instead of maximising F1, the lowest threshold whose answered trials
            are at least this precise.

    Returns:
        ``threshold`` plus ``precision``, ``recall``, ``f1`` of answering at it, and ``method``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.shape != correct.shape or scores.ndim != 1 or not len(scores):
        raise ValueError("calibration needs one score and one outcome per trial")
    if np.isnan(scores).any():  # a NaN threshold would hand nothing off, silently
        raise ValueError(f"calibration got {int(np.isnan(scores).sum())} NaN score(s)")
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision={target_precision} must be in (0, 1]")
    method = "max_f1" if target_precision is None else f"precision>={target_precision:g}"
    positives = int(correct.sum())
    if positives == 0:
        return {"threshold": float(scores.max()) + 1e-6, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                "method": method, "note": "no trial was answered correctly: everything is handed off"}  # fmt: skip
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], correct[order]
    # Cut only between distinct scores: tied trials are answered or handed off together.
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    cuts = np.flatnonzero(last_of_tie)
    tp = np.cumsum(hits)[cuts]
    answered = cuts + 1
    precision = tp / answered
    recall = tp / positives
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    if target_precision is None:
        best = int(np.argmax(f1))
    else:
        ok = np.flatnonzero(precision >= target_precision - 1e-12)
        if not len(ok):
            return {"threshold": float(ranked[0]) + 1e-6, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                    "method": method, "note": f"no threshold reaches precision {target_precision:g}: "
                    "everything is handed off"}  # fmt: skip
        best = int(ok[-1])
    cut = cuts[best]
    below = ranked[cut + 1] if cut + 1 < len(ranked) else None
    threshold = float(ranked[cut]) if below is None else float((ranked[cut] + below) / 2)
    return {"threshold": threshold, "precision": float(precision[best]), "recall": float(recall[best]),
            "f1": float(f1[best]), "method": method}  # fmt: skip


def self_retrieval(
    ranker: Ranker, entries: Sequence[FaqEntry], seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """``(scores, correct, counts)`` of the answerable and unanswerable calibration trials: each trial's
    judged score of the entry ranked first, and whether that entry gives the trial's answer; ``counts``
    says how many trials there are, and how many entries share their answer with another
    (``shared_answers``).

    A hybrid ranker's trials are those of questions the encoder can read: one it cannot read is
    ranked by BM25 alone and judged on the threshold calibrated on BM25's scale
    (``handoff.lexical_threshold``), so its score, on that other scale, would move this one."""
    n = len(entries)
    rng = random.Random(seed)
    # An entry found is right when it gives the trial's answer: an FAQ that lists other wordings of a
    # question as rows of their own, with the same answer, had its left-out questions counted wrong when
    # they found their twin: the precision it reported fell (0.56 for 0.91), and a target precision's
    # threshold rose until clear rewordings were handed off.
    answers = np.asarray([answer_key(e.answer) for e in entries], dtype=object)
    rows = np.arange(n)
    reworded = [drop_words(e.question, rng) for e in entries]
    answerable, judged, read = ranker.ranked(reworded)
    found = answerable.argmax(1)
    scores = [judged[rows, found]]  # what the hand-off judges of the entry ranked first
    correct = [answers[found] == answers]
    kept = [read]
    twins = 0
    if n > 1:
        questions = [e.question for e in entries]
        # Leave-one-out: each question searched with the entry that answers it gone.
        own, judged, read_own = ranker.ranked(questions, vectors=ranker.tensors["questions"], exclude=range(n))
        found = own.argmax(1)
        scores.append(judged[rows, found])
        correct.append(answers[found] == answers)  # unanswerable unless another entry gives its answer
        kept.append(read_own)
        twins = int(sum((answers == answers[i]).sum() > 1 for i in range(n)))
    keep = np.concatenate(kept) if ranker.retrieval.effective == "hybrid" else np.ones(sum(map(len, kept)), bool)
    if not keep.any():  # no trial the encoder reads (a hybrid index is mostly readable): every trial
        keep[:] = True
    counts = {"answerable_trials": int(keep[:n].sum()), "answerable_correct": int((correct[0] & keep[:n]).sum()),
              "unanswerable_trials": int(keep[n:].sum()), "shared_answers": twins}  # fmt: skip
    return np.concatenate(scores)[keep], np.concatenate(correct).astype(bool)[keep], counts


def choose_retrieval(
    encoder: SentenceEncoder, entries: Sequence[FaqEntry], tensors: dict[str, Tensor], mode: str, fusion: str
) -> Retrieval:
    """The index's :class:`Retrieval`: whether the encoder can read the FAQ, the BM25 scales and, for
    weighted hybrid retrieval, the dense weight with the best MRR on the FAQ's own questions (as
    written and reworded, searched against the answers alone: no stored question to find them)."""
    texts = [e.question for e in entries] + [e.answer for e in entries]
    shares = encoder.unreadable_share(texts)  # [UNK] alone had passed Korean: it is spelled out letter by letter
    unknown = float(np.mean(shares))
    retrieval = Retrieval(mode=mode, fusion=fusion, unknown_share=round(unknown, 4),
                          dense_readable=unknown <= MAX_UNKNOWN)  # fmt: skip
    queries = question_queries(entries) or [(i, e.question, e.question) for i, e in enumerate(entries)]
    gold = [i for i, _, _ in queries]
    forms = [[q for _, q, _ in queries], [r for _, _, r in queries]]
    probe = Ranker(encoder, [e.question for e in entries], [e.answer for e in entries], tensors, retrieval, 0.0)
    raw_answers = [probe.lexical(form, 0.0) for form in forms]
    retrieval.answer_scale = lexical_scale(np.concatenate(raw_answers))
    rng = random.Random(0)
    retrieval.question_scale = lexical_scale(
        np.stack([probe.lexical_questions.scores(drop_words(e.question, rng)) for e in entries])
    )
    if retrieval.effective == "hybrid" and fusion == "weighted":
        dense = [probe.dense(encoder.embed(form), 0.0) for form in forms]
        lexical = [raw / retrieval.answer_scale for raw in raw_answers]
        retrieval.alpha, retrieval.search = choose_alpha(dense, lexical, [gold, gold])
    elif retrieval.effective == "bm25":
        retrieval.alpha = 0.0
    return retrieval


def fit_rerank(ranker: Ranker, entries: Sequence[FaqEntry], seed: int) -> tuple[dict[str, Tensor] | None, dict]:
    """The re-ranker's training questions (each question as written, reworded, and twice with a third of
    its words dropped: nothing taken from the answers), their first-stage scores, and the fit."""
    rng = random.Random(seed)
    queries, gold = [], []
    for entry, question, reworded in question_queries(entries) or [(i, e.question, e.question)
                                                                    for i, e in enumerate(entries)]:  # fmt: skip
        forms = {question, reworded, drop_words(question, rng), drop_words(question, rng)}
        queries.extend(sorted(forms))
        gold.extend([entry] * len(forms))
    first = ranker.ranked(queries, question_weight=0.0)[0]
    return fit_reranker(ranker.encoder.token_states, [e.answer for e in entries], queries, gold, first, seed=seed)



# --------------------------------------------------------------------------------------------
# Intents
# --------------------------------------------------------------------------------------------


def _train_intents(
    entries: Sequence[FaqEntry], questions: Tensor, seed: int, source: str
) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """Logistic regression from question vectors to intents, with its cross-validated accuracy."""
    labelled = [i for i, e in enumerate(entries) if e.intent is not None]
    if not labelled:
        return None
    counts = Counter(entries[i].intent for i in labelled)
    if len(counts) < 2:
        raise DataError(
            f"{source}: the intent column has only one label {next(iter(counts))!r}; an intent classifier needs at "
            "least two (add intents, or build without intents)"
        )
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    labels = sorted(counts)  # type: ignore[type-var]
    x = questions[labelled].numpy()
    y = np.array([labels.index(entries[i].intent) for i in labelled])  # type: ignore[arg-type]
    classifier = LogisticRegression(C=INTENT_C, max_iter=2000)
    folds = min(5, min(counts.values()))
    accuracy = None
    if folds >= 2:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        accuracy = float(cross_val_score(classifier, x, y, cv=splitter).mean())
    classifier.fit(x, y)
    weight = torch.tensor(classifier.coef_, dtype=torch.float32)
    bias = torch.tensor(classifier.intercept_, dtype=torch.float32)
    if len(labels) == 2:  # sklearn keeps one row for two classes: p(1) = sigmoid(w.x + b) = softmax([0, w.x + b])
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    info = {
        "labels": labels,
        "examples": len(labelled),
        "unlabelled": len(entries) - len(labelled),
        "cv_accuracy": accuracy,
        "cv_folds": folds if folds >= 2 else 0,
        "method": f"logistic regression (C={INTENT_C:g}) on frozen MiniLM question embeddings",
    }
    return {"intent_weight": weight, "intent_bias": bias}, info


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def embed_entries(
    encoder: SentenceEncoder, entries: Sequence[FaqEntry], *, batch_size: int = 32, progress: bool = False
) -> dict[str, Tensor]:
    """Question, answer-lead and passage vectors of every entry (the index's tensors, intents aside)."""
    passages: list[str] = []
    owners: list[int] = []
    for i, entry in enumerate(entries):
        pieces = encoder.passages(entry.answer) or [entry.answer]
        passages.extend(pieces)
        owners.extend([i] * len(pieces))
    bar = None
    if progress:  # paced and lined in a log as every bar (raw tqdm had written ten redraws a second to one line)
        from attend.progress import progress_bar

        bar = progress_bar(total=2 * len(entries) + len(passages), desc="embedding FAQ", unit="text")
    step = bar.update if bar is not None else None
    try:
        return {
            "questions": encoder.embed([e.question for e in entries], batch_size=batch_size, progress=step),
            "heads": encoder.embed([e.answer for e in entries], batch_size=batch_size, progress=step),
            "passages": encoder.embed(passages, batch_size=batch_size, progress=step),
            "passage_entry": torch.tensor(owners, dtype=torch.long),
        }
    finally:
        if bar is not None:
            bar.close()


def _check_out(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` the index cannot be written to, before the FAQ is embedded (a file above it,
    or a read-only folder, had been found after the whole build)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; --out must be a directory for the index")
    if not out_dir.exists():
        above = next(folder for folder in out_dir.absolute().parents if folder.exists())
        if not above.is_dir():
            raise ValueError(f"--out {out_dir}: {above} is a file, not a folder")
        if not os.access(above, os.W_OK | os.X_OK):
            raise ValueError(f"--out {out_dir}: cannot write in {above} (read-only, or no permission)")
        return
    names = [p.name for p in out_dir.iterdir() if not p.name.startswith(".")]
    foreign = sorted(name for name in names if name not in _FILES)
    if foreign:
        raise ValueError(
            f"{out_dir} already holds other files ({', '.join(foreign[:5])}); choose an empty or new directory "
            "for the index"
        )
    if names and not overwrite:
        raise ValueError(
            f"{out_dir} already holds an index; pass --overwrite to replace it, or choose another directory"
        )


def build_index(
    faq_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] = PACKAGE_MODEL,
    intents: bool = True,
    question_weight: float = 0.5,
    target_precision: float | None = None,
    retrieval: str = "hybrid",
    fusion: str = "weighted",
    rerank: bool = True,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Embed an FAQ, calibrate the hand-off threshold, train the intent classifier, write the index.

    Args:
        faq_path: CSV/TSV/JSONL/Parquet with ``question``, ``answer`` (and optional ``intent``)
            columns, or a Markdown/HTML/text FAQ (see :func:`attend.apps.support.faq.read_faq`).
        out_dir: The index directory (built beside it and swapped into place when complete; an index
            already there is replaced only with ``overwrite``, other files there are an error).
        model: ``"minilm"`` for the pretrained encoder, or a fine-tuned attend minilm model directory
            (the index records its path and weights hash, and refuses to run if they change).
        intents: Train an intent classifier when the FAQ has an ``intent`` column.
        question_weight: Weight of the stored question in an entry's score (the rest is the answer's).
        target_precision: Calibrate the threshold for this precision instead of the best F1.
        retrieval: ``"hybrid"`` (encoder and BM25 fused), ``"dense"`` or ``"bm25"``
            (see :mod:`attend.apps.support.fusion`).
        fusion: For hybrid retrieval, ``"weighted"`` (weight chosen on the FAQ's questions) or ``"rrf"``.
        rerank: Try the cross-attention re-ranker (:mod:`attend.apps.support.rerank`): fitted on the
            FAQ's questions, and kept only if it wins on both held-out halves of them.
        seed: Seeds the calibration rewordings and the intent cross-validation.
        batch_size: Texts per encoder call.
        progress: Show a progress bar while embedding.
        overwrite: Replace an index already at ``out_dir``.

    Returns:
        A JSON-ready report: counts, the threshold and its calibration, intents, timings.

    Raises:
        DataError: A bad FAQ file (naming file, line and field).
        ModelDirError: A bad ``model`` directory.
        ValueError: Bad options, or an ``out_dir`` that is a file, holds other files, or holds an index
            and ``overwrite`` is false.
    """
    started = time.perf_counter()
    if not 0.0 <= question_weight <= 1.0:
        raise ValueError(f"question_weight={question_weight} must be in [0, 1]")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision={target_precision} must be in (0, 1]")
    Retrieval(mode=retrieval, fusion=fusion)  # bad names fail before any work
    entries = read_faq(faq_path)
    out = Path(out_dir)
    _check_out(out, overwrite)
    encoder = load_encoder(model)

    tensors = embed_entries(encoder, entries, batch_size=batch_size, progress=progress)
    n_passages = int(tensors["passage_entry"].shape[0])

    # Each stage after the embedding's bar said as it starts: two thirds of a run had been silent after it.
    say = functools.partial(print, file=sys.stderr, flush=True) if progress else (lambda _: None)
    chosen = choose_retrieval(encoder, entries, tensors, retrieval, fusion)
    say(f"calibrating the hand-off: each of the {len(entries)} questions, reworded, asked of the index...")
    ranker = Ranker(encoder, [e.question for e in entries], [e.answer for e in entries], tensors, chosen,
                    question_weight)  # fmt: skip
    scores, correct, counts = self_retrieval(ranker, entries, seed)
    handoff = calibrate_threshold(scores, correct, target_precision=target_precision) | counts
    if chosen.effective == "hybrid":
        # A question the encoder cannot read (another language than most of the FAQ) is ranked by
        # BM25 alone: its score is on another scale, so it gets a threshold of its own.
        lexical_only = copy.copy(ranker)  # the same BM25 indexes, ranking by them alone
        lexical_only.retrieval = dataclasses.replace(chosen, mode="bm25")
        trials = self_retrieval(lexical_only, entries, seed)[:2]
        handoff["lexical_threshold"] = calibrate_threshold(*trials, target_precision=target_precision)["threshold"]
    # The same question with different answers: which one a customer means, the index cannot say (asked
    # as written, it hands off); said at build, where it had been accepted without a word.
    conflicts = conflicting_questions([e.question for e in entries], [e.answer for e in entries]).values()
    notes = [f"the question {entries[group[0]].question!r} is asked at {' and '.join(entries[i].source for i in group)}"
             " with different answers: asked as written, it is handed off to a person (give it one answer, or word "
             "the questions apart)" for group in conflicts]  # fmt: skip
    rerank_info = None
    if rerank and chosen.effective != "bm25" and question_weight < 1:  # at 1 the answers have no say: never used
        say("fitting the re-ranker...")
        stored, rerank_info = fit_rerank(ranker, entries, seed)
        tensors |= stored or {}
    intent_info = None
    if intents:
        if any(e.intent is not None for e in entries):
            say("learning the intents...")
        trained = _train_intents(entries, tensors["questions"], seed, str(faq_path))
        if trained is not None:
            intent_tensors, intent_info = trained
            tensors |= intent_tensors
            if not chosen.dense_readable:  # ranking fell back to BM25; the intents have no lexical side
                intent_info["note"] = (f"the encoder cannot read {chosen.unknown_share:.1%} of this FAQ's word pieces, "
                                       "and the intents are learnt from its embeddings: read their accuracy before "
                                       "trusting them (or build with --no-intents); a question it cannot read is "
                                       "given no intent")  # fmt: skip

    config = {
        "task": INDEX_FORMAT,
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "attend_version": __version__,
        "faq": str(faq_path),
        "entries": len(entries),
        "passages": n_passages,
        "encoder": encoder.describe(),
        "question_weight": question_weight,
        "retrieval": chosen.to_dict(),
        "rerank": rerank_info,
        "handoff": handoff,
        "intents": intent_info,
        "seed": seed,
    }
    with ArtifactWriter(out) as writer:
        writer.files["embeddings.safetensors"] = save_tensors(tensors, writer.path / "embeddings.safetensors")
        atomic_write_json(writer.path / "entries.json", [e.to_dict() for e in entries])
        writer.record("entries.json")
        writer.publish(config)
    # What ranks, beside what was asked: "hybrid" is lexical only where the encoder cannot read the FAQ.
    ranking = {"mode": chosen.effective, "note": chosen.note()}
    return {"index_dir": str(out), **{k: v for k, v in config.items() if k != "task"}, "ranking": ranking,
            "notes": notes, "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Load and ask
# --------------------------------------------------------------------------------------------


def _as_asked(question: str) -> str:
    """A question as compared with the FAQ's own: case, spacing and the closing punctuation aside
    (only that: "C++?" and "C#?" are other questions, as are "e-mail" and "email")."""
    folded = " ".join(unicodedata.normalize("NFKC", question).casefold().split())
    return re.sub(r"[\s?!.。？！…]+$", "", folded)


def conflicting_questions(questions: Sequence[str], answers: Sequence[str]) -> dict[str, list[int]]:
    """The questions asked more than once (as :func:`_as_asked` compares them) with different answers
    (as :func:`~attend.apps.support.faq.answer_key` compares them): each with its entries."""
    groups: dict[str, list[int]] = {}
    for i, question in enumerate(questions):
        groups.setdefault(_as_asked(question), []).append(i)
    return {asked: group for asked, group in groups.items()
            if asked and len({answer_key(answers[i]) for i in group}) > 1}  # fmt: skip


def _no_terms(question: str) -> str:
    """Why a question gives BM25 no term: its own words, all too common, or none at all (emoji, symbols;
    they had been said to be "only words too common for BM25 to count (such as 'how', 'do')")."""
    words = list(dict.fromkeys(re.findall(r"[^\W_]+", question.lower())))
    if not words:
        return "the question has no word BM25 can count (only symbols or emoji)"
    return f"the question has only words too common for BM25 to count ({', '.join(map(repr, words[:4]))})"


def _against_threshold(score: float, threshold: float) -> str:
    """``best match score S below threshold T`` with as many decimals as it takes for the two to
    differ where they do (0.5254 against 0.5335 read "0.53 below 0.53")."""
    relation = "below" if score < threshold else "at or above"
    digits = next((d for d in range(2, 7) if f"{score:.{d}f}" != f"{threshold:.{d}f}"), 6)
    return f"best match score {score:.{digits}f} {relation} threshold {threshold:.{digits}f}"


def _shown_encoder(model: Any) -> Any:
    """An index's encoder as a client is told it: the package model's name, or a directory's last name."""
    return Path(model).name if isinstance(model, str) and model != PACKAGE_MODEL and os.sep in model else model


@dataclass
class SupportIndex:
    """A loaded index: entries, vectors, threshold, intents and the encoder that made them.

    Load once with :meth:`load` and call :meth:`ask` per question (the service does this).
    """

    path: Path
    config: dict[str, Any]
    entries: list[dict[str, Any]]
    tensors: dict[str, Tensor]
    encoder: SentenceEncoder

    def __post_init__(self) -> None:
        # An index built before hybrid retrieval ranked with the encoder alone: it still does.
        recorded = self.config.get("retrieval") or {"mode": "dense"}
        try:
            retrieval = Retrieval(**recorded)
        except (TypeError, ValueError) as exc:
            raise ModelDirError(f"{self.path / 'config.json'}: invalid retrieval entry ({exc})") from None
        questions = [e["question"] for e in self.entries]
        answers = [e["answer"] for e in self.entries]
        self.ranker = Ranker(self.encoder, questions, answers, self.tensors, retrieval,
                             float(self.config["question_weight"]))  # fmt: skip
        rerank = self.config.get("rerank") or {}
        self.reranker = (float(rerank["tau"]), float(rerank["beta"])) if rerank.get("used") else None
        self._asked: dict[str, list[int]] = {}  # each stored question as asked: its entries
        for i, stored in enumerate(questions):
            if asked := _as_asked(stored):
                self._asked.setdefault(asked, []).append(i)
        # each question asked with different answers: where (entries.json keeps each entry's source)
        self._conflicting = {asked: [self.entries[i].get("source") or f"entry {i + 1}" for i in group]
                             for asked, group in conflicting_questions(questions, answers).items()}  # fmt: skip

    @property
    def retrieval(self) -> Retrieval:
        return self.ranker.retrieval

    def describe(self) -> dict[str, Any]:
        """What the index is and how it ranks (``GET /v1/model`` shows it beside the served model)."""
        return {
            "entries": len(self.entries),
            "retrieval": self.retrieval.effective,
            "retrieval_note": self.retrieval.note(),
            "threshold": round(self.threshold, 4),
            "intents": self.intent_labels,
            # the package's name, or a fine-tuned encoder's folder name: never the server's folders
            "encoder": _shown_encoder(self.config.get("encoder", {}).get("model")),
            "reranker": None if self.reranker is None else {"tau": self.reranker[0], "beta": self.reranker[1]},
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SupportIndex:
        """Open an index directory, refusing pickles and files that do not belong together.

        Raises:
            ModelDirError: Missing directory or file, a pickle-format file, invalid JSON, a hash
                mismatch, or an encoder whose weights changed since the index was built.
        """
        path = Path(path)
        if path.is_file():
            raise ModelDirError(f"{path} is a file; give the directory `attend support build --out` wrote (an FAQ file "
                                "is indexed with `attend support build FAQ_FILE --out DIR`)")  # fmt: skip
        if not path.is_dir():
            raise ModelDirError(f"{path}: no such support index directory (build one with `attend support build`)")
        if not (path / "config.json").is_file():
            raise ModelDirError(f"{path} is not a support index (no config.json): build one with `attend support build "
                                "FAQ_FILE --out DIR`")  # fmt: skip
        artifact = ArtifactDir.open(path)
        for name in _FILES:
            if not (path / name).is_file():
                raise ModelDirError(f"{path} is not a complete support index: {name} is missing")
        config = artifact.config
        if config.get("format") != INDEX_FORMAT:
            raise ModelDirError(f"{path / 'config.json'} is not a support index config (format != {INDEX_FORMAT!r})")
        version = config.get("format_version", 1)  # an index written before the field was, version 1, still loads
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= INDEX_FORMAT_VERSION:
            raise ModelDirError(f"{path}: index format_version {version!r} is not one this attend reads (a whole "
                                f"number, 1 to {INDEX_FORMAT_VERSION}); build it again with --overwrite")  # fmt: skip
        try:
            entries = _read_json(artifact.file("entries.json"))
            tensors = artifact.tensors("embeddings.safetensors")
        except ModelDirError as exc:
            raise ModelDirError(f"{exc}; rebuild the index") from None
        missing = [k for k in ("questions", "heads", "passages", "passage_entry") if k not in tensors]
        count = tensors["questions"].shape[0] if "questions" in tensors else -1
        if missing or not isinstance(entries, list) or len(entries) != count:
            raise ModelDirError(f"{path}: embeddings.safetensors and entries.json do not match (missing {missing})")
        recorded = config.get("encoder", {})
        encoder = load_encoder(recorded.get("model", PACKAGE_MODEL))
        if recorded.get("weights_sha256") and recorded["weights_sha256"] != encoder.weights_sha256:
            raise ModelDirError(
                f"{path} was built with encoder weights {recorded['weights_sha256'][:12]}… but {encoder.source} now "
                f"has {encoder.weights_sha256[:12]}…; rebuild the index with the current encoder"
            )
        if version < 3 and (config.get("retrieval") or {}).get("fusion") == "rrf":
            raise ModelDirError(f"{path}: its hand-off threshold was calibrated on reciprocal-rank scores, which say "
                                "nothing of confidence (an index built before 2026-12-07); build it again with "
                                "--overwrite")  # fmt: skip
        threshold = (config.get("handoff") or {}).get("threshold")
        if not isinstance(threshold, int | float) or not math.isfinite(threshold):
            raise ModelDirError(
                f"{path}: its hand-off threshold is {threshold!r}, not a number (an index built before 2026-12-05 "
                "whose ranking weighs one side 0 hands nothing off): build it again with --overwrite"
            )
        return cls(path=path, config=config, entries=entries, tensors=tensors, encoder=encoder)

    @property
    def threshold(self) -> float:
        return float(self.config["handoff"]["threshold"])

    @property
    def intent_labels(self) -> list[str]:
        info = self.config.get("intents") or {}
        return list(info.get("labels", [])) if "intent_weight" in self.tensors else []

    def scores(self, questions: Sequence[str]) -> np.ndarray:
        """``(M, N)`` fused entry scores of questions (see :class:`Ranker`)."""
        return self.ranker.ranked(questions)[0]

    def ask(self, question: str, *, k: int = 3, explain: bool = True) -> dict[str, Any]:
        """Answer one question: ranked answers, intent, the words that drove the match, hand-off.

        Args:
            question: The customer's question.
            k: How many answers to rank (at most the number of entries).
            explain: Compute ``words`` (for the encoder's side, one backward pass through it).

        Returns:
            JSON-ready: ``question``, ``answers`` (``question``, ``answer``, ``score``, best first,
            plus ``intent`` when the FAQ has one), ``intent`` (``label`` and ``probability``, or
            None), ``words`` (the question's words that drove the best match: ``word``, ``start``,
            ``end``, ``weight``, most important first), ``answer_words`` (the best answer's terms
            that the question matched, by BM25 weight), ``retrieval`` (``mode`` used for this
            question and a ``note``), ``handoff``, ``reason``, ``threshold``, ``truncated``.

        Raises:
            ValueError: An empty question or a bad ``k``.
        """
        if not isinstance(question, str):
            raise ValueError(f"question is {type(question).__name__} {question!r}, expected a string")
        problem = text_problem(question)
        if problem is not None:
            raise ValueError("question is empty" if problem.startswith("is an empty") else f"question {problem}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be a positive integer")
        explainer = None
        if explain and self.retrieval.effective != "bm25":  # one forward pass embeds and explains
            vector, explainer = self.encoder.explainable(question)
        else:
            vector = self.encoder.embed([question])  # (1, E): intents and the dense side
        fused, judged, readable = self.ranker.ranked([question], vectors=vector)
        scores = torch.from_numpy(fused[0])
        top = torch.topk(scores, min(max(k, DEPTH if self.reranker is not None else k), len(self.entries)))
        order = top.indices.tolist()
        # (--question-weight 1 leaves the answers no say, the re-ranker's share with them: not re-ranked)
        reranked = self.reranker is not None and bool(readable[0]) and self.ranker.question_weight < 1
        rerank_scores: dict[int, float] = {}
        if reranked:
            rerank_scores = self._rerank(question, vector, fused[0], order[:DEPTH])
            order = sorted(order[:DEPTH], key=lambda i: -rerank_scores[i]) + order[DEPTH:]  # stable: ties keep rank
        # A question asked as the FAQ asks it is answered by that entry (by the best of them, where the
        # FAQ asks it twice): a near-duplicate whose longer answer repeats the question's words had
        # outscored it ("How do I reset my password?" answered by "... on the mobile app?").
        asked = _as_asked(question)
        own = sorted(self._asked.get(asked, []), key=lambda i: -rerank_scores.get(i, float(scores[i])))
        order = own + [i for i in order if i not in own]
        answers = []
        for i in order[:k]:
            entry = self.entries[i]
            # intent null where the FAQ has none, as the HTTP answer says it: one shape for every caller
            answers.append({"question": entry["question"], "answer": entry["answer"],
                            "score": round(float(judged[0, i]), 4), "intent": entry.get("intent")})  # fmt: skip
            if self.ranker.rank_fused:  # what the answers are ordered by; ``score`` is what is judged
                answers[-1]["rrf_score"] = round(float(scores[i]), 6)
            if i in rerank_scores:  # what the answers are ordered by
                answers[-1]["rerank_score"] = round(rerank_scores[i], 4)
        best = order[0]
        # The answer given is judged: on its first-stage score, the scale the threshold was calibrated on
        # (the first stage's best had been judged while the re-ranker gave another answer).
        best_score = float(judged[0, best])
        threshold = self.threshold
        mode, note = self.retrieval.effective, self.retrieval.note()
        if mode == "hybrid" and not readable[0]:
            # "more than 25 %", not "most" (it had said "most" of 27 %)
            mode, note = "bm25", (f"lexical only (BM25) for this question: more than {MAX_UNKNOWN:.0%} of its pieces "
                                  "are unknown to the encoder, or letters of a script it has no words for")
            lexical_threshold = self.config["handoff"].get("lexical_threshold")
            if lexical_threshold is not None:  # BM25's own scale, and the threshold calibrated on it
                bm25 = self.ranker.lexical([question])[0]
                best_score, threshold = float(bm25[best]), float(lexical_threshold)
                for item, i in zip(answers, order[:k], strict=False):
                    item["score"] = round(float(bm25[i]), 4)
        # BM25 alone with no word of the question in the FAQ has nothing to go on, whatever the threshold
        # (a one-entry FAQ's BM25 scores are 0 or below, and the 0 of no match had been answered).
        unmatched = mode == "bm25" and not self.ranker.matches(question)
        # The FAQ asks this question more than once with different answers: which one is meant, it
        # cannot say. Before, the better-scored was given as certain, the other one left unsaid.
        conflicting = self._conflicting.get(asked) if own else None
        handoff = bool(conflicting) or (not own and (best_score < threshold or unmatched))
        reason = _against_threshold(best_score, threshold)
        if conflicting:
            reason = (f"the FAQ asks this question {len(conflicting)} times with different answers "
                      f"({', '.join(conflicting)}): a person should say which applies; {reason}")  # fmt: skip
        elif own:
            reason = f"the FAQ's own question (case, spacing and closing punctuation aside); {reason}"
        elif unmatched:  # said for what it is, not as a score "at or above" a threshold it was handed off at
            counted = "no word of the question occurs in " + self.ranker.searched() if terms(question) else (
                _no_terms(question))
            reason = f"{counted}, and BM25 alone ranks it: nothing to answer from"
        words: list[dict[str, Any]] = []
        answer_words: list[dict[str, Any]] = []
        truncated = False
        if explain:
            found: list[Word] = []
            if mode != "bm25" and explainer is not None:
                found, truncated = explainer(self._score_of(best))
            dense_weight = {"dense": 1.0, "bm25": 0.0}.get(mode, self.retrieval.alpha)
            if self.retrieval.fusion == "rrf" and mode == "hybrid":
                dense_weight = 0.5
            lexical = self._lexical_terms(question, best)
            words = _combine(question, found, lexical, dense_weight)
            answer_words = self._answer_terms(question, best)
        return {
            "question": question,
            "answers": answers,
            "intent": self._intent(vector, question),
            "words": words,
            "answer_words": answer_words,
            "retrieval": {"mode": mode, "note": note, "reranked": reranked},
            "handoff": handoff,
            "reason": reason,
            "threshold": round(threshold, 4),
            "truncated": truncated,
        }

    @torch.inference_mode()
    def _rerank(self, question: str, vector: Tensor, fused: np.ndarray, head: list[int]) -> dict[int, float]:
        """The re-ranker's score of each candidate in ``head``: its first-stage score plus the
        answer's interaction with the question, weighted as fitted against the answer side.

        The re-ranker was fitted on answers alone (``first + beta * interaction``, queries derived
        from the stored questions). An entry's first-stage score is ``w * question + (1 - w) *
        answer``, so the interaction enters as ``(1 - w) * beta``: beside the answer as fitted,
        with the stored question's evidence kept (ordering by the answers-only score had put a
        question asked word for word below other entries).
        """
        assert self.reranker is not None
        tau, beta = self.reranker
        states, mask = self.encoder.token_states([question], LEAD_TOKENS)
        tokens = torch.nn.functional.normalize(states[0][mask[0]], dim=-1)
        found = interaction(tokens, self.tensors["rerank_states"][head], self.tensors["rerank_mask"][head], tau)
        weight = (1.0 - self.ranker.question_weight) * beta
        return {i: float(fused[i]) + weight * float(found[n]) for n, i in enumerate(head)}

    def _lexical_terms(self, question: str, entry: int) -> list[tuple[Term, float]]:
        """The question's terms with what each adds to the entry's (scaled) lexical score."""
        weight, r = self.ranker.question_weight, self.retrieval
        found: dict[Term, float] = {}
        for source, scale, share in ((self.ranker.lexical_questions, r.question_scale, weight),
                                     (self.ranker.lexical_answers, r.answer_scale, 1.0 - weight)):  # fmt: skip
            if share:
                for term, value in source.contributions(question, entry):
                    found[term] = found.get(term, 0.0) + share * value / scale
        return list(found.items())

    def _answer_terms(self, question: str, entry: int, most: int = 10) -> list[dict[str, Any]]:
        """The answer's terms that the question shares with it, by BM25 weight, as the answer spells them.

        A shared term with no weight (BM25 gives none to a term in half the answers or more) added
        nothing to the match and is left out."""
        answer = self.entries[entry]["answer"]
        contributions = self.ranker.lexical_answers.contributions(question, entry)
        weights = {term.term: value for term, value in contributions if value > 0}
        total = sum(weights.values())
        spans: dict[str, list[list[int]]] = {}
        for term in term_spans(answer):
            if term.term in weights:
                spans.setdefault(term.term, []).append([term.start, term.end])
        ranked = sorted(spans, key=lambda t: -weights[t])[:most]
        return [{"word": answer[spans[t][0][0] : spans[t][0][1]], "weight": round(weights[t] / total, 4),
                 "spans": spans[t]} for t in ranked]  # fmt: skip

    def _score_of(self, entry: int) -> Any:
        """The differentiable dense score of one entry as a function of the query vector ``(E,)``."""
        t = self.tensors
        weight = float(self.config["question_weight"])
        mine = t["passages"][t["passage_entry"] == entry]

        def score(vector: Tensor) -> Tensor:
            answer = 0.5 * (vector @ t["heads"][entry] + (mine @ vector).max())
            return weight * (vector @ t["questions"][entry]) + (1.0 - weight) * answer

        return score

    def _intent(self, vector: Tensor, question: str) -> dict[str, Any] | None:
        """The question's intent; None without intents; no label where the encoder cannot read the
        question: the intents are learnt from its embeddings, which for such a question are noise
        (a Chinese question had been given an intent that contradicted the answer beside it)."""
        labels = self.intent_labels
        if not labels:
            return None
        unknown = self.encoder.unreadable_share([question])[0]
        if unknown > MAX_UNKNOWN:
            return {"label": None, "probability": None,
                    "note": f"no intent: the encoder cannot read {unknown:.0%} of this question's word pieces, and "
                            "the intents are learnt from its embeddings"}  # fmt: skip
        probs = torch.softmax(vector @ self.tensors["intent_weight"].T + self.tensors["intent_bias"], -1)[0]
        best = int(probs.argmax())
        return {"label": labels[best], "probability": round(float(probs[best]), 4)}


def _combine(
    question: str, dense: Sequence[Word], lexical: Sequence[tuple[Term, float]], dense_weight: float
) -> list[dict[str, Any]]:
    """The question's words by how much they drove the match: each side's weights normalised to sum 1
    and mixed by the dense side's share in the fusion; a lexical term is credited to the word that
    contains it (CJK terms, which have no word around them, stand alone)."""
    total = sum(value for _, value in lexical)
    combined: dict[tuple[int, int], list[Any]] = {
        (w.start, w.end): [w.text, dense_weight * w.weight] for w in dense
    }
    for term, value in lexical:
        share = (1.0 - dense_weight) * value / total if total > 0 else 0.0
        host = next((span for span in combined if span[0] <= term.start and term.end <= span[1]), None)
        if host is None:
            combined[(term.start, term.end)] = [None, share]
        else:
            combined[host][1] += share
    ranked = sorted(combined.items(), key=lambda item: -item[1][1])
    return [{"word": word if word is not None else question[start:end], "start": start, "end": end,
             "weight": round(weight, 4)} for (start, end), (word, weight) in ranked if weight > 0]  # fmt: skip


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path} is not valid JSON ({exc})") from None


def ask(index_dir: str | os.PathLike[str] | SupportIndex, question: str, *, k: int = 3) -> dict[str, Any]:
    """Answer ``question`` from the index in ``index_dir`` (see :meth:`SupportIndex.ask`).

    Opening the index is the slow part (the encoder); a service keeps a :class:`SupportIndex`.
    """
    index = index_dir if isinstance(index_dir, SupportIndex) else SupportIndex.load(index_dir)
    return index.ask(question, k=k)
