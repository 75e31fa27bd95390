"""Export a saved model to ONNX: a self-contained directory, proven equal to PyTorch before it is written.

:func:`export_onnx` turns a model directory into an *ONNX model directory*: ``model.onnx``,
``config.json`` (the model's, plus an ``onnx`` entry describing the graph and the parity check),
``tokenizer.json`` and, when the source has one, ``metrics.json``. ONNX Runtime serves it
(:class:`attend.runtime.onnx.OnnxTextClassifier`) with no PyTorch at all.

Graph interface: inputs ``input_ids`` and ``attention_mask`` (int64 ``(batch, sequence)``, both
axes dynamic, exactly what :class:`~attend.data.tokenization.TextTokenizer` produces; no attend
tokenizer emits ``token_type_ids``, so MiniLM's are always zeros and not an input); output
``logits`` ``(batch, num_labels)``. With ``attentions=True`` also one ``attention_{i}`` per
attention layer, ``(batch, heads_i, sequence, sequence)`` post-softmax (heads may differ per
layer once pruned), and ``pooling_weights`` ``(batch, sequence)`` when the model pools by
attention: what an explanation needs, computed by the same graph.

Exporter: ``torch.onnx.export(dynamo=True)``, i.e. ``torch.export``. The TorchScript exporter is
still in torch 2.13 but deprecated, and it *traces*: Python branches on tensor values are frozen
to the example's path, and for the BiLSTM's packed sequences the traced graph is simply wrong
for other lengths (measured: 0.045 max logit error). ``torch.export`` instead fails loudly on
data-dependent control flow; the few such places in attend (the packed-weight cache, the
"no empty rows / no padding" shortcuts, packing) take an exact, traceable path when
``torch.compiler.is_compiling()``. Whatever the exporter, the result is checked against PyTorch
on held-out texts, at a batch size and lengths unlike the example it was exported from.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attend.attention.unpad import unpadding_modules
from attend.data.readers import DataError
from attend.data.splits import rebuild_split
from attend.data.validation import validate_texts
from attend.io import ArtifactDir, ArtifactWriter, ModelDirError, refuse_ensemble
from attend.runtime import TorchTextClassifier, load
from attend.runtime.onnx import INPUT_NAMES, INT8_FILE, ONNX_FILE, session_for
from attend.version import __version__

__all__ = [
    "INPUT_NAMES",
    "INT8_FILE",
    "ONNX_FILE",
    "PARITY_TOLERANCE",
    "ExportParityError",
    "GraphModule",
    "check_parity",
    "export_onnx",
    "parity_texts",
]
#: Largest |ONNX - PyTorch| accepted on logits and maps. Float32 graphs differ from eager PyTorch
#: only by operation order (fused kernels, reassociated sums): about 1e-7 per layer here, so 1e-4
#: catches any real mismatch (a wrong mask, a frozen shape) while never failing on rounding.
PARITY_TOLERANCE = 1e-4
#: Held-out texts used for the parity check (evenly spread over the length range).
PARITY_TEXTS = 32


class ExportParityError(ValueError):
    """The exported graph does not compute what the PyTorch model computes."""


class GraphModule(nn.Module):
    """The graph to export: token tensors in, a flat tuple of output tensors out.

    attend models take a batch mapping and return a :class:`~attend.models.ModelOutput`; ONNX
    wants positional tensors. With ``attentions`` the maps come from
    :func:`attend.attention.capture_attention` through ``output_attentions=True``, the very
    code path explanations use, so the exported maps are the ones PyTorch would show.

    Args:
        model: An attend classifier, in eval mode.
        attentions: Also return the attention maps and the pooling weights.
    """

    def __init__(self, model: nn.Module, *, attentions: bool = False) -> None:
        super().__init__()
        self.model = model
        self.attentions = attentions

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if not self.attentions:
            return (self.model(batch).logits,)
        output = self.model(batch, output_attentions=True)
        pooling = [] if output.pooling_weights is None else [output.pooling_weights]
        return (output.logits, *(output.attentions or []), *pooling)

    def output_names(self, example: dict[str, Tensor]) -> list[str]:
        """Names of :meth:`forward`'s outputs (how many maps there are is known after one run)."""
        with torch.inference_mode():
            outputs = self(example["input_ids"], example["attention_mask"])
        names = ["logits"]
        if self.attentions:
            pooled = self.model(example, output_attentions=True).pooling_weights is not None
            maps = len(outputs) - 1 - int(pooled)
            names += [f"attention_{i}" for i in range(maps)] + (["pooling_weights"] if pooled else [])
        return names


