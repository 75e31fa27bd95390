"""Token importance from a model's attention: raw maps, rollout, flow, gradient-weighted, IG.

Every method ends in one vector per text: how much each input token matters to the prediction.
Attention maps say how positions mix *between* layers; what turns them into one vector is the
model's **readout** ``r (B, L)``, the weights with which the last layer's token states become
the text vector: the attention-pooling weights, a one-hot on ``[CLS]``, or uniform over the
real tokens for mean pooling. Raw attention is then ``r @ mean_h A_layer``, rollout is
``r @ Ã_N ... Ã_1`` and so on, so every method reads the same way for every model in the
registry. A model without self-attention layers (the BiLSTM) has ``r`` only: each method
reduces to the pooling weights (gradient-weighted ones for ``grad_attention``).

Maps come from the capture API while every layer keeps its fused SDPA call (the output is
bit-identical to :meth:`Predictor.predict_proba`); ``grad_attention`` also keeps them in the
autograd graph. Integrated Gradients (Captum) is the non-attention reference. An ONNX Runtime
predictor whose graph was exported with its attention outputs gives the maps from the graph
itself: every method but :data:`GRADIENT_METHODS`, with no PyTorch model at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from attend.attention import capture_attention, recordable_names
from attend.explain.focus import distribution_focus

if TYPE_CHECKING:
    from attend.inference import Predictor

__all__ = [
    "BASELINES",
    "GRADIENT_METHODS",
    "METHODS",
    "Explanation",
    "attention_flow",
    "explain",
    "grad_rollout",
    "method_support",
    "readout",
    "rollout",
]

#: Methods that explain a prediction, by name.
METHODS = ("attention", "pooling", "rollout", "flow", "grad_attention", "integrated_gradients")
#: Reference "methods" for faithfulness: random importance, and uniform attention (all tokens equal).
BASELINES = ("random", "uniform")
#: Methods that need gradients, i.e. the PyTorch model; the rest also run on an ONNX graph
#: exported with its attention outputs (``attend export --attentions``).
GRADIENT_METHODS = ("grad_attention", "integrated_gradients")


@dataclass
class Explanation:
    """One text's explanation.

    Attributes:
        text: The input text.
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

    def display_tokens(self) -> list[str]:
        """Tokens as the text spells them (original case, characters the vocabulary lacks), for people."""
        if self.spans is None:
            return list(self.tokens)
        shown = []
        for token, span in zip(self.tokens, self.spans, strict=True):
            if span is None or span[1] <= span[0]:
                shown.append(token)
            else:
                piece = self.text[span[0] : span[1]]
                shown.append(f"##{piece}" if token.startswith("##") else piece)
        return shown

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
            "method": self.method,
            "truncated": self.truncated,
            "focus": self.focus,
        }
        if self.pooling is not None:
            data["pooling"] = self.pooling
        if self.note:
            data["note"] = self.note
        if self.spans is not None:
            data["spans"] = [list(span) if span is not None else None for span in self.spans]
        if maps and self.maps is not None:
            data["maps"] = [np.round(m, 6).tolist() for m in self.maps]
        return data


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


def method_support(predictor: Any) -> tuple[bool, bool, bool]:
    """What a predictor can be explained with: ``(self-attention maps, attention-pooling weights,
    gradients)``, for a PyTorch :class:`~attend.inference.Predictor` or an ONNX Runtime one (whose
    graph gives maps and pooling weights only if exported with them, and never gradients)."""
    model = getattr(predictor, "model", None)
    if model is None:
        outputs = list(getattr(predictor, "output_names", []))
        return any(name.startswith("attention_") for name in outputs), "pooling_weights" in outputs, False
    return bool(recordable_names(model, "attention")), bool(recordable_names(model, "pooling")), True


# --- the readout ----------------------------------------------------------------------------


def readout(model: torch.nn.Module | str, attention_mask: Tensor, pooling_weights: Tensor | None) -> Tensor:
    """``(B, L)`` weights with which the last layer's token states become the text vector.

    ``model``: the model, or its pooling mode (``"mean"``, ``"cls"``, ``"attention"``).
    """
    mask = attention_mask.float()
    if pooling_weights is not None:
        return pooling_weights.detach().float() * mask
    pooling = model if isinstance(model, str) else getattr(getattr(model, "config", None), "pooling", "mean")
    if pooling == "cls":
        onehot = torch.zeros_like(mask)
        onehot[:, 0] = 1.0
        return onehot
    return mask / mask.sum(1, keepdim=True).clamp_min(1.0)


