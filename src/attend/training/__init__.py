"""Training: one generic :class:`Trainer` over tasks (:mod:`attend.training.tasks`), and metrics."""

from attend.training.metrics import classification_metrics, format_report, save_confusion_png
from attend.training.tasks import (
    TASKS,
    ClassificationTask,
    Task,
    classification_loss,
    label_targets,
    register_task,
    score_probabilities,
)
from attend.training.tasks.base import fingerprint
from attend.training.text import train
from attend.training.trainer import (
    ExchangeFailed,
    Trainer,
    TrainingArgs,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    state_directory,
    train_translation,
)

__all__ = [
    "TASKS",
    "ClassificationTask",
    "ExchangeFailed",
    "Task",
    "TrainResult",
    "Trainer",
    "TrainingArgs",
    "TrainingDiverged",
    "TrainingInterrupted",
    "classification_loss",
    "classification_metrics",
    "fingerprint",
    "format_report",
    "label_targets",
    "register_task",
    "save_confusion_png",
    "score_probabilities",
    "state_directory",
    "train",
    "train_translation",
]
