"""Opening an app's database: a SQLite path or a SQLAlchemy URL, checked before anything is written.

Shared by the monitor and the focus assistant. A path is opened as SQLite in WAL mode (a dashboard
can read while another process writes) with a busy timeout (a second writer waits for the lock
instead of failing) and foreign keys on; a URL (``postgresql://...``) is passed to SQLAlchemy as is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

__all__ = ["create_engine", "create_tables", "database_url", "named_as", "public_name", "schema_table"]

# Seconds that opening a new database keeps trying while other processes create the same one.
_CREATE_PATIENCE = 30.0


def schema_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """A table ``name`` in ``metadata`` recording the schema version its database was written with."""
    return sa.Table(
        name,
        metadata,
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.String(40), nullable=False),
    )


def create_tables(engine: Engine, metadata: sa.MetaData, schema: sa.Table, version: int, where: str) -> None:
    """Create what is missing and record ``version``; refuse a database written by a newer schema,
    or one that is not attend's: tables but none of attend's (another program's database), or a
    table of this schema's name without its columns. Nothing is written to such a database.

    Processes opening one new database at once all open it: one that meets another's half-made
    database (SQLite's switch to WAL, which does not wait for a lock, or "table ... already
    exists" between a look and a write) looks again after a growing pause, for up to
    ``_CREATE_PATIENCE`` seconds in all."""
    deadline = time.monotonic() + _CREATE_PATIENCE
    for attempt in itertools.count():
        try:
            versions = _create_tables_once(engine, metadata, schema, version, where)
            break
        except (OperationalError, IntegrityError) as exc:
            if not _another_process_at_it(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(min(0.05 * (attempt + 1), 1.0))
    if versions and max(versions) > version:
        raise ValueError(f"--db {where}: written by a newer attend (schema version {max(versions)}, this one "
                         f"reads up to {version}); upgrade attend")  # fmt: skip


def _another_process_at_it(exc: Exception) -> bool:
    """Whether ``exc`` is another process creating the same database (SQLite's lock, a table or row
    it made between our look and our write, a server's duplicate key or deadlock), which clears;
    not a file that cannot be opened, a read-only one, or a server refusing us, which do not."""
    text = str(getattr(exc, "orig", exc)).lower()
    return any(sign in text for sign in ("locked", "busy", "already exists", "unique constraint", "duplicate key",
                                         "deadlock"))  # fmt: skip


def _create_tables_once(engine: Engine, metadata: sa.MetaData, schema: sa.Table, version: int,
                        where: str) -> list[int]:  # fmt: skip
    """One try of :func:`create_tables`; the schema versions the database held before it."""
    from datetime import UTC, datetime

    inspector = sa.inspect(engine)
    existing = set(inspector.get_table_names())
    ours = existing & set(metadata.tables)
    if existing and not ours and not any(name.endswith("_schema") for name in existing):
        raise ValueError(f"--db {where}: holds tables attend did not write ({', '.join(sorted(existing)[:5])}); "
                         "choose another database")  # fmt: skip
    for name in sorted(ours):
        have = {column["name"] for column in inspector.get_columns(name)}
        missing = [column.name for column in metadata.tables[name].columns if column.name not in have]
        if missing:
            raise ValueError(f"--db {where}: its table {name!r} has no column {', '.join(missing)}: it was not "
                             "written by attend; choose another database")  # fmt: skip
    metadata.create_all(engine)
    with engine.begin() as conn:
        versions = [row[0] for row in conn.execute(sa.select(schema.c.version))]
        if not versions:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            conn.execute(schema.insert().values(version=version, created_at=stamp))
    return versions


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def database_url(db: str | os.PathLike[str], *, create: bool, kind: str, missing_hint: str) -> str:
    """The SQLAlchemy URL for ``--db``.

    Args:
        db: A SQLite file path or a SQLAlchemy URL.
        create: Whether a missing file may be created.
        kind: What the database is, for messages ("monitor", "focus").
        missing_hint: What to run to make one, said when it is missing and ``create`` is False.

    Raises:
        ValueError: the file is missing (and may not be created), is not SQLite (opening it would
            write SQLite's header into somebody's file), or its folder does not exist.
    """
    text = os.fspath(db)
    if "://" in text:
        file = _sqlite_file(text)
        if file is not None and not create and not file.is_file():  # reading must not make an empty one
            raise ValueError(f"--db {text}: no {kind} database there ({missing_hint})")
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"--db {text} is a directory; give the database's file path (e.g. {Path(text) / kind}.db)")
    if not create and not path.is_file():
        raise ValueError(f"--db {text}: no {kind} database there ({missing_hint})")
    size = path.stat().st_size if path.is_file() else None
    if (size and not _is_sqlite(path)) or (size == 0 and not create):
        raise ValueError(f"--db {text}: not a {kind} database (not an SQLite file); choose another path")
    if create and not path.parent.is_dir():
        from attend.io import file_in_the_way  # torch with it: on this error path only

        blocking = file_in_the_way(path.parent)  # "does not exist" had been said of a file that does
        if blocking is not None:
            raise ValueError(f"--db {text}: {blocking} is a file, not a folder")
        raise ValueError(f"--db {text}: the folder {path.parent} does not exist")
    if create and not path.exists():
        # Readable by its owner alone: it holds people's messages (SQLite had made it 0644, readable by
        # every local user); its -wal and -shm files take the same permissions.
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs stands
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return f"sqlite:///{path.resolve()}"


def _sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///PATH`` URL names, or None (another database, or SQLite in memory)."""
    try:
        parsed = sa.engine.make_url(url)
    except ArgumentError:
        return None  # create_engine says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL may wait for another process
    # WAL for a new database or attend's own (a *_schema table): another program's, which opening
    # refuses, is left as it was (its journal mode had been switched before the refusal).
    cursor.execute("SELECT count(*), count(CASE WHEN name LIKE '%\\_schema' ESCAPE '\\' THEN 1 END) FROM sqlite_master "
                   "WHERE type = 'table'")  # fmt: skip
    tables, ours = cursor.fetchone()
    if not tables or ours:
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # what is erased is overwritten (most builds' default; not all)
    cursor.close()


def create_engine(db: str | os.PathLike[str], *, create: bool, kind: str, missing_hint: str) -> Engine:
    """A SQLAlchemy engine for ``--db`` (see :func:`database_url`), SQLite set up as the module says.

    Raises:
        ValueError: as :func:`database_url`, or a URL SQLAlchemy cannot use (bad scheme, no driver).
    """
    url = database_url(db, create=create, kind=kind, missing_hint=missing_hint)
    try:
        # A failed statement's parameters (a message's text, its highlighted words) stay out of the
        # error, which goes to the server's log: SQLAlchemy had put them in its words.
        engine = sa.create_engine(url, hide_parameters=True)
    except (ArgumentError, ImportError, SQLAlchemyError) as exc:
        raise ValueError(f"--db {os.fspath(db)}: cannot use this database ({type(exc).__name__}: {exc})") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _on_sqlite_connect)
    return engine


@contextlib.contextmanager
def named_as(flag: str) -> Iterator[None]:
    """Errors about the database name the option that gave it: ``attend serve --monitor-db PATH``
    (or ``--focus-db``) rather than the ``--db`` of the app's own commands."""
    try:
        yield
    except ValueError as exc:
        message = str(exc)
        if "--db" not in message:
            raise
        raise ValueError(re.sub(r"--db\b", flag, message)) from None


def public_name(db: str | os.PathLike[str]) -> str:
    """What a client of the service is told of its database: the file's name, or a URL's database
    name, never the server's folders nor a URL's user and password (``GET /v1/model`` had given
    ``/srv/private/focus.db``)."""
    text = os.fspath(db)
    if "://" in text:
        return urlsplit(text).path.rsplit("/", 1)[-1] or "the service's database"
    return Path(text).name
