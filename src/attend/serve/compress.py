"""Smaller, faster models: dynamic int8 quantisation and attention-head pruning, each measured.

* :func:`quantize` (``attend quantize``): dynamic int8 (weights stored as int8, activations
  quantised on the fly per batch; no calibration data needed). ONNX Runtime's
  ``quantize_dynamic`` writes ``model.int8.onnx`` beside ``model.onnx``; for PyTorch,
  ``torch.ao`` dynamic quantisation of every ``nn.Linear`` is applied at load time
  (``load_runtime(..., quantized=True)``), so nothing but safetensors is ever stored.
* :func:`prune` (``attend prune``): removes the least important attention heads for real
  (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"), scored by head masking or
  by attention confidence (Voita et al. 2019), and writes a normal, smaller model directory.

Both judge the result on the model's own test split (rebuilt from ``config.json``, see
:func:`attend.training.rebuild_split`) or on labelled data given, and record before/after
accuracy and macro-F1 in ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attend.attention import MultiHeadAttention, capture_attention
from attend.data.readers import DataError, LabelledTexts
from attend.inference import Predictor, load
from attend.io import ModelDirError, atomic_write_json, save_weights, sha256_file
from attend.models import build, config_from_dict
from attend.models.base import kept_heads
from attend.serve._files import (
    check_output_directory,
    merge_metrics,
    publish_directory,
    read_config,
    staging_directory,
)
from attend.serve.export import INT8_FILE, ONNX_FILE, export_onnx
from attend.serve.onnx_runtime import OnnxPredictor, load_onnx, session_for

__all__ = [
    "IMPORTANCE_METHODS",
    "attention_layers",
    "head_importance",
    "masked_heads",
    "prune",
    "quantize",
    "quantize_onnx_file",
    "quantize_torch_model",
    "select_heads",
]

QUANTIZE_RUNTIMES = ("onnx", "torch", "both", "bf16")
IMPORTANCE_METHODS = ("masking", "attention")


# --- evaluation data ----------------------------------------------------------------------------


def _evaluation_data(
    model_dir: Path,
    config: Mapping[str, Any],
    data: str | os.PathLike[str] | LabelledTexts | None,
    split: str,
    *,
    hint: str = "data=, --data FILE",
) -> tuple[LabelledTexts, str]:
    """Labelled examples to judge a compressed model on, and a description of them.

    ``data`` wins when given (a file, a bundled dataset name, or loaded texts); otherwise the
    model's own ``split``, rebuilt from its config. An empty test split (``test_fraction=0``)
    falls back to dev.
    """
    from attend.training import load_labelled, rebuild_split

    if data is not None:
        if isinstance(data, LabelledTexts):
            dataset = data
        else:
            recorded = config.get("data") or {}
            dataset = load_labelled(
                data, text_col=recorded.get("text_col", "text"), label_col=recorded.get("label_col", "label"),
                multi_label=bool(config["model"].get("multi_label", False)),
            )  # fmt: skip
        if not len(dataset):
            raise DataError(f"{dataset.source}: no examples to evaluate on")
        return dataset, f"{dataset.source or 'given data'} ({len(dataset)} examples)"
    try:
        dataset = rebuild_split(model_dir, split)
        if not len(dataset) and split == "test":
            split, dataset = "dev", rebuild_split(model_dir, "dev")
    except DataError as exc:
        raise DataError(f"{exc} ({hint})") from None
    if not len(dataset):
        raise DataError(f"{model_dir}: its training run held out no {split} examples; pass labelled data ({hint})")
    return dataset, f"{split} split of {dataset.source} ({len(dataset)} examples)"


def _probabilities(predictor: Predictor | OnnxPredictor, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    probs = predictor.predict_proba(texts, batch_size=batch_size)
    return probs, time.perf_counter() - started


def _summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {"accuracy": float(metrics["accuracy"]), "macro_f1": float(metrics["macro_f1"])}


def _compare(
    reference: Predictor | OnnxPredictor,
    candidate: Predictor | OnnxPredictor,
    data: LabelledTexts,
    batch_size: int,
    *,
    precision: str = "int8",
) -> dict[str, Any]:
    """Accuracy and macro-F1 of both (keys ``fp32`` and ``precision``), their changes, and how far
    the probabilities moved."""
    from attend.training import score_probabilities

    before, seconds_before = _probabilities(reference, data.texts, batch_size)
    after, seconds_after = _probabilities(candidate, data.texts, batch_size)
    multi = reference.multi_label
    m_before = _summary(score_probabilities(before, data, reference.labels, multi))
    m_after = _summary(score_probabilities(after, data, reference.labels, multi))
    same = (before >= 0.5) == (after >= 0.5) if multi else before.argmax(1)[:, None] == after.argmax(1)[:, None]
    return {
        "fp32": m_before,
        precision: m_after,
        "accuracy_change": m_after["accuracy"] - m_before["accuracy"],
        "macro_f1_change": m_after["macro_f1"] - m_before["macro_f1"],
        "max_abs_diff_probability": float(np.abs(before - after).max()),
        "mean_abs_diff_probability": float(np.abs(before - after).mean()),
        "same_prediction": float(same.all(1).mean()),
        "eval_seconds": {"fp32": round(seconds_before, 3), precision: round(seconds_after, 3)},
    }


# --- quantisation -------------------------------------------------------------------------------


def quantize_torch_model(model: nn.Module) -> nn.Module:
    """A dynamically int8-quantised copy of ``model`` (every ``nn.Linear``), for CPU inference.

    Weights get one scale per output channel (``per_channel_dynamic_qconfig``); activations are
    quantised per call with one scale per tensor. Per-channel weights keep more of the fp32
    model: MiniLM on Rotten Tomatoes lost 0.94 test points with them, 1.41 with one scale per
    matrix (PyTorch's default). The kernels are PyTorch's default int8 library for the
    CPU: oneDNN's were tried on an AMX CPU and were faster in batches of 64 (4.6 vs 6.8 s on that
    test split) but slower one text at a time (1.33x vs 2.0-2.3x fp32 on short texts), where
    every new text length costs oneDNN a new kernel plan.

    ``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao, which is not a
    dependency here; it still works on torch 2.13 and needs nothing but the model, so it is used
    with its deprecation warnings silenced. The copy is built at load time from the fp32
    safetensors: quantised modules are never serialised (that would need pickle).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantized = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear: per_channel_dynamic_qconfig},
                                     dtype=torch.qint8)  # fmt: skip
    return quantized.eval()


