"""Stopping a run from outside: SIGTERM (how a scheduler, systemd, Docker or ``kill`` stops a
process) read as Ctrl-C, so a run that stops cleanly on Ctrl-C (what it wrote kept, its summary
said) does the same on SIGTERM, where it had died at once without a word."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["sigterm_as_ctrl_c"]


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt`, as Ctrl-C does; the handler
    before it is put back after (the default one where none was set from Python). Off the main
    thread, where signals cannot be handled, or where there is no SIGTERM, it changes nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:  # getsignal gives None for a handler not set from Python: the default is the nearest to it
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
