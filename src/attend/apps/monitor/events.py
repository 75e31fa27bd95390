"""Events in, one validated :class:`Event` at a time: from a JSONL/CSV file, a growing file, or stdin.

An event is ``{"id", "time", "text"}`` plus optional ``"topic"`` and ``"source"``. Every problem is
a :class:`~attend.data.readers.DataError` naming the file, the line, the field and the value, so the
CLI prints one line a person can act on. Times are ISO 8601; a time without a zone is taken as UTC
(the monitor buckets in UTC, and guessing the machine's zone would make a replay depend on where it
runs).

Three sources share one parser:

* :func:`read_events` reads a whole file and returns its events sorted by time (a replay);
* :func:`follow_events` tails a file being appended to, polling, and yields ``None`` when it has
  been idle for ``poll`` seconds so the caller can commit what it holds;
* :func:`stream_events` reads a text stream such as stdin, also yielding ``None`` when idle.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from attend.data.readers import (
    DataError,
    allow_long_fields,
    data_suffix,
    is_compressed,
    json_line,
    json_problem,
    read_data_bytes,
)
from attend.data.validation import is_empty, text_problem

log = logging.getLogger("attend.monitor")

__all__ = [
    "MAX_EVENT_CHARS",
    "Event",
    "follow_events",
    "format_time",
    "format_window",
    "has_zone",
    "parse_event",
    "parse_time",
    "parse_window",
    "read_events",
    "stream_events",
]

#: Longest accepted id / topic / source (they are database keys; a longer one is almost surely a wrong column).
MAX_KEY_CHARS = 200

_WINDOW = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


#: Longest text kept of an event read from a file or stdin (a longer one is cut to its start, which
#: is all the sentiment model reads); over HTTP, ``MonitorSettings.max_chars`` refuses long ones.
MAX_EVENT_CHARS = 100_000


@dataclass(frozen=True)
class Event:
    """One text in the stream.

    Attributes:
        id: Unique id; storing an id twice keeps the first (replays are idempotent).
        time: When it happened, timezone-aware UTC.
        text: The text to score.
        topic: Its topic, if the stream says; else the topic model (or one topic for all) decides.
        source: Where it came from (free text, kept for people).
        zoned: Whether the given time had a zone (one without is taken as UTC, and the run says so).
    """

    id: str
    time: datetime
    text: str
    topic: str | None = None
    source: str | None = None
    zoned: bool = True

    @property
    def ts(self) -> int:
        """Seconds since the Unix epoch (whole seconds: windows are never finer than that)."""
        return int(self.time.timestamp() // 1)


def format_time(moment: datetime | int) -> str:
    """ISO 8601 in UTC with a ``Z`` (``2020-03-01T14:30:00Z``); ints are epoch seconds."""
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, *, where: str = "time") -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime.

    Raises:
        ValueError: not a string, or not ISO 8601; the message starts with ``where``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'{where}: expected an ISO 8601 time such as "2020-03-01T14:30:00Z", got {value!r}')
    try:
        moment = datetime.fromisoformat(_zulu(value))
    except ValueError:
        raise ValueError(f'{where}: {value!r} is not an ISO 8601 time (e.g. "2020-03-01T14:30:00Z")') from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # In UTC, as stored: windows end after their events and times are written with four-digit
    # years, so years past 9998 overflow a window's end and years before 1000 are not ISO 8601 as
    # written (1000-01-01T00:00+14:00 is in year 999 in UTC).
    utc = moment.astimezone(UTC) if 1 < moment.year < 9999 else moment
    if not 1000 <= utc.year <= 9998:
        raise ValueError(f"{where}: {value!r} is outside the years 1000-9998 (in UTC)")
    return utc


def has_zone(value: str) -> bool:
    """Whether an ISO 8601 time (one :func:`parse_time` accepts) names its zone (``Z``, ``+02:00``)."""
    return datetime.fromisoformat(_zulu(value)).tzinfo is not None


def _zulu(value: str) -> str:
    """``value`` stripped, with a lower-case ``z`` for UTC written ``Z`` (RFC 3339 allows either;
    Python reads only the capital)."""
    value = value.strip()
    return value[:-1] + "Z" if value.endswith("z") else value


def parse_window(value: str, *, option: str = "--window") -> int:
    """A window length such as ``15m``, ``1h``, ``1d`` or ``1w``, in seconds."""
    match = _WINDOW.match(value or "")
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{option} {value!r}: give a positive whole number and a unit s, m, h, d or w "
                         "(e.g. 15m, 1h, 1d, 1w)")  # fmt: skip
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds > MAX_WINDOW:  # 100w had ended its windows past the year 9999: every later read of the db failed
        raise ValueError(f"{option} {value!r}: at most {format_window(MAX_WINDOW)} (a year of weeks)")
    return seconds


#: The longest window: 52 weeks (its windows end within the years events may have).
MAX_WINDOW = 52 * 7 * 86400


def format_window(seconds: int) -> str:
    """The shortest spelling of a window length that :func:`parse_window` reads back (``3600`` -> ``1h``)."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def _key(record: dict[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise DataError(f'{where}: field "{name}" is missing or empty')
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f'{where}: field "{name}" is {type(value).__name__} {value!r}, expected a string')
    text = str(value).strip()
    if len(text) > MAX_KEY_CHARS:
        raise DataError(f'{where}: field "{name}" is {len(text)} characters long, over {MAX_KEY_CHARS}')
    problem = text_problem(text)  # a lone surrogate: it had failed in the database, unlocated
    if problem is not None and not is_empty(problem):
        raise DataError(f'{where}: field "{name}" {problem}')
    return text


