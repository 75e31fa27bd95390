"""Compression: dynamic int8 (ONNX Runtime and PyTorch), head pruning, and the rebuilt test split they are judged on.

Bounds. int8: on the planted-word task (400 held-out texts) int8 accuracy stays within 2 points
of fp32 (measured: 0 points, max probability change ~5e-4; a 2-point drop would mean 8 texts
flipped). Pruning is exact: a pruned model computes what the unpruned one computes with those
heads' outputs zeroed, up to float32 reassociation (measured 0 to 1e-7; asserted 1e-5).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from attend.attention import MultiHeadAttention, capture_attention
from attend.attention import backends as attention_backends
from attend.data.readers import DataError
from attend.data.splits import rebuild_split
from attend.data.tokenization import TextTokenizer
from attend.deploy.export import INT8_FILE, ONNX_FILE
from attend.deploy.pruning import head_importance, masked_heads, prune, select_heads
from attend.deploy.quantization import quantize
from attend.io import ModelDirError, atomic_write_json, save_weights
from attend.models import build
from attend.models.minilm import tokenizer_path
from attend.runtime import TorchTextClassifier, load
from attend.runtime.onnx import OnnxTextClassifier, session_for
from attend.training import TrainingArgs, train
from tests.conftest import copy_model, planted_rows, write_csv

INT8_ACCURACY_BOUND = 0.02
EXACT = 1e-5
TEXTS = ["the film was wonderful", "a dreadful and tedious story about the camera", "great", "the music was awful"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("compress"))


@pytest.fixture(scope="module")
def encoder_dir(trained: dict[str, Path], root: Path) -> Path:
    """An encoder with 2 layers of 4 heads, trained on the planted-word task (600 rows: 60 test, 60 dev)."""
    return copy_model(trained["encoder"], root)


@pytest.fixture(scope="module")
def loaded_bilstm_dir(root: Path, trained: dict[str, Path]) -> Path:
    """A BiLSTM trained on texts handed over already loaded: no heads, and no rebuildable test split."""
    from attend.data.splits import load_labelled

    directory = root / "bilstm"
    args = TrainingArgs(epochs=1, progress=False, vocab_size=200)
    options = {"embed_dim": 8, "hidden_dim": 8}
    train(load_labelled(trained["data"]), directory, model="bilstm_attention", model_options=options, args=args)
    return directory


@pytest.fixture(scope="module")
def quantized(encoder_dir: Path) -> tuple[dict, dict]:
    """``quantize(runtime="both")`` once for the module: (its report, metrics.json as training left it)."""
    before = json.loads((encoder_dir / "metrics.json").read_text())
    return quantize(encoder_dir, runtime="both"), before


@pytest.fixture(scope="module")
def minilm_dir(root: Path) -> Path:
    """A small untrained MiniLM saved as a model directory (pruning needs no training to be checked)."""
    return _small_bert_dir(root, "minilm")


def _small_bert_dir(root: Path, kind: str) -> Path:
    """A small untrained classifier of the BERT family (``minilm``, ``e5``, ``m3e``) as a model
    directory, read with MiniLM's vocabulary (the embedding table is sized to it)."""
    torch.manual_seed(0)
    config = {"model_type": kind, "pretrained": False, "num_labels": 2,
              "bert": {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "intermediate_size": 128,
                       "vocab_size": 30522}}  # fmt: skip
    model = build(config)
    directory = root / kind
    directory.mkdir()
    tokenizer = TextTokenizer.from_file(tokenizer_path(), max_length=64)
    tokenizer.save(directory / "tokenizer.json")
    full = {"model": model.config.to_dict(), "labels": ["neg", "pos"], "tokenizer": {"max_length": 64}}
    full["weights_sha256"] = save_weights(model, directory / "model.safetensors")
    atomic_write_json(directory / "config.json", full)
    return directory


# --- the rebuilt test split ------------------------------------------------------------------------


