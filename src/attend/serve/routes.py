"""What the service is made of: its settings, the routes a task or an app contributes, and error bodies.

A task's routes come with their lifecycle (:class:`Routes`: start and stop hooks, readiness, what
``GET /v1/model`` adds). An app contributes a router *by reference* (:class:`RouterSpec`, a
``"module:function"`` name and JSON options), so each worker process of ``attend serve --workers N``
can build it, and the service never imports an app.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from attend.config import MAX_WAIT_MS

__all__ = ["RouterSpec", "Routes", "ServeSettings", "client_gone", "error_response"]


@dataclass
class ServeSettings:
    """How the service runs.

    Attributes:
        max_batch: Most texts per model call (1 disables micro-batching).
        max_wait_ms: Longest a request waits for others to fill its batch.
        max_texts: Most texts in one request.
        max_chars: Longest text, in characters.
        max_body_bytes: Largest request body.
        runtime: ``"auto"`` (ONNX Runtime for an ``attend export`` directory, else PyTorch),
            ``"torch"`` or ``"onnx"``.
        quantized: Serve the int8 model (``attend quantize``).
        bf16: Serve the PyTorch model with bfloat16 weights and activations (CPUs with AMX or
            AVX512-BF16 run its matrix products several times faster; explanations still work).
        threads: PyTorch / ONNX Runtime intra-op threads (0: their default).
        allowed_origins: Web origins (``https://app.example``) whose pages' scripts may POST to the
            service; any other site's page is refused (403), as a cross-site request forgery.
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_texts: int = 64
    max_chars: int = 20_000
    max_body_bytes: int = 4_000_000
    runtime: str = "auto"
    quantized: bool = False
    bf16: bool = False
    threads: int = 0
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_texts", "max_chars", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:  # also NaN; inf overflowed the batch thread's timeout
            raise ValueError(f"max_wait_ms={self.max_wait_ms}: a wait in milliseconds from 0 to {MAX_WAIT_MS:,}")
        self.allowed_origins = tuple(self.allowed_origins)
        for origin in self.allowed_origins:  # a path or no scheme would never match a browser's Origin
            parts = urlsplit(origin) if isinstance(origin, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
                raise ValueError(f"allowed origin {origin!r}: give a web origin, scheme and host (and port): "
                                 "https://app.example or http://localhost:3000")  # fmt: skip
        if self.runtime not in ("auto", "torch", "onnx"):
            raise ValueError(f"runtime={self.runtime!r}; choose 'auto', 'torch' or 'onnx'")
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0")
        if self.bf16 and (self.runtime == "onnx" or self.quantized):
            raise ValueError("bf16=True needs runtime='torch' without int8 (--bf16 goes with neither --runtime onnx "
                             "nor --int8)")  # fmt: skip


#: The status a request whose client went away is counted under in /metrics (nginx's "client
#: closed request"; nobody reads it).
CLIENT_GONE = 499


@dataclass
class Routes:
    """A task's routes and their lifecycle.

    Attributes:
        router: The routes.
        start: Awaited when the service starts (before it reports ready); one that raises stops the
            service, which says so in one line naming it (``attend serve`` with one worker: exit 2;
            each of several workers logs its own failure), after the parts started before it stop.
        stop: Awaited when it stops (after the port closed: requests already accepted finish).
        ready: Whether the routes can serve now (``GET /readyz``).
        refresh: Called before ``GET /metrics`` and ``GET /v1/model`` render (to update gauges and ``info``).
        drain: Called from the signal handler the moment shutdown begins (before requests in flight
            finish): work held back for more to come (a batch waiting to fill) runs now. It may
            only set flags.
        info: Entries ``GET /v1/model`` adds: a task's routes, any but those it sets itself (``name``,
            ``task``, ``runtime``, ``config``, ``version``, ``metrics``, ``apps``: refused at start-up);
            ``limits`` are merged with the service's; a ``--router``'s, its ``apps`` entry.
    """

    router: APIRouter
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
    ready: Callable[[], bool] = lambda: True
    refresh: Callable[[], None] = lambda: None
    drain: Callable[[], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RouterSpec:
    """A router an app contributes: ``factory(runtime, **options)``, named as ``"package.module:function"``,
    returning an ``APIRouter`` or :class:`Routes` (whose ``info`` ``GET /v1/model`` shows under ``apps``).

    Attributes:
        factory: Where the function that builds the router is.
        options: Its keyword arguments (JSON values, so a worker process can be told them).
    """

    factory: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.factory, str):  # None had failed in str.partition, naming neither
            raise TypeError(f"RouterSpec factory={self.factory!r}: give 'package.module:function', a string")
        if not isinstance(self.options, dict):
            raise TypeError(f"RouterSpec options={self.options!r}: give a dict of keyword arguments")

    def build(self, runtime: Any) -> Routes:
        """Call the factory; a plain ``APIRouter`` it returns becomes :class:`Routes` with no hooks.

        Raises:
            ValueError: naming the factory, where it cannot be imported or called, raised, or
                returned something else (each had surfaced as the import's or the call's own
                exception, a traceback; a ``None`` only later, inside FastAPI).
        """
        module, _, name = self.factory.partition(":")
        if not module or not name:
            raise ValueError(f"router factory {self.factory!r} must read 'package.module:function'")
        try:
            found = importlib.import_module(module)
        except (Exception, SystemExit) as exc:  # the module's own import errors (and a sys.exit(): it had
            # stopped `attend serve` with exit 0 and no word) too: they are the plugin's
            raise ValueError(f"router factory {self.factory!r}: cannot import {module!r} ({type(exc).__name__}: "
                             f"{exc}); is it on the Python path (the folder attend serve runs in is)?") from None
        function = getattr(found, name, None)
        if not callable(function):
            what = "has no" if function is None else f"has a {type(function).__name__} as its"
            raise ValueError(f"router factory {self.factory!r}: module {module!r} {what} function {name!r}")
        label = f"router factory {self.factory!r}"
        return as_routes(label, call_factory(label, function, runtime, **self.options))

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "options": self.options}


def as_routes(label: str, built: Any) -> Routes:
    """What a router factory (``label``) returned, as :class:`Routes`: a plain ``APIRouter`` gets no
    hooks; anything else is a ``ValueError`` naming the factory (a ``TASK_ROUTES`` factory's
    ``APIRouter`` or ``None`` had been an AttributeError traceback)."""
    if isinstance(built, Routes):
        return built
    if isinstance(built, APIRouter):
        return Routes(router=built)
    raise ValueError(f"{label} returned {type(built).__name__}, not a FastAPI APIRouter or attend.serve.Routes")


def call_factory(label: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``; a plugin's factory that raises is a ``ValueError`` saying
    ``"{label} failed: {type}: {message}"``, one line for the CLI (it had been a traceback).
    attend's own factories raise as they are: its apps name their own bad input (``--focus-db``
    ...), and a database's refusal is said as one by the CLI."""
    try:
        return factory(*args, **kwargs)
    except (Exception, SystemExit) as exc:  # a sys.exit() in a plugin's factory had ended serve with exit 0
        if getattr(factory, "__module__", "").split(".")[0] == "attend":
            raise
        raise ValueError(f"{label} failed: {type(exc).__name__}: {exc}") from exc


# A route's own check names its field first, as the CLI does: "texts[1] is an empty text",
# "history: 600 items, ...", "until 'tomorrow' is not an ISO time", "target='x': ..." (a library's
# argument, named as the request names it).
_NAME = r"(?:[A-Za-z_]\w*|\d+)"
_FIELD = re.compile(rf"({_NAME}(?:\[\d+\]|\.{_NAME})*)"
                    r"(?=: | (?:is|contains|has) | (?:entry )?'[^']*' (?:is|contains) |=\S)")
# ... and an item's own field where the words name it: "messages[0] has time '...'", "messages[0]: field
# 'id' contains ...", "messages[0]: the text ..." (the item alone had been named).
_SUBFIELD = re.compile(r"(?:field ['\"](\w+)['\"]|has (?:an? |the )?(time|id)\b|the (text)\b"
                       r"|has an? \w+ in field ['\"](\w+)['\"])")


def _field_of(message: str) -> tuple[str, str]:
    """The request field a validation message starts with, in the schema's dotted form (``texts.1``
    for ``texts[1]``, ``messages.0.time`` for "messages[0] has time ..."), and the rest of the
    message; ``"body"`` and the whole message where it names none (``give a user, a history of
    item ids, or both``)."""
    found = _FIELD.match(message)
    if found is None or found.group(1) == "body":
        return "body", message.removeprefix("body: ")
    field, rest = re.sub(r"\[(\d+)\]", r".\1", found.group(1)), message[found.end() :].removeprefix(": ").lstrip()
    if rest.startswith("="):  # "target='pos': method ..." is said whole (it had been "='pos': method ...")
        rest = message
    inner = _SUBFIELD.match(rest) if re.search(r"\.\d+$", field) else None
    if inner is not None:
        field += "." + next(group for group in inner.groups() if group)
    return field, rest


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    """The service's error body: ``{"error": {"type", "message", ...}}``.

    Every 422 carries ``details``, a list of ``{"field", "message", "type"}``: the schema's findings
    where it refused the request, else one entry for the field the route's own check names.
    """
    if status == 422 and "details" not in extra:
        field, words = _field_of(message)
        extra["details"] = [{"field": field, "message": words, "type": "value_error"}]
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message, **extra}})


def client_gone(what: str) -> JSONResponse:
    """The answer, counted in /metrics as :data:`CLIENT_GONE`, to a request whose client went away
    before ``what`` ("its predictions"): nobody reads it."""
    return error_response(CLIENT_GONE, "client_closed", f"the client went away before {what}")