# --- texts ------------------------------------------------------------------------------------


def _vocabulary_words(predictor: TorchTextClassifier) -> list[str]:
    words = [
        token
        for token in predictor.tokenizer.tokenizer.get_vocab()
        if token.isalpha() and token.isascii() and not token.startswith("[") and len(token) > 1
    ]
    return sorted(words) or ["text"]


def synthetic_texts(predictor: TorchTextClassifier, lengths: Sequence[int], *, seed: int = 0) -> list[str]:
    """Texts of whole vocabulary words (so they tokenise to real ids), one per requested word count."""
    words = _vocabulary_words(predictor)
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=n)) for n in lengths]


def spread_by_length(texts: list[str], n: int) -> list[str]:
    """Up to ``n`` texts evenly spaced in length (shortest and longest included): plenty of padding."""
    if len(texts) <= n:
        return texts
    ordered = sorted(texts, key=len)
    picks = np.linspace(0, len(ordered) - 1, n).round().astype(int)
    return [ordered[i] for i in picks]


def given_texts(texts: Sequence[str], n: int) -> tuple[list[str], str]:
    """The caller's texts for a parity check, ``n`` of them at most, and how they are said: of more
    than ``n``, which ones were checked (all were said to be)."""
    checked = validate_texts(texts)
    if len(checked) <= n:
        return checked, "given texts"
    return spread_by_length(checked, n), f"{n} of the {len(checked)} given texts, spread over their lengths"


def parity_texts(
    predictor: TorchTextClassifier, texts: Sequence[str] | None = None, *, n: int = PARITY_TEXTS
) -> tuple[list[str], str]:
    """Held-out texts to compare runtimes on, and where they came from.

    Texts the caller gives win (they chose them); else the model's own test split, rebuilt from
    its ``config.json`` (texts it never trained on, of realistic lengths); else synthetic texts
    of vocabulary words, 1 to 200 words long (longer than ``max_length``, so truncation is
    exercised too).
    """
    if texts is not None:
        return given_texts(texts, n)
    if predictor.path is not None:
        try:
            test = rebuild_split(predictor.config, "test")
        except DataError:
            test = None
        if test is not None and len(test):
            return spread_by_length(test.texts, n), f"test split of {predictor.config['data']['source']}"
    lengths = [1, 3, 7, 12, 20, 33, 50, 80, 120, 200]
    return synthetic_texts(predictor, lengths, seed=1), "synthetic texts from the vocabulary"


def _example_batch(predictor: TorchTextClassifier) -> dict[str, Tensor]:
    """The batch the graph is traced with: 2 texts of different lengths (so it has padding).

    Its sizes are deliberately not those of the parity check, which then proves the axes dynamic.
    """
    encoded = predictor.tokenizer.encode(synthetic_texts(predictor, [3, 6], seed=0))
    return {name: encoded[name] for name in INPUT_NAMES}


# --- export -----------------------------------------------------------------------------------


def _max_length(model: nn.Module) -> int | None:
    """The longest input the model accepts (its position table), or None when unbounded."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    bert = getattr(config, "bert", None)
    if isinstance(bert, dict):
        return int(bert["max_position_embeddings"])
    if getattr(config, "model_type", "") == "encoder":
        return int(config.max_length)
    return None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[io.StringIO]:
    """Silence the exporter's progress prints, internal deprecation warnings and log lines.

    They are about PyTorch's internals, not the user's model; the parity check says whether
    the export is right. The captured text is kept for the error message if export fails.
    """
    captured = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield captured
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _unpadding(model: nn.Module, enabled: bool) -> list[nn.Module]:
    """The layers that unpad in a graph exported with ``unpad`` (``enabled``); a model with none is refused."""
    modules = unpadding_modules(model) if enabled else []
    if enabled and not modules:
        raise ValueError(f"{type(model).__name__} cannot skip padding (no unpadded graph): export it without --unpad")
    return modules


@contextlib.contextmanager
def _traced_unpadding(model: nn.Module, enabled: bool) -> Iterator[None]:
    """While exporting with ``unpad``, let the model's layers unpad in the traced graph."""
    modules = _unpadding(model, enabled)
    saved = [(module.unpad, module.unpad_traced) for module in modules]
    for module in modules:
        module.unpad = module.unpad_traced = True
    try:
        yield
    finally:
        for module, (unpad, traced) in zip(modules, saved, strict=True):
            module.unpad, module.unpad_traced = unpad, traced


