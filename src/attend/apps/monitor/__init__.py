"""Stream monitoring: score a text stream, store it, and alert on surges of negative sentiment per topic.

Pipeline: events (:mod:`.events`) -> sentiment, topic and highlighted words (:mod:`.scoring`)
-> SQL store (:mod:`.store`) -> per-topic windows and EWMA z-score surge detection
(:mod:`.detect`, whose docstring states the method) -> alerts: a table row, a log line and an
optional webhook (:mod:`.monitor`) -> dashboard (:mod:`.dashboard`). The same monitor takes
events over HTTP (:func:`monitor_router`) and from the CLI (``attend monitor``, :mod:`.cli`).

>>> import attend
>>> from attend.apps.monitor import Monitor, Scorer, open_store, read_events, run_events, find_negative_label
>>> model = attend.load("sentiment_model/")
>>> monitor = Monitor(open_store("monitor.db"), Scorer(model, find_negative_label(model)))
>>> summary = run_events(monitor, read_events("events.jsonl"))
"""

from attend.apps.monitor.detect import DetectionSettings, WindowCount, WindowStat, detect
from attend.apps.monitor.events import (
    Event,
    follow_events,
    parse_event,
    parse_time,
    parse_window,
    read_events,
    stream_events,
)
from attend.apps.monitor.monitor import IngestResult, Monitor, MonitorSettings, RunSummary, run_events
from attend.apps.monitor.scoring import Scorer, find_negative_label, top_words
from attend.apps.monitor.store import MonitorStore, open_store

__all__ = [
    "DetectionSettings",
    "Event",
    "IngestResult",
    "Monitor",
    "MonitorSettings",
    "MonitorStore",
    "RunSummary",
    "Scorer",
    "WindowCount",
    "WindowStat",
    "create_dashboard_app",
    "detect",
    "find_negative_label",
    "follow_events",
    "guardian_headlines",
    "monitor_router",
    "open_store",
    "parse_event",
    "parse_time",
    "parse_window",
    "read_events",
    "register_cli",
    "run_events",
    "stream_events",
    "top_words",
]


def __getattr__(name: str) -> object:
    # FastAPI, uvicorn and the data-set fetcher load only when the router, dashboard or corpus is used.
    if name == "monitor_router":
        from attend.apps.monitor.router import monitor_router

        return monitor_router
    if name == "create_dashboard_app":
        from attend.apps.monitor.dashboard import create_dashboard_app

        return create_dashboard_app
    if name == "guardian_headlines":
        from attend.apps.monitor.corpora import guardian_headlines

        return guardian_headlines
    if name == "register_cli":
        from attend.apps.monitor.cli import register_cli

        return register_cli
    raise AttributeError(f"module 'attend.apps.monitor' has no attribute {name!r}")