def _normalise(importance: Tensor, mask: Tensor) -> Tensor:
    importance = importance.clamp_min(0) * mask
    total = importance.sum(-1, keepdim=True)
    uniform = mask / mask.sum(-1, keepdim=True).clamp_min(1.0)
    return torch.where(total > 0, importance / total.clamp_min(1e-30), uniform)


# --- explain -------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS + BASELINES:
        raise ValueError(f"method={method!r}; choose one of {list(METHODS + BASELINES)}")


def _target_index(predictor: Predictor, target: str | None, probs: Tensor) -> Tensor:
    if target is None:
        return probs.argmax(-1)
    if target not in predictor.labels:
        raise ValueError(f"target={target!r} is not a label of this model; labels are {predictor.labels}")
    return torch.full((probs.shape[0],), predictor.labels.index(target), dtype=torch.long)


def _integrated_gradients(
    predictor: Predictor, batch: Mapping[str, Tensor], targets: Tensor, steps: int
) -> tuple[Tensor, Tensor]:
    """Captum Layer IG on the token embeddings; baseline = every text token replaced by ``[PAD]``.

    Returns ``(attributions (B, L), convergence deltas (B,))``; attributions are on the explained
    logit, so they sum to ``logit(x) - logit(baseline)`` up to the delta.
    """
    from captum.attr import LayerIntegratedGradients

    model = predictor.model
    embeddings = getattr(model, "input_embeddings", None)
    if embeddings is None:
        raise ValueError(f"{type(model).__name__} has no input_embeddings(); Integrated Gradients needs it")
    extras = {k: v for k, v in batch.items() if k not in ("input_ids", "truncated", "offsets")}
    names = sorted(extras)

    def forward(input_ids: Tensor, *values: Tensor) -> Tensor:
        return model({"input_ids": input_ids, **dict(zip(names, values, strict=True))}).logits.float()

    input_ids = batch["input_ids"]
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    for special in predictor.tokenizer.special_ids:
        keep |= input_ids == special
    baseline = torch.where(keep, input_ids, torch.full_like(input_ids, predictor.tokenizer.pad_id))
    ig = LayerIntegratedGradients(forward, embeddings())
    with torch.enable_grad():
        attributions, delta = ig.attribute(
            input_ids,
            baselines=baseline,
            target=targets,
            additional_forward_args=tuple(extras[k] for k in names),
            n_steps=steps,
            internal_batch_size=max(steps, 64),
            return_convergence_delta=True,
        )
    return attributions.sum(-1).detach().float(), delta.detach().float()


def _captured(
    predictor: Predictor,
    inputs: dict[str, Tensor],
    method: str,
    *,
    layer: int | str,
    target: str | None,
    want_maps: bool,
) -> tuple[list[Tensor], Tensor | None, Tensor, Tensor, list[Tensor], Tensor | None, int | str]:
    """One PyTorch forward with the capture API.

    Returns ``(maps, pooling, probs, targets, grads, pooling_grad, layer)``; ``layer`` indexes
    ``maps`` (-1 where only the requested layer was recorded).
    """
    model = predictor.model
    grad = method == "grad_attention"
    names = None
    if method == "attention" and isinstance(layer, int) and not want_maps:
        # One layer's map is all this needs: capture only it (and the pooling), not every layer.
        layers = recordable_names(model, "attention")
        if layers:
            if not -len(layers) <= layer < len(layers):
                raise ValueError(
                    f"layer={layer!r}; this model has {len(layers)} layers (use 0..{len(layers) - 1}, -1 or 'mean')"
                )
            names = [layers[layer], *recordable_names(model, "pooling")]
            layer = -1
    with torch.inference_mode(not grad), torch.enable_grad() if grad else torch.no_grad():
        with capture_attention(model, grad=grad, names=names) as cap:
            logits = model(inputs).logits
        maps = cap.weights
        pooling = cap.pooling_weights[-1] if cap.pooling_weights else None
        probs = predictor.to_probabilities(logits)
        targets = _target_index(predictor, target, probs)
        grads: list[Tensor] = []
        pooling_grad = None
        if grad:
            chosen = logits.gather(1, targets[:, None]).sum()
            wrt = [*maps, *([pooling] if pooling is not None else [])]
            computed = torch.autograd.grad(chosen, wrt, allow_unused=True)
            computed = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, computed, strict=True)]
            grads = list(computed[: len(maps)])
            pooling_grad = computed[len(maps)] if pooling is not None else None
    return maps, pooling, probs, targets, grads, pooling_grad, layer


