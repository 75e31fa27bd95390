"""Text classifiers at run time: one interface, run by PyTorch or by ONNX Runtime.

:class:`TextClassifier` holds everything both share: the tokenizer and labels, padding-aware
batching, probabilities, top-k, explanations and evaluation. A subclass only says how to run
the network on an encoded batch (:meth:`~TextClassifier.logits`,
:meth:`~TextClassifier.attention_outputs`) and what it can be explained with
(:attr:`~TextClassifier.capabilities`): :class:`TorchTextClassifier` (fp32, bf16 or dynamic int8)
and :class:`attend.runtime.onnx.OnnxTextClassifier`.
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
import warnings
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attend.attention import capture_attention, recordable_names
from attend.data.batching import CALL_COST_TOKENS, length_batches
from attend.data.readers import LabelledTexts
from attend.data.splits import label_separator, load_labelled, model_column
from attend.data.tokenization import TextTokenizer
from attend.data.validation import check_count, validate_texts
from attend.io import ArtifactDir, ModelDirError, weights_mismatch
from attend.models import MULTI_LABEL_THRESHOLD, build, config_from_dict, native_bf16, probabilities
from attend.runtime.base import Runtime, evaluation_chunks
from attend.training import score_probabilities

__all__ = [
    "MOSTLY_UNKNOWN",
    "PLAN_WINDOW",
    "UNKNOWN_WARNING",
    "AttentionOutputs",
    "Capabilities",
    "Predictions",
    "TextClassifier",
    "TorchTextClassifier",
    "native_bf16",
    "quantize_torch_model",
]

#: Texts tokenised and planned together by :meth:`TextClassifier.predict_proba_truncated`.
PLAN_WINDOW = 4096
#: Keys of an encoded batch that are bookkeeping, not model inputs.
_NOT_INPUTS = ("truncated", "offsets")


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can be explained with.

    Attributes:
        maps: Its self-attention maps (every layer's).
        pooling: The weights of an attention pooling.
        gradients: Gradients with respect to maps and embeddings (PyTorch fp32/bf16 only).
    """

    maps: bool = False
    pooling: bool = False
    gradients: bool = False


@dataclass
class AttentionOutputs:
    """One forward pass with its attention recorded.

    Attributes:
        logits: ``(B, num_labels)``.
        maps: Per recorded layer, first layer first, ``(B, H, L, L)`` post-softmax weights.
        pooling: ``(B, L)`` attention-pooling weights, if the model pools by attention.
    """

    logits: Tensor
    maps: list[Tensor]
    pooling: Tensor | None


@dataclass
class Predictions:
    """Predicted probabilities, and per text what a reader should know about them.

    Attributes:
        probs: ``(N, num_labels)`` probabilities (softmax, or sigmoids when multi-label).
        truncated: ``(N,)`` the text had more tokens than the model reads; its start was used.
        unknown: ``(N,)`` none of the text's pieces is in the model's vocabulary (every one is
            ``[UNK]``: emoji only, or a script the tokenizer never saw), so its probabilities say
            nothing about the text.
        unknown_share: ``(N,)`` the share of the text's pieces (as the model reads them) that are
            ``[UNK]``; None where not counted.
    """

    probs: np.ndarray
    truncated: np.ndarray
    unknown: np.ndarray
    unknown_share: np.ndarray | None = None

    def warnings(self) -> list[str | None]:
        """Per text, what its prediction rests on when the model cannot read it all: nothing (every
        piece ``[UNK]``), or only part of it (at least :data:`MOSTLY_UNKNOWN` of its pieces)."""
        shares = self.unknown_share if self.unknown_share is not None else np.zeros(len(self.unknown))
        return [UNKNOWN_WARNING if flag else mostly_unknown(share) if share >= MOSTLY_UNKNOWN else None
                for flag, share in zip(self.unknown, shares, strict=True)]  # fmt: skip


#: What a prediction of a text the model cannot read carries.
UNKNOWN_WARNING = "no piece of this text is in the model's vocabulary (all [UNK]): the prediction is a guess"
#: The share of a text's pieces that are ``[UNK]`` from which its prediction says that it rests on
#: the rest of the text only (a script or words the vocabulary never saw).
MOSTLY_UNKNOWN = 0.5


