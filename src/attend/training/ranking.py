"""Ranking and CTR metrics for the recommenders, shared by the models' evaluation and the baselines.

Full ranking, not sampled: a target is ranked against *every* item the user has not interacted
with. Ranking against 100 sampled negatives inflates scores and can even reorder models (Krichene
& Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020), and a full ranking of a few
thousand items is one matrix row, so there is no reason to sample.

Ties are counted pessimistically: an item scoring exactly the target's score ranks above it. A
model that gives every item the same score therefore ranks its target last; under the optimistic
rule a constant (collapsed, saturated) model would look perfect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["auc_per_group", "ctr_metrics", "history_mask", "ranking_metrics", "target_ranks"]


def history_mask(histories: Sequence[np.ndarray], n_columns: int, *, device: torch.device | None = None) -> Tensor:
    """Bool ``(U, n_columns)``: True at padding (column 0) and at every item of each row's history.

    One scatter over the concatenated histories, so building it costs no Python loop over items.
    """
    mask = torch.zeros(len(histories), n_columns, dtype=torch.bool, device=device)
    mask[:, 0] = True
    lengths = torch.tensor([len(history) for history in histories], dtype=torch.long)
    if lengths.sum():
        columns = torch.from_numpy(np.concatenate([np.asarray(h, dtype=np.int64).ravel() for h in histories]))
        if columns.min() < 0 or columns.max() >= n_columns:
            raise ValueError(f"history item indices must lie in 0..{n_columns - 1}")
        rows = torch.repeat_interleave(torch.arange(len(histories)), lengths)
        mask[rows.to(mask.device), columns.to(mask.device)] = True
    return mask


def target_ranks(scores: Tensor, targets: Tensor, histories: Sequence[np.ndarray]) -> Tensor:
    """The 1-based rank of each row's target among the items the user has not interacted with.

    Args:
        scores: ``(U, n_items + 1)`` scores, higher is better; column 0 is padding and never ranked.
        targets: ``(U,)`` item index of each row's target, ``1..n_items``.
        histories: Per row, the items to exclude (what the user already has). The target itself is
            never excluded, even when it is in the history (a re-watched film is still a hit).

    Returns:
        ``(U,)`` int64 ranks: 1 + the number of remaining items scoring *at least* the target's
        score (ties pessimistic, see the module docstring).

    Raises:
        ValueError: shapes disagree, a target is out of range, or a score is NaN (a NaN compares
            false with everything and would silently rank first).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (users, n_items + 1), got shape {tuple(scores.shape)}")
    U, n_columns = scores.shape
    targets = torch.as_tensor(targets, device=scores.device).long().reshape(-1)
    if targets.numel() != U or len(histories) != U:
        raise ValueError(f"{U} score rows but {targets.numel()} targets and {len(histories)} histories")
    if U and (targets.min() < 1 or targets.max() >= n_columns):
        raise ValueError(f"targets must lie in 1..{n_columns - 1} (0 is padding); got {targets.min()}..{targets.max()}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; the model diverged or was given bad input")
    excluded = history_mask(histories, n_columns, device=scores.device)  # (U, n_columns)
    rows = torch.arange(U, device=scores.device)
    excluded[rows, targets] = True  # the target is not its own competitor
    target_scores = scores[rows, targets].unsqueeze(1)  # (U, 1)
    ahead = (scores >= target_scores) & ~excluded  # (U, n_columns)
    return ahead.sum(dim=1) + 1


def ranking_metrics(ranks: Tensor | np.ndarray | Sequence[int], k: int = 10) -> dict[str, float]:
    """Hit rate, NDCG and MRR at ``k`` of one relevant item per user, averaged over users.

    With a single relevant item the ideal DCG is 1, so NDCG@k is ``1 / log2(rank + 1)`` when the
    target is in the top ``k`` and 0 otherwise; MRR@k is ``1 / rank`` likewise.

    Args:
        ranks: 1-based rank of each user's target, from :func:`target_ranks`.
        k: The cut-off (the length of the recommended list).

    Returns:
        ``{"hr@k", "ndcg@k", "mrr@k"}`` with ``k`` written out.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values = torch.as_tensor(np.asarray(ranks.cpu() if isinstance(ranks, Tensor) else ranks), dtype=torch.float64)
    values = values.reshape(-1)
    if not values.numel():
        raise ValueError("no ranks to average: no user has a target in this split")
    if (values < 1).any():
        raise ValueError("ranks are 1-based; found a rank below 1")
    hit = values <= k
    return {
        f"hr@{k}": hit.double().mean().item(),
        f"ndcg@{k}": torch.where(hit, 1.0 / torch.log2(values + 1.0), 0.0).mean().item(),
        f"mrr@{k}": torch.where(hit, 1.0 / values, 0.0).mean().item(),
    }


def auc_per_group(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC AUC within each group (user), all groups at once.

    AUC is the Mann-Whitney statistic: the share of (positive, negative) pairs ordered correctly, a
    tie counting one half. It is computed from average ranks inside each group after one sort, so
    a thousand users cost one ``lexsort``, not a thousand ``roc_auc_score`` calls.

    Returns:
        ``(group ids, auc, events)``: for every group having both labels, its AUC and its number of events.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((scores, groups))
    g, y, s = groups[order], labels[order], scores[order]
    n = len(g)
    # Runs of equal (group, score) share their average 1-based position; subtracting the position
    # just before the group's start gives the average rank inside the group.
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n)  # exclusive
    average_position = (run_start + 1 + run_end) / 2.0  # mean of positions start+1..end
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.flatnonzero(new_group)
    group_of = np.cumsum(new_group) - 1
    rank_in_group = average_position[run_id] - group_start[group_of]
    sizes = np.diff(np.append(group_start, n))
    positives = np.bincount(group_of, weights=y.astype(np.float64), minlength=len(group_start))
    negatives = sizes - positives
    positive_rank_sum = np.bincount(group_of, weights=np.where(y, rank_in_group, 0.0), minlength=len(group_start))
    both = (positives > 0) & (negatives > 0)
    n_pos, n_neg = positives[both], negatives[both]
    auc = (positive_rank_sum[both] - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return g[group_start][both], auc, sizes[both]


def ctr_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, GAUC and log loss of predicted click probabilities.

    GAUC (Zhou et al., DIN, KDD 2018) averages each user's own AUC weighted by the user's number of
    events: a recommender ranks items *for one user*, so pairs across users, which plain AUC
    mostly counts, say little about it. Users whose events all share one label have no AUC and
    are left out.

    Args:
        users: User of each event.
        labels: 0/1 label of each event.
        probs: Predicted probability of a positive, in ``[0, 1]``.

    Returns:
        ``{"auc", "gauc", "logloss"}``; ``auc``/``gauc`` are NaN when no (user's) events hold both labels.
    """
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(labels).astype(np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if not len(labels) == len(probs) == len(users):
        raise ValueError(f"{len(users)} users, {len(labels)} labels and {len(probs)} probabilities")
    if not len(labels):
        raise ValueError("no events to score")
    if np.isnan(probs).any():
        raise ValueError("probabilities contain NaN; the model diverged or was given bad input")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"probabilities must lie in [0, 1]; found {probs.min()}..{probs.max()}")
    both_labels = 0 < labels.sum() < len(labels)
    _, auc, weights = auc_per_group(np.asarray(users), labels, probs)
    return {
        "auc": float(roc_auc_score(labels, probs)) if both_labels else float("nan"),
        "gauc": float(np.average(auc, weights=weights)) if len(auc) else float("nan"),
        "logloss": float(log_loss(labels, probs, labels=[0.0, 1.0])),
    }