def _vector_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose weight is a vector (the attention pooling's context vector): per-channel
    int8 needs a matrix, and a vector is too small to be worth quantising anyway."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    vectors = {init.name for init in graph.initializer if len(init.dims) < 2}
    return [node.name for node in graph.node if node.op_type == "MatMul" and vectors.intersection(node.input)]


@contextlib.contextmanager
def _prepared(source: Path) -> Iterator[Path]:
    """``source`` after ONNX Runtime's quantisation pre-processing, in a scratch file beside it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = source.with_name(f".{source.stem}.prepared{os.getpid()}.onnx")
    try:
        with _quiet_quantizer():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        yield prepared
    finally:
        prepared.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root.setLevel(logging.ERROR)  # the pre-processing advice is logged on the root logger
            yield
    finally:
        root.setLevel(level)


def _quantize_prepared(prepared: Path, target: Path, exclude: Sequence[str] = ()) -> None:
    """Dynamic int8 of a pre-processed graph into ``target``, atomically; ``exclude``: MatMuls kept fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with _quiet_quantizer():
            quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"],
                             nodes_to_exclude=[*_vector_matmuls(prepared), *exclude])  # fmt: skip
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def quantize_onnx_file(source: Path, target: Path) -> None:
    """Pre-process ``source`` with ONNX Runtime, then ``quantize_dynamic`` it into ``target``, atomically.

    Int8 weights for every MatMul, one scale per output channel; embeddings and other ops stay
    fp32. Pre-processing (``quant_pre_process``: ONNX Runtime's basic graph optimisations, then
    ONNX shape inference) comes first because the quantiser only converts a MatMul whose weight
    is a stored tensor: the exported attention computes its packed ``[W_q; W_k; W_v]`` with a
    Concat per call, and only constant folding turns that into a stored weight. Without it the
    q/k/v projections, a quarter of the encoder's multiply-adds, stayed fp32 (MiniLM on Rotten
    Tomatoes, one thread, batch 1: 3.2x PyTorch fp32 without, 4.4x with). Its symbolic shape
    inference is skipped: it does not complete on these graphs, and nothing here needs it.
    Chosen over also quantising the embedding Gather with one scale per tensor (same model, test
    split, measured before folding was added): accuracy 0.8298 vs 0.8188 (fp32 0.8329).
    """
    with _prepared(source) as prepared:
        _quantize_prepared(prepared, target)


