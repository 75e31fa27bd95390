"""Read a user's labelled text from CSV, TSV, JSONL or Parquet, with errors a person can act on.

Every problem is reported as a :class:`DataError` that names the file, the line (or row) and
the offending value, so the CLI can print one line and exit non-zero instead of a traceback.
Line numbers are those an editor shows: the header of a CSV is line 1, its first row line 2.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import decimal
import gzip
import io
import json
import lzma
import math
import os
import random
import re
import sys
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from attend.config import RepeatedKey, unique_keys
from attend.data.validation import is_empty, is_missing_number, text_problem

__all__ = [
    "NO_LABELS",
    "SPLIT_NAMES",
    "TABLE_SUFFIXES",
    "TEXT_COLUMNS_HINT",
    "DataError",
    "LabelledTexts",
    "LineTape",
    "TextStream",
    "allow_long_fields",
    "check_columns",
    "check_strings",
    "csv_records",
    "data_suffix",
    "detect_format",
    "is_compressed",
    "json_line",
    "match_label",
    "open_data_bytes",
    "open_data_file",
    "read_data_bytes",
    "read_rows",
    "read_table",
    "stratified_split",
    "stratum",
]

#: How spreadsheets, pandas and R write an empty cell out: a label spelled so is most likely no label.
MISSING_MARKERS = frozenset({"na", "n/a", "nan", "null", "nil", "#n/a"})  # not "none": a class of many label sets


def allow_long_fields() -> None:
    """Lift the csv module's 128 KiB cap on one field: a long text is legitimate (it had been a
    ``_csv.Error`` traceback), and what is kept of it is the reader's to decide."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def looks_missing(label: str) -> bool:
    """Whether ``label`` is a missing-value marker (``NA``, ``N/A``, ``null``, ...), not a class name."""
    return label.strip().casefold() in MISSING_MARKERS


#: Accepted values of a split column.
SPLIT_NAMES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "test": "test"}


def _split_name(value: Any) -> str | None:
    """The split a split column's cell names, in any case and spacing (``" Validation"`` is dev); else None."""
    return SPLIT_NAMES.get(str(value or "").strip().lower())

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_FORMATS |= {".parquet": "parquet", ".pq": "parquet"}
#: What a file that no renaming makes readable is told, by its extension.
_CONVERT = {suffix: "a spreadsheet is not read as it is: export the sheet as CSV UTF-8 (or save it as Parquet)"
            for suffix in (".xlsx", ".xls", ".xlsm", ".ods", ".numbers")}  # fmt: skip
_CONVERT |= {suffix: "an archive is not read: unpack it, or compress the file alone with gzip, bzip2 or xz "
             "(data.csv.gz)" for suffix in (".zip", ".7z", ".rar", ".tar", ".tgz")}  # fmt: skip
#: File names read as tables (any other is plain text where a verb also takes that).
TABLE_SUFFIXES = frozenset(_FORMATS)
#: The format of a .txt file where texts alone are read (:class:`TextStream`): one text per line.
PLAIN_TEXT = "text"
class _StandardInput(type(Path())):  # type: ignore[misc]
    """``/dev/stdin``, named "standard input" in messages (they had said ``/dev/stdin: line 2 ...``)."""

    def __str__(self) -> str:
        return "standard input"

    def __fspath__(self) -> str:
        return "/dev/stdin"


#: Standard input as a :class:`TextStream` path (``--input -``): read from ``sys.stdin``, once, as it comes.
STDIN = _StandardInput("/dev/stdin")
#: A file compressed by gzip, bzip2 or xz is read through the standard library's decompressor (by
#: suffix: the compression's name, and an opener of a binary file's decompressed bytes); the suffix
#: before it tells the format (``reviews.csv.gz`` is a CSV).
_COMPRESSED: dict[str, tuple[str, Callable[[BinaryIO], io.BufferedIOBase]]] = {
    ".gz": ("gzip", lambda file: gzip.GzipFile(fileobj=file, mode="rb")),
    ".bz2": ("bzip2", lambda file: bz2.BZ2File(file, "rb")),
    ".xz": ("xz", lambda file: lzma.LZMAFile(file, "rb")),
}
#: What a damaged compressed file raises while it is read.
_DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the value."""


@dataclass
class LabelledTexts:
    """Texts with their labels, as read from one file.

    Attributes:
        texts: One string per example.
        labels: One list of labels per example (one element unless multi-label).
        splits: The given split of each example ("train" / "dev" / "test"), or None.
        lines: Where each example came from (line or row number), for error messages.
        source: The file it was read from.
    """

    texts: list[str]
    labels: list[list[str]]
    splits: list[str] | None = None
    lines: list[int] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        """Refuse parallel lists of other lengths, and take a label given as one string (``["pos",
        "neg"]``, as one writes single-label data) as that one label, not as a list of characters."""
        self.texts, self.labels = list(self.texts), list(self.labels)
        where = self.source or "LabelledTexts"
        if len(self.labels) != len(self.texts):
            raise DataError(f"{where}: {len(self.texts)} texts but {len(self.labels)} labels")
        for name in ("splits", "lines"):  # either may be left out
            values = getattr(self, name)
            if values and len(values) != len(self.texts):
                raise DataError(f"{where}: {len(self.texts)} texts but {len(values)} {name}")
        self.labels = [_label_list(labels, i, where) for i, labels in enumerate(self.labels)]
        check_strings(self.texts, "texts", where)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        """Every label seen, sorted."""
        return sorted({label for labels in self.labels for label in labels})

    def subset(self, indices: Sequence[int]) -> LabelledTexts:
        """The rows ``indices``, in that order (checked already: not checked again)."""
        subset = object.__new__(LabelledTexts)
        subset.texts = [self.texts[i] for i in indices]
        subset.labels = [self.labels[i] for i in indices]
        subset.splits = None if self.splits is None else [self.splits[i] for i in indices]
        subset.lines = [self.lines[i] for i in indices] if self.lines else []
        subset.source = self.source
        return subset


def check_strings(values: Sequence[Any], name: str, where: str) -> None:
    """Refuse a value that is no string, naming ``name[index]``, its type and its start."""
    wrong = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
    if wrong is not None:
        value = values[wrong]
        raise DataError(f"{where}: {name}[{wrong}] is {type(value).__name__} {value!r:.40}, expected a string")


def _label_list(labels: Any, index: int, where: str) -> list[str]:
    """One example's labels as a list: a string is one label; a list, tuple or array its labels."""
    if isinstance(labels, str):
        return [labels]
    if isinstance(labels, Iterable):  # [1] had been kept as the label 1, and sorting it beside "x" failed
        listed = list(labels)
        at = next((i for i, label in enumerate(listed) if not isinstance(label, str)), None)
        if at is None:
            return listed
        wrong = listed[at]
        raise DataError(f"{where}: labels[{index}] holds {type(wrong).__name__} {wrong!r:.40}; a label is a string "
                        f"(str({wrong!r:.20}) is the label {str(wrong)!r:.20})")  # fmt: skip
    raise DataError(f"{where}: labels[{index}] is {type(labels).__name__} {labels!r:.40}; a label is a string (a "
                    "list of strings for several)")  # fmt: skip


def data_suffix(path: str | os.PathLike[str]) -> str:
    """The suffix that tells a file's format, lower-cased, under a compression suffix: ``.csv`` for
    ``reviews.CSV.gz``, ``""`` for ``reviews.gz``."""
    path = Path(path)
    suffix = path.suffix.lower()
    return Path(path.stem).suffix.lower() if suffix in _COMPRESSED else suffix


