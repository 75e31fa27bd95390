"""The focus assistant over HTTP: ``/v1/focus/...`` and the ``/focus`` dashboard page.

Mounted by ``attend serve MODEL_DIR --focus-db PATH``, and served alone, with the dashboard at
``/``, by ``attend focus dashboard`` (:func:`serve_dashboard`). Routes:

- ``POST /v1/focus/messages`` ``{"messages": [{"text", "id"?, "sender"?, "subject"?, "time"?,
  "channel"?}, ...]}``: triage them in the running session, store and return the decisions
  (409 when no session runs);
- ``POST /v1/focus/triage`` ``{"task", "allow"?, "messages"}``: stateless triage;
- ``POST /v1/focus/sessions`` ``{"task", "allow"?, "until"?, "minutes"?}``: start (409 when one runs);
- ``POST /v1/focus/stop`` ``{"forget"?}``; ``GET /v1/focus/status``;
- ``POST /v1/focus/feedback`` ``{"id", "label": "pass"|"hold"}`` (404 for an unknown id);
- ``GET /v1/focus/digest?session=&limit=`` (404 for an unknown session); ``GET /focus``: the dashboard (HTML).

Handlers are plain ``def`` (FastAPI runs them in worker threads, off the event loop); one lock
orders triage-and-store so two requests cannot interleave their transactions. A request's
messages are triaged in one batch through the encoder. Message text is never logged.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from attend.apps.focus.assistant import MAX_TASK_CHARS, Session
from attend.apps.focus.dashboard import render_dashboard
from attend.apps.focus.service import FocusService, check_unique_ids
from attend.apps.focus.store import SessionError
from attend.apps.sqlstore import named_as, public_name
from attend.data.messages import MAX_ID_CHARS, MAX_MESSAGE_CHARS, Message, record_message
from attend.data.validation import text_problem
from attend.serve import Routes
from attend.serve.schemas import ErrorBody, OpenAnswer, id_text

__all__ = ["create_dashboard_app", "focus_router", "serve_dashboard", "served_focus_router"]

#: Most messages in one request.
MAX_MESSAGES = 256


def _visible(value: str, field: str) -> str:
    """``value``, if it has a visible character (as the CLI and ``/v1/predict`` require)."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{field} {problem}")
    return value


#: What the person is working on: the task of a triage request and of a session.
Task = Annotated[str, Field(min_length=1, max_length=MAX_TASK_CHARS, description="What the person is working on."),
                 AfterValidator(lambda value: _visible(value, "task"))]  # fmt: skip


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A longer body is cut to MAX_MESSAGE_CHARS and flagged ``truncated``, as a file's is. Blank or
    # left out, the message is read from its subject, as a file's row and a mail with no body are (a
    # notification of subject alone had been a 422 here only); with no subject either, a 422.
    text: str = Field(default="", description="The message body (blank: the message is its subject).")
    # A number too, as a file's row may give it (a ticket number): read as its text, "5" for 5.
    id: StrictStr | StrictInt | None = Field(default=None, description="Stable id (derived from the fields if absent).")
    sender: str = Field(default="", max_length=1000)
    subject: str = Field(default="", max_length=5000)
    time: str | None = Field(default=None, max_length=40)
    channel: str = Field(default="", max_length=100)

    def to_message(self, where: str = "message") -> Message:
        """The message as a file's row gives it (the same id for the same message, the time checked)."""
        return record_message(where, self.model_dump(exclude_none=True))[0]


class MessagesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)


class TriageIn(MessagesIn):
    task: Task
    allow: list[str] = Field(default_factory=list, max_length=200)


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    allow: list[str] = Field(default_factory=list, max_length=200)
    until: str | None = Field(default=None, description="End time, ISO 8601; without an offset, the service's "
                              "machine's local time: send one (+01:00 or Z).")  # fmt: skip
    minutes: float | None = Field(default=None, ge=1, le=7 * 24 * 60, allow_inf_nan=False, strict=True,
                                  description="End after this many minutes (1 to a week, as the CLI).")  # fmt: skip


class StopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    forget: StrictBool = False  # "yes" is not true: forgetting erases message texts for good


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr | StrictInt = Field(description="A stored message's id (a number as the message gave it).")
    label: str = Field(pattern="^(pass|hold)$")

    @field_validator("id")
    @classmethod
    def _an_id(cls, value: str | int) -> str:
        return id_text(value, MAX_ID_CHARS)


class HighlightOut(OpenAnswer):
    text: str
    weight: float


class DecisionOut(OpenAnswer):
    id: str
    decision: str = Field(description="pass (interrupt now) or hold (into the digest).")
    score: float = Field(description="How much the message deserves to interrupt, 0 to 1.")
    components: dict[str, Any] = Field(description="Each component's value behind the decision.")
    reasons: list[str] = Field(description="Sentences naming the components that decided it.")
    highlights: list[HighlightOut] = Field(description="The message's words with their weights.")
    truncated: bool = Field(description="The message was longer than the assistant reads; its start was used.")


