"""Training, evaluation and metrics."""

from attend.training.metrics import classification_metrics, format_report, save_confusion_png
from attend.training.trainer import TrainingArgs, TrainingInterrupted, TrainResult, evaluate, load_labelled, train

__all__ = [
    "TrainResult",
    "TrainingArgs",
    "TrainingInterrupted",
    "classification_metrics",
    "evaluate",
    "format_report",
    "load_labelled",
    "save_confusion_png",
    "train",
]
