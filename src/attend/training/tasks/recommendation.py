"""Recommendation tasks: an interaction log in, SASRec or DIN out, beside the baselines of the same split.

:class:`SequentialTask` (``sequential_recommendation``) trains SASRec to predict each user's next
item; :class:`CtrTask` (``ctr_recommendation``) trains DIN to predict whether a user likes an
item. Both read a log (a file or a registered dataset such as ``movielens_100k``) and optional item
features, split it by the protocols of :mod:`attend.data.interactions`, evaluate by full ranking
(:mod:`attend.training.ranking`) or AUC/GAUC, and compute the non-neural baselines
(:mod:`attend.training.baselines`) on the same split, stored in ``metrics.json`` beside the
model's figures so a user sees at once whether attention earned its keep.

The model directory holds what the runtime needs to recommend without the log: the item and
user ids, each user's history (``histories.safetensors``), item popularity (the fallback for an
unknown user), and the item feature tables inside the model's own weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attend.data.interactions import (
    CtrEvents,
    CtrSplit,
    Interactions,
    ItemFeatures,
    SequentialSplit,
    ctr_split,
    item_counts,
    read_interactions,
    read_item_features,
    sequential_split,
    vector_of,
)
from attend.data.readers import DataError
from attend.io import save_tensors, sha256_file
from attend.training.baselines import bias_offsets, ctr_baselines, sequential_baselines
from attend.training.ranking import ctr_metrics, ranking_metrics, target_ranks
from attend.training.tasks.base import (
    Task,
    check_model_fields,
    comparable,
    fingerprint,
    names_file,
    register_task,
)

if TYPE_CHECKING:
    from attend.io import ArtifactWriter
    from attend.training.trainer import TrainingArgs

__all__ = [
    "CtrTask",
    "LogSource",
    "SequentialTask",
    "embed_item_texts",
    "feature_tables",
    "load_log",
    "right_aligned",
]

#: Catalogues above this size skip the sequential baselines: ItemKNN and EASE hold dense item x item
#: matrices (about four float64 ones: 0.8 GB at 5,000 items, 13 GB at 20,000).
DENSE_BASELINE_ITEMS = 5000
#: The longest list of values of one categorical feature kept per item.
MAX_VALUES = 16


@dataclasses.dataclass(frozen=True)
class LogSource:
    """Where an interaction log comes from and how to read it (recorded in ``config.json``)."""

    data: str
    item_features: str | None = None
    user_col: str = "user"
    item_col: str = "item"
    time_col: str | None = "timestamp"
    rating_col: str | None = None
    feature_types: dict[str, str] | None = None
    #: Feature columns to use (None: every one the features file has; [] ids only).
    features: list[str] | None = None


def load_log(source: LogSource) -> tuple[Interactions, ItemFeatures | None]:
    """Read the log and its item features: a registered dataset name or files."""
    path = Path(source.data)
    from attend.data.datasets import close_dataset_names, load_interactions, names_dataset

    if names_dataset(source.data):  # a folder of that name does not hide the data set
        data, features = load_interactions(source.data)
        if source.item_features is not None:
            features = read_item_features(source.item_features, data.item_index(), item_col=source.item_col,
                                          types=source.feature_types)
        return data, _select(features, source.features)
    if path.is_dir():  # it had been "no such file"
        raise DataError(f"{source.data} is a directory; give the interaction log's file (CSV, TSV, JSONL or Parquet)")
    if not path.is_file():
        close = close_dataset_names(str(source.data), task="recommendation")
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise DataError(f"{source.data}: no such file (nor a recommendation dataset name; {hint}see `attend datasets`)")
    data = read_interactions(path, user_col=source.user_col, item_col=source.item_col, time_col=source.time_col,
                             rating_col=source.rating_col)  # fmt: skip
    features = None
    if source.item_features is not None:
        features = read_item_features(source.item_features, data.item_index(), item_col=source.item_col,
                                      types=source.feature_types)
        if features.missing >= data.n_items:
            raise DataError(f"{source.item_features}: none of the log's {data.n_items} items has a row in it (does "
                            "its item column hold the same ids as the log's?)")  # fmt: skip
    return data, _select(features, source.features)


def _select(features: ItemFeatures | None, columns: list[str] | None) -> ItemFeatures | None:
    if features is None and columns:
        raise DataError(f"features {columns}: there are no item features to choose from; give --item-features FILE")
    if features is None or columns is None:
        return features
    # A vector column is read as numeric columns NAME[0], NAME[1], ...: NAME chooses them all.
    named = set(features.text) | set(features.categorical) | {vector_of(name) for name in features.numeric}
    left_out = [c for c in columns if c in features.left_out]
    if left_out:
        raise DataError(f"features: {features.left_out[left_out[0]]}")
    unknown = [c for c in columns if c not in named and c not in features.numeric]
    if unknown:
        raise DataError(f"features: unknown column(s) {unknown}; the item features have {sorted(named)}")

    def chosen(name: str) -> bool:
        return name in columns or vector_of(name) in columns

    picked = {vector_of(name) for name in features.numeric if chosen(name)}  # a vector some element of is chosen
    unused = sorted({name for name in (*features.text, *features.categorical) if name not in columns} |
                    {name if vector_of(name) in picked else vector_of(name) for name in features.numeric
                     if not chosen(name)})  # fmt: skip
    notes = list(features.notes)
    if unused:  # "read as" names every column of the file: it had read as if all of them fed the model
        notes.append(f"feature columns not used (not in --features): {', '.join(unused)}")
    return dataclasses.replace(
        features,
        notes=notes,
        text={k: v for k, v in features.text.items() if k in columns},
        categorical={k: v for k, v in features.categorical.items() if k in columns},
        numeric={k: v for k, v in features.numeric.items() if chosen(k)},
    )


def item_names(features: ItemFeatures | None, item_ids: Sequence[str]) -> dict[str, str]:
    """What names items in explanations and HTML: the features file's first text column, in the
    file's order (e.g. a title before an image path; the first by name was taken), by item id."""
    if features is None or not features.text:
        return {}
    column = next(iter(features.text.values()))
    return {item_ids[i]: column[i] for i in range(1, len(item_ids)) if column[i]}


