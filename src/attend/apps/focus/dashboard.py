"""``attend focus dashboard``: one self-contained page over the focus database, plus the focus API.

The page is drawn on the server (no script, no CDN, nothing fetched; inline CSS and SVG only):
the running or last session and its statistics beside the whole database's, a chart of passed
(interruptions) vs held messages for the last 20 sessions, the session's 30 most recent decisions
with the first reason and the words the assistant rested on, and the held messages by score (the
neural digest is ``GET /v1/focus/digest``; the page does not load the encoder). It reloads itself
every 30 seconds while messages are triaged.

Privacy: the page shows a message's sender, subject and highlighted words, never its full text;
every value from the database is HTML-escaped. A message forgotten by ``focus stop --forget`` shows
neither highlights nor reasons (they quote its words).

Served alone by ``attend focus dashboard --db PATH`` (the page at ``/``, the API at
``/v1/focus/...``), or at ``/focus`` by ``attend serve --focus-db PATH``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from attend.apps.focus.service import FocusService
from attend.data.validation import PAGE_POLICY, page_text

__all__ = ["render_dashboard"]

#: Sessions in the chart, decisions in the table, held messages listed, highlighted words per message.
CHART_SESSIONS, RECENT_DECISIONS, HELD_LISTED, WORDS_SHOWN = 20, 30, 50, 6

_WIDTH, _HEIGHT, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 980, 250, 56, 20, 20, 58
_PASS, _HOLD = "#d62728", "#1f77b4"

_STYLE = f"""
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"WenQuanYi Micro Hei",sans-serif;margin:24px;color:#222;
background:#fafafa}}
h1{{font-size:22px;margin:0 0 4px}} h2{{font-size:17px;margin:0 0 8px}} .muted{{color:#666;font-size:13px}}
section{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:14px 0}}
.row{{display:flex;gap:14px;flex-wrap:wrap}} .row section{{flex:1 1 420px;margin:0}}
table{{border-collapse:collapse;font-size:13px;width:100%}} td,th{{border-top:1px solid #eee;padding:5px 8px;
text-align:left;vertical-align:top}} th{{background:#f3f3f3}} td.num,th.num{{text-align:right;white-space:nowrap}}
td.nowrap{{white-space:nowrap}} dl{{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:0;
font-size:14px}} dt{{color:#666}} dd{{margin:0}}
.badge{{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;color:#fff}}
.badge.pass{{background:{_PASS}}} .badge.hold{{background:{_HOLD}}} .badge.fb{{background:#fff;color:#444;
border:1px solid #bbb;font-weight:400}} .state-running{{color:#0a7a2f;font-weight:600}}
mark{{color:#222;border-radius:3px;padding:0 3px;margin-right:3px}} .legend span{{margin-right:14px}}
.sw{{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}}
.empty{{font-size:15px;padding:18px 16px}} code{{background:#f0f0f0;padding:1px 4px;border-radius:3px}}
"""


def _e(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes too: safe in attributes)."""
    return page_text("" if value is None else str(value), quote=True)


def _parse(moment: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _when(moment: str | None, *, seconds: bool = False) -> str:
    """``2024-05-01 09:30 UTC`` (escaped); a value that is not an ISO time as it is; ``—`` for none."""
    if not moment:
        return "—"
    value = _parse(moment)
    if value is None:
        return _e(moment)
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-05:00 is past the last UTC date Python has: shown as written
        return _e(moment)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def _minutes(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:g} min"
    return f"{int(value // 60)} h {round(value % 60):d} min"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _float(value: Any, default: float = 0.0) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _state(session: dict[str, Any]) -> str:
    if session["stopped_at"] is None:
        return "<span class='state-running'>running</span>"
    if session["ends_at"] and session["stopped_at"] == session["ends_at"]:
        return f"ended at its planned end, {_when(session['stopped_at'])}"
    return f"stopped {_when(session['stopped_at'])}"


def _forgotten(message: dict[str, Any]) -> bool:
    """Stored text is never empty unless ``focus stop --forget`` blanked it."""
    return not message.get("text")


def _highlights(message: dict[str, Any]) -> str:
    """The top words as ``<mark>``, their background's opacity following the weight (the strongest fully opaque)."""
    if _forgotten(message):
        return "<span class='muted'>(forgotten)</span>"
    words = [(str(h.get("text", "")), _float(h.get("weight"))) for h in message.get("highlights") or []
             if isinstance(h, dict) and str(h.get("text", "")).strip()]  # fmt: skip
    words = sorted(words, key=lambda w: -w[1])[:WORDS_SHOWN]
    if not words:
        return "<span class='muted'>—</span>"
    top = max(w for _, w in words) or 1.0
    return "".join(
        f"<mark style='background:rgba(255,176,0,{0.15 + 0.85 * max(w, 0.0) / top:.2f})' "
        f"title='weight {w:.2f}'>{_e(text)}</mark>"
        for text, w in words
    )


def _reason(message: dict[str, Any]) -> str:
    if _forgotten(message):
        return "<span class='muted'>—</span>"
    reasons = message.get("reasons") or []
    return _e(reasons[0]) if reasons else "<span class='muted'>—</span>"


def _badges(message: dict[str, Any]) -> str:
    decision, feedback = str(message["decision"]), message.get("feedback")
    css = decision if decision in ("pass", "hold") else "fb"
    out = f"<span class='badge {css}'>{_e(decision)}</span>"
    if feedback == decision:
        out += " <span class='badge fb' title='your feedback agreed'>✓ you agreed</span>"
    elif feedback:
        out += f" <span class='badge fb' title='your feedback corrected it'>you: {_e(feedback)}</span>"
    return out


def _subject(message: dict[str, Any]) -> str:
    if _forgotten(message) and not message.get("subject"):
        return "<span class='muted'>(forgotten)</span>"
    return _e(message["subject"]) if message.get("subject") else "<span class='muted'>(no subject)</span>"


def _score(message: dict[str, Any]) -> str:
    components = message.get("components") or {}
    parts = [f"{name} {_float(components[name]):.2f}" for name in ("urgency", "relevance") if name in components]
    return f"<span title='{_e(', '.join(parts))}'>{_float(message['score']):.2f}</span>"


# --- pieces of the page -------------------------------------------------------------------------


def _session_box(session: dict[str, Any]) -> str:
    allow = ", ".join(session["allow"]) if session["allow"] else "—"
    end = _when(session["ends_at"]) if session["ends_at"] else "none (until stopped)"
    return (f"<section class='session'><h2>Session {session['id']}</h2><dl>"
            f"<dt>task</dt><dd class='task'>{_e(session['task'])}</dd>"
            f"<dt>state</dt><dd>{_state(session)}</dd>"
            f"<dt>started</dt><dd>{_when(session['started_at'])}</dd>"
            f"<dt>planned end</dt><dd>{end}</dd>"
            f"<dt>allowlist</dt><dd>{_e(allow)}</dd></dl></section>")  # fmt: skip


def _stats_box(session_stats: dict[str, Any] | None, all_stats: dict[str, Any]) -> str:
    rows = [
        ("minutes in focus", lambda s: _minutes(s["minutes_in_focus"])),
        ("passed (interruptions)", lambda s: str(s["passed"])),
        ("held", lambda s: str(s["held"])),
        ("interruptions per focus hour", lambda s: _rate(s["passed_per_focus_hour"])),
        ("held per focus hour", lambda s: _rate(s["held_per_focus_hour"])),
        ("feedback: agreed / corrected", lambda s: f"{s['feedback_agreed']} / {s['feedback_corrected']}"),
    ]
    head = "<tr><th></th>" + ("<th class='num'>this session</th>" if session_stats else "") + (
        f"<th class='num'>all {all_stats['sessions']} session(s)</th></tr>")  # fmt: skip
    body = "".join(
        f"<tr><td>{label}</td>" + (f"<td class='num'>{cell(session_stats)}</td>" if session_stats else "")
        + f"<td class='num'>{cell(all_stats)}</td></tr>"
        for label, cell in rows
    )  # fmt: skip
    return f"<section class='stats'><h2>Statistics</h2><table>{head}{body}</table></section>"


def _nice_step(top: int) -> int:
    """A 1-2-5 step (1, 2, 5, 10, 20, ...) that puts at most five gridlines under ``top``."""
    step, factors = 1, (2, 2.5, 2)
    i = 0
    while top / step > 5:
        step = round(step * factors[i % 3])
        i += 1
    return step


def _chart(bars: list[tuple[dict[str, Any], int, int]], current: int | None) -> str:
    """Inline SVG: for each session, a red bar of passed and a blue bar of held messages."""
    inner_w, inner_h = _WIDTH - _PAD_L - _PAD_R, _HEIGHT - _PAD_T - _PAD_B
    top = max([max(p, h) for _, p, h in bars] + [1])
    step = _nice_step(top)
    top = max(top, step * math.ceil(top / step))
    base = _PAD_T + inner_h

    def y(count: int) -> float:
        return base - count / top * inner_h

    parts = [f"<svg width='{_WIDTH}' height='{_HEIGHT}' viewBox='0 0 {_WIDTH} {_HEIGHT}' role='img' class='chart' "
             "aria-label='passed and held messages per session'>",
             f"<rect x='{_PAD_L}' y='{_PAD_T}' width='{inner_w}' height='{inner_h}' fill='#fff' "
             "stroke='#ccc'/>"]  # fmt: skip
    for value in range(0, top + 1, step):
        yy = y(value)
        if value:
            parts.append(f"<line x1='{_PAD_L}' x2='{_PAD_L + inner_w}' y1='{yy:.1f}' y2='{yy:.1f}' stroke='#eee'/>")
        parts.append(f"<text x='{_PAD_L - 6}' y='{yy + 4:.1f}' font-size='11' text-anchor='end' fill='#444'>"
                     f"{value}</text>")  # fmt: skip
    mid_y = _PAD_T + inner_h / 2
    parts.append(f"<text x='14' y='{mid_y:.1f}' font-size='12' text-anchor='middle' fill='#444' "
                 f"transform='rotate(-90 14 {mid_y:.1f})'>messages</text>")  # fmt: skip
    parts.append(f"<text x='{_PAD_L + inner_w / 2:.1f}' y='{_HEIGHT - 6}' font-size='12' text-anchor='middle' "
                 "fill='#444'>session (id, start date)</text>")  # fmt: skip
    slot = inner_w / max(len(bars), 1)
    width = max(min(slot * 0.36, 34.0), 2.0)
    for i, (session, passed, held) in enumerate(bars):
        center = _PAD_L + slot * (i + 0.5)
        label = f"session {session['id']}: {passed} passed, {held} held"
        for css, count, colour, x0 in (("bar-pass", passed, _PASS, center - width - 1),
                                       ("bar-hold", held, _HOLD, center + 1)):  # fmt: skip
            parts.append(f"<rect class='{css}' x='{x0:.1f}' y='{y(count):.1f}' width='{width:.1f}' "
                         f"height='{base - y(count):.1f}' fill='{colour}'><title>{_e(label)}</title>"
                         "</rect>")  # fmt: skip
        weight = " font-weight='700'" if session["id"] == current else ""
        start = _parse(session["started_at"])
        parts.append(f"<text x='{center:.1f}' y='{base + 15:.1f}' font-size='11' text-anchor='middle' fill='#222'"
                     f"{weight}>#{session['id']}</text>")  # fmt: skip
        if start is not None:
            parts.append(f"<text x='{center:.1f}' y='{base + 28:.1f}' font-size='10' text-anchor='middle' "
                         f"fill='#666'>{start.astimezone(UTC):%m-%d}</text>")  # fmt: skip
    if not any(p or h for _, p, h in bars):
        parts.append(f"<text x='{_PAD_L + inner_w / 2:.1f}' y='{mid_y:.1f}' font-size='13' text-anchor='middle' "
                     "fill='#888'>no messages yet</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _chart_box(service: FocusService, sessions: list[dict[str, Any]], current: int | None, at: str | None) -> str:
    shown = sessions[-CHART_SESSIONS:]
    bars = []
    for session in shown:
        stats = service.store.stats(session["id"], at=at)
        bars.append((session, int(stats["passed"]), int(stats["held"])))
    note = f"the last {len(shown)} of {len(sessions)} sessions" if len(sessions) > len(shown) else \
        f"{len(shown)} session(s)"  # fmt: skip
    return (f"<section class='chart-box'><h2>Passed vs held per session <span class='muted'>{note}</span></h2>"
            f"<p class='legend muted'><span><i class='sw' style='background:{_PASS}'></i>passed (interruptions)</span>"
            f"<span><i class='sw' style='background:{_HOLD}'></i>held for the digest</span></p>"
            f"{_chart(bars, current)}</section>")  # fmt: skip


def _decisions_box(messages: list[dict[str, Any]]) -> str:
    recent = messages[-RECENT_DECISIONS:][::-1]
    title = f"<h2>Recent decisions <span class='muted'>newest first, {len(recent)} of {len(messages)}</span></h2>"
    if not recent:
        return f"<section class='decisions'>{title}<p class='muted'>No messages in this session yet.</p></section>"
    rows = "".join(
        f"<tr class='decision-row' data-decision='{_e(m['decision'])}' data-id='{_e(m['id'])}'>"
        f"<td class='nowrap' title='sent {_when(m.get('time'), seconds=True)}'>{_when(m['received_at'], seconds=True)}"
        f"</td><td>{_e(m['sender']) or '—'}</td><td>{_subject(m)}</td><td class='nowrap'>{_badges(m)}</td>"
        f"<td class='num'>{_score(m)}</td><td>{_reason(m)}</td><td>{_highlights(m)}</td></tr>"
        for m in recent
    )  # fmt: skip
    return (f"<section class='decisions'>{title}<table><tr><th>received</th><th>sender</th><th>subject</th>"
            "<th>decision</th><th class='num'>score</th><th>first reason</th><th>words it rested on</th></tr>"
            f"{rows}</table></section>")  # fmt: skip


def _held_box(messages: list[dict[str, Any]]) -> str:
    held = sorted((m for m in messages if (m.get("feedback") or m["decision"]) == "hold"),
                  key=lambda m: (-_float(m["score"]), m["received_at"], m["id"]))  # fmt: skip
    title = (f"<h2>Held for later <span class='muted'>{len(held)} message(s), most pressing first; grouped by topic "
             "at <code>GET /v1/focus/digest</code></span></h2>")  # fmt: skip
    if not held:
        return f"<section class='held'>{title}<p class='muted'>Nothing held.</p></section>"
    rows = "".join(
        f"<tr class='held-row'><td class='num'>{_score(m)}</td><td>{_e(m['sender']) or '—'}</td>"
        f"<td>{_subject(m)}</td><td>{_highlights(m)}</td><td class='nowrap'>{_when(m['received_at'])}</td></tr>"
        for m in held[:HELD_LISTED]
    )
    more = f"<p class='muted'>and {len(held) - HELD_LISTED} more.</p>" if len(held) > HELD_LISTED else ""
    return (f"<section class='held'>{title}<table><tr><th class='num'>score</th><th>sender</th><th>subject</th>"
            f"<th>words it rested on</th><th>received</th></tr>{rows}</table>{more}</section>")  # fmt: skip


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"{PAGE_POLICY}<meta http-equiv='refresh' content='30'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>")  # fmt: skip


def render_dashboard(service: FocusService, *, title: str = "attend focus", at: str | None = None) -> str:
    """The whole page as one HTML string (inline CSS and SVG only; no script).

    Args:
        service: The focus database (its assistant is not loaded).
        title: The page's title and heading.
        at: "Now" as an ISO time, for the running session's minutes (default: the clock).
    """
    store = service.store
    session = store.active_session(at=at) or store.last_session()
    if session is None:
        return _page(title, "<section class='empty'><p><b>No focus session yet.</b> Start one with "
                            "<code>attend focus start --db PATH --task 'what you are working on'</code> (or "
                            "<code>POST /v1/focus/sessions</code>); messages sent to <code>attend focus ingest</code> "
                            "or <code>POST /v1/focus/messages</code> then show up here.</p></section>")  # fmt: skip
    sessions = store.sessions()
    messages = store.messages(session_id=session["id"])
    stats = store.stats(session["id"], at=at)
    all_stats = store.stats(at=at)
    running = session["stopped_at"] is None
    head = (f"<p class='muted'>{'Focus session running' if running else 'No session running; the last one'}: "
            f"{stats['passed']} passed, {stats['held']} held. {all_stats['sessions']} session(s) in this database. "
            "This page reloads every 30 s.</p>")  # fmt: skip
    body = (head + f"<div class='row'>{_session_box(session)}{_stats_box(stats, all_stats)}</div>"
            + _chart_box(service, sessions, session["id"], at) + _decisions_box(messages)
            + _held_box(messages))  # fmt: skip
    return _page(title, body)
