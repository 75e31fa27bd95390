"""The one timing harness of ``benchmarks/``: interleaved rounds, every sample kept, paired ratios.

Speed targets are checked by the scripts in ``benchmarks/``, which print ratios against a
reference measured in the same run (tests never assert on wall-clock time). They measure through
this module so that every number they print means the same thing:

* **Interleaved rounds.** Each round runs every contender once, round-robin (A, B, C, then
  A, B, C, ...), and the contender that opens a round rotates from one round to the next. On a
  shared, noisy 2-core VM the load from other processes drifts over seconds: timing all of A
  and then all of B would let that drift decide the comparison, interleaving spreads it over
  every contender alike, and rotation keeps any one contender from always running first (or
  always right after the same neighbour).
* **Warm-up first.** Each contender is called before the rounds, untimed for the statistics
  (allocator, lazy initialisation, kernel selection, caches), so the first round is not special.
* **Every sample kept.** A :class:`Timing` holds all samples, one per round; the min (the least
  disturbed run) and the median (the typical one) are reported, and JSON output carries the lot.
* **Paired ratios.** A ratio to a reference is taken per round, between the two samples taken
  side by side, and the median over rounds is reported (:func:`paired_ratio`, with quartiles, and
  the ratio of the medians beside it). A burst of load hits both samples of a pair, so the paired
  ratio is steadier than either time.
* **Per-item rates.** A contender that handles N items per call (texts, queries) reports seconds
  per item and items per second (:attr:`Timing.per_item`, :attr:`Timing.rate`).

The clock is a parameter everywhere, so ``tests/test_benchmark_harness.py`` checks the
bookkeeping with a fake one. ``benchmarks/`` is not a package: scripts put their own directory
on ``sys.path`` and ``import harness``. Only the standard library is imported at module level
(torch only inside :func:`torch_threads`), so a light process, such as ``serve_load.py``'s load
generator, can use it too.

It also holds the scripts' argparse ``type=`` checks (:func:`positive_int`, :func:`comma_choices`,
:func:`output_file`, ...), so a bad flag stops a script at once with argparse's one-line ``error:``
(exit 2), not a traceback minutes in, nor a run that silently does nothing; and :func:`temp_dir`, the
one way a script makes a temporary folder, which goes away when the script ends, however it ends.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: A monotonic clock in seconds (``time.perf_counter``, or a fake one in tests).
Clock = Callable[[], float]

_T = TypeVar("_T")

__all__ = [
    "Clock",
    "Ratio",
    "Stopwatch",
    "Timing",
    "add_model_arguments",
    "comma_choices",
    "comma_list",
    "describe_error",
    "existing_dir",
    "format_seconds",
    "interleave",
    "model_dir_or_pretrained",
    "model_directory",
    "non_negative_float",
    "non_negative_int",
    "output_dir",
    "output_file",
    "paired_ratio",
    "positive_float",
    "positive_int",
    "print_table",
    "quantile",
    "run_name",
    "temp_dir",
    "torch_threads",
]


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks.

    The same definition as numpy's default and ``statistics.quantiles(method="inclusive")``, but
    defined for one value too (a single round still has a median and quartiles). NaN when empty.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Timing:
    """Every sample of one contender, and the statistics the scripts print.

    Attributes:
        name: The contender's name.
        samples: Seconds per call, one sample per round (sample ``i`` was taken in round ``i``,
            which is what pairs it with other contenders' samples in :func:`paired_ratio`).
        number: Calls per sample (a sample is their mean), so fast calls are not timed alone.
        items: Items (texts, queries) one call handles, for per-item times and rates.
        warmup: Seconds of each warm-up call: kept to size ``number``, never in the statistics.
        error: Why the contender stopped (it is left out of later rounds), or None.
    """

    name: str
    samples: list[float] = field(default_factory=list)
    number: int = 1
    items: int = 1
    warmup: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Measured without an error: only then are its statistics meaningful."""
        return self.error is None and bool(self.samples)

    @property
    def min(self) -> float:
        """Fastest sample: the run least disturbed by other processes."""
        return min(self.samples) if self.samples else math.nan

    @property
    def median(self) -> float:
        """Median sample: the typical call, robust to a few disturbed rounds."""
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def mean(self) -> float:
        """Mean sample (a total divided by a count, e.g. mean request latency)."""
        return statistics.fmean(self.samples) if self.samples else math.nan

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the samples (e.g. 0.99 for a p99 latency)."""
        return quantile(self.samples, q)

    @property
    def per_item(self) -> float:
        """Median seconds per item (``median / items``)."""
        return self.median / self.items

    @property
    def rate(self) -> float:
        """Items per second at the median (texts/s, queries/s)."""
        return self.items / self.median if self.samples else math.nan

    def to_json(self) -> dict[str, Any]:
        """Statistics and raw samples, for a script's ``--json`` output."""
        return {
            "median_s": self.median if self.ok else None,
            "min_s": self.min if self.ok else None,
            "samples_s": self.samples,
            "calls_per_round": self.number,
            "items": self.items,
            "error": self.error,
        }


@dataclass(frozen=True)
class Ratio:
    """A contender's time over a reference's: per round, and as the ratio of the two medians.

    Attributes:
        per_round: ``num / den`` for each round both were measured in, in round order.
        of_medians: ``median(num) / median(den)``, the unpaired ratio, for comparison.
    """

    per_round: tuple[float, ...]
    of_medians: float

    @property
    def median(self) -> float:
        """Median of the per-round ratios: the number to report (NaN when nothing was paired)."""
        return statistics.median(self.per_round) if self.per_round else math.nan

    @property
    def low(self) -> float:
        """25th percentile of the per-round ratios."""
        return quantile(self.per_round, 0.25)

    @property
    def high(self) -> float:
        """75th percentile of the per-round ratios."""
        return quantile(self.per_round, 0.75)

    def fmt(self) -> str:
        """``"1.23 [1.10-1.30]"``: the median with its interquartile range, or ``"n/a"``."""
        if math.isnan(self.median):
            return "n/a"
        return f"{self.median:.2f} [{self.low:.2f}-{self.high:.2f}]"

    def to_json(self) -> dict[str, Any]:
        """The paired median, its quartiles, the ratio of medians and every round's ratio."""
        return {
            "median": self.median,
            "p25": self.low,
            "p75": self.high,
            "of_medians": self.of_medians,
            "rounds": list(self.per_round),
        }


def paired_ratio(num: Timing, den: Timing) -> Ratio:
    """``num / den`` per round, paired by round index (the two samples ran side by side).

    For a speed-up of B over A pass ``paired_ratio(A, B)`` (time of A over time of B). When
    either side failed or was never measured, the ratio is empty (its median NaN).
    """
    if not (num.ok and den.ok):
        return Ratio((), math.nan)
    pairs = tuple(a / b for a, b in zip(num.samples, den.samples, strict=False))
    return Ratio(pairs, num.median / den.median)


def describe_error(exc: BaseException) -> str:
    """Default text for a contender's failure: the exception's type and first 80 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:80]}" if text else type(exc).__name__


def interleave(
    contenders: Mapping[str, Callable[[], object]],
    *,
    rounds: int | None = None,
    min_rounds: int | Callable[[float], int] = 1,
    max_rounds: int | None = None,
    budget_s: float = 0.0,
    warmup: int = 1,
    warmup_s: float = math.inf,
    number: int | Mapping[str, int] = 1,
    round_time: float | None = None,
    items: int | Mapping[str, int] = 1,
    rotate: bool = True,
    before_each: Callable[[], object] | None = None,
    catch: tuple[type[BaseException], ...] = (),
    describe: Callable[[BaseException], str] = describe_error,
    clock: Clock = time.perf_counter,
) -> dict[str, Timing]:
    """Warm every contender up, then time them in interleaved rounds; one :class:`Timing` each.

    Each round calls every contender still running once (``number`` calls per sample), in the
    contenders' order rotated by the round number (``rotate=False``: always in that order).
    Rounds go on while fewer than ``min_rounds`` are done, or while the rounds have taken less
    than ``budget_s`` seconds, and stop at ``max_rounds``: a budget in seconds adapts to how
    fast the machine is that day, the bounds keep a slow or a fast machine reasonable.

    Args:
        contenders: Name -> call taking no arguments; its return value is dropped (a contender
            that needs it stores it itself). Names keep their order in the result.
        rounds: Exactly this many rounds (overrides ``min_rounds``, ``max_rounds``, ``budget_s``).
        min_rounds: Rounds always run; or a function of the expected seconds of one round (from
            the warm-up), for groups that should run fewer rounds when each is slow.
        max_rounds: At most this many rounds (default: ``min_rounds``, i.e. no budget rounds).
        budget_s: After ``min_rounds``, add rounds until the rounds have taken this long.
        warmup: Untimed calls per contender before the rounds (0: the caller warmed up).
        warmup_s: Fewer warm-up calls for a slow contender: it stops warming up (after at least
            one call) once its warm-up calls have taken this long together.
        number: Calls per sample, for all contenders or by name.
        round_time: Instead of ``number``, choose calls per sample so that one sample takes about
            this long, from the contender's last warm-up call (microsecond calls are timed in
            bulk, slow ones alone).
        items: Items one call handles, for all contenders or by name (per-item times, rates).
        rotate: Rotate the order from round to round (default) or keep it fixed.
        before_each: Called before every timed sample, outside the timing (e.g. ``gc.collect``,
            so one contender's garbage is not collected on another's time).
        catch: Exceptions that stop a contender instead of the run: recorded in
            :attr:`Timing.error`, the contender is left out of later rounds (e.g. out of memory).
        describe: Turns a caught exception into :attr:`Timing.error`'s text.
        clock: Seconds, monotonic; ``time.perf_counter`` unless testing.

    Returns:
        Name -> :class:`Timing`, in the order of ``contenders``.

    Raises:
        ValueError: ``round_time`` without warm-up (nothing to size the calls by), or no rounds.
    """
    if round_time is not None and warmup < 1:
        raise ValueError("round_time sizes calls from the warm-up: warmup must be >= 1")
    timings = {
        name: Timing(
            name,
            number=number[name] if isinstance(number, Mapping) else number,
            items=items[name] if isinstance(items, Mapping) else items,
        )
        for name in contenders
    }
    for name, fn in contenders.items():
        timing = timings[name]
        try:
            while len(timing.warmup) < warmup and (not timing.warmup or sum(timing.warmup) < warmup_s):
                start = clock()
                fn()
                timing.warmup.append(clock() - start)
        except catch as exc:
            timing.error = describe(exc)
            continue
        if round_time is not None:
            timing.number = max(1, round(round_time / max(timing.warmup[-1], 1e-7)))

    alive = [name for name in contenders if timings[name].error is None]
    if rounds is not None:
        low = high = rounds
    else:
        expected = sum(timings[n].warmup[-1] * timings[n].number for n in alive if timings[n].warmup)
        low = min_rounds(expected) if callable(min_rounds) else min_rounds
        high = max(low, max_rounds if max_rounds is not None else low)
    if high < 1:
        raise ValueError("at least one round is needed")
    done = 0
    started = clock()
    while alive and done < high and (done < low or clock() - started < budget_s):
        shift = done % len(alive) if rotate else 0
        for name in alive[shift:] + alive[:shift]:
            fn, timing = contenders[name], timings[name]
            if before_each is not None:
                before_each()
            try:
                start = clock()
                for _ in range(timing.number):
                    fn()
                timing.samples.append((clock() - start) / timing.number)
            except catch as exc:
                timing.error = describe(exc)
        alive = [name for name in alive if timings[name].error is None]
        done += 1
    return timings


class Stopwatch:
    """Seconds of a one-off step that is reported but not compared (an index build, a training run).

    Starts when made; :attr:`seconds` reads the time so far, or, once a ``with`` block around it
    has ended, the block's time::

        with Stopwatch() as watch:
            build()
        print(watch.seconds)
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self.start = clock()
        self.stop: float | None = None

    def __enter__(self) -> Stopwatch:
        self.start, self.stop = self._clock(), None
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = self._clock()

    @property
    def seconds(self) -> float:
        """Seconds from the start to the end of the ``with`` block, or to now."""
        return (self.stop if self.stop is not None else self._clock()) - self.start


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` PyTorch intra-op threads, then restore the previous count.

    Thread count changes timings more than anything else on a small machine, so a measurement
    that needs its own count must not leave it changed for what the script times next.
    ``None`` keeps the current count. Yields the count in force.
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def format_seconds(seconds: float) -> str:
    """``"1.23 s"``, ``"4.56 ms"`` or ``"789 us"``: a time in the unit that reads best."""
    if math.isnan(seconds):
        return "n/a"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def print_table(title: str, headers: list[str], rows: list[list[str]], notes: list[str] | None = None) -> None:
    """Print a titled table: first column left-aligned (labels), the others right-aligned (numbers).

    Args:
        title: Printed above the table, underlined.
        headers: Column names.
        rows: Cells as strings, one list per row, as many as ``headers``.
        notes: Lines printed under the table as ``* note`` (what a column means, the reference).
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    print(f"\n{title}")
    print("=" * len(title))
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    for note in notes or []:
        print(f"  * {note}")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------
# Argument checks: argparse ``type=`` callables. argparse turns their ArgumentTypeError into
# ``usage: ...`` and one ``error: argument --flag: MESSAGE`` line on stderr, and exit status 2.
# ----------------------------------------------------------------------------------------------


def _int(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"must be an integer >= {least}, not {text!r}")
    return value


def _float(text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"must be a finite number {'> 0' if positive else '>= 0'}, not {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1: rounds, threads, clients, texts and other counts."""
    return _int(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0: a count where 0 means something (all rows, no attack, one thread per core)."""
    return _int(text, 0)


def positive_float(text: str) -> float:
    """A finite number > 0: seconds, minutes, GiB."""
    return _float(text, positive=True)


def non_negative_float(text: str) -> float:
    """A finite number >= 0: a warm-up or a wait that may be zero."""
    return _float(text, positive=False)


def comma_list(item: Callable[[str], _T]) -> Callable[[str], list[_T]]:
    """A ``type=`` for a non-empty comma-separated list, each item checked by ``item`` (e.g. ``positive_int``).

    Blank items are skipped (``"1,2,"`` is ``[1, 2]``); the error names the bad item.
    """

    def parse(text: str) -> list[_T]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, not {text!r}")
        values = []
        for part in parts:
            try:
                values.append(item(part))
            except argparse.ArgumentTypeError:
                raise
            except ValueError:
                raise argparse.ArgumentTypeError(f"invalid item {part!r}") from None
        return values

    return parse


def comma_choices(allowed: Iterable[str], *, files: bool = False) -> Callable[[str], list[str]]:
    """A ``type=`` for a non-empty comma-separated list of names from ``allowed`` (sections, data sets).

    Returns the names in the order given, each once, blanks skipped. The error names the first
    unknown item and every allowed value. ``files=True`` also accepts a path to an existing file
    (for data sets: the library reads files as well as registered names).
    """
    names = tuple(allowed)
    choose = f"choose from {', '.join(names)}" + (", or an existing file" if files else "")

    def parse(text: str) -> list[str]:
        chosen = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
        if not chosen:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list; {choose}")
        for name in chosen:
            if name not in names and not (files and Path(name).is_file()):
                raise argparse.ArgumentTypeError(f"unknown {name!r}; {choose}")
        return chosen

    return parse


def existing_dir(text: str) -> str:
    """A directory that exists (a model directory): returned as given, a ``str``."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    return text


def model_directory(text: str) -> str:
    """A model directory (one holding ``config.json``): returned as given. serve.py had copied whatever
    directory it was given (a 12 GB ``/tmp``) before finding it was none."""
    existing_dir(text)
    if not (Path(text) / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a model directory (it has no config.json)")
    return text


def _writable_folder(path: Path, text: str, *, make: bool) -> None:
    """The folder ``path`` is (or, with ``make``, would be made) in exists, is a directory, and may be written."""
    folder = path.parent
    while make and not folder.exists() and folder != folder.parent:  # the folder the script would make it in
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(folder)!r} is a file, not a directory")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: no such directory: {str(folder)!r}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write in {str(folder)!r} (permission denied)")


def output_file(text: str, *, make_folder: bool = False) -> str:
    """A file a script writes when it is done (``--json PATH``): not a directory, in a folder that exists and
    may be written (``make_folder=True``, for a script that makes the folder: one that can be made). Returned
    as given, a ``str``. A bad path had been found only after the whole run, as a traceback, the results lost."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file's path, not an empty string")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file's path")
    _writable_folder(path, text, make=make_folder)
    return text


def output_dir(text: str) -> str:
    """A folder a script writes into and makes if needed (``--out-dir``, ``--keep``): a directory, or a path
    that can be made one (not an existing file, nor under one). Returned as given, a ``str``. A file given had
    stopped the script with a FileExistsError traceback, some after minutes of work."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory's path, not an empty string")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory")
    if not path.is_dir():
        _writable_folder(path, text, make=True)
    return text


def run_name(data: str) -> str:
    """The folder name of a run on ``data``: a data set's name as it is, a file by its stem and a hash of
    its resolved path, so two ``train.csv`` of other folders do not share a run (an absolute path had
    replaced the output folder itself: ``out / "/abs/file.csv"`` is ``/abs/file.csv``)."""
    path = Path(data)
    if not (path.suffix or len(path.parts) > 1):
        return data
    import hashlib

    return f"{path.stem}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"


def add_model_arguments(parser: argparse.ArgumentParser, *, what: str, rounds: int = 15) -> None:
    """The model-timing scripts' shared flags: an optional ``model_dir`` (``what`` it may be; the
    default is the pretrained MiniLM with an untrained head, :func:`model_dir_or_pretrained`),
    ``--threads`` (default 1) and ``--rounds``."""
    parser.add_argument("model_dir", nargs="?", type=model_directory,
                        help=f"{what} (default: pretrained MiniLM, untrained head)")  # fmt: skip
    parser.add_argument("--threads", type=positive_int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--rounds", type=positive_int, default=rounds, help=f"interleaved rounds (default {rounds})")


def model_dir_or_pretrained(model_dir: str | None, name: str) -> Path:
    """``model_dir``, or a new temporary directory ``attend-NAME-*`` (:func:`temp_dir`) holding the pretrained
    MiniLM with an untrained head (``serve_load.minilm_dir``): speed does not depend on the head's weights."""
    if model_dir:
        return Path(model_dir)
    from serve_load import minilm_dir

    return minilm_dir(temp_dir(name) / "minilm")


def temp_dir(name: str) -> Path:
    """A new temporary directory ``attend-NAME-*``, removed when the process ends: normally, on an error, on
    Ctrl-C, or on SIGTERM (which then ends the script as an exception would, its ``finally`` blocks run, exit
    status 143). Only SIGKILL leaves it. ``tempfile.mkdtemp`` alone had left a folder behind every run (an
    87 MB MiniLM copy in /tmp from each ``serve_load.py``). A forked child that exits does not remove it."""
    import atexit
    import shutil
    import signal
    import tempfile
    import threading

    folder = Path(tempfile.mkdtemp(prefix=f"attend-{name}-"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_signal)  # SIGTERM's default ends the process with no atexit
    return folder


def _exit_on_signal(signum: int, frame: object) -> None:
    sys.exit(128 + signum)
