"""The one training loop: :class:`Trainer` fits any :class:`~attend.training.tasks.Task`.

It owns everything generic: AdamW with warm-up and decay, gradient clipping, the model's auxiliary
losses, early stopping on the task's selection metric, seeded batches that a resumed run replays
exactly, checkpoints (safetensors + JSON), a progress bar with an ETA, TensorBoard and a JSON log
line per epoch, and distributed data-parallel when launched by ``torchrun``.

A finished run changes the model directory in one step. While training, resumable state lives
apart from it, in a hidden sibling (``.NAME.training``); at the end the model directory is built
beside the destination and swapped into place (:class:`attend.io.ArtifactWriter`), so a run that
stops anywhere leaves the previous model whole, and an existing model is replaced only when asked.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import numbers
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from attend.attention import clamp_spans
from attend.config import MAX_THREADS, check_positive, check_type, check_unit_interval, redefines, strict_from_dict
from attend.data.noise import parse_perturbations
from attend.data.parallel import ParallelTexts
from attend.data.readers import DataError
from attend.data.tokenization import check_max_length
from attend.io import (
    ArtifactWriter,
    ModelDirError,
    OutputLock,
    atomic_write_json,
    check_output_directory,
    link_target,
    output_path,
    save_tensors,
    save_weights,
)
from attend.jsonout import dumps_json, finite_json, python_values
from attend.models import auxiliary_loss, build
from attend.training.adversarial import ADVERSARIAL, MAX_ADVERSARIAL_STEPS, EmbeddingAdversary
from attend.training.tasks.base import TASKS, Task, comparable
from attend.training.tasks.seq2seq import TRANSLATION_DEFAULTS, TranslationTask
from attend.version import __version__

__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingArgs",
    "TrainingDiverged",
    "TrainingInterrupted",
    "state_directory",
    "train_translation",
]


class TrainingInterrupted(Exception):
    """Training stopped early (Ctrl-C, or ``stop_after_steps``); its state is saved for ``resume``."""


class ExchangeFailed(RuntimeError):
    """Under torchrun, an exchange with the other processes (a gradient all-reduce, a barrier) failed:
    typically another process stopped. Each process that met it says so (``one_rank``), with where the
    state saved last waits for ``resume``."""

    one_rank = True


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the step was not applied and no model was written from it."""

    #: Under torchrun the ranks agree on it, so every rank raises it (rank 0 reports it).
    every_rank = True


#: The smallest ``vocab_size`` accepted: the special tokens (5 at most) and a few pieces.
MIN_VOCAB_SIZE = 8
#: The longest ``max_length`` accepted: a position table and per-text attention of this size still fit.
MAX_LENGTH = 65_536

#: Learning-rate decays after warm-up (:attr:`TrainingArgs.schedule`).
SCHEDULES = ("cosine", "linear", "constant", "inverse_sqrt")


