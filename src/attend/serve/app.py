"""The HTTP service: ``attend serve MODEL_DIR`` (FastAPI + uvicorn).

Routes: those of the model's task (a classifier: ``POST /v1/predict``, ``POST /v1/explain``; a
recommender: ``POST /v1/recommend``; a translator: ``POST /v1/translate``;
see :data:`TASK_ROUTES`), those of any app given (:class:`~attend.serve.routes.RouterSpec`:
``attend serve --monitor-db`` / ``--support-index``), and ``GET /v1/model``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET /openapi.json``.

The model is loaded once, before the port opens (a bad or pickle-bearing directory fails the
command, not the first request).

Limits and validation (each a 4xx JSON body ``{"error": {"type", "message", ...}}``, never a 5xx):
an empty or blank text, a non-string, more than ``max_texts`` texts, a text over ``max_chars``
characters (422); a body over ``max_body_bytes`` (413); a content type other than JSON (415);
malformed JSON (422).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount

from attend.config import MAX_WORKERS, load_plugins
from attend.io import ArtifactDir, sha256_file
from attend.runtime import Runtime, load
from attend.serve.classification import classification_routes
from attend.serve.metrics import ServiceMetrics
from attend.serve.recommendation import recommendation_routes
from attend.serve.routes import (
    RouterSpec,
    Routes,
    ServeSettings,
    as_routes,
    call_factory,
    client_gone,
    error_response,
)
from attend.serve.schemas import ErrorBody, ModelInfo
from attend.serve.translation import translation_routes
from attend.version import __version__

__all__ = ["TASK_ROUTES", "create_app", "load_for_serving", "serve"]

log = logging.getLogger("attend.serve")

ENV_CONFIG = "ATTEND_SERVE_CONFIG"

#: The routes of each task's models, by task name.
TASK_ROUTES: dict[str, Callable[[Any, ServeSettings, ServiceMetrics], Routes]] = {
    "classification": classification_routes,
    "sequential_recommendation": recommendation_routes,
    "ctr_recommendation": recommendation_routes,
    "translation": translation_routes,
}


NOTHING_TO_SERVE = ("nothing to serve: give a model directory, or an app's option (e.g. --focus-db PATH, "
                    "--support-index PATH, --router MODULE:FUNCTION)")


def _endpoints(routes: Sequence[Any]) -> set[tuple[str, str]]:
    """``(path, method)`` of every route, those of included routers too (FastAPI keeps an included
    router as one entry, holding the router it was made from)."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found |= _endpoints(inner.routes)
        found |= {(getattr(route, "path", ""), method) for method in getattr(route, "methods", None) or ()}
    return found


def load_for_serving(model_dir: str | os.PathLike[str] | None, settings: ServeSettings) -> Runtime | None:
    """The runtime to serve, as ``settings`` ask (PyTorch or ONNX Runtime, int8, bf16, threads); None
    without a model directory (apps only)."""
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    if model_dir is None:
        return None
    return load(model_dir, runtime=settings.runtime, int8=settings.quantized, bf16=settings.bf16,
                threads=settings.threads or None)  # fmt: skip


def _given(err: dict[str, Any]) -> str:
    """``, not VALUE``: what a schema error refused, a number, true, false or null as sent, anything
    else by its JSON type only: a string may be a message's text, which no answer or log repeats (a
    missing field has no value; a JSON syntax error's "input" is the whole body)."""
    if err.get("type") in ("missing", "json_invalid") or "input" not in err:
        return ""
    value, kind = err["input"], str(err.get("type", ""))
    about_the_type = kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "finite_number")
    about_the_value = about_the_type or kind.startswith(("greater_than", "less_than")) or kind == "multiple_of"
    if not about_the_value:  # `topk: Extra inputs are not permitted`: a misspelt key, not a refused 3
        return ""
    if value is None or isinstance(value, bool | int | float):
        return f", not {json.dumps(value)}"
    if not about_the_type:  # a string too short is still a string
        return ""
    kinds = ((str, "a string"), (list | tuple, "a list"), (dict, "an object"))
    return next((f", not {kind}" for python, kind in kinds if isinstance(value, python)), "")


#: The last part of a location that names a member of a union, as pydantic tags them (``str``,
#: ``int``, ``list[str]``, ``constrained-str``, ``function-after[...]``), not a field of the request
#: (a header's ``x-token``, a dict key).
_UNION_MEMBER = re.compile(r"^(?:str|int|float|bool|bytes|none|list|dict|constrained-\w+|[\w-]+\[.*\])$")


