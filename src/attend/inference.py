"""Load a saved model directory and predict: :func:`load` returns a :class:`Predictor`.

Loading reads JSON and safetensors only, so a model directory can never run code on the
machine that loads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attend.data.tokenization import TextTokenizer
from attend.io import ModelDirError, read_model_dir
from attend.models import build, config_from_dict

__all__ = ["CALL_COST_TOKENS", "Predictor", "length_batches", "load", "validate_texts"]

#: What one forward call costs beyond its tokens, in padded-token equivalents. Measured for
#: MiniLM on CPU with one thread: about 8.5 ms per call and 0.25 ms per padded token (batch 1
#: vs batch 32 of 32-token texts), so about 34; small models and ONNX Runtime pay less per
#: call, and a lower value only makes the plan split a little more eagerly.
CALL_COST_TOKENS = 32
#: Texts tokenised and planned together by :meth:`Predictor.predict_proba_truncated`.
PLAN_WINDOW = 4096


def length_batches(
    lengths: Sequence[int], batch_size: int, *, call_cost: float = CALL_COST_TOKENS
) -> list[list[int]]:
    """Split items of these token lengths into batches that cost the least to run, padding included.

    A batch is padded to its longest member, so one long text in a batch of short ones
    multiplies the work (WordNet glosses, MiniLM, one thread: 32 random glosses run at 73
    texts/s as one batch, 147 as two halves by length). Items are sorted by length and cut into
    runs of at most ``batch_size``; where to cut is chosen exactly, by dynamic programming over
    the sorted lengths, minimising the sum over batches of ``call_cost + size * longest``: a
    cut is made only when the padding it saves outweighs the price of one more call.

    Args:
        lengths: Token count per item.
        batch_size: Most items per batch.
        call_cost: Fixed cost of a call, in padded tokens (:data:`CALL_COST_TOKENS`).

    Returns:
        Lists of item indices, shortest items first; every index exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    n = len(order)
    if n == 0:
        return []
    sorted_lengths = np.asarray(lengths, dtype=np.float64)[order]
    best = np.zeros(n + 1)  # best[i]: cheapest plan for the i shortest items
    cut = np.zeros(n + 1, dtype=np.int64)  # where the last batch of that plan starts
    for i in range(1, n + 1):
        starts = np.arange(max(0, i - batch_size), i)
        costs = best[starts] + call_cost + (i - starts) * sorted_lengths[i - 1]
        k = int(np.argmin(costs))  # ties: the earliest start, i.e. the larger batch
        best[i], cut[i] = costs[k], starts[k]
    batches: list[list[int]] = []
    end = n
    while end > 0:
        batches.append(order[cut[end] : end].tolist())
        end = int(cut[end])
    return batches[::-1]


def validate_texts(texts: Sequence[str] | str, *, field: str = "texts") -> list[str]:
    """Check a batch of texts; errors name the field, the index and the value."""
    if isinstance(texts, str):
        raise ValueError(f"{field} must be a list of strings, not one string (wrap it in a list)")
    checked = list(texts)
    if not checked:
        raise ValueError(f"{field} is empty")
    for i, text in enumerate(checked):
        if not isinstance(text, str):
            raise ValueError(f"{field}[{i}] is {type(text).__name__} {text!r}, expected a string")
        if not text.strip():
            raise ValueError(f"{field}[{i}] is an empty text")
    return checked


