"""The runtime of recommender directories (SASRec and DIN): top-k for a user or a history, and why.

:class:`Recommender` answers two questions, for many requests at once (the service micro-batches):

* :meth:`~Recommender.top`: the k items a user is most likely to want next (SASRec) or to like
  (DIN), never an item already in their history. A user in the log continues from their whole
  log; a new user is given as a history of item ids (cold start); an unknown user with no history
  gets the most popular items, and the answer says so.
* :meth:`~Recommender.explain`: which history items drove an item's score: DIN's target-attention
  weight of each past item for that candidate; SASRec's last-layer attention from the prediction
  position (heads averaged) and the attention rollout through all layers.

Scoring the whole catalogue is one matrix product (SASRec: last state @ item table) or one
batched pass over every candidate (DIN); excluding the history is a mask, not a loop.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attend.attention import capture_attention
from attend.data.validation import check_count, check_flag
from attend.explain.methods import rollout
from attend.io import ArtifactDir, ModelDirError, weights_mismatch
from attend.models import build, config_from_dict
from attend.runtime.base import LoadOptions, Runtime, register_runtime

__all__ = ["HistoryWeights", "Recommendation", "Recommender", "load_recommender"]

#: Candidates DIN scores per forward pass when ranking the whole catalogue.
DIN_CHUNK = 4096


@dataclass
class HistoryWeights:
    """How much each history item counted for one score.

    Attributes:
        items: The history's item ids, oldest first (the most recent ``max_length`` the model read).
        weights: One weight per item: DIN's raw target-attention weight, or SASRec's last-layer
            attention from the prediction position (heads averaged; sums to 1).
        rollout: SASRec only: attention rollout through every layer from the prediction position.
        not_read: How many older items of the history the model did not read (it reads the last
            ``max_length``).
    """

    items: list[str]
    weights: list[float]
    rollout: list[float] | None = None
    not_read: int = 0

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """The items by the size of their weight, largest first (a DIN weight may be negative: it
        counts against the item), each with its ``position`` in the whole history of
        known items (1 = the oldest; unknown ids are left out before counting), which tells apart two
        events of one item; ``history_not_read`` where older items were not read, and
        ``history_not_listed`` where ``top`` left out the weakest of those it read."""
        order = sorted(range(len(self.items)), key=lambda i: -abs(self.weights[i]))
        unlisted = max(0, len(order) - top) if top is not None else 0
        order = order[:top] if top is not None else order
        rows = []
        for i in order:
            row: dict[str, Any] = {"item": self.items[i], "position": self.not_read + i + 1,
                                   "weight": round(self.weights[i], 5)}  # fmt: skip
            if self.rollout is not None:
                row["rollout"] = round(self.rollout[i], 5)
            rows.append(row)
        return {"history": rows, **({"history_not_read": self.not_read} if self.not_read else {}),
                **({"history_not_listed": unlisted} if unlisted else {})}  # fmt: skip


#: The keys of one :meth:`Recommender.top_many` request.
REQUEST_KEYS = frozenset({"user", "history", "k"})


def _unknown_user_note(user: str) -> str:
    """What ``top`` and ``explain`` say of an unknown user given with a history."""
    return f"unknown user {user!r}: only the history given was read"


def _ignored_warning(ignored: Sequence[str]) -> str:
    return f"{len(ignored)} unknown item(s) in the history were ignored: {list(ignored[:10])}"


@dataclass
class Recommendation:
    """One request's answer."""

    items: list[str]
    scores: list[float]
    user: str | None = None
    source: str = "history"  # "user", "history" or "popularity"
    note: str | None = None
    ignored: list[str] = field(default_factory=list)
    explanations: list[HistoryWeights] | None = None

    def to_dict(self, top_weights: int | None = 10) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user": self.user,
            "source": self.source,
            "items": [{"item": i, "score": round(s, 6)} for i, s in zip(self.items, self.scores, strict=True)],
        }
        if self.explanations is not None:
            for row, why in zip(data["items"], self.explanations, strict=True):
                row |= why.to_dict(top_weights)
        if self.note:
            data["note"] = self.note
        if self.ignored:
            data["warning"] = _ignored_warning(self.ignored)
            data["ignored"] = self.ignored
        return data