def _explain_batch(
    predictor: Predictor,
    batch: dict[str, Tensor],
    method: str,
    *,
    layer: int | str,
    head: int | None,
    target: str | None,
    want_maps: bool,
    ig_steps: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor], Tensor | None, str]:
    """``(importance (B, L), probs (B, C), targets (B,), maps, pooling, note)`` for one batch."""
    inputs = {k: v for k, v in batch.items() if k not in ("truncated", "offsets")}
    mask = batch["attention_mask"].float()
    note = ""
    grads: list[Tensor] = []
    pooling_grad = None
    model = getattr(predictor, "model", None)
    if model is None:  # an ONNX Runtime predictor: the graph computes the maps itself
        if method in GRADIENT_METHODS:
            raise ValueError(
                f"method {method!r} needs gradients, which an ONNX graph does not give: use one of "
                f"{[m for m in (*METHODS, *BASELINES) if m not in GRADIENT_METHODS]}, or the PyTorch model"
            )
        logits, maps, pooling = predictor.attention_outputs(inputs)  # type: ignore[attr-defined]
        probs = predictor.to_probabilities(logits)
        targets = _target_index(predictor, target, probs)
        pooling_mode: torch.nn.Module | str = str(predictor.config["model"].get("pooling", "mean"))
        model_name = str(predictor.config["model"].get("model_type", "the model"))
    else:
        maps, pooling, probs, targets, grads, pooling_grad, layer = _captured(
            predictor, inputs, method, layer=layer, target=target, want_maps=want_maps
        )
        pooling_mode, model_name = model, type(model).__name__
    maps = [m.detach() for m in maps]
    pooling = pooling.detach() if pooling is not None else None
    r = readout(pooling_mode, batch["attention_mask"], pooling)
    if method in ("random", "uniform"):
        if method == "random":
            importance = torch.rand(mask.shape, generator=generator)
        else:
            importance = torch.ones_like(mask)
        importance = _normalise(importance, mask)
    elif method == "integrated_gradients":
        importance, delta = _integrated_gradients(predictor, inputs, targets, ig_steps)
        importance = importance * mask
        note = (
            f"Integrated Gradients, {ig_steps} steps, [PAD] baseline; max |completeness error| {delta.abs().max():.2e}"
        )
    elif method == "pooling":
        if pooling is None:
            raise ValueError(f"{model_name} has no attention pooling; use method 'attention' or 'rollout'")
        importance = _normalise(pooling, mask)
    elif not maps:
        # No self-attention layers (BiLSTM): every attention method is the readout itself.
        if method == "grad_attention" and pooling is not None and pooling_grad is not None:
            importance = _normalise(pooling.float() * pooling_grad.float(), mask)
            note = "no self-attention layers: pooling weights times their gradient"
        else:
            importance = _normalise(r, mask)
            note = "no self-attention layers: the attention-pooling weights"
    elif method == "attention":
        importance = _normalise(_raw(maps, r, layer, head), mask)
    elif method == "rollout":
        importance = _normalise((r[:, None, :] @ rollout(maps)).squeeze(1), mask)
    elif method == "flow":
        lengths = [int(n) for n in batch["attention_mask"].sum(1)]
        importance = _normalise(attention_flow(maps, r, lengths), mask)
    else:  # grad_attention
        if pooling is not None and pooling_grad is not None:
            weighted = (pooling.float() * pooling_grad.float()).clamp_min(0)
            r = torch.where(weighted.sum(1, keepdim=True) > 0, weighted, r)
        importance = _normalise((r[:, None, :] @ grad_rollout(maps, grads)).squeeze(1), mask)
    return importance, probs, targets, maps if want_maps else [], pooling, note


