"""attend: attention-based neural models that show where they focus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from attend.inference import Predictor


def load(path: str) -> Predictor:
    """Load a saved model directory (safetensors + JSON) as a :class:`~attend.inference.Predictor`."""
    from attend.inference import load as _load

    return _load(path)


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from attend.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'attend' has no attribute {name!r}")