def _union_merged(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors with those of one value against each member of a union made one, at the
    value's own location: ``history.0: Input should be a valid string or a valid integer`` (they had
    been two entries, at ``history.0.str`` and ``history.0.int``). Only a run of two or more such
    errors at one location is merged: a single one keeps its location whole."""
    def member_of(err: Any) -> tuple[Any, ...] | None:  # the value's location, where err is a member's
        loc = tuple(err.get("loc", ()))
        return loc[:-1] if len(loc) > 1 and isinstance(loc[-1], str) and _UNION_MEMBER.match(loc[-1]) else None

    merged: list[dict[str, Any]] = []
    for place, run in itertools.groupby(errors, key=member_of):
        found = [dict(err) for err in run]
        if place is None or len(found) < 2:
            merged.extend(found)
            continue
        tails = (str(err.get("msg", "")).removeprefix("Input should be ") for err in found[1:])
        merged.append({**found[0], "loc": place, "msg": " or ".join([str(found[0].get("msg", "")), *tails])})
    return merged


def _validation_details(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in _union_merged(exc.errors()):
        # A JSON syntax error's location is a character offset, not a field: the body is at fault.
        loc = [] if err.get("type") == "json_invalid" else [str(part) for part in err.get("loc", ()) if part != "body"]
        said = str(err.get("msg", ""))
        if err.get("type") == "value_error":  # a validator's own words: "task is blank", not "Value error, task ..."
            said = said.removeprefix("Value error, ")
        details.append({"field": ".".join(loc) or "body", "message": f"{said}{_given(err)}",
                        "type": err.get("type")})  # fmt: skip
    if any(d["type"] == "json_invalid" for d in details):
        return "malformed JSON body", details
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    return f"{first['field']}: {first['message']}", details


#: Seconds a request's whole body may take to arrive (a 4 MB body at 140 kB/s).
BODY_SECONDS = 30.0


def _database_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLAlchemy's for an SQLite database another process held locked past its
    busy timeout (the focus and monitor apps' stores): a 503 to send again, not a 500 of the service."""
    return type(exc).__module__.startswith("sqlalchemy") and "database is locked" in str(getattr(exc, "orig", ""))


def _place(url: str, scheme: str | None = None) -> tuple[str, int | None]:
    """``(host, port)`` of an origin (``https://a.example``) or, with the origin's ``scheme``, of a
    ``Host`` header (``a.example:443``): a default port filled in, letters lower-cased."""
    parts = urlsplit(url if scheme is None else f"//{url.strip()}")
    default = {"http": 80, "https": 443}.get(scheme if scheme is not None else parts.scheme)
    try:
        port = parts.port
    except ValueError:  # a port that is no number: no place
        return "", None
    return (parts.hostname or "").lower(), port or default


def _cross_origin(headers: dict[str, str], allowed: Sequence[str] = ()) -> JSONResponse | None:
    """A 403 for a POST a browser sends from another site's page: a bodiless ``fetch(..., {mode:
    "no-cors"})`` from any page had stopped a running focus session. A browser that says where the
    request comes from (``Sec-Fetch-Site``) is believed alone (a proxy may rewrite ``Host``); else its
    ``Origin`` must be the host it is sent to (``Host`` or ``X-Forwarded-Host``, default ports filled
    in). An origin in ``allowed`` (``--allow-origin``) is served. Clients that are no browser send
    neither header."""
    origin = headers.get("origin")
    if origin is not None and _place(origin) in {_place(entry) for entry in allowed}:
        return None
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site:
        crossed = site == "cross-site"
    elif origin is not None:
        scheme = urlsplit(origin).scheme
        hosts = [headers.get("host", ""), headers.get("x-forwarded-host", "").split(",")[0]]
        crossed = _place(origin) not in {_place(host, scheme) for host in hosts if host.strip()}
    else:
        crossed = False
    if not crossed:
        return None
    return error_response(403, "forbidden", "a request from another site's page is refused (its Origin is not this "
                          "service): call the service from your own code, from its own pages, or allow that origin "
                          "(attend serve --allow-origin URL)")  # fmt: skip


