"""ONNX export: parity with PyTorch for every registered model, dynamic axes, attention outputs,
the ONNX model directory, OnnxTextClassifier and load_runtime.

Tolerance: float32 graphs differ from eager PyTorch only in operation order; measured here the
largest logit difference is ~5e-7 and the largest attention-map difference ~2e-7, so the asserts
(1e-5 on logits and maps, 1e-5 on probabilities) leave 20x headroom and still catch any real
mismatch (a frozen axis, a dropped mask), which shows up at 1e-2 or more.

Each model is exported once per module (an export takes several seconds) and reused; models are
as small as still exercises every path (the 2-layer BiLSTM case is checked in eager mode, where
it is cheap).
"""

from __future__ import annotations

import importlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attend.attention import capture_attention
from attend.attention.unpad import unpadding_modules
from attend.data.tokenization import TextTokenizer
from attend.deploy import export as export_module
from attend.deploy.export import INT8_FILE, ONNX_FILE, ExportParityError, export_failure, export_onnx
from attend.io import ModelDirError
from attend.models import build
from attend.models.minilm import tokenizer_path
from attend.runtime import TorchTextClassifier, load
from attend.runtime.onnx import OnnxTextClassifier, denormals_flushed, load_onnx, session_for
from tests.conftest import planted_rows

ATOL = 1e-5
#: Batch size and lengths unlike the export example (2 texts of 3 and 6 words).
NEW_TEXTS = [
    "the film was wonderful",
    "a long and tedious story about a camera that nobody wanted to see again and again and again",
    "great",
    "the music of the scene was superb",
    "awful",
]
FAST = {"epochs": 2, "batch_size": 16, "progress": False, "vocab_size": 300}


@pytest.fixture(scope="module")
def tiny_minilm() -> TorchTextClassifier:
    """An untrained, narrow MiniLM with the real WordPiece tokenizer: the same graph, a fraction of the size."""
    torch.manual_seed(0)
    config = {
        "model_type": "minilm", "pretrained": False, "num_labels": 2,
        "bert": {"num_layers": 1, "hidden_size": 64, "num_heads": 4, "intermediate_size": 128},
    }  # fmt: skip
    model = build(config).eval()
    tokenizer = TextTokenizer.from_file(tokenizer_path(), max_length=64)
    return TorchTextClassifier(model, tokenizer, ["neg", "pos"], {"model": model.config.to_dict()})


@pytest.fixture(scope="module")
def exported(
    trained: dict[str, Path], tiny_minilm: TorchTextClassifier, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[dict, Path]]:
    """Each model exported once, with attention outputs: (report, ONNX directory)."""
    root = Path(tmp_path_factory.mktemp("onnx"))
    sources = {"encoder": trained["encoder"], "bilstm_attention": trained["bilstm_attention"], "minilm": tiny_minilm}
    return {name: (export_onnx(src, root / name, attentions=True), root / name) for name, src in sources.items()}


def test_an_export_keeps_the_training_texts_it_was_made_from(exported: dict, trained: dict[str, Path]) -> None:
    """evaluate on an export counts the examples its model learned from, as on the model (it said nothing)."""
    from attend.data.readers import read_table

    texts = read_table(trained["data"]).texts
    _, onnx_dir = exported["encoder"]
    counted = load(onnx_dir).training_overlap(texts)
    assert counted is not None and counted == load(trained["encoder"]).training_overlap(texts) > 0


def _torch_predictor(name: str, trained: dict[str, Path], tiny_minilm: TorchTextClassifier) -> TorchTextClassifier:
    return tiny_minilm if name == "minilm" else load(trained[name])


