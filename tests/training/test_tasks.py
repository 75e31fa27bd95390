"""The Task seam: a kind of model that is not a text classifier trains through the same Trainer,
with resume, selection, auxiliary losses and the model directory; and adaptive span's penalty is
part of every run's loss."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from attend.attention import AttentionPooling
from attend.io import ArtifactWriter, ModelDirError
from attend.models import MODELS, ModelConfig, ModelOutput, auxiliary_loss, build
from attend.models.base import register_model
from attend.runtime import load
from attend.training import (
    TASKS,
    Task,
    Trainer,
    TrainingArgs,
    TrainingDiverged,
    TrainingInterrupted,
    register_task,
    train,
)
from attend.training.trainer import MIN_CUT_EPOCH, _beats, _ties, describe_steps, state_directory, steps_in_budget


@dataclass
class PickerConfig(ModelConfig):
    """A toy regressor: attention pooling over vectors, then a linear readout."""

    dim: int = 6


class Picker(nn.Module):
    def __init__(self, config: PickerConfig) -> None:
        super().__init__()
        self.config = config
        self.pool = AttentionPooling(config.dim)
        self.head = nn.Linear(config.dim, 1)

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        pooled, weights = self.pool(batch["x"])
        return ModelOutput(logits=self.head(pooled).squeeze(-1), pooling_weights=weights)

    def auxiliary_loss(self) -> Tensor:
        """A model-level auxiliary term, to show the Trainer adds it: a tiny L2 on the head."""
        return 1e-4 * self.head.weight.pow(2).sum()


class Regression(Task):
    """The target is the first feature of the first vector: attention must find position 0."""

    name = "toy_regression"
    selection = "neg_mse"

    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        generator = torch.Generator().manual_seed(args.seed)
        x = torch.randn(480, 5, 6, generator=generator)
        x[:, 0, 1] = 3.0  # position 0 is recognisable
        self.data = {"train": x[:400], "dev": x[400:440], "test": x[440:]}

    def save_state(self, directory: Path) -> None:
        (directory / "toy.json").write_text("{}")

    def identity(self) -> dict[str, Any]:
        return {"model": "picker"}

    def model_config(self) -> dict[str, Any]:
        return {"model_type": "test_picker", "dim": 6}

    def default_lr(self) -> float:
        return 1e-2

    @property
    def train_size(self) -> int:
        return len(self.data["train"])

    def splits(self) -> list[str]:
        return ["dev", "test"]

    def _batch(self, x: Tensor) -> dict[str, Tensor]:
        return {"x": x, "y": x[:, 0, 0]}

    def train_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        return self._batch(self.data["train"][list(indices)])

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return F.mse_loss(model(batch).logits, batch["y"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        model.eval()
        mse = float(self.loss(model, self._batch(self.data[split])))
        return {"neg_mse": -mse, "loss": mse}

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        writer.write_json("metrics.json", metrics)
        return {"toy": True}


register_task(Regression)


@pytest.fixture
def picker() -> Iterator[None]:
    register_model("test_picker", PickerConfig)(Picker)
    yield
    MODELS.pop("test_picker")


class _Unnamed(Regression):
    name = ""


class _Unregistered(Regression):
    name = "toy_regression_unregistered"


class _Squatter(Regression):
    name = "classification"


class _NumpyMetrics(Regression):
    """Metrics as numpy gives them, and no metrics.json of its own (the Trainer writes it)."""

    name = "toy_regression_numpy"

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        import numpy as np

        found = super().evaluate(model, split, batch_size)
        return {key: np.float32(value) for key, value in found.items()} | {"per_dim": np.zeros(2, np.float32)}

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"toy": True}


class _Clobber(Regression):
    name = "toy_regression_clobber"

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"model": {"size": 3}}


class _NoEntries(Regression):
    name = "toy_regression_no_entries"

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        writer.write_json("extra.json", {})  # and no `return {}`


class _FloatLoss(Regression):
    name = "toy_regression_float_loss"

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return super().loss(model, batch).item()  # type: ignore[return-value]


class _PathEntry(Regression):
    name = "toy_regression_path_entry"

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"toy": {"source": Path("data.csv")}}


class _SetMetric(Regression):
    name = "toy_regression_set_metric"

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        return super().evaluate(model, split, batch_size) | {"seen": {"a", "b"}}


class _Reads(Regression):
    name = "toy_regression_reads"
    reads = frozenset()  # it says: none of the task-read options


class _Shadowed(Regression):
    name = "toy_regression_shadowed"

    def __init__(self) -> None:
        self.features = None  # its own data under the name of the training features it implements


class _Pickler(Regression):
    name = "toy_regression_pickler"

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        torch.save({"extra": 1}, writer.path / "extra.pt")
        return {}


class _Spy(Regression):
    """Records the mode and grad state each evaluate runs in, without setting them itself."""

    name = "toy_regression_spy"
    seen: ClassVar[list[tuple[bool, bool]]] = []

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        self.seen.append((model.training, torch.is_grad_enabled()))
        mse = float(self.loss(model, self._batch(self.data[split])))
        return {"neg_mse": -mse, "loss": mse}


class _Empty(Regression):
    name = "toy_regression_empty"

    @property
    def train_size(self) -> int:
        return 0


class _NumpySize(Regression):
    name = "toy_regression_numpy_size"

    @property
    def train_size(self) -> int:
        import numpy as np

        return np.int64(len(self.data["train"]))  # type: ignore[return-value]


class _Misnamed(Regression):
    name = "toy_regression_misnamed"

    def splits(self) -> list[str]:
        return ["validation"]


class _Mixup(Regression):
    name = "toy_regression_mixup"
    features = frozenset({"augment", "mixup"})


class _PathIdentity(Regression):
    name = "toy_regression_path_identity"

    def identity(self) -> dict[str, Any]:
        return {"data": Path("x.csv")}


register_task(_Empty)
register_task(_NumpySize)
register_task(_Misnamed)
register_task(_Mixup)
register_task(_PathIdentity)
register_task(_NumpyMetrics)
register_task(_Pickler)
register_task(_Spy)
register_task(_Clobber)
register_task(_NoEntries)
register_task(_FloatLoss)
register_task(_PathEntry)
register_task(_SetMetric)
register_task(_Shadowed)
register_task(_Reads)


def test_a_task_of_ones_own_is_checked_where_it_would_fail_later(picker: None, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Each had trained, then written a directory that failed to load, or failed at its end."""
    args = TrainingArgs(epochs=2, batch_size=40, progress=False)
    with pytest.raises(ValueError, match=r"_Unnamed has no name: set its class attribute name"):
        Trainer(_Unnamed(), args)
    with pytest.raises(ValueError, match=r"'toy_regression_unregistered' is not registered: decorate"):
        Trainer(_Unregistered(), args)
    with pytest.raises(ValueError, match=r"task name 'classification' is ClassificationTask's"):
        Trainer(_Squatter(), args)
    # numpy numbers: "Object of type float32 is not JSON serializable" at the first epoch's log line
    done = Trainer(_NumpyMetrics(), args).fit(tmp_path / "numpy")
    written = json.loads((tmp_path / "numpy" / "metrics.json").read_text())
    assert isinstance(done.metrics["loss"], float) and written["per_dim"] == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"_Clobber.write returned \['model'\], config.json entries the Trainer"):
        Trainer(_Clobber(), args).fit(tmp_path / "clobber")
    assert not (tmp_path / "clobber").exists()
    # A forgotten `return {}` and a loss as a float had been a bare TypeError / AttributeError.
    with pytest.raises(TypeError, match=r"_NoEntries.write returned NoneType, expected a dict of config.json entries"):
        Trainer(_NoEntries(), args).fit(tmp_path / "no_entries")
    assert not (tmp_path / "no_entries").exists()
    with pytest.raises(TypeError, match=r"_FloatLoss.loss returned float; it returns the batch's loss as a one-"):
        Trainer(_FloatLoss(), args).fit(tmp_path / "float_loss")
    # What JSON cannot hold: said with its place, where json.dumps had raised a bare TypeError
    with pytest.raises(ValueError, match=r"_PathEntry.write returned an entry config.json cannot hold: toy.source is "
                                         r"a pathlib.PosixPath, which JSON cannot hold"):  # fmt: skip
        Trainer(_PathEntry(), args).fit(tmp_path / "path_entry")
    assert not (tmp_path / "path_entry").exists()
    with pytest.raises(ValueError, match=r"_SetMetric.evaluate\('dev'\) returned a metric JSON cannot hold: seen is "
                                         r"a builtins.set"):  # fmt: skip
        Trainer(_SetMetric(), args).fit(tmp_path / "set_metric")
    # A pickle written by the task: the model had been published, its training state removed, and
    # attend.load then refused it.
    with pytest.raises(ModelDirError, match=r"pickles contains pickle-format file\(s\) \['extra.pt'\]: refusing to "
                                            r"publish"):  # fmt: skip
        Trainer(_Pickler(), args).fit(tmp_path / "pickles")
    assert not (tmp_path / "pickles").exists() and (tmp_path / ".pickles.training").is_dir()
    # evaluate runs in eval mode with gradients off, whether or not the task sets them (dropout had
    # noised the figures an epoch was chosen by).
    Trainer(_Spy(), args).fit(tmp_path / "spy")
    assert _Spy.seen and set(_Spy.seen) == {(False, False)}
    # An option only a task can apply, which this one does not read, had been accepted and changed nothing.
    shortened = dataclasses.replace(args, max_length=16)
    with pytest.raises(ValueError, match=r"max_length=16: the toy_regression_reads task does not read this training "
                                         r"option, so it would change nothing \(it reads none of class_weights, label"):
        Trainer(_Reads(), shortened).fit(tmp_path / "short")
    with pytest.raises(ValueError, match=r"dev_fraction=0.1: the toy_regression_reads task does not read"):
        Trainer(_Reads(), args, given={"dev_fraction"}).fit(tmp_path / "short")  # given, at its default
    # Batching by length needs the task's lengths(): without them it had been recorded and changed nothing.
    with pytest.raises(ValueError, match=r"group_by_length=False: the toy_regression_reads task gives no example "
                                         r"lengths, so its batches are plain random draws either way"):  # fmt: skip
        Trainer(_Reads(), dataclasses.replace(args, group_by_length=False)).fit(tmp_path / "short")
    assert not (tmp_path / "short").exists()
    # A task that does not say what it reads (written before Task.reads) is warned of, not refused.
    Trainer(Regression(), shortened).fit(tmp_path / "undeclared")
    assert "does not say whether it reads this training option" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"_Shadowed.features is NoneType, not a set of training option names"):
        Trainer(_Shadowed(), args).fit(tmp_path / "shadowed")  # a TypeError from deep in the Trainer
    # No training example had trained nothing and published the model; an unknown split name was ignored,
    # and training figures became the model's; a feature no Trainer reads was taken; a Path identity
    # failed run.json's writing with a bare TypeError.
    with pytest.raises(ValueError, match=r"_Empty.train_size is 0: the number of training examples, at least 1"):
        Trainer(_Empty(), args).fit(tmp_path / "empty")
    Trainer(_NumpySize(), args).fit(tmp_path / "numpy_size")  # a numpy count is a count (it had been refused)
    with pytest.raises(ValueError, match=r"_Misnamed.splits\(\) returned \['validation'\]: list the held-out splits"):
        Trainer(_Misnamed(), args).fit(tmp_path / "misnamed")
    with pytest.raises(ValueError, match=r"_Mixup.features names 'mixup': the Trainer's optional features are augment"):
        Trainer(_Mixup(), args).fit(tmp_path / "mixup")
    with pytest.raises(ValueError, match=r"_PathIdentity.identity\(\) returned data is a pathlib.PosixPath, which "
                                         r"JSON cannot hold"):  # fmt: skip
        Trainer(_PathIdentity(), args).fit(tmp_path / "path_identity")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".empty", ".misnamed", ".mixup", ".path_id"))]
    assert not {"empty", "misnamed", "mixup", "path_identity"} & {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "numpy_size" / "model.safetensors").is_file()

    def stop(record: dict[str, Any]) -> None:  # a notebook's stop button; it was a bare KeyboardInterrupt
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match=r"interrupted after epoch 1; training state saved"):
        Trainer(Regression(), args, on_epoch=stop).fit(tmp_path / "stopped")
    resumed = Trainer(Regression(), args).fit(tmp_path / "stopped", resume=True)
    assert resumed.metrics["loss"] == Trainer(Regression(), args).fit(tmp_path / "whole").metrics["loss"]

    def cell() -> type[Task]:  # a notebook cell that defines and registers a task, run twice
        class Again(Regression):
            name = "toy_regression_again"

        return register_task(Again)

    try:
        first, second = cell(), cell()  # the second had been "already registered"
        assert first is not second and TASKS["toy_regression_again"] is second
        with pytest.raises(ValueError, match=r"Again is registered as another definition of the same class"):
            Trainer(first(), args)  # a task made before the cell ran again
        # another class under its name is not (the message names the class holding it)
        with pytest.raises(ValueError, match=r"is registered already, by tests\.training\.test_tasks\..*Again"):
            register_task(type("Other", (Regression,), {"name": "toy_regression_again"}))
    finally:
        TASKS.pop("toy_regression_again", None)