def parse_event(record: Any, where: str) -> Event:
    """Validate one record (a JSON object or CSV row) into an :class:`Event`.

    Args:
        record: The parsed record.
        where: ``"FILE: line N"``, the prefix of every error message.
    """
    if not isinstance(record, dict):
        raise DataError(f"{where} is a JSON {type(record).__name__}, expected an object with id, time and text")
    event_id = _key(record, "id", where, required=True)
    if "time" not in record or record["time"] in (None, ""):
        raise DataError(f'{where}: field "time" is missing (an ISO 8601 time such as "2020-03-01T14:30:00Z")')
    try:
        moment = parse_time(record["time"], where=f'{where}: field "time"')
    except ValueError as exc:
        raise DataError(str(exc)) from None
    text = record.get("text")
    if not isinstance(text, str):
        missing = "text" not in record or text is None
        raise DataError(f'{where}: field "text" is ' + ("missing" if missing else f"{type(text).__name__} {text!r}, "
                                                        "expected a string"))  # fmt: skip
    problem = text_problem(text)
    if problem is not None:
        raise DataError(f'{where}: field "text" ' + ("is empty" if problem.startswith("is an empty") else problem))
    return Event(
        id=str(event_id),
        time=moment,
        text=text[:MAX_EVENT_CHARS],  # the model reads a text's start; an 18 MB line cost 2.3 GB and a minute
        topic=_key(record, "topic", where, required=False),
        source=_key(record, "source", where, required=False),
        zoned=has_zone(record["time"]),
    )


def _format_of(name: str, fmt: str | None) -> str | None:
    if fmt is not None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"--format {fmt!r}: choose jsonl or csv")
        return fmt
    suffix = data_suffix(name)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return None  # decided from the first line


def _sniff(first_line: str) -> str:
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _inside_quotes(text: str) -> bool:
    """Whether CSV ``text`` ends inside a quoted field. A quote opens one only at the start of a field
    (as the csv module reads it): an inch mark inside an unquoted field (``15" screen``) is a character."""
    inside, field_start, i = False, True, 0
    while i < len(text):
        char = text[i]
        if inside:
            if char == '"':
                if text.startswith('""', i):
                    i += 2
                    continue
                inside = False
        elif char == '"' and field_start:
            inside = True
        field_start = not inside and char in ",\n"
        i += 1
    return inside


