"""The monitor loop: events -> scores -> store -> surge detection -> alerts (log line, table, webhook).

:class:`Monitor` is shared by ``attend monitor run`` (a file, a growing file, stdin) and the HTTP
route (:func:`attend.apps.monitor.router.monitor_router`). Detection is recomputed from the stored
counts rather than kept in memory, so a process that is killed and restarted, or two replays of
the same file, reach exactly the same alerts; the alerts table's key makes each one stored (and
announced) once.

A window is judged once it is *closed*: once an event at or after its end has been stored (the
stream's watermark), or, for a finite input, when the input ends. Late events still count: the next
detection sees them, and a window that only then becomes a surge is alerted then. An event dated
more than :data:`FUTURE_TOLERANCE` after the wall clock counts in its own window but moves no
watermark: one mistyped year had closed every window of every topic at once.

Events whose text the sentiment model cannot read (every piece ``[UNK]``) are stored, flagged, and
counted in no window (see :meth:`MonitorStore.window_counts`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from attend.apps.monitor.detect import DetectionSettings, WindowStat, detect, window_start
from attend.apps.monitor.events import Event, format_time
from attend.apps.monitor.scoring import Scorer
from attend.apps.monitor.store import MonitorStore, StoredEvent
from attend.data.readers import DataError
from attend.stopping import sigterm_as_ctrl_c

__all__ = ["FUTURE_TOLERANCE", "IngestResult", "Monitor", "MonitorSettings", "RunSummary", "post_webhook", "run_events"]

log = logging.getLogger("attend.monitor")

#: Seconds an event may be dated after the wall clock and still close windows (move the watermark).
#: A day: more than a skewed clock or a local time taken as UTC (at most 14 h) puts an event ahead,
#: less than a mistyped year, month or (mostly) day does. An event further ahead is stored and
#: counted in its window, but closes none: it had made every window of every topic count as closed,
#: so a window still filling was judged (and alerted) early, and every later batch counted as late.
FUTURE_TOLERANCE = 86_400


@dataclass(frozen=True)
class MonitorSettings:
    """Everything about a monitor besides its models and database.

    Attributes:
        detection: Window length and surge thresholds.
        examples: Most negative texts kept with each alert.
        webhook: URL to POST each new alert to (JSON), or None.
        webhook_timeout: Seconds before a webhook call is given up.
        webhook_attempts: Deliveries tried per alert at consecutive detections; after that, a run
            tries it again at a later detection once :data:`WEBHOOK_BACKOFF` seconds have passed
            (doubling after each refusal, up to :data:`WEBHOOK_BACKOFF_MAX`), and the next run
            tries again at once.
        max_events: Most events in one HTTP request.
        max_chars: Longest text accepted over HTTP.
    """

    detection: DetectionSettings = field(default_factory=DetectionSettings)
    examples: int = 3
    webhook: str | None = None
    webhook_timeout: float = 5.0
    webhook_attempts: int = 3
    max_events: int = 1000
    max_chars: int = 20_000

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ValueError(f"--examples {self.examples} must be >= 0")
        if self.webhook is not None and _url_problem(self.webhook):
            raise ValueError(f"--webhook {self.webhook!r}: {_url_problem(self.webhook)}")
        if not self.webhook_timeout > 0:  # NaN too
            raise ValueError(f"--webhook-timeout {self.webhook_timeout}: must be > 0 seconds")
        for name in ("webhook_attempts", "max_events", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass
class IngestResult:
    """What one batch did."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    conflicts: int = 0
    times_without_zone: int = 0
    #: Alerts this batch withdrew: their windows, judged again with its events, are no surge now.
    withdrawn: list[dict[str, Any]] = field(default_factory=list)
    #: Events stored whose text the sentiment model cannot read (all ``[UNK]``): counted in no window.
    unreadable: int = 0
    first_unreadable: str | None = None  # its id
    #: Events stored dated more than :data:`FUTURE_TOLERANCE` after the clock: they close no window.
    future: int = 0
    first_future: tuple[str, str] | None = None  # its id and time

    def to_dict(self) -> dict[str, Any]:
        return {"received": self.received, "stored": self.stored, "duplicates": self.duplicates,
                "conflicts": self.conflicts, "times_without_zone": self.times_without_zone,
                "unreadable": self.unreadable, "future": self.future,
                "alerts": self.alerts, "withdrawn": self.withdrawn}  # fmt: skip