def test_the_test_split_is_rebuilt_exactly_and_refused_when_the_data_changed(encoder_dir: Path, root: Path) -> None:
    test = rebuild_split(encoder_dir, "test")
    metrics = json.loads((encoder_dir / "metrics.json").read_text())
    assert len(test) == metrics["num_examples"] == 60
    # Same texts the trainer scored: re-evaluating on them reproduces the recorded accuracy.
    from attend.runtime import evaluate

    assert evaluate(encoder_dir, test)["accuracy"] == pytest.approx(metrics["accuracy"])
    assert len(rebuild_split(encoder_dir, "train")) + len(rebuild_split(encoder_dir, "dev")) + len(test) == 600
    config = json.loads((encoder_dir / "config.json").read_text())
    assert config["data"]["rebuildable"] is True and len(config["data"]["sha256"]) == 64
    config["data"]["sha256"] = "0" * 64
    with pytest.raises(DataError, match="has changed since the model was trained"):
        rebuild_split(config, "test")
    config["data"]["path"] = str(root / "gone.csv")
    with pytest.raises(DataError, match="is not there any more; pass labelled data"):
        rebuild_split(config, "test")


# --- quantisation ----------------------------------------------------------------------------------


def test_quantize_both_runtimes_keeps_accuracy_and_records_it(
    encoder_dir: Path, root: Path, quantized: tuple[dict, dict]
) -> None:
    report, before = quantized
    onnx_dir = encoder_dir / "onnx"
    assert report["onnx"]["exported"] is True and (onnx_dir / ONNX_FILE).is_file() and (onnx_dir / INT8_FILE).is_file()
    assert report["onnx"]["bytes"]["int8"] < report["onnx"]["bytes"]["fp32"]
    assert report["data"].startswith("test split of") and "(60 examples)" in report["data"]
    for runtime in ("onnx", "torch"):
        result = report[runtime]
        assert result["fp32"]["accuracy"] - result["int8"]["accuracy"] <= INT8_ACCURACY_BOUND, result
        assert 0 < result["max_abs_diff_probability"] < 0.05, result
    # metrics.json: every key training wrote is still there, the quantisation result beside them.
    after = json.loads((encoder_dir / "metrics.json").read_text())
    assert {key: after[key] for key in before} == before
    assert set(after["quantized"]) == {"onnx", "torch"}
    assert json.loads((onnx_dir / "metrics.json").read_text())["quantized"]["onnx"]["int8"] == report["onnx"]["int8"]
    assert json.loads((onnx_dir / "config.json").read_text())["onnx"]["int8"]["file"] == INT8_FILE

    # Again, on a larger labelled set: the fresh export is reused, the torch result kept.
    data = write_csv(root / "more.csv", planted_rows(400, seed=7))
    again = quantize(encoder_dir, runtime="onnx", data=data)
    assert again["onnx"]["exported"] is False and again["data"].endswith("(400 examples)")
    assert again["onnx"]["fp32"]["accuracy"] - again["onnx"]["int8"]["accuracy"] <= INT8_ACCURACY_BOUND
    merged = json.loads((encoder_dir / "metrics.json").read_text())["quantized"]
    assert merged["torch"] == after["quantized"]["torch"] and merged["onnx"]["data"] == again["data"]


def test_int8_models_load_for_serving(encoder_dir: Path, quantized: tuple[dict, dict]) -> None:
    fp32 = load(encoder_dir)
    torch_int8 = load(encoder_dir, runtime="torch", int8=True)
    assert isinstance(torch_int8, TorchTextClassifier)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    modules = list(torch_int8.model.modules())
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in modules) == 2 * 6 + 2  # 6 per block, pooling, head
    assert not any(isinstance(m, nn.Linear) for m in modules)
    assert all(not b.attn._packable() for b in torch_int8.model.blocks)  # q, k, v run as three int8 products
    quantized_linears = [m for m in modules if isinstance(m, DynamicQuantizedLinear)]
    assert all(m.weight().qscheme() == torch.per_channel_affine for m in quantized_linears)  # a scale per row
    assert torch_int8.predict(TEXTS) == fp32.predict(TEXTS)
    onnx_int8 = load(encoder_dir / "onnx", runtime="onnx", int8=True)
    assert isinstance(onnx_int8, OnnxTextClassifier) and onnx_int8.quantized
    # Every weight matrix is int8 in the ONNX graph too, the packed q/k/v one included (the graph
    # concatenates it per call; only constant folding before quantisation makes it a weight).
    nodes = onnx.load(str(encoder_dir / "onnx" / INT8_FILE)).graph.node
    assert sum(n.op_type == "MatMulInteger" for n in nodes) == 2 * 4 + 2  # q/k/v, output, 2 feed-forward; pooling, head
    assert onnx_int8.predict(TEXTS) == fp32.predict(TEXTS)
    assert float(abs(onnx_int8.predict_proba(TEXTS) - fp32.predict_proba(TEXTS)).max()) < 0.05
    with pytest.raises(ModelDirError, match=r"or serve .*onnx"):
        load(encoder_dir, runtime="onnx")