def mostly_unknown(share: float) -> str:
    """The warning of a prediction that read only part of its text."""
    return (f"{share:.0%} of this text's pieces are not in the model's vocabulary ([UNK]): the prediction rests "
            "on the rest of it")  # fmt: skip


def model_inputs(encoded: dict[str, Any]) -> dict[str, Tensor]:
    """The tensors of an encoded batch that a model reads."""
    return {key: value for key, value in encoded.items() if key not in _NOT_INPUTS}


class TextClassifier(Runtime):
    """A trained text classifier with its tokenizer and labels, ready to predict and explain.

    Attributes:
        tokenizer: The tokenizer it was trained with.
        labels: Label names, in logit order.
        config: The directory's ``config.json``.
        path: Where it was loaded from.
    """

    task = "classification"

    def __init__(
        self, tokenizer: TextTokenizer, labels: list[str], config: dict[str, Any], path: Path | None = None
    ) -> None:
        super().__init__(config, path)
        self.tokenizer = tokenizer
        self.labels = list(labels)

    # --- what a subclass provides ---------------------------------------------------------

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this runtime can be explained with."""

    @property
    @abstractmethod
    def padding_cost(self) -> float:
        """A padded position's cost against a real token's (1.0 unless the model skips padding)."""

    @abstractmethod
    def logits(self, encoded: dict[str, Any]) -> Tensor:
        """``(B, num_labels)`` logits of an encoded batch (:meth:`TextTokenizer.encode` / ``pad``)."""

    @abstractmethod
    def attention_outputs(
        self, encoded: dict[str, Any], *, layers: Sequence[int] | None = None, grad: bool = False
    ) -> AttentionOutputs:
        """Logits with the attention maps and pooling weights of one batch.

        Args:
            encoded: The batch.
            layers: Indices of the layers whose maps to return (negative from the end); None: all.
            grad: Keep the maps and logits in the autograd graph (gradient-based explanations).

        Raises:
            ValueError: a layer index out of range, or ``grad`` where gradients are unavailable.
        """

    # --- shared ---------------------------------------------------------------------------

    @property
    def multi_label(self) -> bool:
        return bool(self.config["model"].get("multi_label", False))

    @property
    def pooling(self) -> str:
        """How the model turns token states into one vector: ``"attention"``, ``"cls"`` or ``"mean"``."""
        return str(self.config["model"].get("pooling", "attention" if self.capabilities.pooling else "mean"))

    @property
    def model_type(self) -> str:
        return str(self.config["model"].get("model_type", "model"))

    def _layer_indices(self, layers: Sequence[int] | None, count: int) -> list[int]:
        if layers is None:
            return list(range(count))
        for layer in layers:
            if not -count <= layer < count:
                raise ValueError(
                    f"layer={layer!r}; this model has {count} layers (use 0..{count - 1}, -1..-{count} from the last, "
                    "or 'mean')"
                )
        return [layer % count for layer in layers]

    def probabilities(self, encoded: dict[str, Any]) -> np.ndarray:
        """``(B, num_labels)`` probabilities of an encoded batch (softmax, or sigmoids when multi-label)."""
        return probabilities(self.logits(encoded), self.multi_label).numpy()

    @property
    def batch_dependent(self) -> bool:
        """Whether a text's answer would depend on the other texts of its call, as dynamic int8's does:
        it takes the range it quantises activations to from the whole input. Such a runtime runs
        each text alone, so its answer for a text is the same in every batch, served or not."""
        return self.backend in ("torch-int8", "onnx-int8")

    def plan(self, texts: Sequence[str], batch_size: int) -> list[list[int]]:
        """Batches of text indices that cost the least to run (:func:`attend.data.batching.length_batches`,
        with a call priced for this model's padding cost): explanations and focus metrics batch as
        predictions do, so they pad no more than predictions do. One text a call where
        :attr:`batch_dependent`."""
        return length_batches([len(row) for row in self.tokenizer.ids(texts)],
                              1 if self.batch_dependent else batch_size,
                              call_cost=CALL_COST_TOKENS / self.padding_cost)  # fmt: skip

    @torch.inference_mode()
    def predictions(self, texts: Sequence[str], *, batch_size: int = 64) -> Predictions:
        """Probabilities of each text with what a reader should know about them (see :class:`Predictions`).

        Texts are tokenised once, then run in the batches of :func:`length_batches` (at most
        ``batch_size`` texts each, cut where padding would cost more than another call), planned
        over windows of :data:`PLAN_WINDOW` texts so memory stays bounded on large inputs.
        """
        checked = validate_texts(texts, allow_empty=True)  # none: an empty answer, as translate() gives
        batch_size = check_count("batch_size", batch_size)
        if self.batch_dependent:
            batch_size = 1
        probs = np.zeros((len(checked), len(self.labels)), dtype=np.float32)
        truncated = np.zeros(len(checked), dtype=bool)
        unknown = np.zeros(len(checked), dtype=bool)
        share = np.zeros(len(checked), dtype=np.float64)
        window = max(PLAN_WINDOW, batch_size)
        call_cost = CALL_COST_TOKENS / self.padding_cost
        for offset in range(0, len(checked), window):
            rows, cut = self.tokenizer.ids_truncated(checked[offset : offset + window])
            truncated[offset : offset + len(rows)] = cut
            shares = self.tokenizer.unknown_shares(rows, empty=1.0)  # a row of no piece of its own: nothing read
            unknown[offset : offset + len(rows)] = self.tokenizer.unreadable(rows, shares)
            share[offset : offset + len(rows)] = shares
            for batch in length_batches([len(row) for row in rows], batch_size, call_cost=call_cost):
                index = [offset + i for i in batch]
                probs[index] = self.probabilities(self.tokenizer.pad([rows[i] for i in batch]))
        return Predictions(probs=probs, truncated=truncated, unknown=unknown, unknown_share=share)

    def predict_proba_truncated(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(N, num_labels)`` and, per text, whether it was cut to the model's ``max_length``."""
        found = self.predictions(texts, batch_size=batch_size)
        return found.probs, found.truncated

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``(N, num_labels)``: softmax, or independent sigmoids when multi-label."""
        return self.predict_proba_truncated(texts, batch_size=batch_size)[0]

    def checked_threshold(self, threshold: float | None) -> float:
        """``threshold`` as a multi-label model chooses labels with it (None: :data:`MULTI_LABEL_THRESHOLD`).

        Raises:
            ValueError: a threshold given to a single-label model (it was accepted and had no
                effect), or one that is not a number in (0, 1].
        """
        if threshold is None:
            return MULTI_LABEL_THRESHOLD
        if not self.multi_label:
            raise ValueError(f"threshold={threshold!r} is for a multi-label model; this one picks the most "
                             "probable label of each text (filter predict_proba's rows to hold back unsure ones)")
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold!r} must be a number in (0, 1]")
        return float(threshold)

    def chosen(self, probs: np.ndarray, threshold: float | None = None) -> list[list[str]] | None:
        """A multi-label model's labels per row of ``probs``: all at or above ``threshold`` (default
        :data:`MULTI_LABEL_THRESHOLD`; as :meth:`predict` and evaluation count them); None for a
        single-label model."""
        cut = self.checked_threshold(threshold)  # a threshold given to a single-label model is refused
        if not self.multi_label:
            return None
        return [[self.labels[j] for j in np.flatnonzero(row >= cut)] for row in np.atleast_2d(probs)]

    def predict(self, texts: Sequence[str], *, batch_size: int = 64,
                threshold: float | None = None) -> list[Any]:  # fmt: skip
        """The top label per text; a multi-label model's labels at or above ``threshold`` (default
        :data:`MULTI_LABEL_THRESHOLD`), a number in (0, 1] (a single-label model takes none: it was
        accepted and had no effect)."""
        self.checked_threshold(threshold)
        probs = self.predict_proba(texts, batch_size=batch_size)
        chosen = self.chosen(probs, threshold)
        return chosen if chosen is not None else [self.labels[int(j)] for j in probs.argmax(1)]

    def top_k(self, texts: Sequence[str], k: int = 3, *, batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable labels per text, with probabilities, most probable first."""
        return self.ranked(self.predict_proba(texts, batch_size=batch_size), k)

    def ranked(self, probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable labels per row of ``probs`` (``predict_proba``'s), most probable first."""
        k = min(check_count("k", k), len(self.labels))
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.labels[j], float(row[j])) for j in idx] for row, idx in zip(probs, order, strict=True)]

    def explain(self, texts: Sequence[str], method: str = "rollout", **options: Any) -> list[dict[str, Any]]:
        """Per text: tokens, predicted label and probability, and a token-importance vector (JSON-ready).

        A shortcut to :func:`attend.explain.explain` (see there for ``method`` and ``options``).
        """
        from attend.explain import explain

        maps = bool(options.get("maps", False))
        return [e.to_dict(maps=maps) for e in explain(self, texts, method, **options)]

    def evaluate(
        self,
        data: str | os.PathLike[str] | LabelledTexts,
        *,
        text_col: str | None = None,
        label_col: str | None = None,
        batch_size: int = 128,
        label_sep: str | None = None,
        threshold: float | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Accuracy, macro/micro F1 and the per-class report on labelled data (a file, a dataset name,
        or loaded texts); a label the model does not know is an error naming its line. Columns left
        out are the ones the model trained on (else ``text`` and ``label``); a multi-label model
        splits cells at ``label_sep`` (default: the separator it trained with) and chooses labels
        from ``threshold`` (default 0.5). ``progress``: a bar on stderr over the texts."""
        text_col = model_column(self.config, self.path, "text_col", text_col)
        label_col = model_column(self.config, self.path, "label_col", label_col)
        cut = self.checked_threshold(threshold)
        label_sep = label_separator(self.config, self.path, label_sep)
        dataset = data if isinstance(data, LabelledTexts) else load_labelled(
            data, text_col=text_col, label_col=label_col, multi_label=self.multi_label, label_sep=label_sep
        )  # fmt: skip
        texts = validate_texts(dataset.texts, allow_empty=True)  # named by their place in the whole, not a chunk's
        # Chunks of the windows predictions() plans its batches over: the same batches, the same figures.
        size = max(PLAN_WINDOW, check_count("batch_size", batch_size))
        parts = [self.predictions(part, batch_size=batch_size)
                 for part in evaluation_chunks(texts, progress=progress, unit="text", size=size)]  # fmt: skip
        probs = (np.concatenate([part.probs for part in parts]) if parts else
                 self.predict_proba([], batch_size=batch_size))  # fmt: skip
        # what the figures rest on, as predict says it per text: cut texts, and texts it cannot read at all
        # (scored without a word, a text cut to its first half had counted as one the model read)
        cut_texts = int(sum(int(part.truncated.sum()) for part in parts))
        unreadable = int(sum(int(part.unknown.sum()) for part in parts))
        scores = score_probabilities(probs, dataset, self.labels, self.multi_label, threshold=cut) | {
            "source": dataset.source, "examples": len(dataset), "truncated": cut_texts,
            "unreadable": unreadable}  # fmt: skip
        if threshold is not None:
            scores["threshold"] = cut
        overlap = self.training_overlap(dataset.texts)
        return scores if overlap is None else scores | {"training_overlap": overlap}


class TorchTextClassifier(TextClassifier):
    """A classifier run by PyTorch.

    Attributes:
        model: The network, in eval mode.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (dynamic quantisation at load).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: TextTokenizer,
        labels: list[str],
        config: dict[str, Any],
        path: Path | None = None,
        *,
        precision: str = "fp32",
    ) -> None:
        super().__init__(tokenizer, labels, config, path)
        self.model = model
        self.precision = precision

    @property
    def backend(self) -> str:
        return "torch" if self.precision == "fp32" else f"torch-{self.precision}"

    @property
    def capabilities(self) -> Capabilities:
        if self.precision == "int8":  # quantised modules record no maps and give no gradients
            return Capabilities()
        return Capabilities(
            maps=bool(recordable_names(self.model, "attention")),
            pooling=bool(recordable_names(self.model, "pooling")),
            gradients=True,
        )

    @property
    def padding_cost(self) -> float:
        # Models whose layers skip padding (MiniLM, the encoder; attend.attention.unpad) say what a
        # padded position costs them against a real token.
        return float(getattr(self.model, "padding_cost", 1.0))

    def logits(self, encoded: dict[str, Any]) -> Tensor:
        return self.model(model_inputs(encoded)).logits

    def attention_outputs(
        self, encoded: dict[str, Any], *, layers: Sequence[int] | None = None, grad: bool = False
    ) -> AttentionOutputs:
        if grad and not self.capabilities.gradients:
            raise ValueError(f"the {self.backend} model gives no gradients; explain with the fp32 or bf16 model")
        names = None
        all_layers = recordable_names(self.model, "attention")
        if layers is not None and all_layers:  # record only what is asked: one layer's map may be all it takes
            chosen = self._layer_indices(layers, len(all_layers))
            names = [all_layers[i] for i in chosen] + recordable_names(self.model, "pooling")
        with torch.inference_mode(not grad), torch.enable_grad() if grad else torch.no_grad():
            with capture_attention(self.model, grad=grad, names=names) as cap:
                logits = self.model(model_inputs(encoded)).logits
        pooling = cap.pooling_weights[-1] if cap.pooling_weights else None
        return AttentionOutputs(logits=logits, maps=list(cap.weights), pooling=pooling)


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