class _GuardAndMeasure:
    """Pure ASGI middleware: refuses non-JSON and oversized POST bodies, records request metrics.

    A body's size is checked while it streams in, whatever its ``Content-Length`` says (a chunked
    upload has none): reading stops at the limit with a 413, so a large upload never sits in memory.
    (Starlette's ``BaseHTTPMiddleware`` costs a task and a memory stream per request; under load
    the event loop, not the model, then limits how many requests reach each batch.)
    """

    def __init__(self, app: Any, *, settings: ServeSettings, metrics: ServiceMetrics, known_paths: set[str],
                 post_paths: set[str]) -> None:  # fmt: skip
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.known_paths = known_paths
        self.post_paths = post_paths  # only these read a body: a POST elsewhere is the router's 404 or 405

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_and_note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        self.metrics.in_flight.inc()
        try:
            guarded = scope["method"] == "POST" and scope["path"] in self.post_paths
            refusal = self._refusal(scope) if guarded else None
            if refusal is None and guarded:
                body, refusal = await self._read_body(receive)
                receive = _replay(body, receive)
            if refusal is not None:
                await refusal(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the shutdown grace ends (a queue of explanations):
            # a 503 the client can retry elsewhere, not uvicorn's plain-text 500 and a traceback.
            if status["started"]:
                raise
            task = asyncio.current_task()
            if task is not None:  # answered: the cancellation is handled (what asyncio.timeout does)
                task.uncancel()
            await error_response(503, "shutting_down", "the server shut down before this request finished; "
                                 "send it again")(scope, receive, send_and_note)  # fmt: skip
        except Exception as exc:  # a bug (a failing model, a plugin's route): say so, keep serving
            if status["started"]:
                raise
            if _database_busy(exc):  # an app's SQLite held past its busy timeout: a condition that passes
                log.warning("%s %s: the database stayed locked by another process", scope["method"], scope["path"])
                await error_response(503, "unavailable", "the database is busy (another process holds it); send the "
                                     "request again")(scope, receive, send_and_note)  # fmt: skip
                return
            # The exception goes to the log, once, not to the client: its words may hold what a request
            # or a plugin must not show (a message's text, a path, a secret). Answered here, it no
            # longer reaches Starlette's outermost layer, which re-raised it for uvicorn to log again.
            log.error("%s %s failed", scope["method"], scope["path"], exc_info=exc)
            await error_response(500, "internal", f"an internal error ({type(exc).__name__}); the server's log has "
                                 "it")(scope, receive, send_and_note)  # fmt: skip
        finally:
            self.metrics.in_flight.dec()
            path = getattr(scope.get("route"), "path", None)
            if path is None:
                path = scope["path"] if scope["path"] in self.known_paths else "unmatched"
            self.metrics.observe_request(path, scope["method"], status["code"], time.perf_counter() - start)

    def _refusal(self, scope: dict[str, Any]) -> JSONResponse | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if (crossed := _cross_origin(headers, self.settings.allowed_origins)) is not None:
            return crossed
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        # Transfer-Encoding overrides Content-Length (a chunked body with "Content-Length: 0" has one)
        bodyless = "transfer-encoding" not in headers and headers.get("content-length", "0") == "0"
        if media != "application/json" and not (bodyless and not media):  # `curl -X POST URL` sends no body
            got = media or "no content type"
            message = f"send JSON (Content-Type: application/json), not {got!r}"
            return error_response(415, "unsupported_media_type", message)
        coding = headers.get("content-encoding", "").strip().lower()
        if coding not in ("", "identity"):  # RFC 9110's 415 for a coding not read: a gzip body had been a 422
            # "not UTF-8", sending the client to its JSON, and a plain body labelled gzip was read
            return error_response(415, "unsupported_media_type", f"Content-Encoding {coding!r}: the service reads "
                                  "bodies as sent (identity); send the JSON uncompressed")  # fmt: skip
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.settings.max_body_bytes):
            return self._too_large()
        return None

    def _too_large(self) -> JSONResponse:
        limit = self.settings.max_body_bytes  # named as GET /v1/model's limits name it (the body had named none)
        return error_response(413, "too_large", f"request body over {limit} bytes (max_body_bytes, --max-body-bytes)",
                              limit="max_body_bytes")

    async def _read_body(self, receive: Any) -> tuple[bytes, JSONResponse | None]:
        """The request body, read up to the limit; past it, a 413 and nothing more is read. A body
        not whole within :data:`BODY_SECONDS` is a 408: one that stopped arriving had held its
        connection open for good (a client that died mid-upload; many of them, a way to exhaust the
        server)."""
        body = bytearray()
        deadline = asyncio.get_running_loop().time() + BODY_SECONDS
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return b"", error_response(408, "request_timeout", f"the request body did not arrive whole within "
                                           f"{BODY_SECONDS:g} s ({len(body)} bytes came); send it again")  # fmt: skip
            if message["type"] != "http.request":  # the client went away before its body was whole: not
                # a request to read (its cut JSON had been a 422), counted as one it abandoned
                return b"", client_gone("its request body arrived whole")
            body += message.get("body", b"")
            if len(body) > self.settings.max_body_bytes:
                return b"", self._too_large()
            if not message.get("more_body", False):
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as exc:  # JSON is UTF-8; say so here, not as a 400 from the parser
                    where = f"byte 0x{body[exc.start]:02x} at offset {exc.start}"
                    return b"", error_response(422, "validation", f"malformed JSON body: not UTF-8 ({where})")
                return bytes(body), None


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that hands over an already read body, then defers to the real one."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


#: The entries of config.json that ``/v1/model`` shows.
PUBLIC_CONFIG = ("model", "tokenizer", "training", "data", "ensemble")


def _served_weights(config: dict[str, Any], backend: str) -> str | None:
    """The SHA-256 of the weights or graph served: ``model.safetensors``, or the ONNX graph (its int8
    one under ``--int8``); None for an ensemble (``config_sha256`` covers its members)."""
    onnx = config.get("onnx")
    if isinstance(onnx, dict):
        graph = onnx.get("int8") if backend == "onnx-int8" else onnx
        return graph.get("sha256") if isinstance(graph, dict) else None
    return config.get("weights_sha256")


