"""Read a user's sentence pairs for translation, and split them without leaking a sentence across splits.

A translator is trained on pairs (source sentence, its translation) read from CSV, TSV, JSONL or
Parquet through the same readers as labelled text (:mod:`attend.data.readers`), with errors that
name the file, the column and the line.

Parallel corpora repeat sentences: Tatoeba lists "I don't know." under many ids, each with its own
translation. A random split of rows puts copies of one source sentence in train and in test, so
the test set rewards memorising rather than translating (a translation memory scores well above
what it should). :func:`group_split` therefore splits by *source sentence*: every copy of a
sentence, compared after whitespace normalisation and case folding, lands in one split.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from attend.data.readers import (
    SPLIT_NAMES,
    DataError,
    RowProblems,
    check_columns,
    check_strings,
    delimiters_alone,
    open_data_file,
    read_rows,
)
from attend.data.validation import is_empty, text_problem

__all__ = ["PAIR_SPLIT_SCHEME", "ParallelTexts", "group_split", "normalise_whitespace", "read_parallel"]

#: How many line numbers an error lists before it just counts the rest.
_SHOWN = 5


@dataclass
class ParallelTexts:
    """Sentence pairs, as read from one file or loaded from a data set.

    Attributes:
        sources: The sentence to translate, one per pair (whitespace normalised).
        targets: Its translation (whitespace normalised).
        splits: The given split of each pair ("train" / "dev" / "test") when the file has a split
            column, else None (split with :func:`group_split`).
        rows: Where each pair came from: the line an editor shows for CSV/TSV/JSONL (a CSV's
            first row is line 2), the 1-based row for Parquet and data sets; for error messages.
        origin: The file it was read from, or ``dataset:NAME``.
    """

    sources: list[str]
    targets: list[str]
    splits: list[str] | None = None
    rows: list[int] = field(default_factory=list)
    origin: str = ""

    def __post_init__(self) -> None:
        """Refuse lists of other lengths, and a sentence that is no string (naming its index)."""
        self.sources, self.targets = list(self.sources), list(self.targets)
        for name in ("sources", "targets"):
            check_strings(getattr(self, name), name, self.origin or "ParallelTexts")
        if len(self.sources) != len(self.targets):
            raise ValueError(f"sources has {len(self.sources)} sentences but targets has {len(self.targets)}")
        if self.splits is not None and len(self.splits) != len(self.sources):
            raise ValueError(f"splits has {len(self.splits)} entries for {len(self.sources)} pairs")
        if self.rows and len(self.rows) != len(self.sources):
            raise ValueError(f"rows has {len(self.rows)} entries for {len(self.sources)} pairs")

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, indices: Sequence[int]) -> ParallelTexts:
        """The pairs at ``indices``, in that order, with their splits and rows."""
        return ParallelTexts(
            sources=[self.sources[i] for i in indices],
            targets=[self.targets[i] for i in indices],
            splits=None if self.splits is None else [self.splits[i] for i in indices],
            rows=[self.rows[i] for i in indices] if self.rows else [],
            origin=self.origin,
        )


def normalise_whitespace(text: str) -> str:
    """Strip, and collapse every run of whitespace (tabs, newlines, no-break and ideographic spaces)
    into one ASCII space; case and punctuation are kept, since both are part of a translation."""
    return " ".join(text.split())


#: How :func:`group_split` finds copies of a source, recorded with a translator
#: (``data.split_scheme``) so that its split is rebuilt as it was made: 1, equal after
#: :func:`normalise_whitespace` and ``str.casefold``; 2 (since 2026-12-07), and in one Unicode form
#: (NFC, as the translator's tokenizer reads them: a decomposed ``fünf``, as macOS and some scraped
#: text write it, had been another sentence, which could be in training while its twin was tested).
PAIR_SPLIT_SCHEME = 2


def source_key(text: str, scheme: int = PAIR_SPLIT_SCHEME) -> str:
    """What makes two sources copies of one sentence (:func:`group_split` keeps them in one split),
    by :data:`PAIR_SPLIT_SCHEME` ``scheme``."""
    key = normalise_whitespace(text).casefold()
    return unicodedata.normalize("NFC", key) if scheme >= 2 else key


def _numbered(numbers: list[int], noun: str) -> str:
    """``"line 3"``, or ``"lines 3, 7, 9, ... (12 in all)"``."""
    if len(numbers) == 1:
        return f"{noun} {numbers[0]}"
    shown = ", ".join(map(str, numbers[:_SHOWN]))
    return f"{noun}s {shown}" + (f", ... ({len(numbers)} in all)" if len(numbers) > _SHOWN else "")


def read_parallel(
    path: str | os.PathLike[str],
    *,
    source_col: str = "source",
    target_col: str = "target",
    split_col: str | None = None,
    fmt: str | None = None,
) -> ParallelTexts:
    """Read sentence pairs from a CSV, TSV, JSONL or Parquet file.

    Args:
        path: The file.
        source_col: Column holding the sentence to translate.
        target_col: Column holding its translation.
        split_col: Optional column assigning each pair to train/dev/test (also validation/valid/val
            for dev, in any case).
        fmt: Force a format instead of guessing from the extension.

    Returns:
        The pairs in file order, whitespace normalised (:func:`normalise_whitespace`).

    Raises:
        DataError: naming the file, the column and the line (or value), for a missing column, a
            cell that is not text, empty sources or targets (every such line is counted, so they
            can all be removed at once), unknown split values, or a file with no pairs.
    """
    if source_col == target_col:
        raise DataError(f"source_col and target_col are both {source_col!r}; a pair needs two columns")
    path, fmt = open_data_file(path, fmt)
    noun = "row" if fmt == "parquet" else "line"

    sources: list[str] = []
    targets: list[str] = []
    splits: list[str] = []
    rows: list[int] = []
    empty: dict[str, list[int]] = {source_col: [], target_col: []}
    bad_splits: dict[str, int] = {}  # value -> first line holding it
    checked_columns = False
    problems = RowProblems(path)  # a CSV row's own faults (extra fields, the header again), all said at once
    unusable: list[str] = []  # cells that are no text (a list, a lone surrogate), as their errors say them
    for line, record in read_rows(path, fmt, problems=problems):
        if delimiters_alone(fmt, record):
            continue  # no pair, as read_table skips it in labelled data
        problems.good += 1
        if not checked_columns:
            check_columns(path, record, (source_col, target_col, split_col),
                          "choose the columns with --source-col / --target-col / --split-col")
            checked_columns = True
        pair = []
        for column in (source_col, target_col):
            try:
                text = _cell_text(path, noun, line, column, record.get(column))
            except DataError as exc:  # said with the empty cells, every one counted (the first alone had been)
                unusable.append(str(exc).removeprefix(f"{path}: "))
                text = ""
            if text is None:
                empty[column].append(line)
            pair.append(text or "")
        sources.append(pair[0])
        targets.append(pair[1])
        rows.append(line)
        if split_col is not None:
            raw = record.get(split_col)
            split = SPLIT_NAMES.get(str("" if raw is None else raw).strip().lower())
            if split is None:
                # As the file writes it: 'tst', or JSON's null, true, 3 (not Python's None, True)
                bad_splits.setdefault(repr(raw) if isinstance(raw, str) else json.dumps(raw, default=str), line)
            splits.append(split or "")
    problems.raise_any()
    if not checked_columns or not sources:
        raise DataError(f"{path} has a header but no rows" if fmt != "parquet" else f"{path} has no rows")
    parts = [
        f"{len(lines)} empty {'source' if column == source_col else 'target'}"
        f"{'s' if len(lines) > 1 else ''} in column {column!r} ({_numbered(lines, noun)})"
        for column, lines in empty.items()
        if lines
    ]
    if unusable:
        more = f" (and {len(unusable) - _SHOWN} more)" if len(unusable) > _SHOWN else ""
        also = f"; and {' and '.join(parts)}" if parts else ""
        raise DataError(f"{path}: {'; '.join(unusable[:_SHOWN])}{more}{also}")
    if parts:
        column = next((c for c, lines in empty.items() if len(lines) == len(sources) > 1), None)
        if column is not None:  # every row: a wrong column, not rows to remove
            raise DataError(f"{path}: column {column!r} is empty in every {noun} ({len(sources)}): is it the right "
                            "column? Choose the columns with --source-col / --target-col")  # fmt: skip
        raise DataError(f"{path}: {' and '.join(parts)}; remove those {noun}s, a pair needs both sentences")
    if bad_splits:
        values = ", ".join(f"{value} ({noun} {first})" for value, first in list(bad_splits.items())[:_SHOWN])
        raise DataError(
            f"{path}: column {split_col!r} holds split value(s) {values}; expected train, dev or test "
            "(dev may also be written validation, valid or val)"
        )
    return ParallelTexts(
        sources=sources,
        targets=targets,
        splits=splits if split_col is not None else None,
        rows=rows,
        origin=str(path),
    )


def _cell_text(path: os.PathLike[str], noun: str, line: int, column: str, value: object) -> str | None:
    """The normalised text of one cell, or None if it is empty (or only invisible characters)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # "42" in a CSV is a sentence too; so is 42 in JSON.
    if not isinstance(value, str):
        raise DataError(
            f"{path}: {noun} {line} has {type(value).__name__} {value!r:.60} in column {column!r}, expected text"
        )
    problem = text_problem(value)
    if is_empty(problem):
        return None
    if problem is not None:
        raise DataError(f"{path}: {noun} {line}: the text in column {column!r} {problem}")
    return normalise_whitespace(value)


