"""Where the focus assistant keeps sessions, decisions, feedback and the person's model: SQLite.

``--db PATH`` is a SQLite file (WAL mode, so the dashboard reads while messages are triaged, and a
busy timeout); a SQLAlchemy URL works too. Every change is one transaction: a batch of decisions,
a session started or stopped, a correction together with the person-model update it causes. A
killed process leaves each either fully written or not at all.

Privacy: message texts are kept in this file only (the digest needs them); they never go into
logs or metrics. Delete a session's messages with ``attend focus stop --forget``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from attend.apps.focus.assistant import Decision
from attend.apps.focus.person import PersonModel
from attend.apps.sqlstore import create_engine, create_tables
from attend.apps.sqlstore import schema_table as schema_table_of
from attend.data.messages import Message

logger = logging.getLogger(__name__)

__all__ = ["MAX_SESSION", "SCHEMA_VERSION", "FocusStore", "SessionError", "now_iso", "open_focus_store"]

SCHEMA_VERSION = 1
#: The longest a focus session may be planned to last.
MAX_SESSION = timedelta(days=7)

metadata = sa.MetaData()

schema_table = schema_table_of("focus_schema", metadata)

sessions_table = sa.Table(
    "focus_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("allow", sa.Text, nullable=False),  # JSON list
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("ends_at", sa.String(40)),  # planned end, or NULL
    sa.Column("stopped_at", sa.String(40)),  # actual end, or NULL while running
    sa.Column("traffic", sa.Text),  # JSON FeatureStats of the session's messages, or NULL
)

messages_table = sa.Table(
    "focus_messages",
    metadata,
    sa.Column("id", sa.String(300), primary_key=True),  # unique within a session: ids restart in daily exports
    sa.Column("session_id", sa.Integer, sa.ForeignKey("focus_sessions.id"), primary_key=True),
    sa.Column("received_at", sa.String(40), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # order within its batch: arrival order
    sa.Column("time", sa.String(40)),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("channel", sa.String(100), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("components", sa.Text, nullable=False),  # JSON
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list
    sa.Column("highlights", sa.Text, nullable=False),  # JSON list
    sa.Column("embedding", sa.Text, nullable=False),  # JSON list: feedback learns from it
    sa.Column("truncated", sa.Integer, nullable=False),
    sa.Column("feedback", sa.String(8)),  # the person's pass/hold, or NULL
    sa.Column("feedback_at", sa.String(40)),
    sa.Index("ix_focus_messages_session", "session_id", "decision"),
    sa.Index("ix_focus_messages_id", "id"),
)

person_table = sa.Table(
    "focus_person",
    metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("model", sa.Text, nullable=False),  # JSON PersonModel
    sa.Column("updated_at", sa.String(40), nullable=False),
)


def session_end(ends_at: str | None, started: str) -> str | None:
    """``--until`` as the stored ISO time, checked against the start ``started``.

    Raises:
        ValueError: not an ISO time, not after the start, or more than a week after it (bad input,
            not a state conflict: callers check it before they open a database).
    """
    if ends_at is None:
        return None
    try:
        end = _parse_local(ends_at)
    except _NoSuchTime as gap:
        raise ValueError(f"--until {ends_at!r}: {gap} does not exist in this machine's time zone on that day (its "
                         "clocks jump past it); give a time outside the jump, or an offset (+01:00)") from None
    except ValueError:
        raise ValueError(f"--until {ends_at!r} is not an ISO time such as 2026-12-03T17:30+01:00") from None
    if end <= _parse(started):  # both said in the offset the end was read in (a local time beside UTC had puzzled)
        raise ValueError(f"--until {ends_at!r} is not after the start (read as {end.isoformat(timespec='minutes')}; "
                         f"started {_parse(started).astimezone(end.tzinfo).isoformat(timespec='minutes')})")
    if end - _parse(started) > MAX_SESSION:
        raise ValueError(f"--until {ends_at!r} is more than a week after the start ({started}): a focus "
                         "session lasts at most a week")  # fmt: skip
    return end.isoformat(timespec="seconds")


class SessionError(ValueError):
    """A session command that does not fit the database's state (none running, one already running)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _iso(moment: str) -> datetime:
    """An ISO 8601 time as written, its RFC 3339 ``Z`` (either case) read as UTC."""
    return datetime.fromisoformat(_ZULU.sub("+00:00", moment.strip()))


def _parse(moment: str) -> datetime:
    value = _iso(moment)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


#: RFC 3339's UTC mark, in either case, at the end of a time.
_ZULU = re.compile(r"[zZ]$")


