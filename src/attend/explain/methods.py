"""Token importance from a model's attention: raw maps, rollout, flow, gradient-weighted, IG.

Every method ends in one vector per text: how much each input token matters to the prediction.
Attention maps say how positions mix *between* layers; what turns them into one vector is the
model's **readout** ``r (B, L)``, the weights with which the last layer's token states become
the text vector: the attention-pooling weights, a one-hot on ``[CLS]``, or uniform over the
real tokens for mean pooling. Raw attention is then ``r @ mean_h A_layer``, rollout is
``r @ Ã_N ... Ã_1`` and so on, so every method reads the same way for every model in the
registry. A model without self-attention layers (the BiLSTM) has ``r`` only: each method
reduces to the pooling weights (gradient-weighted ones for ``grad_attention``).

Methods live in the :data:`METHODS` registry (:func:`register_method`): each is a function of
one batch's :class:`Evidence` (maps, pooling weights, readout, gradients), so a new method is one
function. They work on any runtime that offers what :class:`Explainable` describes: the PyTorch
classifier (maps from the capture API while every layer keeps its fused SDPA call; gradients for
``grad_attention`` and Integrated Gradients), or an ONNX Runtime one whose graph was exported
with its attention outputs (every method that needs no gradients).
"""

from __future__ import annotations

import math
import numbers
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attend.data.validation import check_count, validate_texts
from attend.explain.focus import distribution_focus
from attend.explain.protocol import Capable, Combined, Explainable, check_classifier
from attend.explain.words import onto_words, word_spans
from attend.models import MULTI_LABEL_THRESHOLD, probabilities

#: Most integrated-gradients steps (each one more forward and backward pass of the text).
MAX_IG_STEPS = 1000

__all__ = [
    "BASELINES",
    "METHODS",
    "Evidence",
    "ExplainMethod",
    "Explainable",
    "Explanation",
    "attention_flow",
    "available_methods",
    "explain",
    "grad_rollout",
    "readout",
    "register_method",
    "rollout",
]

#: Characters of the text one listed token shows at most (:meth:`Explanation.display_tokens`).
LONGEST_SHOWN = 64


@dataclass
class Explanation:
    """One text's explanation.

    Attributes:
        text: The input text (when truncated, the part the model read).
        tokens: The tokens the model saw, special tokens included (``[CLS]``, ``[SEP]``).
        importance: One score per token (same length as ``tokens``). Attention methods give
            non-negative weights summing to 1 over the tokens; Integrated Gradients gives
            signed attributions (positive = supports the explained label).
        special: Per token, whether it is a special token (not part of the text).
        label: The predicted label (for multi-label models, the most probable one).
        probability: Its probability.
        target: The label the importance explains (the predicted one unless asked otherwise).
        method: The method that produced ``importance``.
        truncated: The text was longer than the model's ``max_length`` and was cut.
        focus: Focus metrics of ``importance`` over the text's tokens (see :mod:`attend.explain.focus`).
        maps: On request, per layer a ``(H, L, L)`` array of post-softmax attention weights.
        pooling: The attention-pooling weights per token, when the model has such a pooling.
        note: Anything the reader should know about how the importance was obtained.
        layer: For ``attention``: the layer read, as asked (an index from 0, a negative one from the
            last, or ``"mean"``); else None.
        head: For ``attention``: the head read, or None (the mean of heads).
        target_probability: The probability of ``target`` (of a multi-label model's other labels,
            ``probability`` is the most probable one's, not the explained one's).
        labels: A multi-label model's labels of probability at least 0.5 (possibly none), what
            ``predict`` gives; None for a single-label model.
    """

    text: str
    tokens: list[str]
    importance: list[float]
    special: list[bool]
    label: str
    probability: float
    target: str
    method: str
    truncated: bool
    focus: dict[str, float]
    maps: list[np.ndarray] | None = None
    pooling: list[float] | None = None
    note: str = ""
    spans: list[tuple[int, int] | None] | None = None
    layer: int | str | None = None
    head: int | None = None
    target_probability: float | None = None
    labels: list[str] | None = None

    @property
    def explained_probability(self) -> float:
        """The probability of the label explained (``target``)."""
        return self.probability if self.target_probability is None else self.target_probability

    def display_tokens(self) -> list[str]:
        """Tokens as the text spells them (original case, characters the vocabulary lacks), for people;
        one that covers more than :data:`LONGEST_SHOWN` characters (a giant unknown "word") is cut
        there, ending in "…" (a 100,000-character line of one letter had been a single listed word)."""
        if self.spans is None:
            return list(self.tokens)
        shown = []
        # With the combining marks after a token that no token holds ("e" + U+0301: "é").
        for token, span in zip(self.tokens, _with_marks(self.spans, self.text), strict=True):
            # SentencePiece's word-start mark as a piece of its own covers nothing, or the space before
            # a word: shown as the model has it (the space had been listed as a blank token).
            if span is None or span[1] <= span[0] or not self.text[span[0] : span[1]].strip():
                shown.append(token)
            else:
                piece = self.text[span[0] : span[1]]
                if len(piece) > LONGEST_SHOWN:
                    piece = f"{piece[: LONGEST_SHOWN - 1]}…"
                shown.append(f"##{piece}" if token.startswith("##") else piece)
        return shown

    def reading(self) -> str:
        """What method ``attention`` read ("layer 0, head 1", "the mean of layers, the mean of
        heads"), or "" for the other methods."""
        if self.layer is None:
            return ""
        layer = "the mean of layers" if self.layer == "mean" else f"layer {self.layer}"
        return f"{layer}, " + ("the mean of heads" if self.head is None else f"head {self.head}")

    def to_dict(self, *, maps: bool = True) -> dict[str, Any]:
        """JSON-ready form; ``maps`` become nested lists ``[layer][head][query][key]``."""
        data: dict[str, Any] = {
            "text": self.text,
            "tokens": self.tokens,
            "importance": self.importance,
            "special": self.special,
            "label": self.label,
            "probability": self.probability,
            "target": self.target,
            "target_probability": self.explained_probability,
            "method": self.method,
            "truncated": self.truncated,
            "focus": self.focus,
        }
        if self.labels is not None:  # a multi-label model's chosen set: explain had shown only its top label
            data["labels"] = self.labels
        if self.pooling is not None:
            data["pooling"] = self.pooling
        if self.note:
            data["note"] = self.note
        if self.spans is not None:
            data["spans"] = [list(span) if span is not None else None for span in self.spans]
        if self.layer is not None:
            data["layer"], data["head"] = self.layer, self.head
        if maps and self.maps is not None:
            data["maps"] = [np.round(m, 6).tolist() for m in self.maps]
        return data