def _raw(maps: list[Tensor], r: Tensor, layer: int | str, head: int | None) -> Tensor:
    """``r @ A`` for one layer (or the mean of layers) and one head (or the mean of heads)."""
    if layer == "mean":
        chosen = torch.stack([m.float() for m in maps]).mean(0)
    else:
        if not isinstance(layer, int) or not -len(maps) <= layer < len(maps):
            raise ValueError(
                f"layer={layer!r}; this model has {len(maps)} layers (use 0..{len(maps) - 1}, -1 or 'mean')"
            )
        chosen = maps[layer].float()
    if head is None:
        matrix = chosen.mean(1)
    else:
        if not 0 <= head < chosen.shape[1]:
            raise ValueError(f"head={head}; this model has {chosen.shape[1]} heads (use 0..{chosen.shape[1] - 1})")
        matrix = chosen[:, head]
    return (r[:, None, :] @ matrix).squeeze(1)


def explain(
    predictor: Predictor,
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
        predictor: A loaded model (:func:`attend.load`), or an ONNX Runtime one
            (:func:`attend.serve.onnx_runtime.load_onnx`) of a graph exported with its attention
            outputs (``attend export --attentions``): the graph's own maps are read, and every
            method but :data:`GRADIENT_METHODS` works.
        texts: The texts; batched and padded internally (long texts are truncated, and say so).
        method: One of :data:`METHODS` (or a baseline of :data:`BASELINES`):
            ``attention`` (raw weights of ``layer``, mean over heads or one ``head``, read out by the
            model's pooling), ``pooling`` (attention-pooling weights), ``rollout``, ``flow``,
            ``grad_attention`` (attention x gradient, Chefer et al. 2021) and
            ``integrated_gradients`` (Captum; signed attributions).
        layer: For ``attention``: a layer index (``-1`` = last) or ``"mean"``.
        head: For ``attention``: one head instead of the mean of heads.
        target: Explain this label instead of the predicted one.
        maps: Also return every layer's per-head maps (real tokens only).
        batch_size: Texts per forward pass.
        ig_steps: Integration steps for Integrated Gradients.
        seed: Seeds the ``random`` baseline.
    """
    from attend.inference import validate_texts

    _check_method(method)
    checked = validate_texts(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if ig_steps < 2:
        raise ValueError(f"ig_steps={ig_steps} must be >= 2")
    generator = torch.Generator().manual_seed(seed)
    special_ids = predictor.tokenizer.special_ids
    results: list[Explanation | None] = [None] * len(checked)
    for indices in predictor._batches(checked, batch_size):
        batch = predictor.tokenizer.encode([checked[i] for i in indices], offsets=True)
        importance, probs, targets, layer_maps, pooling, note = _explain_batch(
            predictor,
            batch,
            method,
            layer=layer,
            head=head,
            target=target,
            want_maps=maps,
            ig_steps=ig_steps,
            generator=generator,
        )
        tokens = predictor.tokenizer.tokens_of(batch["input_ids"], batch["attention_mask"])
        spans = batch["offsets"]
        for row, i in enumerate(indices):
            n = len(tokens[row])
            ids = batch["input_ids"][row, :n].tolist()
            best = int(probs[row].argmax())
            values = importance[row, :n]
            special = [t in special_ids for t in ids]
            results[i] = Explanation(
                text=checked[i],
                tokens=tokens[row],
                importance=[float(v) for v in values],
                special=special,
                label=predictor.labels[best],
                probability=float(probs[row, best]),
                target=predictor.labels[int(targets[row])],
                method=method,
                truncated=bool(batch["truncated"][row]),
                focus=distribution_focus(values.abs(), [not s for s in special]),
                maps=[m[row, :, :n, :n].float().numpy() for m in layer_maps] if maps else None,
                pooling=[float(v) for v in pooling[row, :n]] if pooling is not None else None,
                note=note,
                spans=spans[row] if len(spans[row]) == n else None,
            )
    return [r for r in results if r is not None]


def top_tokens(explanation: Explanation, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most important text tokens with their scores, most important first."""
    pairs = [(t, v) for t, v, s in zip(explanation.tokens, explanation.importance, explanation.special, strict=True)
             if not s]  # fmt: skip
    return sorted(pairs, key=lambda p: -p[1])[: max(0, k)]


def ceil_fraction(fraction: float, n: int) -> int:
    """``ceil(fraction * n)`` clipped to ``[1, n]``: how many tokens a threshold selects."""
    return max(1, min(n, math.ceil(fraction * n - 1e-9)))