def read_labels(artifact: ArtifactDir) -> list[str]:
    labels = artifact.config.get("labels")
    file = artifact.path / "config.json"
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ModelDirError(f"{file} lists no labels (expected a list of label names)")
    expected = artifact.config["model"].get("num_labels")
    if expected is not None and expected != len(labels):
        raise ModelDirError(f"{file} lists {len(labels)} labels, but its model has num_labels={expected}")
    repeated = sorted(label for label, count in Counter(labels).items() if count > 1)
    if repeated:
        raise ModelDirError(f"{file} lists the label(s) {repeated} more than once")
    return labels


def read_tokenizer(artifact: ArtifactDir) -> TextTokenizer:
    file = artifact.path / "config.json"
    value = (artifact.config.get("tokenizer") or {}).get("max_length", 256)
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ModelDirError(f"{file}: tokenizer max_length={value!r} must be an integer >= 2")
    return TextTokenizer.from_file(artifact.file("tokenizer.json"), max_length=value)


def load_torch(artifact: ArtifactDir, *, int8: bool = False, bf16: bool = False) -> TorchTextClassifier:
    """A PyTorch classifier from a model directory written by ``attend train`` or ``attend prune``."""
    path = artifact.path
    if not isinstance(artifact.config.get("model"), dict):
        raise ModelDirError(f"{path / 'config.json'} lacks the 'model' and 'labels' entries of an attend model")
    labels = read_labels(artifact)
    model_config = dict(artifact.config["model"])
    if "pretrained" in model_config:
        model_config["pretrained"] = False  # the directory's own weights replace the package's
    try:
        model = build(config_from_dict(model_config))
    except (TypeError, ValueError) as exc:
        raise ModelDirError(f"{path / 'config.json'}: invalid model config ({exc})") from None
    weights = artifact.tensors("model.safetensors")
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise weights_mismatch(path, exc) from None
    if missing or unexpected:
        raise ModelDirError(
            f"{path / 'model.safetensors'} does not fit the model in config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    model.eval()
    precision = "fp32"
    if int8:
        model, precision = quantize_torch_model(model), "int8"
    elif bf16:
        if not native_bf16():
            logging.getLogger("attend.serve").warning(
                "bf16: this CPU has no AMX tiles, where bfloat16 products run slower than float32 "
                "(MiniLM: 0.62-0.84x with AVX512-BF16 alone); serve without --bf16"
            )
        model, precision = model.to(torch.bfloat16), "bf16"
    return TorchTextClassifier(model, read_tokenizer(artifact), labels, artifact.config, path, precision=precision)
