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

from attend.apps import lazy_exports

# Each name loads its module on first use, so ``attend --help`` and the app's CLI start without
# torch, FastAPI or uvicorn.
__getattr__, __dir__ = lazy_exports(__name__, {
    "attend.apps.monitor.detect": ("DetectionSettings", "WindowCount", "WindowStat", "detect"),
    "attend.apps.monitor.events": ("Event", "follow_events", "parse_event", "parse_time", "parse_window",
                                   "read_events", "stream_events"),
    "attend.apps.monitor.monitor": ("IngestResult", "Monitor", "MonitorSettings", "RunSummary", "run_events"),
    "attend.apps.monitor.scoring": ("Scorer", "find_negative_label", "top_words"),
    "attend.apps.monitor.store": ("MonitorStore", "open_store"),
    "attend.apps.monitor.router": ("monitor_router",),
    "attend.apps.monitor.dashboard": ("create_dashboard_app",),
    "attend.apps.monitor.corpora": ("guardian_headlines",),
    "attend.apps.monitor.cli": ("register_cli",),
})  # fmt: skip

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