#: The share of an item text's pieces that are ``[UNK]`` from which MiniLM's vector of it says little.
MOSTLY_UNKNOWN_TEXT = 0.5


def embed_item_texts(texts: Sequence[str], *, batch_size: int = 64) -> tuple[Tensor, list[float]]:
    """Frozen MiniLM sentence vectors ``(N, 384)`` of item texts (zeros for an empty text), and the
    share of each text's pieces MiniLM's vocabulary lacks (``[UNK]``; 0 for an empty text)."""
    from attend.data.batching import length_batches
    from attend.data.tokenization import TextTokenizer
    from attend.models import build
    from attend.models.minilm import tokenizer_path

    model = build({"model_type": "minilm", "num_labels": 2, "pretrained": True}).eval()
    tokenizer = TextTokenizer.from_file(tokenizer_path(), max_length=64)
    rows = tokenizer.ids(list(texts))
    out = torch.zeros((len(rows), 384))
    with torch.inference_mode():
        for chunk in length_batches([len(row) for row in rows], batch_size):
            out[chunk] = model.encode(tokenizer.pad([rows[i] for i in chunk])).float()  # type: ignore[operator]
    empty = torch.tensor([not t.strip() for t in texts])
    out[empty] = 0.0
    return out, tokenizer.unknown_shares(rows)