def _served_metrics(stored: Any, backend: str) -> dict[str, Any] | None:
    """The test figures of the model served: under ``--int8`` (or ``--bf16``), those ``attend
    quantize`` measured for that model (``accuracy``, ``macro_f1``), with the fp32 model's whole
    record under ``fp32``. The fp32 figures had stood at the top beside ``runtime: onnx-int8`` (0.80
    where the int8 graph scored 0.82), for a dashboard to show as the served model's."""
    if not isinstance(stored, dict):
        return None
    precision = next((p for p in ("int8", "bf16") if f"-{p}" in backend), None)
    if precision is None:
        return stored
    if backend.startswith("ensemble"):  # quantize scores no ensemble: its members' figures are their own
        return {**stored, "note": f"the fp32 ensemble's figures: its members are served in {precision}"}
    key = "bf16" if precision == "bf16" else backend.removesuffix("-int8")  # quantize's own keys
    measured = (stored.get("quantized") or {}).get(key)
    figures = measured.get(precision) if isinstance(measured, dict) else None
    if not isinstance(figures, dict):
        return {**stored, "note": f"the fp32 model's figures: the {precision} model served was not scored (attend "
                                  "quantize scores it)"}  # fmt: skip
    # The data quantize was given may not be the test split: the fp32 figures on that same data, and
    # the change, come with it; the fp32 model's own test record stays under fp32.
    return {**figures, "data": _folders_dropped(measured.get("data")), "runtime": backend,
            "fp32_same_data": measured.get("fp32"), "accuracy_change": measured.get("accuracy_change"),
            "fp32": stored}  # fmt: skip


def _public(key: str, value: Any) -> Any:
    """A config entry as ``/v1/model`` shows it: the server's folders stay on the server. A file the
    data came from (a classifier's ``source``, a translator's ``origin``, a recommender's log and
    item features) and an ensemble member's ``source`` are shown by file name; a bundled dataset's
    ``dataset:NAME`` as it is."""
    if key == "data":
        return _file_names(value, drop=("path",))
    if key == "ensemble" and isinstance(value, dict) and isinstance(value.get("members"), list):
        members = [{**m, "source": _file_names(m.get("source"))} if isinstance(m, dict) else m
                   for m in value["members"]]  # fmt: skip  (each member's "path" is inside the directory)
        return {**value, "members": members}
    return value


#: A path with folders inside a sentence ("test split of /srv/data/reviews.csv (30 examples)",
#: "~/data/r.csv", "data/private/r.csv"): a word holding "/", and the name after its last one.
_FOLDERED_PATH = re.compile(r"(?<!\S)[^\s()]*/([^\s/()]+)")


def _folders_dropped(value: Any) -> Any:
    """A description naming a file by a path, with the file's name instead: the server's folders stay
    on the server (``attend quantize``'s ``data`` had shown them under ``--int8``)."""
    return _FOLDERED_PATH.sub(r"\1", value) if isinstance(value, str) else value


#: The metrics keys whose string values name a file or folder, or describe data by one ("test split
#: of /srv/data/r.csv (30 examples)"): quantize's, prune's and export's records among them.
METRICS_PATH_KEYS = frozenset({"data", "dev_data", "importance_data", "split", "model_dir", "out_dir", "onnx_dir",
                               "onnx_file", "source"})  # fmt: skip
#: The metrics keys that hold the user's own texts, never paths (a translator's sample translations).
METRICS_TEXT_KEYS = frozenset({"samples", "examples"})


def _paths_named(value: Any) -> Any:
    """The metrics as ``/v1/model`` shows them: every path under :data:`METRICS_PATH_KEYS`, at any
    depth, by its last name (quantize's ``data`` and ``accuracy_budget.dev_data`` had shown the
    server's folders, nested under ``fp32.quantized``)."""
    if isinstance(value, dict):
        return {key: _entry_named(key, entry) for key, entry in value.items()}
    if isinstance(value, list):
        return [_paths_named(entry) for entry in value]
    return value


def _entry_named(key: str, value: Any) -> Any:
    if key in METRICS_TEXT_KEYS:  # a translator's samples are sentences: "um 10/11 Uhr" is no path
        return value
    if key in METRICS_PATH_KEYS and isinstance(value, str):
        return _folders_dropped(value)
    return _paths_named(value)


#: The config keys whose string values name a data file (at any depth of the ``data`` entry).
FILE_KEYS = ("source", "origin", "data", "item_features")


def _file_names(value: Any, drop: tuple[str, ...] = ()) -> Any:
    """``value`` (a config entry, or one file's name) with each file named by a path reduced to the
    file's name: the value itself when a string, else those under :data:`FILE_KEYS`, recursively."""
    if isinstance(value, dict):
        return {k: _file_names(v) if k in FILE_KEYS or isinstance(v, dict) else v
                for k, v in value.items() if k not in drop}  # fmt: skip
    if isinstance(value, str) and _is_path(value):  # "dataset:NAME" is no path: kept as it is
        return Path(value).name
    return value


def _is_path(value: str) -> bool:
    """Whether a recorded source names a file by a path with folders in it: an absolute one, or one
    that is a file here (a free-text source such as "corpus v2/3 (cleaned)" is neither)."""
    try:
        return Path(value).name != value and (os.path.isabs(value) or Path(value).exists())
    except (OSError, ValueError):
        return False


#: What ``GET /v1/model`` sets itself: a task's ``Routes.info`` may add any other entry.
_SET_BY_SERVICE = frozenset({"name", "task", "runtime", "config", "version", "metrics", "apps"})


class StartFailure(RuntimeError):
    """A ``Routes.start`` hook raised while the service started (``app.state.start_failure`` says which)."""