def test_an_int8_answer_for_a_text_is_the_same_in_every_batch(encoder_dir: Path, quantized: tuple[dict, dict]) -> None:
    """Dynamic int8 takes its activation range from the whole input: before, a text's probabilities
    (and under load its label) moved with the other texts of its call, served or not."""
    import numpy as np

    others = ["the camera " * 40 + "was awful and loud", "great", "a wonderful film with a dreadful long story " * 3]
    for model in (load(encoder_dir, runtime="torch", int8=True), load(encoder_dir / "onnx", runtime="onnx", int8=True)):
        alone = np.stack([model.predict_proba([text])[0] for text in TEXTS])
        mixed = model.predict_proba([*others, *TEXTS, *others], batch_size=64)[len(others) : len(others) + len(TEXTS)]
        assert np.array_equal(alone, mixed), (model.backend, float(abs(alone - mixed).max()))
        assert model.batch_dependent
        assert [[i] for i in range(len(TEXTS))] == sorted(model.plan(TEXTS, 32))  # explanations too
    assert not load(encoder_dir).batch_dependent


def test_int8_session_runs_layer_norm_unfused(encoder_dir: Path, quantized: tuple[dict, dict], root: Path) -> None:
    # ONNX Runtime would merge each residual Add + LayerNormalization of the int8 graph into its
    # SkipLayerNormalization kernel, the slower one on CPU (DISABLED_OPTIMIZERS); attend's
    # sessions leave that rewrite off, with every other optimisation on.
    import onnxruntime as ort

    graph = encoder_dir / "onnx" / INT8_FILE
    default = ort.SessionOptions()
    default.optimized_model_filepath = str(root / "default.onnx")
    default.log_severity_level = 3
    ort.InferenceSession(str(graph), default, providers=["CPUExecutionProvider"])
    session_for(graph, threads=1, save_optimized=root / "attend.onnx")
    fused = [n.op_type for n in onnx.load(str(root / "default.onnx")).graph.node]
    ours = [n.op_type for n in onnx.load(str(root / "attend.onnx")).graph.node]
    assert fused.count("SkipLayerNormalization") >= 1 and "SkipLayerNormalization" not in ours
    assert ours.count("LayerNormalization") == fused.count("SkipLayerNormalization") + fused.count("LayerNormalization")
    assert "DynamicQuantizeMatMul" in ours  # the other fusions still apply


def test_quantize_errors_are_clear(encoder_dir: Path, loaded_bilstm_dir: Path, quantized: tuple[dict, dict]) -> None:
    with pytest.raises(ValueError, match="runtime='fp16'"):
        quantize(encoder_dir, runtime="fp16")
    with pytest.raises(ModelDirError, match="is an ONNX model directory: --runtime torch measures the PyTorch model"):
        quantize(encoder_dir / "onnx", runtime="torch")
    with pytest.raises(ModelDirError, match="--runtime bf16 measures the PyTorch model, so it needs"):
        quantize(encoder_dir / "onnx", runtime="bf16")
    with pytest.raises(DataError, match=r"passed in already loaded.*--data FILE"):
        quantize(loaded_bilstm_dir, runtime="torch")