class _NoSuchTime(ValueError):
    """A local wall time the clocks skip (the hour of a daylight-saving change)."""


def _parse_local(moment: str) -> datetime:
    """A time the person typed: without an offset it is their local time, not UTC. One the local
    clocks skip is :class:`_NoSuchTime` (2:30 on the night they jump from 2:00 to 3:00 had become 1:30,
    an hour early); of a repeated hour, the first."""
    value = _iso(moment)
    if value.tzinfo:
        return value
    local = value.astimezone()
    if local.replace(tzinfo=None) != value:
        raise _NoSuchTime(value.isoformat(timespec="minutes"))
    return local


def _session(row: Any) -> dict[str, Any]:
    return {"id": int(row.id), "task": row.task, "allow": json.loads(row.allow), "started_at": row.started_at,
            "ends_at": row.ends_at, "stopped_at": row.stopped_at}  # fmt: skip


def _message(row: Any) -> dict[str, Any]:
    return {"id": row.id, "session_id": int(row.session_id), "received_at": row.received_at, "time": row.time,
            "sender": row.sender, "subject": row.subject, "channel": row.channel, "text": row.text,
            "decision": row.decision, "score": float(row.score), "components": json.loads(row.components),
            "reasons": json.loads(row.reasons), "highlights": json.loads(row.highlights),
            "truncated": bool(row.truncated), "feedback": row.feedback, "feedback_at": row.feedback_at}  # fmt: skip


