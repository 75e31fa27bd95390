"""The library behind ``attend recommend``: train, evaluate, top-k and explain, each one call.

Training goes through the one :class:`~attend.training.Trainer` (resume, TensorBoard, progress,
early stopping, torchrun) with defaults fit for recommenders: many short epochs over a small log,
the epoch kept being the one with the best dev NDCG@10 (SASRec) or AUC (DIN).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from attend.data.datasets import dataset_columns_error
from attend.runtime import Recommender, load
from attend.training import Trainer, TrainingArgs, TrainResult

__all__ = ["RECOMMEND_DEFAULTS", "evaluate_recommender", "load_recommender", "train_recommender"]

#: Training defaults for the recommenders (``attend train``'s suit text classifiers): many cheap
#: epochs, a larger batch, early stopping on the dev metric with room for its noise, and a budget of
#: steps so that a log a hundred times MovieLens-100K trains for fewer epochs, not a hundred times longer.
RECOMMEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "sasrec": {"epochs": 200, "max_steps": 4000, "batch_size": 128, "patience": 20, "warmup_ratio": 0.02,
               "eval_batch_size": 256, "checkpoint_every": 1000},
    "din": {"epochs": 30, "max_steps": 10000, "batch_size": 256, "patience": 3, "warmup_ratio": 0.02,
            "eval_batch_size": 1024, "checkpoint_every": 1000},
}  # fmt: skip


def train_recommender(
    data: str,
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    item_features: str | None = None,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = "timestamp",
    rating_col: str | None = None,
    positive_threshold: float | None = None,
    features: list[str] | None = None,
    feature_types: dict[str, str] | None = None,
    model_options: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train SASRec (``model="sasrec"``, the default) or DIN (``"din"``) on an interaction log; the
    body of ``attend recommend train``.

    Args:
        data: A log file (CSV/TSV/JSONL/Parquet) or a dataset name (``movielens_100k``).
        out: The model directory to write.
        item_features: A file of item features (``item`` plus text/categorical/numeric columns).
        features: Feature columns to use (None: all; ``[]``: item ids only).
        feature_types: Column -> ``text``/``categorical``/``numeric``, overriding inference.
        positive_threshold: DIN: a rating at or above it is a like (default 4).
        model_options: Model config fields (``dim``, ``num_layers``, ``loss``, ``fusion``, ...).
        training: :class:`~attend.training.TrainingArgs` fields over :data:`RECOMMEND_DEFAULTS`;
            only those given are options chosen.
        resume: Continue the interrupted run writing ``out``. What is left out (the model, its
            options, the columns and item features, the training options) is the interrupted run's,
            as ``attend train --resume`` takes it; what is given must be the same.
    """
    from attend.training.tasks.recommendation import CtrTask, LogSource, SequentialTask
    from attend.training.trainer import run_record

    reading: dict[str, Any] = {"item_features": item_features, "user_col": user_col, "item_col": item_col,
                               "time_col": time_col, "rating_col": rating_col, "feature_types": feature_types,
                               "features": features}  # fmt: skip
    run = run_record(out) if resume else None
    if run is not None and run.get("task") in (SequentialTask.name, CtrTask.name):
        # Left out is the interrupted run's (a plain --resume had been refused, its defaults compared
        # with the run's options as if given).
        recorded = {**(run.get("source") or {}), **run}  # a run recorded before the keys were flattened
        defaults = {field.name: field.default for field in dataclasses.fields(LogSource) if field.name in reading}
        reading |= {key: recorded[key] for key, default in defaults.items()
                    if reading[key] == default and key in recorded}  # fmt: skip
        if model is not None and run.get("model") not in (None, model):  # its din threshold had been blamed on it
            raise ValueError(f"--resume continues the interrupted run writing {out}, of --model {run.get('model')}, "
                             f"but this run asks for --model {model}: give the same model (or none), or train "
                             "again without --resume (--overwrite discards that run)")  # fmt: skip
        model = model or run.get("model")
        # what is given over what the run had: one option given (--fusion) had replaced the others
        model_options = {**(run.get("model_options") or {}), **(model_options or {})} or None
        if positive_threshold is None and isinstance(run.get("positive_threshold"), int | float):
            positive_threshold = float(run["positive_threshold"])
    model = model or "sasrec"
    item_features, user_col, item_col, time_col, rating_col, feature_types, features = reading.values()
    if positive_threshold is not None and not math.isfinite(positive_threshold):  # had been blamed on the data
        raise ValueError(f"--positive-threshold {positive_threshold}: give a finite rating (a rating at or above it is "
                         "a like)")  # fmt: skip
    if positive_threshold is not None and model != "din":
        raise ValueError(f"--positive-threshold {positive_threshold:g} is for --model din (a rating at or above it "
                         "is a like); sasrec learns the order of items, not ratings")  # fmt: skip
    if model not in RECOMMEND_DEFAULTS:
        raise ValueError(f"model={model!r}; choose one of {sorted(RECOMMEND_DEFAULTS)}")
    if _is_dataset(data):  # its columns are the dataset's own: an option naming others would be ignored
        given = {"--user-col": (user_col, "user"), "--item-col": (item_col, "item"),
                 "--time-col": (time_col, "timestamp"), "--rating-col": (rating_col, None)}  # fmt: skip
        for flag, (value, default) in given.items():
            if value != default:
                raise dataset_columns_error(flag, "none" if value is None else value, data, "a log file")
    if rating_col is not None and model == "sasrec":  # it had been read, then left unused: a 0 click trained as one
        raise ValueError(f"--rating-col {rating_col} is for --model din (a rating at or above --positive-threshold is "
                         "a like); sasrec learns from the order of every event in the log, whatever its rating: keep "
                         "only the events to learn from in the file")  # fmt: skip
    if rating_col is None and model == "din" and not _is_dataset(data):
        rating_col = "rating"
    source = LogSource(
        data=str(data), item_features=item_features, user_col=user_col, item_col=item_col, time_col=time_col,
        rating_col=rating_col, feature_types=feature_types, features=features,
    )  # fmt: skip
    task: SequentialTask | CtrTask
    if model == "sasrec":
        task = SequentialTask(source, model_options=model_options)
    else:
        task = CtrTask(source, model_options=model_options,
                       positive_threshold=4.0 if positive_threshold is None else positive_threshold)  # fmt: skip
    args = TrainingArgs.from_dict({**RECOMMEND_DEFAULTS[model], **(training or {})})
    return Trainer(task, args, given=frozenset(training or {})).fit(out, resume=resume, overwrite=overwrite)


