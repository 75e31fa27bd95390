"""Progress bars that suit where standard error goes: redrawn in place on a terminal (or in a
notebook), and a line at most every 30 seconds in a file or a CI log."""

from __future__ import annotations

import os
import sys
from typing import Any


class _Lines:
    """A stream for a progress bar that is not drawn on a terminal: each redraw a line of its own."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()  # the spaces that blank a longer earlier redraw, too
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, ... as the stream's
        return getattr(self.stream, name)


def progress_bar(iterable: Any = None, **options: Any) -> Any:
    """A ``tqdm`` bar on standard error (``options`` as tqdm's).

    Where stderr is a file or a CI log, not a terminal, every redraw is kept: a bar redrawn each step
    made 57 kB of a 600-step training run and put the epoch records on its lines, and `attend predict`
    left one line of 26 redraws for 28 s. There it is drawn at most every 30 s, each redraw a line of
    its own (tqdm starts each with a carriage return: the lines had been one, which `tail -f` and
    `wc -l` showed as its last state), and left as a line when it ends. A notebook's stderr is no
    terminal but redraws in place; TQDM_MININTERVAL and TQDM_DELAY, set, are the user's.
    """
    from tqdm import tqdm

    terminal = getattr(sys.stderr, "isatty", lambda: False)() or "ipykernel" in sys.modules
    if "TQDM_DELAY" in os.environ:  # the user's, as TQDM_MININTERVAL is
        options.pop("delay", None)
    asked = options.pop("mininterval", 0.1)  # on a terminal; a log gets a line at most every 30 s
    pace = {} if "TQDM_MININTERVAL" in os.environ else {"mininterval": asked if terminal else 30.0}
    options.setdefault("leave", not terminal)
    return tqdm(iterable, file=sys.stderr if terminal else _Lines(sys.stderr), **pace, **options)