def group_split(sources: Sequence[str], *, dev_fraction: float, test_fraction: float, seed: int,
                scheme: int = PAIR_SPLIT_SCHEME) -> list[str]:  # fmt: skip
    """A seeded train/dev/test assignment per row that keeps every copy of a source sentence together.

    Copies are found by comparing sources by :func:`source_key` (``scheme``: a translator's recorded
    :data:`PAIR_SPLIT_SCHEME`), so "I see." and "i  see." are one group. Groups are shuffled with
    ``seed`` and laid end to end; a group goes to test, dev or train by where the middle of its rows
    falls, so the fractions hold by number of rows to within about one group. Small data gets a
    minimum: train always gets at least one group, and with at least three distinct sources, so do
    dev and test when their fraction is above 0.

    Args:
        sources: The source sentence of each row.
        dev_fraction: Share of rows for dev, in [0, 1).
        test_fraction: Share of rows for test, in [0, 1).
        seed: The same sources and seed give the same assignment, on any machine.

    Returns:
        ``"train"``, ``"dev"`` or ``"test"`` for each row, in the order of ``sources``.

    Raises:
        ValueError: A fraction is outside [0, 1), or the two leave nothing to train on.
    """
    if scheme not in range(1, PAIR_SPLIT_SCHEME + 1) or isinstance(scheme, bool):
        raise ValueError(f"scheme={scheme!r}: a split scheme is 1 to {PAIR_SPLIT_SCHEME} (a newer attend's model?)")
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value} must be in [0, 1)")
    if dev_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"dev_fraction + test_fraction = {dev_fraction + test_fraction} must be below 1, "
            "or no row is left to train on"
        )
    group_of: dict[str, int] = {}
    row_groups = np.array(
        [group_of.setdefault(source_key(text, scheme), len(group_of)) for text in sources], dtype=np.int64
    )
    n_groups = len(group_of)
    if n_groups == 0:
        return []
    sizes = np.bincount(row_groups, minlength=n_groups)
    order = np.random.default_rng(seed).permutation(n_groups)
    middles = np.cumsum(sizes[order]) - sizes[order] / 2.0  # (n_groups,) where each group's rows centre
    n_test, n_dev = len(sources) * test_fraction, len(sources) * dev_fraction
    split_of_ordered = np.where(middles < n_test, 2, np.where(middles < n_test + n_dev, 1, 0))  # 0 train 1 dev 2 test
    split_of = np.empty(n_groups, dtype=np.int64)
    split_of[order] = split_of_ordered

    def ensure(split: int, *, may_empty_donor: bool = False) -> None:
        """Give ``split`` one group, taken from the split with the most groups (dev before test on a
        tie), if it has none; the donor keeps one group unless ``may_empty_donor``."""
        counts = np.bincount(split_of, minlength=3)
        if counts[split] or counts.max() < (1 if may_empty_donor else 2):
            return
        donor = int(np.argmax(counts))
        # The donor's last group in shuffled order: the one nearest the boundary between splits.
        moved = next(int(g) for g in order[::-1] if split_of[g] == donor)
        split_of[moved] = split

    ensure(0, may_empty_donor=True)  # a split with nothing to train on is no split
    if n_groups >= 3:
        if test_fraction > 0:
            ensure(2)
        if dev_fraction > 0:
            ensure(1)
    names = np.array(["train", "dev", "test"])
    return names[split_of[row_groups]].tolist()