def is_plain_text(path: str | os.PathLike[str]) -> bool:
    """Whether a file's name says it is plain text, one text per line (``.txt``, also compressed)."""
    return data_suffix(path) == ".txt"


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """Whether a file's name says it is compressed (``.gz``, ``.bz2`` or ``.xz``)."""
    return Path(path).suffix.lower() in _COMPRESSED


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """The file's bytes to read (decompressed where its name says so) and the file itself (whose
    position is what a progress bar over its size shows); damaged compressed data read inside the
    block is a :class:`DataError` naming the file."""
    if path == STDIN:  # sys.stdin's (a caller may have replaced it), left open
        yield sys.stdin.buffer, sys.stdin.buffer
        return
    with open(path, "rb") as file:
        if not is_compressed(path):
            yield file, file
            return
        name, opener = _COMPRESSED[path.suffix.lower()]
        with opener(file) as handle:
            try:
                yield handle, file
            except _DECOMPRESSION_ERRORS as exc:
                raise _damaged(path, name, exc) from None


def detect_format(path: Path, fmt: str | None, *, plain_text: bool = False) -> str:
    if fmt is not None:
        if fmt not in {"csv", "tsv", "jsonl", "parquet"}:
            raise DataError(f"unknown format {fmt!r}; choose csv, tsv, jsonl or parquet")
    else:
        try:
            fmt = _FORMATS[data_suffix(path)]
        except KeyError:
            shown = "".join(path.suffixes[-2:]) if is_compressed(path) else path.suffix
            kind = next((suffix for suffix in (path.suffix.lower(), data_suffix(path)) if suffix in _CONVERT), None)
            if kind is not None:  # "rename the file" had been the advice: a renamed workbook is none (d.tar.gz too)
                raise DataError(f"{path}: {_CONVERT[kind]}") from None
            # where texts alone are read, .txt too (the list had left it out: the likeliest for a .dat of lines)
            names = sorted([*_FORMATS, ".txt"] if plain_text else _FORMATS)
            raise DataError(
                f"{path}: cannot tell the format from the extension {shown!r}; rename the file to end in "
                f"{', '.join(names)} (compressed: the same followed by {', '.join(_COMPRESSED)})"
                + ("; a .txt file is one text per line" if plain_text else "")
            ) from None
    if fmt == "parquet" and is_compressed(path):
        raise DataError(f"{path}: a Parquet file is read as it is (Parquet compresses its own columns); decompress "
                        "it first")  # fmt: skip
    return fmt


def read_data_bytes(path: str | os.PathLike[str]) -> bytes:
    """A whole file's bytes, decompressed where its name ends in .gz, .bz2 or .xz.

    Raises:
        DataError: the compressed data is damaged or is not in the format its name says.
    """
    _check_is_a_file(Path(path))  # it had been the OS's "[Errno 2] No such file or directory"
    with open_data_bytes(path) as handle:
        return handle.read()


@contextlib.contextmanager
def open_data_bytes(path: str | os.PathLike[str]) -> Iterator[io.BufferedIOBase]:
    """A file opened to read its bytes, decompressed where its name ends in .gz, .bz2 or .xz; damaged
    compressed data read inside the block is a :class:`DataError` naming the file."""
    with _opened(Path(path)) as (handle, _):
        yield handle


def _damaged(path: Path, kind: str, exc: BaseException) -> DataError:
    # The decompressor's own message may quote the file's first bytes (gzip does): not shown, as
    # the file may hold messages.
    why = ("it ends before its compressed data does" if isinstance(exc, EOFError) else
           f"its bytes are not {kind}, or not all of them: bytes after the compressed data?")  # fmt: skip
    return DataError(f"{path}: not readable as {kind}-compressed data ({why}); check the file is whole and "
                     f"that its name says how it was compressed")  # fmt: skip


def _check_is_a_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path} is a directory, expected a data file")


def open_data_file(path: str | os.PathLike[str], fmt: str | None, *,
                   plain_text: bool = False) -> tuple[Path, str]:  # fmt: skip
    """The data file at ``path`` and its format, after checking it exists, is a file and is not empty.
    ``plain_text``: a ``.txt`` name is :data:`PLAIN_TEXT` (where texts alone are read), and so is
    :data:`STDIN`."""
    path = Path(path)
    if plain_text and path == STDIN:
        return STDIN, PLAIN_TEXT
    _check_is_a_file(path)
    if path.is_file() and path.stat().st_size == 0:  # a pipe (<(...), a FIFO) has no size to check
        raise DataError(f"{path} is empty")
    if plain_text and fmt is None and is_plain_text(path):
        return path, PLAIN_TEXT
    return path, detect_format(path, fmt, plain_text=plain_text)


