"""``attend monitor dashboard``: one self-contained page over the monitor database, plus its JSON.

The page is drawn on the server as inline SVG (no script, no CDN, nothing fetched): per topic,
bars of volume per window, the negative share as a line over its EWMA baseline, a red marker on
each alert window, and below it each alert's numbers and its most negative texts with the words
the model rested on highlighted. It reloads itself every minute while ``monitor run`` writes.

JSON behind it: ``GET /api/summary``, ``GET /api/series[?topic=T]``, ``GET /api/alerts[?topic=T]``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from attend.apps.monitor.detect import DetectionSettings, WindowStat, detect
from attend.apps.monitor.events import format_time, format_window, parse_time
from attend.apps.monitor.store import MonitorStore, open_store
from attend.data.validation import PAGE_POLICY, page_text

__all__ = ["create_dashboard_app", "render_dashboard", "serve_dashboard"]

_WIDTH, _HEIGHT, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 980, 230, 52, 52, 26, 34
_RED, _BAR, _BASE = "#d62728", "#9db7d5", "#555555"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"WenQuanYi Micro Hei",sans-serif;margin:24px;color:#222;
background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:0 0 6px} .muted{color:#666;font-size:13px}
section.topic{background:#fff;border:1px solid #ddd;border-radius:6px;padding:14px 16px;margin:16px 0}
table{border-collapse:collapse;font-size:13px;margin-top:8px;width:100%} td,th{border-top:1px solid #eee;
padding:5px 8px;text-align:left;vertical-align:top} th{background:#f3f3f3}
mark{background:#ffd2cc;color:#7a0a00;border-radius:3px;padding:0 2px} .legend span{margin-right:14px}
.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
td.nowrap{white-space:nowrap} ul.examples{margin:0;padding-left:16px} ul.examples li{margin:2px 0}
"""


def _settings(store: MonitorStore, window: int | None) -> DetectionSettings:
    saved = store.saved_detection()
    if window is not None:
        saved = {**saved, "window": window}
    return DetectionSettings(**saved)


def _series(store: MonitorStore, settings: DetectionSettings) -> dict[str, list[WindowStat]]:
    return detect(store.window_counts(settings.window), settings)


def _stat_json(stat: WindowStat) -> dict[str, Any]:
    data = stat.to_dict()
    data["window_start"], data["window_end"] = format_time(stat.start), format_time(stat.end)
    del data["start"], data["end"]
    return data


def _highlight(text: str, words: list[dict[str, Any]]) -> str:
    """The text, HTML-escaped, with the model's top words wrapped in ``<mark>``."""
    named = [w.get("word", "") if isinstance(w, dict) else w for w in words]  # a word alone, in a hand-made database
    wanted = sorted({str(w) for w in named if str(w).strip()}, key=len, reverse=True)
    if not wanted:
        return page_text(text)
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in wanted), re.IGNORECASE)
    out, last = [], 0
    for match in pattern.finditer(text):
        out.append(page_text(text[last : match.start()]))
        out.append(f"<mark>{page_text(match.group(0))}</mark>")
        last = match.end()
    out.append(page_text(text[last:]))
    return "".join(out)


def _day(ts: int) -> str:
    return format_time(ts)[:10]


def _tick(ts: int, span: int) -> str:
    """Axis label: the date, or the date and time (UTC) when the chart covers a few days or less."""
    text = format_time(ts)
    return text[:10] if span > 3 * 86400 else f"{text[5:10]} {text[11:16]}"


