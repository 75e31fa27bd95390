"""Predictors for explanation tests: every registered model, untrained, plus trained planted-word models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attend.data.tokenization import TextTokenizer
from attend.models import build
from attend.models.minilm import tokenizer_path
from attend.runtime import TorchTextClassifier, load
from tests.conftest import SMALL_MODELS, planted_rows

#: Small configs of the models explanations must work for: every registered one, and more poolings.
MODEL_CONFIGS = {
    "encoder_attention_pool": {"model_type": "encoder", **SMALL_MODELS["encoder"]},
    "encoder_cls": {"model_type": "encoder", "dim": 32, "num_layers": 2, "num_heads": 4, "pooling": "cls"},
    "encoder_mean": {"model_type": "encoder", "dim": 32, "num_layers": 1, "num_heads": 2, "pooling": "mean"},
    **{name: {"model_type": name, **options} for name, options in SMALL_MODELS.items() if name != "encoder"},
}

TEXTS = [
    "the film was wonderful",
    "a long and tedious story about a camera that nobody wanted to see again",
    "great",
    "the music",
]


def untrained_predictor(name: str) -> TorchTextClassifier:
    torch.manual_seed(0)
    config = dict(MODEL_CONFIGS[name])
    if config["model_type"] in ("minilm", "e5", "m3e"):
        tokenizer = TextTokenizer.from_file(tokenizer_path(), max_length=64)
    else:
        texts = [row["text"] for row in planted_rows(200)]
        tokenizer = TextTokenizer.train(texts, vocab_size=300, max_length=64)
        config.update(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
        if config["model_type"] == "encoder":
            config["max_length"] = 64
    model = build(config).eval()
    return TorchTextClassifier(model=model, tokenizer=tokenizer, labels=["neg", "pos"], config={"model": config})


@pytest.fixture(scope="session")
def planted_models(trained: dict[str, Path]) -> dict[str, TorchTextClassifier]:
    """The session's models trained on the planted-word task (the label is decided by one planted word)."""
    return {name: load(trained[name]) for name in ("encoder", "encoder_cls", "bilstm_attention")}
