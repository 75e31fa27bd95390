"""Where the monitor keeps events, scores and alerts: SQLAlchemy Core, SQLite by default.

``--db PATH`` is a SQLite file, opened in WAL mode (a dashboard can read while ``monitor run``
writes) with a busy timeout; ``--db URL`` is any SQLAlchemy URL, e.g. ``postgresql://user@host/db``
(the PostgreSQL driver, psycopg, is not a dependency of attend: install it to use one).

The SQL is dialect-neutral Core: integer and text columns only (times are epoch seconds plus an ISO
string, scores and words are JSON text), one ``GROUP BY`` with ``%`` for the windows, and
insert-if-absent done as "select the ids present, insert the rest" inside the batch's transaction.
Only SQLite is tested here; PostgreSQL is expected to work but has not been run.

Crash safety: a batch of events is written in one transaction, so a killed process leaves every
batch either fully stored or not at all; a rerun skips the ids already stored. Alerts are keyed by
(topic, window length, window start), so re-detecting a window never stores it twice.

Schema versions: 1, the first; 2 adds ``monitor_events.unreadable`` (texts the sentiment model
cannot read, kept but left out of the window counts). Opening a version-1 database to write
migrates it in place (one ``ALTER TABLE ... ADD COLUMN``); opening one to read leaves it as it is
and counts all its events, as version 1 did.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, NoSuchTableError, OperationalError, ProgrammingError, SQLAlchemyError

from attend.apps.monitor.detect import ORIGIN, WindowCount
from attend.apps.sqlstore import create_engine, create_tables
from attend.apps.sqlstore import schema_table as schema_table_of

__all__ = ["SCHEMA_VERSION", "MonitorStore", "StoredEvent", "open_store"]

#: Version of the tables below; bumped on any change, checked on open (see the module docstring).
SCHEMA_VERSION = 2

metadata = sa.MetaData()

schema_table = schema_table_of("monitor_schema", metadata)

meta_table = sa.Table(
    "monitor_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

events_table = sa.Table(
    "monitor_events",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("time", sa.String(32), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(200)),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("negative", sa.Integer, nullable=False),  # 0/1: SUM works the same in every dialect
    sa.Column("negative_prob", sa.Float, nullable=False),
    sa.Column("scores", sa.Text, nullable=False),  # JSON {label: probability}
    sa.Column("topic_prob", sa.Float),  # when a topic model chose the topic
    sa.Column("words", sa.Text, nullable=False),  # JSON [[word, weight], ...], most important first
    sa.Column("ingested_at", sa.String(32), nullable=False),
    # 0/1 (version 2): the sentiment model read no piece of the text (all [UNK]), so its scores are a
    # guess; such an event is kept but counted in no window (it would lower a surge's share).
    sa.Column("unreadable", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Index("ix_monitor_events_topic_ts", "topic", "ts"),
    sa.Index("ix_monitor_events_ts", "ts"),
)

alerts_table = sa.Table(
    "monitor_alerts",
    metadata,
    sa.Column("topic", sa.String(200), primary_key=True),
    sa.Column("window_seconds", sa.Integer, primary_key=True),
    sa.Column("window_start", sa.BigInteger, primary_key=True),
    sa.Column("window_end", sa.BigInteger, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("baseline", sa.Float, nullable=False),
    sa.Column("baseline_sd", sa.Float, nullable=False),
    sa.Column("volume", sa.Integer, nullable=False),
    sa.Column("negatives", sa.Integer, nullable=False),
    sa.Column("examples", sa.Text, nullable=False),  # JSON list of the most negative events
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("notified_at", sa.String(32)),
    sa.Column("notify_attempts", sa.Integer, nullable=False, default=0),
)

#: Alerts whose window, judged again after later events reached it (a replay in parts, a late
#: event), is no longer a surge: what the window held then. A table of its own, so databases
#: written before it gain it on open (it is created where missing) and older readers ignore it.
withdrawals_table = sa.Table(
    "monitor_withdrawals",
    metadata,
    sa.Column("topic", sa.String(200), primary_key=True),
    sa.Column("window_seconds", sa.Integer, primary_key=True),
    sa.Column("window_start", sa.BigInteger, primary_key=True),
    sa.Column("withdrawn_at", sa.String(32), nullable=False),
    sa.Column("volume", sa.Integer, nullable=False),
    sa.Column("negatives", sa.Integer, nullable=False),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("score", sa.Float),  # z, where the window has a baseline
)


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored, with its scores (the row of ``monitor_events``)."""

    id: str
    topic: str
    ts: int
    time: str
    text: str
    source: str | None
    label: str
    negative: bool
    negative_prob: float
    scores: dict[str, float]
    topic_prob: float | None
    words: list[tuple[str, float]]
    #: The sentiment model read no piece of the text (every one ``[UNK]``): its scores say nothing.
    unreadable: bool = False

    def to_row(self, ingested_at: str) -> dict[str, Any]:
        return {
            "id": self.id, "topic": self.topic, "ts": self.ts, "time": self.time, "text": self.text,
            "source": self.source, "label": self.label, "negative": int(self.negative),
            "negative_prob": float(self.negative_prob), "scores": json.dumps(self.scores, ensure_ascii=False),
            "topic_prob": self.topic_prob, "words": json.dumps(self.words, ensure_ascii=False),
            "ingested_at": ingested_at, "unreadable": int(self.unreadable),
        }  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """What an alert shows of an event: its text, scores and highlighted words."""
        return {"id": self.id, "time": self.time, "text": self.text, "source": self.source, "label": self.label,
                "negative_prob": round(self.negative_prob, 4),
                "words": [{"word": w, "weight": round(v, 4)} for w, v in self.words]}  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MonitorStore:
    """Events, scores and alerts in one database. Use :func:`open_store` to get one."""

    def __init__(self, engine: Engine, where: str) -> None:
        self.engine = engine
        self.where = where
        self._has_withdrawals: bool | None = None  # found on first use (a database may predate the table)
        self._has_unreadable: bool | None = None  # found on first use (a version-1 database opened to read has none)

    # --- set-up ---------------------------------------------------------------------------

    def _create(self) -> None:
        self._migrate()
        create_tables(self.engine, metadata, schema_table, SCHEMA_VERSION, self.where)
        self._has_unreadable = True

    def _migrate(self) -> None:
        """Bring a version-1 database to this schema in place (its events all counted, as before), so
        an existing ``--db`` keeps working. Another process migrating it at the same moment makes
        one of the two fail (a column or version row already there): it looks again."""
        for attempt in range(5):
            try:
                self._migrate_once()
                return
            except (OperationalError, ProgrammingError, IntegrityError):
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _migrate_once(self) -> None:
        inspector = sa.inspect(self.engine)
        if not {schema_table.name, events_table.name} <= set(inspector.get_table_names()):
            return  # a new database (create_tables makes it), or not the monitor's (create_tables refuses it)
        if self.schema_version() != 1:
            return  # up to date, or newer (create_tables refuses it)
        column = events_table.c.unreadable
        if column.name not in {c["name"] for c in inspector.get_columns(events_table.name)}:
            # Core has no "add column" construct; this DDL is standard SQL (SQLite, PostgreSQL, MySQL
            # alike), with the names quoted and the type spelled by the database's own dialect.
            quote = self.engine.dialect.identifier_preparer
            ddl = (f"ALTER TABLE {quote.format_table(events_table)} ADD COLUMN {quote.format_column(column)} "
                   f"{column.type.compile(dialect=self.engine.dialect)} NOT NULL DEFAULT 0")  # fmt: skip
            with self.engine.begin() as conn:
                conn.execute(sa.text(ddl))
        # Recorded after the column exists: a crash between the two leaves version 1, migrated again.
        with self.engine.begin() as conn:
            conn.execute(schema_table.insert().values(version=SCHEMA_VERSION, created_at=_now()))

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            version = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar_one()
        return 0 if version is None else int(version)  # no row: none recorded

    def close(self) -> None:
        self.engine.dispose()

    # --- settings the last run used (the dashboard draws with them) ---------------------------

    def set_meta(self, key: str, value: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(meta_table.delete().where(meta_table.c.key == key))
            conn.execute(meta_table.insert().values(key=key, value=json.dumps(value)))

    def saved_detection(self) -> dict[str, Any]:
        """The detection settings (window, thresholds) the database was last run with, as
        ``DetectionSettings`` fields; none for a new one."""
        return (self.get_meta("settings") or {}).get("detection") or {}

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == key)).scalar_one_or_none()
        return default if value is None else json.loads(value)

    # --- events -----------------------------------------------------------------------------

    def stored_texts(self, ids: Sequence[str]) -> dict[str, str]:
        """The stored text of each of these ids that is already in the database."""
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):  # stay under every driver's bound-parameter limit
                chunk = list(ids[i : i + 500])
                query = sa.select(events_table.c.id, events_table.c.text).where(events_table.c.id.in_(chunk))
                found.update({row.id: row.text for row in conn.execute(query)})
        return found

    def add_events(self, events: Sequence[StoredEvent]) -> int:
        """Store a batch in one transaction, skipping ids already present; returns how many were new.

        Another writer (a second ``monitor run``, the HTTP route) may store some of the same ids
        between our check and our insert; the transaction then fails as a whole and is retried,
        which finds those ids present.
        """
        if not events:
            return 0
        for attempt in range(5):
            try:
                return self._add_events(events)
            except (IntegrityError, OperationalError):
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return 0  # pragma: no cover - the loop returns or raises

    def _add_events(self, events: Sequence[StoredEvent]) -> int:
        ingested = _now()
        with self.engine.begin() as conn:
            ids = [e.id for e in events]
            present: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                present.update(conn.execute(sa.select(events_table.c.id).where(events_table.c.id.in_(chunk))).scalars())
            rows, seen = [], set(present)
            for event in events:
                if event.id not in seen:
                    seen.add(event.id)
                    rows.append(event.to_row(ingested))
            if rows:
                conn.execute(events_table.insert(), rows)
        return len(rows)

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one())

    def count_unreadable(self) -> int:
        """How many stored events the sentiment model could not read (kept, counted in no window)."""
        if not self._has_flag():
            return 0
        query = sa.select(sa.func.count()).select_from(events_table).where(events_table.c.unreadable != 0)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _has_flag(self) -> bool:
        """Whether ``monitor_events`` has its ``unreadable`` column: a version-1 database opened only to
        read (``monitor alerts``, the dashboard) has not, and its events all count, as they did."""
        if not self._has_unreadable:  # looked for again until found: another process may migrate it
            try:
                columns = sa.inspect(self.engine).get_columns(events_table.name)
            except NoSuchTableError:
                return False
            self._has_unreadable = any(c["name"] == events_table.c.unreadable.name for c in columns)
        return self._has_unreadable

    def _counted(self) -> Any:
        """The WHERE term keeping the events that windows count: those the model could read."""
        return events_table.c.unreadable == 0 if self._has_flag() else sa.true()

    def _select_events(self) -> Any:
        """``SELECT`` of the events' columns this database has (see :meth:`_has_flag`)."""
        if self._has_flag():
            return sa.select(events_table)
        return sa.select(*(c for c in events_table.columns if c.name != events_table.c.unreadable.name))

    def count_alerts(self, *, window: int | None = None) -> int:
        """How many alerts are stored (of ``window``-long windows only, when given), withdrawn ones
        included, as :meth:`alerts` lists them."""
        query = sa.select(sa.func.count()).select_from(alerts_table)
        if window is not None:
            query = query.where(alerts_table.c.window_seconds == window)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def watermark(self, *, until: int | None = None) -> int | None:
        """The latest event time stored (epoch seconds), of those at or before ``until`` when given:
        windows ending by then are closed. ``until`` keeps an event dated far ahead (a mistyped
        year) from closing every window at once."""
        query = sa.select(sa.func.max(events_table.c.ts))
        if until is not None:
            query = query.where(events_table.c.ts <= until)
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar_one_or_none()
        return None if value is None else int(value)

    def topics(self) -> list[str]:
        """Every topic an event was stored under, sorted."""
        with self.engine.connect() as conn:
            return sorted(conn.execute(sa.select(events_table.c.topic).distinct()).scalars())

    def window_counts(self, window: int) -> list[WindowCount]:
        """Volume and negatives per topic and window, computed in SQL, of the events the model could
        read: an unreadable one would count as a confident guess (a burst of them lowered a surge's
        share). A window with only unreadable events has no row."""
        # ts - ((ts - ORIGIN + k*window) % window): the added multiple of the window keeps the
        # left operand of % positive for any time after year -1200, where SQL's % and Python's agree.
        # The constants are inlined as SQL literals (they are ints we computed), not bound: PostgreSQL
        # cannot tell that two bound parameters in SELECT and GROUP BY are the same expression.
        shift = window * (-(-(4 * 10**10) // window)) - ORIGIN
        ts = events_table.c.ts
        start = (ts - (ts + sa.literal_column(str(int(shift)))) % sa.literal_column(str(int(window)))).label("start")
        query = (
            sa.select(events_table.c.topic, start, sa.func.count().label("volume"),
                      sa.func.sum(events_table.c.negative).label("negatives"))
            .where(self._counted())
            .group_by(events_table.c.topic, start)
            .order_by(events_table.c.topic, start)
        )  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [WindowCount(topic=r.topic, start=int(r.start), volume=int(r.volume), negatives=int(r.negatives or 0))
                for r in rows]  # fmt: skip

    def most_negative(self, topic: str, start: int, end: int, limit: int) -> list[StoredEvent]:
        """The ``limit`` most negative events of a topic in ``[start, end)``, of those the window counts."""
        query = (
            self._select_events()
            .where(events_table.c.topic == topic, events_table.c.ts >= start, events_table.c.ts < end,
                   self._counted())
            .order_by(events_table.c.negative_prob.desc(), events_table.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(query).mappings()]

    def events(self, *, topic: str | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Stored events in time order (optionally one topic's, the first ``limit``), unreadable ones too."""
        query = self._select_events().order_by(events_table.c.ts, events_table.c.id)
        if topic is not None:
            query = query.where(events_table.c.topic == topic)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(query).mappings()]

    # --- alerts -----------------------------------------------------------------------------

    def add_alert(self, alert: dict[str, Any]) -> bool:
        """Store an alert unless its (topic, window) is stored already; True when it was new."""
        try:
            return self._add_alert(alert)
        except IntegrityError:  # another writer stored the same window's alert just now
            return False

    def _add_alert(self, alert: dict[str, Any]) -> bool:
        where = _window(alerts_table, alert["topic"], alert["window_seconds"], alert["window_start"])
        with self.engine.begin() as conn:
            present = conn.execute(sa.select(sa.func.count()).select_from(alerts_table).where(*where)).scalar_one()
            if present:
                return False
            row = {column: alert[column] for column in (
                "topic", "window_seconds", "window_start", "window_end", "score", "share", "baseline", "baseline_sd",
                "volume", "negatives")}  # fmt: skip
            conn.execute(alerts_table.insert().values(**row, examples=json.dumps(alert["examples"], ensure_ascii=False),
                                                      created_at=_now(), notify_attempts=0))  # fmt: skip
        return True

    def alerts(self, *, topic: str | None = None, pending_only: bool = False,
               window: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Stored alerts in time order, as JSON-ready dicts (times in ISO 8601 UTC); ``pending_only``:
        those no webhook has taken yet and that are not withdrawn. A withdrawn alert has
        ``withdrawn`` (when, and the window's numbers then); the others ``withdrawn: None``."""
        from attend.apps.monitor.events import format_time

        joined, w = self._with_withdrawals()
        query = (sa.select(alerts_table, w.withdrawn_at, w.volume.label("w_volume"), w.negatives.label("w_negatives"),
                           w.share.label("w_share"), w.score.label("w_score"))
                 .select_from(joined).order_by(alerts_table.c.window_start, alerts_table.c.topic))  # fmt: skip
        if topic is not None:
            query = query.where(alerts_table.c.topic == topic)
        if window is not None:
            query = query.where(alerts_table.c.window_seconds == window)
        if pending_only:
            query = query.where(alerts_table.c.notified_at.is_(None), w.withdrawn_at.is_(None))
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        return [{
            "topic": r["topic"], "window_start": format_time(int(r["window_start"])),
            "window_end": format_time(int(r["window_end"])), "window_seconds": int(r["window_seconds"]),
            "score": r["score"], "share": r["share"], "baseline": r["baseline"], "baseline_sd": r["baseline_sd"],
            "lift": r["share"] - r["baseline"], "volume": int(r["volume"]), "negatives": int(r["negatives"]),
            "examples": json.loads(r["examples"]), "created_at": r["created_at"], "notified_at": r["notified_at"],
            "withdrawn": None if r["withdrawn_at"] is None else {
                "at": r["withdrawn_at"], "volume": int(r["w_volume"]), "negatives": int(r["w_negatives"]),
                "share": r["w_share"], "score": r["w_score"]},
        } for r in rows]  # fmt: skip

    def _with_withdrawals(self) -> tuple[Any, Any]:
        """The alerts outer-joined with their withdrawals, and the withdrawals' columns. A database
        written before withdrawals were kept, opened only to read (``attend monitor alerts``, the
        dashboard), has no such table: an empty one of the same columns stands in."""
        if not self._has_withdrawals:  # looked for again until found: another process may create it
            self._has_withdrawals = sa.inspect(self.engine).has_table(withdrawals_table.name)
        table: Any = withdrawals_table
        if not self._has_withdrawals:
            table = sa.select(*(sa.cast(sa.null(), column.type).label(column.name)
                                for column in withdrawals_table.columns)).where(sa.false()).subquery()  # fmt: skip
        a, w = alerts_table.c, table.c
        same = sa.and_(w.topic == a.topic, w.window_seconds == a.window_seconds, w.window_start == a.window_start)
        return alerts_table.outerjoin(table, same), w

    def alert_windows(self, window: int) -> dict[tuple[str, int], tuple[bool, int, int]]:
        """``(topic, window_start) -> (withdrawn, volume, negatives)`` of the stored alerts of this
        window length: the counts the alert was raised on, or withdrawn on."""
        a = alerts_table.c
        joined, w = self._with_withdrawals()
        query = (sa.select(a.topic, a.window_start, w.withdrawn_at, a.volume, a.negatives, w.volume, w.negatives)
                 .select_from(joined).where(a.window_seconds == window))  # fmt: skip
        found = {}
        with self.engine.connect() as conn:
            for topic, start, withdrawn_at, volume, negatives, w_volume, w_negatives in conn.execute(query):
                gone = withdrawn_at is not None
                found[(topic, int(start))] = (gone, int(w_volume if gone else volume),
                                              int(w_negatives if gone else negatives))  # fmt: skip
        return found

    def withdraw(self, topic: str, window: int, start: int, numbers: dict[str, Any], *, again: bool = False) -> None:
        """Withdraw the alert of ``(topic, window, start)`` with the window's ``numbers`` now (volume,
        negatives, share, score); ``again``: it is withdrawn already, and takes the new numbers but
        keeps when it was withdrawn."""
        where = _window(withdrawals_table, topic, window, start)
        with self.engine.begin() as conn:
            if again and conn.execute(withdrawals_table.update().where(*where).values(**numbers)).rowcount:
                return
            conn.execute(withdrawals_table.delete().where(*where))
            conn.execute(withdrawals_table.insert().values(topic=topic, window_seconds=window, window_start=start,
                                                           withdrawn_at=_now(), **numbers))  # fmt: skip

    def restate(self, alert: dict[str, Any], *, resend: bool = False) -> None:
        """Give a stored alert its window's numbers and examples now (the counts grew, or the
        baseline moved), reinstating it if it was withdrawn; ``resend``: mark it undelivered, so the
        webhook, told of the withdrawal, hears of the alert again."""
        key = (alert["topic"], alert["window_seconds"], alert["window_start"])
        columns = ("score", "share", "baseline", "baseline_sd", "volume", "negatives")
        with self.engine.begin() as conn:
            conn.execute(withdrawals_table.delete().where(*_window(withdrawals_table, *key)))
            conn.execute(alerts_table.update().where(*_window(alerts_table, *key))
                         .values(**{c: alert[c] for c in columns},
                                 examples=json.dumps(alert["examples"], ensure_ascii=False),
                                 **({"notified_at": None} if resend else {})))  # fmt: skip

    def mark_notified(self, alert: dict[str, Any], *, ok: bool) -> None:
        """Record a webhook delivery attempt (``ok``: delivered, else one more failed attempt)."""
        from attend.apps.monitor.events import parse_time

        start = int(parse_time(alert["window_start"]).timestamp())
        where = _window(alerts_table, alert["topic"], alert["window_seconds"], start)
        values: dict[str, Any] = {"notify_attempts": alerts_table.c.notify_attempts + 1}
        if ok:
            values["notified_at"] = _now()
        with self.engine.begin() as conn:
            conn.execute(alerts_table.update().where(*where).values(**values))


def _window(table: sa.Table, topic: str, window: int, start: int) -> tuple[Any, ...]:
    """The WHERE terms picking ``table``'s row of one topic's window (an alert, or its withdrawal)."""
    c = table.c
    return c.topic == topic, c.window_seconds == window, c.window_start == start


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        id=row["id"], topic=row["topic"], ts=int(row["ts"]), time=row["time"], text=row["text"], source=row["source"],
        label=row["label"], negative=bool(row["negative"]), negative_prob=float(row["negative_prob"]),
        scores=json.loads(row["scores"]), topic_prob=row["topic_prob"],
        words=[(str(w), float(v)) for w, v in json.loads(row["words"])], unreadable=bool(row.get("unreadable", 0)),
    )  # fmt: skip


def open_store(db: str | os.PathLike[str], *, create: bool = True) -> MonitorStore:
    """Open (and with ``create``, set up) the monitor database at a SQLite path or SQLAlchemy URL.

    Raises:
        ValueError: a bad URL, a missing folder or database, a database that cannot be opened,
            or one written by a newer schema.
    """
    where = os.fspath(db)
    engine = create_engine(db, create=create, kind="monitor", missing_hint="write one with `attend monitor run`")
    store = MonitorStore(engine, where)
    try:
        if create:
            store._create()
        else:
            tables = sa.inspect(engine).get_table_names()
            if schema_table.name not in tables:  # another program's database, or an empty one
                shown = ", ".join(sorted(tables)[:5]) or "none"
                raise ValueError(f"--db {where}: not a monitor database (its tables: {shown}); give the one "
                                 "`attend monitor run` wrote")  # fmt: skip
            version = store.schema_version()
            if not version:  # its schema table is empty: a run that failed as it set up, or another program's
                raise ValueError(f"--db {where}: not a monitor database (it records no schema version); give the "
                                 "one `attend monitor run` wrote")  # fmt: skip
            if version > SCHEMA_VERSION:  # read as if it were this version's, it shows wrong figures or fails later
                raise ValueError(f"--db {where}: written by a newer attend (schema version {version}, this one "
                                 f"reads up to {SCHEMA_VERSION}); upgrade attend")  # fmt: skip
    except SQLAlchemyError as exc:
        engine.dispose()
        detail = str(exc).splitlines()[0]
        raise ValueError(f"--db {where}: cannot open the monitor database ({detail})") from None
    except ValueError:
        engine.dispose()
        raise
    return store
