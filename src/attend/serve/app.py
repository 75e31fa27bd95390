"""The HTTP service: ``attend serve MODEL_DIR`` (FastAPI + uvicorn).

Routes: ``POST /v1/predict``, ``POST /v1/explain``, ``GET /v1/model``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET /openapi.json``.

The model is loaded once, before the port opens (a bad or pickle-bearing directory fails the
command, not the first request). Predictions go through the :class:`MicroBatcher`; explanations
run one request at a time in a worker thread (the capture API is scoped to that call, so it never
slows the predictions running beside it).

Limits and validation (each a 4xx JSON body ``{"error": {"type", "message", ...}}``, never a 5xx):
an empty or blank text, a non-string, more than ``max_texts`` texts, a text over ``max_chars``
characters (422); a body over ``max_body_bytes`` (413); a content type other than JSON (415);
malformed JSON (422). A text with more *tokens* than the model reads is not an error: it is
truncated to the model's ``max_length`` (its start is kept) and flagged ``"truncated": true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from attend import __version__
from attend.serve.batching import MicroBatcher
from attend.serve.metrics import ServiceMetrics
from attend.serve.schemas import (
    ErrorBody,
    ExplainRequest,
    ExplainResponse,
    ModelInfo,
    Prediction,
    PredictRequest,
    PredictResponse,
)

__all__ = ["ServeSettings", "create_app", "load_for_serving", "serve"]

ENV_CONFIG = "ATTEND_SERVE_CONFIG"


@dataclass
class ServeSettings:
    """How the service runs.

    Attributes:
        max_batch: Most texts per model call (1 disables micro-batching).
        max_wait_ms: Longest a request waits for others to fill its batch.
        max_texts: Most texts in one request.
        max_chars: Longest text, in characters.
        max_body_bytes: Largest request body.
        runtime: ``"torch"`` or ``"onnx"`` (an ONNX model directory from ``attend export``).
        quantized: Serve the int8 model (``attend quantize``).
        bf16: Serve the PyTorch model with bfloat16 weights and activations (CPUs with AMX or
            AVX512-BF16 run its matrix products several times faster; explanations still work).
        threads: PyTorch / ONNX Runtime intra-op threads (0: their default).
        monitor_db: Also serve ``POST /v1/monitor/events`` into this monitor database (path or
            SQLAlchemy URL), scoring with the served model (``attend monitor``).
        support_index: Also serve ``POST /v1/support/ask`` from this FAQ index (``attend support``).
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_texts: int = 64
    max_chars: int = 20_000
    max_body_bytes: int = 4_000_000
    runtime: str = "torch"
    quantized: bool = False
    bf16: bool = False
    threads: int = 0
    monitor_db: str | None = None
    support_index: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_texts", "max_chars", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={self.max_wait_ms} must be >= 0")
        if self.runtime not in ("torch", "onnx"):
            raise ValueError(f"runtime={self.runtime!r}; choose 'torch' or 'onnx'")
        if self.bf16 and (self.runtime != "torch" or self.quantized):
            raise ValueError("bf16=True needs runtime='torch' without int8 (--bf16 goes with neither --runtime onnx "
                             "nor --int8)")  # fmt: skip

    @property
    def runtime_name(self) -> str:
        """``torch``, ``torch-int8``, ``torch-bf16``, ``onnx`` or ``onnx-int8``."""
        return self.runtime + ("-int8" if self.quantized else "-bf16" if self.bf16 else "")


def load_for_serving(model_dir: str | os.PathLike[str], settings: ServeSettings) -> Any:
    """The predictor to serve: :func:`attend.load` for PyTorch, else the ONNX Runtime one."""
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    if settings.runtime == "torch" and not settings.quantized and not settings.bf16:
        from attend.inference import load

        return load(model_dir)
    from attend.serve.onnx_runtime import load_runtime

    return load_runtime(model_dir, settings.runtime, quantized=settings.quantized, bf16=settings.bf16)


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message, **extra}})