class _NoQueryString(logging.Filter):
    """uvicorn's access log line without the URL's query string: ``GET /v1/translate?text=...`` (a
    405) had written the user's text into the log, which never holds a request's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def _hide_query_strings() -> None:
    """Add :class:`_NoQueryString` to uvicorn's access logger, once per process (each worker builds
    its app)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _NoQueryString) for f in access.filters):
        access.addFilter(_NoQueryString())


def _router_apps(name: str, part: Routes, paths: list[str]) -> dict[str, Any]:
    """What ``GET /v1/model`` shows of a router under ``apps``: its info's own ``apps`` entries (an
    app's), else an entry under its name with its paths and whatever else its info holds (a plain
    APIRouter had been invisible, and a ``--router``'s info other than ``apps`` dropped in silence)."""
    if "apps" in part.info:
        return part.info["apps"]
    return {name: {"paths": paths, **part.info}}


def _check_router_info(names: Sequence[str], parts: Sequence[Routes], listed: Sequence[list[str]]) -> None:
    """Refuse a router's info that ``GET /v1/model`` cannot show as given: ``apps`` beside other keys,
    ``apps`` not an object, or an ``apps`` entry another router has (the later had replaced the earlier)."""
    owner: dict[str, str] = {}
    for name, part, paths in zip(names, parts, listed, strict=True):
        if "apps" in part.info and not isinstance(part.info["apps"], dict):
            raise ValueError(f"{name}: its info's 'apps' is a {type(part.info['apps']).__name__}; give an object of "
                             "entries, each shown under apps by its key")  # fmt: skip
        if "apps" in part.info and len(part.info) > 1:
            raise ValueError(f"{name}: its info has 'apps' and {sorted(set(part.info) - {'apps'})}, which would not be "
                             "shown; put them in info['apps'], or leave 'apps' out and its info is shown under its "
                             "name")  # fmt: skip
        for key in _router_apps(name, part, paths):
            if key in owner:
                raise ValueError(f"{name}: its apps entry {key!r} is {owner[key]}'s already; name it otherwise")
            owner[key] = name