class DecisionsOut(OpenAnswer):
    decisions: list[DecisionOut] = Field(description="One per message, in the request's order.")


class SessionOut(OpenAnswer):
    id: int
    task: str
    allow: list[str]
    started_at: str
    ends_at: str | None
    stopped_at: str | None


class StoppedOut(OpenAnswer):
    session: SessionOut
    stats: dict[str, Any] = Field(description="Passed, held, minutes in focus, interruptions per focus hour, ...")


class StatusOut(OpenAnswer):
    running: bool
    session: SessionOut | None = Field(description="The running (or last) session; null in a new database.")


class FeedbackOut(OpenAnswer):
    id: str
    decision: str = Field(description="The assistant's decision on the message.")
    feedback: str = Field(description="The person's answer: pass or hold.")
    agreed: bool
    updates: int = Field(description="Corrections the person's model has learnt from.")


class DigestOut(OpenAnswer):
    session: SessionOut
    held: int
    group_count: int = Field(description="Topic groups before `limit`.")
    groups: list[dict[str, Any]] = Field(description="Held messages by topic, ranked, each with its key sentence.")


def _errors(**said: str) -> dict[int | str, dict[str, Any]]:
    """A route's own error answers for the schema (``not_found=``: 404, ``conflict=``: 409)."""
    codes = {"not_found": 404, "conflict": 409}
    return {codes[kind]: {"model": ErrorBody, "description": text} for kind, text in said.items()}


#: The service's errors name the CLI's verbs and flags; a client of these routes reads the routes and fields.
_HTTP_WORDS = (
    ("`attend focus start --task TEXT`", "POST /v1/focus/sessions"),
    ("`attend focus start`", "POST /v1/focus/sessions"),
    ("`attend focus stop`", "POST /v1/focus/stop"),
    ("`focus stop --forget`", 'POST /v1/focus/stop {"forget": true}'),
    ("`attend focus status`", "GET /v1/focus/status"),
    ("--until ", "until "),
)


#: A value a message quotes (Python's repr of a string): the user's words, never reworded.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')


def _http_words(exc: Exception) -> str:
    """``exc``'s message with the CLI's words for a step replaced by the route or field that takes
    it, outside the values it quotes (an id "ticket --until friday" is the user's)."""

    def reword(text: str) -> str:
        for cli, http in _HTTP_WORDS:
            text = text.replace(cli, http)
        return text

    message, out, at = str(exc), [], 0
    for quoted in _QUOTED.finditer(message):
        out += [reword(message[at : quoted.start()]), quoted.group()]
        at = quoted.end()
    return "".join([*out, reword(message[at:])])


def _invalid(exc: ValueError, where: str = "") -> HTTPException:
    return HTTPException(status_code=422, detail=_unplaced(_http_words(exc), where))


def _unplaced(text: str, where: str) -> str:
    """``text`` without the server's database path ``where`` (a client is not told where it lives)."""
    return text.replace(where, "the service's database") if where else text


def _conflict(exc: SessionError, where: str = "") -> HTTPException:
    text = _unplaced(_http_words(exc), where)
    # Not found: a message or session asked for, or a digest of a database with none (409 is for a
    # state the request conflicts with, such as messages with no session running).
    found = text.startswith(("no message", "no session", "no focus session in this database"))
    return HTTPException(status_code=404 if found else 409, detail=text)


