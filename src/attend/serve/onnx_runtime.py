"""Serve an ONNX model directory with ONNX Runtime, through the same interface as :class:`attend.inference.Predictor`.

:class:`OnnxPredictor` has what the HTTP service and the evaluation code use from a Predictor
(``labels``, ``config``, ``tokenizer``, ``multi_label``, ``path``; ``predict_proba``, ``predict``,
``top_k``), so either runtime can sit behind ``attend serve``. :func:`load_runtime` picks one.

Loading is as safe as :func:`attend.load`: a directory holding a pickle-format file is refused,
and the graph's SHA-256 must match the one recorded at export, so a swapped or truncated file is
reported instead of served. An ONNX file is data (a graph of standard operators); no custom op
library is registered, so loading it runs no code from the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from attend.data.tokenization import TextTokenizer
from attend.inference import CALL_COST_TOKENS, Predictor, load, validate_texts
from attend.io import ModelDirError, sha256_file
from attend.serve._files import read_config, refuse_pickles
from attend.serve.export import INPUT_NAMES, INT8_FILE, ONNX_FILE

__all__ = [
    "DISABLED_OPTIMIZERS",
    "OnnxPredictor",
    "denormals_flushed",
    "load_onnx",
    "load_runtime",
    "native_bf16",
    "session_for",
]

RUNTIMES = ("torch", "onnx")

#: ONNX Runtime graph rewrites left off. ``SkipLayerNormFusion`` merges the residual Add and the
#: LayerNormalization into one ``SkipLayerNormalization``; on CPU (onnxruntime 1.31, one thread,
#: AVX-512) that kernel is the slower of the two: 3.3 ms against 0.66 ms for Add + LayerNorm on
#: a (32, 32, 384) input. In the int8 MiniLM graph, where the fusion fires after every
#: quantised product, leaving it off took short texts in batches of 32 from 164 to 147 ms.
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


def session_for(path: Path, *, threads: int | None = None, save_optimized: Path | None = None) -> ort.InferenceSession:
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
                                        disabled_optimizers=list(DISABLED_OPTIMIZERS))  # fmt: skip
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise ModelDirError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {exc})") from None


@dataclass
class OnnxPredictor:
    """An exported model served by ONNX Runtime: a drop-in for :class:`~attend.inference.Predictor`'s predictions.

    Attributes:
        session: The ONNX Runtime session.
        tokenizer: The tokenizer the model was trained with.
        labels: Label names, in logit order.
        config: The directory's ``config.json`` (with its ``onnx`` entry).
        path: Where it was loaded from.
        quantized: Whether the int8 graph (``model.int8.onnx``) is the one loaded.
    """

    session: ort.InferenceSession
    tokenizer: TextTokenizer
    labels: list[str]
    config: dict[str, Any]
    path: Path | None = None
    quantized: bool = False

    @property
    def multi_label(self) -> bool:
        return bool(self.config["model"].get("multi_label", False))

    @property
    def output_names(self) -> list[str]:
        """The graph's outputs: ``logits``, and ``attention_{i}`` / ``pooling_weights`` if exported with them."""
        return [output.name for output in self.session.get_outputs()]

    # Same batching, thresholding and ranking as the PyTorch Predictor, so both runtimes answer
    # identically given the same probabilities (one implementation, not two to keep in step).
    _batches = Predictor._batches
    predict_proba_truncated = Predictor.predict_proba_truncated
    predict_proba = Predictor.predict_proba
    predict = Predictor.predict
    top_k = Predictor.top_k
    to_probabilities = Predictor.to_probabilities

    @property
    def has_attentions(self) -> bool:
        """Whether the graph outputs its attention maps (``attend export --attentions``): what
        :func:`attend.explain.explain` reads to explain with this runtime."""
        return any(name.startswith("attention_") or name == "pooling_weights" for name in self.output_names)

    def _call_cost(self) -> float:
        """A padded graph pays a token per padded position; one exported with ``--unpad`` records
        its model's lower price (``config["onnx"]["padding_cost"]``)."""
        return CALL_COST_TOKENS / float(self.config.get("onnx", {}).get("padding_cost", 1.0))

    def run(self, texts: Sequence[str], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every requested output (default: all) for one batch of texts, in the texts' order.

        With a graph exported with ``attentions=True`` this gives the attention maps and pooling
        weights beside the logits, e.g. to explain a prediction without PyTorch.
        """
        checked = validate_texts(texts)
        encoded = self.tokenizer.encode(checked)
        names = list(outputs) if outputs is not None else self.output_names
        unknown = sorted(set(names) - set(self.output_names))
        if unknown:
            raise ValueError(f"outputs {unknown} are not in this graph; it has {self.output_names}")
        values = self._session_run(names, encoded)
        result = dict(zip(names, values, strict=True))
        result["attention_mask"] = encoded["attention_mask"].numpy()
        return result

    def attention_outputs(
        self, encoded: dict[str, Any]
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """``(logits, maps, pooling_weights | None)`` for an encoded batch, as PyTorch tensors: what
        the capture API gives :func:`attend.explain.explain` from the PyTorch model.

        Raises:
            ValueError: the graph was exported without its attention outputs.
        """
        if not self.has_attentions:
            source = self.config.get("onnx", {}).get("source") or "MODEL_DIR"
            raise ValueError(
                f"this ONNX graph has no attention outputs (only {self.output_names}): re-export it with "
                f"`attend export {source} --onnx OUT --attentions` to explain with ONNX Runtime"
            )
        names = self.output_names
        values = dict(zip(names, self._session_run(names, encoded), strict=True))
        layers = sum(name.startswith("attention_") for name in names)
        maps = [torch.from_numpy(values[f"attention_{i}"]) for i in range(layers)]
        pooling = values.get("pooling_weights")
        return torch.from_numpy(values["logits"]), maps, None if pooling is None else torch.from_numpy(pooling)

    def _encoded_probabilities(self, encoded: dict[str, Any]) -> np.ndarray:
        (logits,) = self._session_run(["logits"], encoded)
        return _probabilities(logits, self.multi_label)

    def _session_run(self, names: list[str], encoded: dict[str, Any]) -> list[np.ndarray]:
        """The one place the graph runs: with denormals flushed on this thread (see :func:`denormals_flushed`)."""
        feed = {name: encoded[name].numpy() for name in INPUT_NAMES}
        with denormals_flushed():
            return self.session.run(names, feed)


def _probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    logits = logits.astype(np.float64)
    if multi_label:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def load_onnx(path: str | os.PathLike[str], *, quantized: bool = False, threads: int | None = None) -> OnnxPredictor:
    """Load an ONNX model directory written by :func:`attend.serve.export.export_onnx`.

    Args:
        path: The directory.
        quantized: Load ``model.int8.onnx`` (from :func:`attend.serve.compress.quantize`) instead.
        threads: ONNX Runtime intra-op threads (see :func:`session_for`).

    Raises:
        ModelDirError: not an ONNX model directory, a pickle file present, a file missing, or a
            graph that does not match the hash recorded when it was written.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"{path}: no such model directory")
    refuse_pickles(path)
    config = read_config(path)
    onnx_entry = config.get("onnx")
    if not isinstance(onnx_entry, dict):
        raise ModelDirError(
            f"{path} is not an ONNX model directory (config.json has no 'onnx' entry): "
            f"run `attend export {path} --onnx OUT` and serve OUT"
        )
    if quantized:
        int8 = onnx_entry.get("int8")
        if not isinstance(int8, dict) or not (path / INT8_FILE).is_file():
            raise ModelDirError(f"{path} has no int8 model ({INT8_FILE}): run `attend quantize {path}` first")
        file, expected = path / INT8_FILE, int8.get("sha256")
    else:
        file, expected = path / ONNX_FILE, onnx_entry.get("sha256")
    if not file.is_file():
        raise ModelDirError(f"{path} is not a complete ONNX model directory: {file.name} is missing")
    if not (path / "tokenizer.json").is_file():
        raise ModelDirError(f"{path} is not a complete ONNX model directory: tokenizer.json is missing")
    if expected and sha256_file(file) != expected:
        raise ModelDirError(
            f"{file} does not match the hash in config.json: the directory is corrupt or its files come from "
            "different runs"
        )
    session = session_for(file, threads=threads)
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if inputs != set(INPUT_NAMES) or "logits" not in outputs:
        raise ModelDirError(
            f"{file} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; an attend graph takes "
            f"{list(INPUT_NAMES)} and returns 'logits'"
        )
    labels = list(config["labels"])
    if not labels:
        raise ModelDirError(f"{path / 'config.json'} lists no labels")
    max_length = int(config.get("tokenizer", {}).get("max_length", 256))
    tokenizer = TextTokenizer.from_file(path / "tokenizer.json", max_length=max_length)
    return OnnxPredictor(
        session=session, tokenizer=tokenizer, labels=labels, config=config, path=path, quantized=quantized
    )


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 fast enough to beat float32: whether it has AMX tiles.

    AVX512-BF16 alone is not enough: on such a CPU (no AMX) MiniLM in bfloat16 ran at 0.84x
    float32 one text at a time and 0.62x in batches of 32 (``benchmarks/serve.py``), while on an
    AMX CPU it ran 1.6x and 2.2x faster.
    """
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers: if a torch release drops them, do not guess
        return True


def load_runtime(
    path: str | os.PathLike[str],
    runtime: str = "torch",
    *,
    quantized: bool = False,
    bf16: bool = False,
    threads: int | None = None,
) -> Predictor | OnnxPredictor:
    """Load a model directory for serving with the chosen runtime.

    Args:
        path: A PyTorch model directory (``runtime="torch"``) or an ONNX one (``runtime="onnx"``).
        runtime: ``"torch"`` or ``"onnx"``.
        quantized: int8: for ONNX the directory's ``model.int8.onnx``; for PyTorch, dynamic int8
            quantisation of every ``nn.Linear`` applied right after loading (nothing extra is
            stored, so no pickle is ever needed).
        bf16: PyTorch only: cast the model to bfloat16 after loading (probabilities stay float32).
            On CPUs with AMX its matrix products run several times faster than float32 (without
            AMX, slower: a warning says so); MiniLM on Rotten Tomatoes kept its accuracy (0.8337 vs 0.8329, 99.9% of
            predictions unchanged; ``benchmarks/serve.py``).
        threads: ONNX Runtime intra-op threads (PyTorch's are set with ``torch.set_num_threads``).

    Raises:
        ValueError: an unknown runtime.
        ModelDirError: the directory does not suit the runtime; the message says what to run.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}; choose one of {list(RUNTIMES)}")
    if bf16 and (runtime != "torch" or quantized):
        raise ValueError("bf16 needs runtime='torch' and no int8 quantisation")
    path = Path(path)
    has_onnx = (path / ONNX_FILE).is_file()
    has_weights = (path / "model.safetensors").is_file()
    if runtime == "torch":
        if has_onnx and not has_weights:
            raise ModelDirError(
                f"{path} is an ONNX model directory (it has {ONNX_FILE}, no model.safetensors): "
                "serve it with runtime='onnx' (--runtime onnx)"
            )
        predictor = load(path)
        if quantized:
            from attend.serve.compress import quantize_torch_model

            predictor.model = quantize_torch_model(predictor.model)
        if bf16:
            if not native_bf16():
                logging.getLogger("attend.serve").warning(
                    "bf16: this CPU has no AMX tiles, where bfloat16 products run slower than float32 "
                    "(MiniLM: 0.62-0.84x with AVX512-BF16 alone); serve without --bf16"
                )
            predictor.model = predictor.model.to(torch.bfloat16)
        return predictor
    if path.is_dir() and has_weights and not has_onnx:
        exported = (path / "onnx" / ONNX_FILE).is_file()
        hint = f" (or serve {path / 'onnx'}, which `attend quantize` exported)" if exported else ""
        raise ModelDirError(
            f"{path} is a PyTorch model directory with no {ONNX_FILE}: run `attend export {path} --onnx OUT` "
            f"and serve OUT{hint}"
        )
    return load_onnx(path, quantized=quantized, threads=threads)