def create_app(
    runtime: Runtime | None,
    settings: ServeSettings | None = None,
    *,
    routers: Sequence[APIRouter | RouterSpec | Routes] = (),
) -> FastAPI:
    """The FastAPI application serving ``runtime`` with its task's routes, plus ``routers`` (apps').

    ``runtime=None`` serves the apps' routers alone (e.g. the focus assistant, which reads with
    its own encoder): there must be at least one, and ``GET /v1/model`` then names no model.
    """
    if isinstance(routers, str | bytes) or not all(isinstance(r, APIRouter | RouterSpec | Routes) for r in routers):
        # "mod:fn" had failed as "'str' object has no attribute 'routes'"
        raise TypeError(f"routers={routers!r}: give a list of APIRouter, RouterSpec('package.module:function') or "
                        "Routes objects")  # fmt: skip
    settings = settings or ServeSettings()
    metrics = ServiceMetrics()
    _hide_query_strings()
    if runtime is not None and runtime.task not in TASK_ROUTES:
        load_plugins()  # an installed package's task may add its routes as its module is imported
    if runtime is None:
        if not routers:
            raise ValueError(NOTHING_TO_SERVE)
        routes = Routes(router=APIRouter())
    elif runtime.task not in TASK_ROUTES:
        if not routers:
            raise ValueError(
                f"attend serve has no routes for {runtime.task!r} models (known: {sorted(TASK_ROUTES)}): add them to "
                "attend.serve.TASK_ROUTES where the task is registered, or give a router of your own (--router "
                "MODULE:FUNCTION, called with the loaded model)"
            )
        routes = Routes(router=APIRouter())  # the routers given serve the model
    else:
        factory = TASK_ROUTES[runtime.task]
        named = f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)!s}"
        label = f"the {runtime.task!r} routes ({named})"
        routes = as_routes(label, call_factory(label, factory, runtime, settings, metrics))
        taken = sorted(set(routes.info) & _SET_BY_SERVICE)
        if taken:  # every GET /v1/model had been a 500 ("got multiple values for keyword argument")
            raise ValueError(f"the {runtime.task!r} routes' info sets {taken}, which GET /v1/model gives itself; "
                             "name the entries otherwise")  # fmt: skip
    extra = [spec.build(runtime) if isinstance(spec, RouterSpec) else spec if isinstance(spec, Routes)
             else Routes(router=spec) for spec in routers]  # fmt: skip
    names = [spec.factory if isinstance(spec, RouterSpec) else f"router {index}" for index, spec in enumerate(routers)]
    # one factory given twice (with other options) is two routers: each its own name, "f", "f #2"
    names = [name if names[:index].count(name) == 0 else f"{name} #{names[:index].count(name) + 1}"
             for index, name in enumerate(names)]  # fmt: skip
    everything = [routes, *extra]
    served = [_endpoints(part.router.routes) for part in extra]  # (path, method) of each router's routes
    listed = [sorted({path for path, _ in endpoints} | {route.path for route in part.router.routes
                                                        if isinstance(route, Mount)})  # a mounted app's prefix
              for part, endpoints in zip(extra, served, strict=True)]  # fmt: skip
    _check_router_info(names, extra, listed)

    def apps() -> dict[str, Any]:  # as each router's info reads now (its refresh may have changed it)
        return {key: entry for name, part, paths in zip(names, extra, listed, strict=True)
                for key, entry in _router_apps(name, part, paths).items()}  # fmt: skip

    state = {"ready": False}
    starting = ["the served model's routes", *(f"router factory {name!r}" for name in names)]

    def drain() -> None:  # from the signal handler: flags only
        state["ready"] = False
        for part in everything:
            if part.drain is not None:
                part.drain()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started: list[Routes] = []
        for name, part in zip(starting, everything, strict=True):
            if part.start is None:
                continue
            try:
                await part.start()
            except Exception as exc:  # said by serve() in one line, not uvicorn's traceback and exit 3
                app.state.start_failure = f"{name} failed to start: {type(exc).__name__}: {exc}"
                for done in reversed(started):  # what had started stops again (a batcher's thread)
                    if done.stop is not None:
                        with contextlib.suppress(Exception):
                            await done.stop()
                raise StartFailure(app.state.start_failure) from exc
            started.append(part)
        _drain_on_shutdown_signals(drain)
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            for part in everything:  # every request already accepted still gets its answer
                if part.stop is not None:
                    await part.stop()

    app = FastAPI(
        title="attend",
        version=__version__,
        description="Attention models that show where they focus: predictions and explanations.",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN: blank offline, and a third party's
        # code on the origin that serves the apps' data (/v1/focus/digest); /openapi.json is the schema
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = runtime
    known_paths: set[str] = set()  # filled once the routes exist; labels never take arbitrary paths
    post_paths: set[str] = set()

    app.add_middleware(_GuardAndMeasure, settings=settings, metrics=metrics, known_paths=known_paths,
                       post_paths=post_paths)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_details(exc)
        return error_response(422, "validation", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):  # e.g. JSON nested too deeply
            return error_response(422, "validation", "malformed JSON body (the parser gave up on it)")
        # A route's own check of a request's content (an until that is no time, an id twice) is as much
        # a validation error as the schema's: one type for every 422, whoever found it.
        return error_response(exc.status_code, "validation" if exc.status_code == 422 else "http", str(exc.detail))

    app.include_router(routes.router)

    # Read once, with the model: the folder may change under a running server (train --overwrite),
    # and /v1/model describes the model that answers, not the one now on disk.
    config_hash, stored = None, None
    if runtime is not None and runtime.path is not None:
        with contextlib.suppress(OSError):
            config_hash = sha256_file(runtime.path / "config.json")
        stored = ArtifactDir(runtime.path, runtime.config).read_json("metrics.json")

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        """The model: name, task, runtime, config, versions, test metrics, limits (and the apps mounted)."""
        for part in everything:
            part.refresh()
        info = dict(routes.info)
        limits = {k: v for k, v in asdict(settings).items() if k.startswith("max_")} | info.pop("limits", {})
        if runtime is None:  # apps only: no model, and only the body limit of the model's routes applies
            # (max_texts, max_batch, ... had been given for a /v1/predict that is not served)
            return ModelInfo(name=None, task=None, runtime=None, config=None, version={"attend": __version__},
                             metrics=None, limits={"max_body_bytes": limits["max_body_bytes"]},
                             apps=apps() or None)  # fmt: skip
        config = runtime.config
        return ModelInfo(
            name=runtime.name,
            task=runtime.task,
            runtime=runtime.backend,
            config={k: _public(k, config[k]) for k in PUBLIC_CONFIG if k in config},
            version={
                "attend": __version__,
                "trained_with": config.get("attend_version"),
                "weights_sha256": _served_weights(config, runtime.backend),
                # config.json records every file's hash (an ensemble's members too): one id for all of it
                "config_sha256": config_hash,
            },
            metrics=_paths_named(_served_metrics(stored, runtime.backend)),
            limits=limits,
            apps=apps() or None,
            **info,
        )

    # HEAD as well as GET: some load balancers probe with HEAD (it was a 405).
    @app.get("/healthz")
    @app.head("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    @app.head("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded and its routes can serve (503 while starting or stopping)."""
        if state["ready"] and all(part.ready() for part in everything):
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse)  # (the OpenAPI schema had said application/json)
    async def prometheus() -> Response:
        """Prometheus metrics."""
        for part in everything:
            part.refresh()
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # The model's routes are included first, so one at a path of the service's own had answered in its place
    # (a task's GET /metrics: no Prometheus output, without a word): refused, as a --router's clash is.
    own = [route for route in app.routes if getattr(route, "original_router", None) is not routes.router]
    service = _endpoints(own)
    clash = sorted(_endpoints(routes.router.routes) & service)
    if clash:
        path, method = clash[0]
        raise ValueError(f"the {getattr(runtime, 'task', None)!r} routes: {method} {path} is the service's own; give "
                         "the route another path")  # fmt: skip
    taken = _endpoints(app.routes)
    for name, part, mine in zip(names, extra, served, strict=True):
        # A route served already would be shadowed without a word (the first one wins): refused.
        clash = sorted(mine & taken)
        if clash:
            path, method = clash[0]
            raise ValueError(f"{name}: {method} {path} is served already (by the model's routes, the service or "
                             "another router); give the route another path")  # fmt: skip
        taken |= mine
        try:
            app.include_router(part.router)
        except Exception as exc:  # FastAPI's own refusal (an app mounted at "/"): it had been a traceback
            raise ValueError(f"{name}: its router cannot be served: {type(exc).__name__}: {exc}") from None
    known_paths.update(getattr(route, "path", "") for route in app.routes)
    _document_errors(app.routes)
    # Routers are included as one entry each, without their paths: the schema lists every path, so a
    # request refused before routing (415, 413) is still counted under its route.
    schema_paths = app.openapi().get("paths", {})
    known_paths.update(schema_paths)
    post_paths.update(path for path, operations in schema_paths.items() if "post" in operations)
    return app


#: The error answers a route may give, as the schema lists them: a POST's body is checked (413, 415,
#: 422) and it is answered 503 once the server is shutting down; a GET's query (422); /readyz is 503
#: until it is ready. Each 4xx and 5xx body is an ErrorBody (FastAPI's own 422 schema is not ours).
POST_ERRORS = {413: "Request body too large", 415: "Not JSON", 422: "Validation error",
               500: "Internal error", 503: "Shutting down or unavailable"}  # fmt: skip


def _document_errors(routes: Sequence[Any]) -> None:
    """Each route's error answers in the schema (every route had listed 413, 415 and 422, /metrics and
    /healthz too, and none its 500 or 503), those of included routers too."""
    from fastapi.routing import APIRoute
    from fastapi.utils import create_model_field

    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            _document_errors(inner.routes)
        if not isinstance(route, APIRoute):
            continue
        documented: dict[int | str, dict[str, Any]] = {}
        if "POST" in route.methods:
            documented = {code: {"model": ErrorBody, "description": said} for code, said in POST_ERRORS.items()}
        elif route.dependant.query_params or route.dependant.path_params:  # GET /v1/focus/digest?limit=0
            documented = {422: {"model": ErrorBody, "description": POST_ERRORS[422]}}
        elif route.path == "/readyz":
            documented = {503: {"description": 'Not ready (starting or stopping): {"status": "not ready"}'}}
        route.responses = {**documented, **route.responses}  # a route's own entry wins
        for code, entry in route.responses.items():  # the models' fields, as the route made them for its own
            if entry.get("model") is not None and code not in route.response_fields:
                route.response_fields[code] = create_model_field(name=f"Response_{code}_{route.unique_id}",
                                                                 type_=entry["model"], mode="serialization")


def check_port(host: str, port: int) -> None:
    """Fail with a clear message, before loading anything, if ``host:port`` cannot be listened on."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"--host {host!r}: {exc.strerror}") from None
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                advice = "another server may be using it; choose another --port"
            elif exc.errno == errno.EADDRNOTAVAIL:
                advice = f"{host} is not an address of this machine; choose another --host (127.0.0.1, 0.0.0.0)"
            elif exc.errno == errno.EACCES:
                advice = "ports below 1024 need privileges; choose another --port"
            else:
                advice = "choose another --host or --port"
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror}): {advice}") from None


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --workers N``: each worker process loads the model named in the environment."""
    config = json.loads(os.environ[ENV_CONFIG])
    settings = ServeSettings(**config["settings"])
    routers = [RouterSpec(**spec) for spec in config.get("routers", [])]
    return create_app(load_for_serving(config["model_dir"], settings), settings, routers=routers)


def _drain_on_shutdown_signals(drain: Callable[[], None]) -> None:
    """Run ``drain`` the moment SIGINT or SIGTERM asks the server to stop, then the server's own handler.

    uvicorn installs its handlers before the app starts (and puts back the ones it found when it
    stops), then lets requests in flight finish before it tells the app anything: a request waiting
    in a batch for others to join had waited out ``--max-wait-ms`` though none could come, and past
    the shutdown grace it was cut off with a 503. Only the main thread can set handlers; elsewhere (a
    test client) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
            drain()
            previous(signum, frame)

        signal.signal(sig, handler)


