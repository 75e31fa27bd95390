"""User-item interaction logs for recommendation: reading them, item side features, and per-user temporal splits.

A recommender learns from *who did what, when*. This module turns a log file into integer arrays
the models index embeddings with, and holds the two evaluation protocols the recommenders are
judged by:

* **sequential** (next-item prediction, e.g. SASRec, Kang & McAuley 2018): leave-one-out per user,
  the last interaction is the test target and the one before it the dev target.
* **CTR** (click-through / rating prediction, e.g. DIN, Zhou et al. 2018): every event is labelled
  positive or negative from its rating; the chronologically last events of each user are held out.

Both are per-user *temporal* splits: nothing a model sees while training happens after what it is
asked to predict for that user. Ordering decides leakage, so it is fixed once, here: rows are
ordered stably by ``(user, time)``, and rows of one user with the same timestamp keep their order
in the file (MovieLens logs many ratings in the same second; a sort that broke those ties at random
would make the split, and every metric, depend on the sort algorithm).

Indices: users are numbered ``0..n_users-1`` and items ``1..n_items``; item index 0 is reserved for
padding so a padded sequence needs no offset. Both are numbered in sorted order of their original
ids (numerically when every id is an integer), so indices do not depend on the row order of the
file and the MovieLens item index equals its movie id.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import combinations
from os import PathLike
from typing import Any

import numpy as np

from attend.data.readers import DataError, RowProblems, check_columns, open_data_file, read_rows
from attend.data.validation import is_missing_number

__all__ = [
    "FEATURE_TYPES",
    "CtrEvents",
    "CtrSplit",
    "Interactions",
    "ItemFeatures",
    "SequentialSplit",
    "ctr_split",
    "describe",
    "item_counts",
    "make_interactions",
    "read_interactions",
    "read_item_features",
    "sequential_split",
    "vector_element",
    "vector_of",
]

#: The kinds of item side features :func:`read_item_features` knows.
FEATURE_TYPES = ("text", "categorical", "numeric")

#: Separator of several values in one categorical cell of a features file.
CATEGORY_SEP = "|"

_INTEGER = re.compile(r"-?\d+")


@dataclass
class Interactions:
    """An interaction log as parallel arrays, ordered stably by ``(user, time)``.

    Attributes:
        users: User index of each row, ``0..n_users-1`` (int64).
        items: Item index of each row, ``1..n_items``; 0 is never used here, it is padding (int64).
        times: When it happened, in seconds (float64); ISO-8601 times are converted to epoch seconds.
        ratings: The rating of each row (float32), or None when the log has no rating column.
        user_ids: Original id of each user index.
        item_ids: Original id of each item index; ``item_ids[0] == ""`` stands for padding.
        source: The file path or data set name, for messages.
        notes: Things the user should know about how the file was read (dropped duplicates, ...).
    """

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    ratings: np.ndarray | None
    user_ids: list[str]
    item_ids: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of real items (the padding index 0 is not counted)."""
        return len(self.item_ids) - 1

    def sequences(self) -> list[np.ndarray]:
        """Each user's item indices in the stable ``(user, time)`` order, one array per user index."""
        return _per_user(self.items, self.users, self.n_users)

    def item_index(self) -> dict[str, int]:
        """Original item id -> item index (padding excluded), to map a request's ids onto the model's."""
        return {item: index for index, item in enumerate(self.item_ids) if index}

    def user_index(self) -> dict[str, int]:
        """Original user id -> user index."""
        return {user: index for index, user in enumerate(self.user_ids)}