@dataclass
class RunSummary:
    """What a whole run did."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    conflicts: int = 0
    times_without_zone: int = 0
    #: Alerts the webhook could not take after every attempt (kept in the database).
    undelivered: int = 0
    #: Events read but not stored: a second stop came while the batch in hand was being stored.
    unstored: int = 0
    #: Alerts withdrawn in the run (their windows, judged again, are no surge now).
    withdrawn: int = 0
    #: Withdrawn alerts reinstated in the run (their windows, judged again, are a surge again).
    reinstated: int = 0
    #: Events stored that the sentiment model cannot read (kept, counted in no window), and the first's id.
    unreadable: int = 0
    first_unreadable: str | None = None
    #: Events stored dated more than :data:`FUTURE_TOLERANCE` after the clock (they close no window),
    #: and the first's id and time.
    future: int = 0
    first_future: tuple[str, str] | None = None


def _url_problem(url: str) -> str | None:
    """What makes ``url`` no address to POST to (no host: ``http://`` had been taken, then failed at
    each alert after the whole stream was scored), or None."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "give an http:// or https:// URL"
    if not parts.hostname:
        return "no host in it; give e.g. http://localhost:8080/hook"
    return None


#: The ``type`` of a webhook POST: an alert raised, and one withdrawn after it was sent.
ALERT_TYPE, WITHDRAWN_TYPE = "attend.monitor.alert", "attend.monitor.alert.withdrawn"


def post_webhook(url: str, alert: dict[str, Any], *, timeout: float, kind: str = ALERT_TYPE) -> bool:
    """POST one alert as JSON (``{"type": kind, "alert": ...}``); True on a 2xx answer. Never
    raises: a failure is logged and reported."""
    try:
        import httpx  # a dev dependency of attend today; without it alerts are still stored and logged
    except ImportError:
        log.error("webhook %s: httpx is not installed (pip install httpx); alert kept undelivered", url)
        return False
    try:
        response = httpx.post(url, json={"type": kind, "alert": alert}, timeout=timeout)
    except httpx.HTTPError as exc:
        log.error("webhook %s failed for alert %s %s: %s", url, alert["topic"], alert["window_start"], exc)
        return False
    if not response.is_success:
        log.error("webhook %s answered %s for alert %s %s", url, response.status_code, alert["topic"],
                  alert["window_start"])  # fmt: skip
        return False
    return True


def describe(alert: dict[str, Any]) -> str:
    """One log line per alert: where, when, how strong, and the most negative text with its words."""
    line = (f"ALERT topic={alert['topic']!r} window {alert['window_start']}..{alert['window_end']}: negative share "
            f"{alert['share']:.0%} vs baseline {alert['baseline']:.0%} ({alert['lift']:+.0%}, z={alert['score']:.1f}), "
            f"{alert['negatives']}/{alert['volume']} events")  # fmt: skip
    withdrawn = alert.get("withdrawn")
    if withdrawn:
        line = (f"WITHDRAWN {withdrawn['at']}: {withdrawn['negatives']}/{withdrawn['volume']} events now, "
                f"{withdrawn['share']:.0%} negative, no surge (raised as: {line})")  # fmt: skip
    if alert["examples"]:
        first = alert["examples"][0]
        words = ", ".join(w["word"] for w in first["words"])
        line += f"; most negative: {first['text']!r} [{words}]"
    return line


def _topic_change(then: list[str] | None, now: list[str] | None) -> str:
    """How this run would give topics to events that come without one, against how the database's were."""
    if then is None:
        return ("it was run without a topic model (an event without a topic goes under 'all'), and this run gives "
                "such events a topic model's topics")  # fmt: skip
    had = f"a topic model's topics ({', '.join(then[:6])}{', ...' if len(then) > 6 else ''})"
    if now is None:
        return (f"its events without a topic were given {had}, and this run has no topic model (--topic-model; "
                "attend serve: --monitor-topic-model), so they would go under 'all'")  # fmt: skip
    return f"its events without a topic were given {had}, and this run's topic model has other labels"