def _with_marks(spans: list[tuple[int, int] | None], text: str) -> list[tuple[int, int] | None]:
    """Spans extended over the combining marks after them that no token holds ("e" + U+0301: the
    tokenizer strips the accent, and the span ended before it, so spans left characters out)."""
    starts = {span[0] for span in spans if span is not None}
    out: list[tuple[int, int] | None] = []
    for span in spans:
        if span is None or span[1] <= span[0]:
            out.append(span)
            continue
        end = span[1]
        while end < len(text) and end not in starts and unicodedata.combining(text[end]):
            end += 1
        out.append((span[0], end))
    return out


# --- combining maps ------------------------------------------------------------------------


def _mixed(maps: Sequence[Tensor], residual: bool) -> list[Tensor]:
    """Head-averaged maps ``(B, L, L)``, with the residual term ``0.5 (A + I)`` if asked."""
    mixed = []
    for weights in maps:
        mean = weights.float().mean(1)  # (B, L, L)
        if residual:
            eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
            mean = 0.5 * mean + 0.5 * eye
        mixed.append(mean)
    return mixed


def rollout(maps: Sequence[Tensor], *, residual: bool = True) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``Ã_N @ ... @ Ã_1`` with ``Ã = 0.5 (mean_h A + I)``.

    Args:
        maps: One ``(B, H, L, L)`` map per layer, first layer first.
        residual: Add the identity for the residual connection (as in the paper).

    Returns:
        ``(B, L, L)``: row ``i`` is how much each input token flows into position ``i`` of the
        last layer. Rows sum to 1 over real tokens when the maps' rows do.
    """
    if not maps:
        raise ValueError("rollout needs at least one attention map")
    mixed = _mixed(maps, residual)
    result = mixed[0]
    for layer in mixed[1:]:
        result = layer @ result
    return result


def attention_flow(maps: Sequence[Tensor], readout_weights: Tensor, lengths: Sequence[int]) -> Tensor:
    """Attention flow (Abnar & Zuidema 2020): max-flow from the readout to each input token.

    The layers form a graph: node ``(l, i)`` (token ``i`` after layer ``l``) has an edge to every
    ``(l - 1, j)`` with capacity ``Ã_l[i, j]`` (``Ã = 0.5 (mean_h A + I)``), and a source feeds
    ``(N, i)`` with capacity ``r_i``. A token's importance is the maximum flow from the source
    to ``(0, j)``. Solved with SciPy's max-flow on capacities scaled to integers (1e-6 resolution);
    cost grows with ``layers * L^2`` edges and one flow per token, so it is the slowest method.

    Args:
        maps: One ``(B, H, L, L)`` map per layer.
        readout_weights: ``(B, L)`` readout (see :func:`readout`).
        lengths: Real tokens per text (padding comes after them).

    Returns:
        ``(B, L)`` flows, normalised to sum 1 per text (zeros on padding).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    scale = 1_000_000
    mixed = [m.detach().cpu().double().numpy() for m in _mixed(maps, residual=True)]
    r = readout_weights.detach().cpu().double().numpy()
    out = np.zeros(r.shape, dtype=np.float64)
    layers = len(mixed)
    for b, n in enumerate(lengths):
        # Node ids: source 0, then (layer l, token i) -> 1 + l * n + i, layer 0 = inputs.
        rows, cols, caps = [], [], []
        top = 1 + layers * n
        for i in range(n):
            rows.append(0)
            cols.append(top + i - 0)
            caps.append(r[b, i])
        for level in range(layers, 0, -1):
            block = mixed[level - 1][b, :n, :n]
            src = 1 + level * n + np.repeat(np.arange(n), n)
            dst = 1 + (level - 1) * n + np.tile(np.arange(n), n)
            rows.extend(src.tolist())
            cols.extend(dst.tolist())
            caps.extend(block.reshape(-1).tolist())
        size = 1 + (layers + 1) * n
        capacity = np.rint(np.asarray(caps) * scale).astype(np.int32)
        graph = csr_matrix((capacity, (np.asarray(rows), np.asarray(cols))), shape=(size, size))
        graph.sum_duplicates()
        for j in range(n):
            out[b, j] = maximum_flow(graph, 0, 1 + j).flow_value / scale
        total = out[b].sum()
        if total > 0:
            out[b] /= total
    return torch.from_numpy(out).float()


