"""Baselines: each checked against a direct (slow, obvious) computation, then on the real MovieLens-100K.

The real-data tests fetch the pinned recbole wheel from PyPI with pip once per session into
``$ATTEND_CACHE`` if set, else a temporary folder, and reproduce the figures the recommender
issue was filed with (full ranking, test split).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse

from attend.data.interactions import CtrEvents, CtrSplit, Interactions, ItemFeatures, SequentialSplit, sequential_split
from attend.training import baselines
from attend.training.baselines import (
    CTR_BASELINES,
    SEQUENTIAL_BASELINES,
    ctr_baselines,
    popularity_scores,
    sequential_baselines,
)
from attend.training.ranking import ranking_metrics, target_ranks


def make_split(sequences: list[list[int]]) -> SequentialSplit:
    """Leave-one-out over whole sequences, like :func:`sequential_split`."""
    train, dev, test = [], [], []
    for sequence in sequences:
        if len(sequence) < 3:
            train.append(np.array(sequence, dtype=np.int64))
            dev.append(0)
            test.append(0)
        else:
            train.append(np.array(sequence[:-2], dtype=np.int64))
            dev.append(sequence[-2])
            test.append(sequence[-1])
    return SequentialSplit(train=train, dev_target=np.array(dev), test_target=np.array(test))


# --- sequential, small --------------------------------------------------------------------------------


def test_popularity_and_markov_by_hand() -> None:
    # Items 1..5; the last user is train-only (2 interactions) but still counts for fitting.
    split = make_split([[1, 2, 3, 4], [2, 3, 1, 5], [1, 2, 5, 3], [2, 1]])
    # Fit sequences (train + dev): [1,2,3], [2,3,1], [1,2,5], [2,1] -> counts 1:4, 2:4, 3:2, 5:1, 4:0.
    assert popularity_scores(split, 5).tolist() == [0, 4, 4, 2, 0, 1]
    assert popularity_scores([np.array([5, 5])], 5).tolist() == [0, 0, 0, 0, 0, 2]
    results = sequential_baselines(split, 5, k=1, ease_lambdas=(1.0,), neighbours=10)
    assert set(results) == set(SEQUENTIAL_BASELINES)
    # Users 0-2 are evaluated. Popularity, history excluded (ties pessimistic):
    #   u0 history {1,2,3}, target 4 (0): 5 (1) ahead, rank 2;
    #   u1 history {2,3,1}, target 5 (1) beats 4 (0) -> rank 1; u2 history {1,2,5}, target 3 (2) -> rank 1.
    assert results["popularity"]["hr@1"] == pytest.approx(2 / 3)
    # Markov from the last item: transitions 1->2 (2), 2->3 (2), 3->1, 2->5, 2->1. u0 last 3: 3->1 only (excluded),
    # so popularity decides: rank 2 again; u1 last 1: 1->2 excluded, popularity -> 5 first (rank 1);
    # u2 last 5: nothing follows 5, popularity -> 3 first (rank 1).
    assert results["markov"]["hr@1"] == pytest.approx(2 / 3)
    assert results["ease"]["lambda"] == 1.0


def test_markov_transitions_win_over_popularity() -> None:
    popularity = np.array([0.0, 9.0, 1.0, 0.0])
    transitions = baselines._transitions([np.array([3, 2]), np.array([3, 2, 3, 2])], 4)
    scores = baselines._markov_scores(transitions, np.array([3]), popularity)
    # 3 -> 2 three times: item 2 (popularity 1) beats item 1 (popularity 9); 3 beats nothing-followed 0.
    assert np.argsort(-scores[0]).tolist()[:2] == [2, 1]


def test_ease_equals_a_ridge_regression_per_item() -> None:
    # Steck's closed form must equal, column by column, ridge regression of item j on every other item.
    rng = np.random.default_rng(0)
    matrix = (rng.random((30, 8)) < 0.4).astype(np.float64)
    gram, lam = baselines._gram(sparse.csr_matrix(matrix)), 3.0
    weights = baselines._ease_weights(gram, lam)
    for j in range(8):
        others = [i for i in range(8) if i != j]
        x = matrix[:, others]
        expected = np.linalg.solve(x.T @ x + lam * np.eye(7), x.T @ matrix[:, j])
        assert weights[others, j] == pytest.approx(expected, abs=1e-10)
        assert weights[j, j] == 0.0


def test_itemknn_keeps_each_candidates_nearest_neighbours() -> None:
    rng = np.random.default_rng(1)
    matrix = (rng.random((40, 9)) < 0.3).astype(np.float64)
    similarity = baselines._itemknn_similarity(baselines._gram(sparse.csr_matrix(matrix)), neighbours=3, block=4)
    for j in range(9):
        column = np.array(
            [0.0 if i == j or not matrix[:, i].any() or not matrix[:, j].any()
             else matrix[:, i] @ matrix[:, j] / np.sqrt(matrix[:, i].sum() * matrix[:, j].sum()) for i in range(9)]
        )  # fmt: skip
        kept = np.argsort(-column, kind="stable")[:3]
        expected = np.zeros(9)
        expected[kept] = column[kept]
        assert similarity[:, j] == pytest.approx(expected)


def test_ease_lambda_is_chosen_on_dev_fitted_on_train_only() -> None:
    rng = np.random.default_rng(2)
    items = np.arange(1, 31)
    split = make_split([rng.choice(items, size=rng.integers(4, 12), replace=False).tolist() for _ in range(80)])
    grid = (0.1, 3.0, 30.0, 300.0)
    users = split.users("dev")
    matrix = baselines._binary_matrix(split.train, 30).toarray()  # dev sees train only: no dev or test target
    dev_ndcg = []
    for lam in grid:
        scores = torch.from_numpy(matrix[users] @ baselines._ease_weights(matrix.T @ matrix, lam))
        ranks = target_ranks(scores, torch.from_numpy(split.dev_target[users]), [split.train[u] for u in users])
        dev_ndcg.append(ranking_metrics(ranks, k=5)["ndcg@5"])
    chosen = sequential_baselines(split, 30, k=5, ease_lambdas=grid)["ease"]
    assert chosen["lambda"] == grid[int(np.argmax(dev_ndcg))]
    fixed = sequential_baselines(split, 30, k=5, ease_lambdas=(chosen["lambda"],))["ease"]
    assert fixed == chosen


def test_no_test_targets_is_an_error() -> None:
    with pytest.raises(ValueError, match="no user has a test target"):
        sequential_baselines(make_split([[1, 2], [2]]), 2)


# --- CTR, small -----------------------------------------------------------------------------------------


def events(users: list[int], items: list[int], labels: list[int]) -> CtrEvents:
    return CtrEvents(
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        labels=np.array(labels, dtype=np.float32),
        n_before=np.zeros(len(users), dtype=np.int64),
    )


def test_item_rate_is_shrunk_toward_the_global_rate() -> None:
    train = events([0, 0, 1, 1], [1, 1, 1, 2], [1, 1, 0, 1])  # global rate 0.75
    rates = baselines._item_rates(train, 3, prior=2.0)
    assert rates.tolist() == pytest.approx([0.75, (2 + 1.5) / 5, (1 + 1.5) / 3, 0.75])  # unseen items: global


def test_ctr_baselines_find_item_quality() -> None:
    # Item quality decides the label; user bias is noise. Both baselines must rank good items first.
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 12
    quality = np.linspace(0.05, 0.95, n_items)

    def sample(n: int) -> CtrEvents:
        users = rng.integers(0, n_users, size=n)
        items = rng.integers(1, n_items + 1, size=n)
        return events(users.tolist(), items.tolist(), (rng.random(n) < quality[items - 1]).astype(int).tolist())

    split = CtrSplit(train=sample(3000), dev=sample(500), test=sample(1000), positives=[], threshold=4.0)
    results = ctr_baselines(split, n_users, n_items)
    assert set(results) == set(CTR_BASELINES)
    for name in CTR_BASELINES:
        assert results[name]["auc"] > 0.75, name
        assert 0.0 < results[name]["logloss"] < 0.6, name
    assert results["item_rate"]["prior"] in baselines.ITEM_RATE_PRIORS
    assert results["bias_lr"]["C"] in baselines.BIAS_LR_CS


def test_ctr_baselines_need_both_labels() -> None:
    split = CtrSplit(train=events([0], [1], [1]), dev=events([0], [1], [0]), test=events([0], [1], [1]),
                     positives=[], threshold=4.0)  # fmt: skip
    with pytest.raises(ValueError, match="same label"):
        ctr_baselines(split, 1, 1)


# --- the real MovieLens-100K ------------------------------------------------------------------------------

# Measured by the author (HR@10, test, full ranking) and reproduced here; see the EASE and CTR notes.
POPULARITY_HR, ITEMKNN_HR, MARKOV_HR, EASE_AT_500_HR = 0.0859, 0.1177, 0.1453, 0.1453
TOLERANCE = 0.003


@pytest.fixture(scope="session")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Interactions, ItemFeatures]:
    from attend.data.datasets import load_interactions

    cache = os.environ.get("ATTEND_CACHE") or tmp_path_factory.mktemp("attend-cache")
    return load_interactions("movielens_100k", cache_dir=Path(cache))


def test_movielens_100k_loads(movielens: tuple[Interactions, ItemFeatures]) -> None:
    data, features = movielens
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)
    assert data.notes == [] and features.missing == 0
    assert data.item_ids[1] == "1" and features.text["title"][1] == "Toy Story"
    assert features.categorical["genres"][1] == ["Animation", "Children's", "Comedy"]
    assert features.numeric["year"][1] == 1995.0 and int(np.isnan(features.numeric["year"]).sum()) == 3  # 0, 267, 1412
    assert len({genre for genres in features.categorical["genres"] for genre in genres}) == 19
    assert (np.bincount(data.users) >= 20).all()
    assert data.ratings is not None and set(np.unique(data.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_movielens_sequential_baselines_reproduce(movielens: tuple[Interactions, ItemFeatures]) -> None:
    data, _ = movielens
    split = sequential_split(data)
    assert len(split.users("test")) == 943
    results = sequential_baselines(split, data.n_items)
    assert results["popularity"]["hr@10"] == pytest.approx(POPULARITY_HR, abs=TOLERANCE)
    assert results["itemknn"]["hr@10"] == pytest.approx(ITEMKNN_HR, abs=TOLERANCE)
    assert results["markov"]["hr@10"] == pytest.approx(MARKOV_HR, abs=TOLERANCE)
    # Dev (NDCG@10, fit on train) picks lambda = 100 from EASE_LAMBDAS, test HR@10 0.1485; the issue's
    # 0.1453 is EASE at lambda = 500, which this implementation reproduces exactly.
    assert results["ease"]["lambda"] == 100.0
    assert results["ease"]["hr@10"] == pytest.approx(0.1485, abs=TOLERANCE)
    users = split.users("test")
    matrix = baselines._binary_matrix([split.history(u, "test") for u in range(split.n_users)], data.n_items)
    scores = torch.from_numpy(matrix[users] @ baselines._ease_weights(baselines._gram(matrix), 500.0))
    ranks = target_ranks(scores, torch.from_numpy(split.test_target[users]), [split.history(u, "test") for u in users])
    assert (ranks <= 10).double().mean().item() == pytest.approx(EASE_AT_500_HR, abs=TOLERANCE)
    # Sanity of the order the literature reports: every learned baseline beats popularity.
    assert min(results[name]["ndcg@10"] for name in ("itemknn", "ease", "markov")) > results["popularity"]["ndcg@10"]


def test_movielens_ctr_baselines_reproduce(movielens: tuple[Interactions, ItemFeatures]) -> None:
    from attend.data.interactions import ctr_split

    data, _ = movielens
    split = ctr_split(data, 4.0)
    assert (len(split.train), len(split.dev), len(split.test)) == (70012, 9988, 20000)
    results = ctr_baselines(split, data.n_users, data.n_items)
    # The issue measured bias LR AUC 0.7794. Fitted on train with C chosen on dev (as specified) it
    # is 0.775 here for every C >= 1; refitting on train + dev would give 0.785. The figure
    # lies between the two protocols; this pins the one implemented.
    assert results["bias_lr"]["auc"] == pytest.approx(0.7751, abs=TOLERANCE)
    assert results["bias_lr"]["auc"] == pytest.approx(0.7794, abs=0.006)
    assert results["item_rate"]["auc"] == pytest.approx(0.7214, abs=TOLERANCE)
    assert results["bias_lr"]["gauc"] > results["item_rate"]["gauc"] - 0.01


def test_plots_draw_a_dollar_as_a_dollar(tmp_path: Path) -> None:
    """A label "$$" (price tiers) was maths markup to matplotlib: training failed at its last step."""
    from PIL import Image

    from attend.explain.render import _heatmap_png
    from attend.training.metrics import save_confusion_png

    labels = ["$", "$$", "neg$\\foo$", "cost $5 and $6"]
    metrics = {"confusion_matrix": {"labels": labels, "matrix": np.eye(4, dtype=int).tolist()}}
    path = save_confusion_png(metrics, tmp_path / "cm.png", title="a $\\bar$ title")
    assert path is not None and Image.open(path).size[0] > 100
    import matplotlib

    mine = {"font.family": ["serif"], "axes.unicode_minus": True}
    with matplotlib.rc_context(mine):  # a notebook's own settings
        png = _heatmap_png(np.eye(3), ["$\\foo$", "$$", "x^$"], "title $\\bar$")  # translator and classifier maps
        save_confusion_png(metrics, tmp_path / "cm2.png")
        # For those charts only: the user's plots keep their maths, fonts and minus sign (training had
        # set the fonts and the minus sign for the whole process).
        assert {key: matplotlib.rcParams[key] for key in mine} == mine
    assert png.startswith(b"\x89PNG")
    assert matplotlib.rcParams["text.parse_math"] is True


def test_the_confusion_matrix_draws_chinese_labels(tmp_path: Path) -> None:
    """Chinese labels were boxes (the training report's chart did not fall back to the CJK font the
    explanations use), with a missing-glyph warning per character on stderr."""
    import matplotlib
    from matplotlib import font_manager
    from PIL import Image, ImageChops

    from attend.plotting import CJK_FONTS, pyplot
    from attend.training.metrics import save_confusion_png

    pyplot()  # registers CJK fonts installed after matplotlib cached its list
    installed = {font.name for font in font_manager.fontManager.ttflist}
    cjk = [name for name in CJK_FONTS if name in installed]
    assert cjk, "no CJK font installed (make install adds fonts-wqy-microhei)"
    metrics = {"confusion_matrix": {"labels": ["正面评价", "负面评价"], "matrix": np.eye(2, dtype=int).tolist()}}
    drawn = []
    # The chart as a CJK font draws it, and as the report draws it in a process that drew nothing
    # before (matplotlib's default fonts): the same picture.
    for family in (["DejaVu Sans", *cjk], ["DejaVu Sans"]):
        with matplotlib.rc_context({"font.family": family}):
            path = save_confusion_png(metrics, tmp_path / f"{len(family)}.png")
        assert path is not None
        drawn.append(Image.open(path).convert("L"))
    assert ImageChops.difference(*drawn).getbbox() is None


def test_the_confusion_picture_of_many_labels_draws_those_most_confused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """800 labels were drawn whole, a picture of 362 inches a side: killed for memory after training
    (300 took 49 s and 12 GB), no model written. Past 40 labels, those with the most errors."""
    from attend.training import metrics as module

    n = 300
    matrix = np.diag(np.full(n, 5))
    matrix[7, 200] = matrix[250, 3] = 2  # the labels most confused: 7, 200, 250 and 3
    drawn: list[tuple[list[str], str]] = []
    monkeypatch.setattr(module, "_draw_confusion", lambda fig, ax, labels, counts, rates, title: drawn.append(
        (labels, title)))  # fmt: skip
    path = module.save_confusion_png({"confusion_matrix": {"labels": [f"l{i}" for i in range(n)],
                                                           "matrix": matrix.tolist()}}, tmp_path / "c.png", title="m")
    assert path is not None and path.is_file()
    ((labels, title),) = drawn
    assert len(labels) == module.CONFUSION_PNG_LABELS and {"l3", "l7", "l200", "l250"} <= set(labels)
    assert labels == sorted(labels, key=lambda label: int(label[1:]))  # in the labels' own order
    assert title == "m\nthe 40 of 300 labels most confused (all in metrics.json)"


def test_the_multi_label_baseline_is_one_logistic_regression_per_label() -> None:
    """Multi-label runs printed no baseline; now one-vs-rest, scored as the models are (every label
    right for accuracy, F1 averaged over labels), including a label every training text has."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from attend.training.metrics import tfidf_baseline

    rng = np.random.default_rng(0)
    words = ["refund", "crash", "password", "parcel", "late", "screen", "card", "error"]
    tags = {"refund": "billing", "card": "billing", "crash": "bug", "error": "bug", "password": "login"}

    def rows(n: int) -> tuple[list[str], list[list[str]]]:
        texts, labels = [], []
        for _ in range(n):
            chosen = list(rng.choice(words, size=3, replace=False))
            texts.append(" ".join(chosen))
            labels.append(sorted({"ticket", *(tags[w] for w in chosen if w in tags)}))  # "ticket": every row
        return texts, labels

    train_texts, train_labels = rows(200)
    for row in train_labels[:6]:
        row.append("escalated")  # a label no test text has (nor, from noise, is predicted): not averaged in
    texts, labels = rows(60)
    found = tfidf_baseline(train_texts, train_labels, texts, labels, multi_label=True)
    names = sorted({label for row in train_labels + labels for label in row})

    def matrix(rows: list[list[str]]) -> np.ndarray:
        return np.array([[name in row for name in names] for row in rows], dtype=int)

    vectoriser = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectoriser.fit_transform(train_texts)
    columns = [LogisticRegression(max_iter=1000, C=10, solver="liblinear").fit(features, column)
               if 0 < column.sum() < len(column) else None for column in matrix(train_labels).T]  # fmt: skip
    test = vectoriser.transform(texts)
    predicted = np.array([model.predict(test) if model is not None else np.ones(len(texts), dtype=int)
                          for model in columns]).T  # fmt: skip
    assert found is not None and found["method"] == "tfidf_logreg_one_vs_rest"
    assert found["accuracy"] == pytest.approx(accuracy_score(matrix(labels), predicted))
    present = np.flatnonzero(matrix(labels).any(0) | predicted.any(0))  # as classification_metrics averages
    assert "escalated" not in [names[i] for i in present]
    assert found["macro_f1"] == pytest.approx(f1_score(matrix(labels)[:, present], predicted[:, present],
                                                       average="macro", zero_division=0))  # fmt: skip
    assert found["accuracy"] > 0.9  # the tags follow the words