#: What a full, read-only or failing disk raises.
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def export_failure(what: str, exc: BaseException, log: io.StringIO, path: Path | None = None) -> ValueError:
    """The error for an export of ``what`` to the file ``path`` that raised ``exc``: with the
    exporter's captured output (the steps it got through, what a graph it could not build needs),
    except where the disk or file system failed: then its reason and the file (``No space left on
    device``, which the exporter's own error had not said, nor where; its steps are noise after the
    one line). Other OS errors (the tracer's "could not get source code") keep the steps."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in _DISK_ERRORS:
            where = f" writing {path}" if path is not None else ""
            return ValueError(f"ONNX export of {what} failed: {exc} ({cause.strerror or cause}{where})")
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return ValueError(f"ONNX export of {what} failed: {exc}\n{log.getvalue()[-2000:]}")


def _export_graph(
    predictor: TorchTextClassifier, path: Path, *, attentions: bool, opset: int | None, unpad: bool = False
) -> list[str]:
    """Write the ONNX graph of ``predictor.model`` to ``path``; return its output names."""
    model = predictor.model.eval()
    wrapper = GraphModule(model, attentions=attentions).eval()
    example = _example_batch(predictor)
    names = wrapper.output_names(example)
    batch = torch.export.Dim("batch")
    limit = _max_length(model)
    sequence = torch.export.Dim("sequence", max=limit) if limit else torch.export.Dim("sequence")
    axes = {0: batch, 1: sequence}
    with _quiet_exporter() as log, torch.no_grad(), _traced_unpadding(model, unpad):
        try:
            torch.onnx.export(
                wrapper,
                (example["input_ids"], example["attention_mask"]),
                str(path),
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=names,
                dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                opset_version=opset,
                external_data=False,  # one self-contained file (fine below ONNX's 2 GB protobuf limit)
            )
        except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
            raise export_failure(type(model).__name__, exc, log, path) from exc
    _annotate(path, names, predictor)
    return names


def _annotate(path: Path, names: list[str], predictor: TorchTextClassifier) -> None:
    """Name every output axis and record the labels in the file's metadata.

    The exporter can pin an output's sequence axis to the example's length in the declared
    shape (the BiLSTM's, which passes through ONNX's LSTM op) even though the graph computes it
    dynamically; ONNX Runtime then warns on every call. Declared shapes are rewritten from the
    interface, and intermediate shape hints dropped (ONNX Runtime infers its own).
    """
    import onnx

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        if output.name == "logits":
            wanted: list[str | int] = ["batch", len(predictor.labels)]
        elif output.name == "pooling_weights":
            wanted = ["batch", "sequence"]
        else:  # attention_i: keep the head count the exporter found
            heads = dims[1].dim_value if len(dims) == 4 and dims[1].HasField("dim_value") else "heads"
            wanted = ["batch", heads, "sequence", "sequence"]
        del dims[:]
        for size in wanted:
            dim = dims.add()
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size
    del graph.value_info[:]
    for key, value in {"attend_version": __version__, "labels": ",".join(predictor.labels)}.items():
        entry = graph_model.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    onnx.save(graph_model, str(tmp))
    os.replace(tmp, path)


# --- parity -----------------------------------------------------------------------------------


def check_parity(
    predictor: TorchTextClassifier,
    onnx_path: str | os.PathLike[str],
    texts: Sequence[str],
    *,
    attentions: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Max |ONNX Runtime - PyTorch| per output on ``texts``: once as one padded batch, once one text alone.

    Attention maps are compared on the rows of real query tokens (padding rows are not read).

    Two batch sizes (``len(texts)`` and 1) and the texts' own lengths, none of them the
    export example's, so a graph that froze an axis fails here rather than in production.
    """
    session = session_for(Path(onnx_path), threads=threads)
    wrapper = GraphModule(predictor.model.eval(), attentions=attentions)
    names = [o.name for o in session.get_outputs()]
    diffs: dict[str, float] = {}
    batches = [list(texts), list(texts[:1])]
    for batch_texts in batches:
        encoded = predictor.tokenizer.encode(batch_texts)
        feed = {name: encoded[name].numpy() for name in INPUT_NAMES}
        got = session.run(names, feed)
        with torch.inference_mode():
            expected = wrapper(encoded["input_ids"], encoded["attention_mask"])
        if len(expected) != len(got):
            raise ExportParityError(f"the ONNX graph has {len(got)} outputs, PyTorch gives {len(expected)}")
        for name, ours, reference in zip(names, got, expected, strict=True):
            if tuple(ours.shape) != tuple(reference.shape):
                raise ExportParityError(
                    f"ONNX output {name} has shape {tuple(ours.shape)}, PyTorch {tuple(reference.shape)} "
                    f"(batch of {len(batch_texts)})"
                )
            key = "logits" if name == "logits" else "pooling_weights" if name == "pooling_weights" else "attentions"
            gap = np.abs(ours - reference.float().numpy())
            if key == "attentions":
                # Rows of padding queries mean nothing, and differ by layout: PyTorch's unpadded
                # layers give them a zero query (attend.attention.unpad), the graph real values.
                gap = gap * encoded["attention_mask"].numpy()[:, None, :, None]
            diff = float(gap.max()) if ours.size else 0.0
            diffs[key] = max(diffs.get(key, 0.0), diff)
    return {
        "texts": len(texts),
        "batch_sizes": [len(b) for b in batches],
        **{f"max_abs_diff_{key}": value for key, value in diffs.items()},
    }