def _sublayer_groups(prepared: Path) -> tuple[list[list[str]], list[int], str]:
    """The quantisable products (MatMul/Gemm with a stored matrix) of a pre-processed graph, grouped
    by sub-layer: the runs between normalisations, in execution order (an attention block's q/k/v
    and output projections; a feed-forward block's two; a pooling projection and the head). Pre-
    or post-norm, any depth, no names needed. Without normalisations (the BiLSTM), one product
    per group. Returns the groups, each group's size in weights (its multiply-adds per token),
    and the kind of group."""
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    matrices = {init.name: math.prod(init.dims) for init in graph.initializer if len(init.dims) == 2}
    groups: list[list[tuple[str, int]]] = [[]]
    for node in graph.node:
        if node.op_type in ("LayerNormalization", "SkipLayerNormalization") and groups[-1]:
            groups.append([])
        elif node.op_type in ("MatMul", "Gemm") and matrices.keys() & set(node.input):
            groups[-1].append((node.name, sum(matrices.get(name, 0) for name in node.input)))
    found = [group for group in groups if group]
    kind = "sub-layer"
    if len(found) <= 1:
        found, kind = [[product] for group in found for product in group], "product"
    return [[name for name, _ in group] for group in found], [sum(size for _, size in group) for group in found], kind


def _keep_fp32(
    groups: int, trial: Callable[[Sequence[int]], tuple[float, float]], max_loss: float
) -> tuple[list[int], float, list[dict[str, Any]]]:
    """Which groups to keep fp32: none if int8 everywhere is within ``max_loss``; else each group
    is scored alone (``trial([i])`` gives the dev accuracy loss and the drift, the mean absolute
    change of the probabilities against fp32) and groups are added in order of least drift until
    the loss is within budget or every group is kept. Returns the kept groups, their loss, and
    every trial of the search, in order.

    Drift ranks, accuracy decides. Over ~1,000 dev texts an accuracy loss moves in steps of 0.1
    point and by a few tenths from noise alone; the drift averages every probability and ranks
    the same way on dev and test. MiniLM on Rotten Tomatoes, each sub-layer kept fp32 alone:
    least dev drift was the first feed-forward (0.0120; test drift 0.0122, test loss 0.16
    points), while the least dev *loss* was the second feed-forward (-0.08 dev, but 0.31 test).
    Also tried and dropped: keeping, of the groups that meet the budget alone, the one with the
    fewest multiply-adds. It kept the first attention sub-layer (dev loss 0.24, so within
    budget; its drift 0.0158 is worse than all-int8's 0.0153), which lost 0.86 test points.
    """

    search: list[dict[str, Any]] = []

    def run(kept: list[int]) -> tuple[float, float]:
        loss, drift = trial(kept)
        search.append({"fp32": kept, "dev_loss_points": loss, "mean_abs_diff_probability": drift})
        return loss, drift

    loss = run([])[0]
    if loss <= max_loss or not groups:
        return [], loss, search
    alone = [run([i]) for i in range(groups)]
    order = sorted(range(groups), key=lambda g: (alone[g][1], alone[g][0]))  # least drift first
    kept, loss = order[:1], alone[order[0]][0]
    for i in order[1:]:
        if loss <= max_loss:
            break
        kept = [*kept, i]
        loss = run(kept)[0]
    return kept, loss, search


