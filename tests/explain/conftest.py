"""Predictors for explanation tests: every registered model, untrained, plus trained planted-word models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attend.data.tokenization import TextTokenizer
from attend.inference import Predictor, load
from attend.models import build
from attend.models.minilm import tokenizer_path
from attend.training import TrainingArgs, train
from tests.conftest import planted_rows, write_csv

#: Small configs of every registered model; the explain API must work for each.
MODEL_CONFIGS = {
    "encoder_attention_pool": {"model_type": "encoder", "dim": 32, "num_layers": 2, "num_heads": 2,
                               "pooling": "attention"},
    "encoder_cls": {"model_type": "encoder", "dim": 32, "num_layers": 2, "num_heads": 4, "pooling": "cls"},
    "encoder_mean": {"model_type": "encoder", "dim": 32, "num_layers": 1, "num_heads": 2, "pooling": "mean"},
    "bilstm_attention": {"model_type": "bilstm_attention", "embed_dim": 16, "hidden_dim": 16},
    "minilm": {"model_type": "minilm", "pretrained": False, "bert": {"num_layers": 2}},
}  # fmt: skip

TEXTS = [
    "the film was wonderful",
    "a long and tedious story about a camera that nobody wanted to see again",
    "great",
    "the music",
]


def untrained_predictor(name: str) -> Predictor:
    torch.manual_seed(0)
    config = dict(MODEL_CONFIGS[name])
    if config["model_type"] == "minilm":
        tokenizer = TextTokenizer.from_file(tokenizer_path(), max_length=64)
    else:
        texts = [row["text"] for row in planted_rows(200)]
        tokenizer = TextTokenizer.train(texts, vocab_size=300, max_length=64)
        config.update(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
        if config["model_type"] == "encoder":
            config["max_length"] = 64
    model = build(config).eval()
    return Predictor(model=model, tokenizer=tokenizer, labels=["neg", "pos"], config={"model": config})


@pytest.fixture(scope="session")
def planted_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Predictor]:
    """Models trained on the planted-word task (the label is decided by one planted word)."""
    root = Path(tmp_path_factory.mktemp("planted"))
    data = write_csv(root / "planted.csv", planted_rows(600, seed=1))
    args = {"epochs": 5, "batch_size": 16, "progress": False, "vocab_size": 500, "seed": 0}
    trained = {}
    for name, model, options, lr in [
        ("encoder", "encoder", {"dim": 32, "num_layers": 2, "num_heads": 2, "pooling": "attention"}, 3e-3),
        ("encoder_cls", "encoder", {"dim": 32, "num_layers": 1, "num_heads": 2, "pooling": "cls"}, 3e-3),
        ("bilstm_attention", "bilstm_attention", {"embed_dim": 32, "hidden_dim": 32}, 1e-2),
    ]:
        result = train(data, root / name, model=model, model_options=options, args=TrainingArgs(**{**args, "lr": lr}))
        assert result.metrics["accuracy"] > 0.9, (name, result.report)
        trained[name] = load(root / name)
    return trained