# --- the verb ---------------------------------------------------------------------------------


def _source_config(predictor: TorchTextClassifier) -> dict[str, Any]:
    """The model's config.json for the ONNX directory (complete even for an in-memory TorchTextClassifier)."""
    config = {key: value for key, value in predictor.config.items() if key not in ("weights_sha256", "files")}
    config["labels"] = list(predictor.labels)
    config.setdefault("attend_version", __version__)
    config.setdefault(
        "tokenizer", {"max_length": predictor.tokenizer.max_length, "vocab_size": predictor.tokenizer.vocab_size}
    )
    return config


#: The opsets ``--opset`` may ask for: the dynamo exporter's first, to the last ONNX Runtime runs here.
OPSETS = tuple(range(18, 23))


def check_opset(opset: int | None) -> None:
    """Refuse an opset the export would not honour (the exporter converts from 18 with failures) or
    whose graph ONNX Runtime would not run, before any work."""
    if opset is not None and opset not in OPSETS:
        from importlib.metadata import version

        raise ValueError(
            f"opset={opset}: choose one of {OPSETS[0]}-{OPSETS[-1]} (PyTorch's ONNX exporter writes opset 18 and up; "
            f"ONNX Runtime {version('onnxruntime')} fails on the attention exported at opset {OPSETS[-1] + 1})"
        )


def _torch_model(model_dir: str | os.PathLike[str]) -> TorchTextClassifier:
    onnx = ArtifactDir.open(model_dir).config.get("onnx")
    if isinstance(onnx, dict):
        source = f" ({onnx['source']})" if onnx.get("source") else ""
        raise ModelDirError(f"{model_dir} is already an ONNX model directory: export the PyTorch model directory "
                            f"it was exported from{source}")  # fmt: skip
    refuse_ensemble(model_dir, "export")
    model = load(model_dir, runtime="torch")
    if not isinstance(model, TorchTextClassifier):
        raise ValueError(f"{model_dir} holds a {model.task} model; ONNX export takes a text classifier")
    return model