class _Parser:
    """Turns complete lines into events, for JSONL or CSV (CSV: the first line is the header).

    A CSV record may span lines inside quotes; the parser holds lines until the quotes balance,
    which is what lets the same code tail a growing CSV file.
    """

    def __init__(self, name: str, fmt: str | None) -> None:
        self.name = name
        self.fmt = fmt
        self.header: list[str] | None = None
        self.pending: list[str] = []
        self.pending_line = 0

    def feed(self, line: str, line_number: int) -> Event | None:
        if self.fmt is None:
            if not line.strip():
                return None
            self.fmt = _sniff(line)
        if self.fmt == "jsonl":
            if not line.strip():
                return None
            where = f"{self.name}: line {line_number}"
            try:
                record = json_line(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} is not valid JSON ({json_problem(exc)})") from None
            return parse_event(record, where)
        if not self.pending:
            if not line.strip():
                return None
            self.pending_line = line_number
        self.pending.append(line)
        joined = "\n".join(self.pending)
        if _inside_quotes(joined):  # inside a quoted field: wait for the rest of the record
            return None
        self.pending = []
        allow_long_fields()  # a text over 128 KiB is cut to the stored length, not a csv.Error
        rows = list(csv.reader(io.StringIO(joined, newline="")))
        if len(rows) != 1:  # a sign the quotes were misread: refuse rather than keep the first record only
            raise DataError(f"{self.name}: line {self.pending_line}: a quote runs on to line {line_number}; quote "
                            'a field that holds a quote, and write the quote twice ("15"" screen")')  # fmt: skip
        row = rows[0]
        if self.header is None:
            self.header = [column.strip().lstrip("\ufeff") for column in row]
            missing = [c for c in ("id", "time", "text") if c not in self.header]
            if missing:
                raise DataError(f"{self.name}: line {line_number}: the CSV header {self.header} lacks column(s) "
                                f"{missing}")  # fmt: skip
            twice = sorted({c for c in self.header if c and self.header.count(c) > 1})
            if twice:  # which of the two is the event's? (the last had been taken, in silence)
                raise DataError(f"{self.name}: line {line_number}: the CSV header names {', '.join(map(repr, twice))} "
                                "more than once; keep one column of each name")  # fmt: skip
            return None
        where = f"{self.name}: line {self.pending_line}"
        if len(row) > len(self.header):
            raise DataError(f"{where} has {len(row)} fields, more than the header's {len(self.header)}")
        return parse_event(dict(zip(self.header, row, strict=False)), where)

    def finish(self) -> None:
        if self.pending:
            raise DataError(f"{self.name}: line {self.pending_line}: a quoted CSV field is never closed")


def _decode(name: str, raw: bytes, line_offset: int = 0) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = line_offset + raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{name}: line {line} is not valid UTF-8; re-save the file as UTF-8") from None


def read_events(path: str | os.PathLike[str], *, fmt: str | None = None) -> list[Event]:
    """Every event of a JSONL or CSV file, validated, in time order (stable for equal times; a
    repeated id's first line comes before its repeats, which are kept for the store to skip).

    The whole file is checked before anything is returned, so a bad line stops a replay before it
    writes a single event.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such events file")
    text = _decode(str(path), read_data_bytes(path))  # a .jsonl.gz or .csv.xz decompressed
    if not text.strip():
        raise DataError(f"{path} is empty")
    parser = _Parser(str(path), _format_of(path.name, fmt))
    events = []
    # Lines end at \n, \r\n or \r only: U+2028 and the like are text inside a record (str.splitlines
    # would cut a valid JSON line there), as stdin and --follow read them.
    for number, line in enumerate(_LINE_BREAK.split(text.removesuffix("\n")), start=1):
        event = parser.feed(line, number)
        if event is not None:
            events.append(event)
    parser.finish()
    # In time order, but an id's first line before its repeats, whatever their times: the first
    # text is the one kept, as stdin and the service keep it (the earliest time's had been, here).
    first: dict[str, Any] = {}
    keys = [(max(event.time, first.setdefault(event.id, event.time)), index) for index, event in enumerate(events)]
    return [events[index] for _, index in sorted(keys)]


def follow_events(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    poll: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Event | None]:
    """Tail a file: its current lines, then each line appended to it, forever (until ``stop()``).

    Yields ``None`` whenever a poll finds nothing new, so the caller can flush its batch. A line
    is only parsed once its newline has been written, so a writer caught mid-line is never misread.
    A file rotated away (renamed, as logrotate does by default, or removed) is read on while its
    writer still appends to it (until it reopens the path: two polls with nothing new, once a new
    file is there), then the new file from its start; a last line the writer never finished is
    skipped with a warning, not read as a broken event. One truncated (copytruncate), whether it
    shrank or was refilled past where reading stood, is read again from its start (ids already
    stored are skipped downstream). A new file had been read from the old one's offset: its first
    events were lost, or a line read from its middle.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such events file")
    if is_compressed(path):
        raise DataError(f"{path} is compressed: a file being appended to is followed as plain text; replay a "
                        "compressed file without --follow")  # fmt: skip
    name, kind = str(path), _format_of(path.name, fmt)
    tail = _Tail(name, kind)
    handle: BinaryIO | None = None
    quiet = 0  # polls in a row with nothing new in a rotated file
    try:
        while not stop():
            try:
                status: os.stat_result | None = path.stat()
            except OSError:
                status = None  # rotated away, the new file not made yet
            if handle is not None and (status is None or not os.path.samestat(status, os.fstat(handle.fileno()))):
                # Rotated: its writer appends to it until it reopens the path (logrotate's HUP).
                handle.seek(tail.offset)
                chunk = handle.read() or b""
                quiet = 0 if chunk else quiet + 1
                yield from tail.feed(chunk)
                if status is None or quiet < 2:
                    yield None
                    time.sleep(poll)
                    continue
                tail.finish()
                handle.close()
                handle, tail, quiet = None, _Tail(name, kind), 0
            if handle is None:
                if status is None:
                    yield None
                    time.sleep(poll)
                    continue
                handle = open(path, "rb", buffering=0)  # unbuffered: a rewritten start is read as it is now
            size = os.fstat(handle.fileno()).st_size
            if size < tail.offset or tail.head_changed(handle):  # truncated in place: start over
                tail = _Tail(name, kind)
            if size > tail.offset:
                handle.seek(tail.offset)
                yield from tail.feed(handle.read(size - tail.offset))
                continue
            yield None
            time.sleep(poll)
    finally:
        if handle is not None:
            handle.close()
            tail.finish(stopped=True)