@dataclass
class Predictor:
    """A trained model with its tokenizer and labels, ready to predict and explain.

    Attributes:
        model: The network, in eval mode.
        tokenizer: The tokenizer it was trained with.
        labels: Label names, in logit order.
        config: The directory's ``config.json``.
        path: Where it was loaded from.
    """

    model: torch.nn.Module
    tokenizer: TextTokenizer
    labels: list[str]
    config: dict[str, Any]
    path: Path | None = None

    @property
    def multi_label(self) -> bool:
        return bool(self.config["model"].get("multi_label", False))

    def _call_cost(self) -> float:
        """A call's cost in padded positions, for :func:`length_batches`.

        :data:`CALL_COST_TOKENS`, divided by the model's ``padding_cost`` when it has one: a model
        whose layers skip padding (MiniLM, the encoder; :mod:`attend.attention.unpad`) says what a
        padded position costs it against a real token. The real tokens cost the same whatever
        the plan, so only calls and padded positions are traded, and dividing the call's price
        by the padding's is the same trade.
        """
        return CALL_COST_TOKENS / float(getattr(self.model, "padding_cost", 1.0))

    def _batches(self, texts: list[str], batch_size: int) -> list[list[int]]:
        """The :func:`length_batches` plan for ``texts`` (explanations and focus metrics batch as
        predictions do, so they pad no more than predictions do)."""
        return length_batches([len(row) for row in self.tokenizer.ids(texts)], batch_size, call_cost=self._call_cost())

    def to_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over labels, or independent sigmoids when multi-label."""
        logits = logits.detach().float()
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, -1)

    def _encoded_probabilities(self, encoded: dict[str, Any]) -> np.ndarray:
        return self.to_probabilities(self.model(encoded).logits).numpy()

    @torch.inference_mode()
    def predict_proba_truncated(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(N, num_labels)`` and, per text, whether it was cut to the model's ``max_length``.

        One tokenisation serves both, so a service can flag truncated texts at no extra cost.
        Texts are tokenised once, then run in the batches of :func:`length_batches` (at most
        ``batch_size`` texts each, cut where padding would cost more than another call), planned
        over windows of :data:`PLAN_WINDOW` texts so memory stays bounded on large inputs.
        """
        checked = validate_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        probs = np.zeros((len(checked), len(self.labels)), dtype=np.float32)
        truncated = np.zeros(len(checked), dtype=bool)
        window = max(PLAN_WINDOW, batch_size)  # token ids of this many texts at a time: bounded memory
        for offset in range(0, len(checked), window):
            rows, cut = self.tokenizer.ids_truncated(checked[offset : offset + window])
            truncated[offset : offset + len(rows)] = cut
            for batch in length_batches([len(row) for row in rows], batch_size, call_cost=self._call_cost()):
                index = [offset + i for i in batch]
                probs[index] = self._encoded_probabilities(self.tokenizer.pad([rows[i] for i in batch]))
        return probs, truncated

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``(N, num_labels)``: softmax, or independent sigmoids when multi-label."""
        return self.predict_proba_truncated(texts, batch_size=batch_size)[0]

    def predict(self, texts: Sequence[str], *, batch_size: int = 64, threshold: float = 0.5) -> list[Any]:
        """The top label per text (a list of labels above ``threshold`` when multi-label)."""
        probs = self.predict_proba(texts, batch_size=batch_size)
        if self.multi_label:
            return [[self.labels[j] for j in np.flatnonzero(row >= threshold)] for row in probs]
        return [self.labels[int(j)] for j in probs.argmax(1)]

    def top_k(self, texts: Sequence[str], k: int = 3, *, batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable labels per text, with probabilities, most probable first."""
        if k < 1:
            raise ValueError(f"k={k} must be >= 1")
        probs = self.predict_proba(texts, batch_size=batch_size)
        k = min(k, len(self.labels))
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.labels[j], float(row[j])) for j in idx] for row, idx in zip(probs, order, strict=True)]

    def explain(self, texts: Sequence[str], method: str = "rollout", **options: Any) -> list[dict[str, Any]]:
        """Per text: tokens, predicted label and probability, and a token-importance vector (JSON-ready).

        A shortcut to :func:`attend.explain.explain` (see there for ``method`` and ``options``);
        weights come from the capture API while every layer stays on its fused path.
        """
        from attend.explain import explain

        maps = bool(options.get("maps", False))
        return [e.to_dict(maps=maps) for e in explain(self, texts, method, **options)]


def load(path: str | os.PathLike[str]) -> Predictor:
    """Load a model directory written by ``attend train`` (safetensors + JSON only).

    Raises:
        ModelDirError: the directory is missing, incomplete, holds a pickle, or is corrupt.
    """
    path = Path(path)
    config, weights = read_model_dir(path)
    model_config = dict(config["model"])
    if "pretrained" in model_config:
        model_config["pretrained"] = False  # the directory's own weights replace the package's
    try:
        model = build(config_from_dict(model_config))
    except (TypeError, ValueError) as exc:
        raise ModelDirError(f"{path / 'config.json'}: invalid model config ({exc})") from None
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelDirError(f"{path / 'model.safetensors'} does not fit the model in config.json ({exc})") from None
    if missing or unexpected:
        raise ModelDirError(
            f"{path / 'model.safetensors'} does not fit the model in config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    model.eval()
    max_length = int(config.get("tokenizer", {}).get("max_length", 256))
    tokenizer = TextTokenizer.from_file(path / "tokenizer.json", max_length=max_length)
    labels = list(config["labels"])
    if not labels:
        raise ModelDirError(f"{path / 'config.json'} lists no labels")
    return Predictor(model=model, tokenizer=tokenizer, labels=labels, config=config, path=path)
