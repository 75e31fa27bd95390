"""``attend focus dashboard``: the server-rendered page over a focus database, and its app.

No neural model anywhere: decisions are built by hand and stored, and the service's assistant is
never touched (it loads lazily), so these tests take seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from attend.apps.focus.assistant import Decision
from attend.apps.focus.components import Weighted
from attend.apps.focus.dashboard import render_dashboard
from attend.apps.focus.router import create_dashboard_app
from attend.apps.focus.service import FocusService
from attend.apps.focus.store import FocusStore, open_focus_store
from attend.data.messages import Message
from tests.conftest import chromium_page, served

T0 = "2024-05-01T08:00:00+00:00"
SECRET = "the-full-body-never-shown"


def decision(ident: str, verdict: str, score: float, words: list[tuple[str, float]], reason: str) -> Decision:
    highlights = [Weighted(text=w, start=0, end=len(w), weight=weight) for w, weight in words]
    components = {"relevance": 0.3, "relevance_logit": 0.0, "urgency": round(score, 2), "sender": 0.0,
                  "preference": 0.0, "allowlist": None}  # fmt: skip
    return Decision(id=ident, decision=verdict, score=score, components=components,
                    reasons=[reason, "Holding it would cost 0.10, interrupting you 0.90."], highlights=highlights,
                    embedding=torch.zeros(4))  # fmt: skip


Row = tuple[str, str, str, str, float, list[tuple[str, float]]]


def add(store: FocusStore, session_id: int, rows: list[Row]) -> None:
    """Store ``(id, sender, subject, decision, score, highlights)`` rows as one batch."""
    messages = [Message(id=i, text=f"{subject} {SECRET} {i}", sender=sender, subject=subject, time=T0, channel="email")
                for i, sender, subject, _, _, _ in rows]  # fmt: skip
    decisions = [decision(i, verdict, score, words, f"Reason for {i}: urgency {score:.2f}.")
                 for i, _, _, verdict, score, words in rows]  # fmt: skip
    assert store.add_decisions(session_id, messages, decisions) == len(rows)


@pytest.fixture
def focus_db(tmp_path: Path) -> Path:
    """Session 1 (stopped): 1 passed, 1 held. Session 2 (running): 2 passed, 3 held, one held one corrected."""
    path = tmp_path / "f.db"
    store = open_focus_store(path)
    first = store.start_session("triage the backlog", at=T0)
    add(store, first["id"], [
        ("a1", "bob@x.org", "lunch?", "hold", 0.1, [("lunch", 1.0)]),
        ("a2", "ops@x.org", "server down", "pass", 0.97, [("down", 0.8), ("server", 0.2)]),
    ])  # fmt: skip
    store.stop_session(at="2024-05-01T09:00:00+00:00")
    second = store.start_session("write the Q3 report", allow=["boss@x.org"], at="2024-05-01T10:00:00+00:00")
    add(store, second["id"], [
        ("m1", "Ana Ruiz <ana@x.org>", "<b>x</b> & more", "hold", 0.21, [("newsletter", 0.7), ("sale", 0.3)]),
        ("m2", "boss@x.org", "Q3 numbers", "pass", 0.91, [("Q3", 0.6), ("revenue", 0.4)]),
        ("m3", "cal@x.org", "team offsite", "hold", 0.35, [("offsite", 1.0)]),
        ("m4", "it@x.org", "password expires today", "pass", 0.88, [("expires", 0.9), ("today", 0.1)]),
        ("m5", "news@x.org", "weekly digest", "hold", 0.05, []),
    ])  # fmt: skip
    store.record_feedback("m3", "pass", store.person(4))  # corrected: held, should have passed
    store.record_feedback("m2", "pass", store.person(4))  # agreed
    store.close()
    return path


def test_page_shows_session_stats_decisions_and_escapes_user_text(focus_db: Path) -> None:
    service = FocusService(focus_db)
    page = render_dashboard(service, at="2024-05-01T10:30:00+00:00")
    assert service._assistant is None  # the page never loads the encoder
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "write the Q3 report" in page and "Session 2" in page and "running" in page
    assert "2024-05-01 10:00 UTC" in page and "none (until stopped)" in page and "boss@x.org" in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; more" in page and "<b>x</b>" not in page
    assert "Ana Ruiz &lt;ana@x.org&gt;" in page
    assert SECRET not in page  # subjects and highlights only, never the message text
    # this session: 30 min, 2 passed, 3 held, 4.0 interruptions per focus hour; feedback 1 agreed / 1 corrected
    stats = re.search(r"<section class='stats'>.*?</section>", page).group(0)
    assert "<td>minutes in focus</td><td class='num'>30 min</td><td class='num'>1 h 30 min</td>" in stats
    assert "<td>passed (interruptions)</td><td class='num'>2</td><td class='num'>3</td>" in stats
    assert "<td>held</td><td class='num'>3</td><td class='num'>4</td>" in stats
    assert "<td>interruptions per focus hour</td><td class='num'>4</td><td class='num'>2</td>" in stats
    assert "<td>feedback: agreed / corrected</td><td class='num'>1 / 1</td><td class='num'>1 / 1</td>" in stats
    # the decisions: this session's 5, newest first, a badge each, the first reason, weighted <mark>s
    rows = re.findall(r"<tr class='decision-row' data-decision='(\w+)' data-id='(\w+)'>", page)
    assert sorted(rows) == [("hold", "m1"), ("hold", "m3"), ("hold", "m5"), ("pass", "m2"), ("pass", "m4")]
    assert page.count("<span class='badge pass'>pass</span>") == 2 and "you: pass" in page and "you agreed" in page
    assert "Reason for m4: urgency 0.88." in page and "Holding it would cost" not in page
    assert "<mark style='background:rgba(255,176,0,1.00)' title='weight 0.90'>expires</mark>" in page
    assert "<mark style='background:rgba(255,176,0,0.24)' title='weight 0.10'>today</mark>" in page
    assert "lunch" not in page  # session 1's decisions are not listed
    # the chart: a passed and a held bar per session, heights in proportion (top of the axis: 3)
    bars = re.findall(r"<rect class='bar-(pass|hold)' x='[\d.]+' y='[\d.]+' width='[\d.]+' height='([\d.]+)'", page)
    assert [b[0] for b in bars] == ["pass", "hold", "pass", "hold"]
    heights = [float(b[1]) for b in bars]
    assert heights[3] == pytest.approx(3 * heights[0], abs=0.2) and heights[2] == pytest.approx(2 * heights[1], abs=0.2)
    assert ">#1</text>" in page and ">#2</text>" in page and ">messages</text>" in page
    # held for later: effective holds (m3 was corrected to pass) by score
    held = re.search(r"<section class='held'>.*?</section>", page).group(0)
    assert held.count("<tr class='held-row'>") == 2 and held.index("&lt;b&gt;x") < held.index("weekly digest")
    service.close()


def test_empty_database_and_session_without_messages(tmp_path: Path) -> None:
    service = FocusService(tmp_path / "empty.db")
    page = render_dashboard(service, title="my <focus>")
    assert "No focus session yet" in page and "<h1>my &lt;focus&gt;</h1>" in page and "<script" not in page
    ends = (datetime.now(UTC) + timedelta(days=6)).replace(minute=0, second=0, microsecond=0)
    service.store.start_session("deep work", ends_at=ends.isoformat())
    page = render_dashboard(service)
    assert "deep work" in page and ends.strftime("%Y-%m-%d %H:%M UTC") in page
    assert "No messages in this session yet." in page
    with pytest.raises(ValueError, match="more than a week after the start"):  # a session lasts at most a week
        FocusService(tmp_path / "other.db").store.start_session("x", ends_at="2999-01-01T00:00:00+00:00")
    assert "Nothing held." in page and "no messages yet" in page and "decision-row" not in page
    assert page.count("class='bar-pass'") == 1 and "height='0.0'" in page
    service.close()


def test_forgotten_session_shows_no_words(focus_db: Path) -> None:
    service = FocusService(focus_db)
    service.store.stop_session(at="2024-05-01T11:00:00+00:00", forget=True)
    page = render_dashboard(service)
    assert "stopped 2024-05-01 11:00 UTC" in page and page.count("(forgotten)") >= 10
    assert "<mark" not in page and "Reason for" not in page and "Q3 numbers" not in page
    service.close()


def test_last_sessions_and_decisions_only(tmp_path: Path) -> None:
    store = open_focus_store(tmp_path / "many.db")
    for day in range(1, 24):
        session = store.start_session(f"task {day}", at=f"2024-05-{day:02d}T08:00:00+00:00")
        add(store, session["id"], [(f"s{day}", "a@x.org", "hi", "hold", 0.1, [("hi", 1.0)])])
        store.stop_session(at=f"2024-05-{day:02d}T09:00:00+00:00")
    session = store.start_session("the big one", at="2024-05-30T08:00:00+00:00")
    add(store, session["id"], [(f"b{i:02d}", "a@x.org", f"n{i}", "pass" if i % 3 else "hold", i / 40, [])
                               for i in range(40)])  # fmt: skip
    store.close()
    service = FocusService(tmp_path / "many.db")
    page = render_dashboard(service)
    assert page.count("class='bar-pass'") == 20 and page.count("class='bar-hold'") == 20
    assert "the last 20 of 24 sessions" in page and ">#5</text>" in page and ">#4</text>" not in page
    assert page.count("class='decision-row'") == 30 and "newest first, 30 of 40" in page
    assert "data-id='b39'" in page and "data-id='b09'" not in page
    service.close()


def test_app_serves_the_page_and_the_focus_api(focus_db: Path) -> None:
    with TestClient(create_dashboard_app(focus_db)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "write the Q3 report" in page.text
        status = client.get("/v1/focus/status").json()
        assert status["running"] and status["stats"] == {**status["stats"], "passed": 2, "held": 3}
        assert "write the Q3 report" in client.get("/focus").text
        assert client.post("/v1/focus/stop", json={}).json()["session"]["stopped_at"]
        assert client.post("/v1/focus/sessions", json={"task": "next thing"}).json()["id"] == 3
        assert "next thing" in client.get("/").text
        # The service's own errors (it was FastAPI's bare app: a 500 that logged the message's text,
        # {"detail": ...} bodies, any content type, any size).
        def post(body: object, content_type: str = "application/json") -> httpx.Response:
            return client.post("/v1/focus/messages", content=json.dumps(body), headers={"content-type": content_type})

        bad = post({"messages": [{"text": "PRIVATEWORD hello \ud800"}]})
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "validation"
        assert "PRIVATEWORD" not in bad.text
        assert post({}, "text/plain").status_code == 415
        assert post({"messages": [{"text": "x" * 5_000_000}]}).status_code == 413
        assert "/v1/focus/messages" in client.get("/metrics").text
        # One operationId per operation (GET and HEAD /focus had shared one, which client generators refuse)
        schema = client.get("/openapi.json").json()
        ids = [op["operationId"] for methods in schema["paths"].values() for op in methods.values()]
        assert len(ids) == len(set(ids)) and client.head("/focus").status_code == 200
        # Each route's 404 and 409 in the schema, and its answer's fields (they had been missing: a title alone)
        answers = {(path, method): sorted(operation["responses"]) for path, operations in schema["paths"].items()
                   for method, operation in operations.items()}  # fmt: skip
        assert answers[("/v1/focus/digest", "get")] == ["200", "404", "422"]
        assert answers[("/v1/focus/feedback", "post")] == ["200", "404", "409", "413", "415", "422", "500", "503"]
        for path in ("/v1/focus/messages", "/v1/focus/sessions", "/v1/focus/stop"):
            assert "409" in answers[(path, "post")]
        assert client.get("/v1/focus/digest?session=99").status_code == 404
        invisible = client.post("/v1/focus/sessions", json={"task": "\u200b"})  # pydantic's "Value error, " had stayed
        assert invisible.json()["error"]["message"] == "task: task is an empty text (only invisible characters)"
        models = schema["components"]["schemas"]
        fields = set(models["DecisionOut"]["properties"])
        assert {"id", "decision", "score", "components", "reasons", "highlights"} <= fields
        ok = schema["paths"]["/v1/focus/messages"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith("/DecisionsOut")


def test_a_dashboard_port_in_use_is_a_clear_error_before_the_page_is_announced(
    focus_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from attend.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["focus", "dashboard", "--db", str(focus_db), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}" in captured.err and "dashboard on" not in captured.out
    with pytest.raises(SystemExit):
        main(["focus", "dashboard", "--db", str(focus_db), "--port", "0"])
    assert "0 must be at least 1" in capsys.readouterr().err


# --- in a browser -------------------------------------------------------------------------------


@pytest.fixture
def dashboard_url(focus_db: Path) -> Iterator[str]:
    with served(create_dashboard_app(focus_db)) as url:
        yield url


def test_dashboard_renders_in_headless_chromium(dashboard_url: str, tmp_path: Path) -> None:
    png = tmp_path / "dashboard.png"
    dom = chromium_page(dashboard_url, png)
    assert dom.count('class="decision-row"') == 5 and dom.count('data-decision="pass"') == 2
    assert dom.count('class="bar-pass"') == 2 and dom.count('class="bar-hold"') == 2
    assert "write the Q3 report" in dom and "<mark" in dom and "&lt;b&gt;x&lt;/b&gt;" in dom
    assert "<script" not in dom and "http://" not in dom.replace(dashboard_url, "") and "https://" not in dom
    # A policy lets nothing but its own inline styles load or run (drawn as before under it, below).
    assert "default-src 'none'; style-src 'unsafe-inline'" in dom
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape[0] >= 800 and image.shape[1] >= 1000
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    red = (r > 180) & (g < 90) & (b < 90)  # passed bars (#d62728) and pass badges
    blue = (b > 150) & (r < 80) & (g > 90) & (g < 150)  # held bars (#1f77b4) and hold badges
    assert red.sum() > 3000 and blue.sum() > 3000
    assert (image.sum(-1) < 200).sum() > 500  # text


def test_times_at_the_ends_of_the_calendar_are_shown_as_written() -> None:
    """A valid time past Python's last UTC date made every page of its session a 500 (OverflowError)."""
    from attend.apps.focus.dashboard import _when

    assert _when("9999-12-31T23:59:59-05:00") == "9999-12-31T23:59:59-05:00"
    assert _when("0001-01-01T00:00:00+01:00") == "0001-01-01T00:00:00+01:00"
    assert _when("2024-05-01T11:30:00+02:00") == "2024-05-01 09:30 UTC"


