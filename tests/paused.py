"""Run ``attend ARGS...`` in this process, stopping dead at one named point, so a test can SIGKILL
it exactly there (no timing involved): ``python tests/paused.py POINT FLAG ARGS...``.

When the run reaches POINT, this writes its pid to the file FLAG and sleeps until killed (under torchrun, in the
first worker group only, so that the group a test kills is restarted and runs on). Points:

- ``checkpoint:E:S``: training, right after a checkpoint of epoch index E with at least S steps into it;
- ``staged``: training, the new model directory complete in its staging folder, not yet published;
- ``published``: training, the new model directory in place, the training state not yet removed;
- ``batches:N``: ``attend monitor run``, right after its N-th batch of events is committed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from attend import io
from attend.cli import main
from attend.training import trainer


def _pause(flag: str) -> None:
    if trainer._elastic_restart():
        return  # under torchrun, only the first worker group stops at the point: its restart runs on
    Path(flag).write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(3600)


def _install(point: str, flag: str) -> None:
    if point.startswith("checkpoint:"):
        _, epoch, step = point.split(":")
        save = trainer._save_state

        def save_then_pause(directory: Path, model: Any, optimiser: Any, state: Any, rng: Any) -> None:
            save(directory, model, optimiser, state, rng)
            if state.epoch == int(epoch) and state.step_in_epoch >= int(step):
                _pause(flag)

        trainer._save_state = save_then_pause
    elif point == "staged":
        publish = io.ArtifactWriter.publish

        def pause_then_publish(self: io.ArtifactWriter, config: dict) -> Path:
            _pause(flag)
            return publish(self, config)

        io.ArtifactWriter.publish = pause_then_publish  # type: ignore[method-assign]
    elif point == "published":
        swap = io.publish_directory

        def swap_then_pause(staging: Path, out: Path) -> None:
            swap(staging, out)
            _pause(flag)

        io.publish_directory = swap_then_pause
    elif point.startswith("batches:"):
        from attend.apps.monitor.store import MonitorStore

        add, count = MonitorStore.add_events, [0]

        def add_then_pause(self: MonitorStore, events: Any) -> int:
            stored = add(self, events)
            count[0] += 1
            if count[0] == int(point.split(":")[1]):
                _pause(flag)
            return stored

        MonitorStore.add_events = add_then_pause  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    _install(sys.argv[1], sys.argv[2])
    sys.exit(main(sys.argv[3:]))