def _validation_details(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        details.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", "")), "type": err.get("type")})
    if any(d["type"] == "json_invalid" for d in details):
        return "malformed JSON body", details
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    return f"{first['field']}: {first['message']}", details


class _GuardAndMeasure:
    """Pure ASGI middleware: refuses non-JSON and oversized POST bodies, records request metrics.

    (Starlette's ``BaseHTTPMiddleware`` costs a task and a memory stream per request; under load
    the event loop, not the model, then limits how many requests reach each batch.)
    """

    def __init__(self, app: Any, *, settings: ServeSettings, metrics: ServiceMetrics, known_paths: set[str]) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            refusal = self._refusal(scope) if scope["method"] == "POST" else None
            if refusal is not None:
                await refusal(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.in_flight.dec()
            path = getattr(scope.get("route"), "path", None)
            if path is None:
                path = scope["path"] if scope["path"] in self.known_paths else "unmatched"
            self.metrics.observe_request(path, scope["method"], status["code"], time.perf_counter() - start)

    def _refusal(self, scope: dict[str, Any]) -> JSONResponse | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            got = media or "no content type"
            return _error(415, "unsupported_media_type", f"send JSON (Content-Type: application/json), not {got!r}")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.settings.max_body_bytes):
            return _error(413, "too_large", f"request body over {self.settings.max_body_bytes} bytes")
        return None


def create_app(predictor: Any, settings: ServeSettings | None = None, *, name: str | None = None) -> FastAPI:
    """The FastAPI application serving ``predictor`` (a loaded :class:`attend.inference.Predictor`
    or ONNX Runtime predictor)."""
    from attend.explain.methods import BASELINES, GRADIENT_METHODS, METHODS, method_support

    settings = settings or ServeSettings()
    metrics = ServiceMetrics()
    model_name = name or (Path(predictor.path).name if getattr(predictor, "path", None) else "model")
    tokenizer = predictor.tokenizer
    has_maps, pooled, gradients = method_support(predictor)
    methods = [m for m in (*METHODS, *BASELINES)
               if (gradients or m not in GRADIENT_METHODS) and (pooled or m != "pooling")]  # fmt: skip
    if hasattr(predictor, "model"):  # PyTorch: every method, for the fp32 and bf16 models
        methods = [] if settings.quantized else methods
        cannot_explain = "explanations need the PyTorch fp32 or bf16 model (serve without --int8)"
    else:  # ONNX Runtime: from the graph's own attention outputs, if it was exported with them
        methods = methods if has_maps or pooled else []
        cannot_explain = (
            "this ONNX graph has no attention outputs: export it with `attend export MODEL_DIR --onnx OUT "
            "--attentions` to explain with ONNX Runtime, or serve the PyTorch model (--runtime torch)"
        )

    def run_predict(texts: list[str]) -> list[tuple[np.ndarray, bool]]:
        probs, truncated = predictor.predict_proba_truncated(texts, batch_size=max(1, len(texts)))
        return [(row, bool(flag)) for row, flag in zip(probs, truncated, strict=True)]

    batcher = MicroBatcher(
        run_predict,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        on_batch=lambda size, seconds: metrics.observe_batch("/v1/predict", size, seconds),
    )
    state = {"ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()  # every request already accepted still gets its answer

    app = FastAPI(
        title="attend",
        version=__version__,
        description="Attention models that show where they focus: predictions and explanations.",
        lifespan=lifespan,
        responses={413: {"model": ErrorBody}, 415: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.predictor = predictor
    known_paths: set[str] = set()  # filled once the routes exist; labels never take arbitrary paths

    app.add_middleware(_GuardAndMeasure, settings=settings, metrics=metrics, known_paths=known_paths)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_details(exc)
        return _error(422, "validation", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http", str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:  # a bug: say so, keep serving
        return _error(500, "internal", f"{type(exc).__name__}: {exc}")

    def check_texts(texts: Sequence[str]) -> JSONResponse | None:
        if not texts:
            return _error(422, "validation", "texts: give at least one text")
        if len(texts) > settings.max_texts:
            return _error(422, "validation", f"texts: {len(texts)} texts, more than the limit of {settings.max_texts}")
        for i, text in enumerate(texts):
            if not text.strip():
                return _error(422, "validation", f"texts[{i}]: empty text")
            if len(text) > settings.max_chars:
                return _error(422, "validation", f"texts[{i}]: {len(text)} characters, over the limit of "
                              f"{settings.max_chars}")  # fmt: skip
        return None

    @app.post("/v1/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest) -> Any:
        """Top-k labels with probabilities for each text (micro-batched with concurrent requests)."""
        texts = body.items()
        if (bad := check_texts(texts)) is not None:
            return bad
        metrics.queued.set(batcher.queued())
        try:
            results = await batcher.submit(texts)
        except RuntimeError as exc:  # shutting down
            return _error(503, "unavailable", str(exc))
        k = min(body.top_k, len(predictor.labels))
        predictions = []
        for probs, truncated in results:
            order = np.argsort(-probs)[:k]
            top = [{"label": predictor.labels[j], "probability": float(probs[j])} for j in order]
            predictions.append(Prediction(label=top[0]["label"], probability=top[0]["probability"], top=top,
                                          truncated=truncated))  # fmt: skip
        return PredictResponse(model=model_name, predictions=predictions)

    @app.post("/v1/explain", response_model=ExplainResponse)
    async def explain_route(body: ExplainRequest) -> Any:
        """Per text: tokens and their importance to the prediction (the `attend explain --json` objects)."""
        texts = body.items()
        if (bad := check_texts(texts)) is not None:
            return bad
        if not methods:
            return _error(400, "unsupported", cannot_explain)
        if body.method not in methods:
            return _error(422, "validation", f"method: {body.method!r} is not one of {methods}")
        if body.target is not None and body.target not in predictor.labels:
            return _error(422, "validation", f"target: {body.target!r} is not a label of this model")
        from attend.explain import explain

        start = time.perf_counter()
        try:
            found = await run_in_threadpool(explain, predictor, texts, body.method, target=body.target)
        except ValueError as exc:  # e.g. "pooling" on a model without attention pooling
            return _error(422, "validation", str(exc))
        metrics.observe_batch("/v1/explain", len(texts), time.perf_counter() - start)
        return ExplainResponse(model=model_name, explanations=[e.to_dict(maps=False) for e in found])

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        """The model: name, labels, config, versions, test metrics, limits."""
        config = dict(getattr(predictor, "config", {}) or {})
        stored = None
        path = getattr(predictor, "path", None)
        if path is not None and (Path(path) / "metrics.json").is_file():
            with contextlib.suppress(OSError, ValueError):
                stored = json.loads((Path(path) / "metrics.json").read_text(encoding="utf-8"))
        return ModelInfo(
            name=model_name,
            labels=list(predictor.labels),
            runtime=settings.runtime_name,
            config={k: config[k] for k in ("model", "tokenizer", "training", "data") if k in config},
            version={
                "attend": __version__,
                "trained_with": config.get("attend_version"),
                "weights_sha256": config.get("weights_sha256"),
            },
            metrics=stored,
            limits={k: v for k, v in asdict(settings).items() if k.startswith("max_")}
            | {"max_tokens": tokenizer.max_length},
            explain_methods=methods,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded and the batcher runs (503 while starting or stopping)."""
        if state["ready"] and batcher.running:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics."""
        metrics.queued.set(batcher.queued())
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    if settings.monitor_db is not None:
        from attend.apps.monitor.router import monitor_router

        app.include_router(monitor_router(settings.monitor_db, predictor))
    if settings.support_index is not None:
        from attend.apps.support import support_router

        app.include_router(support_router(settings.support_index))
    known_paths.update(getattr(route, "path", "") for route in app.routes)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --workers N``: each worker process loads the model named in the environment."""
    config = json.loads(os.environ[ENV_CONFIG])
    settings = ServeSettings(**config["settings"])
    return create_app(load_for_serving(config["model_dir"], settings), settings)


def serve(
    model_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
    graceful_seconds: int = 30,
) -> None:
    """Load the model (failing fast on a bad directory), then serve until SIGINT/SIGTERM.

    On shutdown the port stops accepting, requests in flight finish (up to ``graceful_seconds``),
    then the batcher drains. With ``workers > 1`` each uvicorn worker process loads its own copy
    (Prometheus metrics are then per worker).
    """
    import uvicorn

    settings = settings or ServeSettings()
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if not 0 < port < 65536:
        raise ValueError(f"port={port} must be in 1..65535")
    predictor = load_for_serving(model_dir, settings)  # fail before binding the port
    if workers == 1:
        uvicorn.run(create_app(predictor, settings), host=host, port=port, timeout_graceful_shutdown=graceful_seconds,
                    log_level="info")  # fmt: skip
        return
    os.environ[ENV_CONFIG] = json.dumps({"model_dir": str(model_dir), "settings": asdict(settings)})
    uvicorn.run("attend.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                timeout_graceful_shutdown=graceful_seconds, log_level="info")  # fmt: skip
