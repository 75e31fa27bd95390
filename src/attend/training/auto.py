"""``--model auto``: pick the text classifier for the data by a dev-set comparison within a time budget.

A user with a few thousand labelled texts is the common case, and there a model trained from
scratch can lose to a bag of words while a pretrained encoder wins; on a large set the cheap
model may be as good. No rule of thumb settles it for data we have not seen, so :func:`train_auto`
asks the data:

1. **Candidates.** The ``encoder`` (trained from scratch) and every registered pretrained text
   classifier (``minilm``, ``e5``, ...) whose vocabulary can read the training texts: one whose
   tokenizer turns more than :data:`MAX_UNKNOWN_RATE` of the training tokens into its unknown token
   is left out (MiniLM's English vocabulary on Chinese text), as is one whose weights are not
   available, and one whose weights come with terms of use
   (:attr:`~attend.models.base.ModelConfig.use_terms`, e.g. ``m3e``: non-commercial research only)
   unless the user names it in ``candidates``; each exclusion is recorded with its reason.
2. **Settings fit for the data size.** Small data gets more epochs (about :data:`PRETRAINED_PASSES`
   example-passes for a pretrained model, :data:`SCRATCH_PASSES` from scratch, within bounds),
   early stopping on dev, and bf16 autocast for pretrained models on a CPU with AMX. Anything the
   user set explicitly is kept for every candidate.
3. **A plan within the budget.** A few timed training steps of each candidate on real training
   batches of typical size give its seconds per example; if the planned epochs of all candidates
   do not fit the budget, the budget is shared out cheapest first, each candidate taking its plan
   or an equal share of what is left, whichever is less; one that gets less than its plan trains
   for as many epochs as fit, or for one epoch over a proportional sample of the training split
   (``max_train``) when not even one epoch would. Before each later candidate, the ones still to
   train are planned again over the budget the finished ones really left. Each candidate's
   training loop then gets its share as :attr:`TrainingArgs.time_budget`: the Trainer times its
   own first steps and keeps the epochs that fit, so a candidate slower than its three
   timed steps said trains fewer epochs rather than overrunning. The loop may also go further
   than the plan's whole epochs, up to the epochs fit for the data size: where the plan rounded
   down, it trains the steps of one more epoch that fit its share (a cut last epoch).
4. **The dev comparison.** Every candidate trains through the one :class:`Trainer` on the same
   split; the best dev score (the task's selection metric, macro-F1; ties to accuracy, then to the
   cheaper model) wins. The test split plays no part in the choice. The winner's model directory
   becomes ``out``, its ``config.json`` and ``metrics.json`` gain an ``auto`` record (every
   candidate's plan, dev and test figures, the reason for the pick), and the others are deleted.
5. **The candidates together.** With two or more trained candidates, their ensemble (the mean of
   their probabilities, an :mod:`attend.runtime.ensemble` directory) is one more entry in the dev
   comparison, scored from the probabilities each candidate's kept weights give on the dev split.
   It wins only with a strictly higher dev score than the best single model (it costs the sum of
   its members to run); then ``out`` is the ensemble, whose members are the candidates' directories.
   Models of different kinds (one from scratch on its own subword vocabulary, one pretrained) make
   different mistakes, which is where averaging pays. ``ensemble=False`` (``--no-ensemble``) keeps
   one model.

An interrupted run (Ctrl-C) resumes with ``--resume``: finished candidates are kept, the one that
was training continues from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from attend.config import load_plugins
from attend.data.readers import DataError, LabelledTexts, stratified_split
from attend.data.splits import load_labelled
from attend.io import (
    EnsembleMember,
    ModelDirError,
    OutputLock,
    atomic_write_json,
    check_output_directory,
    link_target,
    output_path,
    publish_directory,
    update_metrics,
    write_ensemble,
)
from attend.models import MODELS, build, config_from_dict, native_bf16
from attend.models.base import ClassifierConfig
from attend.training.metrics import tfidf_baseline
from attend.training.tasks.base import comparable
from attend.training.tasks.classification import (
    CaseBlind,
    ClassificationTask,
    classification_report,
    never_right,
    probability_metrics,
    reads_multi_label,
)
from attend.training.trainer import (
    RESUME_MAY_CHANGE,
    Trainer,
    TrainingArgs,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    appeared_meanwhile,
    epoch_batches,
    explicit_options,
    has_checkpoint,
    nothing_to_resume,
    state_directory,
)
from attend.version import __version__

__all__ = [
    "AUTO",
    "DEFAULT_TIME_BUDGET",
    "ENSEMBLE",
    "MAX_UNKNOWN_RATE",
    "candidate_models",
    "train_auto",
]

#: The model name that asks for the choice.
AUTO = "auto"
#: The name of the candidates' ensemble in the comparison and the report.
ENSEMBLE = "ensemble"
#: Minutes of training for all candidates together, when the user names none.
DEFAULT_TIME_BUDGET = 20.0
#: A pretrained vocabulary that cannot read more than this share of the training tokens is no candidate.
MAX_UNKNOWN_RATE = 0.05
#: Example-passes planned for a pretrained model (epochs = this / training examples, within bounds).
PRETRAINED_PASSES = 20_000
PRETRAINED_EPOCHS = (2, 10)
#: The same for a model trained from scratch, which needs more passes to learn its embeddings.
SCRATCH_PASSES = 60_000
SCRATCH_EPOCHS = (3, 20)
#: The model trained from scratch: always a candidate, and the tie-breaker (cheapest to run).
SCRATCH_MODEL = "encoder"
#: Forward-only evaluation costs about a third of a training step per example.
EVAL_COST = 1 / 3
#: Training examples sampled to measure the unknown-token rate.
UNKNOWN_SAMPLE = 2000
#: Timed training steps per candidate (after one untimed warm-up step).
PROBE_STEPS = 3
#: A candidate whose share of the budget cannot cover this many training examples is left out.
MIN_TRAIN_EXAMPLES = 200


@dataclasses.dataclass
class _Candidate:
    name: str
    pretrained: bool
    excluded: str = ""
    unknown_rate: float | None = None
    weights: int = 0
    seconds_per_example: float = 0.0
    epochs: int = 0
    max_train: int = 0
    planned_seconds: float = 0.0
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The epochs fit for the data size, before the budget cut them (what a new plan starts from).
    wanted_epochs: int = 0

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pretrained": self.pretrained}
        if self.unknown_rate is not None:
            out["unknown_rate"] = round(self.unknown_rate, 4)
        if self.weights:
            out["weights"] = self.weights
        if self.excluded:
            return out | {"excluded": self.excluded}
        return out | {
            "seconds_per_example": round(self.seconds_per_example, 5),
            "epochs": self.epochs,
            "max_train": self.max_train,
            "planned_seconds": round(self.planned_seconds, 1),
        }


def candidate_models() -> list[tuple[str, bool]]:
    """Registered text classifiers that ``auto`` may pick: ``(name, pretrained)``, the model
    trained from scratch first. The BiLSTM is left out: it trails the encoder on every bundled set."""
    load_plugins()  # installed packages' text models are candidates too
    found = [(SCRATCH_MODEL, False)]
    for name, (config_cls, _) in sorted(MODELS.items()):
        if name == SCRATCH_MODEL or not issubclass(config_cls, ClassifierConfig):
            continue
        try:
            pretrained = config_from_dict({"model_type": name}).fine_tunes
        except (ValueError, OSError):  # a model whose defaults cannot be built here
            continue
        if pretrained:
            found.append((name, True))
    return found


def _explicit(args: TrainingArgs | dict[str, Any] | None) -> dict[str, Any]:
    """The training options the user chose: a dict's keys, or a TrainingArgs' fields that differ from the defaults."""
    if args is None:
        return {}
    if isinstance(args, dict):
        TrainingArgs.from_dict(dict(args))  # checks names and values at once
        return dict(args)
    return explicit_options(args)


def _bounded_epochs(passes: int, n_train: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], math.ceil(passes / max(1, n_train))))


def _candidate_args(candidate: _Candidate, explicit: dict[str, Any], n_train: int, bf16: bool) -> dict[str, Any]:
    """Training options for one candidate: the user's, over settings fit for the data size."""
    if candidate.pretrained:
        fitted: dict[str, Any] = {"epochs": _bounded_epochs(PRETRAINED_PASSES, n_train, PRETRAINED_EPOCHS),
                                  "patience": 2}  # fmt: skip
        if bf16:
            fitted["precision"] = "bf16"
    else:
        fitted = {"epochs": _bounded_epochs(SCRATCH_PASSES, n_train, SCRATCH_EPOCHS), "patience": 3}
    return fitted | explicit


