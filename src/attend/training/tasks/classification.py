"""Text classification: labelled texts in, a classifier that explains itself out.

:class:`ClassificationTask` reads a labelled file (CSV/TSV/JSONL/Parquet) or a bundled dataset,
splits it (stratified, seeded, or by a split column), trains a tokenizer on the training split
(or uses the pretrained model's own), and scores epochs by dev macro-F1. :func:`train` is the
body of ``attend train``.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attend.config import load_plugins
from attend.data.batching import length_batches
from attend.data.noise import Augmenter, idle_perturbations
from attend.data.readers import (
    DataError,
    LabelledTexts,
    joined_at,
    joined_labels,
    looks_missing,
    match_label,
    split_scheme,
    stratified_split,
    stratum,
)
from attend.data.splits import data_provenance, load_labelled, seen_in_training
from attend.data.tokenization import TextTokenizer
from attend.models import MODELS, MULTI_LABEL_THRESHOLD, ClassifierConfig, config_from_dict, probabilities
from attend.training.metrics import classification_metrics, format_report, save_confusion_png, tfidf_baseline
from attend.training.tasks.base import Task, check_model_fields, fingerprint, register_task

if TYPE_CHECKING:
    from attend.io import ArtifactWriter
    from attend.training.trainer import TrainingArgs

__all__ = [
    "ClassificationTask",
    "classification_loss",
    "classification_report",
    "label_targets",
    "probability_metrics",
    "proportional_sample",
    "score_probabilities",
]


def classification_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    multi_label: bool,
    weight: Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy over labels, or binary cross-entropy per label when multi-label (``weight``:
    per-class weights, as ``pos_weight`` for multi-label; ``label_smoothing`` X: the target becomes
    ``1 - X`` plus ``X`` spread evenly over all K labels, the target's own included (PyTorch's
    rule: ``1 - X + X/K`` for the target), or moves towards 0.5 by X for multi-label)."""
    if multi_label:
        if label_smoothing:
            targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=weight, reduction=reduction)
    return F.cross_entropy(logits.float(), targets, weight=weight, reduction=reduction, label_smoothing=label_smoothing)


def class_weights(targets: Tensor, n_labels: int, *, multi_label: bool) -> Tensor:
    """Loss weights against imbalance: each class's inverse frequency, scaled so that balanced
    classes weigh 1; for multi-label, each label's negatives over its positives (``pos_weight``:
    a label on 1 row in 10 weighs its positives 9, so its rows count as much as the 9 without it;
    an inverse frequency among the labels had left labels that are each rare but equally so
    unweighted). A label no training row has, or every row has, counts as one such row."""
    if multi_label:
        positives = targets.float().sum(0)
        return ((len(targets) - positives).clamp_min(1.0) / positives.clamp_min(1.0)).float()
    counts = torch.bincount(targets, minlength=n_labels).float()
    return (counts.sum() / (n_labels * counts.clamp_min(1.0))).float()


def symmetric_kl(first: Tensor, second: Tensor, *, multi_label: bool) -> Tensor:
    """``(KL(p1 || p2) + KL(p2 || p1)) / 2`` between two predictions' logits, averaged over the batch
    (per label Bernoulli distributions, summed over labels, when multi-label)."""
    if multi_label:
        p1, p2 = torch.sigmoid(first), torch.sigmoid(second)
        l1, l2 = F.logsigmoid(first), F.logsigmoid(second)
        m1, m2 = F.logsigmoid(-first), F.logsigmoid(-second)
        kl = (p1 - p2) * (l1 - l2) + ((1 - p1) - (1 - p2)) * (m1 - m2)  # KL(p1||p2) + KL(p2||p1), per label
        return 0.5 * kl.sum(-1).mean()
    log1, log2 = F.log_softmax(first, dim=-1), F.log_softmax(second, dim=-1)
    kl = ((log1.exp() - log2.exp()) * (log1 - log2)).sum(-1)  # KL(p1||p2) + KL(p2||p1)
    return 0.5 * kl.mean()


#: Below this many examples a held-out split's figures move by whole points from one example.
SMALL_SPLIT = 50


class CaseBlind(ValueError):
    """``--augment casing`` asked of a model whose tokenizer lowercases (``--model auto`` leaves
    such a candidate out; a named model refuses it)."""


def _ignores_case(tokenizer: TextTokenizer) -> bool:
    """Whether the tokenizer reads a text in upper, title and lower case alike (it lowercases)."""
    probe = "Attention Models Read This Text"
    return len({tuple(row) for row in tokenizer.ids([probe, probe.upper(), probe.lower()])}) == 1


#: What a held-out split's figures decide.
_USE = {"dev": "choosing the epoch (and, with --model auto, the model)", "test": "the figures above"}