def test_a_new_task_trains_resumes_and_writes_its_model_directory(picker: None, tmp_path: Path) -> None:
    assert TASKS["toy_regression"] is Regression
    args = TrainingArgs(epochs=4, batch_size=20, progress=False, checkpoint_every=5)
    history: list[dict] = []
    full = Trainer(Regression(), args, on_epoch=history.append).fit(tmp_path / "full")
    assert full.metrics["split"] == "test" and full.metrics["loss"] < 0.5 * history[0]["dev_loss"]
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["task"] == "toy_regression" and config["toy"] is True
    assert config["model"] == {"model_type": "test_picker", "dim": 6} and list(config["files"]) == ["model.safetensors"]
    with pytest.raises(ModelDirError, match="task 'toy_regression' has no runtime"):
        load(tmp_path / "full")

    stopped = TrainingArgs(epochs=4, batch_size=20, progress=False, checkpoint_every=5, stop_after_steps=30)
    with pytest.raises(TrainingInterrupted):
        Trainer(Regression(), stopped).fit(tmp_path / "resumed")
    resumed = Trainer(Regression(), args).fit(tmp_path / "resumed", resume=True)
    for key in ("loss", "best_epoch"):
        assert resumed.metrics[key] == full.metrics[key], key
    # The epoch cut by the interruption reports the loss of all its steps, not only those after the resume.
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])