def _network(task: ClassificationTask, seed: int) -> torch.nn.Module:
    """The candidate's network as training starts it (pretrained weights loaded, if any)."""
    torch.manual_seed(seed)
    network = build(task.model_config())
    task.init_model(network)
    return network


def _probe(task: ClassificationTask, args: TrainingArgs, network: torch.nn.Module) -> float:
    """Seconds per training example of ``network`` (which the timed steps change): the median of
    :data:`PROBE_STEPS` timed steps (real texts, the real loss and optimiser), after one untimed
    warm-up step, on batches of the run's first epoch whose padded size is nearest the epoch's
    mean: a step costs about a fixed part plus a part per padded token, so such a batch costs
    what the average step does, while a random draw could be a batch of the shortest or the
    longest texts, which length grouping makes common."""
    network.train()
    optimiser = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-6)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    lengths = task.lengths()
    batches = epoch_batches(task.train_size, args, 0, lengths=lengths if args.group_by_length else None)
    padded = np.array([len(batch) * max(lengths[i] for i in batch) for batch in batches], dtype=np.float64)
    full = [i for i, batch in enumerate(batches) if len(batch) == len(batches[0])] or list(range(len(batches)))
    typical = sorted(full, key=lambda i: abs(padded[i] - padded.mean()))[: PROBE_STEPS + 1]
    typical = (typical * (PROBE_STEPS + 1))[: PROBE_STEPS + 1]  # a split of fewer batches repeats them
    times = []
    for step, chosen in enumerate(typical):
        indices = batches[chosen]
        start = time.perf_counter()
        batch = task.train_batch(indices)
        with autocast:
            loss = task.loss(network, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step:
            times.append((time.perf_counter() - start) / len(indices))
    del optimiser
    return statistics.median(times) if times else 0.0


def _plan(candidates: list[_Candidate], sizes: dict[str, int], budget_s: float) -> None:
    """Epochs (and a training sample, if need be) for each candidate so that all fit ``budget_s``."""
    n_train, n_dev, n_test = sizes["train"], sizes["dev"], sizes["test"]

    def seconds(c: _Candidate, epochs: int, train: int) -> float:
        per_epoch = train * c.seconds_per_example + n_dev * c.seconds_per_example * EVAL_COST
        return epochs * per_epoch + n_test * c.seconds_per_example * EVAL_COST

    active = sorted((c for c in candidates if not c.excluded), key=lambda c: seconds(c, c.epochs, n_train))
    left = budget_s
    for rank, c in enumerate(active):
        wanted = seconds(c, c.epochs, n_train)
        share = left / (len(active) - rank)  # an equal share of what is left; the cheaper ones go first
        if wanted <= share:
            c.planned_seconds = wanted
            left -= wanted
            continue
        per_epoch = seconds(c, 1, n_train) - n_test * c.seconds_per_example * EVAL_COST
        fit = int((share - n_test * c.seconds_per_example * EVAL_COST) // per_epoch)
        if fit >= 1:
            c.epochs = min(c.epochs, fit)
        else:
            evaluation = (n_dev + n_test) * c.seconds_per_example * EVAL_COST
            train = int((share - evaluation) / c.seconds_per_example)
            if train < MIN_TRAIN_EXAMPLES:
                c.excluded = (f"the time budget leaves it {share / 60:.1f} min, not enough for "
                              f"{MIN_TRAIN_EXAMPLES} training examples")  # fmt: skip
                continue
            c.epochs, c.max_train = 1, min(train, n_train)
        c.planned_seconds = seconds(c, c.epochs, c.max_train or n_train)
        # The plan counts whole epochs; the loop may go further. Its own time budget
        # (:func:`_loop_budget`) keeps the epochs that fit what is really left, the last possibly
        # cut, so a candidate given all the time that remains trains the steps of one more epoch
        # that fit instead of leaving them unused. A training sample is one pass, as planned.
        c.args["epochs"] = c.epochs if c.max_train else c.wanted_epochs or c.epochs
        left -= c.planned_seconds


def _best_dev(result: TrainResult, selection: str) -> dict[str, Any]:
    """The dev figures of the weights the run kept: its last improving epoch, or the checkpoint
    average when that was kept instead."""
    kept = [record for record in result.history if record.get("best") and f"dev_{selection}" in record]
    if not kept:
        return {}
    figures = {key: kept[-1].get(key) for key in (f"dev_{selection}", "dev_accuracy", "dev_loss")}
    figures["best_epoch"] = kept[-1].get("epoch")
    average = result.metrics.get("checkpoint_average")
    if isinstance(average, dict) and average.get("kept"):
        figures[f"dev_{selection}"] = average[f"dev_{selection}"]
    return figures


def _tagged(on_epoch: Callable[[dict[str, Any]], None], name: str, record: dict[str, Any]) -> None:
    on_epoch({**record, "model": name})


def _identity_changes(then: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between two runs' identities, as ``name=new (the interrupted run had old)``."""
    flat_then = {**{k: v for k, v in then.items() if k != "explicit"}, **(then.get("explicit") or {})}
    flat_now = {**{k: v for k, v in now.items() if k != "explicit"}, **(now.get("explicit") or {})}
    changes = []
    for key in sorted(set(flat_then) | set(flat_now)):
        if key not in flat_now:
            changes.append(f"{key} left out (the interrupted run had {key}={flat_then[key]!r})")
        elif key not in flat_then:
            changes.append(f"{key}={flat_now[key]!r} (not given to the interrupted run)")
        elif comparable(flat_then[key]) != comparable(flat_now[key]):
            # the budget is always set: a command without --time-budget had been said to give 20.0
            default = "the default; " if key == "time_budget" and flat_now[key] == DEFAULT_TIME_BUDGET else ""
            changes.append(f"{key}={flat_now[key]!r} ({default}the interrupted run had {flat_then[key]!r})")
    return "; ".join(changes)


def _refuse_an_interrupted_run(out: Path, work: Path, overwrite: bool) -> None:
    """Refuse to start over an interrupted run writing ``out`` without ``overwrite``: an auto run's
    state (``work``), or a named model's (``.OUT.training``), as a named model's own run refuses them.
    An auto run without --resume had discarded both without a word."""
    named = state_directory(out)
    if overwrite:  # what it says it discards: the named run's state too (a later --resume had found it)
        shutil.rmtree(named, ignore_errors=True)
        return
    for state, what in ((work, "a --model auto run"), (named, "a run of a named model")):
        held = state / "auto.json" if state == work else state / "run.json"
        if held.is_file() and (state == work or has_checkpoint(state)):
            resume = "--resume (resume=True from Python) to continue it, or " if state == work else ""
            raise DataError(f"{out}: {what} was interrupted writing it (its state is in {state}): add {resume}"
                            "--overwrite (overwrite=True) to discard it and start again")  # fmt: skip


def _work_directory(out: Path) -> Path:
    out = output_path(out)  # a symbolic link: beside its target, which the run writes
    return out.with_name(f".{out.name}.auto")


def train_auto(
    data: str | os.PathLike[str] | LabelledTexts,
    out: str | os.PathLike[str],
    *,
    args: TrainingArgs | dict[str, Any] | None = None,
    time_budget: float = DEFAULT_TIME_BUDGET,
    resume: bool = False,
    overwrite: bool = False,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    multi_label: bool = False,
    label_sep: str | None = None,
    candidates: list[str] | None = None,
    ensemble: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the candidates, keep the one with the best dev score; the body of ``attend train --model auto``.

    Args:
        data: A data file, a bundled dataset name, or loaded texts.
        out: Model directory to write (the winner's).
        args: Training options. A dict holds only what the user chose; for a
            :class:`TrainingArgs`, the fields that differ from the defaults count as chosen. Chosen
            options apply to every candidate; the rest are fitted to the data size.
        time_budget: Minutes for training every candidate together. Not a hard stop: each
            candidate trains at least one epoch (or one over a sample), and the report says how
            long it really took.
        resume: Continue the interrupted auto run that was writing ``out``.
        overwrite: Replace a model already in ``out``.
        candidates: Restrict the choice to these registered models (default: every candidate).
        ensemble: Let the trained candidates' ensemble enter the dev comparison (step 5 above).
        on_epoch: Called with each epoch's log record, with a ``model`` key naming the candidate.
        log: Where the plan and the choice are said (default: standard error).

    Returns:
        The winner's :class:`TrainResult`; its ``metrics["auto"]`` and ``report`` say what was
        picked and why.
    """
    if resume and not (_work_directory(link_target(out)) / "auto.json").is_file():
        # said first: under torchrun, `--resume` of a finished or absent run had been told to name a --model
        raise nothing_to_resume(link_target(out))
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ValueError("--model auto times its candidates on this process alone; under torchrun name a --model")
    if not time_budget > 0:
        raise ValueError(f"time_budget={time_budget!r} must be > 0 minutes")
    if isinstance(candidates, str):  # "minilm" had been read letter by letter: "m named more than once"
        raise TypeError(f"candidates={candidates!r}: give a list of model names, e.g. [{candidates!r}]")
    twice = sorted({name for name in candidates or [] if list(candidates or []).count(name) > 1})
    if twice:  # trained once, and recorded twice: a resume naming it once had been another command line
        raise ValueError(f"candidates={list(candidates or [])}: {', '.join(twice)} named more than once; name each "
                         "model once")  # fmt: skip
    out = link_target(out)  # a link: its target is written
    lock = OutputLock(out)  # one run writes `out` at a time, candidates and all
    try:
        return _train_auto(data, out, args=args, time_budget=time_budget, resume=resume, overwrite=overwrite,
                           columns={"text_col": text_col, "label_col": label_col, "split_col": split_col,
                                    "multi_label": multi_label, "label_sep": label_sep},
                           candidates=candidates, ensemble=ensemble, on_epoch=on_epoch, log=log)  # fmt: skip
    finally:
        lock.release()


def _train_auto(
    data: str | os.PathLike[str] | LabelledTexts,
    out: Path,
    *,
    args: TrainingArgs | dict[str, Any] | None,
    time_budget: float,
    resume: bool,
    overwrite: bool,
    columns: dict[str, Any],
    candidates: list[str] | None,
    ensemble: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    log: Callable[[str], None] | None,
) -> TrainResult:
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    explicit = _explicit(args)
    work = _work_directory(out)
    # What makes a run the same run: not how it shows progress, its threads or where it was stopped.
    chosen = {key: value for key, value in explicit.items() if key not in RESUME_MAY_CHANGE}
    identity = {"explicit": chosen, "time_budget": time_budget, "candidates": candidates, "columns": columns,
                "data": comparable(data.source if isinstance(data, LabelledTexts) else str(data)),
                "ensemble": ensemble}  # fmt: skip
    if resume:
        try:
            state = json.loads((work / "auto.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise nothing_to_resume(out) from None
        now = json.loads(json.dumps(identity))
        if comparable(state.get("identity")) != comparable(now):
            raise DataError(f"{out}: --resume of a --model auto run takes the command line it was started with; "
                            f"this one differs: {_identity_changes(state.get('identity') or {}, now)}")  # fmt: skip
        overwrite = overwrite or bool(state.get("overwrite"))  # given now: a model that appeared meanwhile goes
        plan = [_Candidate(**c) for c in state["plan"]]
        for candidate in plan:  # this run's own progress, threads and stopping point
            candidate.args = {k: v for k, v in candidate.args.items() if k not in RESUME_MAY_CHANGE}
            candidate.args |= {k: v for k, v in explicit.items() if k in RESUME_MAY_CHANGE}
        check_output_directory(out.absolute(), overwrite=overwrite)
        say(f"auto: resuming; {', '.join(state.get('results', {})) or 'no candidate'} finished")
    else:
        check_output_directory(out.absolute(), overwrite=overwrite)
        _refuse_an_interrupted_run(out, work, overwrite)
        shutil.rmtree(work, ignore_errors=True)
        state = {"identity": identity, "overwrite": overwrite, "plan": [], "results": {}}
        plan, state["dev_baseline"], state["sizes"] = _make_plan(data, explicit, time_budget, candidates, columns,
                                                                 say)  # fmt: skip
        state["plan"] = [dataclasses.asdict(c) for c in plan]
        work.mkdir(parents=True)
        atomic_write_json(work / "auto.json", state)

    results: dict[str, dict[str, Any]] = state["results"]
    outcomes: dict[str, TrainResult] = {}
    started = time.perf_counter()
    for candidate in plan:
        if candidate.excluded or candidate.name in results:
            continue
        directory = work / candidate.name
        resuming = resume and (directory.parent / f".{directory.name}.training" / "run.json").is_file()
        budget_s = time_budget * 60 - float(state.get("lost_seconds", 0.0))  # less what diverged runs spent
        if (results or state.get("lost_seconds")) and not resuming and "sizes" in state:
            left = _seconds_left(results, budget_s)
            for changed in _replan(plan, results, state["sizes"], left):
                say(f"auto: {changed.name} re-planned for the {max(0.0, left) / 60:.1f} min left: "
                    + (changed.excluded or _planned(changed)))  # fmt: skip
            state["plan"] = [dataclasses.asdict(c) for c in plan]
            atomic_write_json(work / "auto.json", state)
            if candidate.excluded:
                continue
        if not resuming and "sizes" in state:
            candidate.args["time_budget"] = _loop_budget(plan, candidate, results, state["sizes"], budget_s,
                                                         ensemble)  # fmt: skip
            state["plan"] = [dataclasses.asdict(c) for c in plan]
            atomic_write_json(work / "auto.json", state)
        say(f"auto: training {candidate.name} ({_planned(candidate)})")
        task = ClassificationTask(data, model=candidate.name, max_train=candidate.max_train, **columns)
        callback = None
        if on_epoch is not None:
            callback = functools.partial(_tagged, on_epoch, candidate.name)
        begin = time.perf_counter()
        # What the candidate spent before an interruption counts with what it spends after --resume
        # (its minutes in the report and metrics.json had been the resumed part's alone).
        spent = state.setdefault("interrupted_seconds", {})
        before = float(spent.get(candidate.name, 0.0)) if resuming else 0.0
        try:
            result = Trainer(task, TrainingArgs.from_dict(candidate.args), on_epoch=callback).fit(
                directory, resume=resuming, overwrite=True
            )
        except TrainingInterrupted:
            spent[candidate.name] = round(before + time.perf_counter() - begin, 1)
            atomic_write_json(work / "auto.json", state)
            raise
        except TrainingDiverged as exc:  # the other candidates can still give a model
            candidate.excluded = f"its training diverged: {exc}"
            say(f"auto: {candidate.name} left out: {candidate.excluded}")
            state["lost_seconds"] = float(state.get("lost_seconds", 0.0)) + before + time.perf_counter() - begin
            state["plan"] = [dataclasses.asdict(c) for c in plan]
            atomic_write_json(work / "auto.json", state)
            continue
        outcomes[candidate.name] = result
        if ensemble:
            _save_probabilities(task, directory, TrainingArgs.from_dict(candidate.args),
                                work / f"{candidate.name}.probabilities.npz")  # fmt: skip
        figures = _best_dev(result, task.selection)
        tested = result.metrics.get("split") == "test"  # without test rows these are the dev figures again
        results[candidate.name] = {
            **figures,
            "test_accuracy": result.metrics.get("accuracy") if tested else None,
            "test_macro_f1": result.metrics.get("macro_f1") if tested else None,
            "split": result.metrics.get("split"),
            "epochs_run": result.metrics.get("epochs_run"),  # the plan's, less early stopping and re-plans
            "seconds": round(before + time.perf_counter() - begin, 1),
            "report": result.report,
        }
        atomic_write_json(work / "auto.json", state)
    if not results:  # nothing to resume: its state goes (a --resume had found it, and failed again)
        shutil.rmtree(work, ignore_errors=True)
        raise DataError(f"{out}: no candidate model could be trained ({_exclusions(plan)})")

    selection = "dev_macro_f1"
    ranked = sorted(results, key=lambda name: (results[name].get(selection) or 0.0,
                                               results[name].get("dev_accuracy") or 0.0,
                                               name == SCRATCH_MODEL), reverse=True)  # fmt: skip
    together = _ensemble_figures(ranked, work) if ensemble and len(ranked) > 1 else None
    if together is not None and together["dev"]["macro_f1"] > (results[ranked[0]].get(selection) or 0.0):
        winner = ENSEMBLE
        why = _ensemble_reason(ranked, results, together, plan, selection, state.get("dev_baseline"))
    else:
        winner = ranked[0]
        why = _reason(winner, ranked, results, plan, selection, state.get("dev_baseline"))
        if together is not None:
            why += (f"; the ensemble of {' and '.join(ranked)} scored {together['dev']['macro_f1']:.4f} on dev, "
                    "not above the best single model")  # fmt: skip
    candidates_record = {
        c.name: c.record() | {k: v for k, v in results.get(c.name, {}).items() if k != "report"} for c in plan
    }
    if together is not None:
        candidates_record[ENSEMBLE] = _ensemble_record(ranked, together)
    record = {
        "picked": winner,
        "why": why,
        "selection": selection,
        "time_budget_minutes": time_budget,
        "seconds": round(sum(r["seconds"] for r in results.values()), 1),
        "candidates": candidates_record,
        "dev_baseline": state.get("dev_baseline"),
    }
    if winner == ENSEMBLE:
        assert together is not None
        metrics = _publish_ensemble(ranked, work, out, together, record, overwrite=overwrite)
        source = data.source if isinstance(data, LabelledTexts) else str(data)  # as given (identity's is resolved)
        # The notes of the data (small splits, copies, texts cut) as the best member's report gave them,
        # and the ensemble's own labels never predicted right (they had all been left out)
        notes = [line for line in str(results[ranked[0]].get("report", "")).splitlines()
                 if line.startswith("note: ") and "never predicted right" not in line]  # fmt: skip
        notes += [f"note: {line}" for line in never_right(metrics, metrics["split"])]
        report = "\n".join([classification_report(metrics, metrics["split"], source), *notes]) + "\n\n" + \
            _table(record)  # fmt: skip
        history: list[dict[str, Any]] = []
    else:
        winner_dir = work / winner
        config_file = winner_dir / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["auto"] = record
        atomic_write_json(config_file, config)
        metrics = update_metrics(winner_dir, "auto", record)
        try:  # checked again: a model may have been put there while the candidates trained
            check_output_directory(out.absolute(), overwrite=overwrite)
        except ModelDirError as exc:
            raise appeared_meanwhile(exc, f"the trained candidates are kept in {work}") from None
        publish_directory(winner_dir, out.absolute())
        report = results[winner]["report"] + "\n\n" + _table(record)
        history = outcomes[winner].history if winner in outcomes else []
    shutil.rmtree(work, ignore_errors=True)
    # The reason opens the report's table (stdout): here only what it cost, not the paragraph again.
    # ... and against the budget, so an overrun is said (a candidate trains at least one epoch).
    total = (sum(float(r.get("seconds") or 0.0) for r in results.values()) + float(state.get("lost_seconds", 0.0))) / 60
    over = f": over by {total - time_budget:.1f} min" if total - time_budget >= 0.05 else ""
    say(f"auto: picked {winner} ({(time.perf_counter() - started) / 60:.1f} min of training this run; the "
        f"candidates' {total:.1f} min against a budget of {round(time_budget, 2):g}{over})")
    return TrainResult(model_dir=out, metrics=metrics, history=history, report=report)


def _save_probabilities(task: ClassificationTask, directory: Path, args: TrainingArgs, path: Path) -> None:
    """The probabilities a trained candidate's kept weights give on the dev and test splits (and the
    targets), saved beside the run so that a resumed run still has every finished candidate's."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    network = build(config["model"])  # every weight is then the kept one
    network.load_state_dict(load_file(str(directory / "model.safetensors")))
    arrays: dict[str, np.ndarray] = {"labels": np.array(task.labels), "multi_label": np.array(task.multi_label)}
    for split in ("dev", "test"):
        if split in task.splits():
            arrays[split] = task.probabilities(network, split, args.batch_size)
            arrays[f"{split}_targets"] = task.encoded[split].targets.numpy()
    staging = path.with_name(path.name + ".partial.npz")
    np.savez(staging, **arrays)
    os.replace(staging, path)


def _ensemble_figures(names: list[str], work: Path) -> dict[str, Any] | None:
    """Dev (and test) metrics of the mean of ``names``' probabilities; None when their saved
    probabilities are missing or do not line up (other labels or rows)."""
    loaded = []
    for name in names:
        file = work / f"{name}.probabilities.npz"
        if not file.is_file():
            return None
        with np.load(file, allow_pickle=False) as arrays:
            loaded.append({key: arrays[key] for key in arrays.files})
    first = loaded[0]
    labels, multi_label = [str(x) for x in first["labels"]], bool(first["multi_label"])
    for other in loaded[1:]:
        if [str(x) for x in other["labels"]] != labels or set(other) != set(first):
            return None
        if any(not np.array_equal(other[key], first[key]) for key in first if key.endswith("_targets")):
            return None
    if "dev" not in first:
        return None
    figures: dict[str, Any] = {"labels": labels, "multi_label": multi_label}
    for split in ("dev", "test"):
        if split in first:
            mean = np.mean([arrays[split].astype(np.float64) for arrays in loaded], axis=0)
            targets = torch.from_numpy(first[f"{split}_targets"])
            figures[split] = probability_metrics(mean, targets, labels, multi_label)
    return figures


def _ensemble_record(members: list[str], figures: dict[str, Any]) -> dict[str, Any]:
    test = figures.get("test", {})
    return {"members": list(members), "dev_macro_f1": figures["dev"]["macro_f1"],
            "dev_accuracy": figures["dev"]["accuracy"], "test_accuracy": test.get("accuracy"),
            "test_macro_f1": test.get("macro_f1")}  # fmt: skip


def _ensemble_reason(ranked: list[str], results: dict[str, dict[str, Any]], figures: dict[str, Any],
                     plan: list[_Candidate], selection: str, baseline: dict[str, float] | None) -> str:  # fmt: skip
    metric = selection.removeprefix("dev_")
    singles = _scores(ranked, results, selection)
    text = (f"picked the ensemble of {' and '.join(ranked)} (the mean of their probabilities): the best dev {metric}, "
            f"{figures['dev']['macro_f1']:.4f} against the single models' {singles}")  # fmt: skip
    if baseline:
        text += f" and TF-IDF + logistic regression's {baseline[selection]:.4f}"
    text += f"; it runs all {len(ranked)} models (--no-ensemble keeps the best single one)"
    return text + _left_out(plan)


def _publish_ensemble(members: list[str], work: Path, out: Path, figures: dict[str, Any], record: dict[str, Any],
                      *, overwrite: bool) -> dict[str, Any]:  # fmt: skip
    """Write the candidates' ensemble to ``out``; return its metrics: its figures on the split the
    members were scored on (test, or dev where the data has no test split), the TF-IDF baseline's
    on the same split, and the auto record."""
    first = json.loads((work / members[0] / "metrics.json").read_text(encoding="utf-8"))
    split = "test" if "test" in figures else "dev"
    metrics: dict[str, Any] = {**figures[split], "split": split}
    if isinstance(first.get("baseline"), dict) and first.get("split") == split:
        metrics["baseline"] = first["baseline"]
    metrics["auto"] = record
    entries = []
    for name in members:
        config = json.loads((work / name / "config.json").read_text(encoding="utf-8"))
        entries.append(EnsembleMember(path=work / name, weight=1.0, labels=figures["labels"],
                                      model_type=str(config["model"].get("model_type", name)),
                                      source=f"auto:{name}"))  # fmt: skip
    write_ensemble(entries, out.absolute(), multi_label=figures["multi_label"], overwrite=overwrite,
                   config={"attend_version": __version__, "auto": record}, metrics=metrics, logs=True)  # fmt: skip
    return metrics


def _make_plan(
    data: str | os.PathLike[str] | LabelledTexts,
    explicit: dict[str, Any],
    time_budget: float,
    names: list[str] | None,
    columns: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[list[_Candidate], dict[str, float] | None, dict[str, int]]:
    """Candidates with their settings and plan, the TF-IDF baseline's dev figures (for the report)
    and the split's sizes."""
    available = candidate_models()
    if names is not None:
        unknown = sorted(set(names) - {name for name, _ in available})
        if unknown:
            raise ValueError(f"candidates {unknown} are not text classifiers auto can train; "
                             f"choose from {[name for name, _ in available]}")  # fmt: skip
        available = [(name, pretrained) for name, pretrained in available if name in names]
    base = TrainingArgs.from_dict(dict(explicit))
    dataset = data if isinstance(data, LabelledTexts) else load_labelled(data, **columns, training=True)
    train_idx, dev_idx, test_idx = stratified_split(dataset, seed=base.seed, dev_fraction=base.dev_fraction,
                                                    test_fraction=base.test_fraction)  # fmt: skip
    sizes = {"train": len(train_idx), "dev": len(dev_idx), "test": len(test_idx)}
    if not dev_idx:
        raise DataError(f"{dataset.source}: --model auto compares its candidates on a dev split, and this data has "
                        "none (its split column assigns no row to 'dev'); add dev rows or name a --model")  # fmt: skip
    bf16 = native_bf16()
    dev_baseline = None
    if dev_idx:  # one logistic regression per label for multi-label data, as the training report's
        multi = reads_multi_label(dataset, columns.get("multi_label", False), columns.get("label_sep"))
        texts, labels = dataset.texts, dataset.labels if multi else [row[0] for row in dataset.labels]
        found = tfidf_baseline([texts[i] for i in train_idx], [labels[i] for i in train_idx],
                               [texts[i] for i in dev_idx], [labels[i] for i in dev_idx],
                               multi_label=multi)  # fmt: skip
        if found is not None:
            dev_baseline = {"dev_accuracy": found["accuracy"], "dev_macro_f1": found["macro_f1"]}
    rng = np.random.default_rng(base.seed)
    sample = [dataset.texts[i] for i in rng.permutation(train_idx)[:UNKNOWN_SAMPLE]]
    plan: list[_Candidate] = []
    threads = torch.get_num_threads()
    if base.threads:
        torch.set_num_threads(base.threads)
    tasks: dict[str, ClassificationTask] = {}
    networks: dict[str, torch.nn.Module] = {}  # built once: weights per token, then the timed steps
    try:
        for name, pretrained in available:
            candidate = _Candidate(name=name, pretrained=pretrained)
            candidate.args = _candidate_args(candidate, explicit, sizes["train"], bf16)
            candidate.epochs = candidate.wanted_epochs = int(candidate.args["epochs"])
            plan.append(candidate)
        # Pretrained ones smallest first: one that could at best tie a smaller one that reads every
        # token is left out before its weights are fetched (e5's 91 MB had been fetched, and on a
        # machine offline retried for seconds, for English data, to be left out for MiniLM).
        for candidate in sorted(plan, key=lambda c: (c.pretrained, _estimated_weights(c.name) or 0)):
            name, pretrained = candidate.name, candidate.pretrained
            terms = MODELS[name][0].use_terms
            if terms and names is None:  # the user must choose restricted weights, never auto alone
                # said first: a smaller reader's coverage had been given as the reason on English data
                candidate.excluded = f"{terms}; name it in --candidates to let auto train it"
                continue
            if pretrained and (reason := _no_better_reader(plan, candidate.name)):
                candidate.excluded = reason
                continue
            task = ClassificationTask(dataset, model=name, **columns)
            try:
                task.prepare(TrainingArgs.from_dict(dict(candidate.args)), None)
            except (OSError, RuntimeError, ImportError) as exc:  # pretrained weights missing
                candidate.excluded = f"cannot be built here: {exc}"
                continue
            except CaseBlind:  # a cased candidate can still learn from --augment casing
                candidate.excluded = "its tokenizer lowercases, so --augment casing would change nothing it reads"
                continue
            if pretrained:
                candidate.unknown_rate = task.tokenizer.unknown_rate(sample)
                if candidate.unknown_rate is not None and candidate.unknown_rate > MAX_UNKNOWN_RATE:
                    candidate.excluded = (f"its vocabulary cannot read {candidate.unknown_rate:.0%} of the training "
                                          f"tokens (limit {MAX_UNKNOWN_RATE:.0%})")  # fmt: skip
                    continue
            tasks[name] = task
            networks[name] = _network(task, TrainingArgs.from_dict(dict(candidate.args)).seed)
            if pretrained:
                candidate.weights = _weights_per_token(networks[name])
        _keep_one_pretrained(plan)
        for candidate in plan:
            network = networks.pop(candidate.name, None)
            if not candidate.excluded and network is not None:
                say(f"auto: timing {candidate.name} on a few training batches")
                args = TrainingArgs.from_dict(dict(candidate.args))
                candidate.seconds_per_example = _probe(tasks[candidate.name], args, network)
            del network
            gc.collect()
    finally:
        torch.set_num_threads(threads)
    _plan(plan, sizes, time_budget * 60)
    for c in plan:
        if c.excluded:
            say(f"auto: {c.name} left out: {c.excluded}")
        else:
            say(f"auto: {c.name}: {c.seconds_per_example * 1000:.1f} ms per training example "
                f"({c.args.get('precision', 'fp32')}), {_planned(c)}")  # fmt: skip
    return plan, dev_baseline, sizes


def _replan(plan: list[_Candidate], finished: dict[str, Any], sizes: dict[str, int],
            left_s: float) -> list[_Candidate]:  # fmt: skip
    """Plan the candidates still to train again, over what the finished ones really left of the
    budget (the first plan could only estimate them: early stopping, a timing that missed);
    return those whose plan changed."""
    waiting = [c for c in plan if not c.excluded and c.name not in finished]
    before = {c.name: (c.epochs, c.max_train) for c in waiting}
    for c in waiting:
        c.epochs, c.max_train, c.planned_seconds = c.wanted_epochs or c.epochs, 0, 0.0
        c.args["epochs"] = c.epochs
    _plan(waiting, sizes, max(0.0, left_s))
    return [c for c in waiting if c.excluded or before[c.name] != (c.epochs, c.max_train)]


def _planned(c: _Candidate) -> str:
    """A candidate's plan as the log gives it: its epochs (or sample) and minutes."""
    most = int(c.args.get("epochs", c.epochs))
    more = f" (up to {most}, if its loop finds the time)" if most > c.epochs and not c.max_train else ""
    sample = f" on a {c.max_train}-example sample" if c.max_train else ""
    return f"{c.epochs} epoch(s){more}{sample}, planned {c.planned_seconds / 60:.1f} min"


def _seconds_left(finished: dict[str, Any], budget_s: float) -> float:
    """What the finished candidates (their measured ``seconds``) left of ``budget_s``; may be negative."""
    return budget_s - sum(float(r.get("seconds") or 0.0) for r in finished.values())


def _loop_budget(plan: list[_Candidate], candidate: _Candidate, finished: dict[str, Any], sizes: dict[str, int],
                 budget_s: float, ensemble: bool = True) -> float:  # fmt: skip
    """Minutes for ``candidate``'s training loop (:attr:`TrainingArgs.time_budget`): what the
    finished candidates left of the budget, less the plans of those still to train after it and
    the scoring that follows the loop: the Trainer's of the test split, and with ``ensemble`` the
    dev and test probabilities kept for the ensemble step (``--no-ensemble`` spends that time training).

    The plan times three steps; the Trainer times its first
    :data:`~attend.training.trainer.BUDGET_PROBE_STEPS` steps and a dev evaluation, and keeps the
    epochs that fit this share (at least one whole one; the last possibly cut). So a candidate that runs slower than its
    three steps said trains fewer epochs instead of overrunning the budget
    (e5 on the Chinese reviews: planned 17.2 min for 2 epochs, took 21.7).
    """
    left = _seconds_left(finished, budget_s)
    later = sum(c.planned_seconds for c in plan if not c.excluded and c.name not in finished and c is not candidate)
    scored = sizes["test"] + (sizes["dev"] + sizes["test"] if ensemble else 0)
    scoring = scored * candidate.seconds_per_example * EVAL_COST
    # TrainingArgs reads 0 as "no budget": a share already spent gets a token one millisecond, so one epoch.
    return max(0.001, left - later - scoring) / 60


def _weights_per_token(network: torch.nn.Module) -> int:
    """Weights a token passes through (the parameters outside embedding tables): what a step costs."""
    embedded = sum(p.numel() for m in network.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    return int(sum(p.numel() for p in network.parameters()) - embedded)


def _estimated_weights(name: str) -> int | None:
    """Weights per token of a pretrained BERT candidate from its checkpoint's shape, fetching nothing
    (its attention and feed-forward matrices: biases and norms left out); None where it has no shape."""
    try:
        bert = getattr(config_from_dict({"model_type": name}), "checkpoint_bert_config", lambda: None)()
    except (ValueError, OSError):
        return None
    if bert is None:
        return None
    return bert.num_layers * (4 * bert.hidden_size**2 + 2 * bert.hidden_size * bert.intermediate_size)


def _no_better_reader(plan: list[_Candidate], name: str) -> str | None:
    """Why pretrained candidate ``name`` need not be built: a smaller pretrained one already reads every
    training token (0% unknown, to the nearest percent), so ``name`` could at best tie it on that and
    lose on size (as :func:`_keep_one_pretrained` would decide once it were built); else None."""
    estimate = _estimated_weights(name)
    if estimate is None:
        return None
    for best in plan:
        if (best.pretrained and not best.excluded and best.weights and best.unknown_rate is not None
                and round(best.unknown_rate, 2) == 0 and best.weights <= estimate):  # fmt: skip
            return (f"{best.name} reads every token of the data ({best.unknown_rate:.1%} unknown) with "
                    f"{best.weights / 1e6:.1f}M weights per token against about {estimate / 1e6:.1f}M, so it was not "
                    f"built; name it with --model, or without {best.name} in --candidates, to train it")  # fmt: skip
    return None


def _keep_one_pretrained(plan: list[_Candidate]) -> None:
    """Of the pretrained candidates that read the data, keep the one that reads it best (unknown-token
    rate to the nearest percent), the smaller (fewer weights per token, so faster) on a tie: a second
    one would take budget from every candidate for a difference the dev split could rarely tell apart."""
    readers = [c for c in plan if c.pretrained and not c.excluded]
    if len(readers) < 2:
        return
    best = min(readers, key=lambda c: (round(c.unknown_rate or 0.0, 2), c.weights))
    for c in readers:
        if c is not best:
            c.excluded = (f"{best.name} reads the data as well or better ({(best.unknown_rate or 0):.1%} unknown "
                          f"tokens against {(c.unknown_rate or 0):.1%}) with {best.weights / 1e6:.1f}M weights per "
                          f"token against {c.weights / 1e6:.1f}M; name it with --model, or without {best.name} in "
                          "--candidates, to train it")  # fmt: skip


def _exclusions(plan: list[_Candidate]) -> str:
    return "; ".join(f"{c.name}: {c.excluded}" for c in plan if c.excluded) or "none was planned"


def _reason(winner: str, ranked: list[str], results: dict[str, dict[str, Any]], plan: list[_Candidate],
            selection: str, baseline: dict[str, float] | None) -> str:  # fmt: skip
    metric = selection.removeprefix("dev_")
    tied = len(ranked) > 1 and results[ranked[1]].get(selection) == results[winner].get(selection)
    how = "tied for the best dev" if tied else "the best dev"
    text = f"picked {winner}: {how} {metric} of the candidates ({_scores(ranked, results, selection)}"
    if baseline:
        text += f"; TF-IDF + logistic regression {baseline[selection]:.4f}"
    text += ")"
    if tied:
        text += "; on a tie the higher dev accuracy, then the model trained from scratch (the cheaper to run)"
    return text + _left_out(plan)


def _scores(ranked: list[str], results: dict[str, dict[str, Any]], selection: str) -> str:
    return ", ".join(f"{name} {results[name].get(selection) or 0.0:.4f}" for name in ranked)


def _left_out(plan: list[_Candidate]) -> str:
    left_out = [f"{c.name} ({c.excluded})" for c in plan if c.excluded]
    return "; left out: " + "; ".join(left_out) if left_out else ""


def _table(record: dict[str, Any]) -> str:
    lines = [f"auto: {record['why']}", "candidate          dev macro-F1  dev acc   test acc  minutes  plan"]
    for name, row in record["candidates"].items():
        if "excluded" in row:
            lines.append(f"{name:<18} left out: {row['excluded']}")
            continue
        if name == ENSEMBLE:
            minutes, plan = "", f"mean of {' + '.join(row['members'])}"
        else:
            minutes = f"{(row.get('seconds') or 0) / 60:.1f}"
            run = row.get("epochs_run")  # the table had given the first plan as what trained
            if isinstance(run, int) and run != row["epochs"]:  # a loop may run past the plan's whole epochs
                plan = (f"{run} of {row['epochs']} planned epoch(s) run" if run < row["epochs"] else
                        f"{run} epoch(s) run, {row['epochs']} planned (its loop found the time)")  # fmt: skip
            else:
                plan = f"{row['epochs']} epoch(s)"
            plan += f", {row['max_train']}-example sample" if row["max_train"] else ""
        dev_f1, dev_acc, test_acc = (row.get(k) for k in ("dev_macro_f1", "dev_accuracy", "test_accuracy"))
        lines.append(f"{name:<18} {_fmt(dev_f1):>12}  {_fmt(dev_acc):>7}  {_fmt(test_acc):>8}  {minutes:>7}  {plan}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"
