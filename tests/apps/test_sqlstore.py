"""Opening an app's SQLite database while another process holds it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from attend.apps.sqlstore import create_engine, create_tables, schema_table


def _tables() -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    schema = schema_table("demo_schema", metadata)
    sa.Table("demo_items", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.String))
    return metadata, schema


def test_a_new_database_held_by_another_process_is_opened_once_it_is_let_go(tmp_path: Path) -> None:
    """Before: SQLite's switch to WAL does not wait for another process's write lock, so opening a new
    database that another process was creating failed at once with 'database is locked'."""
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE demo_schema (version INTEGER PRIMARY KEY, created_at VARCHAR(40) NOT NULL)")
    holder.execute("BEGIN IMMEDIATE")  # a process mid-way through creating it holds the write lock
    holder.execute("INSERT INTO demo_schema VALUES (1, '2026-12-05T00:00:00Z')")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        metadata, schema = _tables()
        engine = create_engine(path, create=True, kind="demo", missing_hint="")
        create_tables(engine, metadata, schema, 1, str(path))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.execute(sa.select(schema.c.version)).scalars().all() == [1]
        assert set(sa.inspect(engine).get_table_names()) == {"demo_schema", "demo_items"}
        engine.dispose()
    finally:
        release.join()
        holder.close()


def test_a_database_that_cannot_be_opened_fails_without_retrying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only another process creating the same database is waited for: a folder given as the file
    (or a read-only one) failed only after 30 s of retries."""
    from sqlalchemy.exc import OperationalError

    import attend.apps.sqlstore as sqlstore

    pauses: list[float] = []
    monkeypatch.setattr(sqlstore.time, "sleep", pauses.append)
    metadata, schema = _tables()
    engine = create_engine(f"sqlite:///{tmp_path}", create=True, kind="demo", missing_hint="")
    with pytest.raises(OperationalError, match="unable to open database file"):
        create_tables(engine, metadata, schema, 1, str(tmp_path))
    assert pauses == []


def test_reading_a_missing_database_by_url_or_a_folder_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """Before: `focus status --db sqlite:///nothing.db` made an empty database and said "no session yet";
    `--db .` was told to start one there."""
    from attend.apps.sqlstore import database_url

    missing = tmp_path / "nothing.db"
    with pytest.raises(ValueError, match=r"nothing\.db: no focus database there \(start one\)"):
        database_url(f"sqlite:///{missing}", create=False, kind="focus", missing_hint="start one")
    assert not missing.exists()
    assert database_url(f"sqlite:///{missing}", create=True, kind="focus", missing_hint="") == f"sqlite:///{missing}"
    assert database_url("sqlite://", create=False, kind="focus", missing_hint="") == "sqlite://"  # in memory
    with pytest.raises(ValueError, match=r"is a directory; give the database's file path"):
        database_url(tmp_path, create=True, kind="focus", missing_hint="")
    # A file where its folder goes is named so ("the folder ... does not exist" had been said of it).
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=rf"^--db {tmp_path}/d.csv/f.db: {tmp_path}/d.csv is a file, not a folder$"):
        database_url(tmp_path / "d.csv" / "f.db", create=True, kind="focus", missing_hint="")
    with pytest.raises(ValueError, match=r"the folder .*/none does not exist$"):
        database_url(tmp_path / "none" / "f.db", create=True, kind="focus", missing_hint="")


def test_another_programs_database_is_refused_unchanged(tmp_path: Path) -> None:
    """Opening it switched its journal to WAL (its header changed) before the refusal."""
    path = tmp_path / "theirs.db"
    theirs = sqlite3.connect(path)
    theirs.execute("CREATE TABLE focus_sessions (x INTEGER)")
    theirs.commit()
    theirs.close()
    before = path.read_bytes()
    metadata, schema = _tables()
    engine = create_engine(path, create=True, kind="demo", missing_hint="")
    with pytest.raises(ValueError, match="holds tables attend did not write"):
        create_tables(engine, metadata, schema, 1, str(path))
    engine.dispose()
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_failed_statement_keeps_its_values_out_of_the_error(tmp_path: Path) -> None:
    """The error goes to the server's log (`attend serve`'s 500): SQLAlchemy had quoted a message's text
    in its parameters."""
    from sqlalchemy.exc import IntegrityError

    metadata, schema = _tables()
    engine = create_engine(tmp_path / "d.db", create=True, kind="demo", missing_hint="")
    create_tables(engine, metadata, schema, 1, str(tmp_path / "d.db"))
    items = metadata.tables["demo_items"]
    with engine.begin() as conn:
        conn.execute(items.insert(), {"id": 1, "text": "first"})
    with pytest.raises(IntegrityError) as failed, engine.begin() as conn:
        conn.execute(items.insert(), {"id": 1, "text": "a private message"})
    assert "private" not in str(failed.value) and "parameters hidden" in str(failed.value)
    engine.dispose()