def serve(
    model_dir: str | os.PathLike[str] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
    routers: Sequence[RouterSpec] = (),
    graceful_seconds: int = 30,
) -> None:
    """Load the model (none: ``model_dir=None``, apps' routers only) and build every router (failing
    fast on a bad directory or app option), then serve until SIGINT/SIGTERM.

    On shutdown the port stops accepting, requests in flight finish (up to ``graceful_seconds``),
    then the batcher drains. With ``workers > 1`` each uvicorn worker process loads its own copy
    (Prometheus metrics are then per worker).
    """
    import uvicorn

    settings = settings or ServeSettings()
    if model_dir is None and not routers:
        raise ValueError(NOTHING_TO_SERVE)
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers={workers} must be from 1 to {MAX_WORKERS}")
    if not 0 < port < 65536:
        raise ValueError(f"port={port} must be in 1..65535")
    check_port(host, port)
    snapshot = served_snapshot(model_dir) if workers > 1 and model_dir is not None else None
    if snapshot is not None:  # what every worker loads, whenever uvicorn (re)starts it
        atexit.register(shutil.rmtree, snapshot.parent, ignore_errors=True)
        model_dir = snapshot
    app = create_app(load_for_serving(model_dir, settings), settings, routers=routers)  # fail before binding
    # uvicorn re-raises SIGTERM after its graceful shutdown, which would end the process with status
    # 143; a handler that does nothing lets a clean, requested shutdown exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if workers == 1:
        quiet = _QuietStartFailure(app)
        logging.getLogger("uvicorn.error").addFilter(quiet)
        from attend.serve.servers import DrainingServer

        server = DrainingServer(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=graceful_seconds,
                                               log_level="info"))  # fmt: skip
        try:
            with contextlib.suppress(KeyboardInterrupt):
                server.run()
            if not server.started:  # uvicorn.run's exit after a failed start
                raise SystemExit(3)
        except SystemExit:
            failure = getattr(app.state, "start_failure", None)
            if failure is not None:  # uvicorn's exit 3 after its traceback: one line, exit 2, from the caller
                raise ValueError(failure) from None
            raise
        finally:
            logging.getLogger("uvicorn.error").removeFilter(quiet)
        return
    os.environ[ENV_CONFIG] = json.dumps({"model_dir": None if model_dir is None else str(model_dir),
                                         "settings": asdict(settings),
                                         "routers": [spec.to_dict() for spec in routers]})  # fmt: skip
    config = uvicorn.Config("attend.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            timeout_graceful_shutdown=graceful_seconds, log_level="info")  # fmt: skip
    try:
        _run_workers(config)
    finally:
        if snapshot is not None:
            shutil.rmtree(snapshot.parent, ignore_errors=True)


def served_snapshot(model_dir: str | os.PathLike[str]) -> Path | None:
    """A copy of the model directory that the workers of ``attend serve --workers N`` load, under the
    name it was given by (``/v1/model`` names the model by it), or None where ``model_dir`` is no
    directory (loading then says so). Each worker loads when uvicorn starts it, and one restarted
    after a crash had loaded whatever the directory then held (a model trained over it since,
    answering beside the others under the same name), or failed on its absence with a traceback.

    Hard links of the files (a link's target's) in a new hidden folder ``.NAME.serving…`` beside
    the directory, or beside the outermost model directory it is inside (``MODEL/onnx``, an
    ensemble member's: that one's ``train --overwrite`` would take the folder with it), so nothing
    is copied; where they cannot be made (another file system, links refused), a copy in the
    temporary folder, without the TensorBoard logs (``runs/``). The caller removes the returned
    path's parent, and only it, when the server ends.
    """
    import tempfile

    from attend.io import enclosing_model_directory

    given = Path(model_dir)
    if not given.is_dir():
        return None
    source = given.resolve()
    name = Path(os.path.abspath(given)).name or source.name or "model"  # `..` is its folder's name
    beside = source
    while (outer := enclosing_model_directory(beside.parent)) is not None and outer != beside:  # the outermost
        beside = outer
    root = None
    try:
        root = Path(tempfile.mkdtemp(dir=beside.parent, prefix=f".{name}.serving"))
        shutil.copytree(source, root / name, copy_function=lambda src, dst: os.link(os.path.realpath(src), dst))
    except BaseException as exc:  # a Ctrl-C midway too: nothing of it is left beside the model
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        root = Path(tempfile.mkdtemp(prefix="attend-serve-"))
        try:
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("runs"))
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
    return root / name