class FocusStore:
    """Sessions, decisions, feedback and the person's model. Use :func:`open_focus_store`."""

    def __init__(self, engine: Engine, where: str) -> None:
        self.engine = engine
        self.where = where
        self._lock_path = None if "://" in where else Path(where).expanduser().resolve().with_name(
            Path(where).name + ".lock")  # fmt: skip

    @contextlib.contextmanager
    def updating(self) -> Iterator[None]:
        """Hold the database's update lock for a read-modify-write (a correction and the person model
        it changes; a batch and the session traffic it adds to), so two processes on one database
        (``attend focus feedback`` beside ``attend serve --focus-db``) cannot lose each other's update.

        An exclusive ``flock`` on ``<db>.lock`` beside a SQLite file (POSIX); for a database URL, or
        where ``fcntl`` is missing, only the single statements' transactions protect the data.
        """
        if self._lock_path is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # not POSIX
            yield
            return
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _create(self) -> None:
        create_tables(self.engine, metadata, schema_table, SCHEMA_VERSION, self.where)

    def close(self) -> None:
        self.engine.dispose()

    # --- sessions ---------------------------------------------------------------------------

    def active_session(self, *, at: str | None = None) -> dict[str, Any] | None:
        """The running session, or None. A session past its end time is stopped (at its end time) first."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(sessions_table).where(sessions_table.c.stopped_at.is_(None))
                               .order_by(sessions_table.c.id.desc())).first()  # fmt: skip
            if row is None:
                return None
            if row.ends_at and _parse(row.ends_at) <= _parse(at or now_iso()):
                conn.execute(
                    sessions_table.update().where(sessions_table.c.id == row.id).values(stopped_at=row.ends_at)
                )
                return None
            return _session(row)

    def start_session(self, task: str, allow: Sequence[str] = (), ends_at: str | None = None,
                      *, at: str | None = None) -> dict[str, Any]:  # fmt: skip
        if not task or not task.strip():
            raise SessionError("task is empty: describe what you are working on")
        started = at or now_iso()
        ends_at = session_end(ends_at, started)
        running = self.active_session(at=started)
        if running is not None:
            raise SessionError(f"session {running['id']} is still running (task: {running['task'][:60]!r}); "
                               "stop it first with `attend focus stop`")  # fmt: skip
        with self.engine.begin() as conn:
            result = conn.execute(sessions_table.insert().values(task=task.strip(), allow=json.dumps(list(allow)),
                                                                 started_at=started, ends_at=ends_at))  # fmt: skip
            session_id = int(result.inserted_primary_key[0])
            row = conn.execute(sa.select(sessions_table).where(sessions_table.c.id == session_id)).one()
        return _session(row)

    def stop_session(self, *, at: str | None = None, forget: bool = False) -> dict[str, Any]:
        """Stop the running session; with ``forget``, erase its message texts, highlights, reasons and
        embeddings. With ``forget`` and no session running (it ended at its end time), the last session
        is forgotten."""
        running = self.active_session(at=at)
        target = running or (self.last_session() if forget else None)
        if target is None:
            raise SessionError("no focus session is running (start one with `attend focus start`)")
        with self.engine.begin() as conn:
            if running is not None:
                conn.execute(sessions_table.update().where(sessions_table.c.id == running["id"])
                             .values(stopped_at=at or now_iso()))  # fmt: skip
            if forget:
                conn.execute(messages_table.update().where(messages_table.c.session_id == target["id"])
                             .values(text="", subject="", embedding="[]", highlights="[]", reasons="[]"))  # fmt: skip
        if forget:
            self._clear_journal()
        return self.session(target["id"])

    def _clear_journal(self) -> None:
        """Write the write-ahead log into the database file and empty it: the erased texts' earlier
        versions had stayed in ``<db>-wal`` for as long as a service held the database open, and past
        its exit. Its overwritten pages are zeroed (``secure_delete``, set on every connection)."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:  # waits for readers (busy_timeout); busy if one outlasts it
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
        if busy is not None and busy[0]:
            logger.warning("focus: the erased texts stay in %s-wal until the next checkpoint (a reader held the "
                           "database past the busy timeout)", self.where)  # fmt: skip

    def session(self, session_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sessions_table).where(sessions_table.c.id == session_id)).first()
        if row is None:
            raise SessionError(f"no session {session_id} in {self.where}")
        return _session(row)

    def last_session(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sessions_table).order_by(sessions_table.c.id.desc())).first()
        return None if row is None else _session(row)

    def sessions(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [_session(r) for r in conn.execute(sa.select(sessions_table).order_by(sessions_table.c.id))]

    # --- messages ---------------------------------------------------------------------------

    def known_ids(self, session_id: int, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the session already holds."""
        return set(self.session_messages(session_id, ids))

    def session_messages(self, session_id: int, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``id -> `` the stored message (:meth:`message`'s dict) of the ``ids`` session ``session_id`` holds."""
        wanted, found = list(ids), {}
        columns = [column for column in messages_table.c if column.name != "embedding"]  # not what is read here
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):  # under every driver's bound-parameter limit
                query = sa.select(*columns).where(messages_table.c.session_id == session_id,
                                                  messages_table.c.id.in_(wanted[i : i + 500]))  # fmt: skip
                found |= {row.id: _message(row) for row in conn.execute(query)}
        return found

    def traffic(self, session_id: int) -> dict[str, Any] | None:
        """The session's traffic statistics (what relevance is standardised against), or None."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sessions_table.c.traffic).where(sessions_table.c.id == session_id)).scalar()
        return None if value is None else json.loads(value)

    def add_decisions(self, session_id: int, messages: Sequence[Message], decisions: Sequence[Decision],
                      *, traffic: dict[str, Any] | None = None) -> int:  # fmt: skip
        """Store the decisions of a batch, and the session's updated ``traffic``, in one transaction;
        ids already stored are skipped.

        Returns:
            How many were stored.
        """
        received = datetime.now(UTC).isoformat(timespec="microseconds")  # orders batches within a second
        known = self.known_ids(session_id, [m.id for m in messages])
        rows, seen = [], set()
        for position, (message, decision) in enumerate(zip(messages, decisions, strict=True)):
            if message.id in known or message.id in seen:
                continue
            seen.add(message.id)
            embedding = decision.embedding.tolist() if decision.embedding is not None else []
            rows.append({
                "id": message.id, "session_id": session_id, "received_at": received, "position": position,
                "time": message.time,
                "sender": message.sender, "subject": message.subject, "channel": message.channel, "text": message.text,
                "decision": decision.decision, "score": decision.score,
                "components": json.dumps(decision.components), "reasons": json.dumps(decision.reasons),
                "highlights": json.dumps([h.to_dict() for h in decision.highlights], ensure_ascii=False),
                "embedding": json.dumps([round(e, 6) for e in embedding]), "truncated": int(decision.truncated),
            })  # fmt: skip
        with self.engine.begin() as conn:
            if rows:
                conn.execute(messages_table.insert(), rows)
            if traffic is not None:
                conn.execute(sessions_table.update().where(sessions_table.c.id == session_id)
                             .values(traffic=json.dumps(traffic)))  # fmt: skip
        return len(rows)

    def message(self, message_id: str) -> dict[str, Any]:
        """The message with this id in the latest session that has one."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(messages_table).where(messages_table.c.id == message_id)
                               .order_by(messages_table.c.session_id.desc())).first()  # fmt: skip
        if row is None:
            raise SessionError(f"no message {message_id!r} in {self.where} (ids are listed by `attend focus status`)")
        return _message(row)

    def messages(self, *, session_id: int | None = None, decision: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(messages_table)
        if session_id is not None:
            query = query.where(messages_table.c.session_id == session_id)
        if decision is not None:
            query = query.where(messages_table.c.decision == decision)
        with self.engine.connect() as conn:
            return [
                _message(r)
                for r in conn.execute(query.order_by(messages_table.c.received_at, messages_table.c.position))
            ]

    def embedding(self, message_id: str, session_id: int) -> list[float]:
        """The stored embedding of session ``session_id``'s message ``message_id`` (ids are unique
        within a session only: a later session may hold the same id, or have forgotten it)."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(messages_table.c.embedding).where(
                messages_table.c.id == message_id, messages_table.c.session_id == session_id)).scalar()  # fmt: skip
        return [] if value is None else [float(v) for v in json.loads(value)]

    # --- the person -------------------------------------------------------------------------

    def person(self, dim: int) -> PersonModel:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(person_table.c.model).where(person_table.c.key == "person")).scalar()
        return PersonModel(dim=dim) if value is None else PersonModel.from_dict(json.loads(value))

    def record_feedback(self, message_id: str, label: str, person: PersonModel) -> dict[str, Any]:
        """Store a correction and the person model it produced, in one transaction."""
        if label not in ("pass", "hold"):
            raise SessionError(f"feedback {label!r}: say pass or hold")
        stamp = now_iso()
        session_id = self.message(message_id)["session_id"]
        with self.engine.begin() as conn:
            updated = conn.execute(messages_table.update().where(messages_table.c.id == message_id,
                                                                 messages_table.c.session_id == session_id)
                                   .values(feedback=label, feedback_at=stamp))  # fmt: skip
            if updated.rowcount == 0:
                raise SessionError(f"no message {message_id!r} in {self.where}")
            conn.execute(person_table.delete().where(person_table.c.key == "person"))
            conn.execute(
                person_table.insert().values(key="person", model=json.dumps(person.to_dict()), updated_at=stamp)
            )
        return self.message(message_id)

    # --- statistics -------------------------------------------------------------------------

    def stats(self, session_id: int | None = None, *, at: str | None = None) -> dict[str, Any]:
        """Passed vs held, per focus hour, minutes in focus, feedback agreement (whole database or one session)."""
        sessions = [self.session(session_id)] if session_id is not None else self.sessions()
        now = _parse(at or now_iso())
        minutes = 0.0
        for s in sessions:
            end = (
                _parse(s["stopped_at"]) if s["stopped_at"] else min(now, _parse(s["ends_at"])) if s["ends_at"] else now
            )
            minutes += max(0.0, (end - _parse(s["started_at"])).total_seconds() / 60)
        query = sa.select(messages_table.c.decision, messages_table.c.feedback, sa.func.count()).group_by(
            messages_table.c.decision, messages_table.c.feedback
        )
        if session_id is not None:
            query = query.where(messages_table.c.session_id == session_id)
        counts = {"pass": 0, "hold": 0}
        corrected = agreed = 0
        with self.engine.connect() as conn:
            for decision, feedback, n in conn.execute(query):
                counts[decision] = counts.get(decision, 0) + int(n)
                if feedback is not None:
                    if feedback == decision:
                        agreed += int(n)
                    else:
                        corrected += int(n)
        # A rate over a few seconds projects one message to thousands an hour: none before RATE_MINUTES.
        hours = minutes / 60 if minutes >= RATE_MINUTES else 0.0
        return {
            "sessions": len(sessions),
            "minutes_in_focus": round(minutes, 1),
            "passed": counts["pass"],
            "held": counts["hold"],
            "passed_per_focus_hour": round(counts["pass"] / hours, 2) if hours > 0 else None,
            "held_per_focus_hour": round(counts["hold"] / hours, 2) if hours > 0 else None,
            "feedback": agreed + corrected,
            "feedback_agreed": agreed,
            "feedback_corrected": corrected,
        }


#: Minutes of focus before the per-hour rates are given (null before: too short to project from).
RATE_MINUTES = 5.0


def open_focus_store(db: str | os.PathLike[str], *, create: bool = True) -> FocusStore:
    """Open (and with ``create``, set up) the focus database at a SQLite path or SQLAlchemy URL.

    Raises:
        ValueError: a bad URL, a missing folder or database, a file that is not SQLite, a newer schema.
    """
    where = os.fspath(db)
    engine = create_engine(db, create=create, kind="focus",
                           missing_hint=f"start one with `attend focus start --db {where}`")  # fmt: skip
    store = FocusStore(engine, where)
    try:
        store._create()
    except SQLAlchemyError as exc:
        engine.dispose()
        raise ValueError(f"--db {where}: cannot open the focus database ({str(exc).splitlines()[0]})") from None
    except ValueError:
        engine.dispose()
        raise
    return store