def test_quantize_checks_the_graph_before_it_writes_anything(
    encoder_dir: Path, quantized: tuple[dict, dict], tmp_path: Path
) -> None:
    """A model.onnx not the one recorded had been quantised, its int8 graph's hash recorded, and only
    then refused: put back, the directory passed every check and served another export's int8
    graph. A truncated one failed in protobuf with a traceback."""
    import shutil

    copy = tmp_path / "onnx"
    shutil.copytree(encoder_dir / "onnx", copy)
    kept = {name: (copy / name).read_bytes() for name in ("config.json", "model.int8.onnx")}
    graph = (copy / "model.onnx").read_bytes()
    for wrong in (graph[:10_000], b"", graph + b"\0"):
        (copy / "model.onnx").write_bytes(wrong)
        with pytest.raises(ModelDirError, match=r"model.onnx does not match the hash"):
            quantize(copy, runtime="onnx")
        assert {name: (copy / name).read_bytes() for name in kept} == kept
    (copy / "model.onnx").write_bytes(graph)
    assert load(copy, runtime="onnx", int8=True).predict(["a fine film"])  # as it was: still its own int8 graph


# --- pruning ---------------------------------------------------------------------------------------


def _logits(predictor: TorchTextClassifier | nn.Module, tokenizer: TextTokenizer, texts: list[str]) -> torch.Tensor:
    model = predictor.model if isinstance(predictor, TorchTextClassifier) else predictor
    with torch.inference_mode():
        return model(tokenizer.encode(texts)).logits


def test_a_pruned_model_with_layers_of_other_head_counts_explains_over_the_mean_of_layers(
    encoder_dir: Path, root: Path
) -> None:
    """Before: --layer mean stacked the layers' maps, which a pruned model's differing head counts broke."""
    from attend.explain import explain

    out = root / "pruned_uneven"
    prune(encoder_dir, out, heads=1)
    pruned = load(out)
    assert len({block.attn.num_heads for block in pruned.model.blocks}) == 2
    (mean,) = explain(pruned, TEXTS[:1], "attention", layer="mean")
    layers = [explain(pruned, TEXTS[:1], "attention", layer=i)[0].importance for i in range(2)]
    # Raw attention read out through the pooling is linear in the map: the mean of layers' maps gives
    # the mean of layers' importances.
    assert mean.importance == pytest.approx([(a + b) / 2 for a, b in zip(*layers, strict=True)], abs=1e-6)
    with pytest.raises(ValueError, match=r"layers have 3 or 4 heads \(pruned\)"):
        explain(pruned, TEXTS[:1], "attention", layer="mean", head=0)
    small = next(i for i, block in enumerate(pruned.model.blocks) if block.attn.num_heads == 3)
    with pytest.raises(ValueError, match=r"head=3; the layer chosen has 3 heads \(use 0..2\) \(pruned: its layers"):
        explain(pruned, TEXTS[:1], "attention", layer=small, head=3)


def test_pruning_zero_heads_changes_nothing(encoder_dir: Path, root: Path) -> None:
    report = prune(encoder_dir, root / "pruned0", heads=0)
    original, pruned = load(encoder_dir), load(root / "pruned0")
    assert report["heads_after"] == report["heads_before"] == 8 and report["removed"] == {}
    assert report["parameters_after"] == report["parameters_before"]
    assert torch.equal(_logits(pruned, pruned.tokenizer, TEXTS), _logits(original, original.tokenizer, TEXTS))


