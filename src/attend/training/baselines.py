"""Non-neural baselines the attention recommenders must beat, scored under the very same protocols.

An attention model's ranking metric means little on its own: on MovieLens-100K a popularity list
already reaches HR@10 0.086 and a closed-form linear model (EASE) 0.15. Every figure a recommender
reports is therefore printed next to these, computed on the same split, with the same exclusion of
what the user already has and the same full ranking (:mod:`attend.training.ranking`).

Sequential (next item), each fitted on what precedes the evaluated split (for test: every user's
train items plus the dev target) and scored on test:

* ``popularity``: how often each item occurs.
* ``itemknn``: item-based nearest neighbours (Sarwar et al. 2001; Deshpande & Karypis 2004):
  cosine similarity of items' binary user vectors; each candidate item keeps its 100 most similar
  items, and a user's score for it is the sum of its similarities to the user's items.
* ``ease``: EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019), the
  closed-form item-item ridge regression with a zero diagonal; its L2 weight ``lambda`` is chosen
  by NDCG@k on dev (fit on train, score dev) from :data:`EASE_LAMBDAS`, then refitted.
* ``markov``: first-order transitions: how often item j directly followed the user's last item in
  anyone's sequence; popularity breaks ties (and ranks everything never seen after that item).

CTR (click = rating at or above the threshold), each fitted on train, its one hyper-parameter
chosen by AUC on dev, and scored on test with :func:`attend.training.ranking.ctr_metrics`:

* ``item_rate``: the item's positive rate on train, shrunk toward the global rate by a prior of
  ``m`` pseudo-events (``(positives + m * global) / (events + m)``, ``m`` from :data:`ITEM_RATE_PRIORS`).
* ``bias_lr``: logistic regression on one-hot user + one-hot item, a learned user and item bias
  (L2 strength ``C`` from :data:`BIAS_LR_CS`).

The chosen hyper-parameter is returned beside the metrics, under ``"lambda"`` (ease), ``"prior"``
(item_rate) and ``"C"`` (bias_lr), so a report can say what was used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import sparse

from attend.data.interactions import CtrEvents, CtrSplit, SequentialSplit, item_counts
from attend.training.ranking import ctr_metrics, ranking_metrics, target_ranks

__all__ = [
    "BIAS_LR_CS",
    "CTR_BASELINES",
    "EASE_LAMBDAS",
    "ITEMKNN_NEIGHBOURS",
    "ITEM_RATE_PRIORS",
    "SEQUENTIAL_BASELINES",
    "bias_offsets",
    "ctr_baselines",
    "item_counts",
    "popularity_scores",
    "sequential_baselines",
]

SEQUENTIAL_BASELINES = ("popularity", "itemknn", "ease", "markov")
CTR_BASELINES = ("item_rate", "bias_lr")

#: EASE's L2 weights tried on dev: log-spaced, wide enough for a few hundred users (best near 100)
#: to millions (Steck reports 500 and more on the large sets).
EASE_LAMBDAS = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
#: Neighbours each candidate item keeps in ItemKNN.
ITEMKNN_NEIGHBOURS = 100
#: Pseudo-events of the global rate added to each item's count in ``item_rate``.
ITEM_RATE_PRIORS = (1.0, 3.0, 10.0, 30.0, 100.0)
#: Inverse L2 strengths tried for ``bias_lr``.
BIAS_LR_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


# --- sequential -------------------------------------------------------------------------------------


def _fit_sequences(split: SequentialSplit, evaluated: str) -> list[np.ndarray]:
    """Every user's interactions before ``evaluated``: train for dev; train + dev target for test."""
    return [split.history(user, evaluated) for user in range(split.n_users)]


