"""Batch scoring of a large file: read, classify and write in chunks, in constant memory.

``attend predict MODEL --input FILE`` reads the texts as it goes (:class:`attend.data.readers.TextStream`),
classifies :data:`CHUNK` texts at a time and writes their rows before reading on, so memory stays
flat from ten thousand lines to millions (``benchmarks/predict_stream.py``). With ``--output
FILE --resume`` an interrupted run continues where its output ends: the rows already written are
counted (a row cut off by the interruption is dropped first), the same number of input texts is
skipped, and new rows are appended, so the finished file equals one written in a single run.

Formats: ``csv`` (a header, then ``text, label_1, probability_1, ..., truncated, warning``), ``json`` (one
JSON list, written element by element; not resumable) and ``jsonl`` (one object per line). Columns
of the input kept with ``--keep-cols`` (an id) end a CSV row and follow ``text`` in an object.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from attend.data.readers import DataError, is_compressed
from attend.runtime.classifier import TextClassifier

__all__ = ["CHUNK", "FORMATS", "ExistingOutput", "PredictionWriter", "check_kept_columns", "check_output_name",
           "completed_rows", "format_for", "open_output", "predict_stream", "read_existing"]

#: Texts read, classified and written at a time (the runtime plans its batches within a chunk).
#: Larger chunks batch better but hold more at once. `benchmarks/predict_stream.py` (small encoder,
#: one thread) at 10k / 100k / 1M lines: 256 texts gave a peak RSS of 384 / 424 / 436 MiB and
#: 4,082 lines/s at 1M; 1,024 gave 373 / 467 / 508 MiB and 4,969 lines/s. Flat memory comes first.
CHUNK = 256
#: Output formats.
FORMATS = ("json", "csv", "jsonl")


#: How a file of each resumable format starts: a file holding no whole row is continued (its start
#: cut off by the interruption) only when it begins this way, or is the beginning of it.
STARTS = {"csv": b"text,label_1,probability_1,", "jsonl": b'{"text": '}
#: Largest difference between a probability the file holds (a CSV's six decimals) and the model's
#: for the same text, for the file to count as this model's output (batching moves the last digits).
SAME_MODEL_TOLERANCE = 1e-3
#: Last rows of a file to be continued that a resumed run predicts again, each within
#: :data:`SAME_MODEL_TOLERANCE`: int8 stays that close to fp32 on about half the rows (ONNX's on
#: three quarters), so the last row alone had let one model's file go on with the other's rows.
RECHECKED_ROWS = 64
#: Slack of the threshold a multi-label file's rows bound (:meth:`ExistingOutput.choose`): a CSV's six
#: decimals, and the last digits batching moves.
THRESHOLD_SLACK = 1e-5
#: Keys of a JSON prediction row: a kept input column may not take one of these names.
ROW_KEYS = ("text", "label", "labels", "top", "truncated", "warning")


def check_kept_columns(columns: Sequence[str]) -> list[str]:
    """The ``--keep-cols`` names, refused where one is empty, given twice, or a name the output
    itself uses (``text``, ``label``, ``label_2``, ...).

    Raises:
        DataError: naming the column.
    """
    names = [column.strip() for column in columns]
    for name in names:
        if not name:
            raise DataError(f"--keep-cols {','.join(columns)!r}: a column name is empty")
        if name in ROW_KEYS or re.fullmatch(r"(label|probability)_\d+", name):
            whose = ("a multi-label model's predictions have a 'labels' of their own, and the name is kept for "
                     "them whatever the model" if name == "labels" else f"the predictions have a {name!r} of their "
                     "own")  # fmt: skip
            raise DataError(f"--keep-cols {name!r}: {whose}; rename that column in the input to keep it")
        if names.count(name) > 1:
            raise DataError(f"--keep-cols: {name!r} is named twice")
    return names


@dataclass
class ExistingOutput:
    """What a prediction file to be continued already holds (its rows written whole).

    Attributes:
        path: The file.
        rows: Prediction rows.
        width: Labels per row (the ``--top-k`` it was written with, at most the label count).
        labels: Every label its rows name.
        texts: Row number (0-based) -> text, for the first and the last row (the error names them).
        digest: A running hash of every row's text and kept column values, in order: a resumed run
            hashes the input rows it skips the same way, so it continues only the input the file was
            written from (ids kept to join on included).
        recent: The last :data:`RECHECKED_ROWS` rows' texts and ``(label, probability)`` pairs: a
            resumed run predicts them again and refuses a file another model wrote.
        columns: The input columns its rows keep (``--keep-cols``), in order; None before a row is read.
        last_labels: A multi-label file's last row's chosen labels.
        above, at_most: What every multi-label row says of the threshold that chose its labels: above
            the highest probability of a top-k label left out, at most the lowest of one chosen
            (``(probability, row)``; the last row alone had been checked, so a file written with
            --threshold 0.3 was continued at 0.5 whenever its last row read the same at both).
    """

    path: Path
    rows: int = 0
    width: int | None = None
    labels: set[str] = field(default_factory=set)
    texts: dict[int, str] = field(default_factory=dict)
    digest: Any = field(default_factory=lambda: text_digest())
    recent: deque[tuple[str, list[tuple[str, float]]]] = field(default_factory=lambda: deque(maxlen=RECHECKED_ROWS))
    kept: int = 0
    size: int = 0
    multi_label: bool | None = None
    columns: list[str] | None = None
    last_labels: list[str] | None = None
    chosen_cells: dict[int, str] = field(default_factory=dict)
    above: tuple[float, int] = (0.0, 0)
    at_most: tuple[float, int] = (1.0, 0)

    @property
    def last(self) -> list[tuple[str, float]]:
        """The last row's ``(label, probability)`` pairs."""
        return self.recent[-1][1] if self.recent else []

    def choose(self, labels: list[str], cell: str | None = None) -> None:
        """The labels the last row read chose: they bound the threshold that chose them. ``cell``: a
        CSV's ``labels`` cell as written, labels joined by ``|``, where a label holding ``|`` itself
        (``a|b``, of a model trained with another separator) is found whole."""
        self.last_labels = labels
        # The labels as one cell ("a|b", whichever the format): the rows of the chunk a resumed run
        # starts in are classified again, and must choose the same (a label left out of the top-k
        # bounds no threshold: --top-k 1 had let a file go on with another --threshold).
        self.chosen_cells[self.rows - 1] = cell if cell is not None else "|".join(labels)
        self.chosen_cells.pop(self.rows - 1 - CHUNK, None)
        for label, p in self.last:
            chosen = label in labels or (cell is not None and f"|{label}|" in f"|{cell}|")
            if chosen and p < self.at_most[0]:
                self.at_most = (p, self.rows)
            elif not chosen and p > self.above[0]:
                self.above = (p, self.rows)

    def cut(self) -> None:
        """Truncate the file to its whole rows (a row cut off by the interruption goes): done only
        once every check passed, so a refused file is left as it was."""
        if self.kept < self.size:
            with open(self.path, "r+b") as handle:
                handle.truncate(self.kept)
            self.size = self.kept

    def _add(self, text: str, top: Sequence[tuple[str, float]], kept: Sequence[str] = ()) -> None:
        if self.width is None:
            self.width = len(top)
        elif len(top) != self.width:
            raise DataError(f"{self.path}: row {self.rows + 1} has {len(top)} labels where the first had "
                            f"{self.width}; is it another file?")  # fmt: skip
        self.labels.update(label for label, _ in top)
        self.texts = {0: self.texts.get(0, text), self.rows: text}
        add_row(self.digest, text, kept)
        self.recent.append((text, list(top)))
        self.rows += 1

    def check(self, labels: Sequence[str], top_k: int, multi_label: bool | None = None,
              columns: Sequence[str] = ()) -> None:  # fmt: skip
        """Refuse to continue a file another model, or another ``--top-k`` or ``--keep-cols``, wrote
        (``multi_label``: the model's; its rows carry a ``labels`` column or key, a single-label
        model's none)."""
        if self.columns is not None and self.columns != list(columns):
            def said(names: Sequence[str]) -> str:
                return f"--keep-cols {','.join(names)}" if names else "no --keep-cols"

            raise DataError(f"{self.path}: it was written with {said(self.columns)}, this run has {said(columns)}: "
                            "resume with the columns it was written with")  # fmt: skip
        if multi_label is not None and self.multi_label is not None and self.multi_label != multi_label:
            kinds = ("a multi-label", "a single-label")
            raise DataError(f"{self.path}: {kinds[not self.multi_label]} model wrote it, this is "
                            f"{kinds[not multi_label]} one: choose another --output")  # fmt: skip
        unknown = sorted(self.labels - set(labels))
        if unknown:
            raise DataError(f"{self.path}: its rows name labels this model does not have ({', '.join(unknown[:5])}); "
                            "it was written by another model: choose another --output")  # fmt: skip
        width = min(top_k, len(labels))
        if self.width is not None and self.width != width:
            raise DataError(f"{self.path}: its rows hold {self.width} labels each, but --top-k {top_k} writes "
                            f"{width}: resume with the --top-k it was written with")  # fmt: skip

    def check_model(self, predictor: TextClassifier, threshold: float | None = None) -> None:
        """Refuse a file whose last rows (:data:`RECHECKED_ROWS`) this model does not reproduce:
        another model with the same labels (or the same one with --int8 where the file was written
        without) wrote it, or, for a multi-label model, another ``--threshold`` chose its labels."""
        if not self.rows:
            return
        found = predictor.predictions([text for text, _ in self.recent])
        first = self.rows - len(self.recent)
        for offset, (now, (_, then)) in enumerate(zip(predictor.ranked(found.probs, len(predictor.labels)),
                                                      self.recent, strict=True)):  # fmt: skip
            now = dict(now)
            label, p = max(then, key=lambda pair: abs(now[pair[0]] - pair[1]))
            if abs(now[label] - p) > SAME_MODEL_TOLERANCE:
                raise DataError(f"{self.path}: its row {first + offset + 1} gives {label!r} probability {p:.6f}, this "
                                f"model {now[label]:.6f}: another model (or --int8 where it was written without, or "
                                "the reverse) wrote it; choose another --output")  # fmt: skip
        # The same model (checked first): labels chosen otherwise are another threshold's.
        chosen = predictor.chosen(found.probs[-1:], threshold)
        if chosen is None or self.last_labels is None:
            return
        self._check_threshold(predictor.checked_threshold(threshold))
        if "|".join(chosen[0]) != self.chosen_cells[self.rows - 1]:  # set with last_labels, by choose()
            raise DataError(f"{self.path}: its last row's labels are {self.last_labels}, this run's {chosen[0]} "
                            f"(--threshold {predictor.checked_threshold(threshold):g}): resume with the --threshold "
                            "it was written with")  # fmt: skip

    def _check_threshold(self, threshold: float) -> None:
        (above, row_above), (at_most, row_at_most) = self.above, self.at_most
        if above >= at_most + THRESHOLD_SLACK:
            raise DataError(f"{self.path}: no one --threshold chose its rows' labels (row {row_at_most} chose a "
                            f"label of probability {at_most:.6f}, row {row_above} left out one of {above:.6f}): it "
                            "was continued with another --threshold; choose another --output")  # fmt: skip
        if not above - THRESHOLD_SLACK < threshold <= at_most + THRESHOLD_SLACK:
            bounds = [f"above {above:.6f} (row {row_above} left out a label of that probability)"] if row_above else []
            bounds += [f"at most {at_most:.6f} (row {row_at_most} chose a label of that probability)"] if (
                row_at_most) else []  # fmt: skip
            raise DataError(f"{self.path}: its rows were written with a --threshold {' and '.join(bounds)}, this "
                            f"run's is {threshold:g}: resume with the --threshold it was written with")  # fmt: skip