def grad_rollout(maps: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """Gradient-weighted relevance (Chefer et al. 2021): ``R <- R + mean_h[(∇A ⊙ A)^+] R``, ``R_0 = I``.

    Args:
        maps: ``(B, H, L, L)`` per layer, first layer first.
        grads: The gradient of the explained logit with respect to each map.

    Returns:
        ``(B, L, L)`` relevance of each input token (columns) for each last-layer position (rows).
    """
    if len(maps) != len(grads) or not maps:
        raise ValueError(f"need one gradient per map, got {len(maps)} maps and {len(grads)} gradients")
    b, _, length, _ = maps[0].shape
    relevance = torch.eye(length).expand(b, length, length).clone()
    for weights, grad in zip(maps, grads, strict=True):
        cam = (weights.detach().float() * grad.detach().float()).clamp_min(0).mean(1)  # (B, L, L)
        relevance = relevance + cam @ relevance
    return relevance




# --- the readout ----------------------------------------------------------------------------


def readout(pooling: str, attention_mask: Tensor, pooling_weights: Tensor | None) -> Tensor:
    """``(B, L)`` weights with which the last layer's token states become the text vector.

    ``pooling``: the model's pooling mode (``"mean"``, ``"cls"``, ``"attention"``); attention
    pooling reads ``pooling_weights``.
    """
    mask = attention_mask.float()
    if pooling_weights is not None:
        return pooling_weights.detach().float() * mask
    if pooling == "cls":
        onehot = torch.zeros_like(mask)
        onehot[:, 0] = 1.0
        return onehot
    return mask / mask.sum(1, keepdim=True).clamp_min(1.0)


#: grad_attention's note where no pooling weight times its gradient is positive: every token lowers the
#: explained label's score through the pooling (typically a label other than the predicted one).
NO_POSITIVE_POOLING = ("no token raises this label's score through the pooling (its weights times their gradients "
                       "are all <= 0)")


def _normalise(importance: Tensor, mask: Tensor) -> Tensor:
    importance = importance.clamp_min(0) * mask
    total = importance.sum(-1, keepdim=True)
    uniform = mask / mask.sum(-1, keepdim=True).clamp_min(1.0)
    return torch.where(total > 0, importance / total.clamp_min(1e-30), uniform)




def _raw(maps: list[Tensor], r: Tensor, layer: int | str, head: int | None, *, pruned: bool = False) -> Tensor:
    """``r @ A`` for one layer (or the mean of layers) and one head (or the mean of heads). Layers
    may have different head counts (a pruned model): the mean of layers is of each layer's mean."""
    if layer == "mean":
        counts = sorted({m.shape[1] for m in maps})
        if head is None:
            return (r[:, None, :] @ torch.stack([m.float().mean(1) for m in maps]).mean(0)).squeeze(1)
        if len(counts) > 1:
            raise ValueError(f"head={head}; with layer='mean' it would be a head of every layer, and this model's "
                             f"layers have {' or '.join(map(str, counts))} heads (pruned): choose a layer")  # fmt: skip
        chosen = torch.stack([m.float() for m in maps]).mean(0)
    else:
        if not isinstance(layer, int) or not -len(maps) <= layer < len(maps):
            raise ValueError(
                f"layer={layer!r}; this model has {len(maps)} layers (use 0..{len(maps) - 1}, -1..-{len(maps)} from "
                "the last, or 'mean')"
            )
        chosen = maps[layer].float()
    if head is None:
        matrix = chosen.mean(1)
    else:
        if not 0 <= head < chosen.shape[1]:
            where = "the layer chosen has" if pruned and layer != "mean" else "this model has"
            renumbered = " (pruned: its layers may differ, each numbering the heads it kept from 0)" if pruned else ""
            raise ValueError(f"head={head}; {where} {chosen.shape[1]} heads (use 0..{chosen.shape[1] - 1}){renumbered}")
        matrix = chosen[:, head]
    return (r[:, None, :] @ matrix).squeeze(1)




# --- the registry ---------------------------------------------------------------------------


@dataclass
class Evidence:
    """What one batch offers a method: the forward pass with its attention, and the options.

    Attributes:
        runtime: The model being explained.
        inputs: The encoded batch (model inputs).
        mask: ``(B, L)`` float, 1 on real tokens.
        probs: ``(B, C)`` predicted probabilities.
        targets: ``(B,)`` index of the label explained per text.
        maps: Recorded self-attention maps, ``(B, H, L, L)`` each (only the chosen layer for
            ``attention`` with one layer).
        pooling: ``(B, L)`` attention-pooling weights, if any.
        readout: ``(B, L)`` the readout (see :func:`readout`).
        grads: For methods that asked for gradients: the explained logit's gradient per map.
        pooling_grad: ... and with respect to the pooling weights.
        layer: A layer index into ``maps`` or ``"mean"``.
        head: One head, or None for the mean of heads.
        ig_steps: Integration steps of Integrated Gradients.
        generator: Seeded randomness for the batch.
        seeds: One seed per text of the batch, from the call's seed and the text itself: the
            ``random`` baseline draws each text's scores from its own, so they do not depend on how
            texts were batched (ONNX Runtime and PyTorch plan batches differently) nor on the other
            texts of the call (``attend explain --input`` and ``POST /v1/explain`` explain a long
            list in parts, and had drawn otherwise than one call for the whole list).
    """

    runtime: Explainable
    inputs: dict[str, Tensor]
    mask: Tensor
    probs: Tensor
    targets: Tensor
    maps: list[Tensor]
    pooling: Tensor | None
    readout: Tensor
    grads: list[Tensor] = field(default_factory=list)
    pooling_grad: Tensor | None = None
    layer: int | str = -1
    head: int | None = None
    ig_steps: int = 32
    generator: torch.Generator | None = None
    seeds: list[int] = field(default_factory=list)


Importance = Callable[[Evidence], tuple[Tensor, str | list[str]]]


@dataclass(frozen=True)
class ExplainMethod:
    """A registered explanation method.

    Attributes:
        name: Its name (``--method``).
        compute: ``(importance (B, L), note)`` from a batch's :class:`Evidence`; the note is one
            string for every text of the batch, or a list of one per text.
        requires: What the runtime must offer: ``"attention"`` (maps or pooling weights),
            ``"pooling"`` or ``"gradients"``.
        gradients: The forward pass keeps the maps in the autograd graph and :attr:`Evidence.grads`
            holds their gradients.
        baseline: A reference for faithfulness (``random``, ``uniform``), not an explanation.
        signed: Its importance is a signed attribution (Integrated Gradients), not a
            distribution over the tokens; an ensemble sums it onto words instead of
            renormalising it there.
        layer_and_head: It reads :attr:`Evidence.layer` and :attr:`Evidence.head` (``attention``
            does); ``explain`` refuses a layer or head for a method that does not.
    """

    name: str
    compute: Importance
    requires: str = "attention"
    gradients: bool = False
    baseline: bool = False
    signed: bool = False
    layer_and_head: bool = False

    def available(self, capabilities: Capable) -> bool:
        if self.requires == "gradients":
            return capabilities.gradients
        if self.requires == "pooling":
            return capabilities.pooling
        return capabilities.maps or capabilities.pooling


#: Explanation methods (and faithfulness baselines) by name.
METHODS: dict[str, ExplainMethod] = {}


def register_method(
    name: str, *, requires: str = "attention", gradients: bool = False, baseline: bool = False, signed: bool = False,
    layer_and_head: bool = False,
) -> Callable[[Importance], Importance]:
    """Decorator: register ``compute(evidence) -> (importance, note)`` as method ``name``."""
    if requires not in ("attention", "pooling", "gradients"):
        raise ValueError(f"requires={requires!r}; choose 'attention', 'pooling' or 'gradients'")

    def decorator(compute: Importance) -> Importance:
        if name in METHODS:
            raise ValueError(f"explanation method {name!r} is already registered")
        METHODS[name] = ExplainMethod(name, compute, requires=requires, gradients=gradients, baseline=baseline,
                                      signed=signed, layer_and_head=layer_and_head)  # fmt: skip
        return compute

    return decorator


def refuse_unavailable(runtime: Explainable | Combined, chosen: ExplainMethod) -> None:
    """Raise a ValueError saying why ``chosen`` cannot explain ``runtime`` (no attention recorded,
    no gradients, no attention pooling; for an ensemble, the member that cannot), if it cannot; the
    methods it can are named."""
    if isinstance(runtime, Combined):
        for index, member in enumerate(runtime.members):
            try:
                refuse_unavailable(member, chosen)
            except ValueError as why:  # the member's own reason (it had been "the ensemble offers []" alone)
                raise ValueError(
                    f"method {chosen.name!r}: member {index} of the ensemble ({getattr(member, 'name', 'model')}) "
                    f"cannot be explained with it ({why}); the ensemble offers {available_methods(runtime)}"
                ) from None
        return
    capabilities = runtime.capabilities
    if chosen.available(capabilities):
        return
    method = chosen.name
    if not (capabilities.maps or capabilities.pooling) and chosen.requires != "gradients":
        raise ValueError(
            f"this {runtime.backend} model records no attention, so method {method!r} cannot explain it: "
            "explain the PyTorch fp32 model, or an ONNX export made with --attentions"
        )
    if chosen.requires == "gradients":
        others = available_methods(runtime)
        raise ValueError(
            f"method {method!r} needs gradients, which an ONNX graph (or an int8 model) does not give: use "
            + (f"one of {others}, or " if others else "") + "the PyTorch fp32 model"
        )
    raise ValueError(f"{runtime.model_type} has no attention pooling; use one of {available_methods(runtime)}")


def available_methods(runtime: Explainable | Combined) -> list[str]:
    """The methods (and baselines) this runtime can be explained with; none if it records no attention.

    An ensemble (:class:`Combined`) offers the methods every one of its members offers.
    """
    check_classifier(runtime, "available_methods()")
    if isinstance(runtime, Combined):
        offered = [set(available_methods(member)) for member in runtime.members]
        return [name for name in METHODS if all(name in names for names in offered)]
    capabilities = runtime.capabilities
    if not (capabilities.maps or capabilities.pooling or capabilities.gradients):
        return []
    return [name for name, method in METHODS.items() if method.available(capabilities)]


def _check_method(method: str) -> ExplainMethod:
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {list(METHODS)}")
    return METHODS[method]


NO_LAYERS = "no self-attention layers: the attention-pooling weights"


@register_method("attention", layer_and_head=True)
def _attention(evidence: Evidence) -> tuple[Tensor, str]:
    """Raw weights of one layer (or the mean of layers), one head or the mean of heads, read out."""
    if not evidence.maps:
        chosen = _layer_and_head_chosen(evidence.layer, evidence.head)
        if chosen:  # nothing to choose from: not ignored
            raise ValueError(f"{chosen}: {evidence.runtime.model_type} has no self-attention layers (method "
                             "'attention' reads its attention-pooling weights); leave them out")  # fmt: skip
        return _normalise(evidence.readout, evidence.mask), NO_LAYERS
    pruned = bool((evidence.runtime.config.get("model") or {}).get("pruned_heads"))
    importance = _raw(evidence.maps, evidence.readout, evidence.layer, evidence.head, pruned=pruned)
    return _normalise(importance, evidence.mask), ""


@register_method("pooling", requires="pooling")
def _pooling(evidence: Evidence) -> tuple[Tensor, str]:
    """The attention-pooling weights themselves."""
    if evidence.pooling is None:
        raise ValueError(f"{evidence.runtime.model_type} has no attention pooling; use method 'attention' or 'rollout'")
    return _normalise(evidence.pooling, evidence.mask), ""


@register_method("rollout")
def _rollout(evidence: Evidence) -> tuple[Tensor, str]:
    if not evidence.maps:
        return _normalise(evidence.readout, evidence.mask), NO_LAYERS
    r = evidence.readout
    return _normalise((r[:, None, :] @ rollout(evidence.maps)).squeeze(1), evidence.mask), ""


@register_method("flow")
def _flow(evidence: Evidence) -> tuple[Tensor, str]:
    if not evidence.maps:
        return _normalise(evidence.readout, evidence.mask), NO_LAYERS
    lengths = [int(n) for n in evidence.mask.sum(1)]
    return _normalise(attention_flow(evidence.maps, evidence.readout, lengths), evidence.mask), ""


@register_method("grad_attention", requires="gradients", gradients=True)
def _grad_attention(evidence: Evidence) -> tuple[Tensor, str]:
    """Attention x gradient (Chefer et al. 2021), read out by gradient-weighted pooling when there is one."""
    r, pooling, pooling_grad = evidence.readout, evidence.pooling, evidence.pooling_grad
    if not evidence.maps:
        if pooling is not None and pooling_grad is not None:
            raw = pooling.float() * pooling_grad.float() * evidence.mask
            said = "no self-attention layers: pooling weights times their gradient"
            # none positive (a label the text argues against): _normalise's uniform map had been given as evidence
            notes = [f"{said}; {NO_POSITIVE_POOLING}: the importance is uniform, not evidence" if none else said
                     for none in (raw.clamp_min(0).sum(1) <= 0).tolist()]  # fmt: skip
            return _normalise(raw, evidence.mask), notes
        return _normalise(r, evidence.mask), NO_LAYERS
    notes: str | list[str] = ""
    if pooling is not None and pooling_grad is not None:
        weighted = (pooling.float() * pooling_grad.float() * evidence.mask).clamp_min(0)
        positive = weighted.sum(1, keepdim=True) > 0
        r = torch.where(positive, weighted, r)
        # said: the pooling weights alone do not depend on the label (they had been given without a word)
        notes = [f"{NO_POSITIVE_POOLING}: read out through the pooling weights alone, which do not depend on the "
                 "label" if not kept else "" for kept in positive.squeeze(1).tolist()]  # fmt: skip
    return _normalise((r[:, None, :] @ grad_rollout(evidence.maps, evidence.grads)).squeeze(1), evidence.mask), notes


@register_method("integrated_gradients", requires="gradients", signed=True)
def _integrated_gradients(evidence: Evidence) -> tuple[Tensor, str]:
    """Integrated Gradients (Sundararajan et al. 2017; Captum) on the token embeddings; baseline =
    every text token replaced by ``[PAD]``.

    The interpolated embeddings go into the model as ``inputs_embeds``: nothing is hooked into the
    shared model, so concurrent requests (and the predictions beside them) are unaffected.
    Attributions are on the explained logit, so they sum to ``logit(x) - logit(baseline)`` up to
    the convergence delta reported in the note. They are signed (not normalised).
    """
    from captum.attr import IntegratedGradients

    runtime = evidence.runtime
    model: nn.Module = runtime.model  # type: ignore[attr-defined]  # gradients: a PyTorch runtime
    embeddings = getattr(model, "input_embeddings", None)
    if embeddings is None:
        raise ValueError(f"{type(model).__name__} has no input_embeddings(); Integrated Gradients needs it")
    batch = evidence.inputs
    names = sorted(batch)

    def forward(inputs_embeds: Tensor, *values: Tensor) -> Tensor:
        return model({**dict(zip(names, values, strict=True)), "inputs_embeds": inputs_embeds}).logits.float()

    input_ids = batch["input_ids"]
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    for special in runtime.tokenizer.special_ids:
        keep |= input_ids == special
    baseline = torch.where(keep, input_ids, torch.full_like(input_ids, runtime.tokenizer.pad_id))
    table = embeddings()
    steps = evidence.ig_steps
    with torch.enable_grad():
        attributions, delta = IntegratedGradients(forward).attribute(
            table(input_ids).detach(),
            baselines=table(baseline).detach(),
            target=evidence.targets,
            additional_forward_args=tuple(batch[k] for k in names),
            n_steps=steps,
            internal_batch_size=IG_INTERNAL_BATCH,  # memory bounded whatever the steps (all at once: 5 GB at 256)
            return_convergence_delta=True,
        )
    importance = attributions.sum(-1).detach().float() * evidence.mask
    # Each text's own error: a batch's worst would make a text's note depend on its batch.
    notes = [f"Integrated Gradients, {steps} steps, [PAD] baseline; |completeness error| {float(error):.2e}"
             for error in delta.abs().reshape(-1)]  # fmt: skip
    return importance, notes


@register_method("random", baseline=True)
def _random(evidence: Evidence) -> tuple[Tensor, str]:
    """Random importance: the floor any method must clear in faithfulness."""
    if not evidence.seeds:
        return _normalise(torch.rand(evidence.mask.shape, generator=evidence.generator), evidence.mask), ""
    values = torch.zeros(evidence.mask.shape)
    lengths = evidence.inputs["attention_mask"].sum(-1).tolist()
    for row, (seed, length) in enumerate(zip(evidence.seeds, lengths, strict=True)):
        values[row, : int(length)] = torch.rand(int(length), generator=torch.Generator().manual_seed(seed))
    return _normalise(values, evidence.mask), ""


@register_method("uniform", baseline=True)
def _uniform(evidence: Evidence) -> tuple[Tensor, str]:
    """Every token equal (ties broken at random by faithfulness)."""
    return _normalise(torch.ones_like(evidence.mask), evidence.mask), ""


#: Methods that explain a prediction, and the faithfulness baselines, by name.
BASELINES = tuple(name for name, method in METHODS.items() if method.baseline)


# --- explain -------------------------------------------------------------------------------


def _target_index(runtime: Explainable, target: str | None, probs: Tensor) -> Tensor:
    """The explained label per row: the predicted one, or ``target`` (checked by :func:`_check_arguments`)."""
    if target is None:
        return probs.argmax(-1)
    return torch.full((probs.shape[0],), runtime.labels.index(target), dtype=torch.long)


def _evidence(
    runtime: Explainable,
    batch: dict[str, Tensor],
    method: ExplainMethod,
    *,
    layer: int | str,
    target: str | None,
    want_maps: bool,
) -> Evidence:
    """One forward pass with the attention ``method`` reads (and its gradients, if it asks for them)."""
    inputs = {k: v for k, v in batch.items() if k not in ("truncated", "offsets")}
    layers = None
    if method.name == "attention" and isinstance(layer, int) and not want_maps:
        layers = [layer]  # one layer's map is all this needs
    outputs = runtime.attention_outputs(inputs, layers=layers, grad=method.gradients)
    if layers is not None and outputs.maps:
        layer = -1
    probs = probabilities(outputs.logits, runtime.multi_label)
    targets = _target_index(runtime, target, probs)
    grads: list[Tensor] = []
    pooling_grad = None
    maps, pooling = list(outputs.maps), outputs.pooling
    if method.gradients:
        chosen = outputs.logits.gather(1, targets[:, None]).sum()
        wrt = [*maps, *([pooling] if pooling is not None else [])]
        computed = torch.autograd.grad(chosen, wrt, allow_unused=True)
        computed = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, computed, strict=True)]
        grads = list(computed[: len(maps)])
        pooling_grad = computed[len(maps)] if pooling is not None else None
    maps = [m.detach() for m in maps]
    pooling = pooling.detach() if pooling is not None else None
    return Evidence(
        runtime=runtime, inputs=inputs, mask=batch["attention_mask"].float(), probs=probs, targets=targets, maps=maps,
        pooling=pooling, readout=readout(runtime.pooling, batch["attention_mask"], pooling), grads=grads,
        pooling_grad=pooling_grad, layer=layer,
    )  # fmt: skip