def feature_tables(features: ItemFeatures | None, num_items: int, fusion: str = "gated"
                   ) -> tuple[dict[str, Any] | None, dict[str, Tensor], dict[str, Any], list[str]]:  # fmt: skip
    """The model's item feature spec, the tables that fill its buffers, the vocabularies to record,
    and notes (item texts MiniLM cannot read).

    Categorical values are indexed by frequency (1 = most common; 0 is padding); numeric columns are
    standardised over the items that have a value (NaN: missing flag); text columns are joined per
    item and embedded once by MiniLM.
    """
    if features is None or not (features.text or features.categorical or features.numeric):
        return None, {}, {}, []
    spec: dict[str, Any] = {"fusion": fusion}
    notes: list[str] = []
    tables: dict[str, Tensor] = {}
    vocabularies: dict[str, Any] = {}
    if features.categorical:
        spec["categorical"] = {}
        for i, (column, values) in enumerate(sorted(features.categorical.items())):
            counts: dict[str, int] = {}
            for item_values in values[1 : num_items + 1]:
                for value in item_values:
                    counts[value] = counts.get(value, 0) + 1
            vocab = sorted(counts, key=lambda v: (-counts[v], v))
            index = {v: j + 1 for j, v in enumerate(vocab)}
            width = max(1, min(MAX_VALUES, max((len(v) for v in values), default=1)))
            table = torch.zeros(num_items + 1, width, dtype=torch.long)
            for item, item_values in enumerate(values[: num_items + 1]):
                ids = [index[v] for v in item_values if v in index][:width]
                table[item, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            spec["categorical"][column] = [max(1, len(vocab)), width]
            tables[f"cat_{i}"] = table
            vocabularies[column] = vocab
    if features.numeric:
        columns = sorted(features.numeric)
        spec["numeric"] = columns
        table = torch.zeros(num_items + 1, 2 * len(columns))
        stats = {}
        for j, column in enumerate(columns):
            values = np.asarray(features.numeric[column][: num_items + 1], dtype=np.float64)
            present = ~np.isnan(values)
            present[0] = False
            mean = float(values[present].mean()) if present.any() else 0.0
            std = float(values[present].std()) if present.any() else 1.0
            std = std if std > 0 else 1.0
            table[:, 2 * j] = torch.from_numpy(np.where(present, (values - mean) / std, 0.0)).float()
            table[:, 2 * j + 1] = torch.from_numpy((~present).astype(np.float32))
            table[0] = 0.0
            stats[column] = {"mean": mean, "std": std}
        tables["numeric"] = table
        vocabularies["numeric"] = stats
    if features.text:
        columns = sorted(features.text)
        texts = [" · ".join(features.text[c][item] for c in columns if features.text[c][item])
                 for item in range(num_items + 1)]  # fmt: skip
        texts[0] = ""
        spec["text_dim"] = 384
        spec["text_columns"] = columns
        tables["text"], shares = embed_item_texts(texts)
        unread = [item for item, share in enumerate(shares) if share >= MOSTLY_UNKNOWN_TEXT]
        if unread:  # Chinese titles had become [UNK] runs, one near-equal vector for every title, in silence
            notes.append(f"{len(unread)} of {sum(bool(t) for t in texts)} items' text ({', '.join(columns)}) is "
                         f"mostly pieces MiniLM's vocabulary lacks (half or more [UNK], e.g. {texts[unread[0]]!r:.60}: "
                         "a script it does not read, such as Chinese): their text vectors say little of them, and "
                         "they are told apart by their other features and ids")  # fmt: skip
    return spec, tables, vocabularies, notes


def right_aligned(rows: Sequence[np.ndarray | Sequence[int]], length: int) -> Tensor:
    """Item sequences as a ``(B, length)`` tensor, each row's last ``length`` items at the right, 0-padded."""
    out = torch.zeros((len(rows), max(1, length)), dtype=torch.long)
    for i, row in enumerate(rows):
        row = np.asarray(row, dtype=np.int64)[-length:]
        if len(row):
            out[i, -len(row) :] = torch.from_numpy(row)
    return out


FROM_THE_DATA = ("num_items", "num_users", "items")
"""Model fields the task sets from the log and the item features; an option naming one is refused."""
TASK_OPTIONS = ("fusion",)
"""Options the task reads itself (into the item feature spec), not model config fields."""


class _RecommendationTask(Task):
    """What both recommenders share: the log, the features, ids and histories written to the model."""

    reads: frozenset[str] = frozenset()  # its sequence length is the model option max_length

    model_type = ""

    def __init__(self, source: LogSource, *, model_options: dict[str, Any] | None = None) -> None:
        self.source = source
        self.model_options = dict(model_options or {})
        self.data: Interactions
        self.item_features: ItemFeatures | None = None
        self.spec: dict[str, Any] | None = None
        self.tables: dict[str, Tensor] = {}
        self.vocabularies: dict[str, Any] = {}
        self.baselines: dict[str, dict[str, float]] = {}
        self.notes: list[str] = []
        self._check_options()

    def _check_options(self) -> None:
        """Refuse a bad model option before any data is read, naming it (``max_length: 0`` looped until
        memory ran out; ``num_items`` replaced the catalogue's size and crashed at the first lookup)."""
        from attend.models.items import FUSIONS

        from_data = sorted(set(self.model_options) & set(FROM_THE_DATA))
        if from_data:
            raise ValueError(f"model field(s) {from_data} are set from the log and the item features; leave them "
                             "out (--item-features, --features and --feature-types choose the features)")  # fmt: skip
        fusion = self.model_options.get("fusion", "gated")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r}; choose one of {list(FUSIONS)}")
        if "fusion" in self.model_options and (self.source.item_features is None or self.source.features == []):
            raise ValueError(f"fusion={fusion!r} fuses each item's id with its features, and this model reads ids "
                             "only: give --item-features FILE (and no --features none), or leave --fusion "
                             "out")  # fmt: skip
        given = {k: v for k, v in self.model_options.items() if k not in TASK_OPTIONS}
        if given.pop("model_type", self.model_type) != self.model_type:
            raise ValueError(f"model_type={self.model_options['model_type']!r} in the options of a "
                             f"{self.model_type!r} recommender; choose the model with --model")  # fmt: skip
        check_model_fields(self.model_type, given, from_data=FROM_THE_DATA, task_options=TASK_OPTIONS)

    def _note_unseen(self, trained: list[np.ndarray], held_out: list[np.ndarray]) -> None:
        """Say how many items occur only in the held-out events: no training step read them (an item
        bought once, as a user's last event, was recommended from its untrained vector without a word)."""
        seen = np.zeros(self.data.n_items + 1, dtype=bool)
        for items in trained:
            seen[items] = True
        held = np.unique(np.concatenate(held_out))  # sorted item indices; 0 is "no target"
        unseen = held[(held > 0) & ~seen[held]]
        if len(unseen):
            how = "their features and an untrained id vector" if self.spec else "an untrained id vector"
            self.notes.append(f"{len(unseen)} item(s) occur only in the held-out dev/test events (e.g. "
                              f"{self.data.item_ids[unseen[0]]!r:.60}): no training step read them, so they are scored "
                              f"by {how}, and `recommend top` may still return them")  # fmt: skip

    def _read(self) -> None:
        self.data, self.item_features = load_log(self.source)
        self.notes = list(self.data.notes) + (list(self.item_features.notes) if self.item_features is not None else [])
        from attend.data.datasets import DATASETS, names_dataset

        info = DATASETS.get(self.source.data) if names_dataset(self.source.data) else None
        if info is not None and not info.redistributable:
            self.notes.append(f"the model directory holds every user's history of {info.name} (histories.safetensors) "
                              f"and its item ids and names (items.json), whose terms forbid passing the data on: "
                              "keep the directory to yourself (see `attend datasets`)")  # fmt: skip
        fusion = str(self.model_options.get("fusion", "gated"))
        self.spec, self.tables, self.vocabularies, notes = feature_tables(self.item_features, self.data.n_items,
                                                                          fusion)  # fmt: skip
        self.notes.extend(notes)
        if "fusion" in self.model_options and self.spec is None:  # every column left out: ignored in silence
            raise DataError(f"fusion={fusion!r} fuses each item's id with its features, but "
                            f"{self.source.item_features} has no feature column the model reads (only the item column, "
                            "or columns left out, such as file paths): give features it can read, or leave --fusion "
                            "out")  # fmt: skip

    def identity(self) -> dict[str, Any]:
        # Each way of reading the log by its own name (a changed one is named alone; the whole source
        # had been shown twice), and a log file by what it holds (the data's digest, checked on a
        # resume), as a classifier's and a translator's: a copy or a moved file had been refused.
        reading = {key: value for key, value in dataclasses.asdict(self.source).items() if key != "data"}
        data = self.source.data
        features = self.source.item_features
        # An edited features file by what it holds: a changed categorical had blamed the checkpoint ("size
        # mismatch"), and changed titles had resumed over the old titles' vectors in silence.
        held = {"item_features_sha256": sha256_file(features)} if features and Path(features).is_file() else {}
        return {"model": self.model_type, "model_options": self.model_options, **({} if names_file(data) else
                {"data": data}), **reading, "item_features": comparable(features), **held}  # fmt: skip

    def same_identity(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The default fusion given or left out is one model (``--resume --fusion gated`` had been
        refused against a run that left it out, and the other way round)."""
        options = identity.get("model_options")
        if not isinstance(options, dict):
            return identity
        return {**identity, "model_options": {k: v for k, v in options.items() if (k, v) != ("fusion", "gated")}}

    def save_state(self, directory: Path) -> None:
        """Nothing to keep: the log is re-read and re-split identically (the split is deterministic)."""

    def data_fingerprint(self) -> str:
        data = self.data
        arrays = {"users": data.users, "items": data.items, "times": data.times, "ratings": data.ratings}
        return fingerprint([*((name, [] if a is None else [a.tobytes().hex()]) for name, a in arrays.items()),
                            ("user ids", data.user_ids), ("item ids", data.item_ids)])  # fmt: skip

    def init_model(self, model: nn.Module) -> None:
        if self.tables:
            model.item_encoder.set_features(self.tables)  # type: ignore[union-attr, operator]

    def default_lr(self) -> float:
        return 1e-3

    def reference_metrics(self, split: str) -> dict[str, Any]:
        """The baselines, fitted and scored on the same split when the data was prepared."""
        return {"baselines": self.baselines}

    def report(self, metrics: dict[str, Any], split: str) -> str:
        return format_ranking_report(metrics, metrics.get("baselines", {}), split)

    def _model_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_options.items() if k not in TASK_OPTIONS and k != "model_type"}

    def _write_common(self, writer: ArtifactWriter, metrics: dict[str, Any], histories: list[np.ndarray] | None = None
                      ) -> dict:  # fmt: skip
        """``histories``: per user, the history a model reads when it is not the whole log (DIN: the
        liked items); the whole log is then stored too, as the items to keep out of top-k."""
        sequences = self.data.sequences()
        tensors = _flat(sequences if histories is None else histories, "items", "lengths")
        if histories is not None:
            tensors |= _flat(sequences, "seen_items", "seen_lengths")
        counts = torch.from_numpy(item_counts(sequences, self.data.n_items).astype(np.float32))
        save_tensors(tensors | {"popularity": counts}, writer.path / "histories.safetensors")
        writer.record("histories.safetensors")
        names = item_names(self.item_features, self.data.item_ids)
        writer.write_json("items.json", {"item_ids": self.data.item_ids, "user_ids": self.data.user_ids,
                                         "names": names, "features": self.vocabularies})  # fmt: skip
        writer.record("items.json")  # the id <-> index maps the weights were trained with: part of the model
        writer.write_json("metrics.json", metrics)
        return {
            "data": {"source": dataclasses.asdict(self.source), "interactions": len(self.data.users),
                     "users": self.data.n_users, "items": self.data.n_items, "notes": self.notes},
            "items": {"count": self.data.n_items, "features": self.spec},
        }  # fmt: skip


def _draw_seed(seed: int, epoch: int, example: int) -> int:
    """A seed for one example's draws in one epoch of a run seeded ``seed`` (distinct for each)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{epoch}:{example}".encode(), digest_size=8).digest(), "big") >> 1


@register_task
class SequentialTask(_RecommendationTask):
    """Next-item prediction with SASRec; the dev split's NDCG@10 picks the epoch."""

    name = "sequential_recommendation"
    selection = "ndcg@10"
    model_type = "sasrec"

    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        self._read()
        self.split: SequentialSplit = sequential_split(self.data)
        self._note_unseen([*self.split.train], [self.split.dev_target, self.split.test_target])
        self.max_length = int(self.model_options.get("max_length", 50))
        self.loss_kind = str(self.model_options.get("loss", "softmax"))
        self.negatives = int(self.model_options.get("negatives", 100))
        inputs, targets = [], []
        span = self.max_length + 1
        for sequence in self.split.train:
            # Windows ending at the last item, then every max_length items back: every training
            # transition is a target exactly once per epoch.
            end = len(sequence)
            while end >= 2:
                window = sequence[max(0, end - span) : end]
                inputs.append(window[:-1])
                targets.append(window[1:])
                end -= self.max_length
        if not inputs:
            raise DataError(f"{self.source.data}: no user has two training interactions; nothing to learn from")
        self.inputs = right_aligned(inputs, self.max_length)
        self.targets = right_aligned(targets, self.max_length)
        self.seed, self.epoch = args.seed, 0
        self.baselines = {}
        if self.data.n_items <= DENSE_BASELINE_ITEMS:
            try:
                self.baselines = sequential_baselines(self.split, self.data.n_items)
            except ValueError as exc:  # e.g. no user with three interactions: named with the log's file
                raise DataError(f"{self.source.data}: {exc}") from None
        else:
            self.notes.append(f"baselines skipped: {self.data.n_items} items is above {DENSE_BASELINE_ITEMS}")

    def model_config(self) -> dict[str, Any]:
        return {"model_type": "sasrec", "num_items": self.data.n_items, "max_length": self.max_length,
                "items": self.spec, **self._model_fields()}  # fmt: skip

    @property
    def train_size(self) -> int:
        return len(self.inputs)

    def splits(self) -> list[str]:
        return [s for s, t in (("dev", self.split.dev_target), ("test", self.split.test_target)) if (t > 0).any()]

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def train_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        batch = {"items": self.inputs[index], "targets": self.targets[index]}
        if self.loss_kind != "softmax":
            count = 1 if self.loss_kind == "bce" else self.negatives
            # Each example's negatives from (seed, epoch, example): a resumed run draws what the
            # uninterrupted one drew, and N processes what one did (one stream from the seed had
            # started again on resume, and been split by rank under torchrun).
            negatives = torch.stack([
                torch.randint(1, self.data.n_items + 1, (self.max_length, count),
                              generator=torch.Generator().manual_seed(_draw_seed(self.seed, self.epoch, int(i))))
                for i in index
            ]) if len(index) else torch.zeros((0, self.max_length, count), dtype=torch.long)  # fmt: skip
            batch["candidates"] = torch.cat([batch["targets"].unsqueeze(-1), negatives], dim=-1)
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        targets = batch["targets"]
        real = targets > 0
        if self.loss_kind == "softmax":
            logits = model({"items": batch["items"], "select": real}).logits.float()
            padding = torch.zeros_like(logits[:1])
            padding[:, 0] = float("-inf")  # padding is never a next item
            return F.cross_entropy(logits + padding, targets[real])
        logits = model({k: v for k, v in batch.items() if k != "targets"}).logits.float()
        if self.loss_kind == "sampled":
            zeros = torch.zeros(int(real.sum()), dtype=torch.long)
            return F.cross_entropy(logits[real], zeros)
        positive, negative = logits[..., 0][real], logits[..., 1][real]
        return F.binary_cross_entropy_with_logits(
            torch.cat([positive, negative]), torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
        )

    def _evaluated(self, split: str) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        target = self.split.dev_target if split == "dev" else self.split.test_target
        users = np.flatnonzero(target > 0)
        return users, [self.split.history(int(u), split) for u in users], target[users]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        users, histories, targets = self._evaluated(split)
        ranks, losses = [], []
        # A target already in its user's history counts as a hit when ranked high (a re-watched film),
        # but `recommend top` never returns an item of the history: also said as what top-k achieves.
        repeats = np.fromiter((target in history for target, history in zip(targets, histories, strict=True)),
                              dtype=bool, count=len(users))  # fmt: skip
        table = model.item_encoder()  # type: ignore[operator]
        for start in range(0, len(users), batch_size):
            rows = histories[start : start + batch_size]
            scores = model.score_last(right_aligned(rows, self.max_length), table).float()  # type: ignore[operator]
            target = torch.from_numpy(targets[start : start + batch_size].astype(np.int64))
            ranks.append(target_ranks(scores, target, rows))
            scores[:, 0] = float("-inf")
            losses.append(F.cross_entropy(scores, target, reduction="sum").item())
        model.train(was_training)
        all_ranks = torch.cat(ranks)
        metrics: dict[str, Any] = dict(ranking_metrics(all_ranks))
        metrics["loss"] = float(sum(losses) / max(1, len(users)))
        metrics["users"] = len(users)
        metrics["repeat_targets"] = int(repeats.sum())
        metrics["top_hr@10"] = float(((all_ranks.numpy() <= 10) & ~repeats).mean()) if len(users) else 0.0
        return metrics

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"dev_hr@10": metrics["hr@10"], "dev_ndcg@10": metrics["ndcg@10"], "dev_loss": metrics["loss"]}

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        full = {**metrics, "protocol": SEQUENTIAL_PROTOCOL}
        # Each user's whole log (test item included): what `recommend top --user` continues from.
        return self._write_common(writer, full)


