"""The routes of a classifier: ``POST /v1/predict`` (micro-batched) and ``POST /v1/explain``.

Predictions go through the :class:`~attend.serve.batching.MicroBatcher`; explanations run one
request at a time in a worker thread (the capture API is scoped to that call, so it never slows
the predictions running beside it). A text with more *tokens* than the model reads is not an
error: it is truncated to the model's ``max_length`` (its start is kept) and flagged
``"truncated": true``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from attend.data.validation import text_problem
from attend.explain import available_methods, explain
from attend.runtime import EnsembleClassifier, TextClassifier
from attend.serve.batching import WATCH_SECONDS, BatcherStopped, MicroBatcher
from attend.serve.metrics import ServiceMetrics
from attend.serve.routes import Routes, ServeSettings, client_gone, error_response
from attend.serve.schemas import (
    ErrorBody,
    ExplainRequest,
    ExplainResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
)

__all__ = ["classification_routes"]


def _cannot_explain(runtime: TextClassifier, *, member_of_ensemble: bool = False) -> str:
    if isinstance(runtime, EnsembleClassifier):
        blocked = [_cannot_explain(member, member_of_ensemble=True) for member in runtime.members
                   if not available_methods(member)]  # fmt: skip
        why = f" ({blocked[0]})" if blocked else ""  # e.g. --int8: every member quantised, none explainable
        return (
            "an ensemble offers the explanation methods every member offers, and these members share none: "
            "each member must be explainable (a PyTorch fp32/bf16 model, or an ONNX graph exported with "
            f"--attentions){why}"
        )
    if runtime.backend.startswith("onnx"):
        return (
            "this ONNX graph has no attention outputs: export it with `attend export MODEL_DIR --onnx OUT "
            "--attentions` to explain with ONNX Runtime, or "
            + ("make the ensemble of the PyTorch model" if member_of_ensemble else "serve the PyTorch model (--runtime "
               "torch)")
        )  # fmt: skip
    return "explanations need the PyTorch fp32 or bf16 model (serve without --int8)"


def _max_tokens(runtime: TextClassifier) -> int:
    """The most tokens of a text the model reads; an ensemble's members each read their own (it has no
    tokenizer), and a text longer than the fewest of them is truncated by at least one."""
    return runtime.max_length if isinstance(runtime, EnsembleClassifier) else runtime.tokenizer.max_length


def check_texts(texts: Sequence[str], settings: ServeSettings, *, single: bool = False) -> JSONResponse | None:
    """A 422 naming the first text that breaks a limit, or None; ``single``: the request sent one
    ``text``, which the message names as such (not ``texts[0]``)."""
    if not texts:
        return error_response(422, "validation", "texts: give at least one text")
    if len(texts) > settings.max_texts:
        return error_response(422, "validation", f"texts: {len(texts)} texts, more than the limit of "
                              f"{settings.max_texts}")  # fmt: skip
    for i, text in enumerate(texts):
        name = "text" if single else f"texts[{i}]"
        problem = text_problem(text)
        if problem is not None:
            return error_response(422, "validation", f"{name} {problem}")
        if len(text) > settings.max_chars:
            return error_response(422, "validation", f"{name}: {len(text)} characters, over the limit of "
                                  f"{settings.max_chars}")  # fmt: skip
    return None

#: Texts of an explanation request explained at a time: between them the work stops for a client
#: that went away or a server whose shutdown grace ended.
REQUEST_CHUNK = 8


async def _unless_abandoned(request: Request, work: Callable[[list[str]], list[Any]],
                            texts: list[str]) -> list[Any] | None:  # fmt: skip
    """``work`` over ``texts`` in a worker thread, REQUEST_CHUNK texts at a time, or None once the
    client has gone. An explanation can take seconds a text: a queue of them whose clients had timed
    out still ran, one after another, ahead of every request behind them (and counted as answered),
    and one running when the shutdown grace ended kept the process up till it was done."""
    if await request.is_disconnected():  # went while it queued: nothing is started
        return None
    stop = threading.Event()

    def run() -> list[Any] | None:
        found: list[Any] = []
        for first in range(0, len(texts), REQUEST_CHUNK):
            if stop.is_set():
                return None
            found.extend(work(texts[first : first + REQUEST_CHUNK]))
        return found

    async def watch() -> None:
        while not stop.is_set():
            if await request.is_disconnected():
                stop.set()
            await asyncio.sleep(WATCH_SECONDS)

    watcher = asyncio.create_task(watch())
    try:
        return await run_in_threadpool(run)
    finally:  # also when cancelled (the shutdown grace ended): the thread stops after its chunk
        stop.set()
        watcher.cancel()


def classification_routes(runtime: TextClassifier, settings: ServeSettings, metrics: ServiceMetrics) -> Routes:
    """``/v1/predict`` and ``/v1/explain`` for a text classifier (PyTorch or ONNX Runtime)."""
    methods = available_methods(runtime)
    router = APIRouter(tags=["classification"])

    def run_predict(texts: list[str]) -> list[tuple[np.ndarray, bool, str | None]]:
        found = runtime.predictions(texts, batch_size=max(1, len(texts)))
        return list(zip(found.probs, found.truncated.tolist(), found.warnings(), strict=True))

    # A runtime that answers each text alone (int8) gains nothing from waiting for others.
    alone = getattr(runtime, "batch_dependent", False)
    batcher = MicroBatcher(
        run_predict,
        max_batch=1 if alone else settings.max_batch,
        max_wait_ms=0.0 if alone else settings.max_wait_ms,
        on_batch=lambda size, seconds: metrics.observe_batch("/v1/predict", size, seconds),
    )

    @router.post("/v1/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest, request: Request) -> Any:
        """Top-k labels with probabilities for each text (micro-batched with concurrent requests)."""
        texts = body.items()
        if (bad := check_texts(texts, settings, single=body.text is not None)) is not None:
            return bad
        if body.threshold is not None and not runtime.multi_label:
            return error_response(422, "validation", "threshold: chooses a multi-label model's labels; this model "
                                  "gives each text its most probable label")  # fmt: skip
        metrics.queued.set(batcher.queued())
        try:
            results = await batcher.submit(texts, gone=request.is_disconnected)
        except BatcherStopped as exc:  # shutting down
            return error_response(503, "unavailable", str(exc))
        if results is None:
            return client_gone("its predictions")
        k = min(body.top_k, len(runtime.labels))
        predictions = []
        for probs, truncated, warning in results:
            order = np.argsort(-probs)[:k]
            top = [{"label": runtime.labels[j], "probability": float(probs[j])} for j in order]
            chosen = runtime.chosen(probs, body.threshold)
            predictions.append(Prediction(label=top[0]["label"], labels=None if chosen is None else chosen[0],
                                          probability=top[0]["probability"], top=top, truncated=truncated,
                                          warning=warning))  # fmt: skip
        return PredictResponse(model=runtime.name, predictions=predictions)

    one_explanation = asyncio.Semaphore(1)

    @router.post("/v1/explain", response_model=ExplainResponse,
                 responses={400: {"model": ErrorBody, "description": "This model cannot be explained"}})
    async def explain_route(body: ExplainRequest, request: Request) -> Any:
        """Per text: tokens and their importance to the prediction (the `attend explain --json` objects)."""
        texts = body.items()
        if (bad := check_texts(texts, settings, single=body.text is not None)) is not None:
            return bad
        if not methods:
            return error_response(400, "unsupported", _cannot_explain(runtime))
        if body.method not in methods:
            return error_response(422, "validation", f"method: {body.method!r:.60} is not one of {methods}")
        if body.target is not None and body.target not in runtime.labels:
            return error_response(422, "validation", f"target: {body.target!r:.60} is not a label of this model")
        async with one_explanation:  # queued, not run side by side: each would slow all the others
            start = time.perf_counter()
            try:
                found = await _unless_abandoned(
                    request, lambda part: explain(runtime, part, body.method, target=body.target), texts)
            except ValueError as exc:  # e.g. "pooling" on a model without attention pooling
                return error_response(422, "validation", str(exc))
            if found is None:
                return client_gone("its explanation")
        metrics.observe_batch("/v1/explain", len(texts), time.perf_counter() - start, batched=False)
        return ExplainResponse(model=runtime.name, explanations=[e.to_dict(maps=False) for e in found])

    def refresh() -> None:
        metrics.queued.set(batcher.queued())

    return Routes(
        router=router,
        start=batcher.start,
        stop=batcher.stop,
        drain=batcher.drain,
        ready=lambda: batcher.running,
        refresh=refresh,
        info={
            "labels": list(runtime.labels),
            "explain_methods": methods,
            # the batching applied: an int8 runtime's 1 and 0 (the settings given had been shown)
            "limits": {"max_tokens": _max_tokens(runtime), "max_batch": batcher.max_batch,
                       "max_wait_ms": batcher.max_wait * 1000.0},
        },
    )