class PoisonedRegression(Regression):
    """The same task with one training example of NaN: its batch's loss is NaN."""

    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        super().prepare(args, state)
        self.data["train"][137] = float("nan")


def test_a_non_finite_loss_stops_training_before_the_step_and_writes_no_model(picker: None, tmp_path: Path) -> None:
    args = TrainingArgs(epochs=2, batch_size=20, progress=False, checkpoint_every=1)
    expected = r"the loss became non-finite at step \d+ \(epoch 1; training loss nan, auxiliary loss [-e0-9.]+\); the"
    with pytest.raises(TrainingDiverged, match=expected):
        Trainer(PoisonedRegression(), args).fit(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # no model from NaN weights
    checkpoint = state_directory(tmp_path / "out")
    weights = load_file(next(checkpoint.rglob("model.safetensors")))
    assert weights and all(torch.isfinite(tensor).all() for tensor in weights.values())  # the step before, kept


class Unselected(Regression):
    """A task of one's own whose evaluate leaves out its selection metric."""

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        return {"mse": 1.0, "loss": 1.0}


class NoHeldOut(Regression):
    """A task with no dev or test split: the final figures are the training split's."""

    def splits(self) -> list[str]:
        return []

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        self.asked = [*getattr(self, "asked", []), split]
        return super().evaluate(model, split, batch_size)


def test_what_a_tasks_evaluate_must_return_is_said_and_a_split_less_task_is_scored_on_train(
    picker: None, tmp_path: Path
) -> None:
    args = TrainingArgs(epochs=1, batch_size=20, progress=False)
    expected = r"Unselected.evaluate\('dev'\) returned no number under 'neg_mse' \(its keys: \['loss', 'mse'\]\)"
    with pytest.raises(ValueError, match=expected + ": the Trainer picks the best epoch by"):
        Trainer(Unselected(), args).fit(tmp_path / "unselected")  # a bare KeyError: 'neg_mse'
    task = NoHeldOut()
    result = Trainer(task, args).fit(tmp_path / "train_only")
    assert task.asked == ["train"] and result.metrics["split"] == "train"  # as Task.evaluate's docstring says


def test_one_run_writes_a_directory_at_a_time_and_a_model_put_there_meanwhile_is_kept(
    picker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs into one --out collided in its training state; a model copied there during training was
    replaced without --overwrite; --out a symbolic link replaced the link, not the model it pointed to."""
    from attend.io import OutputLock

    args = TrainingArgs(epochs=2, batch_size=20, progress=False)
    out = tmp_path / "out"
    held = OutputLock(out)  # another run writing `out`
    with pytest.raises(ModelDirError, match=rf"{out}: another attend run is writing it \(process \d+\)"):
        Trainer(Regression(), args).fit(out)
    held.release()
    assert not (tmp_path / ".out.lock").exists()
    first = Trainer(Regression(), args).fit(out)
    assert first.metrics["split"] == "test" and not (tmp_path / ".out.lock").exists()  # released, removed

    fresh = tmp_path / "fresh"
    copied = json.loads((out / "config.json").read_text())

    def put_a_model_there(record: dict) -> None:  # as `cp -r out fresh` in another shell
        if record["epoch"] == 1:
            shutil.copytree(out, fresh)

    with pytest.raises(ModelDirError, match=r"already holds a model.*It appeared while this run trained; the trained "
                                            r"model is kept in .*: run the same command with --resume --overwrite"):
        Trainer(Regression(), args, on_epoch=put_a_model_there).fit(fresh)
    assert json.loads((fresh / "config.json").read_text()) == copied  # kept
    assert (tmp_path / ".fresh.training" / "run.json").is_file()
    resumed = Trainer(Regression(), args).fit(fresh, resume=True, overwrite=True)  # finishes, replacing it
    assert resumed.metrics["loss"] == first.metrics["loss"] and not (tmp_path / ".fresh.training").exists()

    target, link = tmp_path / "target", tmp_path / "link"
    shutil.copytree(out, target)
    link.symlink_to(target, target_is_directory=True)
    Trainer(Regression(), dataclasses.replace(args, seed=7)).fit(link, overwrite=True)
    assert link.is_symlink() and (target / "model.safetensors").read_bytes() != (out / "model.safetensors").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging or lock left

    # A folder of one's own put there meanwhile is never replaced: the advice is to move it (it said
    # --resume --overwrite, which is refused), and once moved, --resume publishes the model.
    notes = tmp_path / "notes"

    def put_notes_there(record: dict) -> None:
        if record["epoch"] == 1:
            notes.mkdir()
            (notes / "todo.txt").write_text("mine")

    with pytest.raises(ModelDirError, match=r"is not a model directory.*It appeared while this run trained; the "
                                            r"trained model is kept in .*: move it away, then run the same command "
                                            r"with --resume$"):  # fmt: skip
        Trainer(Regression(), args, on_epoch=put_notes_there).fit(notes)
    notes.rename(tmp_path / "notes-moved")
    assert Trainer(Regression(), args).fit(notes, resume=True).metrics["loss"] == first.metrics["loss"]


def test_a_checkpoint_resumes_under_another_process_count_only_where_that_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each process's dropout draws are its own: 1 process resumed as 2 matched neither run. Without
    randomness, or on an elastic restart (refusing would use up the restarts), it goes on, said."""
    from attend.data.readers import DataError
    from attend.training.trainer import Trainer, _Dist, _load_state, _save_state, _State

    model = nn.Linear(2, 1)
    optimiser = torch.optim.AdamW(model.parameters())
    _save_state(tmp_path / "checkpoint", model, optimiser, _State(epoch=1, world_size=2), [torch.get_rng_state()])
    state = _load_state(tmp_path / "checkpoint", model, optimiser)
    assert state.world_size == 2  # recorded with the checkpoint
    args, one = TrainingArgs(), _Dist(rank=0, world_size=1)
    dropping = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
    with pytest.raises(DataError, match=r"the interrupted run trained with 2 processes, this one has 1 process, and "
                                        r"its random draws \(dropout, augmentation\) differ by process count: "
                                        r"resume with the same count"):  # fmt: skip
        Trainer._check_process_count(state, dropping, args, tmp_path, one)
    Trainer._check_process_count(state, model, args, tmp_path, one)  # no randomness: the same steps
    Trainer._check_process_count(_State(world_size=0), dropping, args, tmp_path, one)  # an older checkpoint
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    Trainer._check_process_count(state, dropping, args, tmp_path, one)
    assert "(an elastic restart): the figures will differ" in capsys.readouterr().err


def test_a_step_budget_caps_whole_epochs_and_the_schedule_spans_them(picker: None, tmp_path: Path) -> None:
    # 400 examples in batches of 20: 20 steps an epoch; a budget of 45 steps allows 3 whole epochs of 10.
    history: list[dict] = []
    args = TrainingArgs(epochs=10, max_steps=45, batch_size=20, progress=False, patience=0, warmup_ratio=0.0,
                        schedule="linear")  # fmt: skip
    result = Trainer(Regression(), args, on_epoch=history.append).fit(tmp_path / "budget")
    assert result.metrics["epochs_run"] == 3 and [h["step"] for h in history] == [20, 40, 60]
    assert history[-1]["lr"] == pytest.approx(1e-2 / 60)  # the linear decay ends with the third epoch
    with pytest.raises(ValueError, match="max_steps=-1"):
        TrainingArgs(max_steps=-1)


def test_auxiliary_loss_collects_every_module_term(picker: None) -> None:
    model = build({"model_type": "test_picker"})
    assert torch.equal(auxiliary_loss(model), 1e-4 * model.head.weight.pow(2).sum())
    encoder = build({"model_type": "encoder", "vocab_size": 50, "dim": 16, "num_layers": 2, "num_heads": 2,
                     "attention": {"adaptive_span": 16, "span_loss": 0.5}})  # fmt: skip
    expected = sum(0.5 * block.attn.span_penalty() for block in encoder.blocks)
    torch.testing.assert_close(auxiliary_loss(encoder), expected)
    assert auxiliary_loss(build({"model_type": "encoder", "vocab_size": 50, "dim": 16})) is None


def test_adaptive_span_penalty_shrinks_spans_during_training(tmp_path: Path, planted_csv: Path) -> None:
    """Texts here are shorter than the span, so the task's loss gives the spans no gradient at all:
    without the span term they stay where they start (32 tokens); with it they shrink."""
    spans = {}
    for weight in (0.0, 1.0):
        options = {"dim": 32, "num_layers": 1, "num_heads": 2, "attention": {"adaptive_span": 32, "span_loss": weight}}
        args = TrainingArgs(epochs=2, batch_size=16, lr=3e-3, progress=False, vocab_size=500)
        train(planted_csv, tmp_path / str(weight), model="encoder", model_options=options, args=args)
        model = load(tmp_path / str(weight)).model
        spans[weight] = float(torch.cat([block.attn.span.spans.detach() for block in model.blocks]).mean())
    assert spans[0.0] == 32.0 and spans[1.0] < 31.0, spans
    # Pushed past 0 by a large step, a span is clamped back after each step (its fraction had gone
    # negative, where neither the task nor the penalty gives it a gradient again).
    options = {"dim": 32, "num_layers": 1, "num_heads": 2, "attention": {"adaptive_span": 32, "span_loss": 10.0}}
    args = TrainingArgs(epochs=1, batch_size=16, lr=0.2, progress=False, vocab_size=500, grad_clip=0.0)
    train(planted_csv, tmp_path / "steep", model="encoder", model_options=options, args=args)
    fractions = torch.cat([block.attn.span.span_fraction.detach() for block in load(tmp_path / "steep").model.blocks])
    assert fractions.min() >= 0.0 and fractions.max() <= 1.0 and fractions.min() < 0.5, fractions


def test_classification_batches_texts_of_similar_length_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random batches of texts of mixed lengths are mostly padding; by default a classification run
    cuts its batches by length (within random pools), and ``group_by_length=False`` keeps them random."""
    import numpy as np

    from attend.training.tasks.classification import ClassificationTask
    from tests.conftest import write_csv

    rng = np.random.default_rng(0)
    rows = [{"text": " ".join(["good" if i % 2 else "bad"] * int(n)) + f" n{i}", "label": "pos" if i % 2 else "neg"}
            for i, n in enumerate(rng.integers(1, 60, 400))]  # fmt: skip  # each text once: 320 of them train
    data = write_csv(tmp_path / "mixed.csv", rows)
    real = ClassificationTask.train_batch
    counts = {"cells": 0, "tokens": 0}
    seen: set[int] = set()

    def spy(self: ClassificationTask, indices: Sequence[int]) -> dict[str, Tensor]:
        batch = real(self, indices)
        counts["cells"] += batch["attention_mask"].numel()
        counts["tokens"] += int(batch["attention_mask"].sum())
        seen.update(indices)
        return batch

    monkeypatch.setattr(ClassificationTask, "train_batch", spy)
    padding: dict[bool, float] = {}
    for grouped in (True, False):
        counts.update(cells=0, tokens=0)
        seen.clear()
        args = TrainingArgs(epochs=1, batch_size=16, progress=False, vocab_size=200, group_by_length=grouped)
        train(data, tmp_path / str(grouped), model="encoder", args=args,
              model_options={"dim": 16, "num_layers": 1, "num_heads": 2})  # fmt: skip
        assert len(seen) == 320  # every training example (80 % of 400), once
        padding[grouped] = counts["cells"] / counts["tokens"]
    assert padding[True] < 1.2 < 1.5 < padding[False], padding


def test_each_epochs_dev_score_is_that_of_the_weights_it_describes(tmp_path: Path, planted_csv: Path) -> None:
    """The dev figures the Trainer records (which pick the kept epoch, stop early and rank auto's
    candidates) are those of the weights at that epoch's end: the kept weights, loaded back, give
    the kept epoch's dev loss. Fails if evaluation reuses attention weights packed at an earlier
    epoch (fused AdamW does not move the parameters' version counters)."""
    from safetensors.torch import load_file

    from attend.training.tasks.classification import ClassificationTask

    task = ClassificationTask(str(planted_csv), model="encoder")
    args = TrainingArgs(epochs=3, batch_size=16, lr=3e-3, progress=False, vocab_size=500, patience=0)
    result = Trainer(task, args).fit(tmp_path / "m")
    kept = [record for record in result.history if record["best"]][-1]
    assert kept["epoch"] > 1  # an epoch after the first evaluation packed the weights
    network = build(json.loads((tmp_path / "m" / "config.json").read_text())["model"])
    network.load_state_dict(load_file(str(tmp_path / "m" / "model.safetensors")))
    again = task.evaluate(network, "dev", 64)
    assert again["loss"] == pytest.approx(kept["dev_loss"], rel=1e-4)
    assert again["macro_f1"] == pytest.approx(kept["dev_macro_f1"])


def test_steps_in_budget_keeps_whole_epochs_and_a_cut_last_one_worth_its_dev_evaluation() -> None:
    # 100 steps of 0.5 s and a 10 s dev evaluation: 60 s an epoch.
    assert steps_in_budget(240, 0.5, 10, 100, 30) == 400  # four whole epochs, nothing left
    assert steps_in_budget(240, 0.5, 10, 100, 3) == 300  # never more than the epochs asked for
    # 4 whole epochs (240 s) and 30 s: 10 for the dev evaluation, 20 for 40 steps of a fifth.
    assert steps_in_budget(270, 0.5, 10, 100, 30) == 440
    # 20 s left: 10 for 20 steps, under a quarter of an epoch, so not worth a dev evaluation.
    assert MIN_CUT_EPOCH == 0.25 and steps_in_budget(260, 0.5, 10, 100, 30) == 400
    assert steps_in_budget(30, 0.5, 10, 100, 30) == 40  # less than an epoch fits: the caller keeps one
    assert steps_in_budget(-5, 0.5, 10, 100, 30) == 0  # over budget already
    assert steps_in_budget(1e9, 0.5, 10, 100, 2) == 200
    assert steps_in_budget(300, 0.5, 10, 100, 0) == 0  # no epochs left
    assert describe_steps(440, 100) == "4 epoch(s) of 100 steps and 40 of one more"
    assert describe_steps(400, 100) == "4 epoch(s) of 100 steps"
    with pytest.raises(ValueError, match="time_budget=-1"):
        TrainingArgs(time_budget=-1)


def test_a_time_budget_cuts_the_epochs_the_schedule_spans_and_a_resumed_run_keeps_the_plan(
    picker: None, tmp_path: Path
) -> None:
    # 400 examples in batches of 4: 100 steps an epoch, timed over the first 50 of them; a budget
    # of a few microseconds leaves one epoch of the 4 asked for.
    args = TrainingArgs(epochs=4, batch_size=4, progress=False, patience=0, warmup_ratio=0.0, schedule="linear",
                        time_budget=1e-7, checkpoint_every=1000)  # fmt: skip
    history: list[dict] = []
    cut = Trainer(Regression(), args, on_epoch=history.append).fit(tmp_path / "cut")
    assert cut.metrics["epochs_run"] == cut.metrics["planned_epochs"] == 1 and [h["step"] for h in history] == [100]
    assert history[-1]["lr"] == pytest.approx(1e-2 / 100)  # from step 51 on the linear decay ends with epoch 1

    with pytest.raises(TrainingInterrupted):
        Trainer(Regression(), dataclasses.replace(args, stop_after_steps=70)).fit(tmp_path / "resumed")
    state = json.loads((tmp_path / ".resumed.training" / "checkpoint" / "state.json").read_text())
    assert state["state"]["planned_epochs"] == 1
    resumed = Trainer(Regression(), args).fit(tmp_path / "resumed", resume=True)
    assert resumed.metrics["epochs_run"] == 1 and resumed.metrics["loss"] == cut.metrics["loss"]

    roomy = Trainer(Regression(), dataclasses.replace(args, time_budget=1e4)).fit(tmp_path / "roomy")
    assert roomy.metrics["epochs_run"] == roomy.metrics["planned_epochs"] == 4


@pytest.mark.parametrize("schedule", ["cosine", "linear", "inverse_sqrt", "constant"])
@pytest.mark.parametrize("planned", [300, 1500])
def test_a_plan_made_mid_warm_up_joins_the_schedule_without_a_jump(schedule: str, planned: int) -> None:
    """The first 50 steps warm up over the unplanned run (3,000 steps here); the plan had then put
    the new warm-up's factor in at once (the rate doubled, or went from 0.02 to 0.97, in one step)."""
    from attend.training.trainer import _join_plan, _lr_factor, _scheduled_lr, _State

    args = TrainingArgs(warmup_ratio=0.1, schedule=schedule)
    state = _State(global_step=50)
    _join_plan(state, 3000, planned, args)
    factors = [_scheduled_lr(step, 3000, args, _State()) for step in range(50)]
    factors += [_scheduled_lr(step, planned, args, state) for step in range(50, planned)]
    assert factors[49] == _lr_factor(49, 3000, args)
    steps = [abs(b - a) for a, b in itertools.pairwise(factors)]
    warmup = int(0.1 * planned)
    span = warmup - 50 if warmup > 50 else warmup  # the new warm-up left, else a warm-up's length
    assert max(steps) <= 1.5 / span  # no jump: the rise spread over them
    assert factors[50 + span:] == [_lr_factor(step, planned, args) for step in range(50 + span, planned)]
    if warmup > 50:  # the new warm-up still running: it reaches the peak where it ends
        assert factors[warmup - 1] == pytest.approx(1.0)


def test_an_epoch_of_one_step_times_that_step_for_the_budget(
    picker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe timed from the end of the first step, so an epoch of one step timed no step and
    planned at "0.000 s per step". A clock that moves only when a step takes its batch (7 s)
    stands in for time."""
    import attend.training.trainer as trainer_module

    clock = [0.0]

    class SevenSecondSteps(Regression):
        def train_batch(self, indices: Sequence[int]) -> dict[str, Any]:
            clock[0] += 7.0
            return super().train_batch(indices)

    paces: list[float] = []

    def fitting(time_s: float, seconds_per_step: float, dev_s: float, steps_per_epoch: int, left: int) -> int:
        paces.append(seconds_per_step)
        return steps_per_epoch * left

    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(trainer_module, "steps_in_budget", fitting)
    args = TrainingArgs(epochs=2, batch_size=400, progress=False, patience=0, time_budget=1.0)  # one step an epoch
    Trainer(SevenSecondSteps(), args).fit(tmp_path / "one")
    assert paces[0] == 7.0  # the one step's time (it was 0)


def test_a_budget_that_fits_part_of_an_epoch_runs_it_cut_and_a_resume_inside_it_gives_the_same_run(
    picker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 steps an epoch; the budget's arithmetic (tested above) is replaced by its answer: 250
    # steps fit when the run is planned, and more than the plan later on.
    import attend.training.trainer as trainer_module

    asked: list[int] = []

    def fitting(time_s: float, seconds_per_step: float, dev_s: float, steps_per_epoch: int, left: int) -> int:
        asked.append(left)
        return 250 if left == 4 else 10_000

    monkeypatch.setattr(trainer_module, "steps_in_budget", fitting)
    args = TrainingArgs(epochs=4, batch_size=4, progress=False, patience=0, warmup_ratio=0.0, schedule="linear",
                        time_budget=1.0, checkpoint_every=1000)  # fmt: skip
    history: list[dict] = []
    whole = Trainer(Regression(), args, on_epoch=history.append).fit(tmp_path / "whole")
    assert [h["step"] for h in history] == [100, 200, 250] and asked == [4, 2, 1]
    assert whole.metrics["planned_epochs"] == whole.metrics["epochs_run"] == 3
    assert whole.metrics["planned_steps"] == 250
    assert history[-1]["lr"] == pytest.approx(1e-2 / 250)  # the linear decay ends with step 250

    with pytest.raises(TrainingInterrupted):  # stopped inside the cut epoch
        Trainer(Regression(), dataclasses.replace(args, stop_after_steps=230)).fit(tmp_path / "resumed")
    resumed = Trainer(Regression(), args).fit(tmp_path / "resumed", resume=True)
    assert resumed.metrics["planned_steps"] == 250 and resumed.metrics["loss"] == whole.metrics["loss"]


def test_a_re_plan_can_end_the_run_with_a_cut_epoch(
    picker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planned: all 6 epochs fit. After epoch 1 the pace says 150 more steps fit: 2 epochs and half a third.
    import attend.training.trainer as trainer_module

    answers = iter([600, 150, 150])
    monkeypatch.setattr(trainer_module, "steps_in_budget", lambda *_: next(answers))
    args = TrainingArgs(epochs=6, batch_size=4, progress=False, patience=0, warmup_ratio=0.0, schedule="linear",
                        time_budget=1.0, checkpoint_every=1000)  # fmt: skip
    history: list[dict] = []
    result = Trainer(Regression(), args, on_epoch=history.append).fit(tmp_path / "m")
    assert [h["step"] for h in history] == [100, 200, 250]
    assert result.metrics["planned_epochs"] == 3 and result.metrics["planned_steps"] == 250
    assert history[-1]["lr"] == pytest.approx(1e-2 / 250)


class SlowingRegression(Regression):
    """From the second epoch on, every dev evaluation takes six seconds: a machine slowing down mid-run."""

    name = "toy_regression_slowing"

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        if split == "dev" and getattr(self, "epoch", 0) >= 1:
            time.sleep(6.0)
        return super().evaluate(model, split, batch_size)


register_task(SlowingRegression)


def test_a_run_that_slows_down_cuts_its_plan_to_stay_in_the_budget(picker: None, tmp_path: Path) -> None:
    # 100 steps an epoch, planned after 50 at the toy's pace: all 6 epochs fit 18 seconds. Then each
    # epoch takes over 6 seconds: after epoch 2 (about 6.3 s spent) one more fits the time left, as
    # long as an epoch without the sleep takes under (18 - 2 * 6) / 3 = 2 s (about 0.15 s unloaded;
    # the margin was 0.67 s with the first 2 s sleep and 6 s budget).
    args = TrainingArgs(epochs=6, batch_size=4, progress=False, patience=0, warmup_ratio=0.0, schedule="linear",
                        time_budget=18 / 60, checkpoint_every=1000)  # fmt: skip
    history: list[dict] = []
    result = Trainer(SlowingRegression(), args, on_epoch=history.append).fit(tmp_path / "m")
    assert result.metrics["epochs_run"] == result.metrics["planned_epochs"] == 3, history
    assert history[-1]["lr"] == pytest.approx(1e-2 / 300)  # the schedule ends with the new plan


def test_the_budget_probe_leaves_the_run_as_it_was(tmp_path: Path, planted_csv: Path) -> None:
    """Timing a dev evaluation mid-epoch draws no random numbers the run would (dropout's) and
    leaves the model training: a budget that cuts nothing gives the run without one, to the digit."""
    from attend.training.tasks.classification import ClassificationTask

    # 320 training texts in batches of 4: 80 steps an epoch, the probe after the 50th.
    args = TrainingArgs(epochs=2, batch_size=4, lr=1e-3, progress=False, vocab_size=500, patience=0)
    runs = [
        Trainer(ClassificationTask(str(planted_csv), model="encoder"), dataclasses.replace(args, time_budget=budget))
        .fit(tmp_path / str(budget))
        for budget in (0.0, 1e4)
    ]
    assert runs[1].metrics["planned_epochs"] == 2 and "planned_epochs" not in runs[0].metrics
    assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[1].history]
    assert runs[0].metrics["loss"] == runs[1].metrics["loss"]


class UndefinedScore(Regression):
    """A dev metric that is undefined (as AUC is over a dev split of one label)."""

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        return {**super().evaluate(model, split, batch_size), "neg_mse": float("nan")}


def test_an_undefined_dev_score_leaves_the_dev_loss_to_pick_the_epoch(picker: None, tmp_path: Path) -> None:
    history: list[dict] = []
    args = TrainingArgs(epochs=3, batch_size=20, progress=False, patience=0)
    result = Trainer(UndefinedScore(), args, on_epoch=history.append).fit(tmp_path / "nan")
    losses = [h["dev_loss"] for h in history]
    assert result.metrics["best_epoch"] == losses.index(min(losses)) + 1  # before: -1, the last weights kept


def test_an_undefined_dev_score_leaves_the_dev_loss_to_judge_the_checkpoint_average(
    picker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    import attend.training.trainer as trainer

    # The "average" is the last epoch's weights, the best here (the dev loss falls every epoch): a tie
    # at the same dev loss, which keeps it.
    monkeypatch.setattr(trainer, "average_weights", lambda paths: load_file(str(paths[-1])))
    args = TrainingArgs(epochs=4, batch_size=20, progress=False, patience=0, average_checkpoints=3, lr=0.05)
    result = Trainer(UndefinedScore(), args).fit(tmp_path / "nan")
    averaging = result.metrics["checkpoint_average"]
    assert result.metrics["best_epoch"] == 4 and averaging["dev_loss"] == averaging["best_epoch_dev_loss"]
    assert averaging["kept"]  # before: a NaN score never beat or tied the best epoch's, so never kept
    assert averaging["dev_neg_mse"] is None and averaging["best_epoch_dev_neg_mse"] is None  # JSON has no -inf


def test_scores_that_differ_in_their_last_bits_tie_and_the_lower_loss_decides() -> None:
    # Macro-F1 of the same 30 dev predictions, summed over classes in two orders (seen in a run: the
    # later epoch, with half the dev loss, lost to the earlier one on this difference).
    earlier, later = 0.9665831244778613, 0.9665831244778612
    assert _ties(later, earlier) and not _beats(later, earlier) and not _beats(earlier, later)
    assert _beats(0.97, earlier) and not _ties(0.9666, earlier)
    assert _beats(0.0, -float("inf"))  # the first epoch always improves on nothing


class CtrlCWhileScoring(Regression):
    """Ctrl-C arrives while the trained model is scored on the test split."""

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        if split == "test":
            raise KeyboardInterrupt
        return super().evaluate(model, split, batch_size)


def test_ctrl_c_while_scoring_the_trained_model_says_resume_finishes_it(picker: None, tmp_path: Path) -> None:
    """It printed only "interrupted"; the state was saved, and --resume finished the run."""
    args = TrainingArgs(epochs=2, batch_size=40, progress=False)
    with pytest.raises(TrainingInterrupted, match=r"interrupted while scoring the trained model; .* to finish"):
        Trainer(CtrlCWhileScoring(), args).fit(tmp_path / "m")
    result = Trainer(Regression(), args).fit(tmp_path / "m", resume=True)
    assert result.metrics["split"] == "test" and len(result.history) == 2 and (tmp_path / "m").is_dir()
    # A run that stopped early is not trained on by the resume (it trained until patience ran out again).
    stalled = TrainingArgs(epochs=6, batch_size=40, progress=False, patience=1, lr=1e-30)
    whole = Trainer(Regression(), stalled).fit(tmp_path / "whole")
    with pytest.raises(TrainingInterrupted):
        Trainer(CtrlCWhileScoring(), stalled).fit(tmp_path / "early")
    resumed = Trainer(Regression(), stalled).fit(tmp_path / "early", resume=True)
    assert len(whole.history) < 6 and len(resumed.history) == len(whole.history)


class SignalledAtLastDev(Regression):
    """A Ctrl-C (SIGINT to this process) while the last epoch's dev split is scored."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs, self.dev_runs = epochs, 0

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        if split == "dev":
            self.dev_runs += 1
            if self.dev_runs == self.epochs:
                os.kill(os.getpid(), signal.SIGINT)
        return super().evaluate(model, split, batch_size)


def test_ctrl_c_as_the_last_epoch_ends_stops_there_and_resume_scores_and_writes(
    picker: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "stopping after this step", then scored the test split and wrote the model (exit 0): minutes of
    beam search for a translator, past a scheduler's grace. A stop in an earlier epoch's end stops too."""
    args = TrainingArgs(epochs=2, batch_size=40, progress=False)
    for epochs in (2, 1):
        with pytest.raises(TrainingInterrupted, match=rf"interrupted after epoch {epochs}; training state saved"):
            Trainer(SignalledAtLastDev(epochs), args).fit(tmp_path / f"m{epochs}")
        assert not (tmp_path / f"m{epochs}").exists() and "stopping after this step" in capsys.readouterr().err
        result = Trainer(Regression(), args).fit(tmp_path / f"m{epochs}", resume=True)
        assert len(result.history) == 2 and result.metrics["split"] == "test"
        said = "resuming: its epochs are trained; scoring" if epochs == 2 else "resuming from epoch 2, step 0"
        assert said in capsys.readouterr().err  # (it had said "resuming from epoch 3" of a run of 2)
    with pytest.raises(TrainingInterrupted, match=r"--resume \(resume=True from Python\) to score and write the model"):
        Trainer(SignalledAtLastDev(2), args).fit(tmp_path / "again")
    capped = dataclasses.replace(args, epochs=3, max_steps=1)  # a step budget of one epoch: its last is the first
    with pytest.raises(TrainingInterrupted, match=r"to score and write the model"):
        Trainer(SignalledAtLastDev(1), capped).fit(tmp_path / "capped")
    capsys.readouterr()
    assert len(Trainer(Regression(), capped).fit(tmp_path / "capped", resume=True).history) == 1
    assert "resuming: its epochs are trained" in capsys.readouterr().err  # it had said "from epoch 2"


class StoppedMidStep(Regression):
    """A KeyboardInterrupt inside a step (a second Ctrl-C, a notebook's stop button) at global step ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.steps = at, 0

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        self.steps += 1
        if self.steps == self.at:
            raise KeyboardInterrupt
        return super().loss(model, batch)


def test_a_stop_mid_step_says_what_resume_continues_from(
    picker: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was a bare "interrupted"; stopped before any checkpoint, --resume then started again in silence."""
    args = TrainingArgs(epochs=2, batch_size=40, progress=False)  # 10 steps an epoch
    said = r"at once, before any training state was saved \(one is saved every 200 steps"
    with pytest.raises(TrainingInterrupted, match=said):
        Trainer(StoppedMidStep(3), args).fit(tmp_path / "m")
    Trainer(Regression(), args).fit(tmp_path / "m", resume=True)
    assert "stopped before it saved any training state: this one starts from the beginning" in capsys.readouterr().err
    with pytest.raises(TrainingInterrupted, match=r"at once: the steps since the last saved state are lost; .*resume"):
        Trainer(StoppedMidStep(14), args).fit(tmp_path / "later", overwrite=True)  # in epoch 2
    result = Trainer(Regression(), args).fit(tmp_path / "later", resume=True)
    assert "resuming from epoch 2, step 0" in capsys.readouterr().err and len(result.history) == 2
    often = dataclasses.replace(args, checkpoint_every=4)  # a state saved at step 4 of epoch 1
    with pytest.raises(TrainingInterrupted, match=r"at once: the steps since the last saved state are lost"):
        Trainer(StoppedMidStep(6), often).fit(tmp_path / "early")
    Trainer(Regression(), often).fit(tmp_path / "early", resume=True)
    assert "resuming from epoch 1, step 4" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_a_run_stopped_while_publishing_keeps_its_log_and_events_for_the_resume(
    picker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: BaseException
) -> None:
    """The log and TensorBoard events had been moved into the staging folder, which the writer removed
    on the way out: the resumed model had no train_log.jsonl, and its runs/ no scalars."""
    from attend.io import ArtifactWriter

    args = TrainingArgs(epochs=3, batch_size=40, progress=False)
    publish = ArtifactWriter.publish

    def failing(self: ArtifactWriter, config: dict[str, Any]) -> Path:
        raise stop

    monkeypatch.setattr(ArtifactWriter, "publish", failing)
    expected = TrainingInterrupted if stop is KeyboardInterrupt else OSError
    with pytest.raises(expected, match=r"interrupted while writing the trained model; .* --resume" if
                       expected is TrainingInterrupted else "No space left"):  # fmt: skip
        Trainer(Regression(), args).fit(tmp_path / "m")
    work = state_directory(tmp_path / "m")
    assert (work / "train_log.jsonl").is_file() and (work / "runs").is_dir() and not (tmp_path / "m").exists()
    monkeypatch.setattr(ArtifactWriter, "publish", publish)
    Trainer(Regression(), args).fit(tmp_path / "m", resume=True)
    assert len((tmp_path / "m" / "train_log.jsonl").read_text().splitlines()) == 3
    assert list((tmp_path / "m" / "runs").rglob("events.out.tfevents.*")) and not work.exists()


def test_ctrl_c_while_the_replaced_model_is_removed_leaves_the_new_one_whole(
    picker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the swap the staging folder holds the old model: its log had been taken for the new run's
    (put into the state, then into the model by --resume), and the run called interrupted."""
    import attend.io

    args = TrainingArgs(epochs=2, batch_size=40, progress=False)
    Trainer(Regression(), args).fit(tmp_path / "m")
    (tmp_path / "m" / "train_log.jsonl").write_text("OLD MODEL LOG\n")
    remove, calls = attend.io.shutil.rmtree, []

    def cut_short(path: Any, *rest: Any, **options: Any) -> None:
        calls.append(path)
        if len(calls) == 1 and ".staging" in str(path):  # the old model, swapped out
            raise KeyboardInterrupt
        remove(path, *rest, **options)

    monkeypatch.setattr(attend.io.shutil, "rmtree", cut_short)
    result = Trainer(Regression(), args).fit(tmp_path / "m", overwrite=True)
    log = (tmp_path / "m" / "train_log.jsonl").read_text()
    assert "OLD MODEL LOG" not in log and len(log.splitlines()) == 2 and len(result.history) == 2
    assert not state_directory(tmp_path / "m").exists() and calls


def test_progress_into_a_file_is_one_line_per_redraw(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm begins each redraw with a carriage return: in a log file the redraws had been one line."""
    import io

    from attend.training.trainer import _progress

    log = io.StringIO()  # no terminal
    monkeypatch.setattr("sys.stderr", log)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # every step redrawn (the default here is every 30 s)
    for _ in _progress(range(4), total=4, initial=0, desc="epoch 1/1", enabled=True):
        pass
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == "" and len(lines) - 1 >= 2
    assert lines[0].startswith("epoch 1/1:   0%") and lines[-2].startswith("epoch 1/1: 100%")


def test_a_resumed_run_may_name_its_files_another_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attend.training.trainer import comparable

    (tmp_path / "log.csv").write_text("user,item\n1,2\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    recorded = {"source": {"data": str(tmp_path / "log.csv"), "item_features": None, "user_col": "user"}}
    assert comparable(recorded) == comparable({"source": {"data": "../log.csv", "item_features": None,
                                                          "user_col": "user"}})  # fmt: skip
    # Another file, a name that is not a file (a dataset's), and other values are compared as they are.
    assert comparable({"data": "../other.csv"}) != comparable({"data": str(tmp_path / "other.csv")})
    assert comparable(["movielens_100k", 3, None, "a\0b"]) == ["movielens_100k", 3, None, "a\0b"]


def test_a_log_file_gets_a_few_progress_lines_with_the_epoch_records_on_their_own(
    picker: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a terminal (a CI log): the bar was redrawn every step, and the epoch records sat on its lines."""
    args = TrainingArgs(epochs=3, batch_size=5, progress=True, patience=0)
    Trainer(Regression(), args).fit(tmp_path / "out")  # 80 steps an epoch
    err = capsys.readouterr().err
    assert not err.startswith("preparing the data")  # a quick preparation says nothing (an error stays one line)
    records = [line for line in err.split("\n") if '"epoch"' in line]  # lines as a log file shows them
    assert len(records) == 3 and all(line.startswith("{") and json.loads(line) for line in records)  # not after a bar
    redraws = err.replace("\r", "\n").split("\n")
    assert sum("batch/s" in line or "s/batch" in line for line in redraws) <= 3 * 3  # a few per epoch, not 80


def test_a_resumed_runs_tensorboard_drops_the_points_logged_after_the_checkpoint(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from attend.training.trainer import _tensorboard

    first = _tensorboard(tmp_path)
    for step in range(1, 11):  # killed at step 10; the last checkpoint was at step 6
        first.add_scalar("train/loss", 1.0 / step, step)
    first.close()
    resumed = _tensorboard(tmp_path, purge_step=7)
    for step in range(7, 13):
        resumed.add_scalar("train/loss", 1.0 / step, step)
    resumed.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, 13))  # 7-10 were there twice


def test_a_budget_is_logged_in_minutes_people_read() -> None:
    from attend.training.trainer import _minutes

    # "0.220844" had six digits of a figure known to two; 1440 must not become "1.44e+03".
    assert [_minutes(m) for m in (0.220844, 1e-06, 30, 45.678, 1440)] == ["0.221", "1e-06", "30", "45.7", "1440"]


def test_dev_figures_are_logged_on_the_training_steps_axis(picker: None, tmp_path: Path) -> None:
    """TensorBoard plots every scalar against its step: dev figures logged at epoch 1, 2, 3 sat in the
    corner of the first training steps, beside train/loss at steps 1..240."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(Regression(), TrainingArgs(epochs=3, batch_size=5, progress=False, patience=0)).fit(tmp_path / "m")
    events = EventAccumulator(str(tmp_path / "m" / "runs"))
    events.Reload()
    assert [event.step for event in events.Scalars("dev/loss")] == [80, 160, 240]  # 80 steps an epoch
    assert events.Scalars("train/loss")[-1].step == 240


class _SlowToPrepare(Regression):
    """A task whose data takes a while to read (a 50 MB file had been a minute of silence)."""

    name = "toy_slow_to_prepare"

    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        time.sleep(0.5)
        super().prepare(args, state)


register_task(_SlowToPrepare)


def test_a_long_preparation_is_said(picker: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import attend.training.trainer

    monkeypatch.setattr(attend.training.trainer, "PREPARING_NOTE_S", 0.1)
    Trainer(_SlowToPrepare(), TrainingArgs(epochs=1, batch_size=5, progress=True)).fit(tmp_path / "m")
    err = capsys.readouterr().err
    assert err.startswith("preparing the data (toy_slow_to_prepare: reading, splitting and encoding it)\n")
    assert re.search(r"\nprepared in 0\.[5-9] s\n", err), err


class _Undefined(Regression):
    """A dev figure undefined on its split (DIN's GAUC on a dev split of one label)."""

    name = "toy_undefined_figure"

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        return {**super().evaluate(model, split, batch_size), "spread": float("nan")}

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {**super().epoch_record(metrics), "dev_spread": metrics["spread"]}


register_task(_Undefined)


def test_an_undefined_dev_figure_is_left_out_of_tensorboard(picker: None, tmp_path: Path) -> None:
    """It had been drawn as NaN at every epoch, where the log says null."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(_Undefined(), TrainingArgs(epochs=2, batch_size=5, progress=False, patience=0)).fit(tmp_path / "m")
    events = EventAccumulator(str(tmp_path / "m" / "runs"))
    events.Reload()
    assert "dev/loss" in events.Tags()["scalars"] and "dev/spread" not in events.Tags()["scalars"]
    logged = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    assert logged and all(record["dev_spread"] is None for record in logged)


def test_a_budget_below_one_epoch_says_the_epoch_runs_past_it(
    picker: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = TrainingArgs(epochs=3, batch_size=5, progress=False, patience=0, time_budget=1e-6)
    result = Trainer(Regression(), args).fit(tmp_path / "out")
    assert result.metrics["epochs_run"] == 1 and result.metrics["processes"] == 1
    err = capsys.readouterr().err
    # It said "1 epoch(s) of 80 steps fit" of an epoch far past the budget.
    assert "time budget 1e-06 min: not even one epoch fits; one whole epoch is the least a run trains, about" in err


class _NeverBetter(Regression):
    """A dev score that never improves after the first epoch."""

    name = "toy_never_better"

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        return {"neg_mse": -1.0, "loss": 1.0}


register_task(_NeverBetter)


def test_a_run_that_ends_on_its_last_planned_epoch_is_not_said_to_stop_early(
    picker: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its last epoch was also the patience-th without improvement: the log ended "early stopping: dev
    ... has not improved for 2 epochs" though the run had simply ended as planned."""
    args = TrainingArgs(epochs=3, batch_size=100, progress=False, patience=2)
    Trainer(_NeverBetter(), args).fit(tmp_path / "planned")
    assert "early stopping" not in capsys.readouterr().err
    Trainer(_NeverBetter(), dataclasses.replace(args, epochs=5)).fit(tmp_path / "early")
    err = capsys.readouterr().err
    assert "early stopping: dev neg_mse has not improved for 2 epochs" in err  # after epoch 3 of 5
    assert len([line for line in err.splitlines() if line.startswith('{"epoch"')]) == 3


def test_the_bar_names_the_epochs_the_budget_planned(
    picker: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned in epoch 1, after its first 50 steps: the bar had gone on reading "epoch 1/4" of a run
    of one epoch (a log's last bar line is the bar as it ended)."""
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    args = TrainingArgs(epochs=4, batch_size=4, progress=True, patience=0, time_budget=1e-7, checkpoint_every=1000)
    Trainer(Regression(), args).fit(tmp_path / "cut")
    bar = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert bar and bar[0].startswith("epoch 1/4") and bar[-1].startswith("epoch 1/1"), bar


def test_a_full_disk_leaves_no_empty_lock_or_half_file_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the lock's and a page's writes failed with a bare "[Errno 28]", leaving a 0-byte
    .NAME.lock (or .NAME.tmpPID) behind."""
    import errno
    import os

    import attend.io as io

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "write", full)
    with pytest.raises(OSError) as raised:
        io.OutputLock(tmp_path / "out")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / ".out.lock")
    monkeypatch.undo()

    def half(self: Path, text: str, encoding: str | None = None) -> int:
        with open(self, "w", encoding=encoding) as handle:
            handle.write(text[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.Path, "write_text", half)
    with pytest.raises(OSError) as raised:
        io.atomic_write_text(tmp_path / "page.html", "<html>a page</html>")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "page.html")
    assert list(tmp_path.iterdir()) == []
