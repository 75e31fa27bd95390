"""Tasks: what differs between kinds of model, behind one small interface the Trainer drives.

A :class:`Task` reads and splits its data, builds the model config, makes batches, computes the
loss and the evaluation metrics (naming the one that selects the best epoch), and writes the files
a finished model directory needs. Everything else (the loop, optimiser and schedule, seeded
resumable sampling, checkpoints, DDP, logging, progress) is the :class:`~attend.training.Trainer`'s.
A new kind of model is a new task and model, never a second loop (fairseq's ``tasks/``).
"""

from attend.training.tasks import seq2seq  # noqa: F401  (registers the translation task)
from attend.training.tasks.base import TASKS, Task, register_task
from attend.training.tasks.classification import (
    ClassificationTask,
    classification_loss,
    label_targets,
    score_probabilities,
)

__all__ = [
    "TASKS",
    "ClassificationTask",
    "Task",
    "classification_loss",
    "label_targets",
    "register_task",
    "score_probabilities",
]