@pytest.mark.parametrize("importance", ["masking", "attention"])
def test_pruned_encoder_equals_the_original_with_those_heads_masked(
    encoder_dir: Path, root: Path, importance: str
) -> None:
    out = root / f"pruned_{importance}"
    report = prune(encoder_dir, out, heads=3, importance=importance)
    original, pruned = load(encoder_dir), load(out)  # rebuilt from config.json alone
    config = json.loads((out / "config.json").read_text())
    removed = {int(layer): heads for layer, heads in config["model"]["pruned_heads"].items()}
    assert sum(map(len, removed.values())) == 3 and report["removed"] == config["model"]["pruned_heads"]
    assert report["heads_per_layer"] == [4 - len(removed.get(i, [])) for i in range(2)]
    assert report["parameters_after"] < report["parameters_before"]
    assert report["max_abs_diff_vs_masked"] <= EXACT and report["importance_data"].startswith("dev split")
    for index, block in enumerate(pruned.model.blocks):
        kept = 4 - len(removed.get(index, []))
        assert block.attn.num_heads == kept and block.attn.q_proj.weight.shape == (kept * 8, 32)
        assert block.attn.out_proj.weight.shape == (32, kept * 8)

    texts = [row["text"] for row in planted_rows(30, seed=11)]
    unmasked = _logits(original, original.tokenizer, texts)
    with masked_heads(original.model, removed):
        masked = _logits(original, original.tokenizer, texts)
    assert (masked - unmasked).abs().max() > 1e-4  # the mask does something
    torch.testing.assert_close(_logits(pruned, pruned.tokenizer, texts), masked, atol=EXACT, rtol=0)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pruning"]["before"] == report["before"] and metrics["accuracy"] == report["after"]["accuracy"]
    assert config["pruning"]["removed"] == report["removed"]
    # It learned from the same texts as the original: evaluate still counts them (it said nothing).
    assert original.training_overlap(texts) == pruned.training_overlap(texts) is not None


