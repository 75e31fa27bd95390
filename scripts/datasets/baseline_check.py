"""Check that each data set carries a learnable signal: TF-IDF + logistic regression baselines.

A loader bug (labels shifted by one line, texts cut at a quote, the wrong column) rarely raises an
error; it shows up as a classifier that learns nothing. This script trains a plain bag-of-n-grams
model on a stratified 80/20 split (seed 0) of each data set and fails if accuracy or macro-F1 falls
below a floor set a little under the scores measured when the data sets were added. The numbers
are also the bar an attention model should clear.

Needs scikit-learn (``pip install scikit-learn``); rotten_tomatoes is fetched into the cache on first
use. Takes under a minute on two cores, most of it for wordnet_topics's 26 classes.

Usage::

    python scripts/datasets/baseline_check.py [NAME ...] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from attend.data.datasets import DATASETS, load_dataset

SEED = 0


@dataclass(frozen=True)
class Baseline:
    """How to vectorise and fit one data set, and the scores it must reach.

    Attributes:
        vectorizer: Keyword arguments for ``TfidfVectorizer``.
        classifier: Keyword arguments for ``LogisticRegression``.
        min_accuracy: Floor for test accuracy.
        min_macro_f1: Floor for test macro-F1 (the mean over labels, so rare labels count).
    """

    vectorizer: dict[str, Any]
    classifier: dict[str, Any] = field(default_factory=dict)
    min_accuracy: float = 0.0
    min_macro_f1: float = 0.0


BASELINES = {
    # saga handles 26 classes over ~95k sparse features in under a minute where lbfgs takes ten.
    "wordnet_topics": Baseline(
        vectorizer={"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True},
        classifier={"C": 10.0, "solver": "saga", "max_iter": 1000},
        min_accuracy=0.80,
        min_macro_f1=0.68,
    ),
    "rotten_tomatoes": Baseline(
        vectorizer={"ngram_range": (1, 2), "min_df": 1, "sublinear_tf": True},
        classifier={"C": 10.0, "max_iter": 1000},
        min_accuracy=0.75,
        min_macro_f1=0.74,
    ),
    # Chinese has no spaces between words: character n-grams stand in for a word segmenter.
    "chinese_reviews": Baseline(
        vectorizer={"analyzer": "char", "ngram_range": (1, 3), "min_df": 2, "sublinear_tf": True},
        classifier={"C": 10.0, "max_iter": 1000},
        min_accuracy=0.83,
        min_macro_f1=0.83,
    ),
}


def run(name: str, cache_dir: str | None) -> tuple[float, float, bool]:
    """Fit and score the baseline for one data set; return accuracy, macro-F1 and whether both pass."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    baseline = BASELINES[name]
    start = time.perf_counter()
    data = load_dataset(name, cache_dir=cache_dir)
    train_x, test_x, train_y, test_y = train_test_split(
        data.texts, data.labels, test_size=0.2, random_state=SEED, stratify=data.labels
    )
    vectorizer = TfidfVectorizer(**baseline.vectorizer)
    model = LogisticRegression(random_state=SEED, **baseline.classifier)
    model.fit(vectorizer.fit_transform(train_x), train_y)
    predicted = model.predict(vectorizer.transform(test_x))
    accuracy = float(accuracy_score(test_y, predicted))
    macro_f1 = float(f1_score(test_y, predicted, average="macro"))
    passed = accuracy >= baseline.min_accuracy and macro_f1 >= baseline.min_macro_f1
    print(
        f"{name:16s} n={len(data):6d} labels={len(data.info.labels):2d} features={len(vectorizer.vocabulary_):7d} "
        f"accuracy={accuracy:.4f} (floor {baseline.min_accuracy:.2f}) "
        f"macro_f1={macro_f1:.4f} (floor {baseline.min_macro_f1:.2f}) "
        f"{time.perf_counter() - start:5.1f}s {'ok' if passed else 'BELOW FLOOR'}",
        flush=True,
    )
    return accuracy, macro_f1, passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"data sets to check: {', '.join(sorted(BASELINES))} (default: all)")
    parser.add_argument("--cache-dir", help="cache for fetched data sets (default: $ATTEND_CACHE or ~/.cache/attend)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BASELINES))
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; choose from {sorted(BASELINES)}")
    # Text-classification sets only: the recommendation sets' baselines are computed by every
    # `attend recommend train` run (attend.training.baselines) and checked in tests/training.
    missing = {name for name, info in DATASETS.items() if info.task == "classification"} - set(BASELINES)
    if missing:
        print(f"no baseline for {sorted(missing)}", file=sys.stderr)
        return 1
    results = [run(name, args.cache_dir) for name in args.names or sorted(BASELINES)]
    return 0 if all(passed for _, _, passed in results) else 1


if __name__ == "__main__":
    sys.exit(main())