@register_task
class CtrTask(_RecommendationTask):
    """Like/dislike prediction with DIN; the dev split's AUC picks the epoch."""

    name = "ctr_recommendation"
    selection = "auc"
    model_type = "din"

    def __init__(self, source: LogSource, *, model_options: dict[str, Any] | None = None,
                 positive_threshold: float = 4.0) -> None:  # fmt: skip
        super().__init__(source, model_options=model_options)
        self.positive_threshold = positive_threshold

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "positive_threshold": self.positive_threshold}

    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        self._read()
        if self.data.ratings is None:
            raise DataError(f"{self.source.data}: a CTR model (din) needs ratings: name the rating column "
                            "with --rating-col")  # fmt: skip
        self.split: CtrSplit = ctr_split(self.data, self.positive_threshold)
        self.max_history = int(self.model_options.get("max_history", 50))
        if len(self.split.train.users) == 0:
            raise DataError(f"{self.source.data}: no training events")
        self._note_unseen([self.split.train.items], [self.split.dev.items, self.split.test.items])
        try:
            self.baselines = ctr_baselines(self.split, self.data.n_users, self.data.n_items)
        except ValueError as exc:
            raise DataError(f"{self.source.data}: {exc}") from None
        self.offsets = self.model_options.get("offsets", True)  # a bool: checked with the other options
        if self.offsets:
            intercept, users, items = bias_offsets(self.split, self.data.n_users, self.data.n_items,
                                                   float(self.baselines["bias_lr"]["C"]))  # fmt: skip
            # Row 0 of the user table is the unknown user: no offset.
            self.tables_offsets = {"offset_intercept": torch.tensor(intercept, dtype=torch.float32),
                                   "user_offset": torch.from_numpy(np.concatenate([[0.0], users])).float(),
                                   "item_offset": torch.from_numpy(items).float()}  # fmt: skip

    def model_config(self) -> dict[str, Any]:
        return {"model_type": "din", "num_items": self.data.n_items, "num_users": self.data.n_users,
                "max_history": self.max_history, "items": self.spec, **self._model_fields(),
                "offsets": self.offsets}  # fmt: skip

    def init_model(self, model: nn.Module) -> None:
        super().init_model(model)
        if self.offsets:
            for name, value in self.tables_offsets.items():
                getattr(model, name).copy_(value)

    @property
    def train_size(self) -> int:
        return len(self.split.train.users)

    def splits(self) -> list[str]:
        return [s for s in ("dev", "test") if len(getattr(self.split, s).users)]

    def _batch(self, events: CtrEvents, index: np.ndarray) -> dict[str, Tensor]:
        rows = [self.split.positives[u][: n][-self.max_history :]
                for u, n in zip(events.users[index], events.n_before[index], strict=True)]  # fmt: skip
        return {
            "user": torch.from_numpy(events.users[index].astype(np.int64) + 1),
            "candidate": torch.from_numpy(events.items[index].astype(np.int64)),
            "history": right_aligned(rows, self.max_history),
            "labels": torch.from_numpy(events.labels[index].astype(np.float32)),
        }

    def train_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        return self._batch(self.split.train, np.asarray(indices, dtype=np.int64))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logits = model({k: v for k, v in batch.items() if k != "labels"}).logits.float()
        return F.binary_cross_entropy_with_logits(logits, batch["labels"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        events: CtrEvents = getattr(self.split, split)
        probs = []
        for start in range(0, len(events.users), batch_size):
            batch = self._batch(events, np.arange(start, min(start + batch_size, len(events.users))))
            probs.append(torch.sigmoid(model({k: v for k, v in batch.items() if k != "labels"}).logits.float()))
        model.train(was_training)
        p = torch.cat(probs).numpy()
        metrics: dict[str, Any] = dict(ctr_metrics(events.users, events.labels, p))
        metrics["loss"] = metrics["logloss"]
        metrics["events"] = len(events.users)
        return metrics

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"dev_auc": metrics["auc"], "dev_gauc": metrics["gauc"], "dev_loss": metrics["loss"]}

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        full = {**metrics, "protocol": ctr_protocol(self.positive_threshold)}
        # DIN's history is the liked items; every rated one, liked or not, stays out of top-k.
        entries = self._write_common(writer, full, self.split.positives)
        entries["positive_threshold"] = self.positive_threshold
        return entries


def _flat(rows: list[np.ndarray], items: str, lengths: str) -> dict[str, Tensor]:
    """Per-user item arrays as one flat tensor and their lengths (as safetensors stores them)."""
    flat = torch.from_numpy(np.concatenate(rows).astype(np.int64)) if rows else torch.zeros(0, dtype=torch.long)
    return {items: flat.long(), lengths: torch.tensor([len(r) for r in rows], dtype=torch.long)}


SEQUENTIAL_PROTOCOL = (
    "per user, interactions in time order (file order breaks ties); last -> test, second-last -> dev, the rest "
    "train; users with fewer than 3 interactions are train-only. Full ranking over every item, excluding the "
    "user's earlier items (never the target); HR@10, NDCG@10, MRR@10."
)


def ctr_protocol(threshold: float) -> str:
    """The CTR protocol, in words, for ``metrics.json``."""
    return (
        f"label = rating >= {threshold:g}; per user in time order (file order breaks ties), the last 20% of "
        "events (rounded, at least one) -> test, the 10% before (at least one from 3 events) -> dev, the rest "
        "train; history = the user's liked items strictly before the event. AUC, GAUC (per-user AUC weighted "
        "by events, users with both labels), logloss."
    )


def format_ranking_report(metrics: dict[str, Any], baselines: dict[str, dict[str, float]], split: str) -> str:
    """The model's figures and every baseline's, one row each, same split."""
    keys = [k for k in ("hr@10", "ndcg@10", "mrr@10", "auc", "gauc", "logloss") if k in metrics]
    lines = [f"{split} split", *figure_table("model", metrics, baselines, keys)]
    repeats = repeat_targets_note(metrics.get("repeat_targets"), metrics.get("users"), metrics.get("top_hr@10"))
    return "\n".join([*lines, *(["", repeats] if repeats else [])])


def figure_table(model: str, metrics: dict[str, Any], baselines: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """A report's table: a header of ``keys``, then the model's row and each baseline's, 10 wide per
    figure; an undefined one (null in metrics.json, e.g. the AUC of a split with one class) is ``n/a``."""

    def cell(value: float | None) -> str:
        return f"{value:>10.4f}" if isinstance(value, int | float) and math.isfinite(value) else f"{'n/a':>10}"

    lines = [f"{'':14}" + "".join(f"{k:>10}" for k in keys), f"{model:14}" + "".join(cell(metrics[k]) for k in keys)]
    for name, row in baselines.items():
        if isinstance(row, dict):
            lines.append(f"{name:14}" + "".join(cell(row.get(k)) for k in keys))
    return lines


def repeat_targets_note(repeats: int | None, users: int | None, top_hr: float | None) -> str | None:
    """What the sequential figures count that `recommend top` cannot give: ``repeats`` of the ``users``'
    targets already in their history (a hit when ranked high, never recommended), and ``top_hr`` the
    HR@10 with them counted as misses; None when there are none."""
    if not repeats or not users:
        return None
    return (f"{repeats} of {users} targets ({repeats / users:.1%}) were already in the user's history: they count "
            f"as hits above, but `recommend top` never recommends an item of the history; counted as misses, "
            f"HR@10 is {top_hr:.4f}")  # fmt: skip


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A recommender directory's ``metrics.json``."""
    return json.loads((Path(path) / "metrics.json").read_text(encoding="utf-8"))
