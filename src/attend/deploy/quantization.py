"""Dynamic int8 quantisation, measured: ``attend quantize``.

Weights stored as int8, activations quantised on the fly per batch; no calibration data needed.
ONNX Runtime's ``quantize_dynamic`` writes ``model.int8.onnx`` beside ``model.onnx``; for PyTorch,
``torch.ao`` dynamic quantisation of every ``nn.Linear`` is applied at load time
(:func:`attend.runtime.quantize_torch_model`), so nothing but safetensors is ever stored. The
result is judged on the model's own test split (rebuilt from ``config.json``) or on labelled data
given, and recorded in ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
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

from attend.data.readers import LabelledTexts
from attend.data.splits import held_out, judged_overlap
from attend.deploy.export import export_onnx
from attend.io import (
    ArtifactDir,
    ModelDirError,
    atomic_write_json,
    enclosing_ensemble,
    member_sources,
    refuse_ensemble,
    sha256_file,
    update_metrics,
)
from attend.runtime import TextClassifier, TorchTextClassifier, load, quantize_torch_model
from attend.runtime.onnx import INT8_FILE, ONNX_FILE, OnnxTextClassifier, load_onnx, session_for
from attend.training import score_probabilities
from attend.training.metrics import headline_metrics

__all__ = ["QUANTIZE_RUNTIMES", "quantize", "quantize_onnx_file"]

QUANTIZE_RUNTIMES = ("onnx", "torch", "both", "bf16")


def _probabilities(model: TextClassifier, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    probs = model.predict_proba(texts, batch_size=batch_size)
    return probs, time.perf_counter() - started


def _compare(
    reference: TextClassifier,
    candidate: TextClassifier,
    data: LabelledTexts,
    batch_size: int,
    *,
    precision: str = "int8",
) -> dict[str, Any]:
    """Accuracy and macro-F1 of both (keys ``fp32`` and ``precision``), their changes, and how far
    the probabilities moved."""
    before, seconds_before = _probabilities(reference, data.texts, batch_size)
    after, seconds_after = _probabilities(candidate, data.texts, batch_size)
    multi = reference.multi_label
    m_before = headline_metrics(score_probabilities(before, data, reference.labels, multi))
    m_after = headline_metrics(score_probabilities(after, data, reference.labels, multi))
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


# --- quantisation---------------------------------------------------------------------------------


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
    # The quantiser first turns each Gemm into a MatMul named "<gemm>_MatMul" (and an Add), then
    # matches the names to exclude: a Gemm's own name excluded nothing (a head kept "fp32" was int8).
    names = [*_vector_matmuls(prepared), *exclude]
    try:
        with _quiet_quantizer():
            quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"],
                             nodes_to_exclude=[*names, *(f"{name}_MatMul" for name in names)])  # fmt: skip
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
    the loss is within budget or every group is kept (over budget still, the trial that lost least
    is the one kept). Returns the kept groups, their loss, and every trial of the search, in order.

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
    if loss > max_loss:  # over budget with every group tried: the trial that lost least, not the last one
        best = min(search, key=lambda t: (t["dev_loss_points"], len(t["fp32"])))
        kept, loss = list(best["fp32"]), best["dev_loss_points"]
    return kept, loss, search


def _budgeted_int8(
    onnx_dir: Path, dev: LabelledTexts, max_loss: float, threads: int | None, batch_size: int, progress: bool
) -> dict[str, Any]:
    """Write ``model.int8.onnx`` keeping as few sub-layers fp32 as it takes for the dev-split
    accuracy to drop by at most ``max_loss`` points (:func:`_keep_fp32` over
    :func:`_sublayer_groups`). Only the dev split is looked at, so the test split still judges.
    """
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
            candidate = OnnxTextClassifier(session_for(scratch, threads=threads), fp32.tokenizer, fp32.labels,
                                           fp32.config, quantized=True)  # fmt: skip  # one text a call, as served
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
        exported = ArtifactDir.open(onnx_dir).config
    except ModelDirError:
        return False
    source_hash = (exported.get("onnx") or {}).get("source_weights_sha256")
    return bool(source_hash) and source_hash == config.get("weights_sha256")


def _is_export(directory: Path) -> bool:
    """Whether ``directory``'s ``config.json`` is an ONNX export's (it has an ``onnx`` entry); an
    unreadable one counts as one, the export replacing it."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(config, dict) or isinstance(config.get("onnx"), dict)