def text_digest() -> Any:
    """A running hash of texts in order (:func:`add_text`)."""
    return hashlib.blake2b(digest_size=16)


def add_text(digest: Any, text: str) -> None:
    data = text.encode("utf-8", errors="surrogatepass")
    digest.update(len(data).to_bytes(8, "little") + data)  # length first: "ab","c" is not "a","bc"


def add_row(digest: Any, text: str, kept: Sequence[str] = ()) -> None:
    """A row's text and its ``--keep-cols`` values as a CSV cell holds them (:func:`_cell`), in
    order: a changed id had been continued, so the ids joined back on were two inputs'."""
    add_text(digest, text)
    for value in kept:
        add_text(digest, value)


def completed_rows(path: Path, fmt: str) -> int:
    """Rows of a prediction file written whole; a row cut off at the end is truncated away.

    Raises:
        DataError: ``fmt`` is ``json`` (a JSON list cannot be continued), or the file is not
            an output of this format.
    """
    existing = read_existing(path, fmt)
    existing.cut()
    return existing.rows


def _csv_width(path: Path, header: list[str]) -> tuple[int, bool, list[str]]:
    """``(labels per row, whether the rows have a labels column, the input columns kept after it)``
    of a prediction CSV's header.

    Raises:
        DataError: not the header :class:`PredictionWriter` writes.
    """
    end = header.index("truncated") if "truncated" in header else -1
    k = (end - 1) // 2
    names = [v for i in range(1, k + 1) for v in (f"label_{i}", f"probability_{i}")]
    if k >= 1 and header[:end] == ["text", *names]:
        if header[end + 1 : end + 2] != ["warning"]:  # the rows this run writes would not be the file's
            raise DataError(f"{path}: a prediction CSV written by an attend before 2026-12-07, without the warning "
                            "column this one writes; nothing in it was changed: choose another --output")  # fmt: skip
        rest = header[end + 2:]
        multi = rest[:1] == ["labels"]
        return k, multi, rest[multi:]
    shown = ",".join(header[:6]) + (",..." if len(header) > 6 else "")
    raise DataError(f"{path}: not a prediction CSV (its header is {shown!r}, not text,label_1,probability_1,...,"
                    "truncated,warning); nothing in it was changed: choose another --output")  # fmt: skip