class Recommender(Runtime):
    """A loaded SASRec or DIN directory.

    Args:
        model: The network, in eval mode.
        config: ``config.json``.
        item_ids: Index -> item id (index 0 is padding).
        user_ids: Index -> user id.
        histories: Per user, item indices in time order (DIN: the liked ones).
        popularity: Interaction count per item index.
        path: The directory.
        seen: Per user, every item they interacted with (DIN: rated, liked or not), which top-k
            never recommends; None: their history.
    """

    task = "recommendation"

    def __init__(self, model: nn.Module, config: dict[str, Any], item_ids: list[str], user_ids: list[str],
                 histories: list[np.ndarray], popularity: np.ndarray, path: Path | None = None,
                 seen: list[np.ndarray] | None = None) -> None:  # fmt: skip
        super().__init__(config, path)
        self.task = str(config.get("task", "sequential_recommendation"))  # type: ignore[misc]
        self.model = model.eval()
        self.kind = str(config["model"]["model_type"])
        self.item_ids = item_ids
        self.user_ids = user_ids
        self.item_index = {item: i for i, item in enumerate(item_ids) if i > 0}
        self.user_index = {user: u for u, user in enumerate(user_ids)}
        self.histories = histories
        self.seen = seen if seen is not None else histories
        self.popularity = torch.from_numpy(np.asarray(popularity, dtype=np.float32))
        self.max_length = int(config["model"].get("max_length") or config["model"].get("max_history") or 50)
        #: Item id -> display name (the first text feature, e.g. a title), when the log had one.
        self.names: dict[str, str] = {}

    @property
    def backend(self) -> str:
        return "torch"

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    # --- inputs ---------------------------------------------------------------------------------

    def resolve(self, user: str | None = None, history: Sequence[str] | None = None
                ) -> tuple[int | None, np.ndarray, list[str]]:  # fmt: skip
        """``(user index or None, history item indices, ignored unknown item ids)``.

        A known user's stored history comes first; a given history is appended to it (a new user
        has only the given one). Unknown item ids are ignored and returned, each once.

        Raises:
            ValueError: ``history`` is one string, or holds a blank id (named by its place, as
                ``/v1/recommend``'s 422 names it; it had been "unknown" in a warning, as ``''``).
        """
        if isinstance(history, str | bytes):
            raise ValueError("history must be a list of item ids, not one string (wrap it in a list)")
        given_ids = [_as_id(i, self.item_index) for i in history] if history is not None else []  # once: a generator
        for place, raw in enumerate(given_ids):
            if not raw.strip():
                raise ValueError(f"history[{place}]: the id {raw!r} is empty")
        index = self.user_index.get(_as_id(user, self.user_index).strip()) if user is not None else None
        known = self.histories[index] if index is not None else np.zeros(0, dtype=np.int64)
        ids = [i.strip() for i in given_ids]
        ignored = list(dict.fromkeys(i for i in ids if i not in self.item_index))  # each once, as first given
        given = np.asarray([self.item_index[i] for i in ids if i in self.item_index], dtype=np.int64)
        return index, np.concatenate([known, given]).astype(np.int64), ignored

    def _rated(self, index: int | None, history: np.ndarray) -> np.ndarray:
        """The items out of the running for a user: every one they rated (liked or not), and the history's."""
        return np.concatenate([self.seen[index], history]) if index is not None else history

    def _rows(self, histories: Sequence[np.ndarray]) -> Tensor:
        out = torch.zeros((len(histories), self.max_length), dtype=torch.long)
        for i, row in enumerate(histories):
            row = row[-self.max_length :]
            if len(row):
                out[i, -len(row) :] = torch.from_numpy(row)
        return out

    # --- scoring --------------------------------------------------------------------------------

    @torch.inference_mode()
    def score_all(self, users: Sequence[int | None], histories: Sequence[np.ndarray]) -> Tensor:
        """Scores ``(B, num_items + 1)`` of every item for each request (column 0 is -inf)."""
        if self.kind == "sasrec":
            scores = self.model.score_last(self._rows(histories)).float()  # type: ignore[operator]
        else:
            scores = torch.empty((len(histories), self.num_items + 1))
            candidates = torch.arange(self.num_items + 1)
            for b, (user, history) in enumerate(zip(users, histories, strict=True)):
                row = self._rows([history])
                for start in range(0, self.num_items + 1, DIN_CHUNK):
                    chunk = candidates[start : start + DIN_CHUNK]
                    batch = {"user": torch.full((len(chunk),), 0 if user is None else user + 1),
                             "candidate": chunk, "history": row.expand(len(chunk), -1)}  # fmt: skip
                    scores[b, start : start + len(chunk)] = torch.sigmoid(self.model(batch).logits.float())
        scores[:, 0] = float("-inf")
        return scores

    def top_many(self, requests: Sequence[dict[str, Any]], *, explain: bool = False) -> list[Recommendation]:
        """Answer many ``{"user", "history", "k"}`` requests with one scoring pass.

        Raises:
            ValueError: ``requests`` is not a list of dicts, a request has a key of another name, a
                ``k`` that is not a whole number of at least 1, a blank user id, or a history that is
                one string (not a list of ids) or holds a blank id; naming the request.
        """
        if isinstance(requests, dict | str | bytes):
            raise ValueError("requests must be a list of {'user', 'history', 'k'} dicts, not one "
                             f"{type(requests).__name__} (wrap it in a list)")  # fmt: skip
        requests = list(requests)
        check_flag("explain", explain)
        resolved = []
        for i, request in enumerate(requests):
            if not isinstance(request, dict):  # it had been "'str' object has no attribute 'get'"
                raise ValueError(f"requests[{i}] is a {type(request).__name__}, not a {{'user', 'history', 'k'}} dict")
            if unknown := sorted(map(str, set(request) - REQUEST_KEYS)):  # "usr" had answered with popular items
                raise ValueError(f"requests[{i}]: unknown key(s) {', '.join(map(repr, unknown))}; a request's keys "
                                 "are 'user', 'history' and 'k'")  # fmt: skip
            try:
                check_count("k", request.get("k", 10))
                resolved.append(self.resolve(_user_id(request.get("user"), self.user_index), request.get("history")))
            except ValueError as exc:
                raise ValueError(f"requests[{i}]: {exc}") from None
        requests = [{**r, "user": _user_id(r.get("user"), self.user_index)} for r in requests]
        answers: list[Recommendation | None] = [None] * len(requests)
        scored = [i for i, (index, history, _) in enumerate(resolved) if index is not None or len(history)]
        if scored:
            scores = self.score_all([resolved[i][0] for i in scored], [resolved[i][1] for i in scored])
            for row, i in enumerate(scored):
                index, history, ignored = resolved[i]
                k = int(requests[i].get("k", 10))
                rated = self._rated(index, history)
                seen = torch.from_numpy(np.unique(rated)) if len(rated) else torch.zeros(0, dtype=torch.long)
                values = scores[row].clone()
                values[seen] = float("-inf")
                top = _top(values, min(k, int(torch.isfinite(values).sum())))
                items = [self.item_ids[j] for j in top.indices.tolist()]
                source = "user" if index is not None else "history"
                had = "already rated or in the history" if self.kind == "din" else "already in the log or history"
                note = None if items else f"every item of the catalogue is {had}: none left"
                if items and len(items) < k:
                    note = (f"{len(items)} item{'s' * (len(items) != 1)}, not {k}: the catalogue has "
                            f"{self.num_items}, and the other {self.num_items - len(items)} are {had}")  # fmt: skip
                user = requests[i].get("user")
                if index is None and user is not None:  # a mistyped id had looked like that user's own answer
                    note = _unknown_user_note(user) if note is None else f"{_unknown_user_note(user)}; {note}"
                answers[i] = Recommendation(items, top.values.tolist(), user=requests[i].get("user"), source=source,
                                            note=note, ignored=ignored)  # fmt: skip
        for i, answer in enumerate(answers):
            if answer is None:
                k = int(requests[i].get("k", 10))
                top = _top(self.popularity, min(k, self.num_items))
                user = requests[i].get("user")
                note = (f"unknown user {user!r} and no known history: the most popular items" if user is not None
                        else "no known history: the most popular items")  # fmt: skip
                note += " (score: the item's interactions in the training log, not the model's score)"
                if k > self.num_items:
                    note += f"; {self.num_items} items, not {k}: the whole catalogue"
                answers[i] = Recommendation([self.item_ids[j] for j in top.indices.tolist()], top.values.tolist(),
                                            user=user, source="popularity", note=note,
                                            ignored=resolved[i][2])  # fmt: skip
        final = [a for a in answers if a is not None]
        if explain:
            for (index, history, _), answer in zip(resolved, final, strict=True):
                if answer.source != "popularity":
                    answer.explanations = [self.history_weights(index, history, item) for item in answer.items]
        return final

    def evaluate(self, data: Any, **options: Any) -> dict[str, Any]:
        """Refused, saying where a recommender's figures are: it is scored when it is trained."""
        raise ValueError(
            "a recommender is scored on the held-out end of its own log when it is trained: its test figures "
            "and the baselines' are in metrics.json (Recommender.metrics(); `attend recommend evaluate DIR`, "
            "attend.apps.recommend.pipeline.evaluate_recommender); train on the new log to score on it"
        )

    def top(self, user: str | None = None, history: Sequence[str] | None = None, k: int = 10,
            *, explain: bool = False) -> Recommendation:  # fmt: skip
        """The ``k`` best items for a user and/or a history (see the module docstring).

        Raises:
            ValueError: ``k`` is not a whole number of at least 1, a blank ``user``, or ``history``
                is one string or holds a blank id.
        """
        check_count("k", k)  # named as this call names it, not as requests[0]
        if history is not None and not isinstance(history, str | bytes):
            history = list(history)  # read once: it may be a generator, and it is checked first
        self.resolve(_user_id(user, self.user_index), history)
        return self.top_many([{"user": user, "history": history, "k": k}], explain=explain)[0]

    # --- explanations ---------------------------------------------------------------------------

    def _item(self, item: Any) -> str:
        """``item`` as the log's id (``105`` is item ``"105"``, as in :meth:`resolve`).

        Raises:
            ValueError: no such item.
        """
        key = _as_id(item, self.item_index).strip()
        if not key:  # as a blank user and a blank history id are named (it had been "unknown item ''")
            raise ValueError(f"item {item!r} is empty: give an item id of the log")
        if key not in self.item_index:
            raise ValueError(f"unknown item {item!r}")
        return key

    def history_weights(self, user: int | None, history: np.ndarray, item: Any) -> HistoryWeights:
        """Which of the history's items drove ``item``'s score (see the module docstring)."""
        item = self._item(item)
        read = history[-self.max_length :]
        names = [self.item_ids[i] for i in read]
        if not len(read):
            return HistoryWeights([], [])
        not_read = len(history) - len(read)
        row = self._rows([read])
        with torch.inference_mode():
            if self.kind == "din":
                batch = {"user": torch.tensor([0 if user is None else user + 1]),
                         "candidate": torch.tensor([self.item_index[item]]), "history": row}  # fmt: skip
                weights = self.model(batch, output_attentions=True).pooling_weights  # type: ignore[union-attr]
                assert weights is not None
                return HistoryWeights(names, weights[0, -len(read) :].tolist(), not_read=not_read)
            # The sequence layers' attention alone: an item encoder's fusion attention (--fusion
            # attention), a map over an item's features, had been recorded too, and the rollout failed on it.
            layers = self.model.sequence_attention_names()  # type: ignore[operator]
            with capture_attention(self.model, names=layers) as capture:
                self.model.score_last(row)  # type: ignore[operator]
            maps = [w.float() for w in capture.weights]
            last = maps[-1].mean(1)[0, -1, -len(read) :]
            flow = rollout(maps)[0, -1, -len(read) :]
        return HistoryWeights(names, last.tolist(), flow.tolist(), not_read=not_read)

    def explain(self, user: str | None = None, item: str | None = None, history: Sequence[str] | None = None
                ) -> dict[str, Any]:  # fmt: skip
        """The score and rank of ``item`` for the user/history, with the history weights behind it:
        ``explain(user, item)``, or ``explain(item=..., history=[...])``.

        Raises:
            ValueError: no item, an unknown item, or neither a known user nor a history with a known item.
        """
        if item is None:  # explain("i7") took "i7" as the user and said "unknown item ''"
            taken = f" ({user!r} was taken as the user)" if user is not None else ""
            raise ValueError(f"no item to explain{taken}: give explain(user, item) or explain(item=..., history=[...])")
        item = self._item(item)
        user = _user_id(user, self.user_index)
        index, full, ignored = self.resolve(user, history)
        if index is None and not len(full):
            if user is None and not history:
                raise ValueError("nothing to explain from: give a user (--user) or a history of items (--history)")
            who = f"unknown user {user!r}" if user is not None else "no user"
            unknown = f" (the history's items {ignored[:5]} are unknown)" if ignored else ""
            raise ValueError(f"{who} and no known history to explain from{unknown}")
        scores = self.score_all([index], [full])[0]
        target = self.item_index[item]
        values = scores.clone()
        # Ranked as top() ranks: every item the user rated (liked or not) is out of the running, and
        # equal scores keep item order.
        rated = self._rated(index, full)
        if len(rated):
            values[torch.from_numpy(np.unique(rated[rated != target]))] = float("-inf")
        ahead = (values > values[target]) | ((values == values[target]) & (torch.arange(len(values)) < target))
        rank = int(ahead.sum()) + 1
        why = self.history_weights(index, full, item)
        # "rated" is DIN's (a rating below the threshold is in no history); SASRec's log is its history.
        was_rated = {"rated": bool((rated == target).any())} if self.kind == "din" else {}
        answer = {"user": user, "item": item, "score": float(scores[target]), "rank": rank,
                  "in_history": bool((full == target).any()), **was_rated, "model": self.kind, **why.to_dict()}
        unknown_user = index is None and user is not None  # said, as top() says it
        notes = [_unknown_user_note(user)] if unknown_user else []
        if why.not_read:
            notes.append(f"the model reads the last {self.max_length} items of a history: the {why.not_read} older "
                         "ones were not read, and have no weight")  # fmt: skip
        if notes:
            answer["note"] = "; ".join(notes)
        if ignored:  # as top() says it: the weights are over the known items only
            answer |= {"warning": _ignored_warning(ignored), "ignored": ignored}
        return answer

    def erasure(self, *, users: int = 200, k: int = 3, seed: int = 0) -> dict[str, Any]:
        """Faithfulness by erasure: for each of ``users`` sampled users, the score of their top item
        after removing the ``k`` history items the explanation weighs most vs ``k`` random ones.

        A faithful explanation names the items the score rests on, so removing them should lower it
        more than removing random items. Returns the mean drops and the gap (top-k minus random).
        """
        check_count("users", users)  # a list of users had failed inside ("'<' not supported")
        check_count("k", k)
        rng = random.Random(seed)
        candidates = [u for u, h in enumerate(self.histories) if len(h) > k]
        chosen = rng.sample(candidates, min(users, len(candidates)))
        drops_top, drops_random = [], []
        for u in chosen:
            history = self.histories[u][-self.max_length :]
            answer = self.top_many([{"user": self.user_ids[u], "k": 1}])[0]
            if not answer.items:  # the user rated every item: nothing left to recommend or erase for
                continue
            item = answer.items[0]
            target = self.item_index[item]
            weights = np.asarray(self.history_weights(u, history, item).weights)
            # By magnitude: a raw DIN weight below zero moves the interest vector as much as one above.
            top = set(np.argsort(-np.abs(weights), kind="stable")[:k].tolist())
            random_k = set(rng.sample(range(len(history)), k))
            variants = [history[[i for i in range(len(history)) if i not in drop]] for drop in (top, random_k)]
            base = answer.scores[0]  # the same history read, the same score
            after = self.score_all([u, u], variants)[:, target].tolist()
            drops_top.append(base - after[0])
            drops_random.append(base - after[1])
        if not drops_top:  # JSON has no NaN: say why there is no figure instead
            empty = dict.fromkeys(("drop_top_k", "drop_random_k", "gap", "top_k_beats_random"))
            why = (f"no user has more than k={k} history items to erase" if not chosen
                   else "every sampled user has rated every item: no top item to explain")  # fmt: skip
            return {"users": 0, "k": k, **empty, "note": why}
        mean_top, mean_random = float(np.mean(drops_top)), float(np.mean(drops_random))
        return {"users": len(drops_top), "k": k, "drop_top_k": mean_top, "drop_random_k": mean_random,
                "gap": mean_top - mean_random,
                "top_k_beats_random": float(np.mean(np.asarray(drops_top) > np.asarray(drops_random)))}  # fmt: skip