def _torch_model(path: Path) -> TorchTextClassifier:
    model = load(path, runtime="torch")
    assert isinstance(model, TorchTextClassifier)
    return model


def quantize(
    model_dir: str | os.PathLike[str],
    *,
    runtime: str = "onnx",
    data: str | os.PathLike[str] | LabelledTexts | None = None,
    dev_data: str | os.PathLike[str] | LabelledTexts | None = None,
    threads: int | None = None,
    batch_size: int = 64,
    max_loss: float | None = None,
    progress: bool = False,
    text_col: str | None = None,
    label_col: str | None = None,
    label_sep: str | None = None,
) -> dict[str, Any]:
    """Dynamic int8 quantisation, measured against fp32 on held-out data; the body of ``attend quantize``.

    Args:
        model_dir: A PyTorch model directory or an ONNX model directory (from ``attend export``).
        runtime: ``"onnx"``: write ``model.int8.onnx`` next to ``model.onnx``. A PyTorch
            directory is first exported to ``MODEL_DIR/onnx/`` (re-used when it already holds
            these weights), which is then the directory to serve with ``--int8``. ``"torch"``:
            measure PyTorch dynamic int8, which
            ``load_runtime(..., quantized=True)`` applies at load (nothing is written but
            metrics). ``"both"``: both. ``"bf16"``: measure the PyTorch model cast to bfloat16,
            as ``attend serve --bf16`` runs it (not int8, but the same question: what does the
            faster model lose?).
        data: Labelled data to measure on (default: the model's own rebuilt test split).
        dev_data: Labelled data ``max_loss`` searches on (default: the model's own rebuilt dev split).
        text_col, label_col: The columns of ``data`` and ``dev_data`` files (default: the ones the
            model was trained from).
        label_sep: A multi-label model's separator of their label cells (default: the one it
            trained with).
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
    if max_loss is not None and not 0 <= max_loss < 100:  # also refuses NaN
        raise ValueError(f"max_loss={max_loss}: an accuracy budget is in points, at least 0 and under 100")
    if max_loss is not None and runtime not in ("onnx", "both"):
        raise ValueError(f"max_loss={max_loss}: an accuracy budget is searched with the ONNX runtime, not "
                         f"runtime={runtime!r}; give runtime='onnx' or 'both'")  # fmt: skip
    path = Path(model_dir)
    ensemble = enclosing_ensemble(path)
    if ensemble is not None:
        raise ModelDirError(f"{path} is a member of the ensemble {ensemble}, whose recorded hashes quantising it "
                            f"would break: quantise {member_sources(ensemble, path)}")  # fmt: skip
    config = ArtifactDir.open(path, require=("model", "labels")).config
    is_onnx = isinstance(config.get("onnx"), dict)
    refuse_ensemble(path, "quantise")
    if not is_onnx and not (path / "model.safetensors").is_file():
        raise ModelDirError(f"{path} is not a complete model directory: model.safetensors is missing")
    runtimes = ["onnx", "torch"] if runtime == "both" else [runtime]
    if ("torch" in runtimes or "bf16" in runtimes) and is_onnx:
        source = config["onnx"].get("source")
        raise ModelDirError(
            f"{path} is an ONNX model directory: --runtime {runtime} measures the PyTorch model, so it needs the "
            f"PyTorch model directory it was exported from{f' ({source})' if source else ''}"
        )
    columns = {"text_col": text_col, "label_col": label_col, "label_sep": label_sep}  # of data and dev_data
    dataset, described = held_out(path, config, data, "test", **columns)
    report: dict[str, Any] = {"model_dir": str(path), "data": described}
    results: dict[str, Any] = {}
    if "torch" in runtimes:
        if progress:  # said before it (a run had been silent until its result)
            print(f"quantizing {path} with torch.ao dynamic int8, then measuring both on the {described}...",
                  file=sys.stderr, flush=True)  # fmt: skip
        fp32 = _torch_model(path)
        int8 = TorchTextClassifier(quantize_torch_model(fp32.model), fp32.tokenizer, fp32.labels, fp32.config,
                                   fp32.path, precision="int8")  # fmt: skip
        results["torch"] = {
            "method": "torch.ao dynamic int8, nn.Linear, per-channel weights "
            "(applied at load: load_runtime(..., quantized=True))",
            **_compare(fp32, int8, dataset, batch_size),
        }
    if "bf16" in runtimes:
        if progress:
            print(f"measuring bfloat16 against fp32 on the {described}...", file=sys.stderr, flush=True)
        fp32 = _torch_model(path)
        half = TorchTextClassifier(copy.deepcopy(fp32.model).to(torch.bfloat16), fp32.tokenizer, fp32.labels,
                                   fp32.config, fp32.path, precision="bf16")  # fmt: skip
        results["bf16"] = {
            "method": "bfloat16 weights and activations (applied at load: attend serve --bf16)",
            **_compare(fp32, half, dataset, batch_size, precision="bf16"),
        }
    if "onnx" in runtimes:
        onnx_dir = path if is_onnx else path / "onnx"
        exported = None
        if not is_onnx and not _fresh_export(onnx_dir, config):
            if onnx_dir.exists() and not (onnx_dir / "config.json").is_file() and any(onnx_dir.iterdir()):
                # quantize has no output option: "choose another output directory" told of none
                raise ModelDirError(f"{onnx_dir} holds files attend did not write; quantize exports the model there "
                                    "first: move them away, or export elsewhere (attend export --onnx DIR) and "
                                    "quantize that directory")  # fmt: skip
            if (onnx_dir / "config.json").is_file() and not _is_export(onnx_dir):
                # a model put there by hand (or by an earlier attend) had been replaced by the export
                raise ModelDirError(f"{onnx_dir} holds a model that is no ONNX export, where quantize exports the "
                                    f"model first: move it away, or quantize an export made elsewhere (attend export "
                                    f"{path} --onnx DIR)")  # fmt: skip
            # said before its seconds to minutes of tracing and checking (48 s of silence for e5 here)
            said = functools.partial(print, f"exporting {path} to ONNX in {onnx_dir} first, then checking it against "
                                     "PyTorch (seconds to minutes, by the model's size)...", file=sys.stderr,
                                     flush=True) if progress else None  # fmt: skip
            exported = export_onnx(path, onnx_dir, threads=threads, overwrite=True, on_start=said)  # its stale export
        onnx_config = ArtifactDir.open(onnx_dir, require=("model", "labels")).config
        # The graph and tokenizer checked against their recorded hashes before anything is written: a
        # mismatched model.onnx had been quantised and its int8 graph's hash recorded, then refused,
        # and a truncated one failed in protobuf with a traceback.
        fp32_onnx = load_onnx(onnx_dir, threads=threads)
        budget = None
        if progress:
            print(f"quantizing {onnx_dir / ONNX_FILE} to int8, then measuring both on the {described}...",
                  file=sys.stderr, flush=True)  # fmt: skip
        if max_loss is None:
            quantize_onnx_file(onnx_dir / ONNX_FILE, onnx_dir / INT8_FILE)
        else:
            hint = "--max-loss searches on the dev split: dev_data=, --dev-data FILE"
            dev, dev_described = held_out(onnx_dir, onnx_config, dev_data, "dev", hint=hint, **columns)
            dev_described += judged_overlap(dev, dataset, "fp32 sub-layers were")
            budget = _budgeted_int8(onnx_dir, dev, max_loss, threads, batch_size, progress)
            budget["dev_data"] = dev_described  # says when --dev-data holds texts the model trained on
        int8_hash = sha256_file(onnx_dir / INT8_FILE)
        onnx_config["files"] = {**dict(onnx_config.get("files") or {}), INT8_FILE: int8_hash}
        onnx_config["onnx"]["int8"] = {
            "file": INT8_FILE,
            "sha256": int8_hash,
            "method": "onnxruntime quantize_dynamic, QInt8 weights",
            **({"fp32_groups": budget["fp32_groups"], "groups": budget["groups"]} if budget else {}),
        }
        atomic_write_json(onnx_dir / "config.json", onnx_config)
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
            update_metrics(onnx_dir, "quantized", {"onnx": results["onnx"] | {"data": described}})
    update_metrics(path, "quantized", {name: value | {"data": described} for name, value in results.items()})
    return report | results