def _caveats(dataset: LabelledTexts, parts: dict[str, LabelledTexts],
             fractions: dict[str, float] | None = None) -> list[str]:  # fmt: skip
    """What makes this run's figures less reliable than they look: small held-out splits, a split
    that repeated texts pulled far from the share asked (``fractions``), labels with no dev example
    (the epoch is chosen without them), the same text under different labels."""
    notes = []
    skewed = set()  # the splits whose copies are said with their share
    for name, asked in (fractions or {}).items():
        size = len(parts[name]) if dataset.splits is None else 0  # a given split column is the user's own
        share = size / max(len(dataset), 1)
        if asked > 0 and size and (share > 2 * asked + 0.02 or share < asked / 2 - 0.02):
            counts = Counter(" ".join(text.split()) for text in parts[name].texts)
            text, most = counts.most_common(1)[0]
            if most == 1:  # no copies in it: a split of a few rows is off by a row, and said as small below
                continue
            skewed.add(name)
            notes.append(f"the {name} split is {share:.0%} of the rows, not the {asked:.0%} asked: every copy of a "
                         f"text stays in one split, and it holds {len(counts)} distinct text(s) in {size} rows (the "
                         f"most repeated, {most} times: {text!r:.40}); {_USE[name]} rests on them")  # fmt: skip
    for name in ("dev", "test"):
        counts = Counter(" ".join(text.split()) for text in parts[name].texts)
        # said where the copies are a twentieth of the rows or more (a pair among 100 moves little)
        copies = len(parts[name]) - len(counts)
        if name not in skewed and copies and copies >= len(parts[name]) / 20:
            # Copies are counted one by one: 15 copies of one text in 71 test rows had been 21 points of
            # accuracy on one answer, in a report that said nothing of them.
            text, most = counts.most_common(1)[0]
            notes.append(f"the {name} split's {len(parts[name])} rows hold {len(counts)} distinct text(s) (the most "
                         f"repeated, {most} times: {text!r:.40}): each copy counts in {_USE[name]}")  # fmt: skip
    # A label's F1 on one example is 0 or 1: a macro-F1 of 0.71 beside accuracy 0.97 had been one such label.
    once = sorted(label for label, n in Counter(label for labels in parts["test"].labels for label in labels).items()
                  if n == 1)  # fmt: skip
    if once:
        shown = ", ".join(map(repr, once[:5])) + (" ..." if len(once) > 5 else "")
        notes.append(f"{len(once)} label(s) have one test example ({shown}): each one's F1 rests on that example, "
                     "and macro-F1 weighs it as much as any label's")  # fmt: skip
    for name in ("dev", "test"):
        size = len(parts[name])
        if 0 < size < SMALL_SPLIT:
            notes.append(f"the {name} split has {size} example(s): one of them is {100 / size:.1f} points of "
                         f"{_USE[name]}; more labelled data makes them steadier")  # fmt: skip
    for name in ("dev", "test"):
        copies = seen_in_training(parts["train"].texts, parts[name].texts) if dataset.splits is not None else 0
        if copies:  # only a given split column can do this: attend's own split keeps copies together
            said = ("the epoch is chosen on texts the model learned from" if name == "dev" else
                    "the figures above include texts the model learned from")  # fmt: skip
            notes.append(f"{copies} of the {len(parts[name])} {name} text(s) also occur in the training split (as the "
                         f"split column has it): {said}")  # fmt: skip
    if len(parts["dev"]):
        absent = sorted(set(parts["train"].label_names) - set(parts["dev"].label_names))
        if absent:
            shown = ", ".join(map(repr, absent[:5])) + (" ..." if len(absent) > 5 else "")
            notes.append(f"{len(absent)} label(s) have no dev example ({shown}): the epoch is chosen without them")
    seen: dict[str, set[str]] = {}
    for text, labels in zip(dataset.texts, dataset.labels, strict=True):
        seen.setdefault(" ".join(text.split()), set()).add("|".join(sorted(set(labels))))
    if none := sum(not labels for labels in dataset.labels):  # multi-label only: single-label rows need one
        notes.append(f"{none} row(s) have none of the labels (an empty label cell, or []): learned as texts that "
                     "have none of them; if a label is missing there, fill it in")  # fmt: skip
    conflicting = sum(len(labels) > 1 for labels in seen.values())
    if conflicting:
        notes.append(f"{conflicting} text(s) occur with different labels in the data: no model can get every copy "
                     "right")  # fmt: skip
    joined = joined_labels(dataset.label_names)
    if joined:
        (label, sep, parts), more = joined[0], len(joined) - 1
        others = f" and {more} more" if more else ""
        notes.append(f"the label {label!r}{others} is other labels of the data joined by {sep!r} ({parts}), and is "
                     f"learned as a class of its own: if it means those labels, give --label-sep '{sep}' (with "
                     "--multi-label)")  # fmt: skip
    if missing := [name for name in dataset.label_names if looks_missing(name)]:
        rows = sum(any(looks_missing(label) for label in labels) for labels in dataset.labels)
        notes.append(f"the label(s) {', '.join(map(repr, missing))} read like an empty cell written out (a spreadsheet "
                     f"or pandas export) and are learned as a class ({rows} row(s)): if those rows have no label, "
                     "remove them")  # fmt: skip
    folded: dict[str, list[str]] = {}
    for name in dataset.label_names:  # NFKC too: "café" composed and decomposed (or full-width) look the same
        folded.setdefault(unicodedata.normalize("NFKC", name).casefold(), []).append(name)
    cased = [spellings for spellings in folded.values() if len(spellings) > 1]
    if cased:

        def spelt(spellings: list[str]) -> str:  # escaped where they would print alike
            alike = len({unicodedata.normalize("NFC", s) for s in spellings}) < len(spellings)
            return " and ".join(map(ascii if alike else repr, spellings))

        shown = "; ".join(spelt(spellings) for spellings in cased[:3])
        if len(cased) > 3:
            shown += f"; and {len(cased) - 3} more"
        notes.append(f"labels that differ only in letter case or Unicode form (composed or decomposed accents, "
                     f"full-width letters) are learned as different classes ({shown}); if each pair is one class, "
                     "write it one way")  # fmt: skip
    return notes