def test_pruned_model_keeps_the_fused_path_and_its_attention_maps(
    encoder_dir: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = root / "pruned_fused"
    prune(encoder_dir, out, heads=2)
    pruned = load(out)
    calls = []
    fused = attention_backends.F.scaled_dot_product_attention

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(attention_backends.F, "scaled_dot_product_attention", counting)
    encoded = pruned.tokenizer.encode(TEXTS)
    with torch.inference_mode(), capture_attention(pruned.model) as capture:
        pruned.model(encoded)
    assert len(calls) == 2 and all(b.attn.backend_name == "sdpa" for b in pruned.model.blocks)
    length = encoded["input_ids"].shape[1]
    heads = [b.attn.num_heads for b in pruned.model.blocks]
    assert sum(heads) == 6 and [tuple(w.shape) for w in capture.weights] == [(4, h, length, length) for h in heads]
    real = encoded["attention_mask"].bool()
    for weights in capture.weights:  # rows of real queries are distributions
        torch.testing.assert_close(weights.sum(-1).transpose(1, 2)[real], torch.ones(int(real.sum()), weights.shape[1]))


def test_pruning_a_pruned_model_records_original_head_indices(encoder_dir: Path, root: Path) -> None:
    prune(encoder_dir, root / "first", heads=2)
    first = json.loads((root / "first" / "config.json").read_text())["model"]["pruned_heads"]
    report = prune(root / "first", root / "second", heads=2)
    second = json.loads((root / "second" / "config.json").read_text())["model"]["pruned_heads"]
    assert sum(map(len, second.values())) == 4 and report["heads_after"] == 4
    for layer, heads in first.items():
        assert set(heads) <= set(second[layer])  # indices stay those of the original 4 heads
    assert all(0 <= h < 4 for heads in second.values() for h in heads)
    original = load(encoder_dir)
    with masked_heads(original.model, {int(k): v for k, v in second.items()}):
        masked = _logits(original, original.tokenizer, TEXTS)
    twice = load(root / "second")
    torch.testing.assert_close(_logits(twice, twice.tokenizer, TEXTS), masked, atol=EXACT, rtol=0)


def test_pruned_minilm_equals_masking_and_reloads(minilm_dir: Path, root: Path) -> None:
    data = write_csv(root / "minilm_eval.csv", planted_rows(40, seed=5))
    dev = write_csv(root / "minilm_dev.csv", planted_rows(40, seed=6))
    out = root / "minilm_pruned"
    report = prune(minilm_dir, out, fraction=0.5, data=data, dev_data=dev)
    assert report["heads_before"] == 8 and report["heads_after"] == 4 and report["max_abs_diff_vs_masked"] <= EXACT
    config = json.loads((out / "config.json").read_text())
    pruned_heads = config["model"]["bert"]["pruned_heads"]
    assert config["model"]["pretrained"] is False and sum(map(len, pruned_heads.values())) == 4
    original, pruned = load(minilm_dir), load(out)
    with masked_heads(original.model, {int(k): v for k, v in pruned_heads.items()}):
        masked = _logits(original, original.tokenizer, TEXTS)
    torch.testing.assert_close(_logits(pruned, pruned.tokenizer, TEXTS), masked, atol=EXACT, rtol=0)
    with pytest.raises(DataError, match=r"records no training data source.*dev_data=, --dev-data FILE"):
        prune(minilm_dir, root / "nodev", heads=1, data=data)


@pytest.mark.parametrize("kind", ["e5", "m3e"])
def test_every_bert_classifier_can_be_pruned(kind: str, root: Path) -> None:
    directory = _small_bert_dir(root, kind)
    data = write_csv(root / f"{kind}_eval.csv", planted_rows(40, seed=5))
    dev = write_csv(root / f"{kind}_dev.csv", planted_rows(40, seed=6))
    report = prune(directory, root / f"{kind}_pruned", heads=1, data=data, dev_data=dev)
    assert report["heads_before"] == 8 and report["heads_after"] == 7 and report["max_abs_diff_vs_masked"] <= EXACT
    assert load(root / f"{kind}_pruned").config["model"]["model_type"] == kind


def test_prune_errors_are_clear(encoder_dir: Path, loaded_bilstm_dir: Path, root: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of heads="):
        prune(encoder_dir, root / "bad", heads=1, fraction=0.5)
    with pytest.raises(ValueError, match=r"^heads=7: every layer keeps at least one head, so at most 6 of the 8 "):
        prune(encoder_dir, root / "bad", heads=7)
    with pytest.raises(ValueError, match=r"^fraction=0.99: 8 of the 8 heads, but .* at most 6 .*; give fraction=0.75"):
        prune(encoder_dir, root / "bad", fraction=0.99)
    with pytest.raises(ValueError, match=r"importance='random'"):
        prune(encoder_dir, root / "bad", heads=1, importance="random")
    with pytest.raises(ValueError, match="would overwrite the model"):
        prune(encoder_dir, encoder_dir, heads=1)
    other = copy_model(loaded_bilstm_dir, root, "another-model")
    files = sorted(p.name for p in other.iterdir())
    with pytest.raises(ValueError, match="already holds a model; pass --overwrite"):
        prune(encoder_dir, other, heads=1, overwrite=False)
    from attend.cli import main

    assert main(["prune", str(encoder_dir), "--out", str(other), "--heads", "1"]) == 2
    assert sorted(p.name for p in other.iterdir()) == files
    # A bad value is said first: it had waited until --overwrite was given, one fix at a time.
    with pytest.raises(ValueError, match=r"heads=-1 must be a non-negative integer"):
        prune(encoder_dir, other, heads=-1)
    with pytest.raises(ValueError, match=r"importance='random'"):
        prune(encoder_dir, other, heads=1, importance="random")
    with pytest.raises(ValueError, match=r"'bilstm_attention' has no multi-head attention layers.*'e5', 'm3e'"):
        prune(loaded_bilstm_dir, root / "bad", heads=1)
    assert not (root / "bad").exists()


def test_prune_scores_heads_on_dev_data_given_when_the_training_file_is_gone(
    encoder_dir: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from attend.cli import main

    moved = copy_model(encoder_dir, root, "moved")
    config = json.loads((moved / "config.json").read_text())
    config["data"]["path"] = str(root / "gone.csv")
    (moved / "config.json").write_text(json.dumps(config))
    files = {}
    for split in ("dev", "test"):
        part = rebuild_split(encoder_dir, split)
        rows = [{"text": text, "label": labels[0]} for text, labels in zip(part.texts, part.labels, strict=True)]
        files[split] = str(write_csv(root / f"moved-{split}.csv", rows))
    out = str(root / "moved-pruned")
    assert main(["prune", str(moved), "--out", out, "--heads", "1", "--data", files["test"]]) == 2
    assert "gone.csv is not there any more" in capsys.readouterr().err  # and it says how: --dev-data FILE
    assert main(["prune", str(moved), "--out", out, "--heads", "1", "--data", files["test"], "--dev-data",
                 files["dev"], "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["importance_data"].startswith(files["dev"]) and sum(map(len, report["removed"].values())) == 1
    assert "scored on" not in report["importance_data"]
    # Heads chosen on the texts they are judged on: the figure had been reported as a held-out one.
    assert main(["prune", str(moved), "--out", out, "--heads", "1", "--data", files["test"], "--dev-data",
                 files["test"], "--json", "--overwrite"]) == 0  # fmt: skip
    said = json.loads(capsys.readouterr().out)["importance_data"]
    count = len(rebuild_split(encoder_dir, "test"))
    assert f"; {count} of them are texts of the data the result is scored on: the heads were chosen on them" in said
    assert main(["quantize", str(moved), "--dev-data", files["dev"]]) == 2
    assert "--dev-data is the data --max-loss searches on" in capsys.readouterr().err


def test_select_heads_never_empties_a_layer() -> None:
    importance = [torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.0, 0.05])]
    assert select_heads(importance, 0) == {}
    assert select_heads(importance, 2) == {1: [1, 2]}
    assert select_heads(importance, 3) == {0: [0], 1: [1, 2]}  # layer 1 keeps its best head
    with pytest.raises(ValueError, match="at most 3 can go"):
        select_heads(importance, 4)


def test_head_importance_scores_every_head(encoder_dir: Path) -> None:
    predictor = load(encoder_dir)
    dev = rebuild_split(encoder_dir, "dev")
    masking = head_importance(predictor, dev, method="masking")
    attention = head_importance(predictor, dev, method="attention")
    assert [tuple(s.shape) for s in masking] == [tuple(s.shape) for s in attention] == [(4,), (4,)]
    assert all(torch.isclose(s.norm(), torch.tensor(1.0)) for s in masking)  # normalised per layer (Michel et al.)
    assert all(((s > 0) & (s <= 1)).all() for s in attention)  # mean largest attention weight
    assert all(p.requires_grad for p in predictor.model.parameters())  # left as found


@pytest.mark.parametrize(
    "options",
    [{}, {"score": "cosine", "learn_temperature": True}, {"score": "additive", "gate": True},
     {"adaptive_span": 8, "score": "bilinear"}],
)  # fmt: skip
def test_multihead_prune_heads_equals_zeroing_their_outputs(options: dict) -> None:
    torch.manual_seed(0)
    module = MultiHeadAttention(24, 4, **options).eval()
    x = torch.randn(3, 7, 24)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = True
    with torch.no_grad(), masked_heads(nn.ModuleList([module]), {0: [0, 2]}):
        masked = module(x, key_padding_mask=padding)[0]
    module.prune_heads([0, 2])
    assert module.num_heads == 2 and module.inner_dim == 12 and module.head_dim == 6
    with torch.no_grad():
        pruned, weights = module(x, key_padding_mask=padding, need_weights=True)
    torch.testing.assert_close(pruned, masked, atol=EXACT, rtol=0)
    assert weights is not None and weights.shape == (3, 2, 7, 7)
    rebuilt = MultiHeadAttention(24, 2, head_dim=6, **options)
    rebuilt.load_state_dict(module.state_dict())  # the shape a config with 2 heads of width 6 builds
    with pytest.raises(ValueError, match="cannot prune all 2 heads"):
        module.prune_heads([0, 1])
    with pytest.raises(ValueError, match=r"heads \[5\] out of range"):
        module.prune_heads([5])


def test_accuracy_budget_search_ranks_groups_by_drift_and_stops_within_budget() -> None:
    from attend.deploy.quantization import _keep_fp32

    def trial(kept):  # (dev loss in points, drift): group 2 moves the probabilities least, then 0
        loss = 1.0 - 0.45 * (2 in kept) - 0.3 * (0 in kept) - 0.6 * (3 in kept)
        drift = 0.02 - 0.008 * (2 in kept) - 0.005 * (0 in kept) - 0.002 * (3 in kept)
        return loss, drift

    # Group 3 alone has the lower loss (a noisy count), group 2 the least drift: 2 is kept.
    kept, loss, search = _keep_fp32(4, trial, max_loss=0.6)
    assert kept == [2] and loss == pytest.approx(0.55)
    assert [t["fp32"] for t in search] == [[], [0], [1], [2], [3]]  # every group scored once, all recorded
    kept, loss, search = _keep_fp32(4, trial, max_loss=0.3)
    assert kept == [2, 0] and loss == pytest.approx(0.25) and search[-1]["fp32"] == [2, 0]
    kept, loss, search = _keep_fp32(4, trial, max_loss=-1.0)
    assert search[-1]["fp32"] == [2, 0, 3, 1]  # over budget: every group tried
    # ... and the trial that lost least kept, fewest groups first (the last trial had been, however it did)
    assert kept == [2, 0, 3] and loss == pytest.approx(-0.35)
    assert _keep_fp32(4, trial, max_loss=1.0)[:2] == ([], 1.0)  # within budget as it is: nothing kept


def test_quantize_with_an_accuracy_budget_records_what_it_kept(encoder_dir: Path, root: Path) -> None:
    import shutil

    directory = root / "budget"
    shutil.copytree(encoder_dir, directory)
    shutil.rmtree(directory / "onnx", ignore_errors=True)
    report = quantize(directory, runtime="onnx", max_loss=0.0)
    budget = report["onnx"]["accuracy_budget"]
    # pre-norm blocks: (q/k/v, output) and (feed-forward in, out) per block, then (pooling projection, head)
    assert budget["groups"] == "sub-layer" and budget["group_count"] == 2 * 2 + 1
    assert budget["weights"] == sum(
        p.numel() for n, p in load(encoder_dir).model.named_parameters() if p.dim() == 2 and "embed" not in n
    )  # every product's matrix, counted once
    assert budget["dev_examples"] == 60 and budget["search"][0]["fp32"] == []
    kept = budget["fp32_groups"]
    assert budget["within_budget"] == (budget["dev_loss_points"] <= 0.0)
    nodes = onnx.load(str(directory / "onnx" / INT8_FILE)).graph.node
    assert sum(n.op_type == "MatMulInteger" for n in nodes) == 10 - 2 * len(kept)
    # Every group kept fp32 leaves no int8 product: the head, a Gemm that the quantiser renames
    # "<name>_MatMul" before it reads the names to exclude, had stayed int8.
    from attend.deploy.quantization import _prepared, _quantize_prepared, _sublayer_groups

    with _prepared(directory / "onnx" / ONNX_FILE) as prepared:
        groups, _, _ = _sublayer_groups(prepared)
        assert any(n.op_type == "Gemm" for n in onnx.load(str(prepared)).graph.node)
        _quantize_prepared(prepared, root / "all-fp32.onnx", [name for group in groups for name in group])
    assert not any(n.op_type == "MatMulInteger" for n in onnx.load(str(root / "all-fp32.onnx")).graph.node)
    stored = json.loads((directory / "onnx" / "config.json").read_text())["onnx"]["int8"]
    assert stored["fp32_groups"] == kept
    with pytest.raises(ValueError, match="max_loss=-1"):
        quantize(directory, runtime="onnx", max_loss=-1)
    with pytest.raises(ValueError, match="searched with the ONNX runtime, not runtime="):
        quantize(directory, runtime="torch", max_loss=0.5)


def test_the_deploy_package_gives_its_functions_even_once_their_modules_are_imported() -> None:
    """Before: ``attend.deploy.quantize`` and ``.prune`` were modules of those names, so once imported
    (by the CLI, or the first access) the package gave the module, not the function."""
    import importlib

    import attend.deploy

    importlib.import_module("attend.deploy.quantization")
    importlib.import_module("attend.deploy.pruning")
    from attend.deploy import prune as prune_function
    from attend.deploy import quantize as quantize_function

    assert callable(quantize_function) and callable(prune_function)
    assert callable(attend.deploy.quantize) and attend.deploy.prune is prune