def read_existing(path: Path, fmt: str) -> ExistingOutput:
    """The rows of a prediction file written whole (:class:`ExistingOutput`; a row cut off at the
    end is cut away by its :meth:`~ExistingOutput.cut`, once the caller's checks pass). A file that
    is not a prediction file of ``fmt`` is refused, and nothing in it changes.

    Raises:
        DataError: ``fmt`` is ``json`` (a JSON list cannot be continued), or the file is not
            an output of this format.
    """
    if fmt == "json":
        raise DataError(f"{path}: a --format json list cannot be resumed; use --format csv or jsonl")
    existing = ExistingOutput(Path(path))
    with open(path, "rb") as handle:  # read as a stream: the whole file had been held, 5.7 times its size
        head = handle.read(max(map(len, STARTS.values())))
        existing.size = os.fstat(handle.fileno()).st_size
        _check_start(path, fmt, head, whole=existing.size == len(head))
        handle.seek(0)
        existing.kept = (_read_jsonl_rows if fmt == "jsonl" else _read_csv_rows)(path, handle, existing)
    return existing


def _check_start(path: Path, fmt: str, head: bytes, *, whole: bool) -> None:
    """Refuse a file that does not begin as a prediction file of ``fmt`` (``head``: its first bytes,
    ``whole`` where they are all of it)."""
    start = STARTS[fmt]
    if head and not (head.startswith(start) or (whole and start.startswith(head))):
        other = next((name for name, begins in STARTS.items() if name != fmt and head.startswith(begins)), None)
        if other is not None:  # the run that wrote it had another --format: said so, not "not a prediction"
            raise DataError(f"{path}: a prediction {other.upper()} (written with --format {other}), not {fmt.upper()}; "
                            f"resume it with --format {other}, or choose another --output")  # fmt: skip
        raise DataError(f"{path}: not a prediction {fmt.upper()} (it does not start as `attend predict --format {fmt}` "
                        "writes one); nothing in it was changed: choose another --output")  # fmt: skip


