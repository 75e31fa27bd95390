"""Training, evaluation and metrics."""

from attend.training.metrics import classification_metrics, format_report, save_confusion_png
from attend.training.trainer import (
    TrainingArgs,
    TrainingInterrupted,
    TrainResult,
    evaluate,
    label_targets,
    load_labelled,
    rebuild_split,
    score_probabilities,
    train,
)

__all__ = [
    "TrainResult",
    "TrainingArgs",
    "TrainingInterrupted",
    "classification_metrics",
    "evaluate",
    "format_report",
    "label_targets",
    "load_labelled",
    "rebuild_split",
    "save_confusion_png",
    "score_probabilities",
    "train",
]
