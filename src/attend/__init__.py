"""attend: attention-based neural models that show where they focus.

>>> import attend
>>> model = attend.load("runs/demo")          # the runtime of the directory's task
>>> model.top_k(["a small furry animal that hunts mice"], k=2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attend.version import __version__

__all__ = ["DataError", "ModelDirError", "__version__", "load"]

if TYPE_CHECKING:
    from attend.runtime import Runtime


def load(path: str, **options: Any) -> Runtime:
    """Load a model directory as the runtime of its task (see :func:`attend.runtime.load`)."""
    from attend.runtime import load as load_runtime

    return load_runtime(path, **options)


def __getattr__(name: str) -> Any:
    """The errors a user catches: ``attend.DataError`` (bad input data, naming the file, line and
    value) and ``attend.ModelDirError`` (a model directory that cannot be used), imported on first use."""
    if name == "DataError":
        from attend.data.readers import DataError

        return DataError
    if name == "ModelDirError":
        from attend.io import ModelDirError

        return ModelDirError
    raise AttributeError(f"module 'attend' has no attribute {name!r}")