def _read_jsonl_rows(path: Path, handle: IO[bytes], existing: ExistingOutput) -> int:
    """Read a prediction JSONL's whole rows into ``existing``, a line at a time; the bytes they take."""
    kept = 0
    for line in handle:
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
            existing.columns = [key for key in row if key not in ROW_KEYS]
            existing._add(row["text"], [(entry["label"], float(entry["probability"])) for entry in row["top"]],
                          [_cell(row[key]) for key in existing.columns])  # fmt: skip
            existing.multi_label = "labels" in row
            if existing.multi_label:
                existing.choose(list(row["labels"]))
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"{path}: line {existing.rows + 1} is not a prediction row; is it another file? (nothing in it was "
                "changed)"
            ) from None
        kept += len(line)
    return kept


def _read_csv_rows(path: Path, handle: IO[bytes], existing: ExistingOutput) -> int:
    """Read a prediction CSV's whole records into ``existing``, a line at a time; the bytes they take.

    Lines end at "\n" only (csv.writer quotes any field holding a line break, and ends rows with
    "\r\n"), ends kept, so that a record is whole exactly when its last line ends in "\n"."""
    read = {"bytes": 0, "last": b""}  # through the last line the reader took, and that line

    def lines() -> Iterator[str]:
        for piece in handle:
            read["bytes"] += len(piece)
            read["last"] = piece
            yield piece.decode("utf-8", errors="replace")

    source = lines()
    reader = csv.reader(source, strict=True)  # strict: a quoted field cut off raises, not a short row
    kept = 0
    try:
        for record_number, record in enumerate(reader):
            if not read["last"].endswith(b"\n"):
                break
            if record_number == 0:
                width, existing.multi_label, existing.columns = _csv_width(path, record)
                existing.width = width
                fields = len(record)
            elif len(record) != fields:
                raise DataError(f"{path}: row {record_number} has {len(record)} fields where the header has "
                                f"{fields}; is it another file? (nothing in it was changed)")  # fmt: skip
            else:
                try:
                    top = [(record[1 + 2 * i], float(record[2 + 2 * i])) for i in range(width)]
                except ValueError:
                    raise DataError(f"{path}: row {record_number} holds a probability that is not a number; is "
                                    "it another file? (nothing in it was changed)") from None  # fmt: skip
                existing._add(record[0], top, record[3 + 2 * width + existing.multi_label:])
                if existing.multi_label:  # the labels column follows "truncated" and "warning"
                    chosen = record[3 + 2 * width]
                    existing.choose(chosen.split("|") if chosen else [], chosen)
            kept = read["bytes"]
    except csv.Error:
        # A quoted field cut off by the interruption raises once every line is read (the end of
        # data); before that the row is malformed, and cutting there would drop the rows after it.
        if next(source, None) is not None:
            raise DataError(f"{path}: row {existing.rows + 1} is not a CSV row attend writes; is it another "
                            "file? (nothing in it was changed)") from None  # fmt: skip
    return kept