def _is_dataset(data: str) -> bool:
    from attend.data.datasets import names_dataset

    return names_dataset(data)


def load_recommender(model_dir: str | os.PathLike[str]) -> Recommender:
    """A recommender directory's runtime (an error naming it if it holds another kind of model)."""
    runtime = load(model_dir)
    if not isinstance(runtime, Recommender):
        from attend.io import ModelDirError

        raise ModelDirError(f"{model_dir} holds a {runtime.task} model, not a recommender (attend recommend train)")
    return runtime


def evaluate_recommender(model_dir: str | os.PathLike[str], *, erasure: int = 0, users: int = 200,
                         seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """``protocol``, ``metrics`` and ``baselines`` measured on the test split at training time (same
    split, same run); with ``erasure=K``, also the faithfulness of the history weights (``faithfulness``)."""
    runtime = load_recommender(model_dir)
    stored = runtime.metrics()
    keys = ("hr@10", "ndcg@10", "mrr@10") if runtime.kind == "sasrec" else ("auc", "gauc", "logloss")
    report: dict[str, Any] = {
        "model": runtime.kind,
        "protocol": stored.get("protocol"),
        "split": stored.get("split"),
        "metrics": {k: stored[k] for k in keys if k in stored},
        "baselines": {
            name: {k: row[k] for k in keys if k in row}
            for name, row in (stored.get("baselines") or {}).items()
            if isinstance(row, dict)
        },
    }
    if runtime.kind == "sasrec" and "repeat_targets" in stored:
        report["repeat_targets"] = {"targets": stored["repeat_targets"], "users": stored.get("users"),
                                    "top_hr@10": stored["top_hr@10"]}  # fmt: skip
    if erasure:
        report["faithfulness"] = runtime.erasure(users=users, k=erasure, seed=seed)
    return report
