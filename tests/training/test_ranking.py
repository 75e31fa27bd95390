"""Ranking and CTR metrics on cases small enough to work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from attend.training.ranking import auc_per_group, ctr_metrics, history_mask, ranking_metrics, target_ranks


def test_ranks_exclude_padding_and_history_but_never_the_target() -> None:
    # Items 1..5; column 0 (padding) scores highest but must not count.
    scores = torch.tensor(
        [
            [9.0, 0.5, 0.9, 0.1, 0.7, 0.3],  # target 1 (0.5): 0.9 and 0.7 ahead -> 3
            [9.0, 0.5, 0.9, 0.1, 0.7, 0.3],  # same, items 2 and 4 in the history -> 1
            [9.0, 0.5, 0.9, 0.1, 0.7, 0.3],  # target 2 is in the history: still ranked, 1st
            [9.0, 0.5, 0.9, 0.1, 0.7, 0.3],  # target 3 (lowest) -> 5
        ]
    )
    targets = torch.tensor([1, 1, 2, 3])
    histories = [np.array([], dtype=np.int64), np.array([2, 4]), np.array([2, 5]), np.array([3])]
    assert target_ranks(scores, targets, histories).tolist() == [3, 1, 1, 5]


def test_ties_are_pessimistic() -> None:
    # Every item the same score: the target is ranked behind all 4 others, not first.
    scores = torch.zeros(1, 6)
    assert target_ranks(scores, torch.tensor([3]), [np.array([], dtype=np.int64)]).tolist() == [5]
    scores = torch.tensor([[0.0, 1.0, 2.0, 2.0, 2.0, 3.0]])
    assert target_ranks(scores, torch.tensor([3]), [np.array([4])]).tolist() == [3]  # 5 ahead, 2 tied, 4 excluded


def test_ranks_refuse_bad_input() -> None:
    scores = torch.zeros(2, 4)
    empty = [np.array([], dtype=np.int64)] * 2
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.full((2, 4), float("nan")), torch.tensor([1, 2]), empty)
    with pytest.raises(ValueError, match=r"targets must lie in 1\.\.3"):
        target_ranks(scores, torch.tensor([0, 2]), empty)
    with pytest.raises(ValueError, match="2 score rows but 1 targets"):
        target_ranks(scores, torch.tensor([1]), empty)
    with pytest.raises(ValueError, match=r"history item indices must lie in 0\.\.3"):
        target_ranks(scores, torch.tensor([1, 2]), [np.array([7]), np.array([1])])


def test_history_mask() -> None:
    mask = history_mask([np.array([2, 2]), np.array([], dtype=np.int64), np.array([1, 3])], 4)
    assert mask.tolist() == [[True, False, True, False], [True, False, False, False], [True, True, False, True]]


def test_ranking_metrics_by_hand() -> None:
    ranks = [1, 2, 10, 11]
    metrics = ranking_metrics(torch.tensor(ranks), k=10)
    assert metrics["hr@10"] == pytest.approx(3 / 4)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 10) / 4)
    assert ranking_metrics(np.array(ranks), k=1) == pytest.approx({"hr@1": 0.25, "ndcg@1": 0.25, "mrr@1": 0.25})
    with pytest.raises(ValueError, match="no ranks"):
        ranking_metrics([])
    with pytest.raises(ValueError, match="1-based"):
        ranking_metrics([0, 1])


def test_ctr_metrics_by_hand() -> None:
    users = np.array([0, 0, 0, 1, 1, 2, 2])
    labels = np.array([1, 0, 0, 1, 0, 1, 1])
    probs = np.array([0.9, 0.2, 0.9, 0.3, 0.6, 0.5, 0.4])
    metrics = ctr_metrics(users, labels, probs)
    # User 0: positive 0.9 beats 0.2 and ties 0.9 -> (1 + 0.5) / 2; user 1: 0.3 < 0.6 -> 0; user 2: one label only.
    assert metrics["gauc"] == pytest.approx((3 * 0.75 + 2 * 0.0) / 5)
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert metrics["logloss"] == pytest.approx(log_loss(labels, probs))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ctr_metrics(users, labels, probs * 2)


def test_ctr_metrics_single_label_is_nan_not_an_error() -> None:
    metrics = ctr_metrics(np.array([0, 1]), np.array([1, 1]), np.array([0.8, 0.6]))
    assert math.isnan(metrics["auc"]) and math.isnan(metrics["gauc"]) and metrics["logloss"] > 0


def test_grouped_auc_matches_sklearn_per_user() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, size=2000)
    labels = rng.integers(0, 2, size=2000)
    probs = np.round(rng.random(2000), 1)  # coarse, so ties are frequent
    groups, auc, weights = auc_per_group(users, labels, probs)
    expected = {u: roc_auc_score(labels[users == u], probs[users == u]) for u in groups}
    assert auc == pytest.approx([expected[u] for u in groups])
    assert weights.tolist() == [int((users == u).sum()) for u in groups]
