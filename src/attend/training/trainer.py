"""Train and evaluate attention classifiers on a user's labelled text.

:func:`train` goes from a data file (or a bundled dataset name) to a model directory:
split, tokenizer, model, AdamW with warm-up and decay, gradient clipping, early stopping on
dev macro-F1, checkpoints that ``resume=True`` continues from (same seed, same result), a
progress bar, TensorBoard and a JSON log line per epoch, and distributed data-parallel when
launched by ``torchrun``. :func:`evaluate` scores a saved model on labelled data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from attend import __version__
from attend.config import check_positive, check_unit_interval, strict_from_dict
from attend.data.readers import DataError, LabelledTexts, read_table, stratified_split
from attend.data.tokenization import TextTokenizer
from attend.inference import Predictor, load
from attend.io import atomic_write_json, save_weights, sha256_file
from attend.models import MODELS, build, config_from_dict
from attend.training.metrics import classification_metrics, format_report, save_confusion_png

__all__ = [
    "TrainResult",
    "TrainingArgs",
    "TrainingInterrupted",
    "evaluate",
    "label_targets",
    "load_labelled",
    "rebuild_split",
    "score_probabilities",
    "train",
]


class TrainingInterrupted(Exception):
    """Training stopped early (Ctrl-C, or ``stop_after_steps``); its state is saved for ``resume``."""


@dataclass
class TrainingArgs:
    """How to train. Every field is saved in the model's ``config.json``.

    Attributes:
        epochs: Maximum passes over the training split.
        batch_size: Examples per optimiser step (the global batch, shared out under torchrun).
        lr: Peak learning rate of AdamW. None picks by model: 1e-3 for a model trained from
            scratch, 5e-5 for fine-tuning pretrained weights (a from-scratch rate would wreck them).
        weight_decay: AdamW's decoupled weight decay.
        warmup_ratio: Fraction of all steps spent warming the learning rate up from zero.
        schedule: Decay after warm-up: ``"cosine"``, ``"linear"`` or ``"constant"``.
        grad_clip: Clip the gradient norm to this (0 disables).
        patience: Stop after this many epochs without a better dev macro-F1 (0 disables); the
            epoch kept is the one with the best dev macro-F1, ties going to the lower dev loss.
        class_weights: Weight the loss by inverse class frequency, for imbalanced labels.
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
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    schedule: str = "cosine"
    grad_clip: float = 1.0
    patience: int = 2
    class_weights: bool = False
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
        check_positive(self, "epochs", "batch_size", "max_length", "vocab_size", "eval_batch_size",
                       "checkpoint_every")  # fmt: skip
        if self.lr is not None:
            check_positive(self, "lr")
        check_unit_interval(self, "warmup_ratio")
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule={self.schedule!r}; choose 'cosine', 'linear' or 'constant'")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r}; choose 'fp32' or 'bf16'")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArgs:
        return strict_from_dict(cls, data, what="training option")


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    report: str = ""
    #: False on the non-zero ranks of a torchrun job, which should stay quiet.
    is_main: bool = True


# --- data -----------------------------------------------------------------------------------


def load_labelled(
    data: str | os.PathLike[str],
    *,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    multi_label: bool = False,
    label_sep: str | None = None,
) -> LabelledTexts:
    """Read a data file, or load a bundled dataset when ``data`` names one."""
    path = Path(data)
    if path.exists():
        return read_table(
            path, text_col=text_col, label_col=label_col, split_col=split_col, multi_label=multi_label,
            label_sep=label_sep,
        )  # fmt: skip
    from attend.data.datasets import DATASETS, load_dataset

    if str(data) in DATASETS:
        dataset = load_dataset(str(data))
        return LabelledTexts(
            texts=dataset.texts,
            labels=[[label] for label in dataset.labels],
            lines=list(range(1, len(dataset.texts) + 1)),
            source=f"dataset:{data}",
        )
    raise DataError(f"{data}: no such file, and no bundled dataset of that name (see `attend datasets`)")


