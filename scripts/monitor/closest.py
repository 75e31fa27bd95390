"""Print the windows of a monitor database with the highest z-scores, flagged or not, and write its dashboard.

    python scripts/monitor/closest.py runs/monitor/guardian.db --windows 1w,1d --top 5 --html dashboard.html

Alerts say what crossed the threshold; this says how close the rest came, with the most negative
texts of each window and the words the model rested on. The thresholds are the ones the last
``monitor run`` stored (only the window length is changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from attend.apps.monitor import DetectionSettings, detect, open_store, parse_window
from attend.apps.monitor.dashboard import render_dashboard
from attend.apps.monitor.events import format_time, format_window
from attend.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="monitor database (SQLite path or SQLAlchemy URL)")
    parser.add_argument("--windows", default="1d", help="comma-separated window lengths (default 1d)")
    parser.add_argument("--top", type=int, default=5, help="windows to show per length (5)")
    parser.add_argument("--html", help="also write the dashboard page (first window length) here")
    args = parser.parse_args(argv)
    store = open_store(args.db, create=False)
    saved = DetectionSettings(**(store.get_meta("settings") or {}).get("detection", {}))
    events = store.events()
    negatives = sum(e.negative for e in events)
    print(f"{len(events)} events, {negatives} ({negatives / max(len(events), 1):.0%}) judged negative by the model")
    windows = [parse_window(w) for w in args.windows.split(",")]
    for window in windows:
        settings = dataclasses.replace(saved, window=window)
        stats = [s for series in detect(store.window_counts(window), settings).values() for s in series]
        judged = sorted((s for s in stats if s.z is not None), key=lambda s: -(s.z or 0.0))
        print(f"\n{format_window(window)} windows: {len(stats)}, judged {len(judged)}, flagged "
              f"{sum(s.surge for s in stats)} (z >= {settings.z:g}); highest z:")  # fmt: skip
        for s in judged[: args.top]:
            print(f"  {format_time(s.start)[:10]} {s.topic}: z={s.z:+.2f}  negative {s.negatives}/{s.volume} = "
                  f"{s.share:.0%} vs baseline {s.baseline:.0%}{'  ALERT' if s.surge else ''}")  # fmt: skip
            for event in store.most_negative(s.topic, s.start, s.end, 2):
                words = ", ".join(w for w, _ in event.words)
                print(f"      p(neg)={event.negative_prob:.2f} {event.text[:90]!r} [{words}]")
    if args.html:
        atomic_write_text(args.html, render_dashboard(store, window=windows[0]))
        print(f"\ndashboard ({format_window(windows[0])} windows) written to {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