def _per_user(values: np.ndarray, users: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Split ``values`` (rows sorted by user) into one array per user index, empty for absent users."""
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [values[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def item_counts(sequences: Iterable[np.ndarray], n_items: int) -> np.ndarray:
    """How often each item index occurs in ``sequences``: int64 of shape ``(n_items + 1,)``, padding counted as 0.

    Popularity is the fallback score for users a model knows nothing about and the reference every
    recommender must beat, so models and baselines share this one count.
    """
    arrays = [np.asarray(seq, dtype=np.int64).ravel() for seq in sequences]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() > n_items):
        raise ValueError(f"item indices must lie in 0..{n_items}; found {flat.min()}..{flat.max()}")
    counts = np.bincount(flat, minlength=n_items + 1).astype(np.int64)
    counts[0] = 0
    return counts


# --- reading a log ----------------------------------------------------------------------------------


def _id(value: Any) -> str:
    """A cell as an id string, spaces around it removed; integral floats (an int column a dataframe
    upcast) lose their ``.0``; "" for a missing cell (none, blank, NaN). Raises ValueError for a value
    that is no id (true/false, a list, an object)."""
    if value is None or is_missing_number(value):
        return ""
    if isinstance(value, bool | list | tuple | dict):
        raise ValueError("not an id (a string or a number)")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _cell_id(record: dict[str, Any], column: str, path: Any, line: int) -> str:
    """The id in ``record[column]``, or a DataError naming the line: absent, empty or no id."""
    if column not in record:
        raise DataError(f"{path}: line {line} has no {column!r}")
    value = record[column]
    try:
        ident = _id(value)
    except ValueError as exc:
        raise DataError(f"{path}: line {line} has {column!r} {value!r:.60}, which is {exc}") from None
    if not ident:
        raise DataError(f"{path}: line {line} has an empty {column!r}")
    return ident


def _epoch_seconds(moment: datetime) -> float:
    """A datetime as epoch seconds; a time without a zone is taken as UTC, so the result never depends
    on the zone of the machine that reads the file."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_time(value: Any) -> tuple[float, str] | None:
    """Seconds from a number, an ISO-8601 string or a date(time) object, with which of the two it was
    (``"number"`` or ``"date"``); None when it is none of them."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, datetime):
        return _epoch_seconds(value), "date"
    if isinstance(value, date):
        return _epoch_seconds(datetime(value.year, value.month, value.day)), "date"
    if isinstance(value, int | float):
        number = float(value)
        return (number, "number") if math.isfinite(number) else None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return (number, "number") if math.isfinite(number) else None
    try:
        return _epoch_seconds(datetime.fromisoformat(text)), "date"
    except ValueError:
        return None


#: Epoch times of 1973 to 5138 in seconds, and the same span in milliseconds: a column holding both
#: mixes units, and sorting it would put every millisecond time after every second one.
_SECONDS, _MILLISECONDS = (1e8, 1e11), (1e11, 1e14)


def _compact_dates(numbers: np.ndarray) -> np.ndarray:
    """Epoch seconds of each number that is a whole ``YYYYMMDD`` date of 1900-2099 (ISO 8601's basic
    form), NaN for the others."""
    seconds = np.full(len(numbers), np.nan)
    candidates = (numbers >= 19000101) & (numbers <= 20991231) & (numbers == np.round(numbers))
    for row in np.flatnonzero(candidates):
        number = int(numbers[row])
        try:
            seconds[row] = _epoch_seconds(datetime(number // 10000, number // 100 % 100, number % 100))
        except ValueError:
            continue
    return seconds


def _check_times(times: list[float], kinds: list[str], raws: list[Any], lines: list[int], column: str,
                 path: Any) -> tuple[list[float], list[str]]:  # fmt: skip
    """The times, read consistently, and notes. Numbers are epoch seconds and strings ISO-8601 dates,
    except: a column whose every number is a whole ``YYYYMMDD`` date reads them as those dates (said in
    a note); and a column mixing units is refused (milliseconds with seconds or dates, ``YYYYMMDD``
    numbers with epoch seconds, numbers before 1973 as epoch seconds with any time: a counter or a
    spreadsheet's day number), since sorting it would misorder the rows between the two."""

    def first(where: Iterable[bool]) -> str:
        row = next(row for row, hit in enumerate(where) if hit)
        return f"line {lines[row]}: {raws[row]!r:.40}"

    values = np.asarray(times, dtype=np.float64)
    is_number = np.asarray([kind == "number" for kind in kinds])
    if not is_number.any():
        return times, []
    dated = ~is_number
    in_seconds = is_number & (values >= _SECONDS[0]) & (values < _SECONDS[1])
    in_milliseconds = is_number & (values >= _MILLISECONDS[0]) & (values < _MILLISECONDS[1])
    compact = _compact_dates(np.where(is_number, values, 0.0))
    as_dates = is_number & ~np.isnan(compact)
    notes = []
    if as_dates[is_number].all():
        values = np.where(is_number, compact, values)
        notes.append(f"read {column!r} numbers as YYYYMMDD dates ({first(as_dates)})")
        dated = np.ones(len(values), dtype=bool)
    elif as_dates.any() and in_seconds.any():
        raise DataError(f"{path}: {column!r} mixes YYYYMMDD dates ({first(as_dates)}) and epoch seconds "
                        f"({first(in_seconds)}); write every time the same way")  # fmt: skip
    dated = dated | as_dates  # YYYYMMDD numbers are dates beside milliseconds too
    # Among written dates (strings) or epoch times, a small number is no time: 44198 (a spreadsheet's day
    # number) or a row counter had sorted first in silence. Among small numbers alone, a number that
    # happens to read as YYYYMMDD (a counter past 19,000,101) is a number, as it was.
    small = is_number & ~as_dates & (values < _SECONDS[0])
    written = ~is_number
    if small.any() and (written | in_seconds | in_milliseconds).any():
        other = f"dates ({first(written)})" if written.any() else \
            f"epoch {'seconds' if in_seconds.any() else 'milliseconds'} ({first(in_seconds | in_milliseconds)})"
        raise DataError(f"{path}: {column!r} mixes {other} and numbers that are no time after 1973 "
                        f"({first(small)}: a counter, or a spreadsheet's day number?); write every time the same "
                        "way")  # fmt: skip
    if in_milliseconds.any() and (in_seconds.any() or dated.any()):
        other = f"epoch seconds ({first(in_seconds)})" if in_seconds.any() else f"dates ({first(dated)})"
        raise DataError(f"{path}: {column!r} mixes what look like epoch milliseconds ({first(in_milliseconds)}) "
                        f"and {other}; write every time in one unit")  # fmt: skip
    return values.tolist(), notes


def _parse_rating(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    """Distinct ids in natural order: numeric when all are integers ("2" before "10"; "01" after "1",
    which it equals as a number), else as strings."""
    distinct = set(ids)
    if all(_INTEGER.fullmatch(value) for value in distinct):
        return sorted(distinct, key=lambda value: (int(value), value))
    return sorted(distinct)


def make_interactions(
    users: Sequence[str],
    items: Sequence[str],
    times: Sequence[float] | np.ndarray,
    ratings: Sequence[float] | np.ndarray | None = None,
    *,
    lines: Sequence[int] | None = None,
    source: str = "",
    notes: Sequence[str] = (),
) -> Interactions:
    """Build :class:`Interactions` from parsed columns: drop exact duplicates, index ids, order the rows.

    :func:`read_interactions` and the fetched data sets both end here, so a log gets the same
    treatment wherever it comes from.

    Args:
        users: Original user id of each row (non-empty strings).
        items: Original item id of each row.
        times: Seconds of each row.
        ratings: Rating of each row, or None.
        lines: The line of each row in its file, for the duplicate note (default: row number from 1).
        source: The file or data set, for messages.
        notes: Notes gathered while reading, kept in front of the ones added here.

    Returns:
        The log, indexed and ordered as the module docstring says.
    """
    n = len(users)
    if not n:
        raise DataError(f"{source}: no interactions")
    if not len(items) == len(times) == n or (ratings is not None and len(ratings) != n):
        raise ValueError("users, items, times and ratings must have one value per row")
    line_numbers = list(lines) if lines is not None else list(range(1, n + 1))
    times_array = np.asarray(times, dtype=np.float64)
    ratings_array = None if ratings is None else np.asarray(ratings, dtype=np.float32)

    # Exact repeats (an export run twice, a join that fanned out) would count one event twice and
    # could put the same event on both sides of a split.
    seen: set[tuple[str, str, float, float | None]] = set()
    rated: dict[tuple[str, str, float], float] = {}  # an event's first rating, to find one rated twice
    keep = np.ones(n, dtype=bool)
    first_duplicate: int | None = None
    conflicts, first_conflict = 0, None
    for row in range(n):
        rating = None if ratings_array is None else float(ratings_array[row])
        key = (users[row], items[row], float(times_array[row]), rating)
        if key in seen:
            keep[row] = False
            if first_duplicate is None:
                first_duplicate = line_numbers[row]
            continue
        seen.add(key)
        if rating is not None:
            earlier = rated.setdefault(key[:3], rating)
            if earlier != rating and not (np.isnan(earlier) and np.isnan(rating)):
                conflicts += 1
                first_conflict = first_conflict or line_numbers[row]
    all_notes = list(notes)
    dropped = int(n - keep.sum())
    if dropped:
        same = "user, item, time and rating" if ratings_array is not None else "user, item and time"
        all_notes.append(f"dropped {dropped} duplicate row{'s' if dropped != 1 else ''} (same {same}; first: line "
                         f"{first_duplicate})")  # fmt: skip
    if conflicts:
        all_notes.append(f"{conflicts} row{'s' if conflicts != 1 else ''} with another rating than an earlier row of "
                         f"the same user, item and time (first: line {first_conflict}): kept, each as an "
                         "event of its own")  # fmt: skip
    kept = np.flatnonzero(keep)
    user_list = [users[row] for row in kept]
    item_list = [items[row] for row in kept]

    user_ids = _sorted_ids(user_list)
    item_ids = ["", *_sorted_ids(item_list)]
    user_lookup = {user: index for index, user in enumerate(user_ids)}
    item_lookup = {item: index for index, item in enumerate(item_ids) if index}
    user_array = np.fromiter((user_lookup[u] for u in user_list), dtype=np.int64, count=len(kept))
    item_array = np.fromiter((item_lookup[i] for i in item_list), dtype=np.int64, count=len(kept))
    times_array = times_array[kept]
    # lexsort is stable and sorts by its last key first: user, then time, then file position.
    order = np.lexsort((np.arange(len(kept)), times_array, user_array))
    return Interactions(
        users=user_array[order],
        items=item_array[order],
        times=times_array[order],
        ratings=None if ratings_array is None else ratings_array[kept][order],
        user_ids=user_ids,
        item_ids=item_ids,
        source=source,
        notes=all_notes,
    )


def read_interactions(
    path: str | PathLike[str],
    *,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = "timestamp",
    rating_col: str | None = None,
    fmt: str | None = None,
) -> Interactions:
    """Read an interaction log from a CSV, TSV, JSONL or Parquet file.

    Args:
        path: The file, one interaction per row.
        user_col: Column of the user id.
        item_col: Column of the item id.
        time_col: Column of the time: a number of seconds, or an ISO-8601 date/time (taken as UTC when
            it has no zone). None when the log has no times: the file order is then the time order.
        rating_col: Column of a numeric rating (or any score, e.g. 0/1 clicks); None if there is none.
            The CTR protocol labels events from it.
        fmt: Force a format instead of guessing from the extension.

    Returns:
        The log, indexed and ordered as the module docstring says, exact duplicate rows dropped
        (said in ``notes``).

    Raises:
        DataError: naming the file, the line and the value: a missing column (with the columns found),
            an empty file, an empty user or item, a time that is neither a number nor ISO-8601, a
            rating that is not a number.
    """
    named = {"user_col": user_col, "item_col": item_col, "time_col": time_col, "rating_col": rating_col}
    shared = [(a, b) for a, b in combinations(named, 2) if named[a] is not None and named[a] == named[b]]
    if shared:  # user = item had scored a perfect HR@10 on its own ids, without a word
        first, second = shared[0]
        raise DataError(f"{first} and {second} are both {named[first]!r}: each names a column of its own (--"
                        f"{first.replace('_', '-')} / --{second.replace('_', '-')})")  # fmt: skip
    path, fmt = open_data_file(path, fmt)
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    kinds: list[str] = []
    raw_times: list[Any] = []
    ratings: list[float] = []
    lines: list[int] = []
    spaced: set[str] = set()  # ids written with spaces around them
    wanted = (user_col, item_col, time_col, rating_col)  # rating_col None: not asked for
    hint = "choose the columns with --user-col / --item-col / --time-col / --rating-col"
    problems = RowProblems(path)  # every unusable row found in one read
    checked = False
    unread_rating = False
    for line, record in read_rows(path, fmt, problems=problems):
        if not checked:
            if time_col is not None and time_col not in record and user_col in record and item_col in record:
                hint += " (--time-col none: a log without times, its rows in time order)"
            check_columns(path, record, wanted, hint)
            checked = True
            unread_rating = rating_col is None and "rating" in record
        try:
            user, item = _cell_id(record, user_col, path, line), _cell_id(record, item_col, path, line)
            raw = None
            if time_col is None:
                when, kind = float(len(lines)), "number"
            else:
                if time_col not in record:
                    raise DataError(f"{path}: line {line} has no {time_col!r}")
                raw = record[time_col]
                parsed = _parse_time(raw)
                if parsed is None:
                    raise DataError(
                        f"{path}: line {line} has {time_col!r} {raw!r:.60}, which is neither a number of seconds "
                        "nor an ISO-8601 date/time"
                    )
                when, kind = parsed
            if rating_col is not None:
                rated = record.get(rating_col)
                rating = _parse_rating(rated)
                if rating is None:
                    shown = "null" if rated is None else f"{rated!r:.60}"  # JSON's null, as the user wrote it
                    raise DataError(f"{path}: line {line} has {rating_col!r} {shown}, which is not a number")
        except DataError as problem:
            problems.add(problem)
            continue
        for column, ident in ((user_col, user), (item_col, item)):
            if isinstance(record[column], str) and record[column] != ident:
                spaced.add(record[column])
        if time_col is not None:
            raw_times.append(raw)
        if rating_col is not None:
            ratings.append(rating)
        problems.good += 1
        users.append(user)
        items.append(item)
        times.append(when)
        kinds.append(kind)
        lines.append(line)
    problems.raise_any()
    if not lines:
        raise DataError(f"{path} has a header but no rows")
    notes: list[str] = []
    if time_col is not None:
        times, notes = _check_times(times, kinds, raw_times, lines, time_col, path)
    if spaced:
        example = sorted(spaced)[0]
        notes.append(f"{len(spaced)} id(s) had spaces around them, removed (e.g. {example!r} read as "
                     f"{example.strip()!r})")  # fmt: skip
    if unread_rating:  # said: a log's ratings, whatever they hold, had been dropped without a word
        notes.append("its 'rating' column is not read (no rating column was asked for: --rating-col reads one, for "
                     "a model that uses ratings)")  # fmt: skip
    return make_interactions(
        users, items, times, ratings if rating_col is not None else None, lines=lines, source=str(path), notes=notes
    )


# --- item side features ----------------------------------------------------------------------------


@dataclass
class ItemFeatures:
    """Side information about items, aligned with item indices (index 0, padding, is always empty).

    Attributes:
        text: Column -> one string per item index (``""`` for padding and missing items).
        categorical: Column -> one list of values per item index (a ``|``-separated cell is split).
        numeric: Column -> float32 per item index, NaN where missing.
        missing: How many items of the log have no row in the features file.
        notes: Things the user should know (ignored rows, missing items, repeated rows).
        left_out: Column -> why it is not a feature (a column of image or audio file paths, or of
            no value in any row).
    """

    text: dict[str, list[str]] = field(default_factory=dict)
    categorical: dict[str, list[list[str]]] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    missing: int = 0
    notes: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> dict[str, str]:
        """Column -> its type, for configs and messages."""
        return {
            **{column: "text" for column in self.text},
            **{column: "categorical" for column in self.categorical},
            **{column: "numeric" for column in self.numeric},
        }


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


#: Cells read as missing: the texts pandas' ``read_csv`` takes for a missing value by default.
MISSING_TEXTS = frozenset({"#n/a", "#n/a n/a", "#na", "-1.#ind", "-1.#qnan", "-nan", "1.#ind", "1.#qnan", "<na>",
                           "n/a", "na", "nan", "null", "none"})  # fmt: skip


def _is_empty(value: Any) -> bool:
    """A missing cell: none, blank, an empty list, NaN (pandas' and Parquet's missing number), or a
    text pandas reads as missing (:data:`MISSING_TEXTS`: ``N/A``, ``null``, ``nan``, ...)."""
    if is_missing_number(value):
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TEXTS or not value.strip()
    return value is None or (isinstance(value, list | tuple) and not value)


def _number_list(value: Any) -> bool:
    """A list of numbers (nulls allowed, as missing elements), at least one of them a number."""
    if not isinstance(value, list | tuple):
        return False
    numbers = [number for number in value if number is not None]
    return bool(numbers) and all(_is_number(number) for number in numbers)


def _vector_width(values: Sequence[Any]) -> int | None:
    """The length of the number lists a column holds (an image or audio embedding per item), when
    most filled cells are one (a cell that is not is then an error :func:`_read_vector` names,
    rather than the whole column read as categories); else None."""
    present = [value for value in values if not _is_empty(value)]
    lists = [value for value in present if _number_list(value)]
    if not lists or 2 * len(lists) <= len(present):
        return None
    # The most common length, so that a cell of another is the one named (the longest had named the
    # first good row where one row was too long); a tie goes to the first length met.
    return Counter(len(value) for value in lists).most_common(1)[0][0]


#: Endings of the image, audio and video files a features column may name instead of holding them.
MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".svg", ".mp3",
                  ".wav", ".flac", ".ogg", ".m4a", ".mp4", ".mov", ".avi", ".mkv", ".webm")  # fmt: skip


def _media_paths(values: Sequence[Any]) -> str | None:
    """An example, when most filled cells of a column name image, audio or video files (a path or
    URL ending in one of :data:`MEDIA_SUFFIXES`); else None."""
    present = [str(value).strip() for value in values if not _is_empty(value)]
    paths = [value for value in present if value.lower().split("?")[0].endswith(MEDIA_SUFFIXES)]
    return paths[0] if paths and 2 * len(paths) > len(present) else None


#: A catalogue this small has few distinct values in every column: there, a category must repeat.
SMALL_CATALOGUE = 100


def _mostly_numbers(ordered: list[tuple[int, tuple[int, Any]]], values: Sequence[Any]) -> tuple[int, Any] | None:
    """The line and value of the first cell that is not a number, where at least half of the filled
    cells are numbers; else None."""
    present = [(line, value) for (_, (line, _)), value in zip(ordered, values, strict=True) if not _is_empty(value)]
    odd = [(line, value) for line, value in present if not _is_number(value)]
    return odd[0] if odd and len(odd) <= len(present) / 2 else None


def _infer_type(values: Sequence[Any]) -> str:
    """numeric if every non-empty value is a number; categorical if cells hold lists, or ``|``-joined
    values that repeat (at most half as many distinct parts as parts) or fill at least half the
    cells, or there are few distinct values (max(50, 5% of rows)) and, in a catalogue of
    :data:`SMALL_CATALOGUE` items or fewer, values repeat (at most half as many distinct values as
    filled cells); else text. Few values mean a label-like column (genre, brand) an embedding per
    value can learn; many mean free text, and so does one value per item in a small catalogue (its
    titles), however few. A title with a ``|`` in it ("Live | Remastered") leaves titles text."""
    present = [value for value in values if not _is_empty(value)]
    if not present:
        return "text"
    if all(_is_number(value) for value in present):
        return "numeric"
    if any(isinstance(value, list) for value in present):
        return "categorical"
    joined = [value for value in present if CATEGORY_SEP in str(value)]
    if joined:
        parts = [part for value in present for part in _categories(value)]
        if len(set(parts)) <= len(parts) / 2 or len(joined) >= len(present) / 2:
            return "categorical"
    distinct = {str(value).strip() for value in present}
    few = len(distinct) <= max(50, 0.05 * len(values))
    repeated = len(values) > SMALL_CATALOGUE or len(distinct) <= len(present) / 2
    return "categorical" if few and repeated else "text"


def _nested(value: Any) -> bool:
    """An object, or a list holding a list or an object (a JSONL/Parquet cell)."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list | tuple) and any(isinstance(part, list | tuple | dict) for part in value)


def _categories(value: Any) -> list[str]:
    if _is_empty(value):
        return []
    parts = value if isinstance(value, list | tuple) else str(value).split(CATEGORY_SEP)
    return [str(part).strip() for part in parts if str(part).strip()]


def read_item_features(
    path: str | PathLike[str],
    items: dict[str, int],
    *,
    item_col: str = "item",
    types: dict[str, str] | None = None,
    fmt: str | None = None,
) -> ItemFeatures:
    """Read item side features (title, genres, price, ...) and align them with the log's item indices.

    Args:
        path: A CSV, TSV, JSONL or Parquet file, one row per item.
        items: Original item id -> index, from :meth:`Interactions.item_index`.
        item_col: Column of the item id.
        types: Column -> ``"text"``, ``"categorical"`` or ``"numeric"``, overriding the inference
            (see :func:`_infer_type`) for the columns named.
        fmt: Force a format instead of guessing from the extension.

    Returns:
        Every column but ``item_col``, typed. Rows of items the log does not have are ignored and
        items of the log without a row get empty features; both are counted in ``notes``.

    Raises:
        DataError: a missing item column, an empty item id, an unknown type or a column named in
            ``types`` that the file does not have, a value of a numeric column that is not a number.
    """
    types = dict(types or {})
    wanted_item_col = item_col
    for column, kind in types.items():
        if kind not in FEATURE_TYPES:
            choices = ", ".join(FEATURE_TYPES)
            raise DataError(f"feature column {column!r}: unknown type {kind!r}; choose one of {choices}")
    path, fmt = open_data_file(path, fmt)
    n_slots = max(items.values(), default=0) + 1
    rows: dict[int, tuple[int, dict[str, Any]]] = {}  # item index -> (line, record), first row wins
    columns: list[str] = []
    unknown_items: set[str] = set()
    repeated, first_repeat = 0, ""
    n_rows = 0
    # Header names are read without the spaces around them (" genre " is genre): --features and
    # --feature-types, which take the names as typed, had no spelling that reached them.
    names: dict[Any, str] = {}
    rename = False
    for line, record in read_rows(path, fmt):
        if not n_rows:
            names = {key: str(key).strip() or key for key in record}  # an unnamed column keeps its key
            named = [name for name in names.values() if str(name).strip()]
            if len(set(named)) < len(named):
                twins = [key for key in names if named.count(names[key]) > 1]  # in the file's order
                raise DataError(f"{path}: columns {' and '.join(map(repr, twins[:2]))} are one name once the spaces "
                                "around it are removed; rename one")  # fmt: skip
            item_col, rename = item_col.strip(), any(str(key) != name for key, name in names.items())
        if rename:
            record = {names.get(key, key): value for key, value in record.items()}
        if not n_rows:
            if item_col not in record and "item" in record:
                item_col = "item"  # the log's item column has another name; a features file's own default
            other = "" if wanted_item_col == "item" else " or 'item'"
            check_columns(path, record, [item_col], f"name its item column as the log's ({wanted_item_col!r}){other}")
            # unnamed columns (Excel's ",,") aside, as the table readers leave them
            columns = [str(column) for column in record if column != item_col and str(column).strip()]
            absent = [column for column in types if column not in columns]
            if absent:
                raise DataError(
                    f"{path}: feature column {absent[0]!r} is given a type but the file has no such column "
                    f"(columns: {', '.join(map(str, record))})"
                )
        n_rows += 1
        item = _cell_id(record, item_col, path, line)
        index = items.get(item)
        if index is None:
            unknown_items.add(item)
        elif index in rows:
            repeated += 1
            first_repeat = first_repeat or f"line {line}, item {item!r:.60}"
        else:
            rows[index] = (line, record)
    if not n_rows:
        raise DataError(f"{path} has a header but no rows")

    features = ItemFeatures(missing=len(items) - len(rows))
    if spaced := [key for key, name in names.items() if str(key) != name]:
        features.notes.append(f"{len(spaced)} column name(s) had spaces around them, removed (e.g. {spaced[0]!r} read "
                              f"as {names[spaced[0]]!r})")  # fmt: skip
    if unknown_items:
        features.notes.append(f"ignored rows of {len(unknown_items)} item(s) that are not in the log (e.g. "
                              f"{min(unknown_items)!r:.60})")  # fmt: skip
    if repeated:
        features.notes.append(f"{repeated} repeated row(s) of an item ignored (the first row of each item is used; "
                              f"first repeat: {first_repeat})")  # fmt: skip
    if features.missing:
        features.notes.append(
            f"{features.missing} item(s) of the log have no row in {path.name}: their features are empty"
        )
    # In the file's order, so a bad value is named at its first line (item-id order had named a later
    # one); each value still goes to its item's slot.
    ordered = sorted(rows.items(), key=lambda entry: entry[1][0])
    read_as: list[str] = []
    for column in columns:
        values = [record.get(column) for _, (_, record) in ordered]
        width = _vector_width(values) if types.get(column) in (None, "numeric") else None
        if width is not None:
            taken = next((name for k in range(width) if (name := vector_element(column, k)) in columns), None)
            if taken is not None:
                raise DataError(f"{path}: the vector column {column!r} reads as columns {column}[0] ... "
                                f"{column}[{width - 1}], but the file has a column {taken!r} too; rename "
                                "one")  # fmt: skip
            _read_vector(features, column, width, ordered, values, n_slots, path)
            read_as.append(f"{column} a vector of {width} numbers ({column}[0] ... {column}[{width - 1}])")
            continue
        for (_, (line, _)), value in zip(ordered, values, strict=True):
            if _nested(value):  # it had been read as categories named "[0.1, 0.2]" or "{'r': 1}"
                raise DataError(f"{path}: line {line} has {column!r} {value!r:.60}, a nested list or an object; a "
                                "feature cell holds a value, a list of categories, or a flat list of numbers (an "
                                "embedding): flatten it, or give each part a column of its own")  # fmt: skip
        if ordered and all(_is_empty(value) for value in values):  # it tells no item from another: a feature of
            # nothing (with no row of the log's items at all, the caller says that instead)
            # (one before the titles had named every item by its empty cell, and fed the model alone)
            features.left_out[column] = f"column {column!r} of {path.name} is empty in every row"
            features.notes.append(f"{features.left_out[column]}; left out")
            continue
        example = _media_paths(values) if column not in types else None
        if example is not None:  # read as text, a path's words were the item's "title" and its name
            features.left_out[column] = (
                f"column {column!r} holds file paths ({example!r:.80}, ...): attend reads no image or audio from a "
                f"path; give each item's embedding as a JSONL/Parquet column of number lists, or read the paths "
                f"as text with --feature-types {column}=text"
            )
            features.notes.append(f"{features.left_out[column]}; left out")
            continue
        kind = types.get(column) or _infer_type(values)
        read_as.append(f"{column} {kind}")
        if column not in types and kind != "numeric" and (odd := _mostly_numbers(ordered, values)) is not None:
            line, value = odd  # "1,000" or "$3" among numbers: a price column had become text in silence
            features.notes.append(f"column {column!r} is read as {kind}, though most of its values are numbers: "
                                  f"line {line} has {value!r:.40}, which is not one; write such values as plain "
                                  f"numbers and give --feature-types {column}=numeric")  # fmt: skip
        if kind == "numeric":
            array = np.full(n_slots, np.nan, dtype=np.float32)
            for (index, (line, _)), value in zip(ordered, values, strict=True):
                if _is_empty(value):
                    continue
                number = _parse_rating(value)
                if number is None:
                    raise DataError(f"{path}: line {line} has {column!r} {value!r:.60}, which is not a number")
                _check_single(number, f"{path}: line {line} has {column!r} {value!r:.60}")
                array[index] = number
            features.numeric[column] = array
        elif kind == "categorical":
            lists: list[list[str]] = [[] for _ in range(n_slots)]
            for (index, _), value in zip(ordered, values, strict=True):
                lists[index] = _categories(value)
            features.categorical[column] = lists
        else:
            texts = [""] * n_slots
            for (index, _), value in zip(ordered, values, strict=True):
                texts[index] = "" if _is_empty(value) else str(value).strip()
            features.text[column] = texts
    if read_as:
        features.notes.append(f"feature columns read as: {', '.join(read_as)} (change with --feature-types)")
    return features


#: The largest magnitude a feature value may have: the tables are float32, where a larger one is infinite.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_single(number: float, where: str) -> None:
    """Refuse a finite number that float32 cannot hold (1e40 became infinite, and its column's
    statistics NaN: training stopped at its first step, blaming the learning rate)."""
    if abs(number) > _FLOAT32_MAX:
        raise DataError(f"{where}, beyond the range of the model's 32-bit numbers (±{_FLOAT32_MAX:.1e}): rescale "
                        "the column (a log, or other units)")  # fmt: skip


def vector_element(column: str, k: int) -> str:
    """The numeric column a vector column's ``k``-th number is read as: ``column[k]``."""
    return f"{column}[{k}]"


def vector_of(name: str) -> str:
    """The vector column a numeric column ``column[k]`` (:func:`vector_element`) was read from; else ``name``."""
    return name.rsplit("[", 1)[0] if name.endswith("]") and "[" in name else name


def _read_vector(features: ItemFeatures, column: str, width: int, ordered: list[tuple[int, tuple[int, Any]]],
                 values: list[Any], n_slots: int, path: Any) -> None:  # fmt: skip
    """A column of number lists as ``width`` numeric columns ``column[k]``, NaN where a cell is missing."""
    array = np.full((width, n_slots), np.nan, dtype=np.float32)
    for (index, (line, _)), value in zip(ordered, values, strict=True):
        if _is_empty(value):
            continue
        if not isinstance(value, list | tuple):
            raise DataError(f"{path}: line {line} has {column!r} {value!r:.60}, where the other rows hold lists of "
                            f"{width} numbers (a vector, such as an image or audio embedding)")  # fmt: skip
        nested = next((k for k, number in enumerate(value) if isinstance(number, list | tuple | dict)), None)
        if nested is not None:  # counted as numbers, a list of lists had "2 numbers"
            raise DataError(f"{path}: line {line} has a {type(value[nested]).__name__} as {column}[{nested}], where "
                            f"the other rows hold lists of {width} numbers (a flat list per item)")  # fmt: skip
        if len(value) != width:
            raise DataError(f"{path}: line {line} has {len(value)} numbers in {column!r} where other rows have "
                            f"{width}")  # fmt: skip
        for k, number in enumerate(value):
            if number is None:
                continue
            parsed = float(number) if _is_number(number) else None
            if parsed is None or math.isinf(parsed):  # NaN, however written, is a missing element
                what = "a number" if parsed is None else "a finite number"
                raise DataError(f"{path}: line {line} has {number!r:.40} as {column}[{k}], which is not {what}")
            _check_single(parsed, f"{path}: line {line} has {number!r:.40} as {column}[{k}]")
            array[k, index] = parsed
    for k in range(width):
        features.numeric[vector_element(column, k)] = array[k]


# --- sequential protocol ---------------------------------------------------------------------------


@dataclass
class SequentialSplit:
    """Leave-one-out split for next-item prediction.

    Attributes:
        train: Per user index, the items to train on, chronological.
        dev_target: Per user, the item to predict on dev (the second-last one), 0 if train-only.
        test_target: Per user, the item to predict on test (the last one), 0 if train-only.
    """

    train: list[np.ndarray]
    dev_target: np.ndarray
    test_target: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.train)

    def history(self, user: int, split: str) -> np.ndarray:
        """What precedes the target of ``split``: ``"dev"`` -> the train items, ``"test"`` -> train + dev target.

        This is both the model's input and the set of items excluded from the ranking, since a user
        is not recommended what they already have.
        """
        if split == "dev":
            return self.train[user]
        if split == "test":
            if self.dev_target[user] == 0:
                return self.train[user]
            return np.append(self.train[user], self.dev_target[user])
        raise ValueError(f"split must be 'dev' or 'test', not {split!r}")

    def targets(self, split: str) -> np.ndarray:
        """The target of every user for ``split`` (0 for train-only users)."""
        if split not in ("dev", "test"):
            raise ValueError(f"split must be 'dev' or 'test', not {split!r}")
        return self.dev_target if split == "dev" else self.test_target

    def users(self, split: str) -> np.ndarray:
        """The users evaluated on ``split``: those with a target (not train-only)."""
        return np.flatnonzero(self.targets(split))


def sequential_split(data: Interactions) -> SequentialSplit:
    """Leave-one-out per user: last item -> test, second-last -> dev, the rest -> train.

    Users with fewer than 3 interactions are train-only: one held-out item would leave them with an
    empty or one-item history, and keeping them in training still helps the item representations.
    """
    train: list[np.ndarray] = []
    dev = np.zeros(data.n_users, dtype=np.int64)
    test = np.zeros(data.n_users, dtype=np.int64)
    for user, sequence in enumerate(data.sequences()):
        if len(sequence) < 3:
            train.append(sequence.copy())
            continue
        train.append(sequence[:-2].copy())
        dev[user], test[user] = sequence[-2], sequence[-1]
    return SequentialSplit(train=train, dev_target=dev, test_target=test)


# --- CTR protocol ----------------------------------------------------------------------------------


@dataclass
class CtrEvents:
    """Labelled events of one CTR split, parallel arrays in the stable ``(user, time)`` order.

    Attributes:
        users: User index of each event (int64).
        items: Item index of each event (int64).
        labels: 1.0 for a positive event, 0.0 otherwise (float32).
        n_before: How many of the user's positive events come strictly before this one (int64); the
            event's behaviour history is ``CtrSplit.positives[user][:n_before]``.
    """

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    n_before: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class CtrSplit:
    """A per-user temporal split of labelled events for click-through-rate prediction.

    Attributes:
        train: Each user's earliest events.
        dev: The events after train (about 10% per user).
        test: Each user's last events (about 20% per user).
        positives: Per user index, the items of every positively labelled event, in order; histories
            are prefixes of it, so a history never holds a later event or a negative one.
        threshold: A rating at or above it is a positive label.
    """

    train: CtrEvents
    dev: CtrEvents
    test: CtrEvents
    positives: list[np.ndarray]
    threshold: float

    def history(self, events: CtrEvents, event: int) -> np.ndarray:
        """The behaviour history of ``events[event]``: the user's positives strictly before it."""
        return self.positives[int(events.users[event])][: int(events.n_before[event])]


def ctr_split(
    data: Interactions, positive_threshold: float = 4.0, *, test_fraction: float = 0.2, dev_fraction: float = 0.1
) -> CtrSplit:
    """Label events by rating and split each user's events by time.

    Per user the last ``round(test_fraction * n)`` events (at least one) go to test, the
    ``round(dev_fraction * n)`` before them (at least one when the user has 3 events or more, so that
    a log of short histories still has a dev split) to dev, the rest to train. Python's ``round`` is
    used (halves go to the even number). Splitting per user, not at one global date, evaluates every user
    on their own future.

    Args:
        data: A log with ratings.
        positive_threshold: A rating ``>=`` this is a positive (4.0: MovieLens 4 and 5 stars).
        test_fraction: Share of each user's events held out for test.
        dev_fraction: Share held out for dev, just before test.

    Raises:
        DataError: the log has no rating column.
    """
    if data.ratings is None:
        raise DataError(f"{data.source}: the CTR split labels events by rating, but the log has no rating column")
    labels = (data.ratings >= positive_threshold).astype(np.float32)
    n = len(data)
    # n_before: positives of the same user strictly before each row (rows are sorted by user).
    cumulative = np.cumsum(labels, dtype=np.int64) - labels.astype(np.int64)
    user_start = np.searchsorted(data.users, data.users)  # first row of each row's user
    offset = np.concatenate(([0], np.cumsum(labels, dtype=np.int64)))[user_start]
    n_before = cumulative - offset
    part = np.zeros(n, dtype=np.int8)  # 0 train, 1 dev, 2 test
    bounds = np.searchsorted(data.users, np.arange(data.n_users + 1))
    for user in range(data.n_users):
        start, end = int(bounds[user]), int(bounds[user + 1])
        count = end - start
        n_test = max(1, round(test_fraction * count))
        n_dev = max(1 if count >= 3 else 0, round(dev_fraction * count))
        part[max(start, end - n_test) : end] = 2
        part[max(start, end - n_test - n_dev) : max(start, end - n_test)] = 1

    def events(which: int) -> CtrEvents:
        rows = part == which
        return CtrEvents(users=data.users[rows], items=data.items[rows], labels=labels[rows], n_before=n_before[rows])

    positives = _per_user(data.items[labels == 1], data.users[labels == 1], data.n_users)
    return CtrSplit(train=events(0), dev=events(1), test=events(2), positives=positives, threshold=positive_threshold)


def describe(data: Interactions) -> str:
    """One line on the size of a log, for progress messages and reports."""
    counts = Counter(data.users.tolist())
    return (
        f"{data.source}: {len(data):,} interactions, {data.n_users:,} users, {data.n_items:,} items, "
        f"{min(counts.values())}..{max(counts.values())} per user"
    )