def _budgeted_int8(
    onnx_dir: Path, dev: LabelledTexts, max_loss: float, threads: int | None, batch_size: int, progress: bool
) -> dict[str, Any]:
    """Write ``model.int8.onnx`` keeping as few sub-layers fp32 as it takes for the dev-split
    accuracy to drop by at most ``max_loss`` points (:func:`_keep_fp32` over
    :func:`_sublayer_groups`). Only the dev split is looked at, so the test split still judges.
    """
    from attend.training import score_probabilities

    fp32 = load_onnx(onnx_dir, threads=threads)
    reference = fp32.predict_proba(dev.texts, batch_size=batch_size)
    multi = fp32.multi_label

    def accuracy(probs: np.ndarray) -> float:
        return float(score_probabilities(probs, dev, fp32.labels, multi)["accuracy"])

    base = accuracy(reference)
    scratch = onnx_dir / f".int8-search{os.getpid()}.onnx"
    with _prepared(onnx_dir / ONNX_FILE) as prepared:
        groups, costs, kind = _sublayer_groups(prepared)

        def trial(kept: Sequence[int]) -> tuple[float, float]:
            _quantize_prepared(prepared, scratch, [name for i in kept for name in groups[i]])
            candidate = OnnxPredictor(session=session_for(scratch, threads=threads), tokenizer=fp32.tokenizer,
                                      labels=fp32.labels, config=fp32.config)  # fmt: skip
            probs = candidate.predict_proba(dev.texts, batch_size=batch_size)
            loss = 100 * (base - accuracy(probs))
            if progress:
                kept_text = list(kept) or "none"
                print(f"int8 search: fp32 sub-layers {kept_text} of {len(groups)}: dev loss {loss:+.2f} points",
                      file=sys.stderr, flush=True)  # fmt: skip
            return loss, float(np.abs(probs - reference).mean())

        try:
            kept, loss, search = _keep_fp32(len(groups), trial, max_loss)
        finally:
            scratch.unlink(missing_ok=True)
        _quantize_prepared(prepared, onnx_dir / INT8_FILE, [name for i in kept for name in groups[i]])
    return {
        "max_loss_points": max_loss,
        "dev_examples": len(dev),
        "groups": kind,
        "group_count": len(groups),
        "fp32_groups": sorted(kept),
        "fp32_weights": sum(costs[i] for i in kept),
        "weights": sum(costs),
        "dev_loss_points": loss,
        "within_budget": loss <= max_loss,
        "search": search,
    }


def _fresh_export(onnx_dir: Path, config: Mapping[str, Any]) -> bool:
    """Whether ``onnx_dir`` already holds an export of exactly these weights."""
    if not (onnx_dir / ONNX_FILE).is_file():
        return False
    try:
        exported = read_config(onnx_dir)
    except ModelDirError:
        return False
    source_hash = (exported.get("onnx") or {}).get("source_weights_sha256")
    return bool(source_hash) and source_hash == config.get("weights_sha256")