def test_serving_a_file_that_is_no_database_names_the_serve_option(tmp_path: Path) -> None:
    from attend.apps.focus.router import served_focus_router

    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^--focus-db .*notes.txt: not a focus database"):
        served_focus_router(None, db=notes)


def _on_disk(path: Path) -> bytes:
    """The database's bytes and its write-ahead log's, as a disk holds them."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_forgotten_texts_leave_the_disk_while_a_service_holds_the_database(focus_db: Path) -> None:
    # They had stayed in <db>-wal (the rows read as erased) while the service ran, and after it exited.
    store = open_focus_store(focus_db)
    add(store, 2, [("w1", "x@x.org", "FORGETSUBJECT", "hold", 0.2, [("FORGETWORD", 1.0)])])
    store.close()
    with TestClient(create_dashboard_app(focus_db)) as client:
        assert client.get("/v1/focus/status").status_code == 200  # the service's connection is open
        assert b"FORGETSUBJECT" in _on_disk(focus_db)
        assert client.post("/v1/focus/stop", json={"forget": True}).status_code == 200
        assert b"FORGETSUBJECT" not in _on_disk(focus_db) and b"FORGETWORD" not in _on_disk(focus_db)
        assert client.post("/v1/focus/sessions", json={"task": "next thing"}).status_code == 200
        assert focus_db.with_name("f.db-wal").exists()
    assert not focus_db.with_name("f.db-wal").exists()  # the service closed it: its log folded into the file
    assert b"next thing" in focus_db.read_bytes()