def _label_targets(
    labels: list[list[str]], names: list[str], multi_label: bool, source: str, lines: list[int]
) -> Tensor:
    index = {name: i for i, name in enumerate(names)}
    for row, row_labels in enumerate(labels):
        for label in row_labels:
            if label not in index:
                where = f"line {lines[row]}" if lines else f"row {row + 1}"
                raise DataError(
                    f"{source}: {where} has label {label!r}, which the model was not trained on "
                    f"(known: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''})"
                )
    if multi_label:
        targets = torch.zeros(len(labels), len(names))
        for row, row_labels in enumerate(labels):
            targets[row, [index[label] for label in row_labels]] = 1.0
        return targets
    return torch.tensor([index[row_labels[0]] for row_labels in labels], dtype=torch.long)


class _Encoded:
    """One split, tokenised once; batches are padded on the fly."""

    def __init__(self, tokenizer: TextTokenizer, texts: list[str], targets: Tensor) -> None:
        self.tokenizer = tokenizer
        self.ids = tokenizer.ids(texts)
        self.targets = targets

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        batch = self.tokenizer.pad([self.ids[i] for i in indices])
        batch["labels"] = self.targets[list(indices)]
        return batch


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
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(rank=dist.get_rank(), world_size=dist.get_world_size())


def _barrier(info: _Dist) -> None:
    if info.world_size > 1:
        dist.barrier()


# --- optimisation -----------------------------------------------------------------------------


def _lr_factor(step: int, total: int, args: TrainingArgs) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then the chosen decay."""
    warmup = int(args.warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    if args.schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if args.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _epoch_batches(n: int, args: TrainingArgs, epoch: int, info: _Dist) -> list[list[int]]:
    """This rank's batches for one epoch: a function of (seed, epoch), so a resumed run replays it.

    ``batch_size`` is the global batch: under torchrun each rank takes an equal share of every
    global batch and DDP averages the gradients, so N processes take the same optimiser steps
    on the same examples as one process would, and reach the same quality.
    """
    generator = torch.Generator().manual_seed(args.seed * 100003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    batches = [order[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    if info.world_size == 1:
        return batches
    shares = []
    for batch in batches:
        if len(batch) < info.world_size:  # a short last batch: repeat it so no rank is idle
            batch = (batch * info.world_size)[: info.world_size]
        shares.append(batch[info.rank :: info.world_size])
    return shares


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
    assert args.lr is not None  # resolved by train()
    return torch.optim.AdamW(groups, lr=args.lr, fused=True)


def _loss(logits: Tensor, targets: Tensor, multi_label: bool, class_weights: Tensor | None) -> Tensor:
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=class_weights)
    return F.cross_entropy(logits.float(), targets, weight=class_weights)


# --- resumable state --------------------------------------------------------------------------


@dataclass
class _State:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -1.0
    best_loss: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


def _save_state(directory: Path, model: nn.Module, optimiser: torch.optim.Optimizer, state: _State) -> None:
    """Write model, optimiser and RNG state as safetensors + JSON; swap the directory in whole."""
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_weights(model, staging / "model.safetensors")
    opt_state = optimiser.state_dict()
    tensors: dict[str, Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, Any] = {}
    for index, slots in opt_state["state"].items():
        for slot, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optimiser.{index}.{slot}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{slot}"] = value
    save_file(tensors, str(staging / "optimiser.safetensors"))
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


def _load_state(directory: Path, model: nn.Module, optimiser: torch.optim.Optimizer) -> _State:
    if not directory.exists() and directory.with_name(directory.name + ".old").exists():
        directory = directory.with_name(directory.name + ".old")  # a crash between the two renames
    try:
        payload = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        if payload["state"].get("finished"):
            raise DataError(f"{directory.parent}: that run already finished; train again without --resume")
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        tensors = load_file(str(directory / "optimiser.safetensors"))
    except DataError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise DataError(f"{directory}: cannot resume, the checkpoint is unreadable ({exc})") from None
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimiser."):
            _, index, slot = key.split(".", 2)
            slots.setdefault(int(index), {})[slot] = value
    for key, value in payload["scalars"].items():
        index, slot = key.split(".", 1)
        slots.setdefault(int(index), {})[slot] = value
    optimiser.load_state_dict({"state": slots, "param_groups": payload["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return _State(**payload["state"])


# --- evaluation -------------------------------------------------------------------------------


@torch.inference_mode()
def _predict(model: nn.Module, data: _Encoded, batch_size: int, multi_label: bool) -> np.ndarray:
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    outputs: list[Tensor] = []
    for start in range(0, len(order), batch_size):
        batch = data.batch(order[start : start + batch_size])
        logits = model(batch).logits.float()
        outputs.append(torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1))
    stacked = torch.cat(outputs).numpy()
    probs = np.zeros_like(stacked)
    probs[order] = stacked
    return probs


def _log_loss(probs: np.ndarray, targets: Tensor, multi_label: bool) -> float:
    """Mean cross-entropy (binary cross-entropy per label when multi-label) of predicted probabilities."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)
    if multi_label:
        y = targets.numpy().astype(np.float64)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(p)), targets.numpy()]).mean())