#: Interpolated inputs Integrated Gradients runs per forward pass.
IG_INTERNAL_BATCH = 64

_PREDICTS_NONE = f"no label reaches probability {MULTI_LABEL_THRESHOLD:g}, so the model predicts none"


def _predicts_none(label: str) -> str:
    """The note of a multi-label model's text with no label predicted: it is explained all the same
    (what drew it closest), but the reader must not take the label as predicted."""
    return f"{_PREDICTS_NONE}, and this explains the most probable, {label!r}"


#: The note of a text the model cannot read (as ``attend predict`` warns of it).
_UNREADABLE = "no piece of this text is in the model's vocabulary (all [UNK]): the prediction, and so this " \
              "explanation, is a guess"


def _layer_and_head_chosen(layer: Any, head: Any) -> str:
    """``"layer=0, head=1"``: the layer and head asked for away from their defaults (-1, None)."""
    return ", ".join(f"{name}={value!r}" for name, value, default in (("layer", layer, -1), ("head", head, None))
                     if value != default)  # fmt: skip


def _check_arguments(chosen: ExplainMethod, labels: Sequence[str], *, layer: Any, head: Any, target: Any,
                     batch_size: Any, ig_steps: Any, seed: Any, offered: Sequence[str]) -> None:  # fmt: skip
    """Refuse arguments of the wrong type or range, naming them (they raised numpy, torch or Captum
    errors from inside), and a ``target`` for a method that does not depend on the label, naming
    those of the model's methods (``offered``) that do."""

    def integer(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not (integer(layer) or layer == "mean"):
        raise ValueError(f"layer={layer!r} must be a layer index (an integer; -1 is the last) or 'mean'")
    if head is not None and not integer(head):
        raise ValueError(f"head={head!r} must be a head index (an integer) or None (the mean of heads)")
    check_count("batch_size", batch_size)
    check_ig_steps(ig_steps)
    if not integer(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2**32)")
    ignored = _layer_and_head_chosen(layer, head)
    if ignored and not chosen.layer_and_head:
        raise ValueError(f"{ignored}: for method 'attention' only ({chosen.name!r} does not read one "
                         "chosen layer or head)")  # fmt: skip
    if target is not None and target not in labels:
        raise ValueError(f"target={target!r} is not a label of this model; labels are {list(labels)}")
    if target is not None and chosen.requires != "gradients":
        by_label = [name for name in offered if METHODS[name].requires == "gradients"]
        # An ONNX graph offers none: the hint had named methods its runtime then refused.
        use = (f"use {' or '.join(by_label)}" if by_label else "none of this model's methods does (they need "
               "gradients: explain its PyTorch model directory with grad_attention or integrated_gradients)")
        raise ValueError(
            f"target={target!r}: method {chosen.name!r} does not depend on the label (its importance is the same "
            f"whatever label is asked about), so it cannot explain another one; {use}"
        )


def explain(
    runtime: Explainable | Combined,
    texts: Sequence[str],
    method: str = "rollout",
    *,
    layer: int | str = -1,
    head: int | None = None,
    target: str | None = None,
    maps: bool = False,
    batch_size: int = 32,
    ig_steps: int = 32,
    seed: int = 0,
) -> list[Explanation]:
    """Explain each text's prediction with one method.

    Args:
        runtime: A loaded classifier (:func:`attend.load`): PyTorch, or ONNX Runtime for a graph
            exported with its attention outputs (``attend export --attentions``; every method
            but the gradient ones).
        texts: The texts; batched and padded internally (long texts are truncated, and say so).
        method: A name of :data:`METHODS`: ``attention`` (raw weights of ``layer``, mean over heads
            or one ``head``, read out by the model's pooling), ``pooling`` (attention-pooling
            weights), ``rollout``, ``flow``, ``grad_attention`` (attention x gradient, Chefer et al.
            2021), ``integrated_gradients`` (Captum; signed attributions), or a faithfulness
            baseline (``random``, ``uniform``).
        layer: For ``attention``: a layer index (``-1`` = last) or ``"mean"``.
        head: For ``attention``: one head instead of the mean of heads.
        target: Explain this label instead of the predicted one.
        maps: Also return every layer's per-head maps (real tokens only).
        batch_size: Texts per forward pass.
        ig_steps: Integration steps for Integrated Gradients.
        seed: Seeds the ``random`` baseline.

    An ensemble (:class:`Combined`) is explained by its members: see :func:`_explain_combined`.
    """
    check_classifier(runtime, "explain()")
    chosen = _check_method(method)
    _check_arguments(chosen, list(runtime.labels), layer=layer, head=head, target=target, batch_size=batch_size,
                     ig_steps=ig_steps, seed=seed, offered=available_methods(runtime))  # fmt: skip
    checked = validate_texts(texts, allow_empty=True)
    if not checked:  # nothing to explain (the arguments were checked all the same)
        return []
    if isinstance(runtime, Combined):
        return _explain_combined(runtime, checked, chosen, layer=layer, head=head, target=target, maps=maps,
                                 batch_size=batch_size, ig_steps=ig_steps, seed=seed)  # fmt: skip
    refuse_unavailable(runtime, chosen)
    capabilities = runtime.capabilities
    generator = torch.Generator().manual_seed(seed)
    special_ids = runtime.tokenizer.special_ids
    # The layer method 'attention' read (as asked), recorded with its head; none without layers.
    read_layer = layer if chosen.layer_and_head and capabilities.maps else None
    results: list[Explanation | None] = [None] * len(checked)
    for indices in runtime.plan(checked, batch_size):
        batch = runtime.tokenizer.encode([checked[i] for i in indices], offsets=True)
        evidence = _evidence(runtime, batch, chosen, layer=layer, target=target, want_maps=maps)
        evidence.head, evidence.ig_steps, evidence.generator = head, ig_steps, generator
        evidence.seeds = [(seed * 1_000_003 + zlib.crc32(checked[i].encode())) % 2**63 for i in indices]
        importance, note = chosen.compute(evidence)
        probs, targets = evidence.probs, evidence.targets
        tokens = runtime.tokenizer.tokens_of(batch["input_ids"], batch["attention_mask"])
        spans = batch["offsets"]
        for row, i in enumerate(indices):
            n = len(tokens[row])
            ids = batch["input_ids"][row, :n].tolist()
            best = int(probs[row].argmax())
            values = importance[row, :n]
            special = [t in special_ids for t in ids]
            truncated = bool(batch["truncated"][row])
            text = checked[i]
            if truncated and len(spans[row]) == n:  # only what the model read, not a long text echoed back
                text = text[: max((span[1] for span in spans[row] if span is not None), default=0)]
            (unreadable,) = runtime.tokenizer.unreadable([ids])
            own_note = note if isinstance(note, str) else note[row]
            if runtime.multi_label and float(probs[row, best]) < MULTI_LABEL_THRESHOLD and target is None:
                own_note = "; ".join(part for part in (_predicts_none(runtime.labels[best]), own_note) if part)
            results[i] = Explanation(
                text=text,
                tokens=tokens[row],
                importance=[float(v) for v in values],
                special=special,
                label=runtime.labels[best],
                probability=float(probs[row, best]),
                labels=runtime.chosen(probs[row].float().numpy())[0] if runtime.multi_label else None,
                target=runtime.labels[int(targets[row])],
                method=method,
                truncated=truncated,
                focus=distribution_focus(values.abs(), [not s for s in special]),
                maps=[m[row, :, :n, :n].float().numpy() for m in evidence.maps] if maps else None,
                pooling=[float(v) for v in evidence.pooling[row, :n]] if evidence.pooling is not None else None,
                note="; ".join(part for part in (_UNREADABLE if unreadable else "", own_note) if part),
                spans=_with_marks(spans[row], text) if len(spans[row]) == n else None,
                layer=read_layer, head=head if read_layer is not None else None,
                target_probability=float(probs[row, int(targets[row])]),
            )
    return [r for r in results if r is not None]


def _explain_combined(
    runtime: Combined,
    texts: list[str],
    method: ExplainMethod,
    *,
    layer: int | str,
    head: int | None,
    target: str | None,
    maps: bool,
    batch_size: int,
    ig_steps: int,
    seed: int,
) -> list[Explanation]:
    """An ensemble's explanations: each member's importance on the words of the text, averaged.

    Members may tokenise differently, so there is no token position they share: each member
    explains the ensemble's label (the label the *ensemble* predicts, or ``target``) with
    ``method``, its token importances are moved onto the text's words by their character spans
    (:func:`attend.explain.words.onto_words`) and averaged there with the members' weights. A
    distribution (every method but signed ones) is renormalised over the words first, so each
    member's special tokens (``[CLS]``, ``[SEP]``) do not shrink its share, and a member that gave
    the words nothing at all is left out of that text's mean (a note says so); signed attributions
    (Integrated Gradients) are summed onto words as they are, so a word's value stays the sum of
    its pieces'. ``tokens`` of the result are the words, ``special`` is all False and ``spans``
    are the words' characters. There are no attention maps: members attend over different tokens.
    """
    members = list(runtime.members)
    if maps:
        raise ValueError(
            f"an ensemble of {len(members)} models has no attention maps of its own (its members attend over "
            "different tokens), so maps are unavailable (maps=True; --maps and --png): explain it without them "
            "(--json, or --html, which shades the words), or explain one member for its maps (the directories under "
            "members/)"
        )
    refuse_unavailable(runtime, method)
    labels = list(runtime.labels)
    probs = np.asarray(runtime.predict_proba(texts, batch_size=batch_size))
    best = probs.argmax(1)
    targets = [target] * len(texts) if target is not None else [labels[int(j)] for j in best]
    weights = np.asarray(runtime.member_weights, dtype=np.float64)
    weights = weights / weights.sum()
    per_member: list[list[Explanation]] = []
    for index, member in enumerate(members):
        found: list[Explanation | None] = [None] * len(texts)
        for label in dict.fromkeys(targets):  # one call per explained label, in first-seen order
            chosen = [i for i, t in enumerate(targets) if t == label]
            explained = explain(  # a label only for the methods that read it (the others refuse one)
                member, [texts[i] for i in chosen], method.name, layer=layer, head=head,
                target=label if method.requires == "gradients" else None, batch_size=batch_size, ig_steps=ig_steps,
                seed=(seed + index) % 2**32,
            )  # fmt: skip
            for i, exp in zip(chosen, explained, strict=True):
                found[i] = exp
        per_member.append([exp for exp in found if exp is not None])
    results = []
    for i in range(len(texts)):
        own = [explained[i] for explained in per_member]
        read = max(own, key=lambda e: len(e.text)).text  # the most of the text any member read
        units = word_spans(read)
        combined = np.zeros(len(units), dtype=np.float64)
        said, silent = 0.0, []
        for index, (exp, weight) in enumerate(zip(own, weights, strict=True)):
            if exp.spans is None:
                raise ValueError(f"member {index} of the ensemble gave no character spans for text {i}")
            values = onto_words(units, exp.spans, exp.importance)
            total = values.sum()
            if not method.signed:
                if total <= 0:  # all of it on [CLS]/[SEP]: nothing said about the words, so no share of them
                    silent.append(index)
                    continue
                values = values / total
            combined += weight * values
            said += weight
        if said > 0:
            combined /= said  # the members that said something about the words, weighted among themselves
        cut = [index for index, exp in enumerate(own) if exp.truncated]
        notes = [f"weighted mean over {len(members)} members of their {method.name} importance, moved onto the "
                 "words of the text by character spans"]  # fmt: skip
        if silent:
            notes.append(f"member(s) {silent} gave the words no importance (all of it on special tokens): "
                         "left out of the mean")  # fmt: skip
        if cut:
            notes.append(f"member(s) {cut} read only the start of the text (later words get nothing from them)")
        # A member's own "predicts none" is of its probabilities and may name another label: the
        # ensemble's is said below, of the ensemble's.
        own_notes = ["; ".join(part for part in exp.note.split("; ") if not part.startswith(_PREDICTS_NONE))
                     for exp in own]  # fmt: skip
        notes += sorted({f"member {index}: {note}" for index, note in enumerate(own_notes) if note})
        label = int(best[i])
        if getattr(runtime, "multi_label", False) and probs[i, label] < MULTI_LABEL_THRESHOLD and target is None:
            notes.insert(0, _predicts_none(labels[label]))  # of the ensemble's probabilities, not a member's
        results.append(Explanation(
            text=read, tokens=[read[start:end] for start, end in units], importance=[float(v) for v in combined],
            special=[False] * len(units), label=labels[label], probability=float(probs[i, label]), target=targets[i],
            method=method.name, truncated=bool(cut), focus=distribution_focus(torch.from_numpy(np.abs(combined))),
            note="; ".join(notes), spans=list(units), target_probability=float(probs[i, labels.index(targets[i])]),
            labels=runtime.chosen(np.asarray(probs[i]))[0] if getattr(runtime, "multi_label", False) else None,
        ))  # fmt: skip
    return results


#: The unknown piece of WordPiece (BERT) and SentencePiece vocabularies, every registered text model's.
_UNKNOWN_TOKENS = frozenset({"[UNK]", "<unk>"})


def character_groups(explanation: Explanation) -> list[list[int]]:
    """The token indices of ``explanation`` in groups that show the text once: a token whose
    characters an earlier token showed (a ligature read as three pieces, a Hangul syllable as its
    jamo, "½" as "1⁄2") joins that token's group; special tokens stand alone."""
    groups: list[list[int]] = []
    shown_end = 0
    spans = explanation.spans or [None] * len(explanation.tokens)
    for i, (special, span) in enumerate(zip(explanation.special, spans, strict=True)):
        covers = span is not None and span[1] > span[0]
        if covers and span[1] <= shown_end and groups and not special and not explanation.special[groups[-1][0]]:
            groups[-1].append(i)
            continue
        if covers:
            shown_end = max(shown_end, span[1])
        groups.append([i])
    return groups


def check_ig_steps(ig_steps: Any) -> None:
    """Refuse integrated gradients' ``ig_steps`` unless a whole number from 2 to :data:`MAX_IG_STEPS`
    (a huge one had been an OverflowError)."""
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, numbers.Integral) or not 2 <= ig_steps <= MAX_IG_STEPS:
        raise ValueError(f"ig_steps={ig_steps!r} must be an integer from 2 to {MAX_IG_STEPS}")


