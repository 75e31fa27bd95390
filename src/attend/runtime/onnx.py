"""ONNX Runtime: sessions tuned for CPU inference, and the classifier of an ``attend export`` directory.

:class:`OnnxTextClassifier` is a :class:`~attend.runtime.TextClassifier` whose network is an ONNX
graph: the same predictions, batching and (from a graph exported with its attention outputs)
explanations as the PyTorch runtime, with no PyTorch model at all.

Loading is as safe as loading a PyTorch directory: a directory holding a pickle-format file is
refused, and each file must match the hash recorded when it was written, so a swapped or
truncated graph is reported instead of served. An ONNX file is data (a graph of standard
operators); no custom op library is registered, so loading it runs no code from the file.

Graph interface: inputs ``input_ids`` and ``attention_mask`` (int64 ``(batch, sequence)``, both
axes dynamic); output ``logits`` ``(batch, num_labels)``, and with attention outputs one
``attention_{i}`` ``(batch, heads, sequence, sequence)`` per layer and ``pooling_weights``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor

from attend.data.tokenization import TextTokenizer
from attend.data.validation import validate_texts
from attend.io import ArtifactDir, ModelDirError
from attend.runtime.classifier import AttentionOutputs, Capabilities, TextClassifier, read_labels, read_tokenizer

__all__ = [
    "DISABLED_OPTIMIZERS",
    "INPUT_NAMES",
    "INT8_FILE",
    "ONNX_FILE",
    "OnnxTextClassifier",
    "denormals_flushed",
    "load_onnx",
    "session_for",
]

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")

#: ONNX Runtime graph rewrites left off. ``SkipLayerNormFusion`` merges the residual Add and the
#: LayerNormalization into one ``SkipLayerNormalization``; on CPU (onnxruntime 1.31, one thread)
#: that kernel is the slower of the two: 1.83 ms against 0.35 ms for Add + LayerNorm on a
#: (32, 32, 384) input. In the int8 MiniLM graph, where the fusion fires after every quantised
#: product, it made batches of 32 short texts take 1.22x as long (``benchmarks/onnx_settings.py``).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


@functools.cache
def _fenv() -> ctypes.CDLL | None:
    """The C library with ``fegetenv``/``fesetenv`` (glibc: libm; macOS: libSystem), or None."""
    for name in ("m", "c"):
        found = ctypes.util.find_library(name)
        if found is None:
            continue
        try:
            library = ctypes.CDLL(found)
            library.fegetenv, library.fesetenv  # noqa: B018 - a missing symbol raises AttributeError
        except (OSError, AttributeError):
            continue
        return library
    return None


@contextlib.contextmanager
def _floating_point_environment_kept() -> Iterator[bool]:
    """Restore this thread's floating-point environment (rounding, flush-to-zero) on exit, exactly
    as it was on entry. Yields False, restoring nothing, where C's ``fegetenv`` is unavailable."""
    library = _fenv()
    saved = ctypes.create_string_buffer(512)  # fenv_t is 32 bytes on x86-64 glibc; room to spare
    if library is None or library.fegetenv(saved) != 0:
        yield False
        return
    try:
        yield True
    finally:
        library.fesetenv(saved)


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Within the block, this thread's float arithmetic flushes denormals to zero; on exit its
    floating-point environment is restored exactly as it was. Yields whether flushing is on.

    Why: ONNX Runtime's softmax slows down about 5x on a row that holds masked (``-inf``) scores.
    Its ``exp`` of a large negative number goes through denormal intermediates, which x86 CPUs
    handle in microcode. A padded batch masks scores in every layer: measured on MiniLM, short
    texts in batches of 32, int8, one thread, softmax took 10.3 of 87 ms per batch, and 2 ms with
    denormals flushed (the whole batch: 85.5 -> 77.9 ms). The values lost are below 1.2e-38;
    nothing reads a difference that small. PyTorch's own kernels are unaffected (measured: the same
    time either way), so the flag is set only around ONNX Runtime calls.

    ONNX Runtime flushes denormals on its own pool threads when asked
    (``session.set_denormal_as_zero``, see :func:`session_for`), but not on the calling thread,
    which computes its share of every operator (all of it with one intra-op thread). Where the
    platform gives no way to restore the environment afterwards (no C ``fegetenv``), or the CPU
    cannot flush, nothing is changed.
    """
    with _floating_point_environment_kept() as kept:
        yield kept and bool(torch.set_flush_denormal(True))


def session_for(
    path: Path,
    *,
    threads: int | None = None,
    save_optimized: Path | None = None,
    disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS,
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session for ``path``, every graph optimisation on but :data:`DISABLED_OPTIMIZERS`.

    Its pool threads flush denormals (see :func:`denormals_flushed`, which does the same for the
    calling thread around each run).

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads. None follows PyTorch's setting (``torch.get_num_threads()``,
            which honours ``OMP_NUM_THREADS`` and ``attend serve --threads``), so both runtimes
            use the same share of the machine; ONNX Runtime's own default is every core.
        save_optimized: Also write the graph as ONNX Runtime will run it, after its rewrites, here
            (to inspect which fusions fired).
        disabled_optimizers: ONNX Runtime rewrites left off (``benchmarks/onnx_settings.py``
            compares the default with none left off).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads if threads is not None else torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if save_optimized is not None:
        options.optimized_model_filepath = str(save_optimized)
    try:
        # Building the session can leave the calling thread flushing denormals (measured with
        # onnxruntime 1.31); the caller's own arithmetic is not ours to change.
        with _floating_point_environment_kept():
            return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=list(disabled_optimizers))  # fmt: skip
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise ModelDirError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {exc})") from None


class OnnxTextClassifier(TextClassifier):
    """An exported classifier run by ONNX Runtime.

    Attributes:
        session: The ONNX Runtime session.
        quantized: Whether the int8 graph (``model.int8.onnx``) is the one loaded.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: TextTokenizer,
        labels: list[str],
        config: dict[str, Any],
        path: Path | None = None,
        *,
        quantized: bool = False,
    ) -> None:
        super().__init__(tokenizer, labels, config, path)
        self.session = session
        self.quantized = quantized

    @property
    def backend(self) -> str:
        return "onnx-int8" if self.quantized else "onnx"

    @property
    def output_names(self) -> list[str]:
        """The graph's outputs: ``logits``, and ``attention_{i}`` / ``pooling_weights`` if exported with them."""
        return [output.name for output in self.session.get_outputs()]

    @property
    def capabilities(self) -> Capabilities:
        names = self.output_names
        return Capabilities(maps=any(name.startswith("attention_") for name in names),
                            pooling="pooling_weights" in names)  # fmt: skip

    @property
    def padding_cost(self) -> float:
        """A padded graph pays a token per padded position; one exported with ``--unpad`` records
        its model's lower price (``config["onnx"]["padding_cost"]``)."""
        return float(self.config.get("onnx", {}).get("padding_cost", 1.0))

    def run(self, texts: Sequence[str], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every requested output (default: all) for one batch of texts, in the texts' order, and
        the batch's ``attention_mask``."""
        encoded = self.tokenizer.encode(validate_texts(texts))
        names = list(outputs) if outputs is not None else self.output_names
        unknown = sorted(set(names) - set(self.output_names))
        if unknown:
            raise ValueError(f"outputs {unknown} are not in this graph; it has {self.output_names}")
        result = dict(zip(names, self._session_run(names, encoded), strict=True))
        result["attention_mask"] = encoded["attention_mask"].numpy()
        return result

    def logits(self, encoded: dict[str, Any]) -> Tensor:
        (logits,) = self._session_run(["logits"], encoded)
        return torch.from_numpy(logits)

    def attention_outputs(
        self, encoded: dict[str, Any], *, layers: Sequence[int] | None = None, grad: bool = False
    ) -> AttentionOutputs:
        if grad:
            raise ValueError("an ONNX graph gives no gradients; explain with the PyTorch model")
        capabilities = self.capabilities
        if not (capabilities.maps or capabilities.pooling):
            source = self.config.get("onnx", {}).get("source") or "MODEL_DIR"
            raise ValueError(
                f"this ONNX graph has no attention outputs (only {self.output_names}): re-export it with "
                f"`attend export {source} --onnx OUT --attentions` to explain with ONNX Runtime"
            )
        names = self.output_names
        values = dict(zip(names, self._session_run(names, encoded), strict=True))
        count = sum(name.startswith("attention_") for name in names)
        chosen = self._layer_indices(layers, count) if count else []
        maps = [torch.from_numpy(values[f"attention_{i}"]) for i in chosen]
        pooling = values.get("pooling_weights")
        return AttentionOutputs(logits=torch.from_numpy(values["logits"]), maps=maps,
                                pooling=None if pooling is None else torch.from_numpy(pooling))  # fmt: skip

    def _session_run(self, names: list[str], encoded: dict[str, Any]) -> list[np.ndarray]:
        """The one place the graph runs: with denormals flushed on this thread (see :func:`denormals_flushed`)."""
        feed = {name: encoded[name].numpy() for name in INPUT_NAMES}
        with denormals_flushed():
            return self.session.run(names, feed)


def load_onnx(
    artifact: ArtifactDir | str | Path, *, quantized: bool = False, threads: int | None = None
) -> OnnxTextClassifier:
    """The classifier of an ONNX model directory written by :func:`attend.deploy.export_onnx`.

    Args:
        artifact: The directory (or its opened :class:`~attend.io.ArtifactDir`).
        quantized: Load ``model.int8.onnx`` (from ``attend quantize``) instead of ``model.onnx``.
        threads: ONNX Runtime intra-op threads (see :func:`session_for`).

    Raises:
        ModelDirError: not an ONNX model directory, a pickle file present, a file missing, or a
            file that does not match the hash recorded when it was written.
    """
    if not isinstance(artifact, ArtifactDir):
        artifact = ArtifactDir.open(artifact)
    path, config = artifact.path, artifact.config
    onnx_entry = config.get("onnx")
    if not isinstance(onnx_entry, dict) or "model" not in config:
        raise ModelDirError(
            f"{path} is not an ONNX model directory (config.json has no 'onnx' entry): "
            f"run `attend export {path} --onnx OUT` and serve OUT"
        )
    name = ONNX_FILE
    if quantized:
        if not isinstance(onnx_entry.get("int8"), dict) or not artifact.has(INT8_FILE):
            raise ModelDirError(f"{path} has no int8 model ({INT8_FILE}): run `attend quantize {path}` first")
        name = INT8_FILE
    if not artifact.has(name):
        raise ModelDirError(f"{path} is not a complete ONNX model directory: {name} is missing")
    if not artifact.has("tokenizer.json"):
        raise ModelDirError(f"{path} is not a complete ONNX model directory: tokenizer.json is missing")
    file = artifact.file(name)
    labels = read_labels(artifact)
    session = session_for(file, threads=threads)
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if inputs != set(INPUT_NAMES) or "logits" not in outputs:
        raise ModelDirError(
            f"{file} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; an attend graph takes "
            f"{list(INPUT_NAMES)} and returns 'logits'"
        )
    recorded = session.get_modelmeta().custom_metadata_map.get("labels")
    if recorded is not None and recorded != ",".join(labels):  # config.json has no hash: an edit had flipped labels
        raise ModelDirError(f"{path / 'config.json'} lists the labels {labels}, but {file.name} was exported with "
                            f"{recorded!r} (joined by commas), in its metadata: config.json was edited; export the "
                            "model again")  # fmt: skip
    return OnnxTextClassifier(session, read_tokenizer(artifact), labels, config, path, quantized=quantized)
