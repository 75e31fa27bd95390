"""``POST /v1/support/ask``: the FAQ answerer as a FastAPI router to mount in attend's service.

The index (and its encoder) is opened once, when the router is made, so a bad or pickle-bearing
index fails at start-up, not on the first request. Bodies are validated by pydantic (unknown
fields, an empty or blank question, a question over ``max_chars``, ``k`` out of range: 422);
errors from the library that a caller can fix are 422 too, never 5xx. The handler is a plain
``def``: FastAPI runs it in a worker thread, where the encoder's forward and backward passes do
not block the event loop (the attention capture is scoped per thread).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from attend.apps.support.index import SupportIndex
from attend.data.validation import text_problem
from attend.serve import Routes

__all__ = ["AskRequest", "AskResponse", "served_support_router", "support_router"]

#: Longest question accepted, in characters (the encoder reads at most 256 tokens anyway).
MAX_QUESTION_CHARS = 4000
#: Most answers one request may rank.
MAX_K = 50


class AskRequest(BaseModel):
    """A customer's question."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question to answer.")
    k: int = Field(default=3, ge=1, le=MAX_K, strict=True, description="How many FAQ answers to rank, best first.")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        problem = text_problem(value)  # invisible characters only had been the route's own 422, with no field
        if problem is not None:
            raise ValueError(f"question {problem}")
        return value


class Answer(BaseModel):
    question: str
    answer: str
    score: float = Field(description="The first-stage match score (the hand-off threshold's scale).")
    intent: str | None = None
    rerank_score: float | None = Field(
        default=None, description="Where the re-ranker ordered the answers: the score they are ordered by."
    )
    # (left out of the model, the HTTP answer had dropped it: pydantic ignores keys it does not name)
    rrf_score: float | None = Field(
        default=None, description="Under reciprocal-rank fusion: the rank-based score the answers are ordered by "
        "(score is what the hand-off judges)."
    )


class Intent(BaseModel):
    label: str | None = Field(description="None where the encoder cannot read the question (see note).")
    probability: float | None
    note: str | None = None


class Word(BaseModel):
    word: str
    start: int
    end: int
    weight: float


class AnswerWord(BaseModel):
    word: str
    weight: float
    spans: list[list[int]] = Field(description="Where the term occurs in the answer: [start, end) characters.")


class RetrievalUsed(BaseModel):
    mode: str = Field(description="What ranked this question: hybrid, dense (the encoder) or bm25.")
    note: str
    reranked: bool = Field(description="Whether the re-ranker ordered the answers (each then has rerank_score).")


class AskResponse(BaseModel):
    question: str
    answers: list[Answer] = Field(description="FAQ entries ranked by match score, best first.")
    intent: Intent | None = Field(description="The question's intent, when the FAQ has intents.")
    words: list[Word] = Field(description="The question's words by how much they drove the best match.")
    answer_words: list[AnswerWord] = Field(description="The best answer's terms that the question matched (BM25).")
    retrieval: RetrievalUsed
    handoff: bool = Field(description="True: the best match is below the calibrated threshold; ask a person.")
    reason: str
    threshold: float
    truncated: bool


def support_router(index_dir: str | os.PathLike[str] | SupportIndex, *, prefix: str = "/v1/support") -> APIRouter:
    """A router answering ``POST {prefix}/ask`` from the index in ``index_dir``.

    Raises:
        ModelDirError: The index is missing, incomplete, corrupt or holds a pickle (at start-up).
    """
    index = index_dir if isinstance(index_dir, SupportIndex) else SupportIndex.load(index_dir)
    router = APIRouter(prefix=prefix, tags=["support"])

    # exclude_unset: the keys `attend support ask --json` has, no null for one it leaves out (rerank_score
    # where nothing was re-ranked, an intent's note)
    @router.post("/ask", response_model=AskResponse, response_model_exclude_unset=True,
                 responses={422: {"description": "invalid question or k"}})  # fmt: skip
    def ask_route(body: AskRequest) -> Any:
        """Answer a question from the FAQ, with the words that drove the match; hand off when unsure."""
        try:
            return index.ask(body.question, k=body.k)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    return router


def served_support_router(runtime: Any, *, index: str) -> Routes:
    """The routes ``attend serve MODEL --support-index DIR`` mounts (the index has its own encoder),
    and what ``GET /v1/model`` says of the index (how it ranks, and why)."""
    loaded = SupportIndex.load(index)
    limits = {"max_chars": MAX_QUESTION_CHARS, "max_k": MAX_K}
    return Routes(router=support_router(loaded), info={"apps": {"support": {**loaded.describe(), "limits": limits}}})
