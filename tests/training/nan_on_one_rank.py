"""``attend`` with one bad batch on global rank 1 only (its 5th loss is NaN, as a bf16 overflow would
make it; or with ``ATTEND_TEST_FAULT=error``, an error there): launched under torchrun by
tests/training/test_elastic.py."""

from __future__ import annotations

import os
import sys

from attend.cli import main
from attend.training.tasks.classification import ClassificationTask

_loss = ClassificationTask.loss
_calls = {"n": 0}


def _poisoned(self: ClassificationTask, model: object, batch: object) -> object:
    loss = _loss(self, model, batch)  # type: ignore[arg-type]
    _calls["n"] += 1
    if os.environ.get("RANK") != "1" or _calls["n"] != 5:
        return loss
    if os.environ.get("ATTEND_TEST_FAULT") == "error":
        raise ValueError("a fault planted in rank 1's fifth batch")
    return loss * float("nan")


ClassificationTask.loss = _poisoned  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