def _metrics(probs: np.ndarray, targets: Tensor, labels: list[str], multi_label: bool) -> dict[str, Any]:
    if multi_label:
        return classification_metrics(targets.numpy().astype(int), (probs >= 0.5).astype(int), labels)
    return classification_metrics(targets.numpy(), probs.argmax(1), labels)


# --- the loop ---------------------------------------------------------------------------------


def _log(message: str, info: _Dist) -> None:
    if info.main:
        print(message, file=sys.stderr, flush=True)


def _model_config(model_name: str, overrides: dict[str, Any], *, num_labels: int, multi_label: bool,
                  tokenizer: TextTokenizer, args: TrainingArgs) -> dict[str, Any]:  # fmt: skip
    config = {"model_type": model_name, **overrides, "num_labels": num_labels, "multi_label": multi_label}
    config_cls, _ = MODELS[model_name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    if "vocab_size" in fields:
        config["vocab_size"] = tokenizer.vocab_size
        config["pad_id"] = tokenizer.pad_id
    if "max_length" in fields:
        config.setdefault("max_length", args.max_length)
    return config_from_dict(config).to_dict()


def _default_lr(model_name: str, options: dict[str, Any]) -> float:
    """Fine-tuning pretrained weights wants a rate ~20x smaller than training from scratch."""
    config_cls, _ = MODELS[model_name]
    pretrained = "pretrained" in {f.name for f in dataclasses.fields(config_cls)} and options.get("pretrained", True)
    return 5e-5 if pretrained else 1e-3


def _tokenizer_for(model_name: str, texts: list[str], args: TrainingArgs) -> TextTokenizer:
    if model_name == "minilm":
        from attend.models.minilm import tokenizer_path

        return TextTokenizer.from_file(tokenizer_path(), max_length=args.max_length)
    return TextTokenizer.train(texts, vocab_size=args.vocab_size, max_length=args.max_length)


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


@_keeps_thread_count
def train(
    data: str | os.PathLike[str] | LabelledTexts,
    out: str | os.PathLike[str],
    *,
    model: str = "encoder",
    model_options: dict[str, Any] | None = None,
    args: TrainingArgs | None = None,
    resume: bool = False,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    multi_label: bool = False,
    label_sep: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a model on labelled text and write its model directory to ``out``.

    Args:
        data: A data file (CSV/TSV/JSONL/Parquet), a bundled dataset name, or loaded texts.
        out: Model directory to write (created; an existing model there is replaced only
            at the end, or continued with ``resume``).
        model: Registered model name (``encoder``, ``bilstm_attention``, ``minilm``, ...).
        model_options: Model config fields, e.g. ``{"dim": 256, "attention": {"score": "cosine"}}``.
        args: Training options (defaults: :class:`TrainingArgs`).
        resume: Continue the interrupted run whose checkpoint is in ``out``.
        on_epoch: Called with each epoch's log record (for notebooks and tests).

    Returns:
        The model directory, its test metrics (dev if there is no test split) and the history.
    """
    args = args or TrainingArgs()
    info = _init_distributed()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory; choose another output directory")
    checkpoint_dir = out / "checkpoint"
    best_dir = out / "best"
    if resume:
        if not (out / "run.json").exists():
            raise DataError(f"{out}: nothing to resume (no run.json from an earlier `attend train`)")
        run = json.loads((out / "run.json").read_text(encoding="utf-8"))
        if model != run["model"] or (model_options or {}) != run["model_options"]:
            raise DataError(f"{out}: --resume must use the same model and options as the interrupted run")
        # The interrupted run's options, minus the interruption itself.
        args = dataclasses.replace(TrainingArgs.from_dict(run["training"]), stop_after_steps=0)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    if args.lr is None:
        args = dataclasses.replace(args, lr=_default_lr(model, model_options or {}))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    dataset = data if isinstance(data, LabelledTexts) else load_labelled(
        data, text_col=text_col, label_col=label_col, split_col=split_col, multi_label=multi_label,
        label_sep=label_sep,
    )  # fmt: skip
    multi_label_arg = multi_label  # as given: rebuilding the splits reads the data the same way
    multi_label = multi_label or label_sep is not None or any(len(labels) > 1 for labels in dataset.labels)
    train_idx, dev_idx, test_idx = stratified_split(
        dataset, seed=args.seed, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction
    )
    splits = {"train": dataset.subset(train_idx), "dev": dataset.subset(dev_idx), "test": dataset.subset(test_idx)}
    label_names = splits["train"].label_names
    missing = sorted(set(dataset.label_names) - set(label_names))
    if missing:
        raise DataError(f"{dataset.source}: label(s) {missing} never occur in the training split")

    if resume and (out / "tokenizer.json").exists():
        tokenizer = TextTokenizer.from_file(out / "tokenizer.json", max_length=args.max_length)
    else:
        tokenizer = _tokenizer_for(model, splits["train"].texts, args)
    config_dict = _model_config(
        model, dict(model_options or {}), num_labels=len(label_names), multi_label=multi_label,
        tokenizer=tokenizer, args=args,
    )  # fmt: skip
    encoded = {
        name: _Encoded(
            tokenizer,
            part.texts,
            _label_targets(part.labels, label_names, multi_label, dataset.source, part.lines),
        )
        for name, part in splits.items()
        if len(part)
    }

    torch.manual_seed(args.seed)
    network = build(config_dict)
    optimiser = _optimiser(network, args)
    state = _State()
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(info)
    if resume and (checkpoint_dir.exists() or checkpoint_dir.with_name("checkpoint.old").exists()):
        state = _load_state(checkpoint_dir, network, optimiser)
        _log(f"resuming from epoch {state.epoch + 1}, step {state.step_in_epoch}", info)
    elif info.main:
        for stale in ("train_log.jsonl",):
            (out / stale).unlink(missing_ok=True)
        for stale_dir in (best_dir, checkpoint_dir):
            shutil.rmtree(stale_dir, ignore_errors=True)
        tokenizer.save(out / "tokenizer.json")
        run = {"model": model, "model_options": model_options or {}, "training": dataclasses.asdict(args)}
        atomic_write_json(out / "run.json", run)
    trainable: nn.Module = network
    if info.world_size > 1:
        trainable = nn.parallel.DistributedDataParallel(network)

    class_weights = None
    if args.class_weights:
        counts = encoded["train"].targets.sum(0) if multi_label else torch.bincount(
            encoded["train"].targets, minlength=len(label_names)
        ).float()  # fmt: skip
        class_weights = (counts.sum() / (len(label_names) * counts.clamp_min(1.0))).float()

    train_data = encoded["train"]
    steps_per_epoch = math.ceil(len(train_data) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    writer = _tensorboard(out / "runs") if info.main else None
    autocast = torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")  # fmt: skip
    interrupted = {"flag": False}
    previous_handler = _install_sigint(interrupted, info)
    try:
        for epoch in range(state.epoch, args.epochs):
            batches = _epoch_batches(len(train_data), args, epoch, info)
            trainable.train()
            epoch_start = time.perf_counter()
            losses: list[float] = []
            bar = _progress(range(state.step_in_epoch, len(batches)), len(batches), state.step_in_epoch,
                            f"epoch {epoch + 1}/{args.epochs}", args.progress and info.main)  # fmt: skip
            for b in bar:
                batch = train_data.batch(batches[b])
                for group in optimiser.param_groups:
                    group["lr"] = args.lr * _lr_factor(state.global_step, total_steps, args)
                with autocast:
                    logits = trainable(batch).logits
                loss = _loss(logits, batch["labels"], multi_label, class_weights)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if args.grad_clip > 0:
                    nn.utils.clip_grad_norm_(network.parameters(), args.grad_clip)
                optimiser.step()
                losses.append(loss.item())
                state.step_in_epoch = b + 1
                state.global_step += 1
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss", loss.item(), state.global_step)
                    writer.add_scalar("train/lr", optimiser.param_groups[0]["lr"], state.global_step)
                stop_now = interrupted["flag"] or (args.stop_after_steps and state.global_step >= args.stop_after_steps)
                if state.global_step % args.checkpoint_every == 0 or stop_now:
                    if info.main:
                        _save_state(checkpoint_dir, network, optimiser, state)
                    _barrier(info)
                if stop_now:
                    raise TrainingInterrupted(
                        f"interrupted at step {state.global_step}; training state saved in {checkpoint_dir}: "
                        "run the same command with --resume to continue"
                    )
            if hasattr(bar, "close"):
                bar.close()
            seconds = time.perf_counter() - epoch_start

            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": state.global_step,
                "train_loss": float(np.mean(losses)) if losses else None,
                "seconds": round(seconds, 2),
                "lr": optimiser.param_groups[0]["lr"],
            }
            if "dev" in encoded:
                dev_probs = _predict(network, encoded["dev"], args.eval_batch_size, multi_label)
                dev = _metrics(dev_probs, encoded["dev"].targets, label_names, multi_label)
                dev_loss = _log_loss(dev_probs, encoded["dev"].targets, multi_label)
                record |= {"dev_accuracy": dev["accuracy"], "dev_macro_f1": dev["macro_f1"], "dev_loss": dev_loss}
                score = dev["macro_f1"]
            else:
                score, dev_loss = -float(record["train_loss"] or 0.0), float("inf")
            # Better macro-F1 wins; a tie (common once dev F1 saturates) goes to the lower dev loss.
            improved = score > state.best_score or (score == state.best_score and dev_loss < state.best_loss)
            if improved:
                state.best_score, state.best_loss, state.best_epoch, state.bad_epochs = score, dev_loss, epoch + 1, 0
                if info.main:
                    best_dir.mkdir(parents=True, exist_ok=True)
                    save_weights(network, best_dir / "model.safetensors")
            else:
                state.bad_epochs += 1
            record["best"] = improved
            state.history.append(record)
            state.epoch, state.step_in_epoch = epoch + 1, 0
            if info.main:
                print(json.dumps(record), file=sys.stderr, flush=True)
                with open(out / "train_log.jsonl", "a", encoding="utf-8") as log:
                    log.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key in ("dev_accuracy", "dev_macro_f1"):
                        if key in record:
                            writer.add_scalar(key.replace("_", "/", 1), record[key], epoch + 1)
                _save_state(checkpoint_dir, network, optimiser, state)
            _barrier(info)
            if on_epoch is not None:
                on_epoch(record)
            if args.patience and state.bad_epochs >= args.patience:
                _log(f"early stopping: dev macro-F1 has not improved for {args.patience} epochs", info)
                break
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if writer is not None:
            writer.close()

    # Final: best weights, test metrics, the model directory.
    _barrier(info)
    if (best_dir / "model.safetensors").exists():
        network.load_state_dict(load_file(str(best_dir / "model.safetensors")))
    _barrier(info)  # every rank has read the best weights before rank 0 tidies them away
    final_split = "test" if "test" in encoded else "dev" if "dev" in encoded else "train"
    probs = _predict(network, encoded[final_split], args.eval_batch_size, multi_label)
    metrics = _metrics(probs, encoded[final_split].targets, label_names, multi_label)
    metrics |= {"split": final_split, "best_epoch": state.best_epoch, "epochs_run": state.epoch}
    metrics["seconds_per_epoch"] = float(np.mean([h["seconds"] for h in state.history])) if state.history else None
    report = format_report(metrics, title=f"{final_split} split of {dataset.source}")
    if info.main:
        config = {
            "attend_version": __version__,
            "model": config_dict,
            "tokenizer": {"max_length": tokenizer.max_length, "vocab_size": tokenizer.vocab_size},
            "labels": label_names,
            "training": dataclasses.asdict(args),
            "data": {
                "source": dataset.source,
                "text_col": text_col,
                "label_col": label_col,
                "sizes": {name: len(part) for name, part in splits.items()},
                **_data_provenance(data, split_col=split_col, multi_label=multi_label_arg, label_sep=label_sep),
            },
        }
        config["weights_sha256"] = save_weights(network, out / "model.safetensors")
        tokenizer.save(out / "tokenizer.json")
        atomic_write_json(out / "metrics.json", metrics)
        save_confusion_png(metrics, out / "confusion_matrix.png", title=f"{model} on {final_split}")
        atomic_write_json(out / "config.json", config)  # last: it vouches for the files above
        state.finished = True
        _save_state(checkpoint_dir, network, optimiser, state)
        shutil.rmtree(best_dir, ignore_errors=True)
        for name in ("model.safetensors", "optimiser.safetensors"):
            (checkpoint_dir / name).unlink(missing_ok=True)
    _barrier(info)
    return TrainResult(model_dir=out, metrics=metrics, history=state.history, report=report, is_main=info.main)


def _data_provenance(
    data: str | os.PathLike[str] | LabelledTexts, *, split_col: str | None, multi_label: bool, label_sep: str | None
) -> dict[str, Any]:
    """What :func:`rebuild_split` needs besides the seed and fractions: how the data was read.

    A file is recorded by absolute path and SHA-256, so a split is only rebuilt from the very
    same bytes. Texts handed over already loaded may be a subsample of their ``source``, so
    they are marked as not rebuildable rather than silently re-split from the whole file.
    """
    record: dict[str, Any] = {"split_col": split_col, "multi_label": multi_label, "label_sep": label_sep}
    if isinstance(data, LabelledTexts):
        return record | {"rebuildable": False}
    path = Path(data)
    if path.is_file():
        record |= {"path": str(path.resolve()), "sha256": sha256_file(path)}
    return record | {"rebuildable": True}


def rebuild_split(model: str | os.PathLike[str] | Mapping[str, Any], split: str = "test") -> LabelledTexts:
    """One split (``"train"``, ``"dev"`` or ``"test"``) of the data a saved model was trained on.

    :func:`train` records the data source, how it was read, the seed and the dev/test
    fractions in ``config.json``; :func:`~attend.data.readers.stratified_split` is a pure
    function of those, so the held-out examples of a model directory can be rebuilt exactly.
    Compression (quantisation, pruning) is judged on them: the model never saw them.

    Args:
        model: A model directory, or its parsed ``config.json``.
        split: Which split.

    Raises:
        DataError: The config records no rebuildable source, the data file is gone or has
            changed since training, or the rebuilt split sizes differ from the recorded ones.
            The message says to pass labelled data explicitly instead.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split={split!r}; choose 'train', 'dev' or 'test'")
    if isinstance(model, Mapping):
        config, where = model, "the model"
    else:
        where = str(model)
        try:
            config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{where}: cannot read config.json to rebuild the {split} split ({exc})") from None
    data = config.get("data") or {}
    training = config.get("training") or {}
    source = data.get("source")
    fix = "pass labelled data explicitly"
    if not source or data.get("rebuildable") is False:
        raise DataError(
            f"{where}: its training data was passed in already loaded, so its {split} split cannot be rebuilt; {fix}"
            if source else f"{where}: config.json records no training data source; {fix}"
        )
    if str(source).startswith("dataset:"):
        location: str = str(source).removeprefix("dataset:")
    else:
        location = data.get("path") or str(source)
        if not Path(location).is_file():
            raise DataError(f"{where}: its training data {location} is not there any more; {fix}")
        if data.get("sha256") and sha256_file(location) != data["sha256"]:
            raise DataError(
                f"{where}: {location} has changed since the model was trained, so its {split} split "
                f"cannot be rebuilt; {fix}"
            )
    dataset = load_labelled(
        location, text_col=data.get("text_col", "text"), label_col=data.get("label_col", "label"),
        split_col=data.get("split_col"), multi_label=bool(data.get("multi_label", False)),
        label_sep=data.get("label_sep"),
    )  # fmt: skip
    indices = stratified_split(
        dataset, seed=int(training.get("seed", 0)), dev_fraction=float(training.get("dev_fraction", 0.1)),
        test_fraction=float(training.get("test_fraction", 0.1)),
    )  # fmt: skip
    sizes = {name: len(idx) for name, idx in zip(("train", "dev", "test"), indices, strict=True)}
    recorded = data.get("sizes")
    if recorded and {name: recorded.get(name) for name in sizes} != sizes:
        raise DataError(
            f"{where}: rebuilding the splits of {source} gives sizes {sizes}, but training recorded {recorded}; "
            f"the data or its reading options differ; {fix}"
        )
    return dataset.subset(indices[("train", "dev", "test").index(split)])


def label_targets(data: LabelledTexts, labels: list[str], multi_label: bool) -> Tensor:
    """Training targets for ``data``: class indices ``(N,)``, or a 0/1 matrix ``(N, num_labels)`` when multi-label.

    Raises:
        DataError: a label the model does not know, naming the line it is on.
    """
    return _label_targets(data.labels, labels, multi_label, data.source, data.lines)


def score_probabilities(
    probs: np.ndarray, data: LabelledTexts, labels: list[str], multi_label: bool
) -> dict[str, Any]:
    """Classification metrics of predicted probabilities ``(N, num_labels)`` against ``data``'s labels.

    The same metrics as training and :func:`evaluate` (argmax, or a 0.5 threshold when
    multi-label), for predictions made elsewhere (an ONNX session, a quantised model).
    """
    return _metrics(probs, label_targets(data, labels, multi_label), labels, multi_label)


def _tensorboard(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _progress(iterable: range, total: int, initial: int, desc: str, enabled: bool) -> Iterator[int] | Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit="batch", leave=False, file=sys.stderr)


def _install_sigint(flag: dict[str, bool], info: _Dist) -> Any:
    """First Ctrl-C: finish the current step, save, and stop; a second one stops at once."""
    if not info.main or not hasattr(signal, "SIGINT"):
        return None
    try:
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if flag["flag"]:
                raise KeyboardInterrupt
            flag["flag"] = True
            print("\nstopping after this step (Ctrl-C again to stop now)...", file=sys.stderr, flush=True)

        signal.signal(signal.SIGINT, handler)
        return previous
    except ValueError:  # not in the main thread
        return None


# --- evaluate ---------------------------------------------------------------------------------


def evaluate(
    model_dir: str | os.PathLike[str] | Predictor | Any,
    data: str | os.PathLike[str] | LabelledTexts,
    *,
    text_col: str = "text",
    label_col: str = "label",
    batch_size: int = 128,
) -> dict[str, Any]:
    """Score a saved model on labelled data; unknown labels are an error naming the line.

    ``model_dir`` may also be a loaded predictor: a :class:`Predictor` or anything with its
    ``predict_proba``, ``labels`` and ``multi_label`` (e.g. an ONNX Runtime predictor).
    """
    predictor = load(model_dir) if isinstance(model_dir, str | os.PathLike) else model_dir
    dataset = data if isinstance(data, LabelledTexts) else load_labelled(
        data, text_col=text_col, label_col=label_col, multi_label=predictor.multi_label
    )  # fmt: skip
    targets = _label_targets(dataset.labels, predictor.labels, predictor.multi_label, dataset.source, dataset.lines)
    probs = predictor.predict_proba(dataset.texts, batch_size=batch_size)
    metrics = _metrics(probs, targets, predictor.labels, predictor.multi_label)
    metrics["source"] = dataset.source
    return metrics