def popularity_scores(split_or_sequences: SequentialSplit | Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Interaction counts as float64 scores of shape ``(n_items + 1,)``, padding 0.

    The fallback ranking for a user with no usable history. From a :class:`SequentialSplit` it
    counts what precedes the test targets (train + dev), so a fallback scored on test never saw
    them; at serving time pass every sequence (``Interactions.sequences()``).
    """
    if isinstance(split_or_sequences, SequentialSplit):
        sequences = _fit_sequences(split_or_sequences, "test")
    else:
        sequences = list(split_or_sequences)
    return item_counts(sequences, n_items).astype(np.float64)


def _binary_matrix(sequences: Sequence[np.ndarray], n_items: int) -> sparse.csr_matrix:
    """Sparse ``(users, n_items + 1)`` 0/1 matrix: did the user interact with the item (repeats count once).

    Sparse because a real log is: the item-item models only ever need ``X^T X`` and a few rows of ``X``.
    """
    lengths = [len(sequence) for sequence in sequences]
    rows = np.repeat(np.arange(len(sequences)), lengths)
    columns = np.concatenate(sequences) if sum(lengths) else np.zeros(0, dtype=np.int64)
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(sequences), n_items + 1))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _gram(matrix: sparse.csr_matrix) -> np.ndarray:
    """Dense ``X^T X`` (items x items): how many users have both items."""
    return np.asarray((matrix.T @ matrix).toarray(), dtype=np.float64)


def _itemknn_similarity(gram: np.ndarray, neighbours: int, *, block: int = 2048) -> np.ndarray:
    """Cosine item-item similarity, zero diagonal, where column j keeps only j's ``neighbours`` largest entries.

    Pruning per *candidate* item (column) follows item-based kNN: an item's score comes from its own
    nearest neighbours among the user's items. Ties at the cut keep the lower item index. Columns
    are pruned a block at a time so the sort's index array stays small on a large catalogue.
    """
    norms = np.sqrt(np.diag(gram)).copy()
    norms[norms == 0] = 1.0
    similarity = gram / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    if neighbours < similarity.shape[0]:
        for start in range(0, similarity.shape[1], block):
            columns = similarity[:, start : start + block]  # a view: pruned in place
            dropped = np.argsort(-columns, axis=0, kind="stable")[neighbours:, :]
            np.put_along_axis(columns, dropped, 0.0, axis=0)
    return similarity


def _ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item-item weights ``B = I - P diag(1 / diag(P))``, ``P = (X^T X + lambda I)^-1``, diag(B) = 0."""
    weights = np.linalg.inv(gram + lam * np.eye(gram.shape[0]))
    weights /= -np.diag(weights)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def _transitions(sequences: Sequence[np.ndarray], n_columns: int) -> sparse.csr_matrix:
    """Sparse first-order transition counts: entry (i, j) = how often j directly followed i."""
    pairs = [np.stack([sequence[:-1], sequence[1:]]) for sequence in sequences if len(sequence) > 1]
    sources, targets = np.concatenate(pairs, axis=1) if pairs else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    counts = sparse.csr_matrix((np.ones(len(sources)), (sources, targets)), shape=(n_columns, n_columns))
    counts.sum_duplicates()
    return counts


def _markov_scores(transitions: sparse.csr_matrix, last_items: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Transition counts from each user's last item, popularity breaking ties: ``count * (max_pop + 1) + pop``.

    The multiplier makes the order lexicographic (a higher transition count always wins, popularity
    only orders equal counts), and both fit exactly in float64.
    """
    return transitions[last_items].toarray() * (popularity.max() + 1.0) + popularity[None, :]


Scorer = Callable[[np.ndarray], np.ndarray]  # user indices (B,) -> scores (B, n_items + 1)


def _evaluate(split: SequentialSplit, evaluated: str, scorer: Scorer, k: int, *, chunk: int = 1024) -> dict[str, float]:
    """Full-ranking metrics of ``scorer`` on ``evaluated``, a chunk of users at a time (bounded memory)."""
    users = split.users(evaluated)
    targets = split.targets(evaluated)
    ranks = []
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        scores = torch.from_numpy(np.ascontiguousarray(scorer(batch), dtype=np.float64))
        histories = [split.history(int(user), evaluated) for user in batch]
        ranks.append(target_ranks(scores, torch.from_numpy(targets[batch]), histories))
    return ranking_metrics(torch.cat(ranks), k=k)


def _choose_ease_lambda(split: SequentialSplit, n_items: int, lambdas: Sequence[float], k: int) -> float:
    """The lambda with the best dev NDCG@k, EASE fitted on train only (ties keep the first in the grid)."""
    if len(lambdas) == 1:
        return float(lambdas[0])
    if not len(split.users("dev")):
        raise ValueError("no user has a dev target (every user has fewer than 3 interactions); cannot choose lambda")
    matrix = _binary_matrix(_fit_sequences(split, "dev"), n_items)
    gram = _gram(matrix)
    best, best_ndcg = float(lambdas[0]), -1.0
    for lam in lambdas:
        weights = _ease_weights(gram, lam)
        ndcg = _evaluate(split, "dev", lambda batch: matrix[batch] @ weights, k)[f"ndcg@{k}"]  # noqa: B023
        if ndcg > best_ndcg:
            best, best_ndcg = float(lam), ndcg
    return best


def sequential_baselines(
    split: SequentialSplit,
    n_items: int,
    *,
    k: int = 10,
    ease_lambdas: Sequence[float] = EASE_LAMBDAS,
    neighbours: int = ITEMKNN_NEIGHBOURS,
) -> dict[str, dict[str, float]]:
    """Score every sequential baseline on the test targets with full ranking.

    Memory: ItemKNN and EASE hold a few dense ``(n_items + 1)^2`` float64 matrices (about 4 x 8 bytes
    x n_items^2: 90 MB for 1.7k items, 3.2 GB each at 20k); users are scored 1024 at a time.

    Args:
        split: The leave-one-out split the recommender is evaluated on.
        n_items: Number of items (indices ``1..n_items``).
        k: The cut-off of the metrics.
        ease_lambdas: EASE's grid; a single value fixes lambda without looking at dev.
        neighbours: Neighbours per candidate item for ItemKNN.

    Returns:
        ``{name: {"hr@k", "ndcg@k", "mrr@k"}}`` for each of :data:`SEQUENTIAL_BASELINES`; the
        ``"ease"`` entry also holds the chosen ``"lambda"``.

    Raises:
        ValueError: no user has a test target (or, with a grid, a dev target).
    """
    if not len(split.users("test")):
        raise ValueError("no user has a test target (every user has fewer than 3 interactions)")
    sequences = _fit_sequences(split, "test")
    popularity = item_counts(sequences, n_items).astype(np.float64)
    matrix = _binary_matrix(sequences, n_items)  # the users' histories: the item-item models' input
    lam = _choose_ease_lambda(split, n_items, ease_lambdas, k)
    last_items = np.array([sequence[-1] if len(sequence) else 0 for sequence in sequences], dtype=np.int64)
    results: dict[str, dict[str, float]] = {}
    results["popularity"] = _evaluate(split, "test", lambda batch: np.tile(popularity, (len(batch), 1)), k)
    gram = _gram(matrix)
    similarity = _itemknn_similarity(gram, neighbours)
    results["itemknn"] = _evaluate(split, "test", lambda batch: matrix[batch] @ similarity, k)
    weights = _ease_weights(gram, lam)
    results["ease"] = {**_evaluate(split, "test", lambda batch: matrix[batch] @ weights, k), "lambda": lam}
    transitions = _transitions(sequences, n_items + 1)
    results["markov"] = _evaluate(
        split, "test", lambda batch: _markov_scores(transitions, last_items[batch], popularity), k
    )
    return results


# --- CTR --------------------------------------------------------------------------------------------


def _item_rates(events: CtrEvents, n_items: int, prior: float) -> np.ndarray:
    """Per item index, its positive rate shrunk toward the global rate by ``prior`` pseudo-events.

    Without shrinkage an item seen once scores 0 or 1, a certainty one event does not justify;
    an item never seen gets the global rate.
    """
    global_rate = float(events.labels.mean())
    positives = np.bincount(events.items, weights=events.labels, minlength=n_items + 1)
    counts = np.bincount(events.items, minlength=n_items + 1)
    return (positives + prior * global_rate) / (counts + prior)


def _one_hot(events: CtrEvents, n_users: int, n_items: int) -> sparse.csr_matrix:
    """Sparse ``(events, n_users + n_items + 1)``: a 1 in the event's user column and in its item column."""
    n = len(events)
    rows = np.repeat(np.arange(n), 2)
    columns = np.stack([events.users, n_users + events.items], axis=1).ravel()
    return sparse.csr_matrix((np.ones(2 * n), (rows, columns)), shape=(n, n_users + n_items + 1))


def _pick(candidates: Sequence[float], dev_auc: Sequence[float]) -> float:
    """The candidate with the best dev AUC; the first in the grid on a tie."""
    return float(candidates[int(np.argmax(dev_auc))])


def ctr_baselines(
    split: CtrSplit,
    n_users: int,
    n_items: int,
    *,
    priors: Sequence[float] = ITEM_RATE_PRIORS,
    cs: Sequence[float] = BIAS_LR_CS,
) -> dict[str, dict[str, float]]:
    """Score the CTR baselines on the test events.

    Args:
        split: The CTR split the recommender is evaluated on.
        n_users: Number of users (indices ``0..n_users-1``).
        n_items: Number of items (indices ``1..n_items``).
        priors: Grid of ``item_rate``'s prior strength.
        cs: Grid of ``bias_lr``'s inverse L2 strength.

    Returns:
        ``{name: {"auc", "gauc", "logloss"}}`` for each of :data:`CTR_BASELINES`, plus the chosen
        ``"prior"`` (item_rate) and ``"C"`` (bias_lr).

    Raises:
        ValueError: train or dev is empty or train holds a single label.
    """
    from sklearn.linear_model import LogisticRegression

    train, dev, test = split.train, split.dev, split.test
    if not len(train) or not len(dev) or not len(test):
        raise ValueError(f"CTR baselines need train, dev and test events; got {len(train)}, {len(dev)}, {len(test)} "
                         "(a user's events are split in time: one with 3 or more rated events gives all three)")
    if train.labels.min() == train.labels.max():
        raise ValueError("every train event has the same label; no classifier can be fitted (is the ratings' scale "
                         "the one --positive-threshold assumes?)")

    def dev_auc(probs: np.ndarray) -> float:
        return ctr_metrics(dev.users, dev.labels, probs)["auc"]

    prior = _pick(priors, [dev_auc(_item_rates(train, n_items, prior)[dev.items]) for prior in priors])
    results = {"item_rate": ctr_metrics(test.users, test.labels, _item_rates(train, n_items, prior)[test.items])}
    results["item_rate"]["prior"] = prior

    x_train, x_dev = _one_hot(train, n_users, n_items), _one_hot(dev, n_users, n_items)
    # A tight tolerance: dev AUCs of neighbouring Cs differ in the fourth digit, and with sklearn's
    # default (1e-4) the solver's stopping point, not the data, picks C (3 instead of 1 on ML-100K;
    # 1e-6 and 1e-8 agree to 4 digits).
    models = [LogisticRegression(C=c, tol=1e-6, max_iter=5000).fit(x_train, train.labels) for c in cs]
    best = int(np.argmax([dev_auc(model.predict_proba(x_dev)[:, 1]) for model in models]))
    probs = models[best].predict_proba(_one_hot(test, n_users, n_items))[:, 1]
    results["bias_lr"] = ctr_metrics(test.users, test.labels, probs)
    results["bias_lr"]["C"] = float(cs[best])
    return results


def bias_offsets(split: CtrSplit, n_users: int, n_items: int, c: float) -> tuple[float, np.ndarray, np.ndarray]:
    """The ``bias_lr`` baseline refitted on train with inverse L2 strength ``c``, as offsets:
    ``(intercept, per-user bias (n_users,), per-item bias (n_items + 1,))`` whose sum is its logit.

    DIN adds them to its own logit (a fixed "wide" part), so its attention network learns what the
    user's history says beyond how generous the user and how liked the item are on the whole.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, tol=1e-6, max_iter=5000).fit(_one_hot(split.train, n_users, n_items),
                                                                  split.train.labels)  # fmt: skip
    weights = model.coef_[0]
    return float(model.intercept_[0]), weights[:n_users].copy(), weights[n_users:].copy()