class _Tail:
    """Where reading one followed file stands: its offset, line count, unfinished line and the bytes
    it began with (a file truncated and refilled past the offset between two polls begins otherwise)."""

    HEAD = 256

    def __init__(self, name: str, fmt: str) -> None:
        self.name, self.parser = name, _Parser(name, fmt)
        self.offset, self.line_number, self.buffer, self.head = 0, 0, b"", b""

    def head_changed(self, handle: BinaryIO) -> bool:
        if not self.head:
            return False
        handle.seek(0)  # the caller seeks to where it reads next
        return handle.read(len(self.head)) != self.head

    def finish(self, stopped: bool = False) -> None:
        """The file is done with (rotated away, its writer gone to the new one; or, ``stopped``, the
        reading stopped): what it left unfinished, a line without its end or a quoted CSV record never
        closed, is said and skipped (on a stop it had been dropped without a word)."""
        unfinished = len(self.buffer) + sum(len(line) for line in self.parser.pending)
        if unfinished and stopped:
            log.warning("%s: stopped before its last line was finished (%d bytes after line %d, no line end yet): "
                        "not read; a rerun reads it once its line end is written", self.name, unfinished,
                        self.line_number)  # fmt: skip
        elif unfinished:
            log.warning("%s: the file rotated away ends in an unfinished line (%d bytes, after line %d): skipped",
                        self.name, unfinished, self.line_number)  # fmt: skip

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events of the complete lines of ``chunk``, read on from the offset."""
        if len(self.head) < self.HEAD:
            self.head += chunk[: self.HEAD - len(self.head)]
        self.offset += len(chunk)
        *complete, self.buffer = (self.buffer + chunk).split(b"\n")
        for raw in complete:
            self.line_number += 1
            event = self.parser.feed(_decode(self.name, raw, self.line_number - 1).rstrip("\r"), self.line_number)
            if event is not None:
                yield event


def _fileno(stream: TextIO | BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def _raw_lines(stream: TextIO | BinaryIO, poll: float) -> Iterator[bytes | None]:
    """Complete lines (without the newline) from a stream, or ``None`` after ``poll`` idle seconds.

    A real file descriptor is read directly with ``os.read`` after ``select``: a buffered text
    wrapper would hold lines that ``select`` cannot see, and stall until more input arrived.
    """
    fd = _fileno(stream)
    if fd is None:  # an in-memory stream: everything is already there
        for line in stream:
            yield (line.encode("utf-8") if isinstance(line, str) else line).rstrip(b"\r\n")
        return
    buffer = b""
    while True:
        try:
            ready, _, _ = select.select([fd], [], [], poll)
        except (OSError, ValueError):
            ready = [fd]
        if not ready:
            yield None
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        *complete, buffer = (buffer + chunk).split(b"\n")
        for raw in complete:
            yield raw.rstrip(b"\r")
    if buffer:
        yield buffer.rstrip(b"\r")


def stream_events(stream: TextIO | BinaryIO, *, name: str = "standard input", fmt: str | None = None,
                  poll: float = 0.5) -> Iterator[Event | None]:  # fmt: skip
    """Events from a stream (stdin) as they arrive, until end of input.

    Yields ``None`` when no line has arrived for ``poll`` seconds (so a slow producer's events
    are committed without waiting for a full batch).
    """
    parser = _Parser(name, _format_of("", fmt))
    number = 0
    for raw in _raw_lines(stream, poll):
        if raw is None:
            yield None
            continue
        number += 1
        event = parser.feed(_decode(name, raw, number - 1), number)
        if event is not None:
            yield event
    parser.finish()