@dataclass
class TrainingArgs:
    """How to train. Every field is saved in the model's ``config.json``.

    Attributes:
        epochs: Maximum passes over the training split.
        max_steps: A budget of optimiser steps (0: none): the run takes the whole epochs that
            cover it (rounded up, at least one), and the learning-rate schedule spans those, so a
            default made for a small data set does not mean hours on a large one.
        time_budget: Minutes for the training loop, its epochs and their dev evaluations
            (0: none). The first :data:`BUDGET_PROBE_STEPS` steps and one dev evaluation are timed,
            then the run keeps as many whole epochs (at least one) as fit and, when fewer than
            ``epochs`` fit, the first steps of one more if at least :data:`MIN_CUT_EPOCH` of it
            fits (:func:`steps_in_budget`); the learning-rate schedule spans exactly those steps.
            The plan is saved with the checkpoint, so a resumed run keeps it. After each whole
            epoch the plan is cut if the steps left no longer fit the time left at that epoch's
            pace (the machine slowed down); it is never extended.
        batch_size: Examples per optimiser step (the global batch, shared out under torchrun).
        lr: Peak learning rate of AdamW. None lets the task pick: 1e-3 for a model trained from
            scratch, 5e-5 for fine-tuning pretrained weights (a from-scratch rate would wreck them).
        weight_decay: AdamW's decoupled weight decay.
        warmup_ratio: Fraction of all steps spent warming the learning rate up from zero.
        schedule: Decay after warm-up: ``"cosine"``, ``"linear"``, ``"constant"`` or
            ``"inverse_sqrt"`` (the rate falls as ``1 / sqrt(step)`` from the end of warm-up, as in
            Vaswani et al. 2017 and fairseq; it never reaches zero, so it suits open-ended runs).
        grad_clip: Clip the gradient norm to this (0 disables).
        patience: Stop after this many epochs without a better epoch to keep (0 disables): the epoch
            kept is the one with the best dev metric, ties going to the lower dev loss, so a tie
            with a lower loss is better too.
        class_weights: Weight the loss by inverse class frequency, for imbalanced labels (multi-label:
            each label's positives by its negatives over its positives).
        label_smoothing: Spread this share of each target's probability over the other classes
            (or vocabulary tokens) in the cross-entropy (Szegedy et al. 2016); 0 disables it.
        augment: Comma-separated perturbations of :mod:`attend.data.noise` (``typos``,
            ``char_drop``, ``word_dropout``, ``swap``, ``synonyms``, ``casing``) applied to
            training texts: each epoch, each example is perturbed with probability
            ``augment_probability`` by one of them, picked at random, at ``augment_rate`` of its
            words; seeded by (seed, epoch, example), so a resumed run sees the same noise.
            Empty: none. Tasks that train on text only (classification).
        augment_rate: Share of a perturbed text's words that change.
        augment_probability: Chance that an example is perturbed in an epoch (else it is seen clean).
        adversarial: ``"fgm"`` (Miyato et al. 2017: one step of size ``adversarial_epsilon`` along
            the loss gradient of the input embedding table) or ``"pgd"`` (Madry et al. 2018:
            ``adversarial_steps`` steps, projected onto the ``adversarial_epsilon`` ball) adds the
            loss on adversarially perturbed embeddings to each step's clean loss; empty: off.
        adversarial_epsilon: Size (L2 norm over the embedding table) of the perturbation.
        adversarial_steps: PGD's steps, each of ``adversarial_epsilon / adversarial_steps`` before
            projection.
        rdrop: R-Drop (Liang et al. 2021): each batch runs twice with different dropout and this
            weight times the symmetric KL divergence between the two predictions joins the loss;
            0 disables it.
        average_checkpoints: Average the weights of the last this many epochs at the end
            (checkpoint averaging, as in Vaswani et al. 2017 and fairseq); the average is kept when
            its dev score beats the best epoch's or ties it at no higher dev loss, else the best
            epoch is. 0 disables it (1 is refused: one epoch's weights average to themselves).
        group_by_length: Batch training examples of similar length together (within random
            pools of :data:`LENGTH_POOL_BATCHES` batches; the batch order stays random) where the
            task gives lengths, so less of each step is padding: random batches of reviews or
            glosses are 1.9-2.5 times their real tokens. False: plain random batches.
        seed: Seeds every random number generator: same seed, same metrics.
        precision: ``"fp32"`` or ``"bf16"`` (autocast mixed precision).
        max_length: Longest input in tokens; longer texts are truncated.
        vocab_size: Vocabulary of the tokenizer trained on the training split (models trained from scratch).
        dev_fraction: Share of the data held out for early stopping, when no split column is given.
        test_fraction: Share held out for the final test report.
        eval_batch_size: Batch size for evaluation.
        checkpoint_every: Save resumable training state every this many steps (and at each epoch end).
        progress: Show a progress bar.
        threads: PyTorch intra-op threads for this run; 0 keeps PyTorch's default (one per core).
            Small models on a shared machine often train faster on one thread: each op is too
            small to split, and a busy core stalls every parallel region.
        stop_after_steps: Stop as if interrupted after this many steps (0: never); for testing resume.
    """

    epochs: int = 5
    max_steps: int = 0
    time_budget: float = 0.0
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    schedule: str = "cosine"
    grad_clip: float = 1.0
    patience: int = 2
    class_weights: bool = False
    label_smoothing: float = 0.0
    augment: str = ""
    augment_rate: float = 0.1
    augment_probability: float = 0.5
    adversarial: str = ""
    adversarial_epsilon: float = 1.0
    adversarial_steps: int = 3
    rdrop: float = 0.0
    average_checkpoints: int = 0
    group_by_length: bool = True
    seed: int = 0
    precision: str = "fp32"
    max_length: int = 128
    vocab_size: int = 16000
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    eval_batch_size: int = 128
    checkpoint_every: int = 200
    progress: bool = True
    threads: int = 0
    stop_after_steps: int = 0

    def __post_init__(self) -> None:
        # Types first, as from_dict checks them: built from Python, epochs="3" or batch_size=None failed
        # on a comparison below, and epochs=1.5 only once the data was read.
        hints = typing.get_type_hints(type(self))
        for option in dataclasses.fields(self):
            check_type(option.name, getattr(self, option.name), hints.get(option.name, Any), what="training option")
        check_positive(self, "epochs", "batch_size", "max_length", "vocab_size", "eval_batch_size",
                       "checkpoint_every")  # fmt: skip
        if self.lr is not None:
            check_positive(self, "lr")
        check_unit_interval(self, "warmup_ratio")
        if not 0 <= self.threads <= MAX_THREADS:  # a huge one had failed in torch: "Overflow when unpacking"
            raise ValueError(f"threads={self.threads} must be from 0 to {MAX_THREADS} (0: one per core)")
        if self.max_steps < 0:
            raise ValueError(f"max_steps={self.max_steps} must be >= 0")
        if not self.time_budget >= 0 or math.isinf(self.time_budget):  # also refuses NaN; inf failed in the plan
            raise ValueError(f"time_budget={self.time_budget:g} must be a finite number >= 0 (minutes; 0: none)")
        if self.stop_after_steps < 0:  # -1 had stopped the run after its first step
            raise ValueError(f"stop_after_steps={self.stop_after_steps} must be >= 0 (0: never)")
        # Here, not only once the data is read: a config file holding them had been taken without a word.
        for name in ("dev_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:  # also refuses NaN
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"dev_fraction + test_fraction = {self.dev_fraction + self.test_fraction:g} leaves no "
                             "training data; their sum must be below 1")  # fmt: skip
        if self.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size={self.vocab_size} is too small: a tokenizer needs its special tokens and "
                             f"some pieces; give at least {MIN_VOCAB_SIZE}")  # fmt: skip
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        self.augment = ",".join(parse_perturbations(self.augment, field="augment"))
        if not 0.0 < self.augment_rate <= 1.0:
            raise ValueError(f"augment_rate={self.augment_rate} must be in (0, 1]")
        if not 0.0 <= self.augment_probability <= 1.0:
            raise ValueError(f"augment_probability={self.augment_probability} must be in [0, 1]")
        if self.adversarial not in ADVERSARIAL:
            raise ValueError(f"adversarial={self.adversarial!r}; choose 'fgm' or 'pgd' (or '' for none)")
        check_positive(self, "adversarial_epsilon", "adversarial_steps")
        if self.adversarial_steps > MAX_ADVERSARIAL_STEPS:  # each is a forward and backward pass per batch
            raise ValueError(f"adversarial_steps={self.adversarial_steps} is more than {MAX_ADVERSARIAL_STEPS}: each "
                             "step is one more forward and backward pass of every batch (PGD is usually run with 3 "
                             "to 10)")  # fmt: skip
        if not self.rdrop >= 0 or not math.isfinite(self.rdrop):  # also refuses NaN
            raise ValueError(f"rdrop={self.rdrop} must be a finite number >= 0")
        if self.average_checkpoints < 0 or self.average_checkpoints == 1:
            raise ValueError(f"average_checkpoints={self.average_checkpoints} must be 0 (off) or at least 2 (the "
                             "epochs whose weights are averaged)")  # fmt: skip
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r}; choose 'fp32' or 'bf16'")
        for name in ("patience", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not value >= 0 or not math.isfinite(value):  # also refuses NaN
                raise ValueError(f"{name}={value!r} must be >= 0 (0: {'off' if name != 'weight_decay' else 'none'})")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed} must be in [0, 2**32) (numpy's seed range)")
        check_max_length(self.max_length)  # here too, so a run stops before reading its data
        if self.max_length > MAX_LENGTH:
            raise ValueError(f"max_length={self.max_length} is more than {MAX_LENGTH:,} tokens; texts are truncated "
                             "to it, and attention over one text costs its square")  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArgs:
        return strict_from_dict(cls, data, what="training option")


@dataclass
class TrainResult:
    """What a training run produced."""

    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    report: str = ""
    #: False on the non-zero ranks of a torchrun job, which should stay quiet.
    is_main: bool = True


def state_directory(out: str | os.PathLike[str]) -> Path:
    """Where a run writing the model directory ``out`` keeps its resumable state: a hidden sibling
    (of the directory a symbolic link ``out`` points to, which the run writes)."""
    out = output_path(out)
    return out.with_name(f".{out.name}.training")


def appeared_meanwhile(exc: ModelDirError, kept: str) -> ModelDirError:
    """The error of something found in the output at the end of a run, put there while it trained
    (``overwrite`` was checked at the start too): ``kept`` says where the run's work waits, and the
    advice is what can publish it (a model is replaced with --overwrite; a folder of anything else
    never is, so it is moved away first: --overwrite alone was advised, and refused)."""
    if getattr(exc, "replaceable", False):
        advice = "run the same command with --resume --overwrite to replace it"
    else:
        advice = "move it away, then run the same command with --resume"
    return ModelDirError(f"{exc}. It appeared while this run trained; {kept}: {advice}")


def nothing_to_resume(out: Path) -> DataError:
    """The error of ``--resume`` where no run was interrupted: said of any model (``--model auto``,
    the default, is where a resume without ``--model`` lands), and of a finished model there."""
    finished = (" (it holds a finished model; --overwrite, overwrite=True from Python, trains it again)"
                if (out / "config.json").is_file() else "")  # fmt: skip
    return DataError(f"{out}: nothing to resume: no interrupted training run is writing it{finished}")


def run_record(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the interrupted run writing ``out`` recorded of itself (``run.json``: its task, model,
    options, data), or None where no run left a readable one."""
    try:
        run = json.loads((state_directory(out) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) else None


# --- distributed ------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist()
    if not dist.is_initialized():
        global _GROUP
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "TORCHELASTIC_RESTART_COUNT" in os.environ and "MASTER_ADDR" in os.environ:
            # A restarted worker group meets in the same rendezvous store as the group it replaces,
            # where the lost workers' addresses are still written: a fast worker could read one and
            # fail to connect (seen under load with gloo). A key prefix per group keeps them apart. The
            # group is counted in the store, as each worker joins: each machine's agent counts only its
            # own restarts (the machine that lost a worker 1, the others 0), and workers that took
            # their own agent's count met under different prefixes and waited for good. Counted per
            # world size: a group of another size (an elastic job's nodes came or went) starts its own
            # count, under its own prefix. (A worker that died before it joined leaves its group's count
            # short: the groups after it would split. The README says so.)
            rank = int(os.environ["RANK"])
            agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                  is_master=not agent_store and rank == 0,
                                  timeout=dist.default_pg_timeout)  # as init_process_group's own store: 30 min
            _GROUP = (int(store.add(f"attend/joined-{world_size}", 1)) - 1) // world_size
            prefixed = dist.PrefixStore(f"attend/size-{world_size}/group-{_GROUP}", store)
            dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world_size)
        else:
            dist.init_process_group(backend)
    return _Dist(rank=dist.get_rank(), world_size=dist.get_world_size())


#: This worker group's place among the groups of its torchrun job (0: the first), as the job's store
#: counts them when it joins (:func:`_init_distributed`).
_GROUP = 0


def _restarts() -> int:
    """How many times torchrun (``--max-restarts``) started this job's worker group again: the store's
    count, the same on every machine (or, where the store was started anew with the group, the
    agent's own count)."""
    return max(_GROUP, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0))


def restarts_left() -> bool:
    """Whether torchrun (``--max-restarts``) would start this job's worker group again after a loss."""
    restarts = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0").strip()
    return restarts.isdigit() and int(restarts) > _restarts()


def _elastic_restart() -> bool:
    """True in a worker group that torchrun restarted (``--max-restarts``) after a failure."""
    return _restarts() > 0


def _elastic_job() -> str | None:
    """This torchrun job as this machine's agent names it, recorded in ``run.json`` by rank 0; None outside
    torchrun. It is the rendezvous id and the agent's own log folder (made once per torchrun process, kept
    through the restarts of its worker group, and passed to each worker inside the path of its error
    file; where there is none, the worker's parent process). A restarted group resumes the run of its own
    job only: it had resumed any interrupted run it found, so a first attempt refused for another run's
    checkpoint was followed by a restart that continued it, with that run's options."""
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    error_file, mark = os.environ.get("TORCHELASTIC_ERROR_FILE", ""), f"{os.sep}attempt_"
    agent = error_file.split(mark)[0] if mark in error_file else f"process {os.getppid()}"
    return f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}@{socket.gethostname()}:{agent}"


def _barrier(info: _Dist) -> None:
    if info.world_size > 1:
        dist.barrier()


#: Scores closer than this are a tie: the same metric summed in another order (macro-F1 over
#: classes, a mean over batches) differs in its last bits, not in what it measures.
SCORE_TOLERANCE = 1e-9


def _ties(score: float, best: float) -> bool:
    return math.isclose(score, best, rel_tol=SCORE_TOLERANCE, abs_tol=SCORE_TOLERANCE)


def _check_registered(task: Task) -> None:
    """Refuse a task whose ``name`` is empty, unregistered or another task's: ``config.json``'s
    ``task`` is its name, and a directory named for another task (or none) fails to load, after
    the whole run, as that task's ("config.json lists no labels")."""
    name, kind = getattr(task, "name", ""), type(task).__name__
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} has no name: set its class attribute name (what config.json's task records, and "
                         "what attend.load chooses the runtime by) and register it with @register_task")  # fmt: skip
    registered = TASKS.get(name)
    if registered is None:
        raise ValueError(f"{kind}'s task name {name!r} is not registered: decorate the class with "
                         f"@attend.training.register_task (registered: {sorted(TASKS)})")  # fmt: skip
    if not isinstance(task, registered) and redefines(registered, type(task)):
        raise ValueError(f"{kind} is registered as another definition of the same class (its definition was run "
                         "again): make the task from the class that is registered, or register the one it was made "
                         "from")  # fmt: skip
    if not isinstance(task, registered):
        raise ValueError(f"{kind}'s task name {name!r} is {registered.__name__}'s: give it a name of its own "
                         "(a model directory it wrote would load as the other task's)")  # fmt: skip