class PredictionWriter:
    """Writes prediction rows to ``sink`` in one of :data:`FORMATS`, as they come."""

    def __init__(self, sink: IO[str], fmt: str, *, header: bool = True, columns: Sequence[str] = ()) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format={fmt!r}; choose one of {', '.join(FORMATS)}")
        self.sink, self.fmt, self.header = sink, fmt, header
        self.columns = list(columns)  # kept input columns, whose values each write() is given
        self.rows = 0
        self._csv = csv.writer(sink) if fmt == "csv" else None

    def write(self, texts: list[str], ranked: list[list[tuple[str, float]]], truncated: Iterable[bool],
              warnings: Iterable[str | None], chosen: list[list[str]] | None = None,
              kept: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
        """``chosen``: a multi-label model's labels per text (``labels`` in JSON; a CSV's ``labels``
        column, joined by ``|``), which ``label``, the most probable, does not tell. ``kept``: each
        text's values of the writer's ``columns`` (the last columns of a CSV, after ``text`` in JSON)."""
        picks: Iterable[list[str] | None] = chosen if chosen is not None else [None] * len(texts)
        values: Iterable[dict[str, Any]] = kept if kept is not None else [{}] * len(texts)
        for text, top, cut, warning, labels, extra in zip(texts, ranked, truncated, warnings, picks, values,
                                                          strict=True):  # fmt: skip
            if self._csv is not None:
                if self.header and self.rows == 0:
                    names = [v for i in range(1, len(top) + 1) for v in (f"label_{i}", f"probability_{i}")]
                    self._csv.writerow(["text", *names, "truncated", "warning",
                                        *(["labels"] if labels is not None else []), *self.columns])  # fmt: skip
                self._csv.writerow([text, *[v for lab, p in top for v in (lab, f"{p:.6f}")], str(bool(cut)).lower(),
                                    warning or "", *(["|".join(labels)] if labels is not None else []),
                                    *[_cell(extra.get(column)) for column in self.columns]])  # fmt: skip
            else:
                row = {"text": text, **{column: extra.get(column) for column in self.columns},
                       "label": top[0][0], **({"labels": labels} if labels is not None else {}),
                       "top": [{"label": lab, "probability": p} for lab, p in top],
                       "truncated": bool(cut), **({"warning": warning} if warning else {})}  # fmt: skip
                encoded = json.dumps(row, ensure_ascii=False)
                if self.fmt == "jsonl":
                    self.sink.write(encoded + "\n")
                else:
                    self.sink.write(("[" if self.rows == 0 else ", ") + encoded)
            self.rows += 1
        self.sink.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.sink.write("[]\n" if self.rows == 0 else "]\n")
            self.sink.flush()


def _cell(value: Any) -> str:
    """A kept value in a CSV cell: as the input had it (True, a list or an object as JSON writes it),
    None empty."""
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, bool | list | dict) else str(value)