def _chart(topic: str, stats: list[WindowStat], alerts: list[dict[str, Any]], t0: int, t1: int) -> str:
    """Inline SVG: volume bars (left axis), negative share and baseline (right axis, 0-100 %), and a
    marker per stored alert, with the figures it was raised with (the alerts table's): markers
    recomputed with the last run's thresholds had left out the strongest stored alert and shown
    other numbers than the table. A withdrawn alert's marker is hollow."""
    inner_w, inner_h = _WIDTH - _PAD_L - _PAD_R, _HEIGHT - _PAD_T - _PAD_B
    span = max(t1 - t0, 1)

    def x(ts: int) -> float:
        return _PAD_L + (ts - t0) / span * inner_w

    def y_share(share: float) -> float:
        return _PAD_T + (1 - share) * inner_h

    top = max((s.volume for s in stats), default=1) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
             f'aria-label="{page_text(topic)}: volume and negative share per window" class="chart">',
             f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{inner_w}" height="{inner_h}" fill="#fff" '
             'stroke="#ccc"/>']  # fmt: skip
    for frac in (0.25, 0.5, 0.75):
        yy = y_share(frac)
        parts.append(f'<line x1="{_PAD_L}" x2="{_PAD_L + inner_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{_PAD_L + inner_w + 4}" y="{yy + 4:.1f}" font-size="11" fill="{_RED}">'
                     f"{frac:.0%}</text>")  # fmt: skip
    parts.append(f'<text x="{_PAD_L - 6}" y="{_PAD_T + 10}" font-size="11" text-anchor="end" fill="#557">{top}</text>')
    parts.append(f'<text x="{_PAD_L - 6}" y="{_PAD_T + inner_h}" font-size="11" text-anchor="end" fill="#557">0</text>')
    spans = [(int(parse_time(a["window_start"]).timestamp()), int(parse_time(a["window_end"]).timestamp()))
             for a in alerts]  # fmt: skip
    for alert, (start, end) in zip(alerts, spans, strict=True):  # alert bands under everything else
        band = max(x(end) - x(start), 2)
        opacity = 0.05 if alert.get("withdrawn") else 0.12
        parts.append(f'<rect x="{x(start):.1f}" y="{_PAD_T}" width="{band:.1f}" height="{inner_h}" '
                     f'fill="{_RED}" fill-opacity="{opacity}"/>')  # fmt: skip
    for stat in stats:
        bar_h = stat.volume / top * inner_h * 0.9
        width = max(x(stat.end) - x(stat.start) - 1, 1)
        parts.append(f'<rect x="{x(stat.start):.1f}" y="{_PAD_T + inner_h - bar_h:.1f}" width="{width:.1f}" '
                     f'height="{bar_h:.1f}" fill="{_BAR}"><title>{format_time(stat.start)}: {stat.volume} events, '
                     f"{stat.negatives} negative ({stat.share:.0%})</title></rect>")  # fmt: skip
    mid = [(x((s.start + s.end) // 2), s) for s in stats]
    share_points = " ".join(f"{px:.1f},{y_share(s.share):.1f}" for px, s in mid)
    base_points = " ".join(f"{px:.1f},{y_share(s.baseline):.1f}" for px, s in mid if s.baseline is not None)
    if base_points:
        parts.append(f'<polyline points="{base_points}" fill="none" stroke="{_BASE}" stroke-width="1.5" '
                     'stroke-dasharray="5,4"/>')  # fmt: skip
    if share_points:
        parts.append(f'<polyline points="{share_points}" fill="none" stroke="{_RED}" stroke-width="1.6" '
                     'stroke-opacity="0.8"/>')  # fmt: skip
    for alert, (start, end) in zip(alerts, spans, strict=True):
        px = x((start + end) // 2)
        withdrawn = alert.get("withdrawn")
        tip = (f"ALERT {alert['window_start']}: negative {alert['share']:.0%} vs baseline {alert['baseline']:.0%}, "
               f"z={alert['score']:.1f}, {alert['negatives']}/{alert['volume']} events"
               + (f"; withdrawn {withdrawn['at']}" if withdrawn else ""))  # fmt: skip
        fill = f'fill="none" stroke="{_RED}" stroke-width="1.5"' if withdrawn else f'fill="{_RED}"'
        parts.append(f'<g class="alert-marker"><title>{page_text(tip)}</title>'
                     f'<path d="M{px - 8:.1f},{_PAD_T - 18} L{px + 8:.1f},{_PAD_T - 18} L{px:.1f},{_PAD_T - 3} Z" '
                     f'{fill}/><circle cx="{px:.1f}" cy="{y_share(alert["share"]):.1f}" r="5" '
                     f"{fill}/></g>")  # fmt: skip
    ticks = 6
    for i in range(ticks + 1):
        ts = t0 + span * i // ticks
        parts.append(f'<text x="{x(ts):.1f}" y="{_HEIGHT - 12}" font-size="11" text-anchor="middle" fill="#555">'
                     f"{_tick(ts, span)}</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _alerts_table(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<p class="muted">No alerts for this topic.</p>'
    rows = []
    for alert in alerts:
        examples = "".join(
            f"<li>{_highlight(e['text'], e['words'])} <span class='muted'>(p(neg)={e['negative_prob']:.2f})</span></li>"
            for e in alert["examples"]
        )
        withdrawn = alert.get("withdrawn")
        # Every stored value escaped: a database is a file anyone may hand over (a withdrawal's time had
        # gone into the page as markup).
        note = (f"<br><span class='muted'>withdrawn {page_text(withdrawn['at'])}: {page_text(withdrawn['negatives'])}/"
                f"{page_text(withdrawn['volume'])} now, no surge</span>" if withdrawn else "")  # fmt: skip
        rows.append(
            f"<tr class='alert-row'><td class='nowrap'>{page_text(alert['window_start'])}<br>"
            f"{page_text(alert['window_end'])}{note}</td>"
            f"<td>{alert['score']:.1f}</td><td>{alert['share']:.0%} vs {alert['baseline']:.0%} "
            f"({alert['lift']:+.0%})</td><td>{page_text(alert['negatives'])}/{page_text(alert['volume'])}</td>"
            f"<td><ul class='examples'>{examples}</ul></td></tr>"
        )
    return ("<table><tr><th>window (UTC)</th><th>z</th><th>negative share vs baseline</th><th>negative/volume</th>"
            "<th>most negative texts (highlighted: the words the model rested on)</th></tr>"
            f"{''.join(rows)}</table>")  # fmt: skip


def render_dashboard(store: MonitorStore, *, window: int | None = None, title: str = "attend monitor") -> str:
    """The whole page as one HTML string (inline CSS and SVG only)."""
    settings = _settings(store, window)
    series = _series(store, settings)
    alerts = store.alerts(window=settings.window)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_topic.setdefault(alert["topic"], []).append(alert)
    starts = [s.start for stats in series.values() for s in stats]
    t0, t1 = (min(starts), max(starts) + settings.window) if starts else (0, 1)
    order = sorted(series, key=lambda t: (-len(by_topic.get(t, [])), -sum(s.volume for s in series[t]), t))
    events = sum(s.volume for stats in series.values() for s in stats)
    other = store.count_alerts() - len(alerts)  # raised by runs with another --window: listed by `monitor alerts`
    others = f" (and {other} of other window lengths: `attend monitor alerts` lists them)" if other else ""
    unreadable = store.count_unreadable()
    unread = f" (and {unreadable} the model cannot read, counted in no window)" if unreadable else ""
    head = (f"<h1>{page_text(title)}</h1><p class='muted'>{events} events{unread}, {len(series)} topic(s), "
            f"{len(alerts)} alert(s){others}; window {format_window(settings.window)}; surge when z ≥ {settings.z:g}, "
            f"volume ≥ {settings.min_volume}, after {settings.warmup} windows (EWMA α={settings.alpha:g}). "
            f"{('Data ' + _day(t0) + ' to ' + _day(t1)) if starts else 'No events yet.'}</p>"
            f"<p class='legend muted'><span><i class='sw' style='background:{_BAR}'></i>volume</span>"
            f"<span><i class='sw' style='background:{_RED}'></i>negative share / alert</span>"
            f"<span><i class='sw' style='background:{_BASE}'></i>baseline (dashed)</span></p>")  # fmt: skip
    sections = []
    for topic in order:
        topic_alerts = by_topic.get(topic, [])
        sections.append(
            f"<section class='topic'><h2>{page_text(topic)} <span class='muted'>"
            f"{sum(s.volume for s in series[topic])} events, {len(topic_alerts)} alert(s)</span></h2>"
            f"{_chart(topic, series[topic], topic_alerts, t0, t1)}{_alerts_table(topic_alerts)}</section>"
        )
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"{PAGE_POLICY}<meta http-equiv='refresh' content='60'>"
            f"<title>{page_text(title)}</title><style>{_STYLE}</style></head><body>{head}{''.join(sections)}"
            "</body></html>")  # fmt: skip


def create_dashboard_app(db: str | os.PathLike[str] | MonitorStore, *, window: int | None = None) -> FastAPI:
    """The dashboard as a FastAPI app over an existing monitor database."""
    store = db if isinstance(db, MonitorStore) else open_store(db, create=False)
    app = FastAPI(title="attend monitor", description="Negative-sentiment surges per topic.", docs_url=None,
                  redoc_url=None)  # their pages load a CDN's scripts (see attend.serve.app)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        """The dashboard page."""
        return render_dashboard(store, window=window)

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        """Counts (``unreadable``: events the model cannot read, in ``events`` but in no window) and the
        detection settings in use."""
        settings = _settings(store, window)
        shown = store.count_alerts(window=settings.window)
        return {"events": store.count_events(), "unreadable": store.count_unreadable(),
                "topics": sorted(_series(store, settings)), "alerts": shown,
                "alerts_other_windows": store.count_alerts() - shown, "settings": settings.to_dict()}  # fmt: skip

    @app.get("/api/series")
    def series(topic: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Per topic, every window: volume, negatives, share, baseline, z, surge."""
        data = _series(store, _settings(store, window))
        return {t: [_stat_json(s) for s in stats] for t, stats in data.items() if topic is None or t == topic}

    @app.get("/api/alerts")
    def alerts(topic: str | None = None) -> list[dict[str, Any]]:
        """Stored alerts, oldest first (the same objects as ``attend monitor alerts --json``)."""
        return store.alerts(topic=topic, window=_settings(store, window).window)

    return app


def serve_dashboard(db: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8050,
                    window: int | None = None) -> None:  # fmt: skip
    """Serve the dashboard until Ctrl-C."""
    import uvicorn

    from attend.serve.app import check_port

    app = create_dashboard_app(db, window=window)
    check_port(host, port)  # a clear error before the page is announced, not uvicorn's after it
    print(f"monitor dashboard on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