class _QuietStartFailure(logging.Filter):
    """Drops uvicorn's traceback and "Application startup failed" lines once a ``Routes.start`` hook
    failed (``app.state.start_failure``): :func:`serve` says it in one line instead."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(self.app.state, "start_failure", None) is None or record.levelno < logging.ERROR


def _run_workers(config: Any) -> None:
    """Run ``config.workers`` uvicorn worker processes on one listening socket, as ``uvicorn.run`` does,
    except that the parent closes its copy of the socket before it asks the workers to stop.

    uvicorn's parent keeps the socket open until every worker has finished its graceful shutdown. Once
    the workers stop accepting, the kernel still completes the handshake of each new connection, the
    client sends its request, and nobody reads it: when the parent exits, the connection is reset. The
    client cannot tell whether that request was served. With the parent's copy closed, the port refuses
    new connections as soon as the last worker stops accepting, as a single-process server does, and a
    client or load balancer knows the request never arrived and can send it elsewhere.
    """
    import inspect

    from uvicorn.supervisors import Multiprocess, multiprocess

    from attend.serve.servers import DrainingServer, DrainingWorker

    class Workers(Multiprocess):
        def terminate_all(self) -> None:
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    sock = config.bind_socket()
    if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn before 0.52
        Workers(config, target=DrainingServer(config).run, sockets=[sock]).run()
        return
    # Each worker process runs its own Server, which uvicorn builds in its Process class: that class
    # is the supervisor's for this run, so the workers accept their port's queue before closing it too.
    made = multiprocess.Process
    multiprocess.Process = DrainingWorker  # type: ignore[misc]
    try:
        Workers(config, sockets=[sock]).run()
    finally:
        multiprocess.Process = made  # type: ignore[misc]
