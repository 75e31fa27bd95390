"""What every runtime shares, and :func:`load`: a model directory in, the runtime of its task out.

A *runtime* is a trained model ready to use: for a classifier, :class:`~attend.runtime.TextClassifier`
(predict, top-k, explain, evaluate), run by PyTorch or ONNX Runtime. Each task registers a loader
under its name; :func:`load` reads the directory's ``config.json`` (:class:`attend.io.ArtifactDir`:
pickles refused, file hashes checked) and hands it to the loader of its ``task``.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from attend.config import APP_DIRECTORIES, PLUGIN_GROUP, load_plugins, redefines
from attend.data.validation import check_flag
from attend.io import ArtifactDir, ModelDirError, count_seen

__all__ = ["RUNTIMES", "LoadOptions", "Runtime", "load", "register_runtime"]

_T = TypeVar("_T")

EVALUATE_CHUNK = 512  # sentences a translator's evaluation decodes between redraws of its bar


def evaluation_chunks(items: Sequence[_T], *, progress: bool, unit: str, size: int = 0) -> Iterator[Sequence[_T]]:
    """``items`` in chunks of ``size`` (0: :data:`EVALUATE_CHUNK`), under an ``evaluate`` bar on
    stderr when ``progress`` (drawn once the work takes over a second; the chunk's results count when
    the next is asked for). Check the items whole first: an error names its place in the chunk."""
    from attend.progress import progress_bar

    size = size or EVALUATE_CHUNK
    with progress_bar(total=len(items), desc="evaluate", unit=unit, mininterval=1.0, delay=1.0,
                      disable=not progress) as bar:  # fmt: skip
        for start in range(0, len(items), size):
            part = items[start : start + size]
            yield part
            bar.update(len(part))


@dataclass(frozen=True)
class LoadOptions:
    """How to run a model.

    Attributes:
        runtime: ``"auto"`` (ONNX Runtime for a directory from ``attend export``, else PyTorch),
            ``"torch"`` or ``"onnx"``.
        int8: The int8 model: an ONNX directory's int8 graph (``attend quantize``), or PyTorch
            dynamic int8 applied at load.
        bf16: PyTorch with bfloat16 weights and activations.
        threads: ONNX Runtime intra-op threads (None: follow PyTorch's setting).
    """

    runtime: str = "auto"
    int8: bool = False
    bf16: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.runtime not in ("auto", "torch", "onnx"):
            raise ValueError(f"runtime={self.runtime!r}; choose 'auto', 'torch' or 'onnx'")
        for name in ("int8", "bf16"):  # int8="yes" (or "false") had been read as True
            check_flag(name, getattr(self, name))
        if self.bf16 and (self.runtime == "onnx" or self.int8):
            raise ValueError("bf16 needs runtime='torch' and no int8 quantisation")
        threads = self.threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                                    or threads < 0):  # fmt: skip
            raise ValueError(f"threads={self.threads!r} must be a whole number >= 0")


class Runtime(ABC):
    """A loaded model of some task.

    Attributes:
        config: The model directory's ``config.json``.
        path: Where it was loaded from (None for a model built in memory).
    """

    #: The task this runtime serves (``config.json``'s ``task``).
    task: ClassVar[str] = ""

    def __init__(self, config: dict[str, Any], path: Path | None = None) -> None:
        self.config = config
        self.path = Path(path) if path is not None else None

    @property
    @abstractmethod
    def backend(self) -> str:
        """What runs the model: ``torch``, ``torch-int8``, ``torch-bf16``, ``onnx`` or ``onnx-int8``."""

    def evaluate(self, data: Any, **options: Any) -> dict[str, Any]:
        """Metrics on labelled data (tasks that have them override this)."""
        raise ValueError(f"a {self.task} model has no evaluation on labelled data")

    def metrics(self) -> dict[str, Any]:
        """The directory's ``metrics.json`` (the model's figures and its baselines', on one split)."""
        if self.path is None:
            raise ModelDirError("a model built in memory has no metrics.json")
        data = ArtifactDir.open(self.path).read_json("metrics.json")
        if not isinstance(data, dict):
            raise ModelDirError(f"{self.path}: metrics.json is missing or unreadable")
        return data

    def training_fingerprints(self) -> set[int] | None:
        """The fingerprints of the texts the model was trained on (:func:`attend.io.text_fingerprints`),
        or None where its directory does not keep them (written before attend did)."""
        if self.path is None:
            return None
        with contextlib.suppress(ModelDirError):
            return ArtifactDir.open(self.path).training_fingerprints()
        return None

    def training_overlap(self, texts: Sequence[str]) -> int | None:
        """How many of ``texts`` the model was trained on (the same words), or None where its
        directory does not say (see :meth:`training_fingerprints`)."""
        seen = self.training_fingerprints()
        return None if seen is None else count_seen(texts, seen)

    @property
    def name(self) -> str:
        """A short name: the directory's."""
        return self.path.name if self.path is not None else "model"


Loader = Callable[[ArtifactDir, LoadOptions], Runtime]
#: Loaders by task name.
RUNTIMES: dict[str, Loader] = {}


def register_runtime(task: str) -> Callable[[Loader], Loader]:
    """Decorator: register the loader of ``task``'s model directories."""

    if not isinstance(task, str) or not task:  # register_runtime(None) had been taken
        raise ValueError(f"register_runtime({task!r}): name the task, as its Task's name")

    def decorator(loader: Loader) -> Loader:
        if not callable(loader):  # register_runtime("t")(5) had been taken, and failed at the first load
            raise TypeError(f"register_runtime({task!r}) decorates the function that loads the task's model "
                            f"directories, not {loader!r}")  # fmt: skip
        if task in RUNTIMES and not redefines(RUNTIMES[task], loader):
            raise ValueError(f"a runtime for task {task!r} is already registered")
        RUNTIMES[task] = loader
        return loader

    return decorator


def load(
    path: str | os.PathLike[str],
    *,
    runtime: str = "auto",
    int8: bool = False,
    bf16: bool = False,
    threads: int | None = None,
) -> Runtime:
    """Load a model directory (``attend train``, ``prune`` or ``export``) as the runtime of its task.

    Loading reads JSON, safetensors and ONNX only: a directory holding a pickle-format file is
    refused, and every file the model needs is checked against the hash recorded when it was
    written, so a directory can never run code on the machine that loads it, and a mix of files
    from different runs is reported instead of served.

    Raises:
        ModelDirError: the directory is missing, incomplete, holds a pickle, is corrupt, or does
            not suit the runtime asked for (the message says what to run).
        ValueError: incompatible options.
    """
    if not isinstance(path, str | os.PathLike):  # None had failed in os.fspath, naming no argument
        shown = f"={path!r}" if len(repr(path)) <= 60 else f": a {type(path).__name__}"
        raise TypeError(f"path{shown}: load() takes the path of a model directory (a str or os.PathLike)")
    if not os.fspath(path):  # it had been read as "." (". is not a model directory")
        raise ModelDirError("path='': give the path of a model directory")
    options = LoadOptions(runtime=runtime, int8=int8, bf16=bf16, threads=threads)
    artifact = ArtifactDir.open(path)
    if artifact.task not in RUNTIMES:
        load_plugins()  # an installed package's task, registered as its module is imported
    if artifact.task in APP_DIRECTORIES and artifact.task not in RUNTIMES:
        raise ModelDirError(f"{artifact.path} holds no model to load: "
                            f"{APP_DIRECTORIES[artifact.task].format(path=artifact.path)}")  # fmt: skip
    if artifact.task not in RUNTIMES:
        raise ModelDirError(
            f"{artifact.path / 'config.json'}: task {artifact.task!r} has no runtime in this version of attend "
            f"(known: {sorted(RUNTIMES)}; a task of your own is loaded by the runtime you register for it, "
            "@attend.runtime.register_runtime, in the process that loads it, or by an installed package that "
            f"names the module registering it under the {PLUGIN_GROUP!r} entry points)"
        )
    import torch

    # Building a model draws its initial weights (then replaced by the stored ones) from torch's
    # global generator: a host application's seeded results moved when it loaded a model.
    loader = RUNTIMES[artifact.task]
    module = str(getattr(loader, "__module__", ""))
    named = f"{module or '?'}.{getattr(loader, '__qualname__', repr(loader))}"
    try:
        with torch.random.fork_rng(devices=[]):
            loaded = loader(artifact, options)
    except (ValueError, OSError):  # a refused directory or option (ModelDirError too), said as it is
        raise
    except Exception as exc:  # a package's loader's own fault (its KeyError had been a traceback): one line
        if module.startswith("attend."):
            raise  # attend's own (out of memory, a missing onnxruntime) keep their type and traceback
        raise ModelDirError(f"{artifact.path}: the runtime registered for task {artifact.task!r} ({named}) failed "
                            f"to load it: {type(exc).__name__}: {exc}") from exc  # fmt: skip
    served = getattr(loaded, "task", artifact.task)
    if served != artifact.task:  # errors would have named the wrong task from here on
        raise ModelDirError(f"{artifact.path}: a {artifact.task!r} model, but the runtime registered for that task "
                            f"returned a {type(loaded).__name__} of task {served!r}")  # fmt: skip
    if not isinstance(loaded, Runtime):  # None had been returned as the model, to fail at its first use
        raise ModelDirError(f"{artifact.path}: the runtime registered for task {artifact.task!r} ({named}) returned "
                            f"{type(loaded).__name__}, not an attend.runtime.Runtime")  # fmt: skip
    return loaded