def quantize(
    model_dir: str | os.PathLike[str],
    *,
    runtime: str = "onnx",
    data: str | os.PathLike[str] | LabelledTexts | None = None,
    threads: int | None = None,
    batch_size: int = 64,
    max_loss: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Dynamic int8 quantisation, measured against fp32 on held-out data; the body of ``attend quantize``.

    Args:
        model_dir: A PyTorch model directory or an ONNX model directory (from ``attend export``).
        runtime: ``"onnx"``: write ``model.int8.onnx`` next to ``model.onnx``. A PyTorch
            directory is first exported to ``MODEL_DIR/onnx/`` (re-used when it already holds
            these weights), which is then the directory to serve with ``--runtime onnx
            --quantized``. ``"torch"``: measure PyTorch dynamic int8, which
            ``load_runtime(..., quantized=True)`` applies at load (nothing is written but
            metrics). ``"both"``: both. ``"bf16"``: measure the PyTorch model cast to bfloat16,
            as ``attend serve --bf16`` runs it (not int8, but the same question: what does the
            faster model lose?).
        data: Labelled data to measure on (default: the model's own rebuilt test split).
        threads: ONNX Runtime intra-op threads (default: PyTorch's thread count).
        batch_size: Texts per inference call while measuring.
        max_loss: ONNX only: an accuracy budget in points, on the model's *dev* split. Layers
            (sub-layers) are kept fp32, least drift first, until int8 loses at most this much there
            (see :func:`_budgeted_int8`; a few extra quantisations); the result is then measured
            on the test split like any other. None: every layer int8.
        progress: Print each trial of the ``max_loss`` search to stderr.

    Returns:
        The report, also merged into ``metrics.json`` under ``"quantized"`` (other keys kept):
        per runtime fp32 and int8 accuracy/macro-F1, their changes, the largest probability
        change, the share of unchanged predictions and, for ONNX, both file sizes.

    Raises:
        ModelDirError: a bad directory, or PyTorch quantisation asked of an ONNX directory.
        DataError: no test split can be rebuilt and no ``data`` was given.
    """
    if runtime not in QUANTIZE_RUNTIMES:
        raise ValueError(f"runtime={runtime!r}; choose one of {list(QUANTIZE_RUNTIMES)}")
    if max_loss is not None and (runtime not in ("onnx", "both") or not 0 <= max_loss < 100):
        raise ValueError(f"max_loss={max_loss}: an accuracy budget in points (0-100) for the ONNX runtime only")
    path = Path(model_dir)
    config = read_config(path)
    is_onnx = isinstance(config.get("onnx"), dict)
    if not is_onnx and not (path / "model.safetensors").is_file():
        raise ModelDirError(f"{path} is not a complete model directory: model.safetensors is missing")
    runtimes = ["onnx", "torch"] if runtime == "both" else [runtime]
    if ("torch" in runtimes or "bf16" in runtimes) and is_onnx:
        source = config["onnx"].get("source")
        raise ModelDirError(
            f"{path} is an ONNX model directory: PyTorch int8 quantisation needs the PyTorch model directory "
            f"it was exported from{f' ({source})' if source else ''}"
        )
    dataset, described = _evaluation_data(path, config, data, "test")
    report: dict[str, Any] = {"model_dir": str(path), "data": described}
    results: dict[str, Any] = {}
    if "torch" in runtimes:
        fp32 = load(path)
        int8 = Predictor(
            model=quantize_torch_model(fp32.model), tokenizer=fp32.tokenizer, labels=fp32.labels,
            config=fp32.config, path=fp32.path,
        )  # fmt: skip
        results["torch"] = {
            "method": "torch.ao dynamic int8, nn.Linear, per-channel weights "
            "(applied at load: load_runtime(..., quantized=True))",
            **_compare(fp32, int8, dataset, batch_size),
        }
    if "bf16" in runtimes:
        fp32 = load(path)
        half = Predictor(
            model=copy.deepcopy(fp32.model).to(torch.bfloat16), tokenizer=fp32.tokenizer, labels=fp32.labels,
            config=fp32.config, path=fp32.path,
        )  # fmt: skip
        results["bf16"] = {
            "method": "bfloat16 weights and activations (applied at load: attend serve --bf16)",
            **_compare(fp32, half, dataset, batch_size, precision="bf16"),
        }
    if "onnx" in runtimes:
        onnx_dir = path if is_onnx else path / "onnx"
        exported = None
        if not is_onnx and not _fresh_export(onnx_dir, config):
            exported = export_onnx(path, onnx_dir, threads=threads)
        onnx_config = read_config(onnx_dir)
        budget = None
        if max_loss is None:
            quantize_onnx_file(onnx_dir / ONNX_FILE, onnx_dir / INT8_FILE)
        else:
            hint = "--max-loss searches on the dev split, which only a model trained from a file or dataset can rebuild"
            dev, _ = _evaluation_data(onnx_dir, onnx_config, None, "dev", hint=hint)
            budget = _budgeted_int8(onnx_dir, dev, max_loss, threads, batch_size, progress)
        onnx_config["onnx"]["int8"] = {
            "file": INT8_FILE,
            "sha256": sha256_file(onnx_dir / INT8_FILE),
            "method": "onnxruntime quantize_dynamic, QInt8 weights",
            **({"fp32_groups": budget["fp32_groups"], "groups": budget["groups"]} if budget else {}),
        }
        atomic_write_json(onnx_dir / "config.json", onnx_config)
        fp32_onnx = load_onnx(onnx_dir, threads=threads)
        int8_onnx = load_onnx(onnx_dir, quantized=True, threads=threads)
        results["onnx"] = {
            "method": "onnxruntime quantize_dynamic, QInt8 weights",
            "onnx_dir": str(onnx_dir),
            "exported": exported is not None,
            "bytes": {"fp32": (onnx_dir / ONNX_FILE).stat().st_size, "int8": (onnx_dir / INT8_FILE).stat().st_size},
            **_compare(fp32_onnx, int8_onnx, dataset, batch_size),
            **({"accuracy_budget": budget} if budget else {}),
        }
        if onnx_dir != path:
            merge_metrics(onnx_dir, "quantized", {"onnx": results["onnx"] | {"data": described}})
    merge_metrics(path, "quantized", {name: value | {"data": described} for name, value in results.items()})
    return report | results


# --- heads: masking, importance, selection -------------------------------------------------------


def attention_layers(model: nn.Module) -> list[MultiHeadAttention]:
    """The model's multi-head attention modules, in layer order.

    Raises:
        ValueError: the model has none (e.g. ``bilstm_attention``, whose one attention is a pooling).
    """
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ValueError(
            f"model {kind!r} has no multi-head attention layers, so it has no heads to prune "
            "(head pruning works on 'encoder' and 'minilm')"
        )
    return layers


def _gate_hook(gate: Tensor, head_dim: int) -> Any:
    """A forward pre-hook scaling each head's slice of ``out_proj``'s input by ``gate[h]``.

    ``out_proj`` reads the heads' outputs concatenated head-major ``(B, L, H * d)``, so a
    per-head factor there is Michel et al.'s gate ``xi_h`` without touching the module's code
    or its fused attention call.
    """

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (x, *rest) = args
        *lead, width = x.shape
        heads = width // head_dim
        gated = (x.view(*lead, heads, head_dim) * gate.to(x.dtype).view(heads, 1)).view(*lead, width)
        return (gated, *rest)

    return hook


@contextlib.contextmanager
def _gated(layers: Sequence[MultiHeadAttention], gates: Sequence[Tensor]) -> Iterator[None]:
    handles = [
        layer.out_proj.register_forward_pre_hook(_gate_hook(gate, layer.head_dim))
        for layer, gate in zip(layers, gates, strict=True)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def masked_heads(model: nn.Module, heads: Mapping[int, Sequence[int]]) -> Iterator[None]:
    """Zero the outputs of ``heads`` (``{layer: [head indices]}``) while the context is active.

    The oracle for pruning: a pruned model must compute exactly what the unpruned one does
    with those heads masked.
    """
    layers = attention_layers(model)
    gates = []
    for index, layer in enumerate(layers):
        gate = torch.ones(layer.num_heads)
        gate[list(heads.get(index, []))] = 0.0
        gates.append(gate)
    with _gated(layers, gates):
        yield


def _batches(texts: list[str], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def head_importance(
    predictor: Predictor, data: LabelledTexts, *, method: str = "masking", batch_size: int = 32
) -> list[Tensor]:
    """One importance score per head ``(H_l,)`` per attention layer; low = safe to remove.

    ``"masking"`` (Michel et al. 2019): each head's output is multiplied by a gate ``xi_h = 1``
    and the importance is ``|d loss / d xi_h|`` accumulated over batches of ``data`` (the
    first-order estimate of the loss change if the head were masked), then normalised per layer
    by its L2 norm, as the paper does, so layers compare. Needs labels.

    ``"attention"`` (the "confidence" of Voita et al. 2019): a head's mean, over real query
    tokens and texts, of its largest attention weight, from
    :func:`attend.explain.focus.map_focus` (``top_k_mass`` with ``k=1``). Heads that spread
    their attention thinly are pruned first. Needs no labels.
    """
    if method not in IMPORTANCE_METHODS:
        raise ValueError(f"importance={method!r}; choose one of {list(IMPORTANCE_METHODS)}")
    model = predictor.model.eval()
    layers = attention_layers(model)
    texts = data.texts
    if not texts:
        raise DataError(f"{data.source}: no examples to score heads on")
    if method == "attention":
        from attend.explain.focus import map_focus

        totals = [torch.zeros(layer.num_heads, dtype=torch.float64) for layer in layers]
        names = {id(m): name for name, m in model.named_modules()}
        with torch.inference_mode():
            for batch in _batches(texts, batch_size):
                encoded = predictor.tokenizer.encode([texts[i] for i in batch])
                with capture_attention(model, names=[names[id(layer)] for layer in layers]) as capture:
                    model(encoded)
                grouped = capture.by_name()
                for total, layer in zip(totals, layers, strict=True):
                    weights = grouped[names[id(layer)]][0]
                    confidence = map_focus(weights, encoded["attention_mask"], k=1)["top_k_mass"]  # (B, H)
                    total += confidence.double().sum(0)
        return [(total / len(texts)).float() for total in totals]

    from attend.training import label_targets

    targets = label_targets(data, predictor.labels, predictor.multi_label)
    gates = [torch.ones(layer.num_heads, requires_grad=True) for layer in layers]
    sums = [torch.zeros(layer.num_heads) for layer in layers]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in frozen:
        param.requires_grad_(False)  # only the gates need gradients
    try:
        with _gated(layers, gates), torch.enable_grad():
            for batch in _batches(texts, batch_size):
                encoded = predictor.tokenizer.encode([texts[i] for i in batch])
                logits = model(encoded).logits.float()
                if predictor.multi_label:
                    loss = F.binary_cross_entropy_with_logits(logits, targets[batch], reduction="sum")
                else:
                    loss = F.cross_entropy(logits, targets[batch], reduction="sum")
                grads = torch.autograd.grad(loss / len(texts), gates)
                for total, grad in zip(sums, grads, strict=True):
                    total += grad.abs()  # |gradient| per batch, as Hugging Face's bertology script
    finally:
        for param, flag in frozen:
            param.requires_grad_(flag)
    return [total / total.norm() if total.norm() > 0 else total for total in sums]


def select_heads(importance: Sequence[Tensor], count: int) -> dict[int, list[int]]:
    """The ``count`` least important heads over all layers, never the last head of a layer.

    Returns ``{layer: [head indices]}`` (current indices; layers losing nothing are left out).
    Ties go to the earlier layer and head, so the choice is deterministic.
    """
    available = sum(len(scores) - 1 for scores in importance)
    if not 0 <= count <= available:
        raise ValueError(
            f"cannot prune {count} heads: {sum(len(s) for s in importance)} heads in {len(importance)} layers, "
            f"and every layer keeps at least one, so at most {available} can go"
        )
    ranked = sorted((float(score), layer, head) for layer, scores in enumerate(importance)
                    for head, score in enumerate(scores.tolist()))  # fmt: skip
    remaining = [len(scores) for scores in importance]
    chosen: dict[int, list[int]] = {}
    for _, layer, head in ranked:
        if sum(len(v) for v in chosen.values()) == count:
            break
        if remaining[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            remaining[layer] -= 1
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


# --- pruning ------------------------------------------------------------------------------------


def _head_fields(model_config: dict[str, Any], path: Path) -> tuple[dict[str, Any], int]:
    """The dict of the model config holding ``pruned_heads``, and the original heads per layer."""
    kind = model_config.get("model_type")
    if kind == "encoder":
        return model_config, int(model_config["num_heads"])
    if kind == "minilm":
        return model_config["bert"], int(model_config["bert"]["num_heads"])
    raise ValueError(
        f"{path}: model {kind!r} has no multi-head attention layers, so it has no heads to prune "
        "(head pruning works on 'encoder' and 'minilm')"
    )


def _heads_to_prune(heads: int | None, fraction: float | None, total: int) -> int:
    if (heads is None) == (fraction is None):
        raise ValueError("give exactly one of heads= (a number of heads) or fraction= (a share of all heads)")
    if heads is not None:
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 0:
            raise ValueError(f"heads={heads!r} must be a non-negative integer")
        return heads
    assert fraction is not None
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction!r} must be in [0, 1)")
    return round(fraction * total)


def _count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    heads: int | None = None,
    fraction: float | None = None,
    importance: str = "masking",
    data: str | os.PathLike[str] | LabelledTexts | None = None,
    dev_data: str | os.PathLike[str] | LabelledTexts | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Remove the least important attention heads and write the smaller model; the body of ``attend prune``.

    Heads are ranked over all layers (:func:`head_importance` on the dev split) and the
    ``heads`` lowest removed (:func:`select_heads`), each layer keeping at least one. Removal
    is real: the q/k/v projections lose the heads' rows and the output projection their
    columns. ``out_dir`` is an ordinary model directory: its config records the remaining
    heads (``pruned_heads``, original head indices), so :func:`attend.load` rebuilds it from
    ``config.json`` alone, and it can be pruned, exported or quantised again.

    Args:
        model_dir: An ``encoder`` or ``minilm`` model directory.
        out_dir: Where to write the pruned model directory (not ``model_dir`` itself).
        heads: How many heads to remove in total. Exactly one of ``heads``/``fraction``.
        fraction: Share of all heads to remove, in ``[0, 1)``.
        importance: ``"masking"`` (Michel et al. 2019; needs labels) or ``"attention"``
            (Voita et al. 2019 confidence; needs texts only).
        data: Labelled data for the before/after evaluation (default: the rebuilt test split).
        dev_data: Labelled data to score heads on (default: the rebuilt dev split). Never the
            evaluation data: choosing heads on the test set would flatter the result.
        batch_size: Texts per forward pass.

    Returns:
        The report (also in ``out_dir/metrics.json`` under ``"pruning"``): heads and parameters
        before/after, the removed heads, accuracy and macro-F1 before/after, and the largest
        difference between the pruned model and the original with those heads masked.

    Raises:
        ValueError: a model without heads, a bad ``heads``/``fraction``, a bad ``out_dir``.
        DataError: evaluation or dev data cannot be rebuilt and none was given.
    """
    started = time.perf_counter()
    source = Path(model_dir)
    out = Path(out_dir)
    predictor = load(source)
    config = copy.deepcopy(predictor.config)
    holder, original_heads = _head_fields(config["model"], source)
    check_output_directory(out, source=source)
    layers = attention_layers(predictor.model)
    total = sum(layer.num_heads for layer in layers)
    count = _heads_to_prune(heads, fraction, total)
    if importance not in IMPORTANCE_METHODS:
        raise ValueError(f"importance={importance!r}; choose one of {list(IMPORTANCE_METHODS)}")

    test, test_described = _evaluation_data(source, config, data, "test")
    chosen: dict[int, list[int]] = {}
    scores: list[Tensor] = []
    dev_described = None
    if count:
        dev, dev_described = _evaluation_data(source, config, dev_data, "dev", hint="dev_data=, --dev-data FILE")
        scores = head_importance(predictor, dev, method=importance, batch_size=batch_size)
        chosen = select_heads(scores, count)

    from attend.training import score_probabilities

    multi = predictor.multi_label
    before = score_probabilities(predictor.predict_proba(test.texts), test, predictor.labels, multi)
    parameters_before = _count_parameters(predictor.model)
    reference = copy.deepcopy(predictor.model)

    # Current head indices -> original ones (a model may already have been pruned).
    pruned_before = {str(k): list(v) for k, v in (holder.get("pruned_heads") or {}).items()}
    removed_original: dict[str, list[int]] = {}
    for layer_index, layer_heads in chosen.items():
        kept = kept_heads(pruned_before, layer_index, original_heads)
        removed_original[str(layer_index)] = [kept[h] for h in layer_heads]
        layers[layer_index].prune_heads(layer_heads)
    merged = {
        str(layer): sorted(set(pruned_before.get(str(layer), [])) | set(removed_original.get(str(layer), [])))
        for layer in range(len(layers))
    }
    holder["pruned_heads"] = {key: value for key, value in merged.items() if value}
    if "pretrained" in config["model"]:
        config["model"]["pretrained"] = False  # the directory supplies every weight
    try:
        model_config = config_from_dict(config["model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the pruned config is invalid ({exc})") from None
    config["model"] = model_config.to_dict()

    # The proof that config.json alone describes the pruned model: rebuild it and load strictly.
    rebuilt = build(model_config).eval()
    rebuilt.load_state_dict(predictor.model.state_dict(), strict=True)
    pruned = Predictor(model=rebuilt, tokenizer=predictor.tokenizer, labels=predictor.labels, config=config,
                       path=out)  # fmt: skip
    after = score_probabilities(pruned.predict_proba(test.texts), test, predictor.labels, multi)

    sample = test.texts[: min(len(test.texts), 32)]
    encoded = predictor.tokenizer.encode(sample)
    with torch.inference_mode(), masked_heads(reference, chosen):
        expected = reference(encoded).logits
    with torch.inference_mode():
        got = rebuilt(encoded).logits
    equivalence = float((expected - got).abs().max())

    heads_after = [layer.num_heads for layer in attention_layers(rebuilt)]
    report: dict[str, Any] = {
        "model_dir": str(source),
        "out_dir": str(out),
        "importance": importance,
        "importance_data": dev_described,
        "data": test_described,
        "heads_before": total,
        "heads_after": sum(heads_after),
        "heads_per_layer": heads_after,
        "removed": removed_original,
        "pruned_heads": holder["pruned_heads"],
        "head_importance": [[round(float(s), 6) for s in layer.tolist()] for layer in scores],
        "parameters_before": parameters_before,
        "parameters_after": _count_parameters(rebuilt),
        "before": _summary(before),
        "after": _summary(after),
        "accuracy_change": float(after["accuracy"] - before["accuracy"]),
        "macro_f1_change": float(after["macro_f1"] - before["macro_f1"]),
        "max_abs_diff_vs_masked": equivalence,
    }
    config["pruning"] = {k: report[k] for k in ("importance", "removed", "heads_before", "heads_after")} | {
        "source": str(source),
        "source_weights_sha256": predictor.config.get("weights_sha256"),
    }
    with staging_directory(out) as staging:
        config["weights_sha256"] = save_weights(rebuilt, staging / "model.safetensors")
        predictor.tokenizer.save(staging / "tokenizer.json")
        metrics = after | {"split": test_described, "pruning": report}
        atomic_write_json(staging / "metrics.json", metrics)
        atomic_write_json(staging / "config.json", config)  # last: it vouches for the files above
        publish_directory(staging, out)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