def _evaluate(task: Task, network: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
    """``task.evaluate``, checked for what the Trainer reads of it: the selection metric and ``loss``,
    numbers (a task of one's own that leaves one out is told so, not a bare KeyError); numpy and
    tensor values as Python's (:func:`~attend.jsonout.python_values`; a task's numpy float32 had passed the
    checks, then failed the epoch's log line). The network is in eval mode with gradients off while it
    runs (a task that did not set them itself had selected epochs on dropout-noised figures), and
    back in the mode it was in after."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            metrics = task.evaluate(network, split, batch_size)
    finally:
        network.train(was_training)
    if not isinstance(metrics, dict):
        raise TypeError(f"{type(task).__name__}.evaluate returned {type(metrics).__name__}, expected a dict of metrics")
    metrics = python_values(metrics)
    try:  # checked at the first evaluation: it had failed the epoch's log line, or the end's metrics.json
        finite_json(metrics)
    except ValueError as error:
        raise ValueError(f"{type(task).__name__}.evaluate({split!r}) returned a metric JSON cannot hold: {error}"
                         ) from None  # fmt: skip
    missing = [key for key in (task.selection, "loss") if not _is_number(metrics.get(key))]
    if missing:
        raise ValueError(
            f"{type(task).__name__}.evaluate({split!r}) returned no number under {', '.join(map(repr, missing))} "
            f"(its keys: {sorted(map(str, metrics))}): the Trainer picks the best epoch by the task's selection "
            f"metric {task.selection!r}, ties by 'loss'"
        )
    return metrics


def _is_number(value: Any) -> bool:
    """What ``float()`` takes as one number (a float, an int, a 0-d tensor or array), not a string."""
    if isinstance(value, str | bytes) or value is None:
        return False
    try:
        float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several values
        return False
    return True


def _beats(score: float, best: float) -> bool:
    return score > best and not _ties(score, best)


def _collective_device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def _loss_totals(state: _State, info: _Dist) -> tuple[float, int]:
    """This epoch's training-loss sum and step count over every rank (a collective under torchrun).

    A checkpoint stores these totals on rank 0 and a resumed rank other than 0 starts from zero, so
    a resumed epoch's mean covers every step of every rank.
    """
    if info.world_size == 1:
        return state.loss_sum, state.loss_count
    total = torch.tensor([state.loss_sum, float(state.loss_count)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total[0]), int(total[1])


def _epoch_loss(state: _State, info: _Dist) -> float | None:
    """The epoch's mean training loss over every step of every rank."""
    loss_sum, loss_count = _loss_totals(state, info)
    return loss_sum / loss_count if loss_count else None


def _agree(finite: bool, stop: bool) -> tuple[bool, bool]:
    """Whether every rank's loss is finite, and whether any rank was asked to stop (one all-reduce,
    which every rank makes at every step)."""
    flags = torch.tensor([int(not finite), int(stop)], device=_collective_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    nonfinite, stop_any = flags.tolist()
    return not nonfinite, bool(stop_any)


def _span(seconds: float) -> str:
    """A duration as a person reads it: seconds under a minute ("0.0 min" said nothing), else minutes."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _log(message: str, info: _Dist) -> None:
    if info.main:
        print(message, file=sys.stderr, flush=True)


#: Seconds a task's preparation runs before the Trainer says it is preparing the data.
PREPARING_NOTE_S = 3.0

# --- optimisation -----------------------------------------------------------------------------


def _lr_factor(step: int, total: int, args: TrainingArgs) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then the chosen decay."""
    warmup = int(args.warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    if args.schedule == "inverse_sqrt":
        return math.sqrt(max(1, warmup) / (step + 1))
    if args.schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if args.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _scheduled_lr(step: int, total: int, args: TrainingArgs, state: _State) -> float:
    """:func:`_lr_factor` at ``step``, joined without a jump to the factor the run had when a time
    budget last changed its plan (``state.lr_from``, at ``state.lr_from_step``): the warm-up of the
    steps before the plan followed the longer, unplanned run, and the new plan's factor had been
    taken at once (the rate doubled in one step). While the new warm-up runs, the rate rises in a
    straight line from where it was to the peak where that warm-up ends; when the new plan's warm-up
    is already over, it moves from where it was to the new plan's factor over as many steps as that
    warm-up has (at once without one), then follows the plan."""
    target = _lr_factor(step, total, args)
    start, was = state.lr_from_step, state.lr_from
    if was < 0 or step < start:
        return target
    warmup = int(args.warmup_ratio * total)
    if warmup > start:
        return was + (1.0 - was) * (step - start + 1) / (warmup - start) if step < warmup else target
    reach = (step - start + 1) / max(1, warmup)
    return target if reach >= 1.0 else was + (target - was) * reach


def _join_plan(state: _State, old_total: int, new_total: int, args: TrainingArgs) -> None:
    """The plan goes from ``old_total`` steps to ``new_total`` after ``state.global_step``: the schedule
    goes on from the factor of the last step taken (see :func:`_scheduled_lr`); nothing where the
    total is unchanged."""
    if state.global_step and new_total != old_total:
        state.lr_from = _scheduled_lr(state.global_step - 1, old_total, args, state)
        state.lr_from_step = state.global_step


#: Steps timed before :attr:`TrainingArgs.time_budget` plans the run (the first is not timed:
#: it pays for one-off allocations).
BUDGET_PROBE_STEPS = 50


#: The least share of an epoch a time budget trains as a last, cut epoch (with its own dev
#: evaluation): below it the dev evaluation would cost too much of what the steps could add.
MIN_CUT_EPOCH = 0.25


def steps_in_budget(
    time_s: float, seconds_per_step: float, dev_s: float, steps_per_epoch: int, epochs_left: int
) -> int:
    """The optimiser steps of the epochs still to run that fit ``time_s`` seconds, when a step
    takes ``seconds_per_step`` and each epoch ends with a dev evaluation of ``dev_s``: the whole
    epochs that fit (at most ``epochs_left``) and, when fewer than ``epochs_left`` fit, the first
    steps of one more epoch if at least :data:`MIN_CUT_EPOCH` of it fits beside its dev evaluation
    (so a large data set does not leave most of an epoch's worth of the budget unused)."""
    per_epoch = steps_per_epoch * seconds_per_step + dev_s
    if per_epoch <= 0 or epochs_left <= 0:
        return max(0, epochs_left) * steps_per_epoch
    whole = min(epochs_left, math.floor(max(0.0, time_s) / per_epoch))
    steps = whole * steps_per_epoch
    if whole < epochs_left and seconds_per_step > 0:
        extra = math.floor((time_s - whole * per_epoch - dev_s) / seconds_per_step)
        if extra >= MIN_CUT_EPOCH * steps_per_epoch:
            steps += min(extra, steps_per_epoch - 1)
    return steps


def _minutes(value: float) -> str:
    """A budget in minutes as a log line gives it: three digits (``0.221``, ``45.7``, ``1e-06``), whole
    from 100 up (``1440``, not ``1.44e+03``)."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def describe_steps(steps: int, steps_per_epoch: int) -> str:
    """``3 epoch(s) of 482 steps``, or ``2 epoch(s) of 482 steps and 300 of one more``."""
    whole, cut = divmod(steps, steps_per_epoch)
    text = f"{whole} epoch(s) of {steps_per_epoch} step{'s' if steps_per_epoch != 1 else ''}"
    return f"{text} and {cut} of one more" if cut else text


def _planned_steps(state: _State, steps_per_epoch: int) -> int:
    """The steps the time budget planned (0: no plan); a checkpoint from before cut epochs has epochs only."""
    return state.planned_steps or state.planned_epochs * steps_per_epoch


def _set_plan(state: _State, steps: int, steps_per_epoch: int) -> None:
    state.planned_steps, state.planned_epochs = steps, math.ceil(steps / steps_per_epoch)


_T = TypeVar("_T")


def _shared(value: _T, info: _Dist) -> _T:
    """Rank 0's ``value`` on every rank (torchrun; a collective: every rank calls it); the value itself in
    a single process."""
    if info.world_size == 1:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


#: Batches per pool when a task gives lengths: examples are sorted by length within pools of
#: this many batches (fairseq's and Hugging Face's "group by length"), so a batch's members have
#: similar lengths and little padding, while the pools and the batch order stay random.
LENGTH_POOL_BATCHES = 50


def epoch_batches(
    n: int, args: TrainingArgs, epoch: int, info: _Dist | None = None, lengths: np.ndarray | None = None
) -> list[list[int]]:
    """This rank's batches for one epoch: a function of (seed, epoch), so a resumed run replays it.

    With ``lengths`` (the task's :meth:`~attend.training.tasks.Task.lengths`), each pool of
    :data:`LENGTH_POOL_BATCHES` random batches is re-cut by length and the batches are shuffled.

    ``batch_size`` is the global batch: under torchrun each rank takes an equal share of every
    global batch and DDP averages the gradients, so N processes take the same optimiser steps
    on the same examples as one process would, and reach the same quality.
    """
    info = info or _Dist()
    generator = torch.Generator().manual_seed(args.seed * 100003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    if lengths is not None:
        pool = args.batch_size * LENGTH_POOL_BATCHES
        order = [i for start in range(0, n, pool)
                 for i in sorted(order[start : start + pool], key=lambda i: lengths[i])]  # fmt: skip
    batches = [order[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    if lengths is not None:
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in shuffle]
    if info.world_size == 1:
        return batches
    shares = []
    for batch in batches:
        if len(batch) < info.world_size:  # a short last batch: repeat it so no rank is idle
            batch = (batch * info.world_size)[: info.world_size]
        shares.append(batch[info.rank :: info.world_size])
    return shares


#: TrainingArgs options that a task reads itself (its data, tokenizer and loss), where the Trainer
#: cannot apply them: each task lists those it reads in ``Task.reads``.
TASK_READ_OPTIONS = ("class_weights", "label_smoothing", "max_length", "vocab_size", "dev_fraction", "test_fraction")


#: The optional training features a task may implement (``Task.features``), each a TrainingArgs option.
OPTIONAL_FEATURES = ("augment", "adversarial", "rdrop")


def _check_prepared(task: Task, args: TrainingArgs, info: _Dist, *, resumed: bool, chosen: frozenset[str]) -> None:
    """Refuse, naming the task, a prepared task whose size or splits the Trainer cannot use: no
    training example had trained nothing and published the model with a test score; an unknown
    split name ("validation") was ignored, and training figures became the model's headline. And
    an option ``chosen`` that the data leaves nothing to do (a resumed run's, started before it was
    refused, is warned of; a task's default, such as a translator's averaging, is noted)."""
    size, splits = task.train_size, task.splits()
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{type(task).__name__}.train_size is {size!r}: the number of training examples, at least 1")
    listed = isinstance(splits, list | tuple)
    if not listed or any(split not in ("dev", "test") for split in splits):
        raise ValueError(f"{type(task).__name__}.splits() returned {splits!r}: list the held-out splits that have "
                         "examples, of 'dev' and 'test'")  # fmt: skip
    if args.average_checkpoints > 1 and "dev" not in splits:  # every epoch's weights kept, then never averaged
        said = (f"average_checkpoints={args.average_checkpoints}: the average is kept only where it scores better "
                "on dev, and this data has no dev rows")  # fmt: skip
        if "average_checkpoints" not in chosen:  # the task's default (a translator's 5): off, said
            _log(f"note: {said}: no average is made", info)
        elif not resumed:
            raise ValueError(f"{said}; give the data dev rows, or leave the option out")
        else:
            _log(f"warning: {said}: the interrupted run's option does nothing", info)


def _identity(task: Task) -> dict[str, Any]:
    """``task.identity()`` with its name, checked to be JSON (a Path had failed run.json's writing with a
    bare TypeError, naming neither the task nor the entry)."""
    identity = {"task": task.name, **task.identity()}
    try:
        return finite_json(identity)
    except ValueError as error:
        raise ValueError(f"{type(task).__name__}.identity() returned {error}") from None


def _check_features(task: Task, args: TrainingArgs, *, resumed: bool = False,
                    given: frozenset[str] | None = None) -> None:  # fmt: skip
    """Refuse the optional training features the task does not implement, naming the option, and a
    setting that would be ignored without a word (:func:`check_settings`; on a resumed run's
    options, so repeating one of the interrupted run's is no error, and where the interrupted run
    itself had one, from before it was refused, a warning: it trained that way)."""
    for attribute in ("features", "reads"):  # an instance attribute of the same name had shadowed one
        undeclared = attribute == "reads" and task.reads is None  # allowed: see below
        if not isinstance(getattr(task, attribute), set | frozenset) and not undeclared:
            raise ValueError(f"{type(task).__name__}.{attribute} is {type(getattr(task, attribute)).__name__}, not a "
                             "set of training option names (does the task use the name for something else?)")
    unknown = sorted(map(str, set(task.features) - set(OPTIONAL_FEATURES)))
    if unknown:  # {"mixup"} had been accepted, and nothing read it
        raise ValueError(f"{type(task).__name__}.features names {', '.join(map(repr, unknown))}: the Trainer's "
                         f"optional features are {', '.join(OPTIONAL_FEATURES)}")  # fmt: skip
    for option in OPTIONAL_FEATURES:
        if getattr(args, option) and option not in task.features:
            supported = ", ".join(sorted(task.features)) or "none of augment, adversarial, rdrop"
            raise ValueError(f"{option}={getattr(args, option)!r}: the {task.name} task does not support it "
                             f"(it supports: {supported})")  # fmt: skip
    defaults = TrainingArgs()
    # Batching by length is the Trainer's, from the task's lengths(): a task without them (a recommender)
    # had recorded group_by_length=false and trained as it would have anyway.
    chosen = "group_by_length" in given if given is not None else not args.group_by_length
    if chosen and type(task).lengths is Task.lengths:
        problem = (f"group_by_length={args.group_by_length!r}: the {task.name} task gives no example lengths, so its "
                   "batches are plain random draws either way and the option would change nothing")  # fmt: skip
        if not resumed:
            raise ValueError(problem)
        print(f"warning: the interrupted run's options: {problem}", file=sys.stderr)
    for option in TASK_READ_OPTIONS:
        set_ = option in given if given is not None else getattr(args, option) != getattr(defaults, option)
        if set_ and task.reads is None:  # a task that does not say what it reads: it may read this one
            print(f"warning: {option}={getattr(args, option)!r}: the {task.name} task does not say whether it reads "
                  "this training option (its class attribute reads); if it does not, it changes nothing",
                  file=sys.stderr)  # fmt: skip
        elif set_ and option not in task.reads:
            reads = (f"of these it reads {', '.join(sorted(task.reads))}" if task.reads
                     else f"it reads none of {', '.join(TASK_READ_OPTIONS)}")
            problem = (f"{option}={getattr(args, option)!r}: the {task.name} task does not read this training option, "
                       f"so it would change nothing ({reads})")
            if not resumed:
                raise ValueError(problem)
            print(f"warning: the interrupted run's options: {problem}", file=sys.stderr)
    try:
        check_settings(args, given)
    except ValueError as exc:
        if not resumed:
            raise
        print(f"warning: the interrupted run's options: {exc}", file=sys.stderr)


def check_settings(args: TrainingArgs, given: frozenset[str] | set[str] | None = None) -> None:
    """Refuse a setting of an option that is off, or that the chosen option ignores. ``given``: the
    options the user set (a setting at its default value counts too); None: those away from the
    defaults.

    Raises:
        ValueError: naming the setting.
    """
    defaults = TrainingArgs()

    def set_(name: str) -> bool:  # `--adversarial fgm --adversarial-steps 3` passed: 3 is the default
        return name in given if given is not None else getattr(args, name) != getattr(defaults, name)

    for name, needs, choices in (("adversarial_epsilon", "adversarial", "fgm or pgd"),
                                 ("adversarial_steps", "adversarial", "pgd"),
                                 ("augment_rate", "augment", "e.g. typos,word_dropout"),
                                 ("augment_probability", "augment", "e.g. typos,word_dropout")):  # fmt: skip
        if set_(name) and not getattr(args, needs):
            raise ValueError(f"{name}={getattr(args, name)!r} has no effect without {needs} ({choices})")
    if args.adversarial == "fgm" and set_("adversarial_steps"):
        raise ValueError(f"adversarial_steps={args.adversarial_steps} has no effect with adversarial='fgm', which "
                         "takes one step of adversarial_epsilon (the steps are pgd's)")  # fmt: skip
    if args.augment and args.augment_probability == 0:
        raise ValueError(f"augment_probability=0 perturbs no example: augment={args.augment!r} would have no effect")


def _has_dropout(network: nn.Module) -> bool:
    """Whether some dropout of ``network`` is above 0 (a dropout layer, or an attention module's
    ``dropout`` probability)."""
    for module in network.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            return True
        rate = getattr(module, "dropout", None)
        if isinstance(rate, float) and rate > 0:
            return True
    return False


def _adversary(network: nn.Module, args: TrainingArgs) -> EmbeddingAdversary | None:
    if not args.adversarial:
        return None
    embeddings = getattr(network, "input_embeddings", None)
    if embeddings is None:
        raise ValueError(f"adversarial={args.adversarial!r}: {type(network).__name__} has no input_embeddings()")
    if not embeddings().weight.requires_grad:
        raise ValueError(f"adversarial={args.adversarial!r} moves the word embeddings along their gradient, but "
                         "this model keeps them frozen (set the model option freeze_word_embeddings to false)")
    return EmbeddingAdversary(network, embeddings(), args.adversarial, args.adversarial_epsilon,
                              args.adversarial_steps)  # fmt: skip


def _autocast_loss(task: Task, model: nn.Module, batch: dict[str, Tensor], autocast: Any) -> Tensor:
    with autocast:
        return task.loss(model, batch)


def _keep_epoch_weights(directory: Path, network: nn.Module, epoch: int, keep: int) -> None:
    """Save this epoch's weights for checkpoint averaging; drop those older than the last ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(network, directory / f"epoch-{epoch}.safetensors")
    for old in directory.glob("epoch-*.safetensors"):
        if int(old.stem.split("-")[1]) <= epoch - keep:
            old.unlink()


def average_weights(paths: list[Path]) -> dict[str, Tensor]:
    """The element-wise mean of the floating-point tensors of several weight files (other tensors,
    such as integer buffers, come from the last file)."""
    states = [load_file(str(path)) for path in paths]
    averaged = {}
    for name, last in states[-1].items():
        if last.is_floating_point():
            averaged[name] = torch.stack([state[name].float() for state in states]).mean(0).to(last.dtype)
        else:
            averaged[name] = last
    return averaged


def _try_average(task: Task, network: nn.Module, directory: Path, state: _State, args: TrainingArgs,
                 info: _Dist) -> dict[str, Any] | None:  # fmt: skip
    """Load the average of the kept epochs' weights if its dev score beats the best epoch's, or
    ties it at no higher dev loss (the rule that picks the best epoch).

    ``network`` holds the best epoch's weights on entry and the winner's on return. Returns what
    was compared (epochs, both dev scores and losses, whether the average was kept).
    """
    paths = sorted(directory.glob("epoch-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    if len(paths) < 2:  # one epoch run (or kept): nothing to average, said rather than skipped in silence
        _log(f"checkpoint average: {len(paths)} epoch's weights kept, at least 2 are needed; the best epoch "
             "stands", info)  # fmt: skip
        return None
    best = {k: v.detach().clone() for k, v in network.state_dict().items()}
    network.load_state_dict(average_weights(paths))
    dev = _evaluate(task, network, "dev", args.eval_batch_size)
    score, loss = float(dev[task.selection]), float(dev["loss"])
    if math.isnan(score):  # undefined, as for the epochs: the dev loss decides
        score = -float("inf")
    kept = _beats(score, state.best_score) or (_ties(score, state.best_score) and loss <= state.best_loss)
    if not kept:
        network.load_state_dict(best)
    epochs = [int(p.stem.split("-")[1]) for p in paths]
    tie = ""  # a tie is decided by the dev loss, as between epochs: say so, or "not kept" looks wrong
    if _ties(score, state.best_score):
        tie = f" (a tie: dev loss {loss:.4f} against {state.best_loss:.4f}, {'not higher' if kept else 'higher'})"
    fewer = (f" (the last {args.average_checkpoints} were asked for; {len(epochs)} ran)"
             if len(epochs) < args.average_checkpoints else "")  # fmt: skip
    _log(f"checkpoint average of epochs {epochs}{fewer}: dev {task.selection} {score:.4f} against the best epoch's "
         f"{state.best_score:.4f}{tie}; {'kept' if kept else 'not kept'}", info)  # fmt: skip
    def shown(value: float) -> float | None:  # an undefined score is null in metrics.json, not -Infinity
        return value if math.isfinite(value) else None

    return {"epochs": epochs, f"dev_{task.selection}": shown(score),
            f"best_epoch_dev_{task.selection}": shown(state.best_score), "dev_loss": loss,
            "best_epoch_dev_loss": state.best_loss, "kept": kept}  # fmt: skip


def _optimiser(model: nn.Module, args: TrainingArgs) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Biases, norms and per-head scalars are not weight-decayed (standard practice).
        (no_decay if param.dim() < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel does the whole update in one pass per tensor: on CPU it cuts the
    # optimiser's share of a step (large embedding tables) by about half.
    assert args.lr is not None  # resolved by fit()
    return torch.optim.AdamW(groups, lr=args.lr, fused=True)


# --- resumable state --------------------------------------------------------------------------


@dataclass
class _State:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -float("inf")
    best_loss: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    planned_epochs: int = 0  # the epochs TrainingArgs.time_budget left the run (0: no plan yet), a cut one counted
    planned_steps: int = 0  # their optimiser steps (the last epoch's may be cut; 0: whole epochs)
    budget_seconds: float = 0.0  # of the time budget, spent: whole epochs with their dev evaluations, the probe's
    loss_sum: float = 0.0  # this epoch's training losses so far (this rank's), so a resumed epoch reports them all
    loss_count: int = 0
    epoch_seconds: float = 0.0  # this epoch's seconds before its last checkpoint, so a resumed epoch reports them all
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 0  # the processes that trained it (0: a checkpoint written before they were recorded)
    lr_from: float = -1.0  # the learning-rate factor when the time budget last changed the plan (-1: never)
    lr_from_step: int = 0  # the step from which the schedule joins the new plan's (_scheduled_lr)


def _rng_states(info: _Dist) -> list[Tensor]:
    """Every rank's torch RNG state, in rank order (a collective: every rank calls it)."""
    if info.world_size == 1:
        return [torch.get_rng_state()]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, torch.get_rng_state())
    return states


def _save_state(
    directory: Path, model: nn.Module, optimiser: torch.optim.Optimizer, state: _State, rng: list[Tensor]
) -> None:
    """Write model, optimiser and RNG state as safetensors + JSON; swap the directory in whole.

    ``rng`` holds each rank's RNG state (dropout draws differ between ranks under torchrun, so a
    resumed rank must continue its own stream to reach the metrics of an uninterrupted run).
    """
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_weights(model, staging / "model.safetensors")
    opt_state = optimiser.state_dict()
    tensors: dict[str, Tensor] = {"rng.torch": rng[0]}  # rank 0 (and a single process)
    tensors |= {f"rng.torch.{rank}": value for rank, value in enumerate(rng) if rank > 0}
    scalars: dict[str, Any] = {}
    for index, slots in opt_state["state"].items():
        for slot, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optimiser.{index}.{slot}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{slot}"] = value
    save_tensors(tensors, staging / "optimiser.safetensors")
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt_state["param_groups"]
    ]
    payload = {"state": dataclasses.asdict(state), "param_groups": groups, "scalars": scalars}
    atomic_write_json(staging / "state.json", payload)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(directory: Path, model: nn.Module, optimiser: torch.optim.Optimizer, rank: int = 0) -> _State:
    if not directory.exists() and directory.with_name(directory.name + ".old").exists():
        directory = directory.with_name(directory.name + ".old")  # a crash between the two renames
    try:
        payload = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        tensors = load_file(str(directory / "optimiser.safetensors"))
        state = _State(**payload["state"])
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:  # a weight file cut
        raise DataError(f"{directory}: cannot resume, the checkpoint is unreadable ({exc})") from None  # short
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimiser."):
            _, index, slot = key.split(".", 2)
            slots.setdefault(int(index), {})[slot] = value
    for key, value in payload["scalars"].items():
        index, slot = key.split(".", 1)
        slots.setdefault(int(index), {})[slot] = value
    optimiser.load_state_dict({"state": slots, "param_groups": payload["param_groups"]})
    torch.set_rng_state(tensors.get(f"rng.torch.{rank}", tensors["rng.torch"]))
    return state


# --- run-time helpers -------------------------------------------------------------------------


def _tensorboard(log_dir: Path, purge_step: int | None = None) -> Any:
    """A TensorBoard writer; ``purge_step``: a resumed run's first step, so the points the interrupted
    run logged after its last checkpoint are dropped (they were shown twice)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def _progress(iterable: range, total: int, initial: int, desc: str, enabled: bool) -> Iterator[int] | Any:
    if not enabled:
        return iterable
    from attend.progress import progress_bar

    return progress_bar(iterable, total=total, initial=initial, desc=desc, unit="batch")


#: Under torchrun a Ctrl-C reaches every worker twice: from the terminal, then forwarded by the
#: launcher. A second SIGINT this soon after the first is that same Ctrl-C, not a second one.
FORWARDED_SIGINT_SECONDS = 5.0


def _install_stop_signals(flag: dict[str, Any], info: _Dist) -> dict[int, Any]:
    """First Ctrl-C (or SIGTERM): finish the current step, save, and stop; a second one stops at once.

    Every rank installs it: the ranks agree on stopping at each step (:func:`_agree`), so a
    Ctrl-C that reaches any one of them stops all of them at the same step, with the state saved.
    SIGTERM is what a scheduler sends before it reclaims a machine, and what torchrun's launcher
    sends its workers when it stops (a Ctrl-C that reaches the launcher at an unlucky moment
    crashes it, and it terminates them): either way the step is finished and saved, for
    ``--resume``. Returns the handlers it replaced, by signal, to put back.
    """
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if flag.get("stopped"):  # the stop is under way: a repeat (torchrun forwards each Ctrl-C) would cut its message
            return
        if flag["flag"]:
            if info.world_size > 1 and now - flag["at"] < FORWARDED_SIGINT_SECONDS:
                return
            flag["stopped"] = True
            raise KeyboardInterrupt
        flag["flag"], flag["at"] = True, now
        if info.main:
            what, again = ("Ctrl-C", "Ctrl-C") if signum == signal.SIGINT else ("terminated", "a second SIGTERM")
            print(f"\n{what}: stopping after this step ({again} to stop now)...", file=sys.stderr, flush=True)

    for name in ("SIGINT", "SIGTERM"):
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            previous[number] = signal.getsignal(number)
            signal.signal(number, handler)
        except ValueError:  # not in the main thread
            previous.pop(number, None)
    return previous


def check_out(out: Any) -> None:
    """Refuse an ``out`` that is no path (None had failed in pathlib, frames deep, naming nothing)."""
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out: the model directory to write, a path (not {out!r})")
    if not os.fspath(out):
        raise ValueError("out: the model directory to write is an empty path")


@contextlib.contextmanager
def global_random_kept() -> Iterator[None]:
    """PyTorch's and numpy's global random states as they were, after a run that seeds them: a
    notebook's own seeded draws had come out otherwise after training (``attend.load`` keeps them too)."""
    state = np.random.get_state()
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)  # this rank's GPU only (forking all had set up every one)
    devices = [local] if torch.cuda.is_available() and local < torch.cuda.device_count() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(state)


def _keeps_thread_count(function: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """``TrainingArgs.threads`` changes a process-wide setting: put it back afterwards."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> TrainResult:
        threads = torch.get_num_threads()
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


# --- the loop ---------------------------------------------------------------------------------


class Trainer:
    """Fit a :class:`~attend.training.tasks.Task` and write its model directory.

    Args:
        task: What to train (data, model, loss, metrics, files).
        args: How to train (defaults: :class:`TrainingArgs`).
        on_epoch: Called with each epoch's log record (for notebooks and tests).
        given: The names of the options in ``args`` the user chose (a resumed run refuses those
            that differ from the interrupted run's). None: those that differ from
            :class:`TrainingArgs`' defaults, which misses one chosen equal to its default.
    """

    def __init__(
        self,
        task: Task,
        args: TrainingArgs | Mapping[str, Any] | None = None,
        *,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        given: Collection[str] | None = None,
    ) -> None:
        _check_registered(task)
        if isinstance(args, Mapping):  # as train() takes them: the options chosen (a dict had failed on .augment)
            given = set(args) if given is None else given
            args = TrainingArgs.from_dict(dict(args))
        elif args is not None and not isinstance(args, TrainingArgs):
            raise TypeError(f"args must be a TrainingArgs or a dict of training options, not {type(args).__name__}")
        self.task = task
        self.args = args or TrainingArgs()
        self.on_epoch = on_epoch
        self.given = None if given is None else frozenset(given)

    @_keeps_thread_count
    def fit(self, out: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Train, then write the model directory ``out`` in one atomic switch.

        Args:
            out: The model directory to write.
            resume: Continue the interrupted run that was writing ``out`` (same options).
            overwrite: Replace a model already at ``out`` (else that is an error, found before
                any training, and again before the model is written).

        Returns:
            The model directory, its test metrics (dev if there is no test split) and the history.

        Raises:
            ModelDirError: another run is writing ``out`` (:class:`~attend.io.OutputLock`), or a
                model is there without ``overwrite``.
        """
        check_out(out)
        # Checked again as the run starts: a field set after TrainingArgs was made (args.lr = 0.0,
        # args.batch_size = 0) had trained at that value, or failed on a bare ZeroDivisionError.
        self.args = dataclasses.replace(self.args)
        out = link_target(out)
        info = _init_distributed()
        # One run writes `out` at a time: a second is refused here, before it reads or touches the
        # first one's training state (it would be taken for an interrupted run's, then removed).
        lock = OutputLock(out) if info.main else None
        try:
            with global_random_kept():
                return self._fit(out, info, resume=resume, overwrite=overwrite)
        except RuntimeError as exc:
            if info.world_size > 1 and _raised_in_exchange(exc):  # a peer's loss had shown each survivor's
                raise ExchangeFailed(_exchange_failure(exc, state_directory(out))) from exc  # gloo traceback
            raise
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, out: Path, info: _Dist, *, resume: bool, overwrite: bool) -> TrainResult:
        task, args = self.task, self.args
        work = state_directory(out)
        if not resume and _elastic_restart():
            # torchrun --max-restarts started this worker group again after a worker was lost: continue
            # the run from its last checkpoint rather than from scratch (this job's run only). Rank 0
            # decides for every rank: the others' machines name the job otherwise.
            run = run_record(out) if info.main else None
            found = _shared(None if run is None else run.get("job") == _elastic_job(), info)
            restart = f"restart {_restarts()} of the worker group"
            if found:
                _log(f"{restart}: resuming", info)
                resume = True
            elif found is not None:
                _log(f"{restart}: the interrupted run in {work} is another job's, not resumed", info)
        if resume:
            run = self._resumable_run(out)
            # The interrupted run's options (those given again must match), minus the interruption itself.
            args = dataclasses.replace(_resumed_args(out, run["training"], args, self.given), stop_after_steps=0)
            overwrite = overwrite or bool(run.get("overwrite"))  # given now: a model that appeared meanwhile goes
        elif not overwrite and (work / "run.json").is_file() and has_checkpoint(work):
            raise DataError(f"{out}: an interrupted run was writing it (its checkpoint is in {work}): add --resume "
                            "(resume=True from Python) to continue it, or --overwrite (overwrite=True) to discard it "
                            "and start again")  # fmt: skip
        check_output_directory(out, overwrite=overwrite)
        if work.exists() and not work.is_dir():  # it had failed at the first save: "File exists"
            raise ModelDirError(f"{work} is a file, where a run writing {out} keeps its training state (a hidden "
                                "folder beside it): move it away, then run the command again")  # fmt: skip
        _check_features(task, args, resumed=resume, given=None if resume else self.given)
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        # Said once preparing takes PREPARING_NOTE_S (a 50 MB file had been a minute of silence before
        # the first bar); a quick refusal stays one line.
        note = threading.Timer(PREPARING_NOTE_S, _log, (f"preparing the data ({task.name}: reading, splitting and "
                                                        "encoding it)", info))  # fmt: skip
        note.daemon = True
        begun = time.perf_counter()
        if args.progress:
            note.start()
        try:
            task.prepare(args, work if resume else None)
        finally:
            note.cancel()
        if args.progress and (took := time.perf_counter() - begun) >= PREPARING_NOTE_S:
            _log(f"prepared in {took:.1f} s", info)
        chosen = frozenset(explicit_options(args)) if self.given is None else self.given
        _check_prepared(task, args, info, resumed=resume, chosen=chosen)
        identity = _identity(task)
        data = task.data_fingerprint()
        if resume and data is not None and run.get("data_sha256") not in (None, data):
            raise DataError(f"{out}: --resume must read the same data as the interrupted run, but this data (its "
                            "rows, or how they are labelled or split) differs from what it was trained on")  # fmt: skip
        if args.lr is None:
            args = dataclasses.replace(args, lr=task.default_lr())
        config_dict = task.model_config()

        torch.manual_seed(args.seed)
        network = build(config_dict)
        task.init_model(network)
        if args.rdrop and not _has_dropout(network):  # both passes would be the same: a zero term at twice the cost
            raise ValueError(f"rdrop={args.rdrop:g} compares two passes with different dropout, but every dropout of "
                             "this model is 0; set a model dropout (--config), or leave --rdrop out")  # fmt: skip
        optimiser = _optimiser(network, args)
        state = _State()
        checkpoint_dir, best_dir = work / "checkpoint", work / "best"
        resumed = False
        if resume and has_checkpoint(work):
            state = _load_state(checkpoint_dir, network, optimiser, info.rank)
            self._check_process_count(state, network, args, work, info)
            if not info.main:  # rank 0 holds the epoch's loss totals of every rank so far
                state.loss_sum, state.loss_count = 0.0, 0
            elif state.world_size and state.world_size != info.world_size:
                # Every rank counted every step: the saved steps weigh as many ranks as now count each step
                # (a resumed epoch's mean had weighed them by the old count: 0.20 or 0.08 for 0.12)
                steps = state.loss_count // state.world_size
                state.loss_sum *= info.world_size / state.world_size
                state.loss_count = steps * info.world_size
            resumed = True  # said once the epochs are known (below)
        elif info.main:
            if resume:
                _log("note: the interrupted run stopped before it saved any training state: this one starts from the "
                     "beginning", info)  # fmt: skip
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            task.save_state(work)
            atomic_write_json(work / "run.json", {**identity, "training": dataclasses.asdict(args),
                                                  "overwrite": overwrite, "data_sha256": data,
                                                  "job": _elastic_job()})  # fmt: skip
        state.world_size = info.world_size  # recorded with every checkpoint from here on
        _barrier(info)
        trainable: nn.Module = network
        if info.world_size > 1:
            trainable = nn.parallel.DistributedDataParallel(network)
        adversary = _adversary(network, args)

        steps_per_epoch = math.ceil(task.train_size / args.batch_size)
        epochs = args.epochs
        if args.max_steps:  # a budget in steps: fewer epochs on a large data set, never a cut epoch
            epochs = max(1, min(epochs, math.ceil(args.max_steps / steps_per_epoch)))
        if state.planned_epochs:  # a resumed run keeps the plan its time budget made
            epochs = state.planned_epochs
        if resumed:
            trained = state.step_in_epoch == 0 and (state.epoch >= epochs or bool(
                args.patience and state.bad_epochs >= args.patience))  # stopped as its last epoch ended
            _log("resuming: its epochs are trained; scoring and writing the model" if trained else
                 f"resuming from epoch {state.epoch + 1}, step {state.step_in_epoch}", info)  # fmt: skip
        planned_steps = _planned_steps(state, steps_per_epoch)
        total_steps = planned_steps or steps_per_epoch * epochs
        probe_at = min(BUDGET_PROBE_STEPS, steps_per_epoch) if args.time_budget else 0  # planned in epoch 1
        probe_start = None
        probe_seconds = 0.0  # the probe's dev evaluation, inside the first epoch but not part of its pace
        purge = state.global_step + 1 if resume else None
        writer = _tensorboard(work / "runs", purge_step=purge) if info.main else None
        autocast = torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16,
                                  enabled=args.precision == "bf16")  # fmt: skip
        held_out = task.splits()
        if "dev" not in held_out:
            _log("note: no dev examples: the epoch with the lowest training loss is kept, and early stopping "
                 "watches the training loss, which rewards over-fitting; give the data dev rows", info)  # fmt: skip
        interrupted: dict[str, Any] = {"flag": False, "at": 0.0}
        previous_handlers = _install_stop_signals(interrupted, info)
        try:
            for epoch in range(state.epoch, epochs):
                if args.patience and state.bad_epochs >= args.patience and state.step_in_epoch == 0:
                    break  # stopped early before an interruption while scoring: --resume only scores
                lengths = task.lengths() if args.group_by_length else None
                batches = epoch_batches(task.train_size, args, epoch, info, lengths)
                if planned_steps:  # the budget's last epoch may be cut
                    batches = batches[: max(1, planned_steps - epoch * steps_per_epoch)]
                task.start_epoch(epoch)
                trainable.train()
                whole_epoch = state.step_in_epoch == 0  # not the rest of an interrupted one
                epoch_start = time.perf_counter() - (0.0 if whole_epoch else state.epoch_seconds)
                losses: list[float] = []
                if whole_epoch:
                    state.loss_sum, state.loss_count = 0.0, 0
                bar = _progress(range(state.step_in_epoch, len(batches)), len(batches), state.step_in_epoch,
                                f"epoch {epoch + 1}/{epochs}", args.progress and info.main)  # fmt: skip
                for b in bar:
                    step_clock = time.perf_counter()
                    batch = task.train_batch(batches[b])
                    for group in optimiser.param_groups:
                        group["lr"] = args.lr * _scheduled_lr(state.global_step, total_steps, args, state)
                    with autocast:
                        loss = task.loss(trainable, batch)
                    if not isinstance(loss, Tensor) or loss.numel() != 1:  # a float had failed on .item(), unnamed
                        shown = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(
                            loss).__name__  # fmt: skip
                        raise TypeError(f"{type(task).__name__}.loss returned {shown}; it returns the batch's loss as "
                                        "a one-element tensor that backward() can follow")  # fmt: skip
                    extra = auxiliary_loss(network)
                    total = loss if extra is None else loss + extra
                    value, extra_value = (loss.item(), None) if extra is None else torch.stack(
                        [loss.detach().float(), extra.detach().float()]).tolist()  # one host sync  # fmt: skip
                    finite = math.isfinite(value) and (extra_value is None or math.isfinite(extra_value))
                    # Under torchrun the ranks agree before backward (its gradient all-reduce would
                    # otherwise carry one rank's NaN into every model, or leave the others waiting): on a
                    # non-finite loss anywhere, and on a stop asked of any rank (applied after this step).
                    asked_to_stop = bool(interrupted["flag"])
                    if info.world_size > 1:
                        finite, asked_to_stop = _agree(finite, asked_to_stop)
                    if not finite:
                        raise TrainingDiverged(
                            f"the loss became non-finite at step {state.global_step + 1} (epoch {epoch + 1}; "
                            f"training loss {value}, auxiliary loss {extra_value}"
                            f"{' on this process' if info.world_size > 1 else ''}); the step was not applied and "
                            f"no model was written from it (any checkpoint in {work} is from before it). Lower "
                            "--lr, train in fp32, or check the model options"
                        )
                    optimiser.zero_grad(set_to_none=True)
                    total.backward()
                    if adversary is not None:
                        adversarial_loss = functools.partial(_autocast_loss, task, trainable, batch, autocast)
                        adversarial = adversary.step(adversarial_loss)
                        if writer is not None and adversarial is not None:
                            # at the step it is part of (the increment comes after), as train/loss is
                            writer.add_scalar("train/adversarial_loss", adversarial, state.global_step + 1)
                    if args.grad_clip > 0:
                        nn.utils.clip_grad_norm_(network.parameters(), args.grad_clip)
                    optimiser.step()
                    clamp_spans(network)  # back into [0, max_span], where a span has a gradient again
                    losses.append(value)
                    state.loss_sum, state.loss_count = state.loss_sum + value, state.loss_count + 1
                    state.step_in_epoch = b + 1
                    state.global_step += 1
                    if probe_at and not state.planned_epochs:
                        if probe_start is None:  # from the end of this process's first step (its warm-up
                            # not counted), unless that step is the whole probe (an epoch of one step,
                            # which timed nothing: "0.000 s per step"): then from its start
                            whole = state.global_step >= probe_at
                            probe_start = (step_clock, state.global_step - 1) if whole else (
                                time.perf_counter(), state.global_step)
                        if state.global_step >= probe_at:
                            planned_steps, probe_seconds = self._plan(network, trainable, state, probe_start,
                                                                      steps_per_epoch, epochs, args, info)  # fmt: skip
                            _join_plan(state, total_steps, planned_steps, args)
                            epochs, total_steps = state.planned_epochs, planned_steps
                            if hasattr(bar, "set_description"):  # it had read "epoch 1/5" with 2 planned
                                bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
                    if hasattr(bar, "set_postfix"):  # shown at the bar's next redraw, not forcing one each step
                        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
                    if writer is not None:
                        writer.add_scalar("train/loss", value, state.global_step)
                        if extra_value is not None:
                            writer.add_scalar("train/auxiliary_loss", extra_value, state.global_step)
                        writer.add_scalar("train/lr", optimiser.param_groups[0]["lr"], state.global_step)
                    stop_now = asked_to_stop or bool(
                        args.stop_after_steps and state.global_step >= args.stop_after_steps
                    )
                    if state.global_step % args.checkpoint_every == 0 or stop_now:
                        rng = _rng_states(info)
                        loss_sum, loss_count = _loss_totals(state, info)  # every rank's, saved by rank 0
                        if info.main:
                            saved = dataclasses.replace(state, loss_sum=loss_sum, loss_count=loss_count,
                                                        epoch_seconds=time.perf_counter() - epoch_start)  # fmt: skip
                            _save_state(checkpoint_dir, network, optimiser, saved, rng)
                        _barrier(info)
                    if stop_now:
                        raise TrainingInterrupted(
                            f"interrupted at step {state.global_step}; training state saved in {work}: "
                            "run the same command with --resume (resume=True from Python) to continue"
                        )
                if hasattr(bar, "close"):
                    bar.close()

                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "step": state.global_step,
                    "train_loss": _epoch_loss(state, info),
                    "seconds": round(time.perf_counter() - epoch_start, 2),
                    "lr": optimiser.param_groups[0]["lr"],
                }
                dev_clock = time.perf_counter()
                if "dev" in held_out:
                    dev = _evaluate(task, network, "dev", args.eval_batch_size)
                    record |= task.epoch_record(dev)
                    score, dev_loss = float(dev[task.selection]), float(dev["loss"])
                    if math.isnan(score):  # e.g. AUC over a dev split of one label: the dev loss decides
                        if not state.history or not math.isnan(state.history[-1].get(f"dev_{task.selection}", 0)):
                            _log(f"note: dev {task.selection} is undefined (NaN; a dev split of one label?), so "
                                 "the dev loss picks the epoch", info)  # fmt: skip
                        score = -float("inf")
                else:
                    score, dev_loss = -float(record["train_loss"] or 0.0), float("inf")
                # A better score wins; a tie (common once a dev metric saturates) goes to the lower dev loss.
                improved = _beats(score, state.best_score) or (
                    _ties(score, state.best_score) and dev_loss < state.best_loss
                )
                if improved:
                    state.best_score, state.best_loss, state.best_epoch, state.bad_epochs = (
                        score, dev_loss, epoch + 1, 0
                    )  # fmt: skip
                    if info.main:
                        best_dir.mkdir(parents=True, exist_ok=True)
                        save_weights(network, best_dir / "model.safetensors")
                else:
                    state.bad_epochs += 1
                record["best"] = improved
                state.history.append(record)
                state.epoch, state.step_in_epoch, state.epoch_seconds = epoch + 1, 0, 0.0
                now = time.perf_counter()
                epoch_seconds, dev_s = now - epoch_start, now - dev_clock
                state.budget_seconds += epoch_seconds
                if state.planned_epochs and args.time_budget and whole_epoch and state.epoch < epochs:
                    planned_steps = self._replan(state, (epoch_seconds - dev_s - probe_seconds) / len(batches),
                                                 dev_s, steps_per_epoch, args, info)  # fmt: skip
                    _join_plan(state, total_steps, planned_steps, args)
                    epochs, total_steps = state.planned_epochs, planned_steps
                probe_seconds = 0.0
                rng = _rng_states(info)
                if info.main:
                    line = dumps_json(record)  # an undefined figure (AUC of one class) is null, not NaN
                    print(line, file=sys.stderr, flush=True)
                    with open(work / "train_log.jsonl", "a", encoding="utf-8") as log:
                        log.write(line + "\n")
                    if writer is not None:
                        for key, value in record.items():
                            # at the epoch's last step, on the train curves' axis (at epoch + 1 they had sat in the
                            # first steps' corner); an undefined figure (NaN: a dev split of one label's GAUC) is
                            # left out, as the log has it null, not drawn as NaN
                            if key.startswith("dev_") and isinstance(value, int | float) and math.isfinite(value):
                                writer.add_scalar(key.replace("_", "/", 1), value, state.global_step)
                    if args.average_checkpoints > 1 and "dev" in held_out:
                        _keep_epoch_weights(work / "epochs", network, epoch + 1, args.average_checkpoints)
                    _save_state(checkpoint_dir, network, optimiser, state, rng)
                _barrier(info)
                if self.on_epoch is not None:
                    try:
                        self.on_epoch(copy.deepcopy(record))  # a copy: a change to it had changed the run's
                        # history, and a value JSON cannot hold or a key removed failed the run after it
                    except KeyboardInterrupt:  # a notebook's stop button, or a callback that stops the run
                        raise TrainingInterrupted(
                            f"interrupted after epoch {state.epoch}; training state saved in {work}: run the same "
                            "command with --resume (resume=True from Python) to continue"
                        ) from None
                # A stop asked while the epoch ended (its dev evaluation) stops here, its state saved: after the
                # last epoch it had been said ("stopping after this step") and then ignored, the test split
                # scored (minutes of beam search for a translator) and the model written past a scheduler's grace.
                asked_to_stop = bool(interrupted["flag"])
                if info.world_size > 1:
                    _, asked_to_stop = _agree(True, asked_to_stop)
                if asked_to_stop:
                    done = state.epoch >= epochs or bool(args.patience and state.bad_epochs >= args.patience)
                    then = "to score and write the model" if done else "to continue"
                    raise TrainingInterrupted(
                        f"interrupted after epoch {state.epoch}; training state saved in {work}: run the same "
                        f"command with --resume (resume=True from Python) {then}"
                    )
                if state.epoch >= epochs:  # the last planned (the time budget's plan may end the run before
                    break  # args.epochs): no "early stopping" said of a run that ended on plan
                if args.patience and state.bad_epochs >= args.patience:
                    _log(f"early stopping: dev {task.selection} has not improved for {args.patience} epochs", info)
                    break
        except (ValueError, OSError) as exc:
            if info.world_size > 1 and not getattr(exc, "every_rank", False):
                exc.one_rank = True  # type: ignore[union-attr]  # met by this rank alone: it says so (the CLI)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C, or a notebook's stop button: said what --resume has
            if has_checkpoint(work):
                raise TrainingInterrupted(
                    f"at once: the steps since the last saved state are lost; that state is in {work}: run the same "
                    "command with --resume (resume=True from Python) to continue from it"
                ) from None
            raise TrainingInterrupted(  # it had said "interrupted", and --resume started again without a word
                f"at once, before any training state was saved (one is saved every {args.checkpoint_every} steps, at "
                "each epoch's end, and after the step a single Ctrl-C lets finish): run the command again to start "
                "over"
            ) from None
        finally:
            for number, handler in previous_handlers.items():
                signal.signal(number, handler)
            if writer is not None:
                writer.close()

        # Final: best weights, metrics on the last held-out split, the model directory.
        try:
            _barrier(info)
            if (best_dir / "model.safetensors").exists():
                network.load_state_dict(load_file(str(best_dir / "model.safetensors")))
            _barrier(info)  # every rank has read the best weights before rank 0 tidies them away
            averaging = None
            if args.average_checkpoints > 1 and "dev" in held_out:
                averaging = _try_average(task, network, work / "epochs", state, args, info)
                _barrier(info)  # every rank has read the epochs' weights before rank 0 tidies them away
            final_split = "test" if "test" in held_out else "dev" if "dev" in held_out else "train"
            metrics = _evaluate(task, network, final_split, args.eval_batch_size)
            metrics |= {"split": final_split, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
                        "processes": info.world_size}  # fmt: skip
            if state.planned_epochs:
                metrics["planned_epochs"] = state.planned_epochs
                metrics["planned_steps"] = planned_steps
            if averaging is not None:
                metrics["checkpoint_average"] = averaging
            if info.main:
                metrics |= task.reference_metrics(final_split)
            seconds = [h["seconds"] for h in state.history]
            metrics["seconds_per_epoch"] = float(np.mean(seconds)) if seconds else None
            report = task.report(metrics, final_split)
        except KeyboardInterrupt:  # the training is done and saved: --resume only scores and writes it
            raise TrainingInterrupted(
                f"interrupted while scoring the trained model; its training state is saved in {work}: run the "
                "same command with --resume (resume=True from Python) to finish"
            ) from None
        if info.main:
            try:  # checked again: a model may have been put there while this one trained
                writer = ArtifactWriter(out, overwrite=overwrite)
            except ModelDirError as exc:
                raise appeared_meanwhile(exc, f"the trained model is kept in {work}") from None
            moved: list[str] = []
            try:
                with writer as staged:
                    staged.save_weights(network)
                    entries = task.write(staged, network, metrics)
                    if not isinstance(entries, dict):  # a forgotten `return {}` had been "'NoneType' object is
                        raise TypeError(f"{type(task).__name__}.write returned {type(entries).__name__}, expected "
                                        "a dict of config.json entries ({} for none)")  # not iterable"  # fmt: skip
                    own = {"task", "attend_version", "model", "training", "files", "weights_sha256"}
                    if taken := sorted(own & set(entries)):  # they had replaced the Trainer's, and loading failed
                        raise ValueError(f"{type(task).__name__}.write returned {taken}, config.json entries the "
                                         "Trainer writes itself; name the task's own entries otherwise")  # fmt: skip
                    try:  # a Path or a set had failed config.json's writing with a bare TypeError
                        finite_json(entries)
                    except ValueError as error:
                        raise ValueError(f"{type(task).__name__}.write returned an entry config.json cannot hold: "
                                         f"{error}") from None  # fmt: skip
                    if not (staged.path / "metrics.json").exists():  # what Runtime.metrics() reads
                        staged.write_json("metrics.json", metrics)
                    for name in ("train_log.jsonl", "runs"):
                        if (work / name).exists():
                            os.replace(work / name, staged.path / name)
                            moved.append(name)
                    config = {"task": task.name, "attend_version": __version__, "model": config_dict, **entries,
                              "training": dataclasses.asdict(args)}  # fmt: skip
                    try:
                        staged.publish(config)
                    except BaseException:
                        # Swapped in, the model is published: what was cut short is removing the old
                        # one (the staging folder holds it now, with the old run's log), and the run is
                        # done. Not published (Ctrl-C, a full disk): the run's log and TensorBoard events
                        # go back to its state for --resume; leaving, the writer removes its staging
                        # folder, and they had gone with it.
                        if not staged.in_place():
                            for name in moved:
                                with contextlib.suppress(OSError):
                                    os.replace(staged.path / name, work / name)
                            raise
            except KeyboardInterrupt:
                raise TrainingInterrupted(
                    f"interrupted while writing the trained model; its training state is saved in {work}: run the "
                    "same command with --resume (resume=True from Python) to finish"
                ) from None
            try:
                shutil.rmtree(work, ignore_errors=True)
            except KeyboardInterrupt:  # the model is written: its state goes as after any run (a rerun was refused)
                shutil.rmtree(work, ignore_errors=True)
        _barrier(info)
        return TrainResult(model_dir=out, metrics=metrics, history=state.history, report=report, is_main=info.main)

    def _plan(
        self,
        network: nn.Module,
        trainable: nn.Module,
        state: _State,
        probe_start: tuple[float, int],
        steps_per_epoch: int,
        epochs: int,
        args: TrainingArgs,
        info: _Dist,
    ) -> tuple[int, float]:
        """Time one dev evaluation after the probe's steps and fix the steps that fit the budget
        (:func:`steps_in_budget`; returned with the evaluation's seconds).

        The evaluation draws no random numbers the run would (the RNG is forked around it), so
        the run goes on as it would have. Under torchrun rank 0's plan is every rank's. ``args``
        are the run's own (a resumed run's are those it was started with).
        """
        task = self.task
        started, first_step = probe_start
        timed_steps = state.global_step - first_step
        seconds_per_step = (time.perf_counter() - started) / max(1, timed_steps)
        dev_s = 0.0
        if "dev" in task.splits():
            with torch.random.fork_rng(devices=[]):
                clock = time.perf_counter()
                _evaluate(task, network, "dev", args.eval_batch_size)
                dev_s = time.perf_counter() - clock
            trainable.train()
        fitting = steps_in_budget(args.time_budget * 60 - dev_s, seconds_per_step, dev_s, steps_per_epoch, epochs)
        planned = _shared(max(steps_per_epoch, fitting), info)  # at least one whole epoch
        _set_plan(state, planned, steps_per_epoch)
        cut = f", not {epochs}" if planned < epochs * steps_per_epoch else ""
        pace = f"({seconds_per_step:.3f} s per step, {dev_s:.1f} s per dev evaluation)"
        if fitting < steps_per_epoch:  # it said "1 epoch(s) fit" of an epoch three times the budget
            needed = steps_per_epoch * seconds_per_step + dev_s
            _log(f"time budget {_minutes(args.time_budget)} min: not even one epoch fits; one whole epoch is the least "
                 f"a run trains, about {_span(needed)} {pace}", info)  # fmt: skip
        else:
            _log(f"time budget {_minutes(args.time_budget)} min: {describe_steps(planned, steps_per_epoch)} fit{cut} "
                 f"{pace}", info)  # fmt: skip
        return planned, dev_s

    @staticmethod
    def _check_process_count(state: _State, network: nn.Module, args: TrainingArgs, work: Path, info: _Dist) -> None:
        """Refuse to resume under another process count where that changes the run: each process
        draws its own dropout masks (and augmentations), and its saved random stream goes on only
        under the same count (1 process resumed as 2 matched neither run: 0.780, against 0.767 with
        2 and 0.787 with 1). Without randomness N processes take one process's steps, so it goes on;
        an elastic restart with fewer processes goes on too, said (refusing would use up the
        restarts). A checkpoint that predates the record is not checked."""
        saved = state.world_size
        if not saved or saved == info.world_size:
            return

        def procs(n: int) -> str:
            return f"{n} process{'es' if n != 1 else ''}"

        said = f"the interrupted run trained with {procs(saved)}, this one has {procs(info.world_size)}"
        if not (_has_dropout(network) or args.augment):
            _log(f"note: {said}; the model draws no random numbers, so the steps are the same", info)
        elif _elastic_restart():
            _log(f"note: {said} (an elastic restart): the figures will differ from either count's, as another seed's",
                 info)  # fmt: skip
        else:
            raise DataError(f"{work}: {said}, and its random draws (dropout, augmentation) differ by process count: "
                            "resume with the same count (torchrun --nproc-per-node and --nnodes, or a single "
                            "process), or start again without --resume")  # fmt: skip

    def _replan(
        self,
        state: _State,
        seconds_per_step: float,
        dev_s: float,
        steps_per_epoch: int,
        args: TrainingArgs,
        info: _Dist,
    ) -> int:
        """After a whole epoch: cut the plan when the steps left no longer fit the time budget at
        the pace of this epoch's steps and dev evaluation (a machine that slowed down). The
        learning-rate schedule then spans the new plan, so its decay steps ahead. Never extended;
        under torchrun rank 0 decides. Returns the planned steps."""
        planned = _planned_steps(state, steps_per_epoch)
        left_s = args.time_budget * 60 - state.budget_seconds
        done = state.epoch * steps_per_epoch
        epochs_left = state.planned_epochs - state.epoch
        fitting = done + steps_in_budget(left_s, seconds_per_step, dev_s, steps_per_epoch, epochs_left)
        new = _shared(min(planned, fitting), info)
        if new < planned:
            _log(f"time budget: epoch {state.epoch} ran at {seconds_per_step:.3f} s per step and {dev_s:.1f} s per "
                 f"dev evaluation, so the {_span(max(0.0, left_s))} left fit {new - done} more steps: "
                 f"{describe_steps(new, steps_per_epoch)} in all, instead of "
                 f"{describe_steps(planned, steps_per_epoch)}", info)  # fmt: skip
            _set_plan(state, new, steps_per_epoch)
        return new

    def _resumable_run(self, out: Path) -> dict[str, Any]:
        """The interrupted run's record, after checking this run is the same one."""
        run = run_record(out)
        if run is None:
            raise nothing_to_resume(out)
        now = self.task.same_identity(_identity(self.task))
        recorded = self.task.same_identity(run)
        # What a run from before a key was recorded did not record is not compared (the columns a
        # classifier read, recorded since 2026-12-06); what makes the model is always compared.
        compared = {key: value for key, value in now.items() if key in recorded or key in _ALWAYS_COMPARED}
        if "split_scheme" in now and comparable(run.get("split_scheme")) != comparable(now["split_scheme"]):
            # attend's own rule changed, not the user's command: "these differ: split_scheme=3" had said no more
            raise DataError(f"{out}: the interrupted run split its data by an earlier rule of attend's (split scheme "
                            f"{run.get('split_scheme') or 1}; this attend splits by {now['split_scheme']}), so its "
                            "training rows could be this run's dev or test rows: it cannot be resumed; start again "
                            "with --overwrite (overwrite=True from Python)")  # fmt: skip
        changed = _changes(recorded, compared)
        if changed:
            raise DataError(f"{out}: --resume must use the same model and data as the interrupted run; these differ: "
                            f"{'; '.join(changed)}")  # fmt: skip
        return run


#: Identity keys compared on a resume even where the interrupted run's record lacks them.
_ALWAYS_COMPARED = frozenset({"task", "model", "model_options", "max_train", "data", "split_scheme"})

#: Training options a resumed run may change: how it shows progress, its threads, where it stops.
RESUME_MAY_CHANGE = frozenset({"progress", "threads", "stop_after_steps"})


def explicit_options(args: TrainingArgs) -> dict[str, Any]:
    """The options of ``args`` set away from their defaults (the ones a user chose)."""
    defaults = dataclasses.asdict(TrainingArgs())
    return {key: value for key, value in dataclasses.asdict(args).items() if value != defaults[key]}


def _changes(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key=value (the interrupted run had old)`` for each key of ``now`` the interrupted run recorded otherwise."""
    return [f"{key}={value!r} (the interrupted run had {then.get(key)!r})" for key, value in now.items()
            if comparable(then.get(key)) != comparable(value)]  # fmt: skip


def _resumed_args(out: Path, recorded: dict[str, Any], given: TrainingArgs,
                  chosen: frozenset[str] | None = None) -> TrainingArgs:  # fmt: skip
    """The interrupted run's options, with this run's progress and threads where given. An option given now
    (``chosen``, else one set away from its default) must equal the recorded one: a resumed run
    cannot change them."""
    now = dataclasses.asdict(given)
    options = explicit_options(given) if chosen is None else {key: now[key] for key in chosen}
    changed = _changes(recorded, {k: v for k, v in options.items() if k not in RESUME_MAY_CHANGE})
    if changed:
        raise DataError(f"{out}: --resume continues the interrupted run with its own options; these differ: "
                        f"{'; '.join(changed)}. Leave them out, or start again with --overwrite (overwrite=True from "
                        "Python)")  # fmt: skip
    # What may change changes only when given: --threads left out keeps the interrupted run's.
    kept = {key: now[key] for key in RESUME_MAY_CHANGE if key in options}
    return TrainingArgs.from_dict({**recorded, **kept})


def _raised_in_exchange(exc: BaseException) -> bool:
    """Whether ``exc`` came from ``torch.distributed`` (a collective, the process group's store); not
    a GPU out of memory inside an all-reduce, which is no peer's doing."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    if isinstance(exc, dist.DistError):
        return True
    frame, tb = "", exc.__traceback__
    while tb is not None:
        frame, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    return f"{os.sep}torch{os.sep}distributed{os.sep}" in frame


def _exchange_failure(exc: BaseException, work: Path) -> str:
    """What an :class:`ExchangeFailed` says: the backend's own words (gloo's first sentence, without
    its source location) and what comes next, a restart by torchrun or ``--resume``."""
    said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    said = re.sub(r"^\[[^\]]*\]\s*", "", said).split(". ")[0].rstrip(".")
    if restarts_left():
        after = "torchrun restarts the group (--max-restarts), which resumes from the state saved last by itself"
    elif has_checkpoint(work):
        after = f"the state saved last is in {work}: run the same torchrun command with --resume to continue from it"
    else:
        after = "no training state was saved yet: run the same torchrun command again to start over"
    return (f"an exchange with the other torchrun processes failed ({said}): typically another process stopped, and "
            f"its log says why; {after}")


def has_checkpoint(work: Path) -> bool:
    """Whether a run's state directory holds a checkpoint (or the previous one, mid-save) to resume from."""
    return any((work / name).exists() for name in ("checkpoint", "checkpoint.old"))


def train_translation(
    data: str | os.PathLike[str] | ParallelTexts,
    out: str | os.PathLike[str],
    *,
    model_options: dict[str, Any] | None = None,
    args: TrainingArgs | dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    source_col: str = "source",
    target_col: str = "target",
    split_col: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a translator on sentence pairs and write its model directory; the body of ``attend train --model seq2seq``.

    ``args``: a :class:`~attend.training.TrainingArgs`, or a dict of only the options chosen
    (as ``attend train`` gives them), over :data:`TRANSLATION_DEFAULTS`; default: those defaults.
    With ``resume``, the options chosen must be the interrupted run's; the columns left at their
    defaults and ``model_options`` left out are taken from it (as ``attend train --resume`` does).
    """
    columns = {"source_col": source_col, "target_col": target_col, "split_col": split_col}
    run = run_record(out) if resume else None
    if run is not None and run.get("task") == "translation":
        for key, default in (("source_col", "source"), ("target_col", "target"), ("split_col", None)):
            if columns[key] == default and key in run:
                columns[key] = run[key]
        if not model_options:
            model_options = run.get("model_options") or None
    task = TranslationTask(data, model_options=model_options, **columns)
    given: frozenset[str] | None = None
    if args is None or isinstance(args, dict):
        given = frozenset(args or {})
        args = TrainingArgs.from_dict({**TRANSLATION_DEFAULTS, **(args or {})})
    return Trainer(task, args, on_epoch=on_epoch, given=given).fit(out, resume=resume, overwrite=overwrite)
