"""attend: attention-based neural models that show where they focus."""

__version__ = "0.1.0"

__all__ = ["__version__"]