class Monitor:
    """Scores events, stores them, and turns surges into alerts.

    Thread-safe: one lock serialises batches, so the HTTP route can call :meth:`ingest` from
    several worker threads.
    """

    def __init__(self, store: MonitorStore, scorer: Scorer, settings: MonitorSettings | None = None) -> None:
        self.store = store
        self.scorer = scorer
        self.settings = settings or MonitorSettings()
        self._lock = threading.Lock()
        self._judged_until: int | None = None  # windows starting before this are judged already
        #: Per topic, the earliest window that new events reached since it was last judged: every
        #: window from there on has new counts or a new baseline (the EWMA runs through it).
        self._moved_from: dict[str, int] = {}
        self._tries: Counter[tuple[str, str]] = Counter()  # webhook deliveries tried in this run, per alert
        self._retry_at: dict[tuple[str, str], float] = {}  # when an alert tried webhook_attempts times may go again
        self.clock: Callable[[], float] = time.monotonic
        #: The wall clock (epoch seconds) that tells an event dated far ahead (:data:`FUTURE_TOLERANCE`).
        self.now: Callable[[], float] = time.time
        #: Alerts withdrawn by this monitor so far: later events made their windows calm.
        self.withdrawals = 0
        #: Withdrawn alerts this monitor reinstated: later events made their windows a surge again.
        self.reinstated = 0
        saved = store.get_meta("settings") or {}
        if saved.get("negative_label") not in (None, scorer.negative_label):
            raise ValueError(
                f"--db {store.where}: its events were scored with the negative label {saved['negative_label']!r}, "
                f"not {scorer.negative_label!r}: their alerts would mix the two; give --negative-label "
                f"{saved['negative_label']}, or a new --db"
            )
        # The topics of events that come without one: a topic model's labels, or None (all under "all").
        topic_model = getattr(scorer, "topic_model", None)  # a scorer of its own may have none
        topics = None if topic_model is None else list(topic_model.labels)
        if "topic_model" in saved and saved["topic_model"] != topics:  # (a database from before: not recorded)
            raise ValueError(f"--db {store.where}: {_topic_change(saved['topic_model'], topics)}, so one topic's "
                             "events would be split between the two and judged apart; give the same topic model, "
                             "or a new --db")  # fmt: skip
        # Another sentiment model than the last run's (retrained, say): its scores join the same
        # baselines, which is allowed, and said (it had gone unrecorded).
        sentiment = getattr(scorer, "sentiment", None)
        weights = (getattr(sentiment, "config", None) or {}).get("weights_sha256")
        #: What changed in the sentiment model since the database's last run, in words, or None.
        self.model_changed: str | None = None
        if weights is not None and saved.get("sentiment_weights") not in (None, weights):
            self.model_changed = (f"--db {store.where}: its events so far were scored by another sentiment model "
                                  f"(weights {saved['sentiment_weights'][:12]}, now {weights[:12]}); the new scores "
                                  "join the same baselines: a new --db keeps the two models apart")  # fmt: skip
            log.info("%s", self.model_changed)  # a note: shown unless --quiet (alert lines only)
        # Written with the first batch, not here: a run that failed before reading an event (a bad
        # header) had made its --window and --z the database's, which later runs and the service use.
        self._meta: dict[str, Any] | None = {
            "detection": self.settings.detection.to_dict(), "negative_label": scorer.negative_label,
            "method": scorer.method, "topic_model": topics,
            "sentiment_weights": weights or saved.get("sentiment_weights"),
        }  # fmt: skip

    def ingest(self, events: Sequence[Event]) -> IngestResult:
        """Score and store a batch (one transaction), then judge any window the batch closed."""
        with self._lock:
            if self._meta is not None and events:  # this run's thresholds become the database's
                self.store.set_meta("settings", self._meta)
                self._meta = None
            result = IngestResult(received=len(events), times_without_zone=sum(not e.zoned for e in events))
            unique: dict[str, Event] = {}
            for event in events:
                kept = unique.setdefault(event.id, event)
                result.conflicts += self._conflict(kept, event.text)
            stored = self.store.stored_texts(list(unique))
            for event_id, text in stored.items():
                result.conflicts += self._conflict(unique[event_id], text)
            present = set(stored)
            fresh = [e for i, e in unique.items() if i not in present]
            # Events dated beyond this are counted in their windows but close none (FUTURE_TOLERANCE).
            until = int(self.now()) + FUTURE_TOLERANCE
            counted: list[StoredEvent] = []  # the new events the windows count: those the model could read
            if fresh:
                scored = self.scorer.score(fresh)
                result.stored = self.store.add_events(scored)
                counted = [e for e in scored if not e.unreadable]
                unreadable = [e for e in scored if e.unreadable]
                future = [e for e in scored if e.ts > until]
                result.unreadable, result.future = len(unreadable), len(future)
                result.first_unreadable = unreadable[0].id if unreadable else None
                result.first_future = (future[0].id, future[0].time) if future else None
                window = self.settings.detection.window
                for event in counted:  # an unreadable event changes no window's counts
                    start = window_start(event.ts, window)
                    self._moved_from[event.topic] = min(start, self._moved_from.get(event.topic, start))
            result.duplicates = result.received - result.stored
            watermark = self.store.watermark(until=until)
            if watermark is not None:
                closed_before = window_start(watermark, self.settings.detection.window)
                # Judged again when time moves on, and when a stored event is late: it changes a window
                # judged already (before, one event dated far ahead moved the watermark there and no
                # window was judged again until a restart). Not after every batch: each judgement
                # reads every window, which made a replay's ingest quadratic.
                late = bool(result.stored) and self._judged_until is not None and any(
                    e.ts < self._judged_until for e in counted
                )
                if self._judged_until is None or closed_before > self._judged_until or late:
                    result.alerts, result.withdrawn = self._judge(closed_before)
            return result

    @staticmethod
    def _conflict(event: Event, kept_text: str) -> bool:
        """An id seen again with another text: the first is kept, and the run says so."""
        if event.text == kept_text:
            return False
        log.warning("event id %r was seen again with a different text; the first one is kept", event.id)
        return True

    def undelivered(self) -> int:
        """Alerts that the webhook has not taken and will not be retried in this run."""
        if not self.settings.webhook:
            return 0
        return len(self.store.alerts(pending_only=True, window=self.settings.detection.window))

    def finish(self) -> list[dict[str, Any]]:
        """The input has ended: judge every window, the last (possibly partial) one included; the
        new alerts (withdrawn ones are counted in :attr:`withdrawals`)."""
        with self._lock:
            return self._judge(None)[0]

    def series(self) -> dict[str, list[WindowStat]]:
        """Every topic's windows, judged with this monitor's settings."""
        return detect(self.store.window_counts(self.settings.detection.window), self.settings.detection)

    def _judge(self, closed_before: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Raise an alert for every closed window that is a surge, and withdraw (or reinstate) the
        alerts of closed windows that later events made calm (or a surge again): the new alerts,
        and the withdrawn ones."""
        detection = self.settings.detection
        new_alerts, withdrawn = [], []
        raised = self.store.alert_windows(detection.window)  # (topic, start) -> (withdrawn, volume, negatives)
        for topic, stats in self.series().items():
            moved_from = self._moved_from.get(topic)
            first_open: int | None = None
            for stat in stats:
                if closed_before is not None and stat.end > closed_before:
                    first_open = stat.start if first_open is None else first_open
                    continue  # still open: the watermark has not passed its end
                key = (stat.topic, stat.start)
                # Judged again only when events changed the window or a window before it (its
                # baseline): another run's thresholds (--z, --min-volume) do not rewrite alerts
                # the events still stand behind.
                if key in raised:
                    was_withdrawn, volume, negatives = raised[key]
                    moved = (volume, negatives) != (stat.volume, stat.negatives) or (
                        moved_from is not None and stat.start >= moved_from
                    )
                    if moved:
                        self._judge_again(stat, was_withdrawn, withdrawn)
                    continue
                if not stat.surge:
                    continue
                alert = self._alert(stat)
                if self.store.add_alert(alert):
                    stored = self._stored(stat)
                    log.warning(describe(stored))
                    new_alerts.append(stored)
            # The windows judged are up to date; what new events moved is left from the first open one on.
            if moved_from is not None and first_open is not None:
                self._moved_from[topic] = max(moved_from, first_open)
            else:
                self._moved_from.pop(topic, None)
        self._judged_until = closed_before
        self._deliver()
        return new_alerts, withdrawn

    def _judge_again(self, stat: WindowStat, was_withdrawn: bool, withdrawn: list[dict[str, Any]]) -> None:
        """An alerted window whose counts or baseline events have changed: withdrawn if it is calm
        now, reinstated if it is a surge again, and its numbers brought up to date either way."""
        window = self.settings.detection.window
        if not stat.surge:
            numbers = {"volume": stat.volume, "negatives": stat.negatives, "share": stat.share, "score": stat.z}
            self.store.withdraw(stat.topic, window, stat.start, numbers, again=was_withdrawn)
            if not was_withdrawn:
                shown = self._stored(stat)
                log.warning(describe(shown))
                withdrawn.append(shown)
                self.withdrawals += 1
                self._take_back(shown)
            return
        self.store.restate(self._alert(stat), resend=was_withdrawn)  # a withdrawn one is news again
        if was_withdrawn:
            key = (stat.topic, format_time(stat.start))
            self._tries.pop(key, None)  # its tries start again, in this run too
            self._retry_at.pop(key, None)
            log.warning(f"REINSTATED (a surge again): {describe(self._stored(stat))}")
            self.reinstated += 1

    def _stored(self, stat: WindowStat) -> dict[str, Any]:
        """The alert stored for ``stat``'s window, as :meth:`MonitorStore.alerts` shows it."""
        alerts = self.store.alerts(topic=stat.topic, window=self.settings.detection.window)
        return next(a for a in alerts if a["window_start"] == format_time(stat.start))

    def _alert(self, stat: WindowStat) -> dict[str, Any]:
        examples = self.store.most_negative(stat.topic, stat.start, stat.end, self.settings.examples)
        return {
            "topic": stat.topic, "window_seconds": self.settings.detection.window, "window_start": stat.start,
            "window_end": stat.end, "score": float(stat.z or 0.0), "share": stat.share,
            "baseline": float(stat.baseline or 0.0), "baseline_sd": float(stat.baseline_sd or 0.0),
            "volume": stat.volume, "negatives": stat.negatives,
            "examples": [e.summary() for e in examples if e.negative] or [e.summary() for e in examples[:1]],
        }  # fmt: skip

    def _take_back(self, alert: dict[str, Any]) -> None:
        """Tell the webhook that an alert it was sent is withdrawn (``type``
        :data:`WITHDRAWN_TYPE`; the alert holds its ``withdrawn`` numbers). Best effort: tried up
        to ``webhook_attempts`` times now, logged if it fails, not kept for a later run."""
        if not self.settings.webhook or not alert.get("notified_at"):
            return  # never sent: nothing to take back
        for _ in range(self.settings.webhook_attempts):
            if post_webhook(self.settings.webhook, alert, timeout=self.settings.webhook_timeout, kind=WITHDRAWN_TYPE):
                return

    def _deliver(self) -> None:
        """POST every alert not yet delivered (at least once: a crash between storing and posting
        leaves the alert pending, and the next run delivers it)."""
        if not self.settings.webhook:
            return
        for alert in self.store.alerts(pending_only=True, window=self.settings.detection.window):
            key = (alert["topic"], alert["window_start"])
            # Past its attempts, an alert waits out a backoff: a replay closing window after window
            # does not post it at each, and a --follow run of days still delivers it once the
            # receiver is back (it had been given up on until the process restarted).
            if self._tries[key] >= self.settings.webhook_attempts and self.clock() < self._retry_at.get(key, 0.0):
                continue
            self._tries[key] += 1
            ok = post_webhook(self.settings.webhook, alert, timeout=self.settings.webhook_timeout)
            self.store.mark_notified(alert, ok=ok)
            beyond = self._tries[key] - self.settings.webhook_attempts
            if not ok and beyond >= 0:
                wait = min(WEBHOOK_BACKOFF * 2**beyond, WEBHOOK_BACKOFF_MAX)
                self._retry_at[key] = self.clock() + wait
                if beyond == 0:
                    log.error("webhook %s refused the alert of %s %s %d times; it is tried again at a later "
                              "detection after %d s", self.settings.webhook, alert["topic"], alert["window_start"],
                              self._tries[key], wait)  # fmt: skip


#: Seconds an alert the webhook refused ``webhook_attempts`` times waits before the next try (then
#: doubling at each refusal, up to :data:`WEBHOOK_BACKOFF_MAX`).
WEBHOOK_BACKOFF = 60.0
WEBHOOK_BACKOFF_MAX = 3600.0

#: The signals that stop a run the way Ctrl-C does: SIGTERM is how systemd, Docker and Kubernetes
#: stop a service (it had ended a --follow run at once, exit 143, without its summary).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


@contextlib.contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) or SIGTERM that arrives inside the block until the block is done.

    A batch's events and alerts are committed inside :meth:`Monitor.ingest`; a Ctrl-C between that
    commit and the summary's count left the run reporting fewer events stored than the database
    held (seen under load). Off the main thread, where signals cannot be handled, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {number: signal.signal(number, lambda got, _frame: held.append(got)) for number in _STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if held:
        raise KeyboardInterrupt


def run_events(
    monitor: Monitor,
    events: Iterable[Event | None],
    *,
    batch_size: int = 64,
    max_rate: float | None = None,
    finite: bool = True,
    on_batch: Callable[[IngestResult], None] | None = None,
) -> RunSummary:
    """Feed a stream of events to the monitor in batches until it ends, Ctrl-C or SIGTERM.

    Args:
        monitor: The monitor.
        events: Events; a ``None`` means "the source is idle", which flushes the partial batch.
        batch_size: Events per transaction.
        max_rate: Cap on events per second (None: as fast as scoring goes); paces a replay like
            a live stream and keeps a shared machine responsive.
        finite: The input ends for good (a file, stdin): judge the last windows at the end.
        on_batch: Called after each committed batch (progress display).
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be >= 1")
    if max_rate is not None and max_rate <= 0:
        raise ValueError(f"--max-rate {max_rate} must be > 0")
    summary = RunSummary()
    batch: list[Event] = []
    started = time.monotonic()

    def flush() -> None:
        if not batch:
            return
        with _ctrl_c_after():  # a batch committed is a batch counted
            result = monitor.ingest(batch)
            summary.stored += result.stored
            summary.duplicates += result.duplicates
            summary.conflicts += result.conflicts
            summary.times_without_zone += result.times_without_zone
            summary.unreadable += result.unreadable
            summary.first_unreadable = summary.first_unreadable or result.first_unreadable
            summary.future += result.future
            summary.first_future = summary.first_future or result.first_future
            summary.alerts.extend(result.alerts)
            batch.clear()
        if on_batch is not None:
            on_batch(result)

    try:
        with sigterm_as_ctrl_c():  # how systemd, Docker and Kubernetes stop a --follow run
            try:
                for event in events:
                    if event is None:
                        flush()
                        continue
                    batch.append(event)
                    summary.read += 1
                    if len(batch) >= batch_size:
                        flush()
                        if max_rate is not None:
                            ahead = summary.read / max_rate - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
            except DataError as exc:  # a bad line in a stream (a file is checked whole before this)
                flush()  # the events before it are good: stored, and said so
                if not summary.stored:
                    raise
                raise DataError(f"{exc} (the {summary.stored} new event(s) before it are stored; a rerun of the "
                                "fixed input skips them)") from None  # fmt: skip
            flush()
            if finite:
                summary.alerts.extend(monitor.finish())
    except KeyboardInterrupt:
        # The events read and not yet stored are stored now: stdin cannot give them again (they had
        # been dropped, and "rerun to continue" could not bring them back). A second stop while they
        # are scored is held until they are committed (_ctrl_c_after), then ends the run.
        summary.interrupted = True
        with contextlib.suppress(KeyboardInterrupt):
            flush()
        summary.unstored = len(batch)  # a second stop before the batch's commit began: not stored
    summary.undelivered = monitor.undelivered()
    summary.withdrawn = monitor.withdrawals
    summary.reinstated = monitor.reinstated
    return summary
