"""``POST /v1/monitor/events``: feed the monitor over HTTP, as an APIRouter to mount in a FastAPI app.

The body is a JSON list of events (``id``, ``time``, ``text``, optional ``topic`` / ``source``),
validated by pydantic: a bad event is a 422 naming its index and field, never a 5xx. The answer
says how many were new, how many were duplicates (already stored ids), and the alerts the batch
raised, and how many were unreadable or dated far ahead. HTTP input is never "finished", so a
window is judged once a later event closes it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from sqlalchemy.exc import SQLAlchemyError

from attend.apps.monitor.detect import DetectionSettings
from attend.apps.monitor.events import MAX_KEY_CHARS, Event, has_zone, parse_time
from attend.apps.monitor.monitor import Monitor, MonitorSettings
from attend.apps.monitor.scoring import Scorer, find_negative_label, load_text_classifier
from attend.apps.monitor.store import MonitorStore, open_store
from attend.apps.sqlstore import named_as, public_name
from attend.data.validation import text_problem
from attend.explain import available_methods
from attend.runtime import TextClassifier
from attend.serve import Routes
from attend.serve.routes import error_response
from attend.serve.schemas import id_text

__all__ = ["EventIn", "IngestResponse", "monitor_router", "served_monitor_router"]


class EventIn(BaseModel):
    """One event of the stream."""

    # Other fields (a log shipper's) are not read, as a file's are not, and the answer names them
    # (ignored_fields): a misspelt "topc" had filed the event under "all" without a word.
    model_config = ConfigDict(extra="allow")

    id: StrictStr | StrictInt = Field(description="Unique id; an id already stored is skipped (idempotent).")
    time: str = Field(description='ISO 8601, e.g. "2020-03-01T14:30:00Z"; no zone means UTC (and is counted).')
    text: str = Field(min_length=1, description="The text to score.")
    topic: str | None = Field(default=None, max_length=MAX_KEY_CHARS, description="Its topic, if known.")
    source: str | None = Field(default=None, max_length=MAX_KEY_CHARS, description="Where it came from.")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | int) -> str:
        return id_text(value, MAX_KEY_CHARS)

    @field_validator("topic", "source")
    @classmethod
    def _trimmed(cls, value: str | None) -> str | None:
        """Spaces around a topic or source dropped, and a blank one absent, as a file's are."""
        return (value.strip() or None) if value is not None else None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time(value, where="time")
        return value

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        problem = text_problem(value)
        if problem is not None:
            raise ValueError("text is empty" if problem.startswith("is an empty") else f"text {problem}")
        return value

    def to_event(self) -> Event:
        return Event(id=str(self.id), time=parse_time(self.time), text=self.text, topic=self.topic or None,
                     source=self.source or None, zoned=has_zone(self.time))  # fmt: skip


class IngestResponse(BaseModel):
    """What the batch did."""

    received: int
    stored: int
    duplicates: int
    conflicts: int = Field(description="Ids seen again with a different text (the first text is kept).")
    times_without_zone: int = Field(description="Event times without a zone, taken as UTC.")
    unreadable: int = Field(description="Events stored whose text the sentiment model cannot read (every piece "
                            "[UNK]): kept, flagged, and counted in no window (their scores are a guess).")
    future: int = Field(description="Events stored dated more than a day after the server's clock (a mistyped "
                        "date?): counted in their windows, but they close none.")
    alerts: list[dict[str, Any]]
    withdrawn: list[dict[str, Any]] = Field(
        default_factory=list, description="Alerts withdrawn: this batch's events made their windows calm."
    )
    ignored_fields: list[str] = Field(
        default_factory=list, description="Fields of the events that are not read (a misspelt topic is one)."
    )


def _error(status: int, message: str) -> JSONResponse:
    return error_response(status, "validation", message)


def monitor_router(
    db: str | os.PathLike[str] | MonitorStore,
    sentiment: TextClassifier,
    settings: MonitorSettings | None = None,
    *,
    topic_model: TextClassifier | None = None,
    negative_label: str | None = None,
    explain_method: str = "grad_attention",
    words: int = 4,
    detection_info: dict[str, Any] | None = None,
) -> APIRouter:
    """A router with ``POST /v1/monitor/events`` writing to ``db`` (path, URL or open store).

    The database is opened and the negative label checked here, so a misconfigured service fails
    at start-up rather than on its first request. Each request judges with the window and
    thresholds the database was last run with: an ``attend monitor run`` with others since the
    service started replaces them (they had been read once, at start-up, and the service went on
    raising alerts of the old window beside the run's). ``detection_info``, if given, is kept
    equal to them (``GET /v1/model`` shows it).
    """
    return _monitor_routes(db, sentiment, settings, topic_model=topic_model, negative_label=negative_label,
                           explain_method=explain_method, words=words, detection_info=detection_info)[0]


