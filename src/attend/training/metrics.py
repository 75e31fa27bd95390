"""Classification metrics with scikit-learn, and the confusion matrix as JSON and PNG."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attend.data.noise import unspaced_share
from attend.data.validation import display_width, displayable, padded
from attend.plotting import chart_style

__all__ = ["classification_metrics", "format_report", "headline_metrics", "save_confusion_png", "tfidf_baseline"]


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro/micro/weighted precision-recall-F1, per-class report and confusion matrix.

    ``y_true``/``y_pred`` are label indices into ``labels`` (single-label), or 0/1 indicator
    matrices ``(N, C)`` (multi-label; accuracy is then exact-match accuracy).

    The averages are over the labels present, in the data or in the predictions (scikit-learn's
    default), not over every label the model knows: a label with no example and no prediction has
    no precision or recall to average, and counting it as 0 would make a perfect model look poor on
    data that lacks some labels. ``averaged_labels`` says how many were averaged, and
    ``absent_labels`` lists the model's labels that have no example in the data.
    """
    # scikit-learn is imported here, not with the module: it costs a second and a half of every
    # `attend` command that only loads a model (translate, predict, serve)
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    _check_indices(y_true, y_pred, len(labels))
    indices = list(range(len(labels)))
    multi_label = y_true.ndim == 2
    if multi_label:
        truth, predicted = set(np.flatnonzero(y_true.any(0))), set(np.flatnonzero(y_pred.any(0)))
    else:
        truth, predicted = set(y_true.tolist()), set(y_pred.tolist())
    present = sorted(truth | predicted) or indices
    result: dict[str, Any] = {"num_examples": len(y_true), "accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, labels=present, zero_division=0)
        result[f"{average}_precision"] = float(p)
        result[f"{average}_recall"] = float(r)
        result[f"{average}_f1"] = float(f)
    result["averaged_labels"] = len(present)
    result["absent_labels"] = [labels[i] for i in indices if i not in truth]
    report = classification_report(
        y_true, y_pred, labels=indices, target_names=list(labels), output_dict=True, zero_division=0
    )
    result["per_class"] = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in labels
    }
    if not multi_label:
        result["confusion_matrix"] = {
            "labels": list(labels),
            "matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        }
    return result


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Accuracy and macro-F1 alone: the two figures a before/after comparison reports."""
    return {"accuracy": float(metrics["accuracy"]), "macro_f1": float(metrics["macro_f1"])}


def format_report(metrics: dict[str, Any], *, title: str = "") -> str:
    """A plain-text report: headline figures, then one line per class."""
    lines = [title] if title else []
    lines.append(
        f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
        f"micro-F1 {metrics['micro_f1']:.4f}   (n={metrics['num_examples']})"
    )
    absent = metrics.get("absent_labels") or []
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        lines.append(f"(macro averages over the {metrics['averaged_labels']} labels in the data or the predictions; "
                     f"the data has no example of {len(absent)} label(s): {shown})")  # fmt: skip
    # a label is the data's text: an escape sequence in one had set the terminal's title and colours
    shown = {name: displayable(name) for name in metrics["per_class"]}
    width = max([display_width(name) for name in shown.values()] + [5])
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for name, row in metrics["per_class"].items():
        figures = f"{row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  {row['support']:7d}"
        lines.append(f"{padded(shown[name], width)}  {figures}")
    return "\n".join(lines)


#: Most labels the confusion picture draws: past them, those most confused. Its size and memory grow
#: with the square of the labels (300 took 49 s and 12 GB, and 800 were killed for memory after
#: training, no model written); every label's counts are in ``metrics.json``.
CONFUSION_PNG_LABELS = 40


def save_confusion_png(metrics: dict[str, Any], path: str | os.PathLike[str], *, title: str = "") -> Path | None:
    """Draw the confusion matrix (row-normalised colours, raw counts) to a PNG; None if multi-label.
    Of more than :data:`CONFUSION_PNG_LABELS` labels, the ones with the most errors (as the true label
    or the predicted one), in their order, the title saying so."""
    if "confusion_matrix" not in metrics:
        return None
    labels = metrics["confusion_matrix"]["labels"]
    counts = np.asarray(metrics["confusion_matrix"]["matrix"], dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # of each true label's examples, all of them
    if len(labels) > CONFUSION_PNG_LABELS:
        errors = counts.sum(0) + counts.sum(1) - 2 * np.diag(counts)
        keep = np.sort(np.argsort(-errors, kind="stable")[:CONFUSION_PNG_LABELS])
        title = (f"{title or 'confusion matrix'}\nthe {CONFUSION_PNG_LABELS} of {len(labels)} labels most confused "
                 "(all in metrics.json)")  # fmt: skip
        labels, counts, rates = [labels[i] for i in keep], counts[np.ix_(keep, keep)], rates[np.ix_(keep, keep)]
    size = max(4.0, 0.45 * len(labels) + 2)
    # Labels are the user's text: "$" in one ("$$" price tiers) is not maths markup, which failed
    # the whole training run at its last step; Chinese ones were boxes without the CJK font.
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    with chart_style() as plt:  # until drawn: ticks are made as the figure draws
        fig, ax = plt.subplots(figsize=(size, size))
        _draw_confusion(fig, ax, labels, counts, rates, title)
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _draw_confusion(fig: Any, ax: Any, labels: list[str], counts: np.ndarray, rates: np.ndarray, title: str) -> None:
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    if len(labels) <= 30:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if counts[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6, color=colour)
    fig.tight_layout()


#: Character n-grams for the baseline when at least this share of the text is in an unspaced script.
CHARACTER_NGRAMS_FROM = 0.3


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[str] | Sequence[Sequence[str]],
    texts: Sequence[str],
    labels: Sequence[str] | Sequence[Sequence[str]],
    *,
    multi_label: bool = False,
) -> dict[str, Any] | None:
    """TF-IDF + logistic regression fitted on the training texts and scored on ``texts``: the bar
    an attention model must clear on the same split. Word 1-2-grams; character 1-3-grams where
    most of the text is in a script written without spaces (Chinese, Japanese: at least
    :data:`CHARACTER_NGRAMS_FROM` of the non-space characters), where words split on spaces would
    be whole clauses. ``multi_label``: labels are lists, one logistic regression per label
    (one-vs-rest, each label predicted from probability 0.5, as the models do), ``accuracy`` the
    share of texts with every label right and ``macro_f1`` the mean over the labels present in the
    answers or the predictions, as :func:`classification_metrics` scores the models. None when it
    cannot be fitted (one class, or no term seen twice)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    names = {label for row in train_labels for label in row} if multi_label else set(train_labels)
    if len(names) < 2 or not len(texts):
        return None
    characters = unspaced_share(train_texts) >= CHARACTER_NGRAMS_FROM
    grams = {"analyzer": "char", "ngram_range": (1, 3)} if characters else {"ngram_range": (1, 2)}
    vectoriser = TfidfVectorizer(**grams, min_df=2, sublinear_tf=True)
    try:
        features = vectoriser.fit_transform(list(train_texts))
    except ValueError:  # an empty vocabulary: too few texts
        return None
    described = {"method": "tfidf_logreg", "features": "char 1-3-grams" if characters else "word 1-2-grams"}
    if multi_label:
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import MultiLabelBinarizer

        binarizer = MultiLabelBinarizer(classes=sorted(names | {label for row in labels for label in row}))
        with warnings.catch_warnings():  # a label every (or no) training text has: a constant, said by sklearn
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)  # as below
            binarizer.fit([])
            # liblinear: each label is a yes/no problem, where it is many times faster than saga
            classifier = OneVsRestClassifier(LogisticRegression(max_iter=1000, C=10, solver="liblinear",
                                                                random_state=0))  # fmt: skip
            classifier.fit(features, binarizer.transform(train_labels))
        truth, predicted = binarizer.transform(labels), classifier.predict(vectoriser.transform(list(texts)))
        present = np.flatnonzero(truth.any(0) | predicted.any(0))  # as the models' figures average
        macro = (f1_score(truth[:, present], predicted[:, present], average="macro", zero_division=0)
                 if len(present) else 0.0)  # fmt: skip
        return {**described, "method": "tfidf_logreg_one_vs_rest", "accuracy": float(accuracy_score(truth, predicted)),
                "macro_f1": float(macro)}  # fmt: skip
    with warnings.catch_warnings():  # many labels of few texts each: "could represent a regression problem"
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        # texts nothing tells apart: the fit stops at max_iter, a reference as good as it gets (sklearn's
        # two-line warning had been said to the user in the middle of the report's output)
        warnings.simplefilter("ignore", ConvergenceWarning)
        # seeded: saga draws its samples at random, and the same split had given 0.6357 or 0.6063
        classifier = LogisticRegression(max_iter=1000, C=10, solver="saga", random_state=0).fit(
            features, list(train_labels))
    predicted = classifier.predict(vectoriser.transform(list(texts)))
    return {**described, "accuracy": float(accuracy_score(labels, predicted)),
            "macro_f1": float(f1_score(labels, predicted, average="macro"))}  # fmt: skip


def _check_indices(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> None:
    """Refuse answers and predictions that do not pair up, or an index with no label (scikit-learn
    would fail on it deep inside its report, or count it as a class of its own)."""
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    if y_true.ndim == 2:
        if y_true.shape[1] != n_labels:
            raise ValueError(f"indicator matrices have {y_true.shape[1]} columns for {n_labels} labels")
        return
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        wrong = [v for v in values.tolist() if not isinstance(v, int) or not 0 <= v < n_labels]
        if wrong:
            raise ValueError(f"{name} holds {wrong[0]!r}, not a label index (0 to {n_labels - 1})")
