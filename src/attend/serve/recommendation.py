"""The route of a recommender: ``POST /v1/recommend`` (micro-batched).

A request names a user, gives a history of item ids, or both (a known user's log continued by the
given items; a new user's history alone: cold start). Concurrent requests are scored together in
one pass (one matrix product for SASRec). ``explain: true`` adds, per recommended item, the history
items that drove it; those requests are answered one at a time in a worker thread, beside the batch.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from attend.data.validation import text_problem
from attend.runtime.recommender import Recommender
from attend.serve.batching import BatcherStopped, MicroBatcher
from attend.serve.metrics import ServiceMetrics
from attend.serve.routes import Routes, ServeSettings, client_gone, error_response
from attend.serve.schemas import OpenAnswer

__all__ = ["RecommendRequest", "RecommendResponse", "recommendation_routes"]

#: Longest history a request may give.
MAX_HISTORY = 10_000
#: Most items a request may ask for.
MAX_K = 1000


class RecommendRequest(BaseModel):
    """A user, a history of item ids, or both."""

    model_config = ConfigDict(extra="forbid")

    # Ids as the log had them: a log of numeric ids is queried with numbers (read as their text).
    user: StrictStr | StrictInt | None = Field(default=None, description="A user id from the training log.")
    history: list[StrictStr | StrictInt] | None = Field(default=None,
                                                        description="Item ids, oldest first (a new user's, or more).")
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True, description="Items to return.")
    explain: bool = Field(default=False, strict=True,
                          description="Add the history items that drove each recommendation (true or false).")


class HistoryWeight(OpenAnswer):
    item: str
    position: int = Field(description="The history item's place in the whole history read (1 = the oldest).")
    weight: float = Field(description="How much this history item drove the recommendation.")


class RecommendedItem(OpenAnswer):
    item: str
    score: float
    history: list[HistoryWeight] | None = Field(default=None, description="With explain: the history items "
                                                "that drove it, strongest first.")  # fmt: skip


class RecommendResponse(OpenAnswer):
    model: str = Field(description="The served model's name.")
    user: str | None
    source: str = Field(description="What was read: the user's log, the history given, both, or popularity.")
    items: list[RecommendedItem] = Field(description="Most likely first; never an item of the history.")
    note: str | None = Field(default=None, description="Set when the user was unknown, or the like.")
    warning: str | None = Field(default=None, description="Set when history items were unknown (and ignored).")
    ignored: list[str] | None = Field(default=None, description="The unknown history items.")


def recommendation_routes(runtime: Recommender, settings: ServeSettings, metrics: ServiceMetrics) -> Routes:
    """``/v1/recommend`` for a SASRec or DIN directory."""
    router = APIRouter(tags=["recommendation"])

    def run(requests: list[Any]) -> list[Any]:
        return [answer.to_dict() for answer in runtime.top_many(requests)]

    def observe(size: int, seconds: float) -> None:
        metrics.observe_batch("/v1/recommend", size, seconds)

    batcher = MicroBatcher(run, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, on_batch=observe)

    @router.post("/v1/recommend", response_model=RecommendResponse, response_model_exclude_unset=True)
    async def recommend(body: RecommendRequest, http: Request) -> Any:
        """The k items the user is most likely to want next, never one already in their history."""
        if body.user is None and body.history is None:  # an empty history is a new user's: popularity, as top()
            return error_response(422, "validation", "give a user, a history of item ids, or both")
        if isinstance(body.user, str) and not body.user.strip():  # no log has it: not an unknown user's popularity
            return error_response(422, "validation", f"user: the id {body.user!r} is empty")
        ids = [("user", body.user), *((f"history.{i}", item) for i, item in enumerate(body.history or []))]
        for field, value in ids:  # echoed in the answer: a lone surrogate could not be written as JSON (a 500)
            if isinstance(value, str) and (problem := text_problem(value)) and "surrogate" in problem:
                return error_response(422, "validation", f"{field}: the id {problem}")
            if field != "user" and isinstance(value, str) and not value.strip():  # as the user's: no log has it
                return error_response(422, "validation", f"{field}: the id {value!r} is empty")
        if body.history is not None and len(body.history) > MAX_HISTORY:
            return error_response(422, "validation", f"history: {len(body.history)} items, over the limit of "
                                  f"{MAX_HISTORY}")  # fmt: skip
        request = {"user": None if body.user is None else str(body.user),
                   "history": [str(item) for item in body.history or []], "k": body.k}  # fmt: skip
        if body.explain:
            start = time.perf_counter()
            answer = await run_in_threadpool(lambda: runtime.top_many([request], explain=True)[0].to_dict())
            metrics.observe_batch("/v1/recommend", 1, time.perf_counter() - start, batched=False)
            return {"model": runtime.name, **answer}
        metrics.queued.set(batcher.queued())
        try:
            answers = await batcher.submit([request], gone=http.is_disconnected)
        except BatcherStopped as exc:  # shutting down
            return error_response(503, "unavailable", str(exc))
        if answers is None:
            return client_gone("its recommendations")
        (answer,) = answers
        return {"model": runtime.name, **answer}

    def refresh() -> None:
        metrics.queued.set(batcher.queued())

    limits = {"max_k": MAX_K, "max_history": MAX_HISTORY}  # this route's own (beside the service's text limits)
    return Routes(router=router, start=batcher.start, stop=batcher.stop, drain=batcher.drain,
                  ready=lambda: batcher.running, refresh=refresh, info={"limits": limits})  # fmt: skip