def export_onnx(
    model_dir: str | os.PathLike[str] | TorchTextClassifier,
    out_dir: str | os.PathLike[str],
    *,
    attentions: bool = False,
    opset: int | None = None,
    texts: Sequence[str] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    threads: int | None = None,
    unpad: bool = False,
    overwrite: bool = False,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Export a model directory to an ONNX model directory, verified against PyTorch.

    The body of ``attend export MODEL_DIR --onnx OUT``. Nothing is written to ``out_dir``
    unless the parity check passes; the directory appears complete or not at all.

    Args:
        model_dir: A model directory written by ``attend train`` / ``attend prune`` (or a loaded
            :class:`~attend.runtime.TorchTextClassifier`).
        out_dir: The ONNX model directory to write.
        attentions: Also output each layer's attention maps and the pooling weights.
        opset: ONNX opset (default: the exporter's own; the report records the one used).
        texts: Texts for the parity check (default: the model's rebuilt test split, else synthetic).
        tolerance: Largest accepted |ONNX - PyTorch| on any output.
        threads: ONNX Runtime intra-op threads for the check (default: PyTorch's thread count).
        unpad: Export a graph whose layers run on real tokens only (models that skip padding:
            MiniLM, the Transformer encoder). It unpads every batch, so it pays where batches
            mix lengths (16 glosses in one call: 1.91x in fp32, 1.68x in int8) and costs about
            nothing where they do not (one text, or length-sorted batches: 0.99-1.08x;
            benchmarks/unpad.py).
        overwrite: Replace a model directory already at ``out_dir`` (else that is an error,
            found before the export; ``attend export`` asks for ``--overwrite``).
        on_start: Called once every check has passed, as the export begins (``attend export``
            says what it is doing: it had said so before refusing a bad input).

    Returns:
        A JSON-ready report: paths, inputs/outputs, opset, file size, the parity numbers.

    Raises:
        ModelDirError: ``model_dir`` is missing, incomplete, corrupt or holds a pickle.
        ExportParityError: ONNX Runtime's outputs differ from PyTorch's by more than ``tolerance``.
        ValueError: a bad ``out_dir``, or the model cannot be exported.
    """
    started = time.perf_counter()
    check_opset(opset)
    predictor = model_dir if isinstance(model_dir, TorchTextClassifier) else _torch_model(model_dir)
    source = predictor.path
    out = Path(out_dir)
    staged = ArtifactWriter(out, source=source, overwrite=overwrite, onnx_folder=True)  # checks it before any work
    check_texts, texts_source = parity_texts(predictor, texts)
    _unpadding(predictor.model, unpad)  # a model that cannot is refused before the export is said to begin
    if on_start is not None:
        on_start()
    with staged as writer:
        staging = writer.path
        onnx_path = staging / ONNX_FILE
        outputs = _export_graph(predictor, onnx_path, attentions=attentions, opset=opset, unpad=unpad)
        parity = check_parity(predictor, onnx_path, check_texts, attentions=attentions, threads=threads)
        parity |= {"source": texts_source, "tolerance": tolerance}
        worst = max(value for key, value in parity.items() if key.startswith("max_abs_diff_"))
        if not worst <= tolerance:  # also catches NaN
            raise ExportParityError(
                f"ONNX Runtime and PyTorch disagree on {parity['texts']} {texts_source}: "
                + ", ".join(f"{k.removeprefix('max_abs_diff_')} {v:.3g}" for k, v in parity.items()
                            if k.startswith("max_abs_diff_"))
                + f" > tolerance {tolerance:g}; nothing was written to {out}"
            )  # fmt: skip
        import onnx

        opset_used = next(
            (entry.version for entry in onnx.load(str(onnx_path), load_external_data=False).opset_import
             if entry.domain in ("", "ai.onnx")), None,
        )  # fmt: skip
        config = _source_config(predictor)
        config["onnx"] = {
            "file": ONNX_FILE,
            "sha256": writer.record(ONNX_FILE),
            "opset": opset_used,
            "inputs": list(INPUT_NAMES),
            "outputs": outputs,
            "attentions": attentions,
            # The planner's price of a padded position for this graph (attend.runtime.TextClassifier.plan).
            "padding_cost": float(getattr(predictor.model, "padding_cost", 1.0)) if unpad else 1.0,
            "unpadded": unpad,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "source": str(source) if source is not None else None,
            "source_weights_sha256": predictor.config.get("weights_sha256"),
            "parity": parity,
        }
        predictor.tokenizer.save(staging / "tokenizer.json")
        writer.record("tokenizer.json")
        if source is not None and (source / "metrics.json").is_file():
            shutil.copyfile(source / "metrics.json", staging / "metrics.json")
        writer.copy_training_texts(source)
        size = onnx_path.stat().st_size
        writer.publish(config)
    return {
        "model_dir": str(source) if source is not None else None,
        "onnx_dir": str(out),
        "onnx_file": str(out / ONNX_FILE),
        "bytes": size,
        "opset": opset_used,
        "inputs": list(INPUT_NAMES),
        "outputs": outputs,
        "parity": parity,
        "seconds": round(time.perf_counter() - started, 2),
    }
