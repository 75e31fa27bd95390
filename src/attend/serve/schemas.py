"""Request and response bodies of the HTTP service (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from attend.data.validation import text_problem

__all__ = [
    "ErrorBody",
    "ExplainRequest",
    "ExplainResponse",
    "LabelScore",
    "ModelInfo",
    "OpenAnswer",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "TextsRequest",
    "id_text",
]


def id_text(value: str | int, limit: int) -> str:
    """An id given over HTTP as a string or a whole number (a ticket number: ``5`` is ``"5"``), as its
    text without surrounding spaces, 1 to ``limit`` characters (a ValueError naming ``id`` else)."""
    text = str(value).strip()
    if not text or len(text) > limit:
        raise ValueError(f"id must be 1 to {limit} characters")
    if (problem := text_problem(text)) is not None and "surrogate" in problem:  # a 500 at the database had been
        raise ValueError(f"id {problem}")
    return text


class TextsRequest(BaseModel):
    """One text (``text``) or several (``texts``); exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="One text to process.")
    texts: list[str] | None = Field(default=None, description="Several texts, processed in one call.")

    @model_validator(mode="after")
    def _one_of(self) -> TextsRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" or "texts"')
        return self

    def items(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class PredictRequest(TextsRequest):
    top_k: int = Field(default=3, ge=1, le=1000, strict=True,
                       description="Labels to return per text, most probable first (an integer).")  # fmt: skip
    threshold: float | None = Field(
        default=None, gt=0, le=1, strict=True,  # true or "0.3" is no threshold, as top_k takes no "3"
        description="A multi-label model's probability from which a label is chosen (default 0.5); refused for a "
        "single-label model.",
    )  # fmt: skip


class LabelScore(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    label: str = Field(description="The most probable label.")
    labels: list[str] | None = Field(
        default=None,
        description="A multi-label model's labels: all of probability >= the request's threshold, 0.5 by default "
        "(None for a single-label model).",
    )  # fmt: skip
    probability: float
    top: list[LabelScore]
    truncated: bool = Field(description="The text had more tokens than the model reads; its start was used.")
    warning: str | None = Field(default=None, description="Set when the model cannot read the text at all.")


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class ExplainRequest(TextsRequest):
    method: str = Field(default="rollout", description="An attend.explain method (see GET /v1/model).")
    target: str | None = Field(default=None, description="Explain this label instead of the predicted one "
                               "(grad_attention, integrated_gradients: the methods that read the label).")


class ExplainResponse(BaseModel):
    model: str
    explanations: list[dict[str, Any]] = Field(
        description="Per text: tokens, importance (same length), label, probability, special, spans, focus."
    )


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # a task's own entries (its Routes.info) are shown too

    name: str | None = Field(description="The model's name; null when only apps are served.")
    task: str | None
    runtime: str | None
    config: dict[str, Any] | None
    version: dict[str, Any]
    metrics: dict[str, Any] | None
    limits: dict[str, Any]
    labels: list[str] | None = Field(default=None, description="A classifier's labels, in logit order.")
    explain_methods: list[str] | None = Field(default=None, description="What POST /v1/explain takes as method.")
    apps: dict[str, Any] | None = Field(default=None, description="What each mounted app says of itself.")
    generation: dict[str, Any] | None = Field(
        default=None, description="A translator's decoding defaults (beam, length_penalty, ...), which "
        "POST /v1/translate applies where a request leaves them out.")  # fmt: skip


class OpenAnswer(BaseModel):
    """An answer's documented fields (a subclass names them); any others a route adds pass through as
    they are, so the schema types an answer without dropping what the CLI's JSON has beside them."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    error: dict[str, Any] = Field(description="`type`, `message` and, for validation errors, `details`.")