def label_targets(data: LabelledTexts, labels: list[str], multi_label: bool) -> Tensor:
    """Training targets for ``data``: class indices ``(N,)``, or a 0/1 matrix ``(N, num_labels)`` when multi-label.

    Raises:
        DataError: a label the model does not know, naming the line it is on.
    """
    index = {name: i for i, name in enumerate(labels)}
    unknown: dict[str, str] = {}  # label -> where it first is: every one named in one error
    for row, row_labels in enumerate(data.labels):
        for label in row_labels:
            spelled = match_label(label, labels) if label not in index else None
            if spelled is not None:  # 1 for a model that knows 1.0 (a JSON or Parquet number written either way)
                index[label] = index[spelled]
            if label not in index and label not in unknown:
                unknown[label] = f"line {data.lines[row]}" if data.lines else f"row {row + 1}"
    if unknown:
        known = f"(known: {', '.join(labels[:20])}{' ...' if len(labels) > 20 else ''})"
        # Each unknown label against the model's own labels only (another unknown one is no part)
        own = set(labels)
        joined = next(((name, *found) for name in unknown if (found := joined_at(name, own)) is not None), None) if (
            multi_label) else None  # fmt: skip
        hint = ""
        folded = {label.casefold(): label for label in labels}
        if cased := next(((name, folded[name.casefold()]) for name in unknown if name.casefold() in folded), None):
            hint = f"; {cased[0]!r} differs from the model's {cased[1]!r} only in letter case"  # it had not said so
        if joined is not None:  # known labels in one cell: a separator not given
            name, sep, parts = joined
            hint = (f"; {name!r} joins the model's labels {' and '.join(map(repr, parts))} with {sep!r}: give "
                    f"--label-sep {sep!r} (label_sep={sep!r}) to read such cells as several labels")
        if len(unknown) > 1:
            shown = ", ".join(f"{label!r} ({where})" for label, where in list(unknown.items())[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise DataError(f"{data.source or 'the texts given'}: {len(unknown)} labels the model was not trained on: "
                            f"{shown}{more} {known}{hint}")  # fmt: skip
        label, where = next(iter(unknown.items()))
        raise DataError(f"{data.source or 'the texts given'}: {where} has label {label!r}, which the model was not "
                        f"trained on {known}{hint}")  # fmt: skip
    if multi_label:
        targets = torch.zeros(len(data.labels), len(labels))
        for row, row_labels in enumerate(data.labels):
            targets[row, [index[label] for label in row_labels]] = 1.0
        return targets
    return torch.tensor([index[row_labels[0]] for row_labels in data.labels], dtype=torch.long)


def _metrics(probs: np.ndarray, targets: Tensor, labels: list[str], multi_label: bool,
             threshold: float = MULTI_LABEL_THRESHOLD) -> dict[str, Any]:  # fmt: skip
    if multi_label:
        return classification_metrics(targets.numpy().astype(int), (probs >= threshold).astype(int), labels)
    return classification_metrics(targets.numpy(), probs.argmax(1), labels)


def _log_loss(probs: np.ndarray, targets: Tensor, multi_label: bool) -> float:
    """Mean cross-entropy (binary cross-entropy per label when multi-label) of predicted probabilities."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)
    if multi_label:
        y = targets.numpy().astype(np.float64)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(p)), targets.numpy()]).mean())


def probability_metrics(probs: np.ndarray, targets: Tensor, labels: list[str], multi_label: bool) -> dict[str, Any]:
    """The classification metrics and the log-loss of probabilities ``(N, num_labels)`` against
    targets (label indices, or 0/1 rows when multi-label): what every evaluation of a split reports."""
    metrics = _metrics(probs, targets, labels, multi_label)
    metrics["loss"] = _log_loss(probs, targets, multi_label)
    return metrics


def classification_report(metrics: dict[str, Any], split: str, source: str) -> str:
    """The training report of a classifier's figures on ``split``, with the TF-IDF baseline beside them."""
    text = format_report(metrics, title=f"{split} split of {source}")
    if split == "dev":  # the data held out no test rows: these figures chose the epoch (and the model)
        text += ("\nnote: the data has no test split, so these are the dev figures that chose the model: not a "
                 "held-out figure (add test rows for one)")
    elif split == "train":
        text += ("\nnote: the data has no dev or test split, so these figures are on the texts the model trained "
                 "on: they say nothing of new texts")
    baseline = metrics.get("baseline")
    if not baseline:  # it was left out without a word
        text += (f"\nbaseline on the same {split} split (TF-IDF + logistic regression): not fitted, no word or "
                 "character n-gram occurs in two training texts (emoji, numbers or URLs alone)")
    if baseline:
        gap = metrics["accuracy"] - baseline["accuracy"]
        verdict = "above" if gap >= 0 else "BELOW"
        text += (
            f"\nbaseline on the same {split} split (TF-IDF + logistic regression): "
            f"accuracy {baseline['accuracy']:.4f}, macro-F1 {baseline['macro_f1']:.4f}; "
            f"the model is {abs(gap) * 100:.1f} points of accuracy {verdict} it"
        )
    return text


def score_probabilities(
    probs: np.ndarray, data: LabelledTexts, labels: list[str], multi_label: bool,
    threshold: float = MULTI_LABEL_THRESHOLD,
) -> dict[str, Any]:  # fmt: skip
    """Classification metrics of predicted probabilities ``(N, num_labels)`` against ``data``'s labels.

    The same metrics as training uses (argmax, or when multi-label, each label from ``threshold``),
    for predictions made by any runtime (PyTorch, ONNX Runtime, a quantised model).
    """
    return _metrics(probs, label_targets(data, labels, multi_label), labels, multi_label, threshold)


def proportional_sample(data: LabelledTexts, indices: Sequence[int], size: int, *, seed: int) -> list[int]:
    """A seeded sample of about ``size`` of ``indices`` (rows of ``data``), each label (a row's first)
    kept in proportion and at least once; returned in their original order."""
    rng = np.random.default_rng([seed, size])
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(stratum(data.labels[i]), []).append(int(i))  # a multi-label row may have none
    total = len(indices)
    chosen: list[int] = []
    for label in sorted(groups):
        rows = groups[label]
        take = min(len(rows), max(1, round(size * len(rows) / total)))
        chosen.extend(rng.choice(rows, size=take, replace=False).tolist())
    return sorted(chosen)


class _Encoded:
    """One split, tokenised once; batches are padded on the fly."""

    def __init__(self, tokenizer: TextTokenizer, texts: list[str], targets: Tensor) -> None:
        self.tokenizer = tokenizer
        self.ids, cut = tokenizer.ids_truncated(texts)
        self.cut = sum(cut)  # texts longer than the model reads: it learns from (and is scored on) their start
        self.targets = targets

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: Sequence[int], texts: Sequence[str] | None = None) -> dict[str, Tensor]:
        """The batch of ``indices``; with ``texts`` (one per index, e.g. augmented), those are
        tokenised in place of the split's own."""
        rows = [self.ids[i] for i in indices] if texts is None else self.tokenizer.ids(list(texts))
        batch = self.tokenizer.pad(rows)
        batch["labels"] = self.targets[list(indices)]
        return batch


#: A whole number as a spreadsheet writes it: ``7``, ``-2``, ``7.0`` (no leading zero: ``07`` is a code).
WHOLE_NUMBER = re.compile(r"[+-]?(0|[1-9]\d*)(\.0+)?")


def never_right(metrics: dict[str, Any], split: str, weighted: bool = False) -> list[str]:
    """The labels of the evaluated split the model never got right (recall 0, with 3 examples or more):
    a 99:1 model that always answered the common label had read 0.99 accuracy, level with the
    baseline, its rare label's 0 only in the table."""
    missed = [(label, row["support"]) for label, row in metrics.get("per_class", {}).items()
              if row["support"] >= 3 and row["recall"] == 0]  # fmt: skip
    if not missed:
        return []
    shown = ", ".join(f"{label!r} ({support} examples)" for label, support in missed[:5])
    more = f" and {len(missed) - 5} more" if len(missed) > 5 else ""
    advice = ("even with class_weights" if weighted else
              '{"training": {"class_weights": true}} in --config weighs rare labels up')  # fmt: skip
    return [f"{len(missed)} label(s) of the {split} split are never predicted right ({shown}{more}): the model does "
            f"no better on them than never answering them, which accuracy hides and macro-F1 counts; {advice}"]


def _share(share: float) -> str:
    """A share as a percentage, "under 1%" where it rounds to 0 ("44 of 65180 (0%)" had been said)."""
    return f"{share:.0%}" if share >= 0.01 else "under 1%"


def _cut_note(encoded: dict[str, _Encoded], max_length: int) -> str | None:
    """What the report says of texts longer than the model reads: 300 documents of thousands of words,
    each read to its first 128 tokens, had been scored 30 points under the baseline without a word."""
    counts = [(name, part.cut, len(part)) for name, part in encoded.items() if part.cut]
    if not counts:
        return None
    said = ", ".join(f"{cut} of {total} {name} texts ({_share(cut / total)})" for name, cut, total in counts)
    return (f"{said} are longer than the model reads ({max_length} tokens with [CLS] and [SEP]): it learns from "
            "and is scored on their start alone; --max-length reads more of them (up to the model's limit), "
            "at a cost in time and memory")


def reads_multi_label(dataset: LabelledTexts, multi_label: bool, label_sep: str | None) -> bool:
    """Whether a classifier of ``dataset`` is multi-label: asked for (``--multi-label``, or a
    ``--label-sep`` to split cells with), or some example has several labels (a JSON list)."""
    return bool(multi_label or label_sep is not None or any(len(labels) > 1 for labels in dataset.labels))


def check_labels_to_learn(dataset: LabelledTexts, multi_label: bool) -> None:
    """A classifier needs two labels to choose between: with one, every example has it (a single-label
    row with no label is refused), so a multi-label one has nothing to learn either; multi-label data
    of one label and rows with none is a single-label task of that label and its absence."""
    names = dataset.label_names
    none = sum(not labels for labels in dataset.labels)
    if len(names) == 1 and none:  # it had said "every example has the label", of data where some have none
        raise DataError(f"{dataset.source}: one label, {names[0]!r}, on {len(dataset) - none} example(s), and none on "
                        f"{none}: that is telling {names[0]!r} from its absence; give each row a label ({names[0]!r} "
                        "or another, e.g. 'none') and train without --multi-label or --label-sep")  # fmt: skip
    if len(names) < 2:
        said = f"every example has the label {names[0]!r}" if names else "no example has a label"
        raise DataError(f"{dataset.source}: {said}; a classifier needs at least two labels to learn to tell apart")
    # "1" and "1.0" in a CSV (a spreadsheet's float column): one class learned as two, each half of it.
    # Only a whole number and its ".0" form: "3.1" and "3.10", or "01" and "1", may well be two classes.
    by_number: dict[int, list[str]] = {}
    for name in names:
        if WHOLE_NUMBER.fullmatch(name):
            by_number.setdefault(int(float(name)), []).append(name)
    twice = next((spellings for spellings in by_number.values() if len(spellings) > 1), None)
    if twice is not None:
        first: dict[str, int] = {}
        for line, labels in zip(dataset.lines, dataset.labels, strict=False):  # (loaded texts may have no lines)
            for label in labels:
                first.setdefault(label, line)
        shown = sorted(twice, key=lambda label: first.get(label, 0))[:2]  # in the file's order
        where = " and ".join(f"{label!r}" + (f" (line {first[label]})" if label in first else "")
                             for label in shown)  # fmt: skip
        raise DataError(f"{dataset.source}: the labels {where} are the same number written two ways; write it one "
                        "way, or the model learns one class as two")  # fmt: skip


#: Model fields the task sets from the data: the labels, and the tokenizer's vocabulary.
FROM_THE_DATA = ("num_labels", "multi_label", "vocab_size", "pad_id")


@register_task
class ClassificationTask(Task):
    """Train a registered text classifier (``encoder``, ``bilstm_attention``, ``minilm``, ...) on labelled text.

    Args:
        data: A data file (CSV/TSV/JSONL/Parquet), a bundled dataset name, or loaded texts.
        model: Registered model name.
        model_options: Model config fields, e.g. ``{"dim": 256, "attention": {"score": "cosine"}}``.
        text_col, label_col, split_col: Columns of a data file.
        multi_label: Rows may carry several labels (also inferred from the data).
        label_sep: Separator of several labels in one cell.
        max_train: Train on a seeded sample of at most this many examples of the training split,
            every label kept in proportion (at least one example each); dev and test are
            unchanged. 0: the whole split. For a pretrained model on a large data set, where one
            epoch over everything would not fit the time there is.
    """

    name = "classification"
    selection = "macro_f1"
    features = frozenset({"augment", "adversarial", "rdrop"})
    reads = frozenset({"class_weights", "label_smoothing", "max_length", "vocab_size", "dev_fraction", "test_fraction"})

    def __init__(
        self,
        data: str | os.PathLike[str] | LabelledTexts,
        *,
        model: str = "encoder",
        model_options: dict[str, Any] | None = None,
        text_col: str = "text",
        label_col: str = "label",
        split_col: str | None = None,
        multi_label: bool = False,
        label_sep: str | None = None,
        max_train: int = 0,
    ) -> None:
        if model not in MODELS:
            load_plugins()  # an installed package's model, registered as its module is imported (load had done it)
        classifiers = sorted(name for name, (config, _) in MODELS.items() if issubclass(config, ClassifierConfig))
        if model not in classifiers:
            what = "unknown model" if model not in MODELS else "not a text classifier:"
            raise ValueError(f"{what} {model!r}; choose one of {classifiers}, or 'auto' to pick among them "
                             "('seq2seq' trains a translator on sentence pairs; 'sasrec' and 'din' are recommenders: "
                             "`attend recommend train`)")  # fmt: skip
        self.data = data
        self.model = model
        self.options = dict(model_options or {})
        named = self.options.pop("model_type", model)  # a config's "model" section may name it again
        if named != model:
            raise ValueError(f"model_options names model_type {named!r}, but the model is {model!r}; name it once")
        self.columns = {"text_col": text_col, "label_col": label_col}
        self.reading = {"split_col": split_col, "multi_label": multi_label, "label_sep": label_sep}
        if not isinstance(max_train, int) or max_train < 0:
            raise ValueError(f"max_train={max_train!r} must be a whole number >= 0 (0: the whole training split)")
        self.max_train = max_train
        from_data = sorted(set(self.options) & set(FROM_THE_DATA))
        if from_data:  # they were overwritten without a word
            raise ValueError(f"model field(s) {from_data} are set from the data (its labels, and the tokenizer's "
                             "vocabulary); leave them out (--multi-label and --label-sep read several labels per "
                             'row; the vocabulary size is the training option vocab_size)')  # fmt: skip
        # Checks the options before any data is read: a typo fails at once, naming the fields one may set.
        check_model_fields(model, self.options, from_data=FROM_THE_DATA)
        self._draft = config_from_dict({"model_type": model, **self.options})

    def identity(self) -> dict[str, Any]:
        # How the data was read, so that `--resume` alone reads it again the same way.
        several = bool(self.reading["multi_label"] or self.reading["label_sep"] is not None)
        identity = {"model": self.model, "model_options": self.options, **self.columns, **self.reading,
                    "split_scheme": split_scheme(several)}  # fmt: skip
        return identity | ({"max_train": self.max_train} if self.max_train else {})

    def default_lr(self) -> float:
        return 5e-5 if self._draft.fine_tunes else 1e-3

    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        data = self.data
        self.label_smoothing = args.label_smoothing
        self.rdrop = args.rdrop
        self.augmenter = (
            Augmenter(tuple(args.augment.split(",")), args.augment_rate, args.augment_probability, args.seed)
            if args.augment else None
        )  # fmt: skip
        self.epoch = 0
        if isinstance(data, LabelledTexts):
            dataset = data
        else:
            dataset = load_labelled(data, **self.columns, **self.reading, training=True)
        self.source = dataset.source
        self.multi_label = reads_multi_label(dataset, self.reading["multi_label"], self.reading["label_sep"])
        sep = self.reading["label_sep"]
        if (sep is not None and not self.reading["multi_label"] and os.environ.get("RANK", "0") == "0"
                and not any(len(labels) > 1 for labels in dataset.labels)):  # fmt: skip
            # a multi-label model of a single-label file, without a word, had been the result of a stray flag
            print(f"note: --label-sep {sep!r} (label_sep={sep!r}) splits no label cell of {dataset.source}: every "
                  "text has one label; it trains a multi-label model, as the separator asks (each label from a "
                  "probability of its own; leave the separator out for a single-label one)",
                  file=sys.stderr)  # fmt: skip
        check_labels_to_learn(dataset, self.multi_label)
        train_idx, dev_idx, test_idx = stratified_split(
            dataset, seed=args.seed, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction
        )
        # The baseline always learns from the whole training split: it is what the user could have.
        self.baseline_train = dataset.subset(train_idx)
        if self.max_train and len(train_idx) > self.max_train:
            train_idx = proportional_sample(dataset, train_idx, self.max_train, seed=args.seed)
        elif self.max_train > len(train_idx) and os.environ.get("RANK", "0") == "0":  # had gone by without a word
            print(f"note: max_train={self.max_train} is more than the {len(train_idx)} training examples: all of them "
                  "are used", file=sys.stderr)  # fmt: skip
        parts = {"train": dataset.subset(train_idx), "dev": dataset.subset(dev_idx), "test": dataset.subset(test_idx)}
        self.labels = parts["train"].label_names
        missing = sorted(set(dataset.label_names) - set(self.labels))
        if missing:
            raise DataError(f"{dataset.source}: label(s) {missing} never occur in the training split")
        # The split's sizes, as rebuild_split() will find them again (the whole training split).
        self.sizes = {name: len(part) for name, part in parts.items()} | {"train": len(self.baseline_train)}
        self.train_used = len(parts["train"])
        self.parts = parts
        self.caveats = _caveats(dataset, parts, {"dev": args.dev_fraction, "test": args.test_fraction})
        if self.augmenter is not None and (idle := idle_perturbations(self.augmenter.names, parts["train"].texts,
                                                                      rate=self.augmenter.rate, seed=args.seed)):
            # Its copies are the clean texts, while config.json records it: Chinese data had trained
            # bit for bit as without --augment synonyms,typos. Checked before the tokenizer is trained.
            said = (f"augment='{args.augment}': {' and '.join(map(repr, idle))} "
                    f"change{'s' * (len(idle) == 1)} none of the training texts tried "
                    "(typos needs letters of a QWERTY keyboard, synonyms English content words WordNet knows, casing "
                    "letters with case, char_drop words of two letters or digits, swap and word_dropout two words or "
                    "more)")  # fmt: skip
            if state is None:
                raise ValueError(f"{said}; leave it out")
            print(f"warning: the interrupted run's {said}", file=sys.stderr)
        self.tokenizer = self._tokenizer(parts["train"].texts, args, state)
        if self.augmenter is not None and "casing" in self.augmenter.names and _ignores_case(self.tokenizer):
            # Its copies read exactly as the clean text: the weights came out bit for bit the same,
            # and in a mix the texts that drew it were trained on clean. A run started before this was
            # refused trained that way: resumed, it is warned, not stopped.
            if state is None:
                raise CaseBlind(f"augment='{args.augment}': 'casing' changes only letter case, which the tokenizer "
                                f"of {self.model!r} lowercases away; leave it out (it is for cased "
                                "tokenizers)")  # fmt: skip
            print(f"warning: the interrupted run's augment={args.augment!r}: 'casing' changes nothing the tokenizer "
                  f"of {self.model!r} reads", file=sys.stderr)  # fmt: skip
        config = {"model_type": self.model, **self.options, "num_labels": len(self.labels),
                  "multi_label": self.multi_label}  # fmt: skip
        fields = self._draft.to_dict()
        if "vocab_size" in fields:
            config["vocab_size"] = self.tokenizer.vocab_size
            config["pad_id"] = self.tokenizer.pad_id
        if "max_length" in fields:
            config.setdefault("max_length", args.max_length)
            if isinstance(config["max_length"], int) and config["max_length"] < args.max_length:
                raise ValueError(
                    f"model option max_length={config['max_length']} is less than the training max_length="
                    f"{args.max_length} (--max-length) that texts are cut to: give the same value to both, or only "
                    "--max-length"
                )
        self.config = config_from_dict(config).to_dict()
        self.encoded = {
            name: _Encoded(self.tokenizer, part.texts, label_targets(part, self.labels, self.multi_label))
            for name, part in parts.items()
            if len(part)
        }
        if cut := _cut_note(self.encoded, args.max_length):
            self.caveats.append(cut)
        self.class_weights = self._class_weights() if args.class_weights else None
        self.weighted = bool(args.class_weights)

    def _tokenizer(self, texts: list[str], args: TrainingArgs, state: Path | None) -> TextTokenizer:
        if state is not None and (state / "tokenizer.json").is_file():
            return TextTokenizer.from_file(state / "tokenizer.json", max_length=args.max_length)
        pretrained = self._draft.tokenizer_file()
        if pretrained is not None:
            return TextTokenizer.from_file(pretrained, max_length=args.max_length)
        return TextTokenizer.train(texts, vocab_size=args.vocab_size, max_length=args.max_length)

    def _class_weights(self) -> Tensor:
        return class_weights(self.encoded["train"].targets, len(self.labels), multi_label=self.multi_label)

    def save_state(self, directory: Path) -> None:
        self.tokenizer.save(directory / "tokenizer.json")

    def data_fingerprint(self) -> str:
        return fingerprint((f"{name} {field}", getattr(part, field)) for name, part in self.parts.items()
                           for field in ("texts", "labels"))  # fmt: skip

    def model_config(self) -> dict[str, Any]:
        return self.config

    @property
    def train_size(self) -> int:
        return len(self.encoded["train"])

    def splits(self) -> list[str]:
        return [name for name in ("dev", "test") if name in self.encoded]

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def lengths(self) -> np.ndarray:
        """Token count of each training text (clean: augmentation changes a few words, not the
        length class), so that the Trainer batches similar lengths together."""
        return np.fromiter((len(row) for row in self.encoded["train"].ids), dtype=np.int64,
                           count=len(self.encoded["train"]))  # fmt: skip

    def train_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        if self.augmenter is None:
            return self.encoded["train"].batch(indices)
        texts = self.parts["train"].texts
        return self.encoded["train"].batch(indices, [self.augmenter(texts[i], (self.epoch, i)) for i in indices])

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return classification_loss(logits, labels, multi_label=self.multi_label, weight=self.class_weights,
                                   label_smoothing=self.label_smoothing)  # fmt: skip

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        if not self.rdrop:
            return self._loss(model(batch).logits, batch["labels"])
        # R-Drop: the batch twice in one forward pass (one pass also keeps DDP to one forward per
        # backward), so each copy gets its own dropout; cross-entropy on both plus their symmetric KL.
        twice = {k: torch.cat([v, v]) if isinstance(v, Tensor) else v for k, v in batch.items()}
        first, second = model(twice).logits.float().chunk(2)
        labels = batch["labels"]
        fit = 0.5 * (self._loss(first, labels) + self._loss(second, labels))
        return fit + self.rdrop * symmetric_kl(first, second, multi_label=self.multi_label)

    @torch.inference_mode()
    def probabilities(self, model: nn.Module, split: str, batch_size: int) -> np.ndarray:
        """Predicted probabilities ``(N, num_labels)`` of ``model`` on a split, in its order."""
        model.eval()
        data = self.encoded[split]
        probs = np.zeros((len(data), len(self.labels)), dtype=np.float32)
        for batch in length_batches([len(row) for row in data.ids], batch_size):
            probs[batch] = probabilities(model(data.batch(batch)).logits, self.multi_label).numpy()
        return probs

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        probs = self.probabilities(model, split, batch_size)
        return probability_metrics(probs, self.encoded[split].targets, self.labels, self.multi_label)

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"dev_accuracy": metrics["accuracy"], "dev_macro_f1": metrics["macro_f1"], "dev_loss": metrics["loss"]}

    def reference_metrics(self, split: str) -> dict[str, Any]:
        """TF-IDF + logistic regression on the same split (one per label for multi-label data), fitted
        on the whole training split even when the model saw a sample of it."""
        if split not in self.parts:
            return {}
        train, evaluated = self.baseline_train, self.parts[split]
        if self.multi_label:
            baseline = tfidf_baseline(train.texts, train.labels, evaluated.texts, evaluated.labels, multi_label=True)
        else:
            baseline = tfidf_baseline(train.texts, [row[0] for row in train.labels], evaluated.texts,
                                      [row[0] for row in evaluated.labels])  # fmt: skip
        return {} if baseline is None else {"baseline": baseline}

    def report(self, metrics: dict[str, Any], split: str) -> str:
        report = classification_report(metrics, split, self.source)
        for caveat in [*getattr(self, "caveats", []), *never_right(metrics, split, getattr(self, "weighted", False))]:
            report += f"\nnote: {caveat}"
        if self.multi_label:  # what its figures mean, and why no bag-of-words line follows them
            report += ("\nmulti-label: a text may have several labels (each predicted from probability 0.5); "
                       "accuracy counts a text right only when all its labels are, the baseline's too (one "
                       "TF-IDF + logistic regression per label)")  # fmt: skip
        return report

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        self.tokenizer.save(writer.path / "tokenizer.json")
        writer.record("tokenizer.json")
        writer.save_training_texts(self.baseline_train.texts)  # the whole training split (a sample's too)
        writer.write_json("metrics.json", metrics)
        save_confusion_png(metrics, writer.path / "confusion_matrix.png", title=f"{self.model} on {metrics['split']}")
        data = self.data
        return {
            "tokenizer": {"max_length": self.tokenizer.max_length, "vocab_size": self.tokenizer.vocab_size},
            "labels": self.labels,
            "data": {
                "source": self.source,
                **self.columns,
                "sizes": self.sizes,
                **({"max_train": self.max_train, "train_used": self.train_used} if self.max_train else {}),
                **data_provenance(data, **self.reading),
            },
        }
