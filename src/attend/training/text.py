"""The body of ``attend train`` for text: a named classifier, or ``auto`` to pick one on dev."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attend.data.readers import DataError, LabelledTexts
from attend.training.auto import DEFAULT_TIME_BUDGET, _work_directory, train_auto
from attend.training.tasks.classification import ClassificationTask
from attend.training.trainer import (
    Trainer,
    TrainingArgs,
    TrainResult,
    check_out,
    check_settings,
    global_random_kept,
    run_record,
)

__all__ = ["train"]


def train(
    data: str | os.PathLike[str] | LabelledTexts,
    out: str | os.PathLike[str],
    *,
    model: str = "auto",
    model_options: dict[str, Any] | None = None,
    args: TrainingArgs | dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    multi_label: bool = False,
    label_sep: str | None = None,
    max_train: int = 0,
    time_budget: float | None = None,
    ensemble: bool | None = None,
    candidates: list[str] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a classifier on labelled text and write its model directory to ``out``; the body of ``attend train``.

    Args:
        data: A data file (CSV/TSV/JSONL/Parquet), a bundled dataset name, or loaded texts.
        out: Model directory to write (in one atomic switch at the end of a successful run).
        model: Registered model name (``encoder``, ``bilstm_attention``, ``minilm``, ...), or
            ``"auto"`` (the default): train the candidates within ``time_budget`` and keep the one
            with the best dev score (:mod:`attend.training.auto`).
        model_options: Model config fields, e.g. ``{"dim": 256, "attention": {"score": "cosine"}}``
            (for a named model; ``auto`` takes none).
        args: Training options (defaults: :class:`~attend.training.TrainingArgs`); a dict holds
            only the options chosen, which ``auto`` applies to every candidate while fitting the
            rest to the data size.
        resume: Continue the interrupted run that was writing ``out``.
        overwrite: Replace a model already in ``out`` (without it, that is an error).
        max_train: Train on a proportional sample of at most this many training examples (0: all).
        time_budget: Minutes for ``auto``'s candidates together (default: a ``"time_budget"`` in
            ``args`` when it is a dict of the user's choices, as ``--config`` gives, else
            :data:`~attend.training.auto.DEFAULT_TIME_BUDGET`); for a named model, its
            :attr:`~attend.training.TrainingArgs.time_budget` (the epochs that fit, the last possibly cut).
        ensemble: Whether ``auto`` may pick its candidates' ensemble when that is best on dev
            (default True); only with ``model="auto"``.
        candidates: The registered models ``auto`` chooses among (default: every one it may pick
            on its own; a model whose weights come with terms of use, such as ``m3e``, only when
            named here); only with ``model="auto"``.
        on_epoch: Called with each epoch's log record (for notebooks and tests).

    Returns:
        The model directory, its test metrics (dev if there is no test split) and the history.
    """
    check_out(out)
    if isinstance(candidates, str):  # its letters had been refused as models ("candidates ['c', 'd', 'e', ...]")
        raise ValueError(f"candidates: a list of model names, not one string ({candidates!r}: [{candidates!r}])")
    columns = {"text_col": text_col, "label_col": label_col, "split_col": split_col, "multi_label": multi_label,
               "label_sep": label_sep}  # fmt: skip
    if resume:  # how the data was read, where left at the defaults, is the interrupted run's
        columns = _resumed_columns(out, columns)
    model_options = dict(model_options or {})
    named = model_options.pop("model_type", None)
    if named is not None:
        if model not in ("auto", named):
            raise ValueError(f"model options name model_type={named!r}, but the model asked for is {model!r}")
        model = str(named)
    run = _interrupted_run(out) if resume else None
    if run is not None:  # --resume takes what was left out from the interrupted run, as the Trainer does
        model = run["model"] if model == "auto" and named is None else model
        if model == run["model"]:
            model_options = model_options or dict(run.get("model_options") or {})
            max_train = max_train or int(run.get("max_train") or 0)
    if model == "auto":
        if model_options:
            raise ValueError(
                f"model options {sorted(model_options)} need a named model: pass --model (e.g. encoder), or put "
                '"model_type" in them; --model auto trains several models'
            )
        if max_train:
            raise ValueError("max_train is planned by --model auto itself; name a --model to set it")
        if not resume:  # before the candidates are planned (each loop would refuse it, after the probes)
            check_settings(args if isinstance(args, TrainingArgs) else TrainingArgs.from_dict(dict(args or {})),
                           None if isinstance(args, TrainingArgs) else set(args or {}))  # fmt: skip
        if isinstance(args, dict) and "time_budget" in args:
            # The user's budget in the training options is auto's budget for all the candidates (the
            # argument, i.e. --time-budget, wins); each candidate's loop gets its share of it.
            args = dict(args)
            given = args.pop("time_budget")
            time_budget = given if time_budget is None else time_budget
        with global_random_kept():  # the plan seeds and probes before any candidate's loop (which keeps them)
            return train_auto(data, out, args=args,
                              time_budget=DEFAULT_TIME_BUDGET if time_budget is None else time_budget,
                              resume=resume, overwrite=overwrite, on_epoch=on_epoch, candidates=candidates,
                              ensemble=True if ensemble is None else ensemble, **columns)  # fmt: skip
    if ensemble is not None:
        raise ValueError(f"ensemble (--no-ensemble) is for --model auto, not --model {model}")
    if candidates is not None:
        raise ValueError(f"candidates (--candidates) are for --model auto, not --model {model}")
    given = None  # the options chosen: a dict's keys (a TrainingArgs' are those away from the defaults)
    if isinstance(args, dict):
        given = set(args)
        args = TrainingArgs.from_dict(dict(args))
    if time_budget is not None:  # a named model's budget bounds its own epochs
        args = dataclasses.replace(args or TrainingArgs(), time_budget=time_budget)
        given = None if given is None else given | {"time_budget"}
    task = ClassificationTask(data, model=model, model_options=model_options, max_train=max_train, **columns)
    return Trainer(task, args, on_epoch=on_epoch, given=given).fit(out, resume=resume, overwrite=overwrite)