def _monitor_routes(
    db: str | os.PathLike[str] | MonitorStore,
    sentiment: TextClassifier,
    settings: MonitorSettings | None,
    *,
    topic_model: TextClassifier | None,
    negative_label: str | None,
    detection_info: dict[str, Any] | None,
    explain_method: str = "grad_attention",
    words: int = 4,
) -> tuple[APIRouter, Callable[[], None]]:
    """:func:`monitor_router`, and a function that sets ``detection_info`` to what the database holds
    now (on the store the routes use; as it was where the database cannot be read)."""
    settings = settings or MonitorSettings()
    scorer = Scorer(sentiment, find_negative_label(sentiment, negative_label), topic_model=topic_model,
                    method=explain_method, words=words)  # fmt: skip
    store = db if isinstance(db, MonitorStore) else open_store(db)  # after the checks: no empty file on error
    current = {"monitor": Monitor(store, scorer, settings)}
    swapping = threading.Lock()

    def ingest_now(events: list[Event]) -> Any:
        """Ingest with the detection settings the database holds now. One batch at a time, as the
        monitor's own lock has it: a request still on the old monitor and one on its replacement
        (a lock of its own) would otherwise judge at once."""
        with swapping:
            saved = store.saved_detection()
            monitor = current["monitor"]
            if saved and saved != monitor.settings.detection.to_dict():
                changed = dataclasses.replace(monitor.settings, detection=DetectionSettings(**saved))
                monitor = current["monitor"] = Monitor(store, scorer, changed)
                if detection_info is not None:
                    detection_info.clear()
                    detection_info.update(changed.detection.to_dict())
            return monitor.ingest(events)

    router = APIRouter(tags=["monitor"])

    @router.post("/v1/monitor/events", response_model=IngestResponse,
                 responses={422: {"description": "invalid event, or too many"}})
    async def ingest(events: Annotated[list[EventIn], Body()]) -> Any:
        """Score, store and judge a batch of events (a JSON list)."""
        if not events:
            return _error(422, "body: give at least one event")
        if len(events) > settings.max_events:
            # 422, as too many texts or messages are elsewhere (413 is a body over the byte limit)
            return _error(422, f"body: {len(events)} events, more than the limit of {settings.max_events}")
        for i, event in enumerate(events):
            if len(event.text) > settings.max_chars:
                return _error(422, f"{i}.text: {len(event.text)} characters, over the limit of {settings.max_chars}")
        result = await run_in_threadpool(ingest_now, [e.to_event() for e in events])
        return result.to_dict() | {"ignored_fields": sorted({key for e in events for key in e.model_extra or {}})}

    def refresh() -> None:  # a run since the last request changed them: GET /v1/model shows them at once
        if detection_info is None:
            return
        try:
            saved = store.saved_detection()
        except SQLAlchemyError:  # unreadable for now: the figures it was last read with stand
            return
        if saved:
            detection_info.update(DetectionSettings(**saved).to_dict())

    return router, refresh


#: The explanation methods the service highlights an event's words with, the first the model offers.
SERVED_METHODS = ("grad_attention", "rollout", "attention")


def served_monitor_router(runtime: TextClassifier | None, *, db: str, negative_label: str | None = None,
                          topic_model: str | None = None) -> Routes:  # fmt: skip
    """The routes ``attend serve MODEL --monitor-db DB`` mounts: the served model scores the events.
    ``GET /v1/model`` lists the app and its own limits (the service's --max-texts/--max-chars bound
    the model's routes)."""
    if runtime is None:
        raise ValueError("--monitor-db scores events with the served sentiment model: give its MODEL_DIR")
    if getattr(runtime, "task", None) != "classification":
        where = f" ({runtime.path})" if getattr(runtime, "path", None) else ""
        raise ValueError(f"--monitor-db scores events with a text classifier; the served model{where} is a "
                         f"{getattr(runtime, 'task', 'other')} model")  # fmt: skip
    topics_from = load_text_classifier(topic_model, "--monitor-topic-model") if topic_model is not None else None
    with named_as("--monitor-db"):
        settings = MonitorSettings(detection=_saved_detection(db))  # the service has no options of its own for them
        judged = settings.detection.to_dict()  # the window and thresholds its alerts are judged with, kept current
        # The highlighted words come from the first method the served model offers (an ONNX or int8
        # model has no gradients: grad_attention had made every event a 500); none, no words.
        offered = available_methods(runtime)
        method = next((name for name in SERVED_METHODS if name in offered), None)
        router, refresh = _monitor_routes(db, runtime, settings, negative_label=negative_label,
                                          topic_model=topics_from, detection_info=judged,
                                          explain_method=method or SERVED_METHODS[0],
                                          words=4 if method else 0)  # fmt: skip
    limits = {"max_events": settings.max_events, "max_chars": settings.max_chars}
    # the file's name alone: a client is told no folder of the server's (as data paths in /v1/model)
    return Routes(router=router, refresh=refresh, info={"apps": {"monitor": {"db": public_name(db), "limits": limits,
                                                            "detection": judged, "explain_method": method}}})


def _saved_detection(db: str) -> DetectionSettings:
    """The window and thresholds ``db`` was last run with (``attend monitor run``), or the defaults
    for a new database: a service that judged with its own would rewrite them."""
    try:
        store = open_store(db, create=False)
    except ValueError:
        return DetectionSettings()
    try:
        saved = store.saved_detection()
    finally:
        store.engine.dispose()
    return DetectionSettings(**saved)