class _Lines:
    """The decoded lines of a text file, read one at a time (constant memory on any file size).

    Lines end at ``"\n"`` only (kept), as in the whole-file readers they replace: ``str.splitlines``
    would also split inside a JSON string at U+2028. A byte that is not UTF-8 or a NUL byte is a
    :class:`DataError` naming its line; ``position`` is the bytes of the file read so far (for
    progress bars: of a compressed file, the compressed bytes, as its size is).
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.position = 0
        self.content = False  # anything but whitespace seen

    def __iter__(self) -> Iterator[str]:
        with _opened(self.path) as (handle, file):
            yield from self._decoded(handle, file)

    def _decoded(self, handle: BinaryIO, file: BinaryIO) -> Iterator[str]:
        offset = 0  # in the decompressed text, for error messages
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                if number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text"
                    raise DataError(f"{self.path} is UTF-16 text (it starts with a UTF-16 byte-order mark); "
                                    "re-save it as UTF-8") from None  # fmt: skip
                if number == 1 and raw.startswith(b"\x1f\x8b"):  # "re-save as UTF-8" had been the advice
                    fix = ("it is gzip-compressed twice: decompress it once (gunzip), keeping a .gz name" if
                           handle is not file else f"it is gzip-compressed: name it with .gz ({self.path.name}.gz)")
                    raise DataError(f"{self.path}: {fix} (its bytes start 1f 8b, gzip's mark)") from None
                if number == 1 and raw.startswith(b"PK\x03\x04"):  # "re-save as UTF-8" said of a workbook
                    raise DataError(f"{self.path} is a ZIP archive (an Excel .xlsx workbook is one), not "
                                    f"{self.fmt.upper()} text: export the sheet as CSV UTF-8") from None  # fmt: skip
                raise DataError(
                    f"{self.path}: line {number} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                    f"{offset + exc.start}); re-save the file as UTF-8"
                ) from None
            if "\x00" in line:
                what = "text" if self.fmt == PLAIN_TEXT else f"{self.fmt.upper()} text"  # "TEXT text" had been said
                if number == 1 and _every_other_nul(line.rstrip("\r\n")):  # Latin letters in UTF-16
                    raise DataError(f"{self.path} looks like UTF-16 text without a byte-order mark (every other byte "
                                    "of its first line is NUL); re-save it as UTF-8")  # fmt: skip
                raise DataError(f"{self.path}: line {number} holds NUL bytes: this is a binary file, not {what}")
            offset += len(raw)
            self.position = offset if handle is file else file.tell()
            self.content = self.content or bool(line.strip())
            yield line


def _every_other_nul(line: str) -> bool:
    """Whether every other character of ``line`` is NUL and no other is, as ASCII reads in UTF-16."""
    halves = (set(line[0::2]), set(line[1::2]))
    return any(nul == {"\x00"} and "\x00" not in other for nul, other in (halves, halves[::-1]))


def delimiters_alone(fmt: str, record: dict[str, Any]) -> bool:
    """Whether a CSV/TSV row holds delimiters alone (",,"): the empty rows a spreadsheet exports
    below its last one. Data to learn from skips them (labelled texts, sentence pairs), and so do
    texts to classify or explain (the same export had trained, then stopped predict); a translator's
    input keeps them (its row N is output line N, a blank one for such a row)."""
    return fmt in ("csv", "tsv") and not any(str(value or "").strip() for value in record.values())


def read_rows(path: Path, fmt: str, lines: _Lines | None = None,
              problems: RowProblems | None = None) -> Iterator[tuple[int, dict[str, Any]]]:  # fmt: skip
    """Yield ``(line_or_row_number, record)`` pairs, reading the file as it goes (constant memory).

    ``lines``: the :class:`_Lines` to read a text format through (to follow its ``position``).
    ``problems``: where a CSV row's own fault (more fields than the header, the header repeated) is
    gathered, the row left out, instead of raised (the caller raises what was gathered).
    """
    if fmt == PLAIN_TEXT:  # one text per line, its "\n" (or "\r\n") aside; blank lines skipped
        source = lines if lines is not None else _Lines(path, fmt)
        for line_number, line in enumerate(source, start=1):
            text = plain_line(line.removesuffix("\n"), path, line_number)
            if text.strip():
                yield line_number, {"text": text}
        return
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
            raise DataError("reading Parquet needs pyarrow: pip install pyarrow") from exc
        try:
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:  # a record keeps the last column of each name: the others had been dropped in silence
                raise DataError(f"{path}: its schema names the column(s) {repeated} more than once; rename them")
            batches = parquet.iter_batches(batch_size=4096)
            row_number = 0
            for batch in batches:
                for record in batch.to_pylist():
                    row_number += 1
                    yield row_number, record
        except DataError:
            raise
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        return
    source = lines if lines is not None else _Lines(path, fmt)
    if fmt == "jsonl":
        for line_number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                record = json_line(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_number} is not valid JSON ({json_problem(exc)})"
                                f"{_json_lines_hint(line)}") from None
            if not isinstance(record, dict):
                listed = " (JSON Lines has one object per line, not a list of them)" if isinstance(record, list) else ""
                raise DataError(f"{path}: line {line_number} is a JSON {type(record).__name__}, expected an "
                                f"object{listed}")  # fmt: skip
            yield line_number, record
        if not source.content:
            raise DataError(f"{path} is empty")
        return
    allow_long_fields()
    tape = LineTape(source)
    reader = csv.DictReader(tape, delimiter="\t" if fmt == "tsv" else ",")
    try:
        if reader.fieldnames is None or not source.content:
            raise DataError(f"{path} is empty")
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: {_csv_problem(exc)}") from None
    yield from csv_records(reader, tape, str(path), problems=problems)


def json_line(line: str) -> Any:
    """One line of JSON Lines, parsed. An object that gives a key twice is a
    :class:`json.JSONDecodeError` (the last value had won in silence: a row's "text" given twice
    was predicted on its second)."""
    try:
        return json.loads(line, object_pairs_hook=unique_keys)
    except RepeatedKey as exc:
        quoted = json.dumps(exc.key, ensure_ascii=False)
        keys = [found.start() for found in re.finditer(re.escape(quoted) + r"\s*:", line)]  # as a key, not a value
        raise json.JSONDecodeError(f"the key {quoted} is given twice", line, keys[1] if len(keys) > 1 else 0) from None


def json_problem(exc: json.JSONDecodeError) -> str:
    """What is wrong with a JSON line and where: "Unterminated string starting at character 19"
    (the parser's message ends in "at" for some problems: "...starting at, at character 19" had
    been said, and a line's own end read as a control character inside a string cut short)."""
    return f"{exc.msg}{'' if exc.msg.endswith(' at') else ', at'} character {exc.pos + 1}"


def _json_lines_hint(line: str) -> str:
    """Why a line of a JSON file may not parse as JSON Lines: a JSON document written over several
    lines (a list or an object pretty-printed), or records joined by commas."""
    stripped = line.strip()
    if stripped in ("[", "{") or stripped.startswith(("[{", "[ ")):
        return ("; JSON files are read as JSON Lines, one object per line, and this one looks like a JSON document "
                "over several lines: write it one record per line (e.g. jq -c '.[]' FILE)")  # fmt: skip
    if stripped.endswith(","):
        try:
            json.loads(stripped[:-1])
        except json.JSONDecodeError:
            return ""  # a record cut short, not records joined by commas
        return "; JSON Lines has one object per line and no comma between them"
    return ""


class LineTape:
    """Lines passed through to a ``csv`` reader, kept until :meth:`take`: one record's raw text."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self._kept: list[str] = []

    def __iter__(self) -> LineTape:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._kept.append(line)
        return line

    def take(self) -> list[str]:
        """The lines read since the last call."""
        kept, self._kept = self._kept, []
        return kept


def csv_records(
    reader: csv.DictReader, tape: LineTape, name: str, error: type[DataError] = DataError,
    problems: RowProblems | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:  # fmt: skip
    """``(line, record)`` of each row of a CSV/TSV whose header ``reader`` has read from ``tape``, the
    line being where the record starts (a quoted field may span lines); a row with more fields than
    the header, a quote never closed, or a CSV error raises ``error`` naming ``name`` and the line
    (the first two, a row's own faults, go to ``problems`` instead where it is given)."""
    columns = [column for column in reader.fieldnames or [] if column.strip()]  # unnamed columns (Excel's ",,") aside
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:  # DictReader would keep the last column of each name and silently drop the others
        raise error(f"{name}: line 1: the header names the column(s) {repeated} more than once; rename them")
    start = reader.line_num + 1
    tape.take()  # the header
    delimiter = reader.reader.dialect.delimiter
    hint = delimiter_hint(columns, delimiter)  # given with the first row it explains, not with every one
    if problems is not None:
        problems.columns = list(reader.fieldnames or [])
    try:
        for record in reader:
            body = tape.take()
            if len(body) > 1:  # the reader skips empty lines before a record
                blank = next((i for i, line in enumerate(body) if line.strip("\r\n")), len(body))
                start, body = start + blank, body[blank:]
            # Most rows are one line without a quote: nothing below reads them again.
            if len(body) > 1 and (_took_rows(record, delimiter) or _quote_runs_on(body, delimiter)):
                # Over several lines, and either read strictly it breaks, or the row then lacks
                # fields while its text holds lines with delimiters: a stray quote took the rows up
                # to the next quote in as its text.
                raise error(
                    f"{name}: line {start}: a quote opened on this line is never closed where its field ends "
                    f"(the field runs on to line {reader.line_num}, taking in every line between); a quote "
                    'inside a field is written twice and the field quoted ("15"" screen")'
                )
            elif len(body) == 1 and '"' in body[0] and _quote_runs_on(body, delimiter):
                record = _literal_record(body[0], reader.fieldnames or [], delimiter, f"{name}: line {start}", error)
            elif len(body) == 1 and not body[0].strip():  # a line of spaces is blank, as an empty one is
                start = reader.line_num + 1
                continue
            fault = None
            if None in record:
                fault = error(f"{name}: line {start} has more fields than the header{hint}")
                hint = ""
            elif _repeats_header(record, columns):
                # A sheet exported twice into one file, or files joined: read as a row, the header
                # was a text labelled "label" (and predicted, one more output row than input).
                fault = error(f"{name}: line {start} repeats the header ({delimiter.join(columns)}): were files "
                              "joined? Remove the line")  # fmt: skip
            if fault is not None:
                if problems is None:
                    raise fault
                problems.add(fault)
                start = reader.line_num + 1
                continue
            yield start, record
            start = reader.line_num + 1
    except csv.Error as exc:
        raise error(f"{name}: line {start}: {_csv_problem(exc)}") from None


def _repeats_header(record: dict[str, Any], columns: Sequence[str]) -> bool:
    """Whether a row holds its header's names (a file joined to another, its header and byte-order
    mark included); never for one column, nor for a header of numbers (pandas' ``0,1``: rows of
    data may hold them)."""
    if len(columns) < 2 or all(_as_number(column) is not None for column in columns):
        return False
    # In any letter case: a file whose header reads "Text,Label" joined to one whose reads "text,label"
    return all(str(record.get(column) or "").lstrip("\ufeff").strip().casefold() == column.strip().casefold()
               for column in columns)  # fmt: skip


def delimiter_hint(columns: Sequence[str], delimiter: str) -> str:
    """``"; ..."``: a header read as one column that holds another common separator (an Excel CSV
    in a locale whose separator is ``;``), else ``""``."""
    if len(columns) != 1:
        return ""
    found = next((sep for sep in (";", "\t", "|", ",") if sep != delimiter and sep in columns[0]), None)
    if found is None:
        return ""
    shown = {"\t": "tabs", ";": "';'", "|": "'|'", ",": "commas"}[found]
    return (f"; its header reads as one column, {columns[0]!r}: is the file separated by {shown}? A .csv file "
            "is read with commas and a .tsv file with tabs: re-save it so")


#: What a file whose lines end in a bare carriage return is told.
BARE_CARRIAGE_RETURN = "its lines end in a bare carriage return (an old Mac format); re-save it with \\n line endings"


def plain_line(line: str, where: object, number: int) -> str:
    """Line ``number`` of a plain text file (its ``\\n`` taken off): every carriage return before its
    end aside too (a Windows file written in text mode ends its lines in ``\\r\\r\\n``); one left
    inside is a line end of an old Mac file, refused: its texts had been one, answered as one."""
    text = line.rstrip("\r")
    if "\r" in text:
        raise DataError(f"{where}: line {number} has a carriage return inside it: {BARE_CARRIAGE_RETURN}")
    return text


def _csv_problem(exc: csv.Error) -> str:
    """The csv module's complaint, in terms a user can act on."""
    text = str(exc)
    if "new-line character seen in unquoted field" in text:
        return BARE_CARRIAGE_RETURN
    return text


def _literal_record(line: str, columns: Sequence[str], delimiter: str, where: str,
                    error: type[DataError]) -> dict[str, Any]:  # fmt: skip
    """A one-line row whose quotes are text, not quoting: a field that opens with a quote and has
    more after the closing one (``"Ah!" is an interjection.``, as sentence lists are written). The
    csv module's lenient reading drops those quotes silently; split on the delimiter it keeps
    them, where that gives the header's number of fields."""
    parts = line.rstrip("\r\n").split(delimiter)
    if len(parts) != len(columns):
        more = " has more fields than the header, and" if len(parts) > len(columns) else ":"
        raise error(
            f"{where}{more} a field opens with a quote and goes on after the closing one (so it quotes nothing); "
            'quote the whole field and write its own quotes twice ("""Ah!"" is an interjection.")'
        )
    return dict(zip(columns, (_field_as_written(part, delimiter) for part in parts), strict=True))


def _took_rows(record: dict[str, Any], delimiter: str) -> bool:
    """A row short of fields whose text over several lines has the delimiter in it: rows read as
    one field (a row short of an optional last column, with a field quoted over lines, is not)."""
    return None in record.values() and any(
        isinstance(value, str) and "\n" in value and delimiter in value for value in record.values()
    )


def _field_as_written(part: str, delimiter: str) -> str:
    """One field of a row read literally: a field quoted as a whole (``"pos"``) loses its quoting;
    one whose quotes are text keeps them."""
    try:
        fields = next(csv.reader([part], delimiter=delimiter, strict=True), [""])
    except csv.Error:
        return part
    return fields[0] if len(fields) == 1 else part


def _quote_runs_on(lines: list[str], delimiter: str) -> bool:
    """Whether a record over several lines holds a stray quote, which made the lenient reader read on
    to the next quote, rows and all: read strictly, its text ends inside a quote, or a quote closes
    a field with text still after it (a correctly quoted field over several lines reads the same
    either way)."""
    try:
        for _ in csv.reader(io.StringIO("".join(lines), newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return True
    return False


def _label_text(value: Any) -> str:
    """A label as text: a whole number is the same label written ``1`` or ``1.0`` (JSON and Parquet
    keep the difference; 1 and 1.0 were two classes, each half of one). A JSON or Parquet boolean is
    ``true`` or ``false``, as a CSV of the same data spells it (it was Python's ``True``, a label no
    CSV matched and messages named in a spelling the file does not have)."""
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):  # numpy's too (named bool in 2.x)
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral_value():
        return str(int(value))  # a DECIMAL column (DuckDB, Spark) had trained classes '0.00' and '1.00'
    return str(value).strip()


#: Characters a file may join several labels with in one cell.
LABEL_SEPARATORS = ("|", ";", ",", "/")


def joined_labels(names: list[str]) -> list[tuple[str, str, list[str]]]:
    """Labels that are other labels of the data joined by a separator (``billing|bug`` beside
    ``billing`` and ``bug``), with the separator and the parts: a --label-sep other than the
    file's, or JSON rows joining labels in a string beside rows listing them. Only said, not
    refused: ``CI/CD`` beside ``CI`` and ``CD`` may well be a name."""
    known = set(names)
    return [(name, *joined) for name in names if (joined := joined_at(name, known)) is not None]


def joined_at(name: str, known: set[str]) -> tuple[str, list[str]] | None:
    """``(separator, parts)`` where ``name`` is labels of ``known`` joined by a separator, else None."""
    for sep in LABEL_SEPARATORS:
        parts = [part.strip() for part in name.split(sep)]
        if len(parts) > 1 and all(part in known and part != name for part in parts):
            return sep, parts
    return None


def match_label(label: str, known: Sequence[str]) -> str | None:
    """The model's spelling of ``label``: itself if known, else the one known label that is the same
    finite number (a model trained on ``1.0`` before whole numbers were read alike takes ``1``), or the
    same boolean in another case (one trained on JSON booleans, read as ``True`` before, takes
    ``true``; one trained on them now takes the ``True`` that Python's csv module and pandas
    write), or the same characters in another Unicode form (a decomposed ``café``: it printed as
    the model's label in the error refusing it), else None."""
    if label in known:
        return label
    composed = unicodedata.normalize("NFC", label)
    if composed != label or any(unicodedata.normalize("NFC", name) != name for name in known):
        same = [name for name in known if unicodedata.normalize("NFC", name) == composed]
        if len(same) == 1:
            return same[0]
    if label.casefold() in ("true", "false"):
        same = [name for name in known if name.casefold() == label.casefold()]
        return same[0] if len(same) == 1 else None
    value = _numeral(label)
    same = [name for name in known if value is not None and _numeral(name) == value]
    return same[0] if len(same) == 1 else None


#: A number as a label may be written in another form of: digits, a point and digits, an exponent. Not
#: with a leading zero (``01`` and ``1``, which training keeps apart, had been matched) or underscores.
_NUMERAL = re.compile(r"[+-]?(?:0|[1-9]\d*)(?:\.\d*)?(?:[eE][+-]?\d+)?")


def _numeral(label: str) -> float | None:
    """The finite number ``label`` spells as :data:`_NUMERAL` reads numbers, else None."""
    return _as_number(label) if _NUMERAL.fullmatch(label.strip()) else None


def _as_number(label: str | None) -> float | None:
    """The finite number a label spells (``"1"``, ``"1.0"``, ``"2e0"``), else None."""
    try:
        value = float(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _split_labels(value: Any, *, multi_label: bool, label_sep: str | None) -> list[str]:
    if isinstance(value, list | tuple):
        return [_label_text(v) for v in value if _label_text(v)]
    text = "" if value is None else _label_text(value)
    if multi_label and label_sep:
        return [part.strip() for part in text.split(label_sep) if part.strip()]
    return [text] if text else []


#: What a missing text or label column's error tells a user to do.
TEXT_COLUMNS_HINT = "choose the columns with --text-col / --label-col (text_col= / label_col= from Python)"


def check_columns(path: str | os.PathLike[str], record: dict[str, Any], wanted: Sequence[str | None],
                  hint: str = TEXT_COLUMNS_HINT) -> None:  # fmt: skip
    """Refuse a file whose first record lacks a ``wanted`` column (None: not asked for), naming the
    column, the columns it has and, in ``hint``, the options that choose them."""
    missing = [column for column in wanted if column is not None and column not in record]
    if missing:
        fmt = _FORMATS.get(data_suffix(path))  # reviews.csv.gz: a CSV; data.tab: a TSV
        separated = delimiter_hint(list(map(str, record)), "\t" if fmt == "tsv" else ",") if fmt in (
            "csv", "tsv") else ""  # fmt: skip
        spaced = next((str(c) for c in record if str(c) != missing[0] and str(c).strip() == missing[0]), None)
        marked = next((str(c) for c in record if str(c).lstrip("\ufeff") == missing[0] and str(c) != missing[0]), None)
        if spaced is not None:  # an Excel header " text ": the column is there, its name padded
            separated += f"; the column {spaced!r} has spaces around its name: give it as written, or rename it"
        elif marked is not None:  # a file saved with a BOM, then again with one: the second is in the name
            separated += (f"; the column {marked!a} begins with a byte-order mark (U+FEFF), which a file saved "
                          "twice with one keeps in its first name: save it once more as UTF-8 without it")
        if fmt == "jsonl":  # no header: the first record's keys are not the file's (later lines may have it)
            keys = ", ".join(map(str, record))
            raise DataError(f"{path}: its first record has no {missing[0]!r} (its keys: {keys}); every record needs "
                            f"it, or {hint}{separated}")  # fmt: skip
        raise DataError(f"{path} has no column {missing[0]!r} (columns: {', '.join(map(str, record))}); {hint}"
                        f"{separated}")


def _row_text(path: Path, line: int, record: dict[str, Any], text_col: str, blank: bool = False) -> str:
    """The row's text, checked: a number is a text too; an empty or unusable one is an error (with
    ``blank``, an empty one is kept as it is: the caller answers it with a blank)."""
    if text_col not in record:  # a JSONL line without the key (the first line's columns were checked)
        raise DataError(f"{path}: line {line} has no {text_col!r}")
    text = record.get(text_col)
    if is_missing_number(text):
        text = None  # a missing value (NaN in JSONL or a Parquet float column), not the text "nan"
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)  # "42" in a CSV is a text
    if text is not None and not isinstance(text, str):
        raise DataError(f"{path}: line {line} has {type(text).__name__} {text!r:.60} in column {text_col!r}, "
                        "expected text")  # fmt: skip
    problem = text_problem(text or "")
    if is_empty(problem) and blank:
        return text or ""
    if is_empty(problem):
        if text is None:  # no cell at all: "empty" had sent people looking for a blank field
            short = ", or a row of fewer fields than the header" if data_suffix(path) in (".csv", ".tsv") else ""
            raise DataError(f"{path}: line {line} has no value in column {text_col!r} (a null or missing "
                            f"value{short})")  # fmt: skip
        invisible = " (only invisible characters)" if text.strip() else ""
        raise DataError(f"{path}: line {line} has an empty text{invisible} in column {text_col!r}")
    if problem is not None:
        raise DataError(f"{path}: line {line}: the text in column {text_col!r} {problem}")
    assert text is not None
    return text


class TextStream:
    """The texts of a data file, read as they are used: constant memory on a file of any size.

    Iterating yields ``(line, text)`` with the checks of :func:`read_table`; ``position`` and
    ``size`` are in bytes (rows for Parquet), for a progress bar. :meth:`with_columns` yields each
    text with the values of the ``keep`` columns (an id to join the predictions back on).

    A ``.txt`` file (also compressed: ``texts.txt.gz``) is one text per line, its blank lines
    skipped; it has no columns, so ``text_col`` does not apply and ``keep`` is refused.
    """

    def __init__(self, path: str | os.PathLike[str], *, text_col: str = "text", fmt: str | None = None,
                 keep: Sequence[str] = ()) -> None:  # fmt: skip
        self.path, self.fmt = open_data_file(path, fmt, plain_text=True)
        if self.fmt == PLAIN_TEXT:
            text_col = "text"
            if keep:
                raise DataError(f"{self.path}: a .txt file is one text per line, with no columns to keep "
                                f"({', '.join(keep)}); give a CSV/TSV/JSONL/Parquet file to keep columns")  # fmt: skip
        self.text_col = text_col
        self.keep = list(keep)
        self.skipped = 0  #: rows of delimiters alone (:func:`delimiters_alone`) passed over, with no text
        self._lines = _Lines(self.path, self.fmt) if self.fmt != "parquet" else None
        self._rows = 0
        if self._lines is None:
            import pyarrow.parquet as pq

            try:
                self.size = pq.ParquetFile(self.path).metadata.num_rows
            except Exception as exc:  # pyarrow raises several types for a corrupt file
                raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from None
        else:
            self.size = 0 if self.path == STDIN else self.path.stat().st_size

    @property
    def position(self) -> int:
        return self._rows if self._lines is None else self._lines.position

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for line, text, _ in self._records():
            yield line, text

    def with_columns(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """``(line, text, {column: value})`` for the ``keep`` columns: a value as JSON holds it (a
        CSV's are strings), None where a row lacks it or leaves it empty or NaN."""
        for line, text, record in self._records():
            yield line, text, {column: _kept_value(record.get(column)) for column in self.keep}

    def check_header(self) -> None:
        """Check the text and ``keep`` columns against the first record (a JSON Lines file's ``keep``
        keys against its first :data:`KEEP_SCAN` records), reading nothing more: a caller checks
        before it writes anything (a misnamed --text-col had left an empty output file that refused
        the corrected command)."""
        rows = read_rows(self.path, self.fmt)
        try:
            seen: set[str] = set()
            count = 0
            for count, (_, record) in enumerate(rows, 1):
                if count == 1:
                    self._check(record)
                if self.fmt != "jsonl" or not self._seen_keys(seen, record, count):
                    return
            self._check_kept(seen, count)
        finally:
            rows.close()

    def _seen_keys(self, seen: set[str], record: dict[str, Any], count: int) -> bool:
        """Add the ``keep`` keys ``record`` has to ``seen``; whether to look at more records (some key
        not seen yet, within :data:`KEEP_SCAN`); at the last, refuse a key none of them had."""
        seen.update(key for key in self.keep if key in record)
        if len(seen) == len(self.keep):
            return False
        if count >= KEEP_SCAN:
            self._check_kept(seen, count)
            return False
        return True

    def _check_kept(self, seen: set[str], count: int) -> None:
        missing = [key for key in self.keep if key not in seen]
        if missing and count:
            raise DataError(f"{self.path}: none of its first {count} records has {missing[0]!r} (a JSON Lines "
                            "record may leave a key out, not every one); choose the columns to keep with "
                            "--keep-cols")  # fmt: skip

    def _check(self, record: dict[str, Any]) -> None:
        check_columns(self.path, record, [self.text_col], "choose the column with --text-col")
        if self.fmt != "jsonl":  # a JSON Lines record may leave a key out: its first one had refused the file
            check_columns(self.path, record, self.keep, "choose the columns to keep with --keep-cols")

    def _records(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        count, seen, scanning = 0, set[str](), self.fmt == "jsonl" and bool(self.keep)
        for line, record in read_rows(self.path, self.fmt, self._lines):
            count += 1
            if count == 1:
                self._check(record)
            if scanning:
                scanning = self._seen_keys(seen, record, count)
            if delimiters_alone(self.fmt, record):  # a spreadsheet's empty rows below its last: no text to answer
                self.skipped += 1
                continue
            self._rows += 1
            yield line, _row_text(self.path, line, record, self.text_col), record
        if scanning:  # fewer records than KEEP_SCAN
            self._check_kept(seen, count)
        if not count:
            raise DataError(f"{self.path}: no text in it (every line is blank)" if self.fmt == PLAIN_TEXT else
                            f"{self.path} has a header but no rows")  # fmt: skip
        if not self._rows:  # rows of delimiters alone: "0 predictions written", exit 0, had been the answer
            raise DataError(f"{self.path}: none of its {count} rows holds anything (each is its separators alone: a "
                            "spreadsheet's empty rows?)")  # fmt: skip


#: JSON Lines records looked through for a ``--keep-cols`` key before it is refused as no record's.
KEEP_SCAN = 1000


def _kept_value(value: Any) -> Any:
    """A kept column's value as JSON can hold it: None for a missing one (NaN, an empty cell), an
    infinity as its text, bytes decoded (UTF-8, bad bytes replaced), lists and objects item by item
    (a NaN inside is null), other types (a Parquet date) as their text."""
    if value is None or is_missing_number(value) or value == "":
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no infinity
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [_kept_value(item) if item != "" else item for item in value]
    if isinstance(value, dict):
        return {str(key): _kept_value(item) if item != "" else item for key, item in value.items()}
    return str(value)


def read_table(
    path: str | os.PathLike[str],
    *,
    text_col: str = "text",
    label_col: str | None = "label",
    split_col: str | None = None,
    multi_label: bool = False,
    label_sep: str | None = None,
    fmt: str | None = None,
    columns_hint: str = TEXT_COLUMNS_HINT,
    training: bool = False,
    blank_texts: bool = False,
) -> LabelledTexts:
    """Read labelled texts from a CSV, TSV, JSONL or Parquet file.

    Args:
        path: The file.
        text_col: Column holding the text.
        label_col: Column holding the label(s); None for unlabelled text (prediction).
        split_col: Optional column assigning each row to train/dev/test (also validation/val).
        multi_label: Rows may carry several labels: a JSON list, or ``label_sep``-separated.
        label_sep: Separator of several labels in one cell, e.g. ``"|"`` (implies multi_label).
        fmt: Force a format instead of guessing from the extension.
        columns_hint: What a missing column's error tells the user to do (the options of the
            command reading the file).
        training: The file is read to train a model: multi-label cells that hold a separator with
            no ``label_sep`` to split them are refused (a model trained so before is still scored).
        blank_texts: Keep a row whose text cell is empty, blank or null as it is instead of refusing
            it (unlabelled text only: `attend translate` answers it with a blank translation; a
            JSONL line without the key is still an error).

    Raises:
        DataError: naming the file, line and value, for every problem a user can fix.
    """
    path, fmt = open_data_file(path, fmt)
    multi_label = multi_label or label_sep is not None
    if label_col is not None and label_col == text_col:  # every text had been called an unknown label
        raise DataError(f"{path}: text_col and label_col are both {text_col!r}; the label needs a column of its own")
    if split_col is not None and split_col in (text_col, label_col):
        raise DataError(f"{path}: split_col {split_col!r} is also the text or label column; it needs one of its own")

    texts: list[str] = []
    labels: list[list[str]] = []
    splits: list[str] = []
    lines: list[int] = []
    checked_columns = False
    listed = False  # some row's labels are a JSON list
    problems = RowProblems(path)
    for line, record in read_rows(path, fmt, problems=problems):
        if (label_col is not None or not blank_texts) and delimiters_alone(fmt, record):
            # A row of delimiters alone: as blank as a blank line. (Input whose blank rows are answered,
            # translate's, keeps every row: its row N is output line N.)
            continue
        if not checked_columns:
            check_columns(path, record, (text_col, label_col), columns_hint)
            check_columns(path, record, (split_col,), "choose the column with --split-col")
            checked_columns = True
        try:  # every row's problem is found in one read (a file mended one line per run took four runs)
            text = _row_text(path, line, record, text_col, blank=blank_texts and label_col is None)
            row_labels: list[str] = []
            if label_col is not None:
                value = record.get(label_col)
                if isinstance(value, dict) or is_missing_number(value):
                    shown = "a missing value (NaN)" if isinstance(value, float) else f"an object {value!r:.60}"
                    raise DataError(f"{path}: line {line} has {shown} as its label in column {label_col!r}")
                if isinstance(value, list | tuple):  # a list's item had been learned as its text: 'None', "['b']"
                    odd = [v for v in value if v is None or isinstance(v, list | tuple | dict) or is_missing_number(v)]
                    if odd:
                        first = odd[0]
                        kind = ("null" if first is None else "a missing value (NaN)" if isinstance(first, float) else
                                f"{'a list' if isinstance(first, list | tuple) else 'an object'} {first!r:.60}")
                        raise DataError(f"{path}: line {line} has {kind} in its list of labels in column "
                                        f"{label_col!r}; give each label as a string")  # fmt: skip
                listed = listed or isinstance(value, list | tuple)
                row_labels = _split_labels(value, multi_label=multi_label, label_sep=label_sep)
                if not row_labels and not multi_label:  # multi-label: an empty cell or [] is none of the labels
                    raise DataError(f"{path}: line {line} has no label in column {label_col!r}")
                if len(row_labels) > 1 and not multi_label:  # an option to give, not a row to mend: said at once
                    fix = ("pass --multi-label" if training else "the model gives one label per text, so it is "
                           "scored on rows of one label")  # fmt: skip
                    raise _SaidAtOnce(f"{path}: line {line} has several labels {row_labels}; {fix}")
            split = ""
            if split_col is not None:
                named = _split_name(record.get(split_col))
                if named is None:
                    raise DataError(
                        f"{path}: line {line} has split {record.get(split_col)!r} in column {split_col!r}; "
                        f"expected one of {sorted(set(SPLIT_NAMES))}"
                    )
                split = named
        except _SaidAtOnce:
            raise
        except DataError as problem:
            problems.add(problem)
            continue
        texts.append(text)
        lines.append(line)
        problems.good += 1
        if label_col is not None:
            labels.append(row_labels)
        if split_col is not None:
            splits.append(split)
    if not checked_columns and problems.columns is not None:  # every row gathered: the header is still checked
        check_columns(path, dict.fromkeys(problems.columns, ""), (text_col, label_col), columns_hint)
    problems.raise_any()
    if not texts:
        raise DataError(f"{path} has a header but no rows")
    if training and multi_label and label_sep is None and not listed and all(len(row) <= 1 for row in labels):
        _check_joined_labels(path, labels)
    return LabelledTexts(
        texts=texts,
        labels=labels if label_col is not None else [[] for _ in texts],
        splits=splits if split_col is not None else None,
        lines=lines,
        source=str(path),
    )


class _SaidAtOnce(DataError):
    """A row's problem that an option fixes for the whole file (``--multi-label``): raised at the
    first row, not gathered with the rows to mend."""


class RowProblems:
    """The rows of a file that cannot be used, gathered over one read: one is raised as it was found;
    several as one error that counts them and names the first :attr:`SHOWN`, each with its line. The
    read stops at :attr:`LIMIT` of them (a wrong column had failed at once; the whole file was read)."""

    SHOWN = 5
    LIMIT = 1000

    def __init__(self, path: Path) -> None:
        self.prefix = f"{path}: "
        self.found: list[str] = []
        self.count = 0
        self.good = 0  # rows read that could be used (the caller counts them)
        self.columns: list[str] | None = None  # a CSV's header, where every row may have been gathered

    def _listed(self) -> str:
        return "; ".join(problem.removeprefix(self.prefix) for problem in self.found)

    def add(self, problem: DataError) -> None:
        self.count += 1
        if len(self.found) < self.SHOWN:
            self.found.append(str(problem))
        if self.count >= self.LIMIT:
            asked = ", and none before them could be used: a wrong column or separator?" if not self.good else ""
            raise DataError(f"{self.prefix}{self.count} rows and more cannot be used (the file was read no further"
                            f"{asked}): {self._listed()}; ...")  # fmt: skip

    def raise_any(self) -> None:
        """Raise what was gathered, if anything."""
        if self.count == 1:
            raise DataError(self.found[0])
        if self.count:
            more = f"; and {self.count - len(self.found)} more" if self.count > len(self.found) else ""
            what = (f"none of its {self.count} rows can be used (a wrong column or separator?)" if not self.good
                    else f"{self.count} rows cannot be used (mend or remove them)")  # fmt: skip
            raise DataError(f"{self.prefix}{what}: {self._listed()}{more}")


def _check_joined_labels(path: Path, labels: list[list[str]]) -> None:
    """Multi-label data with one label per row, some holding a separator: labels joined in one cell
    (``pos|movie``) that --label-sep was not given to split, which would train on the combinations;
    or lists written as text (``["food", "sport"]``: a list column a CSV export wrote), each of
    which had been learned as one label."""
    listed = next((row[0] for row in labels if row and re.fullmatch(r"\[.*\]", row[0].strip(), re.DOTALL)), None)
    # "every row has one label" was said of data with empty rows too
    one = "every row has one label" if all(labels) else "no row has more than one label"
    if listed is not None:
        raise DataError(f"{path}: --multi-label, yet {one}, and some are lists written as text "
                        f"(e.g. {listed!r:.80}): a CSV cell is text; join the labels with '|' and give --label-sep "
                        "'|', or write the file as JSON Lines with a list of labels")  # fmt: skip
    for sep in ("|", ";"):
        joined = next((row[0] for row in labels if row and sep in row[0]), None)
        if joined is not None:
            raise DataError(f"{path}: --multi-label, yet {one}, and some hold {sep!r} (e.g. "
                            f"{joined!r}); give --label-sep '{sep}' to read several labels from one cell")  # fmt: skip


#: The stratum of a multi-label row with none of the labels (an empty cell, or ``[]``).
NO_LABELS = "(none of the labels)"


def stratum(labels: Sequence[str]) -> str:
    """The label a row is sampled by (and split by, before split scheme 3): its first, or :data:`NO_LABELS`."""
    return labels[0] if labels else NO_LABELS


def rarest_strata(rows: Sequence[Sequence[str]]) -> list[str]:
    """Per row, the label it is split by (split scheme 3): its rarest label in ``rows`` (ties by name),
    or :data:`NO_LABELS`; a row of one label is split by it, as by :func:`stratum`."""
    counts = Counter(label for labels in rows for label in set(labels))
    return [min(labels, key=lambda label: (counts[label], label)) if labels else NO_LABELS for labels in rows]


#: The way :func:`stratified_split` divides data, recorded with a model (``data.split_scheme``) so that
#: its split is rebuilt as it was made: 3 (2026-12-07) splits a row of several labels by its rarest
#: (it had been its first: the same label sets listed in another order split otherwise, a label
#: never listed first was not stratified, could be held out whole, and was not checked for a
#: second example), with every label of the data in the training split; 2 (2026-12-07) divides the
#: held-out rows into dev and test stratified on the labels with two rows or more there, the labels
#: with one lumped together; 1 divided them at random whenever one label had a single row there
#: (every label's dev/test shares drifted: 23/28 where 25/26 was due).
SPLIT_SCHEME = 3


def split_scheme(multi_label: bool) -> int:
    """The :data:`SPLIT_SCHEME` a model records: 3 and 2 split data of one label per row alike, so a
    single-label model records 2 (and a run interrupted before 3 existed resumes)."""
    return SPLIT_SCHEME if multi_label else 2


def stratified_split(
    data: LabelledTexts, *, seed: int = 0, dev_fraction: float = 0.1, test_fraction: float = 0.1,
    scheme: int = SPLIT_SCHEME,
) -> tuple[list[int], list[int], list[int]]:
    """Seeded train/dev/test indices, stratified on the label (a row of several: its rarest, :func:`rarest_strata`).

    A given split column wins: its assignment is used as is. Otherwise every label needs at
    least two examples, or it could not appear on both sides of a split. A text that occurs more
    than once (the same words) is split once, at its first row, and its copies follow it: a copy
    in the training split would make its test copy a question the model has seen (data without
    repeats splits as before). ``scheme``: :data:`SPLIT_SCHEME`, or an earlier one a model was
    split with.
    """
    if scheme not in range(1, SPLIT_SCHEME + 1) or isinstance(scheme, bool):
        raise ValueError(f"scheme={scheme!r}: a split scheme is 1 to {SPLIT_SCHEME}")
    if data.splits is not None:
        by_split: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
        for i, split in enumerate(data.splits):
            name = _split_name(split)  # LabelledTexts from Python: "validation", "Train"
            if name is None:  # it had been a KeyError
                raise DataError(f"{data.source or 'the data'}: row {i} has split {split!r}; expected one of "
                                f"{sorted(set(SPLIT_NAMES))}")  # fmt: skip
            by_split[name].append(i)
        if not by_split["train"]:
            raise DataError(f"{data.source}: the split column assigns no row to 'train'")
        return by_split["train"], by_split["dev"], by_split["test"]
    first: dict[str, int] = {}
    owner = [first.setdefault(" ".join(text.split()), i) for i, text in enumerate(data.texts)]
    if len(first) == len(data):
        return _stratified_split(data, seed=seed, dev_fraction=dev_fraction, test_fraction=test_fraction,
                                 scheme=scheme)  # fmt: skip
    unique = sorted(first.values())
    parts = _stratified_split(data.subset(unique), seed=seed, dev_fraction=dev_fraction, test_fraction=test_fraction,
                              rows=len(data), scheme=scheme)  # fmt: skip
    where = {unique[j]: name for name, part in zip(("train", "dev", "test"), parts, strict=True) for j in part}
    split_of: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
    for i, row in enumerate(owner):
        split_of[where[row]].append(i)
    return split_of["train"], split_of["dev"], split_of["test"]


#: The stratum of the labels that have one row in a pool being divided (no label's name: a NUL leads it).
_LONE = "\x00labels of one row"


def _lumped(labels: list[str]) -> list[str]:
    """``labels`` with those that occur once lumped into one stratum (with the most common label where
    only one does): sklearn stratifies only strata of two rows or more."""
    counts = Counter(labels)
    lone = [label for label in labels if counts[label] == 1]
    if not lone:
        return labels
    lump = _LONE if len(lone) > 1 else counts.most_common(1)[0][0]
    return [lump if counts[label] == 1 else label for label in labels]


def _every_label_trained(rows: Sequence[Sequence[str]], train: list[int], rest: list[int],
                         seed: int) -> tuple[list[int], list[int]]:  # fmt: skip
    """``train`` and ``rest`` with, for each label of ``rows`` that only held-out rows have, one of
    those rows (a seeded draw) moved into training."""
    trained = {label for i in train for label in rows[i]}
    order = sorted(rest)
    random.Random(seed).shuffle(order)
    moved: set[int] = set()
    for i in order:
        if any(label not in trained for label in rows[i]):
            moved.add(i)
            trained.update(rows[i])
    if not moved:
        return train, rest
    return [*train, *sorted(moved)], [i for i in rest if i not in moved]


def _stratified_split(
    data: LabelledTexts, *, seed: int, dev_fraction: float, test_fraction: float, rows: int | None = None,
    scheme: int = SPLIT_SCHEME,
) -> tuple[list[int], list[int], list[int]]:
    """:func:`stratified_split` of texts that occur once each (``rows``: those of the file, whose
    copies of a text were set aside)."""
    from sklearn.model_selection import train_test_split

    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name}={value} must be in [0, 1)")
    if dev_fraction + test_fraction >= 1.0:
        raise DataError(f"dev_fraction + test_fraction = {dev_fraction + test_fraction} leaves no training data")
    several = scheme >= 3 and any(len(labels) > 1 for labels in data.labels)  # else split as by scheme 2
    primary = rarest_strata(data.labels) if several else [stratum(labels) for labels in data.labels]
    counts = Counter(primary)
    unlabelled = [i for i, labels in enumerate(data.labels) if not labels]
    if len(unlabelled) == 1 and len(counts) > 1:  # one text with none of the labels: split with the most common
        common = max((label for label in counts if label != NO_LABELS), key=lambda label: (counts[label], label))
        primary[unlabelled[0]] = common  # (that row only: a label spelled "(none of the labels)" is a label)
        counts = Counter(primary)
    # Of several labels a row, any of them (one listed second had been learned from its one example).
    occurring = Counter(label for labels in data.labels for label in set(labels)) if several else counts
    rare = [label for label, count in occurring.items() if count < 2]
    if rare:
        first: dict[str, int] = {}
        for i, label in enumerate(primary):  # one pass: a column of ids taken for labels has a rare label per row
            for each in data.labels[i] if several else [label]:
                first.setdefault(each, i)
        where = [data.lines[first[label]] if data.lines else first[label] for label in rare[:10]]
        # the texts counted: a file of one text in 40 rows, labelled a and b, had been told 'a' appears once
        copies = "" if rows is None else (f" (the file has {len(data)} distinct text(s) in its {rows} rows: a text "
                                          "repeated counts once, with its first row's label, and its copies stay in "
                                          "its split)")  # fmt: skip
        blank = next((label for label in rare if looks_missing(label)), None)
        missing = f" ({blank!r} reads like an empty cell written out: if that row has no label, remove it)" if (
            blank is not None) else ""
        every = {label for labels in data.labels for label in labels}
        joined = next(((label, *found) for label in rare if (found := joined_at(label, every)) is not None), None)
        if joined is not None:  # as the report notes a joined label that is not rare (it had been left unsaid here)
            label, sep, parts = joined
            missing += (f" ({label!r} is other labels of the data joined by {sep!r}, {parts}: if it means those "
                        f"labels, give --label-sep '{sep}' with --multi-label where it is a cell's or a JSON string's, "
                        "or make it a list's items where it is one item of a JSON list)")  # fmt: skip
        shown = f"label {rare[0]!r} appears only once (line {where[0]})"
        if len(rare) > 1:  # all of them: a file mended one label per run took a run per label
            listed = ", ".join(f"{label!r} (line {line})" for label, line in zip(rare[:10], where, strict=False))
            shown = f"{len(rare)} labels appear only once: {listed}{', ...' if len(rare) > 10 else ''}"
        raise DataError(
            f"{data.source}: {shown}{copies}; every label needs at least 2 examples to be split (add examples, drop "
            f"the label, or give a split column){missing}"
        )
    indices = list(range(len(data)))
    n_dev = max(1, round(len(data) * dev_fraction)) if dev_fraction else 0
    n_test = max(1, round(len(data) * test_fraction)) if test_fraction else 0
    n_classes = len(counts)
    if len(data) - n_dev - n_test < n_classes:
        raise DataError(
            f"{data.source}: {len(data)} examples are too few to hold out {n_dev} for dev and {n_test} for test "
            f"and still train on all {n_classes} labels; add examples or give a split column"
        )
    if n_dev + n_test == 0:
        return indices, [], []

    def split(pool: list[int], size: int, *, keep_every_label: bool = False) -> tuple[list[int], list[int]]:
        labels = [primary[i] for i in pool]
        if several or (scheme >= 2 and not keep_every_label):  # dev from test: a label of one row here is lumped
            # with the others of one, not the end of stratifying (training keeps every label its own way, below);
            # of several labels a row, a label may be the rarest of one row alone (it has others)
            labels = _lumped(labels)
        # Stratify when every class can appear on both sides; tiny held-out sets cannot.
        can_stratify = size >= len(set(labels)) and len(pool) - size >= len(set(labels))
        can_stratify = can_stratify and min(Counter(labels).values()) >= 2
        kept, held = train_test_split(
            pool, test_size=size, random_state=seed, stratify=labels if can_stratify else None
        )
        if not can_stratify and keep_every_label and {primary[i] for i in kept} != set(labels):
            # Fewer held out than there are labels, and the random draw took every example of some (300
            # labels of 2 examples each lost 15 from training, which then refused them): one of each,
            # drawn, stays. (A draw that kept them all is kept: models trained on it rebuild their split.)
            order = list(pool)
            random.Random(seed).shuffle(order)
            anchors = set({primary[i]: i for i in reversed(order)}.values())
            held = [i for i in order if i not in anchors][:size]
            taken = set(held)
            return [i for i in pool if i not in taken], held
        return kept, held

    train, rest = split(indices, n_dev + n_test, keep_every_label=True)
    if several:  # a label every held-out row of which it is not the rarest label of: one such row trains
        train, rest = _every_label_trained(data.labels, train, rest, seed)
        if len(rest) < bool(n_dev) + bool(n_test):  # sklearn's own error had been said ("test_size=1 should be ...")
            raise DataError(f"{data.source}: {len(data)} examples are too few to hold out {n_dev} for dev and "
                            f"{n_test} for test and still train on every one of the {len(occurring)} labels; add "
                            "examples or give a split column")  # fmt: skip
    if not n_test:
        return sorted(train), sorted(rest), []
    if not n_dev:
        return sorted(train), [], sorted(rest)
    dev, test = split(rest, min(n_test, len(rest) - 1))  # (fewer than planned only where rows were moved)
    return sorted(train), sorted(dev), sorted(test)