def focus_router(service: FocusService) -> APIRouter:
    """The focus routes over ``service`` (see the module docstring)."""
    router = APIRouter(tags=["focus"])
    where = str(service.store.where)  # said to a client as "the service's database"
    lock = threading.Lock()

    @router.post("/v1/focus/messages", response_model=DecisionsOut, response_model_exclude_unset=True,
                 responses=_errors(conflict="No focus session is running"))  # fmt: skip
    def messages_route(body: MessagesIn) -> Any:
        """Triage messages in the running session; the decisions are stored and returned in order."""
        with lock:
            try:
                decisions = service.ingest([m.to_message(f"messages[{i}]") for i, m in enumerate(body.messages)])
            except SessionError as exc:
                raise _conflict(exc, where) from None
            except ValueError as exc:  # e.g. an id twice in the batch
                raise _invalid(exc, where) from None
        return {"decisions": [d.to_dict() for d in decisions]}

    @router.post("/v1/focus/triage", response_model=DecisionsOut, response_model_exclude_unset=True)
    def triage_route(body: TriageIn) -> Any:
        """Stateless triage against a task (nothing stored, nothing learnt)."""
        try:
            session = Session(body.task, tuple(body.allow))
            messages = [m.to_message(f"messages[{i}]") for i, m in enumerate(body.messages)]
            check_unique_ids(messages)  # as the CLI's triage and /v1/focus/messages: an answer's id names one message
        except ValueError as exc:
            raise _invalid(exc, where) from None
        decisions = service.assistant.triage(session, messages)
        return {"decisions": [d.to_dict() for d in decisions]}

    @router.post("/v1/focus/sessions", response_model=SessionOut, response_model_exclude_unset=True,
                 responses=_errors(conflict="A focus session is running already"))  # fmt: skip
    def start_route(body: SessionIn) -> Any:
        """Start a focus session."""
        if body.until and body.minutes:
            raise HTTPException(status_code=422, detail="minutes: give until or minutes, not both")
        until = body.until
        if body.minutes:
            until = (datetime.now(UTC) + timedelta(minutes=body.minutes)).isoformat(timespec="seconds")
        with lock:
            try:
                return service.start(body.task, allow=body.allow, until=until)
            except SessionError as exc:
                raise _conflict(exc, where) from None
            except ValueError as exc:
                raise _invalid(exc, where) from None

    @router.post("/v1/focus/stop", response_model=StoppedOut, response_model_exclude_unset=True,
                 responses=_errors(conflict="No focus session is running (nor, to forget, any)"))  # fmt: skip
    def stop_route(body: StopIn | None = None) -> Any:
        """Stop the running session; returns it with its statistics. No body is ``{"forget": false}``."""
        with lock:
            try:
                return service.stop(forget=body.forget if body is not None else False)
            except SessionError as exc:
                raise _conflict(exc, where) from None

    @router.get("/v1/focus/status", response_model=StatusOut, response_model_exclude_unset=True)
    def status_route() -> Any:
        """The running (or last) session and its statistics."""
        return service.status()

    @router.post("/v1/focus/feedback", response_model=FeedbackOut, response_model_exclude_unset=True,
                 responses=_errors(not_found="No stored message has this id",
                                   conflict="The message was forgotten: nothing to learn from"))  # fmt: skip
    def feedback_route(body: FeedbackIn) -> Any:
        """Learn that a stored message should have been passed or held."""
        with lock:
            try:
                return service.feedback(body.id, body.label)
            except SessionError as exc:
                raise _conflict(exc, where) from None

    @router.get("/v1/focus/digest", response_model=DigestOut, response_model_exclude_unset=True,
                responses=_errors(not_found="No such session, or no session in this database yet"))  # fmt: skip
    def digest_route(
        session: int | None = Query(default=None, ge=1, le=2**63 - 1),
        limit: int | None = Query(default=None, ge=1, le=10**6),
    ) -> Any:
        """Held messages grouped by topic, ranked, with key sentences."""
        try:
            return service.digest(session_id=session, limit=limit)
        except SessionError as exc:
            raise _conflict(exc, where) from None

    # HEAD for uptime probes, left out of the OpenAPI schema: one route for both had given the two
    # operations one operationId, which client generators refuse
    @router.head("/focus", response_class=HTMLResponse, include_in_schema=False)
    @router.get("/focus", response_class=HTMLResponse)
    def dashboard_route() -> Any:
        """The dashboard page."""
        return HTMLResponse(render_dashboard(service))

    return router


def served_focus_router(runtime: Any, *, db: str | os.PathLike[str]) -> Routes:
    """What ``attend serve MODEL --focus-db PATH`` mounts (the assistant loads its own encoder)."""
    del runtime  # the focus assistant reads with its own MiniLM, whatever model is served
    with named_as("--focus-db"):
        service = FocusService(db)
    service.assistant  # noqa: B018 - load the encoder and heads before the port opens
    limits = {"max_messages": MAX_MESSAGES, "max_chars": MAX_MESSAGE_CHARS}

    async def stop() -> None:  # the last connection closed folds the write-ahead log into the file and removes it
        service.close()

    return Routes(router=focus_router(service), stop=stop,
                  info={"apps": {"focus": {"db": public_name(db), "limits": limits}}})  # fmt: skip


def create_dashboard_app(db: str | os.PathLike[str] | FocusService) -> FastAPI:
    """The page at ``/`` and the focus API (``/v1/focus/...``) over an existing focus database: the
    service ``attend serve --focus-db`` runs without a model (its JSON errors, body limits, content
    type check and metrics), plus the page."""
    from attend.serve.app import create_app

    owned = not isinstance(db, FocusService)
    service = FocusService(db, create=False) if owned else db
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def page() -> str:
        """The dashboard page."""
        return render_dashboard(service)

    router.include_router(focus_router(service))
    limits = {"max_messages": MAX_MESSAGES, "max_chars": MAX_MESSAGE_CHARS}
    where = service.store.where

    async def stop() -> None:  # as served_focus_router's: one this app opened, it closes
        service.close()

    shown = {"apps": {"focus": {"db": public_name(where), "limits": limits}}}
    return create_app(None, routers=[Routes(router=router, stop=stop if owned else None, info=shown)])


def serve_dashboard(db: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8060) -> None:
    """Serve the dashboard (and the focus API) until Ctrl-C."""
    import uvicorn

    from attend.serve.app import check_port

    app = create_dashboard_app(db)
    check_port(host, port)  # a clear error before the page is announced, not uvicorn's after it
    print(f"focus dashboard on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
