"""The route of a translator: ``POST /v1/translate`` (micro-batched).

Sentences from concurrent requests are translated together: one beam search over the batch,
sources sorted by length. A request may ask for its own beam size, length penalty and for the
cross-attention ``alignment`` of each output token over the source; the batch is split by those
options, so every request gets exactly what it asked for.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field

from attend.models.generation import MAX_LENGTH_PENALTY
from attend.runtime.translator import Translator
from attend.serve.batching import BatcherStopped, MicroBatcher
from attend.serve.classification import check_texts
from attend.serve.metrics import ServiceMetrics
from attend.serve.routes import Routes, ServeSettings, client_gone, error_response
from attend.serve.schemas import TextsRequest

__all__ = ["TranslateRequest", "translation_routes"]

#: Largest beam a request may ask for.
MAX_BEAM = 16


class TranslateRequest(TextsRequest):
    """Sentences to translate: one (``text``) or several (``texts``), as ``/v1/predict`` takes them."""

    model_config = ConfigDict(extra="forbid")

    beam: int | None = Field(default=None, ge=1, le=MAX_BEAM, strict=True,
                             description="Beam size (default: the model's); 1 is greedy.")  # fmt: skip
    length_penalty: float | None = Field(default=None, ge=0, le=MAX_LENGTH_PENALTY, allow_inf_nan=False, strict=True,
                                         description="Rank beams by log-probability / length ** this (default: "
                                         "the model's).")  # fmt: skip
    alignment: bool = Field(default=False, strict=True,
                            description="Add each output token's cross-attention over the source.")  # fmt: skip


def translation_routes(runtime: Translator, settings: ServeSettings, metrics: ServiceMetrics) -> Routes:
    """``/v1/translate`` for a seq2seq directory."""
    router = APIRouter(tags=["translation"])
    # The model's beam, at most what a request may ask for: a directory's 32 had been every request's
    # default, while a client asking for it got a 422 (GET /v1/model gives the one served).
    default_beam = min(runtime.generation.beam, MAX_BEAM)

    def run(items: list[Any]) -> list[Any]:
        # items: (text, beam, length penalty, alignment); translate each run of equal options together,
        # keep the order.
        answers: list[Any] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: items[i][1:])
        for (beam, penalty, aligned), group in groupby(order, key=lambda i: items[i][1:]):
            indices = list(group)
            found = runtime.translate([items[i][0] for i in indices], beam=beam, alignments=aligned,
                                      length_penalty=penalty, batch_size=max(64, len(indices) * beam))  # fmt: skip
            for i, result in zip(indices, found, strict=True):
                answers[i] = result.to_dict()
        return answers

    def observe(size: int, seconds: float) -> None:
        metrics.observe_batch("/v1/translate", size, seconds)

    batcher = MicroBatcher(run, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, on_batch=observe)

    @router.post("/v1/translate")
    async def translate(body: TranslateRequest, request: Request) -> Any:
        """Translate each text; with ``alignment``, show which source tokens each output token attended to."""
        texts = body.items()
        problem = check_texts(texts, settings, single=body.text is not None)
        if problem is not None:
            return problem
        beam = body.beam or default_beam
        penalty = body.length_penalty if body.length_penalty is not None else runtime.generation.length_penalty
        metrics.queued.set(batcher.queued())
        try:
            found = await batcher.submit([(text, beam, penalty, body.alignment)  # type: ignore[list-item]
                                          for text in texts], gone=request.is_disconnected)  # fmt: skip
        except BatcherStopped as exc:  # shutting down
            return error_response(503, "unavailable", str(exc))
        if found is None:  # its sentences not started are not decoded (a timed-out client's had been)
            return client_gone("its translations")
        return {"model": runtime.name, "translations": found}

    def refresh() -> None:
        metrics.queued.set(batcher.queued())

    info = {"generation": {**runtime.options().__dict__, "beam": default_beam}, "limits": {"max_beam": MAX_BEAM}}
    return Routes(router=router, start=batcher.start, stop=batcher.stop, drain=batcher.drain,
                  ready=lambda: batcher.running, refresh=refresh, info=info)  # fmt: skip