def load_recommender(artifact: ArtifactDir, options: LoadOptions) -> Recommender:
    """A recommender directory (PyTorch only)."""
    path = artifact.path
    if options.runtime == "onnx" or options.int8 or options.bf16:
        raise ModelDirError(f"{path}: recommenders run on PyTorch in float32 (no --runtime onnx, --int8 or --bf16)")
    try:
        model = build(config_from_dict(dict(artifact.config["model"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{path / 'config.json'}: invalid model config ({exc})") from None
    weights = artifact.tensors("model.safetensors")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise weights_mismatch(path, exc) from None
    stored = artifact.tensors("histories.safetensors")
    file = artifact.file("items.json")  # checked against its recorded hash
    try:
        ids = json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        ids = None
    if not isinstance(ids, dict) or "item_ids" not in ids or "user_ids" not in ids:
        raise ModelDirError(f"{path}: items.json is missing or unreadable")
    items = int(artifact.config["model"].get("num_items", 0))
    if len(ids["item_ids"]) != items + 1:  # a directory from before items.json's hash was recorded
        raise ModelDirError(f"{path}: items.json names {len(ids['item_ids']) - 1} items, the model was trained on "
                            f"{items}: its files come from different runs")  # fmt: skip
    histories = _per_user(stored["items"].numpy(), stored["lengths"].numpy())
    seen = _per_user(stored["seen_items"].numpy(), stored["seen_lengths"].numpy()) if "seen_items" in stored else None
    runtime = Recommender(model, artifact.config, [str(i) for i in ids["item_ids"]],
                          [str(u) for u in ids["user_ids"]], histories, stored["popularity"].numpy(), path,
                          seen)  # fmt: skip
    runtime.names = {str(k): str(v) for k, v in (ids.get("names") or {}).items()}
    return runtime


def _user_id(user: Any, known: Mapping[str, int] | None = None) -> str | None:
    """A user id as the log's (``5`` and ``numpy.int64(5)`` are user ``"5"``): what answers echo,
    so they stay JSON.

    Raises:
        ValueError: a blank id, which no log has (training refuses one): it was answered as an
            unknown user, with the popular items.
    """
    if user is None:
        return None
    if not str(user).strip():
        raise ValueError(f"user {user!r} is empty: give a user id of the log, or no user")
    return _as_id(user, known).strip()


def _as_id(value: Any, known: Mapping[str, int] | None = None) -> str:
    """An id given from Python as the log spells it: ``str(value)``, or for a whole-number float
    (``5.0``: a dataframe made it of an int column) ``"5"`` where ``known`` has that spelling and not
    the other (a JSON or Parquet log's ``5.0`` was read as ``"5"``: it had been an unknown user; a CSV
    log's cell ``5.0`` stays ``"5.0"``)."""
    text = str(value)
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        whole = str(int(value))
        if known is None or (whole in known and text.strip() not in known):
            return whole
    return text


def _top(values: Tensor, k: int) -> Any:
    """The ``k`` largest values and their indices, ties in index order (``torch.topk`` orders ties
    differently for different ``k``: the first items of a top-3 and of a top-1000 would disagree)."""
    ranked = torch.sort(values, descending=True, stable=True)
    return torch.return_types.topk((ranked.values[:k], ranked.indices[:k]))


def _per_user(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return [flat[offsets[u] : offsets[u + 1]] for u in range(len(lengths))]


for _task in ("sequential_recommendation", "ctr_recommendation"):
    register_runtime(_task)(load_recommender)