@pytest.mark.parametrize("name", ["encoder", "bilstm_attention", "minilm"])
def test_export_matches_pytorch_on_a_new_batch_size_and_lengths(
    name: str, exported: dict, trained: dict[str, Path], tiny_minilm: TorchTextClassifier
) -> None:
    report, onnx_dir = exported[name]
    assert report["parity"]["max_abs_diff_logits"] < ATOL
    assert report["parity"]["batch_sizes"][-1] == 1  # a single text was checked too
    torch_predictor = _torch_predictor(name, trained, tiny_minilm)
    onnx_predictor = load_onnx(onnx_dir)
    # 5 texts, 3 to ~25 tokens: neither the export example's batch size (2) nor its length.
    outputs = onnx_predictor.run(NEW_TEXTS)
    encoded = torch_predictor.tokenizer.encode(NEW_TEXTS)
    assert outputs["logits"].shape == (len(NEW_TEXTS), 2) and outputs["attention_mask"].shape[1] > 6
    with torch.inference_mode(), capture_attention(torch_predictor.model) as capture:
        logits = torch_predictor.model(encoded).logits
    np.testing.assert_allclose(outputs["logits"], logits.numpy(), atol=ATOL, rtol=0)
    # The exported maps are the capture API's maps, layer by layer, on the rows of real query
    # tokens (rows of padding queries differ: MiniLM's PyTorch layers skip padding, the graph not).
    maps = [outputs[key] for key in onnx_predictor.output_names if key.startswith("attention_")]
    assert len(maps) == len(capture.weights)
    real = outputs["attention_mask"].astype(bool)  # (B, L)
    for ours, reference in zip(maps, capture.weights, strict=True):
        assert ours.shape == tuple(reference.shape)
        rows = real[:, None, :, None]
        np.testing.assert_allclose(ours * rows, reference.numpy() * rows, atol=ATOL, rtol=0)
        assert (ours * ~real[:, None, None, :] == 0).all()  # padding keys get no weight in any row
    if capture.pooling_weights:
        np.testing.assert_allclose(outputs["pooling_weights"], capture.pooling_weights[-1].numpy(), atol=ATOL, rtol=0)
    expected_maps = {"encoder": 2, "bilstm_attention": 0, "minilm": 1}[name]
    assert len(maps) == expected_maps