def top_tokens(explanation: Explanation, k: int = 5, *, mark_unknown: bool = False) -> list[tuple[str, float]]:
    """The ``k`` most important text tokens with their scores, most important first, as the text
    spells them (:meth:`Explanation.display_tokens`: original case, not ``[UNK]``); with
    ``mark_unknown``, the characters the model read as its unknown piece are followed by it
    (``精[UNK]``): the text shows them, the model did not see them. Tokens that share their
    characters (:func:`character_groups`) are one, with their scores added: a ligature read as three
    pieces had been listed three times."""
    shown = explanation.display_tokens()
    if mark_unknown:
        shown = [f"{text}{token}" if token in _UNKNOWN_TOKENS and text != token else text
                 for text, token in zip(shown, explanation.tokens, strict=True)]  # fmt: skip
    pairs = [(shown[group[0]], float(sum(explanation.importance[i] for i in group)))
             for group in character_groups(explanation) if not explanation.special[group[0]]]  # fmt: skip
    return sorted(pairs, key=lambda p: -p[1])[: max(0, k)]


def ceil_fraction(fraction: float, n: int) -> int:
    """``ceil(fraction * n)`` clipped to ``[1, n]``: how many tokens a threshold selects."""
    return max(1, min(n, math.ceil(fraction * n - 1e-9)))
