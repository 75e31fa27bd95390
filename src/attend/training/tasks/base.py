"""The :class:`Task` interface and the registry of tasks by name (the ``task`` key of ``config.json``)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
from torch import Tensor, nn

from attend.config import redefines, unknown_names

if TYPE_CHECKING:
    from attend.io import ArtifactWriter
    from attend.training.trainer import TrainingArgs

__all__ = ["TASKS", "Task", "fingerprint", "register_task"]


class Task(ABC):
    """What one kind of model needs from training; the :class:`~attend.training.Trainer` does the rest.

    The Trainer calls, in order: :meth:`prepare` (once), :meth:`model_config` and :meth:`init_model`,
    then per epoch :meth:`start_epoch`, per step :meth:`train_batch` and :meth:`loss`, and
    :meth:`evaluate` on ``"dev"`` (the metric named by :attr:`selection` picks the best epoch; ties
    go to the lower ``"loss"``), and at the end
    :meth:`evaluate` on the final split (``"test"``, else ``"dev"``, else ``"train"`` when
    :meth:`splits` lists neither) and :meth:`write` into the new model directory.
    """

    #: The task's name, recorded as ``config.json``'s ``task``; the runtime that loads it is chosen by it.
    name: ClassVar[str] = ""
    #: The key of :meth:`evaluate`'s metrics whose higher value marks a better epoch.
    selection: ClassVar[str] = ""
    #: The optional TrainingArgs features the task implements, of ``"augment"``, ``"adversarial"``
    #: and ``"rdrop"``; the Trainer refuses the others with an error naming the option.
    features: ClassVar[frozenset[str]] = frozenset()
    #: The TrainingArgs options on the data and the loss that the task reads itself, of
    #: :data:`~attend.training.trainer.TASK_READ_OPTIONS` (``max_length``, ``label_smoothing``, ...);
    #: the Trainer refuses a setting of the others, which would change nothing. None (a task that
    #: does not say, as tasks written before it was asked): such a setting is a warning.
    reads: ClassVar[frozenset[str] | None] = None

    @abstractmethod
    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        """Read and split the data and build what turns it into tensors (a tokenizer, vocabularies).

        Args:
            args: The run's training options.
            state: When resuming, the directory :meth:`save_state` wrote: reuse what it holds,
                so the resumed run sees exactly the same inputs.
        """

    @abstractmethod
    def save_state(self, directory: Path) -> None:
        """Write what a resumed run must reuse (e.g. the tokenizer trained on this run's data)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON describing the model and options; a resumed run must be started with the same."""

    def same_identity(self, identity: dict[str, Any]) -> dict[str, Any]:
        """An :meth:`identity` (this run's, or one an interrupted run recorded) in the form compared on a
        resume: a task whose options have several spellings of one model (a default given or left
        out) maps them to one here. The default: as it is."""
        return identity

    def data_fingerprint(self) -> str | None:
        """After :meth:`prepare`, a digest of the examples in every split (see :func:`fingerprint`):
        a resumed run whose data differs from the interrupted run's is refused, since its
        checkpoint learned other examples (or other labels). None: the task cannot tell."""
        return None

    @abstractmethod
    def model_config(self) -> dict[str, Any]:
        """The model's config dict (``model_type`` and every field), after :meth:`prepare`."""

    def init_model(self, model: nn.Module) -> None:  # noqa: B027  (optional hook: most tasks need nothing)
        """Fill what the freshly built model takes from the data rather than from training
        (e.g. per-item feature tables held as buffers); called before any checkpoint is loaded."""

    @abstractmethod
    def default_lr(self) -> float:
        """The peak learning rate when none is given (fine-tuning wants a far smaller one)."""

    @property
    @abstractmethod
    def train_size(self) -> int:
        """Training examples; the Trainer samples batches of their indices."""

    @abstractmethod
    def splits(self) -> list[str]:
        """The held-out splits that have examples, of ``"dev"`` and ``"test"``."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based; a resumed run calls it for the epoch it
        resumes): a task whose training examples vary by epoch (augmentation) seeds that here."""
        return None

    def lengths(self) -> np.ndarray | None:
        """Per training example, its size in tokens (or any number that orders examples by size),
        to batch examples of similar length together (less padding); None (the default): batches
        are plain random draws."""
        return None

    @abstractmethod
    def train_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """The batch of these training examples."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The task's loss on one batch (the Trainer adds the model's auxiliary terms)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        """Metrics of ``model`` on ``split``; they include :attr:`selection` and ``"loss"`` (numbers).
        The Trainer calls it with the model in eval mode and gradients off.

        ``split`` is ``"dev"`` after each epoch and, at the end, ``"test"``, else ``"dev"``, else
        ``"train"`` for a task with no held-out split (its figures are then training figures, and
        ``metrics.json`` says ``"split": "train"``)."""

    @abstractmethod
    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write the task's files into the new model directory; return its entries for ``config.json``.

        Files the model needs to load are written into ``writer.path`` and recorded
        (:meth:`~attend.io.ArtifactWriter.record`, or ``save_weights``/``save_training_texts``); the
        Trainer has saved the weights already. ``metrics.json`` is the final ``metrics`` unless the
        task writes its own. The entries may not be ``task``, ``attend_version``, ``model``,
        ``training``, ``files`` or ``weights_sha256``, which the Trainer writes.
        """

    def reference_metrics(self, split: str) -> dict[str, Any]:
        """Figures of simple baselines on the final ``split``, merged into the final metrics (and so
        into the report and ``metrics.json``), so a user sees at once whether the model earned its keep."""
        return {}

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What an epoch's log line and TensorBoard show of the dev metrics."""
        return {f"dev_{self.selection}": metrics[self.selection], "dev_loss": metrics["loss"]}

    def report(self, metrics: dict[str, Any], split: str) -> str:
        """A plain-text report of the final metrics, measured on ``split``."""
        return f"{split} split\n{self.selection} {metrics[self.selection]:.4f}   loss {metrics['loss']:.4f}"


TaskT = TypeVar("TaskT", bound=type[Task])
#: Registered tasks by name.
TASKS: dict[str, type[Task]] = {}
#: attend's own task names, with the module that registers each (some only once it is imported: a
#: plugin's task had been able to take a recommender's name, which then failed to register).
BUILT_IN_TASKS = {
    "classification": "attend.training.tasks.classification",
    "translation": "attend.training.tasks.seq2seq",
    "sequential_recommendation": "attend.training.tasks.recommendation",
    "ctr_recommendation": "attend.training.tasks.recommendation",
}


def register_task(cls: TaskT) -> TaskT:
    """Class decorator: register a task under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task takes a subclass of attend.training.Task, not {cls!r}")
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"{cls.__qualname__}: give the task a name (a non-empty string), not {cls.name!r}")
    holder = TASKS.get(cls.name)
    if holder is not None and not redefines(holder, cls):
        raise ValueError(f"task name {cls.name!r} is registered already, by {holder.__module__}.{holder.__qualname__}; "
                         "choose another")  # fmt: skip
    home = BUILT_IN_TASKS.get(cls.name)
    if holder is None and home is not None and cls.__module__ != home:
        raise ValueError(f"task name {cls.name!r} is attend's own ({home}); choose another")
    if not cls.selection:  # it had failed after the first epoch ("returned no number under ''")
        raise ValueError(f"task {cls.name!r}: name its selection metric (the dev metric that picks the best epoch, "
                         "higher is better)")  # fmt: skip
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:  # it had claimed the name, and failed only when created (a TypeError)
        raise TypeError(f"task {cls.name!r} ({cls.__qualname__}) does not define {', '.join(abstract)}: a Task "
                        "subclass must, before it is registered")  # fmt: skip
    # `def train_size(self)` without @property passed the check above, then failed in the Trainer
    # (a bound method divided by the batch size).
    for name, member in vars(Task).items():
        if isinstance(member, property) and callable(inspect.getattr_static(cls, name)):
            raise TypeError(f"task {cls.name!r} ({cls.__qualname__}) defines {name} as a method; Task's {name} is a "
                            "property: decorate it with @property")  # fmt: skip
    TASKS[cls.name] = cls
    return cls


def fingerprint(parts: Iterable[tuple[str, Iterable[Any]]]) -> str:
    """SHA-256 over named sequences of JSON-serialisable items (e.g. each split's texts and labels)."""
    digest = hashlib.sha256()
    for name, items in parts:
        digest.update(f"\x00{name}\x00".encode())
        for item in items:
            digest.update(json.dumps(item, ensure_ascii=False).encode("utf-8"))
            digest.update(b"\x1e")
    return digest.hexdigest()


def check_model_fields(model_type: str, given: dict[str, Any], *, from_data: Sequence[str] = (),
                       task_options: Sequence[str] = ()) -> None:  # fmt: skip
    """Refuse model options that are no field of ``model_type``'s config, naming the fields one may
    set (the config's less ``from_data``, which the task sets from the data, plus the task's own
    ``task_options``), then a value of the wrong type or range; before any data is read.

    ``given``: the options less the task's own and ``model_type``.
    """
    from attend.models import MODELS, config_from_dict

    fields = {f.name for f in dataclasses.fields(MODELS[model_type][0])}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(unknown_names(f"{model_type!r} model field(s)", unknown,
                                       sorted(fields - set(from_data)) + list(task_options)))
    config_from_dict({**given, "model_type": model_type})


def comparable(value: Any) -> Any:
    """``value`` with every string that names an existing file replaced by its resolved path, so a
    resumed run may name its data as ``data.csv``, ``./data.csv`` or from another directory (what
    the file holds is checked by the data's digest)."""
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(item) for item in value]
    if isinstance(value, str) and names_file(value):
        return str(Path(value).resolve())
    return value


def names_file(value: str) -> bool:
    """Whether ``value`` names an existing file (a name too long, or with a NUL, names none)."""
    try:
        return bool(value) and Path(value).is_file()
    except (OSError, ValueError):
        return False