def _trimmer() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Give the allocator's free pages back to the system.

    Each chunk runs the model on tensors of new shapes; glibc keeps the freed blocks in its arenas,
    fragmented, so the resident size of a long run crept up with the lines read (383 MiB at 10k
    lines, 631 MiB at 1M, 1.65x, chunks of 2,048) although Python's heap stayed flat. Trimming after
    every chunk keeps it flat, for about 15% of the throughput at 2,048 texts a chunk.
    """
    if _TRIM is not None:
        _TRIM(0)


_TRIM = _trimmer()


def _chunks(texts: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_stream(
    predictor: TextClassifier,
    texts: Iterable[str] | Iterable[tuple[str, dict[str, Any]]],
    writer: PredictionWriter,
    *,
    top_k: int = 3,
    skip: int | ExistingOutput = 0,
    chunk: int = CHUNK,
    on_chunk: Any = None,
    threshold: float | None = None,
    on_skipped: Any = None,
) -> int:
    """Classify ``texts`` chunk by chunk and write each chunk's rows before reading on.

    Args:
        texts: The texts, or ``(text, {column: value})`` pairs for a writer that keeps input columns.
        skip: Leading texts already predicted (a resumed run): read, not written; those of the
            chunk the run starts in are classified again with the rest of it, so its batches are an
            uninterrupted run's (at most ``chunk - 1`` texts, held meanwhile). Given as
            the :class:`ExistingOutput` of the file being continued, the input must hold at least
            its rows, and those texts must be the file's, every one (a running hash).
        on_chunk: Called after each chunk with the number of rows it wrote (progress).
        on_skipped: Called once the texts already predicted are read past (where progress starts).
        threshold: A multi-label model's probability from which a label is chosen (default 0.5).

    Returns:
        Rows written.

    Raises:
        DataError: the file being continued was written from another input.
    """
    written = 0
    stream = (item if isinstance(item, tuple) else (item, {}) for item in texts)
    existing = skip if isinstance(skip, ExistingOutput) else None
    skipped = text_digest()
    rows = existing.rows if existing is not None else int(skip)
    # The skipped texts of the chunk a resumed run starts in are classified again with the rest of it:
    # its batches are then the uninterrupted run's, and so are the last digits of every probability
    # (chunks that began at the cut had batched other texts together: 0.78 read 0.77 somewhere).
    again: list[tuple[str, dict[str, Any]]] = []
    for index in range(rows):
        text, values = next(stream, (None, None))
        if text is None:
            if existing is not None:
                raise DataError(f"{existing.path} already holds {existing.rows} rows but the input has only "
                                f"{index} texts: it was written from another input")  # fmt: skip
            break
        if existing is not None and existing.texts.get(index, text) != text:
            raise DataError(f"{existing.path}: row {index + 1} is not the prediction of input text {index + 1}: "
                            "it was written from another input; choose another --output")  # fmt: skip
        add_row(skipped, text, [_cell(values.get(column)) for column in writer.columns])
        if index >= rows - rows % chunk:
            again.append((text, values))
    if existing is not None and existing.rows and skipped.digest() != existing.digest.digest():
        raise DataError(f"{existing.path}: its {existing.rows} rows are not the predictions of the input's first "
                        f"{existing.rows} texts (some text{', or --keep-cols value,' if writer.columns else ''} "
                        "between the first and the last differs): it was written from another input, or the input "
                        "changed; choose another --output")
    if on_skipped is not None:
        on_skipped()
    uncut = existing
    for pairs in _chunks(itertools.chain(again, stream), chunk):
        lead, again = len(again), []  # the first chunk's texts already written: classified, not written
        if lead == len(pairs):  # the input ends where the file does
            break
        found = predictor.predictions([text for text, _ in pairs])
        if lead and existing is not None and existing.chosen_cells:
            _check_chosen_again(existing, predictor.chosen(found.probs[:lead], threshold), threshold, predictor)
        if uncut is not None:  # every check passed: the row cut off by the interruption goes, new rows follow
            uncut.cut()
            uncut = None
        chosen = predictor.chosen(found.probs[lead:], threshold)
        part = [text for text, _ in pairs[lead:]]
        writer.write(part, predictor.ranked(found.probs[lead:], top_k), found.truncated[lead:],
                     found.warnings()[lead:], chosen, [values for _, values in pairs[lead:]])  # fmt: skip
        written += len(part)
        del found
        release_free_memory()
        if on_chunk is not None:
            on_chunk(len(part))
    if uncut is not None:
        uncut.cut()
    writer.close()
    return written


def _check_chosen_again(existing: ExistingOutput, chosen: Any, threshold: float | None,
                        predictor: TextClassifier) -> None:  # fmt: skip
    """The labels this run chooses for the written rows of the chunk it starts in, which it
    classified again, against the file's: another --threshold is refused before anything is written."""
    if chosen is None:
        return
    first = existing.rows - len(chosen)
    for offset, labels in enumerate(chosen):
        row = first + offset
        written = existing.chosen_cells.get(row)
        if written is not None and "|".join(labels) != written:
            raise DataError(f"{existing.path}: row {row + 1}'s labels are {written!r}, this run's {'|'.join(labels)!r} "
                            f"(--threshold {predictor.checked_threshold(threshold):g}): resume with the --threshold "
                            "it was written with")  # fmt: skip