def test_onnx_directory_is_self_contained_and_records_the_export(exported: dict, trained: dict[str, Path]) -> None:
    report, onnx_dir = exported["encoder"]
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["config.json", "metrics.json", "model.onnx", "tokenizer.json",
                                                          "training_texts.safetensors"]
    config = json.loads((onnx_dir / "config.json").read_text())
    source = json.loads((trained["encoder"] / "config.json").read_text())
    assert config["labels"] == source["labels"] and config["model"] == source["model"]
    assert "weights_sha256" not in config  # the ONNX directory has no safetensors
    entry = config["onnx"]
    assert entry["inputs"] == ["input_ids", "attention_mask"]
    assert entry["outputs"] == ["logits", "attention_0", "attention_1", "pooling_weights"] == report["outputs"]
    assert entry["source_weights_sha256"] == source["weights_sha256"] and entry["opset"] >= 17
    assert entry["parity"]["source"].startswith("test split of")  # the model's own held-out texts
    assert (onnx_dir / "metrics.json").read_text() == (trained["encoder"] / "metrics.json").read_text()
    # Dynamic axes are declared as such in the graph itself.
    import onnx

    graph = onnx.load(str(onnx_dir / ONNX_FILE)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    out_dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert out_dims["logits"] == ["batch", 2] and out_dims["attention_1"] == ["batch", 4, "sequence", "sequence"]


def test_onnx_predictor_answers_like_the_torch_predictor(exported: dict, trained: dict[str, Path]) -> None:
    for name in ("encoder", "bilstm_attention"):
        torch_predictor, onnx_predictor = load(trained[name]), load_onnx(exported[name][1], threads=1)
        texts = [row["text"] for row in planted_rows(50, seed=3)]
        np.testing.assert_allclose(
            onnx_predictor.predict_proba(texts, batch_size=7), torch_predictor.predict_proba(texts), atol=ATOL, rtol=0
        )
        assert onnx_predictor.predict(texts) == torch_predictor.predict(texts)
        top = onnx_predictor.top_k(texts[:3], k=2)
        assert [[label for label, _ in row] for row in top] == [
            [label for label, _ in row] for row in torch_predictor.top_k(texts[:3], k=2)
        ]
        assert onnx_predictor.labels == torch_predictor.labels and onnx_predictor.multi_label is False
        assert onnx_predictor.path == exported[name][1] and onnx_predictor.config["onnx"]["attentions"] is True
        assert isinstance(onnx_predictor.tokenizer, TextTokenizer)
    assert onnx_predictor.predict_proba([]).shape == (0, len(onnx_predictor.labels))  # none: an empty answer
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        onnx_predictor.predict_proba(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="one string"):
        onnx_predictor.predict("a single string")


DENORMAL = np.float32(1e-39)  # below float32's smallest normal number, 1.18e-38


def test_denormals_are_flushed_on_every_onnx_runtime_thread_and_the_callers_state_restored(tmp_path: Path) -> None:
    """ORT's softmax is ~5x slower on masked rows unless denormals are flushed (denormals_flushed's docstring)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )  # fmt: skip
    path = tmp_path / "double.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    x = np.full(1 << 20, DENORMAL)  # large enough that two intra-op threads split it
    for threads in (1, 2):
        session = session_for(path, threads=threads)
        # Pool threads flush by the session's setting (measured: without it, two threads ran a
        # masked softmax at 0.81 ms instead of 0.20 ms).
        assert session.get_session_options().get_session_config_entry("session.set_denormal_as_zero") == "1"
        # Outside the block the calling thread's share keeps its denormals (a pool thread's share,
        # at two threads, is flushed by the session's own setting).
        assert (session.run(None, {"x": x})[0] == 2 * DENORMAL).any()
        with denormals_flushed() as flushed:
            assert flushed
            # Zero everywhere: the calling thread's share and the pool thread's share.
            assert not session.run(None, {"x": x})[0].any()
        assert DENORMAL * np.float32(2) == np.float32(2e-39)  # this thread's arithmetic as before
    with pytest.raises(RuntimeError), denormals_flushed():
        raise RuntimeError("restored on the way out of an error too")
    assert DENORMAL * np.float32(2) != 0


def test_onnx_predictor_runs_its_graph_with_denormals_flushed(exported: dict) -> None:
    class Recorder:  # the session, noting how denormal arithmetic behaves on the thread that runs it
        def __init__(self, session: object) -> None:
            self.session, self.products = session, []

        def run(self, names: list[str], feed: dict) -> list:
            self.products.append(float(DENORMAL * np.float32(2)))
            return self.session.run(names, feed)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.session, name)

    predictor = load_onnx(exported["encoder"][1], threads=1)
    recorder = Recorder(predictor.session)
    predictor.session = recorder  # type: ignore[assignment]
    predictor.predict_proba(NEW_TEXTS)
    predictor.run(NEW_TEXTS[:2], ["logits"])
    assert len(recorder.products) >= 2 and set(recorder.products) == {0.0}
    assert DENORMAL * np.float32(2) != 0  # and the caller's thread is as it was


@pytest.mark.parametrize("num_layers", [1, 2])
def test_bilstm_unpacked_path_equals_the_packed_one(trained: dict[str, Path], num_layers: int) -> None:
    """The traceable BiLSTM path (used for export) gives the packed path's states, padding and all."""
    predictor = load(trained["bilstm_attention"])
    torch.manual_seed(0)
    config = {**predictor.config["model"], "num_layers": num_layers}
    model = build(config).eval()
    encoded = predictor.tokenizer.encode([*NEW_TEXTS, "x"])
    encoded["attention_mask"][-1] = 0  # a fully padded row too
    with torch.inference_mode():
        packed = model(encoded).hidden_states
        unpacked = model.bidirectional_by_reversal(model.embed(encoded["input_ids"]), encoded["attention_mask"].sum(1)
                                                   .clamp_min(1))  # fmt: skip
    torch.testing.assert_close(unpacked, packed, atol=1e-6, rtol=0)


def test_a_graph_that_disagrees_with_pytorch_is_refused_and_nothing_is_written(
    exported: dict, trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, onnx_dir = exported["encoder"]
    predictor = load(trained["encoder"])
    with torch.no_grad():
        predictor.model.head.bias += 0.5  # the PyTorch model now differs from the graph below

    def stale_graph(
        predictor: TorchTextClassifier, path: Path, *, attentions: bool, opset: int | None, unpad: bool
    ) -> list[str]:
        shutil.copyfile(onnx_dir / ONNX_FILE, path)
        return ["logits", "attention_0", "attention_1", "pooling_weights"]

    monkeypatch.setattr(export_module, "_export_graph", stale_graph)
    out = tmp_path / "out"
    with pytest.raises(ExportParityError, match=r"disagree .* logits 0\.5.* > tolerance 0\.0001"):
        export_onnx(predictor, out, attentions=True, texts=NEW_TEXTS)
    assert not out.exists() and not list(tmp_path.iterdir())  # no output, no staging left behind


def test_an_adaptive_span_encoder_exports_and_matches_pytorch_on_padded_texts(tmp_path: Path) -> None:
    """The span's empty rows (a padded query far from every real key) are masked without a
    data-dependent branch, so torch.export traces them; the graph agrees with PyTorch where they occur."""
    torch.manual_seed(0)
    tokenizer = TextTokenizer.train([row["text"] for row in planted_rows(100)], vocab_size=200, max_length=32)
    config = {"model_type": "encoder", "vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id,
              "num_labels": 2, "dim": 32, "num_layers": 1, "num_heads": 2, "max_length": 32,
              "attention": {"adaptive_span": 2, "span_ramp": 1}}  # fmt: skip
    model = build(config).eval()
    predictor = TorchTextClassifier(model, tokenizer, ["neg", "pos"], {"model": model.config.to_dict()})
    report = export_onnx(predictor, tmp_path / "span", attentions=True, texts=NEW_TEXTS)
    assert report["parity"]["max_abs_diff_logits"] < ATOL
    graph = load_onnx(tmp_path / "span")
    np.testing.assert_allclose(graph.predict_proba(NEW_TEXTS), predictor.predict_proba(NEW_TEXTS), atol=ATOL)


def test_export_refuses_to_overwrite_its_source_or_unrelated_files(trained: dict[str, Path], exported: dict,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    with pytest.raises(ValueError, match="would overwrite the model"):
        export_onnx(trained["encoder"], trained["encoder"])
    with pytest.raises(ValueError, match="would overwrite the model"):
        export_onnx(trained["encoder"], trained["encoder"].parent)
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a model directory"):
        export_onnx(trained["encoder"], unrelated)
    assert (unrelated / "todo.txt").read_text() == "keep me"
    for opset in (14, 23):  # 14 was written as 18 with an exporter traceback; 23's attention fails in ONNX Runtime
        with pytest.raises(ValueError, match=f"opset={opset}: choose one of 18-22"):
            export_onnx(trained["encoder"], tmp_path / "opset", opset=opset)
    assert not (tmp_path / "opset").exists()
    with pytest.raises(ModelDirError, match="no such model directory"):
        export_onnx(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ModelDirError, match="already an ONNX model directory: export the PyTorch"):
        export_onnx(exported["encoder"][1], tmp_path / "again")
    # Another model in the way is replaced only when asked (`attend export` asks with --overwrite).
    other = Path(shutil.copytree(trained["encoder"], tmp_path / "other"))
    files = sorted(p.name for p in other.iterdir())
    with pytest.raises(ModelDirError, match="already holds a model; pass --overwrite"):
        export_onnx(trained["encoder"], other, overwrite=False)
    from attend.cli import main

    assert main(["export", str(trained["encoder"]), "--onnx", str(other)]) == 2
    assert sorted(p.name for p in other.iterdir()) == files


def test_onnx_loading_refuses_pickles_and_tampered_graphs(exported: dict, tmp_path: Path) -> None:
    _, onnx_dir = exported["encoder"]
    copy = tmp_path / "copy"
    shutil.copytree(onnx_dir, copy)
    (copy / "extra.pkl").write_bytes(b"not really a pickle")
    with pytest.raises(ModelDirError, match="pickle"):
        load_onnx(copy)
    with pytest.raises(ModelDirError, match="pickle"):
        load(copy, runtime="onnx")
    (copy / "extra.pkl").unlink()
    with open(copy / ONNX_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelDirError, match="does not match the hash"):
        load_onnx(copy)
    # config.json's labels reordered by hand: every prediction had been flipped without a word
    swapped = tmp_path / "swapped"
    shutil.copytree(onnx_dir, swapped)
    config = json.loads((swapped / "config.json").read_text(encoding="utf-8"))
    config["labels"] = config["labels"][::-1]
    (swapped / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"lists the labels \['pos', 'neg'\], but model.onnx was exported with "
                                            r"'neg,pos'"):  # fmt: skip
        load_onnx(swapped)


def test_load_runtime_picks_the_runtime_and_explains_mismatches(exported: dict, trained: dict[str, Path]) -> None:
    _, onnx_dir = exported["encoder"]
    assert isinstance(load(trained["encoder"]), TorchTextClassifier)
    assert isinstance(load(onnx_dir, runtime="onnx"), OnnxTextClassifier)
    with pytest.raises(ModelDirError, match=r"attend export .* --onnx OUT` and serve OUT"):
        load(trained["encoder"], runtime="onnx")
    with pytest.raises(ModelDirError, match="runs only with ONNX Runtime; this needs the PyTorch model directory"):
        load(onnx_dir, runtime="torch")
    with pytest.raises(ModelDirError, match=f"no int8 model \\({INT8_FILE}\\).*attend quantize"):
        load(onnx_dir, runtime="onnx", int8=True)
    with pytest.raises(ValueError, match="runtime='tensorrt'"):
        load(onnx_dir, runtime="tensorrt")
    with pytest.raises(ValueError, match=r"outputs \['attention_9'\] are not in this graph"):
        load_onnx(onnx_dir).run(["hello"], ["attention_9"])


@pytest.mark.parametrize("name", ["encoder", "minilm"])
def test_unpadded_export_runs_on_real_tokens_and_matches_pytorch(
    name: str, trained: dict[str, Path], tiny_minilm: TorchTextClassifier, tmp_path: Path
) -> None:
    import onnx

    source = tiny_minilm if name == "minilm" else trained[name]
    report = export_onnx(source, tmp_path / "onnx", unpad=True)
    assert report["parity"]["max_abs_diff_logits"] < ATOL
    graph = onnx.load(str(tmp_path / "onnx" / ONNX_FILE))
    ops = [node.op_type for node in graph.graph.node]
    assert "NonZero" in ops  # the token count is computed from the mask at run time
    # Each layer moves q/k/v onto the grid and back by row gathers (TokenLayout.unpack_heads /
    # pack_heads); the only scatter left is the last hidden states' (pooling reads the grid).
    assert ops.count("ScatterND") == 1
    torch_predictor = _torch_predictor(name, trained, tiny_minilm)
    onnx_predictor = load_onnx(tmp_path / "onnx")
    assert onnx_predictor.config["onnx"]["unpadded"] is True
    assert onnx_predictor.padding_cost == pytest.approx(torch_predictor.model.padding_cost)
    # Mixed lengths, one text, and a batch with no padding (every token is real).
    for texts in (NEW_TEXTS, NEW_TEXTS[:1], [NEW_TEXTS[2], NEW_TEXTS[2]]):
        encoded = torch_predictor.tokenizer.encode(texts)
        assert bool(encoded["attention_mask"].all()) == (texts != NEW_TEXTS)
        with torch.inference_mode():
            expected = torch_predictor.model(encoded).logits.numpy()
        np.testing.assert_allclose(onnx_predictor.run(texts, ["logits"])["logits"], expected, atol=ATOL, rtol=0)
    assert all(not m.unpad_traced for m in unpadding_modules(torch_predictor.model))  # restored
    if name == "encoder":  # int8 works on the unpadded graph, accuracy budget included
        from attend.deploy.quantization import quantize

        report = quantize(tmp_path / "onnx", runtime="onnx", max_loss=0.5)["onnx"]
        assert report["accuracy_budget"]["group_count"] >= 4 and (tmp_path / "onnx" / INT8_FILE).is_file()
        int8 = load(tmp_path / "onnx", runtime="onnx", int8=True)
        assert int8.predict(NEW_TEXTS) and int8.padding_cost == onnx_predictor.padding_cost


def test_unpadded_export_of_a_model_that_cannot_skip_padding_is_refused(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    started: list[bool] = []
    with pytest.raises(ValueError, match="BiLSTMAttentionClassifier cannot skip padding"):
        export_onnx(trained["bilstm_attention"], tmp_path / "onnx", unpad=True, on_start=lambda: started.append(True))
    assert not (tmp_path / "onnx").exists()
    assert not started  # `attend export` had said the export was beginning, then refused it


@pytest.mark.parametrize("name", ["encoder", "bilstm_attention", "minilm"])
def test_a_graph_with_attention_outputs_explains_like_pytorch(
    name: str, exported: dict, trained: dict[str, Path], tiny_minilm: TorchTextClassifier
) -> None:
    from attend.explain import explain

    torch_predictor = _torch_predictor(name, trained, tiny_minilm)
    onnx_predictor = load_onnx(exported[name][1])
    pooled = name != "minilm"  # the encoder and the BiLSTM pool by attention, tiny MiniLM by the mean
    for method in ["attention", "rollout", "flow", "uniform", *(["pooling"] if pooled else [])]:
        ours, reference = explain(onnx_predictor, NEW_TEXTS, method), explain(torch_predictor, NEW_TEXTS, method)
        for a, b in zip(ours, reference, strict=True):
            assert (a.tokens, a.label, a.target, a.method, a.spans) == (b.tokens, b.label, b.target, method, b.spans)
            np.testing.assert_allclose(a.importance, b.importance, atol=ATOL, rtol=0)
            assert a.probability == pytest.approx(b.probability, abs=ATOL)
    if name != "bilstm_attention":  # one head of one layer, with the maps themselves
        ours = explain(onnx_predictor, NEW_TEXTS, "attention", layer=0, head=1, maps=True)
        reference = explain(torch_predictor, NEW_TEXTS, "attention", layer=0, head=1, maps=True)
        for a, b in zip(ours, reference, strict=True):
            np.testing.assert_allclose(a.importance, b.importance, atol=ATOL, rtol=0)
            for ours_map, reference_map in zip(a.maps, b.maps, strict=True):  # type: ignore[arg-type]
                np.testing.assert_allclose(ours_map, reference_map, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"'grad_attention' needs gradients.*or the PyTorch fp32 model"):
        explain(onnx_predictor, NEW_TEXTS[:1], "grad_attention")
    # Another label's explanation: the hint had named grad_attention, which this runtime then refused.
    with pytest.raises(ValueError, match=r"another one; none of this model's methods does \(they need gradients: "
                                         r"explain its PyTorch model directory"):  # fmt: skip
        explain(onnx_predictor, NEW_TEXTS[:1], "attention", target=onnx_predictor.labels[0])
    with pytest.raises(ValueError, match=r"another one; use grad_attention or integrated_gradients$"):
        explain(torch_predictor, NEW_TEXTS[:1], "attention", target=torch_predictor.labels[0])
    if not pooled:
        with pytest.raises(ValueError, match="minilm has no attention pooling"):
            explain(onnx_predictor, NEW_TEXTS[:1], "pooling")


def test_onnx_service_explains_from_its_graph_and_says_what_it_cannot(
    exported: dict, trained: dict[str, Path], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from attend.explain import explain
    from attend.serve.app import ServeSettings, create_app

    settings = ServeSettings(runtime="onnx")
    with TestClient(create_app(load_onnx(exported["encoder"][1]), settings)) as client:
        answer = client.post("/v1/explain", json={"texts": NEW_TEXTS[:2], "method": "rollout"})
        gradients = client.post("/v1/explain", json={"text": "great", "method": "integrated_gradients"})
        methods = client.get("/v1/model").json()["explain_methods"]
    assert answer.status_code == 200
    reference = explain(load(trained["encoder"]), NEW_TEXTS[:2], "rollout")
    for got, expected in zip(answer.json()["explanations"], reference, strict=True):
        assert got["tokens"] == expected.tokens
        np.testing.assert_allclose(got["importance"], expected.importance, atol=ATOL, rtol=0)
    assert methods == ["attention", "pooling", "rollout", "flow", "random", "uniform"]
    assert gradients.status_code == 422 and "integrated_gradients" in gradients.json()["error"]["message"]

    with TestClient(create_app(load_onnx(exported["minilm"][1]), settings)) as client:  # mean pooling
        listed = client.get("/v1/model").json()["explain_methods"]
        assert listed == ["attention", "rollout", "flow", "random", "uniform"]
        assert client.post("/v1/explain", json={"text": "great", "method": "pooling"}).status_code == 422

    plain = export_onnx(trained["encoder"], tmp_path / "plain")  # no --attentions
    assert plain["outputs"] == ["logits"]
    # The maps are the softmax the graph applies anyway, not a second one beside it: a graph
    # with attention outputs predicts as fast as one without.
    import onnx

    def softmaxes(directory: Path) -> int:
        return sum(node.op_type == "Softmax" for node in onnx.load(str(directory / ONNX_FILE)).graph.node)

    assert softmaxes(exported["encoder"][1]) == softmaxes(tmp_path / "plain") == 3  # 2 layers + the pooling
    with TestClient(create_app(load_onnx(tmp_path / "plain"), settings)) as client:
        refused = client.post("/v1/explain", json={"text": "great"})
        assert client.get("/v1/model").json()["explain_methods"] == []
    assert refused.status_code == 400 and "--attentions" in refused.json()["error"]["message"]
    with pytest.raises(ValueError, match=r"this onnx model records no attention.*--attentions"):
        explain(load_onnx(tmp_path / "plain"), ["great"], "rollout")


def test_attend_explain_takes_an_onnx_directory(
    exported: dict, trained: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    from attend.cli import main
    from attend.explain import explain

    onnx_dir = exported["encoder"][1]
    assert main(["explain", str(onnx_dir), *NEW_TEXTS[:2], "--method", "flow", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for got, expected in zip(printed, explain(load(trained["encoder"]), NEW_TEXTS[:2], "flow"), strict=True):
        assert got["tokens"] == expected.tokens
        np.testing.assert_allclose(got["importance"], expected.importance, atol=ATOL, rtol=0)
    assert main(["explain", str(onnx_dir), "great", "--method", "integrated_gradients"]) == 2
    assert "needs gradients" in capsys.readouterr().err
    assert main(["explain", str(onnx_dir), "great", "--int8"]) == 2  # never quantised
    assert "attend quantize" in capsys.readouterr().err
    assert main(["explain", str(trained["encoder"]), "great", "--int8"]) == 2
    assert "not one" in capsys.readouterr().err


def test_faithfulness_of_an_onnx_graph_matches_pytorch(exported: dict, trained: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from attend.explain import faithfulness
    from attend.explain.faithfulness import default_methods

    onnx_predictor, torch_predictor = load_onnx(exported["encoder"][1]), load(trained["encoder"])
    methods = default_methods(onnx_predictor)
    assert methods == ["attention", "pooling", "rollout", "flow", "random", "uniform"]  # no gradient methods
    assert default_methods(torch_predictor) == [*methods[:4], "grad_attention", "integrated_gradients", *methods[4:]]
    texts = [row["text"] for row in planted_rows(24, seed=5)]
    ours, reference = faithfulness(onnx_predictor, texts, methods), faithfulness(torch_predictor, texts, methods)
    for method in methods:  # the same erasures scored by the same model: equal up to near-ties in the rankings
        for key in ("comprehensiveness", "sufficiency"):
            assert ours["methods"][method][key] == pytest.approx(reference["methods"][method][key], abs=0.02)
    assert ours["methods"]["rollout"]["comprehensiveness"] > ours["methods"]["random"]["comprehensiveness"]
    for key in ("comprehensiveness", "sufficiency"):  # each text draws its own random scores, however batched
        assert ours["methods"]["random"][key] == pytest.approx(reference["methods"]["random"][key], abs=1e-5)
    with pytest.raises(ValueError, match="needs gradients"):
        faithfulness(onnx_predictor, texts[:2], ["integrated_gradients"])
    # A method the graph cannot run is refused before any other method's work (it was refused after
    # rollout had run, its progress bar drawn); a method named twice is scored once.
    module = importlib.import_module("attend.explain.faithfulness")  # the package's name is the function

    with monkeypatch.context() as patched:
        patched.setattr(module, "explain", lambda *a, **k: pytest.fail("explained before refusing"))
        with pytest.raises(ValueError, match="'grad_attention' needs gradients"):
            faithfulness(onnx_predictor, texts[:2], ["rollout", "grad_attention"])
    assert list(faithfulness(onnx_predictor, texts[:2], ["random", "random"])["methods"]) == ["random"]


def test_an_export_that_ran_out_of_disk_is_one_line_and_another_failure_keeps_the_exporters_steps() -> None:
    """A full disk had printed the exporter's eight lines of progress after the error line, and not
    said that the disk was full, nor where."""
    log = io.StringIO("[torch.onnx] Obtain model graph ...\n[torch.onnx] Translate the graph ...\n")
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as disk:
            raise RuntimeError("serialising the model failed") from disk
    except RuntimeError as exc:
        full = export_failure("EncoderClassifier", exc, log, Path("/big/.out.tmp1/model.onnx"))
    assert str(full) == "ONNX export of EncoderClassifier failed: serialising the model failed (No space left on " \
        "device writing /big/.out.tmp1/model.onnx)"  # fmt: skip
    try:
        try:
            raise OSError("could not get source code")  # the tracer's, caught inside the exporter
        except OSError:
            raise RuntimeError("no symbolic for aten::foo") from None
    except RuntimeError as exc:
        unsupported = export_failure("EncoderClassifier", exc, log)
    assert str(unsupported).splitlines() == [
        "ONNX export of EncoderClassifier failed: no symbolic for aten::foo",
        "[torch.onnx] Obtain model graph ...",
        "[torch.onnx] Translate the graph ...",
    ]