#: How ``train`` reads a file when told nothing: what "left out" looks like on a resume.
_READING_DEFAULTS = {"text_col": "text", "label_col": "label", "split_col": None, "multi_label": False,
                     "label_sep": None}  # fmt: skip


def _resumed_columns(out: str | os.PathLike[str], columns: dict[str, Any]) -> dict[str, Any]:
    """``columns`` with each left at its default taken from the interrupted run writing ``out``
    (``attend train DATA --out DIR --resume`` alone had failed on "no column 'label'" for a run
    started with --label-col, and blamed the data for a --split-col left out); one given again
    with another value is refused, naming it."""
    auto = _work_directory(Path(out)) / "auto.json"
    try:
        recorded = (json.loads(auto.read_text(encoding="utf-8")).get("identity") or {}).get("columns") \
            if auto.is_file() else run_record(out)  # fmt: skip
    except (OSError, ValueError):
        return columns
    if not isinstance(recorded, dict):
        return columns
    merged = dict(columns)
    for key, default in _READING_DEFAULTS.items():
        if key not in recorded:  # a run from before the columns were recorded
            continue
        if columns[key] == default:
            merged[key] = recorded[key]
        elif columns[key] != recorded[key]:
            raise DataError(f"{out}: --resume reads the data as the interrupted run did, which had "
                            f"{key}={recorded[key]!r}, not {columns[key]!r}; leave --{key.replace('_', '-')} out, "
                            "or start again without --resume (--overwrite discards the interrupted run)")  # fmt: skip
    return merged


def _interrupted_run(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the interrupted run of a named classifier writing ``out`` recorded (its model, model options
    and sample size), or None: no such run, or an interrupted ``--model auto`` run (which has its own)."""
    if (_work_directory(Path(out)) / "auto.json").is_file():
        return None
    run = run_record(out)
    if run is None or run.get("task") != "classification" or not isinstance(run.get("model"), str):
        return None
    return run