def format_for(output: str | os.PathLike[str] | None) -> str:
    """The format an ``--output`` file's name asks for (``.csv``, ``.jsonl``; anything else, and
    stdout, a JSON list): what ``--format`` is when not given."""
    suffix = Path(output).suffix.lower() if output else ""
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "json")


def check_output_name(path: str | os.PathLike[str]) -> None:
    """Refuse a compressed ``--output`` name (it was written as plain JSON under it): output is
    plain text, which an interrupted run resumes from. And one in a model directory: a file attend
    did not write there stops ``attend train --overwrite`` from replacing the model (it was taken)."""
    from attend.io import enclosing_model_directory, file_in_the_way

    blocking = file_in_the_way(Path(path).parent)  # said as "d.csv: File exists" when its folder was made
    if blocking is not None:
        raise DataError(f"--output {path}: {blocking} is a file, not a folder")
    model_dir = enclosing_model_directory(Path(path).parent)
    if model_dir is not None:
        raise DataError(f"--output {path}: that is in the model directory {model_dir}, which holds only what attend "
                        "writes there; write the predictions elsewhere")  # fmt: skip
    if is_compressed(path):
        raise DataError(f"--output {path}: predictions are written as plain text, which an interrupted run resumes "
                        f"from; name it {Path(path).with_suffix('')} and compress it afterwards")  # fmt: skip


def open_output(path: str | os.PathLike[str], *, resume: bool, fmt: str) -> tuple[IO[str], ExistingOutput, bool]:
    """The output file to write (appending when resuming), what it already holds, and whether
    it is empty (a CSV header is still to be written).

    Raises:
        DataError: the file exists and ``resume`` is false (nothing a user wrote is overwritten),
            or it cannot be resumed.
    """
    path = Path(path)
    check_output_name(path)
    if path.exists() and not path.is_file():
        raise DataError(f"--output {path} is not a file")
    if path.exists() and not resume:
        if not _begins_as_predictions(path):  # "--resume continues it" had been said of any file, then refused
            raise DataError(f"--output {path} exists and is not a prediction file (it does not start as `attend "
                            "predict` writes one); nothing in it was changed: choose another --output")  # fmt: skip
        raise DataError(f"{path} exists; --resume continues it, or choose another --output (or remove it to "
                        "predict from the start)")  # fmt: skip
    existing = read_existing(path, fmt) if resume and path.exists() else ExistingOutput(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", encoding="utf-8", newline="")
    return _CutFirst(handle, existing), existing, existing.kept == 0


def _begins_as_predictions(path: Path) -> bool:
    """Whether ``path`` is empty or begins as a prediction file of any format (a JSON list included)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    starts = (*STARTS.values(), b'[{"text": ', b"[]\n")
    return any(begins.startswith(head) or head.startswith(begins) for begins in starts)


class _CutFirst(io.TextIOBase):
    """An output file opened for appending that cuts off the interrupted row before its first write
    (so a caller's checks run on the file as it was, and a caller that skips them still appends
    after whole rows; O_APPEND writes land at the end the cut left). A text file: ``with``,
    ``writelines`` and ``print(file=...)`` work as on the file itself."""

    def __init__(self, handle: IO[str], existing: ExistingOutput) -> None:
        super().__init__()
        self._handle, self._existing = handle, existing

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._existing.cut()
        return self._handle.write(text)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._handle.flush()

    def fileno(self) -> int:
        return self._handle.fileno()

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes, then marks this closed
            self._handle.close()
