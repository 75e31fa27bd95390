"""Attention-head pruning, measured: ``attend prune``.

Removes the least important attention heads for real (Michel et al. 2019, "Are Sixteen Heads
Really Better than One?"), scored by head masking or by attention confidence (Voita et al. 2019),
and writes a normal, smaller model directory. The result is judged on the model's own test split
(rebuilt from ``config.json``) or on labelled data given, with before/after accuracy and
macro-F1 in ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attend.attention import MultiHeadAttention
from attend.data.readers import DataError, LabelledTexts
from attend.data.splits import held_out, judged_overlap
from attend.explain.focus import map_focus
from attend.io import ArtifactDir, ArtifactWriter, refuse_ensemble
from attend.models import MODELS, build, config_from_dict
from attend.models.base import kept_heads
from attend.models.minilm import MiniLMConfig
from attend.runtime import TorchTextClassifier, load
from attend.training import classification_loss, label_targets, score_probabilities
from attend.training.metrics import headline_metrics

__all__ = ["IMPORTANCE_METHODS", "attention_layers", "head_importance", "masked_heads", "prune", "select_heads"]

IMPORTANCE_METHODS = ("masking", "attention")


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
            f"(head pruning works on {_prunable()})"
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


def head_importance(
    predictor: TorchTextClassifier, data: LabelledTexts, *, method: str = "masking", batch_size: int = 32
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
        totals = [torch.zeros(layer.num_heads, dtype=torch.float64) for layer in layers]
        with torch.inference_mode():
            for batch in predictor.plan(texts, batch_size):
                encoded = predictor.tokenizer.encode([texts[i] for i in batch])
                outputs = predictor.attention_outputs(encoded)
                for total, weights in zip(totals, outputs.maps, strict=True):
                    confidence = map_focus(weights, encoded["attention_mask"], k=1)["top_k_mass"]  # (B, H)
                    total += confidence.double().sum(0)
        return [(total / len(texts)).float() for total in totals]

    targets = label_targets(data, predictor.labels, predictor.multi_label)
    gates = [torch.ones(layer.num_heads, requires_grad=True) for layer in layers]
    sums = [torch.zeros(layer.num_heads) for layer in layers]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in frozen:
        param.requires_grad_(False)  # only the gates need gradients
    try:
        with _gated(layers, gates), torch.enable_grad():
            for batch in predictor.plan(texts, batch_size):
                encoded = predictor.tokenizer.encode([texts[i] for i in batch])
                loss = classification_loss(model(encoded).logits, targets[batch], multi_label=predictor.multi_label,
                                           reduction="sum")  # fmt: skip
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
    if kind in _bert_models():
        return model_config["bert"], int(model_config["bert"]["num_heads"])
    raise ValueError(
        f"{path}: model {kind!r} has no multi-head attention layers, so it has no heads to prune "
        f"(head pruning works on {_prunable()})"
    )


def _prunable() -> str:
    """The model types head pruning works on, as its errors list them."""
    return ", ".join(repr(name) for name in ["encoder", *_bert_models()])


def _bert_models() -> list[str]:
    """The registered classifiers on :class:`~attend.models.minilm.BertEncoder` (``minilm``, ``e5``, ...),
    whose heads live in the config's ``bert`` dict."""
    return sorted(name for name, (config_cls, _) in MODELS.items() if issubclass(config_cls, MiniLMConfig))


def _check_amount(heads: int | None, fraction: float | None, importance: str) -> None:
    """Refuse a bad ``heads``, ``fraction`` or ``importance`` (before the output is looked at: a bad
    value had been said only after an existing output was dealt with)."""
    if (heads is None) == (fraction is None):
        raise ValueError("give exactly one of heads= (a number of heads) or fraction= (a share of all heads)")
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 0):
        raise ValueError(f"heads={heads!r} must be a non-negative integer")
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction!r} must be in [0, 1)")
    if importance not in IMPORTANCE_METHODS:
        raise ValueError(f"importance={importance!r}; choose one of {list(IMPORTANCE_METHODS)}")


def _count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _own_split_metrics(source: Path, config: Mapping[str, Any], pruned: TorchTextClassifier,
                       after: dict[str, Any], described: str, *, given: bool) -> dict[str, Any]:
    """The pruned model's ``metrics.json`` figures: on the test split it was trained with (rebuilt), as
    every model directory's are, with the source's baseline on that split beside them; ``after`` (on
    ``described``) where they are that split's already, or where it cannot be rebuilt. A ``--data``
    file's figures had replaced them (one the model trained on among them, served as its accuracy),
    the baseline dropped: those are in ``pruning`` alone now."""
    if given:
        try:
            own, own_described = held_out(source, config, None, "test")
        except (DataError, OSError):  # the training data is gone or changed: the given data's figures
            return after | {"split": described}
        after = score_probabilities(pruned.predict_proba(own.texts), own, pruned.labels, pruned.multi_label)
        described = own_described
    stored = ArtifactDir(source, config).read_json("metrics.json")  # None: absent or unreadable
    baseline = stored.get("baseline") if isinstance(stored, dict) else None
    return after | {"split": described} | ({"baseline": baseline} if baseline is not None else {})


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
    overwrite: bool = False,
    text_col: str | None = None,
    label_col: str | None = None,
    label_sep: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Remove the least important attention heads and write the smaller model; the body of ``attend prune``.

    Heads are ranked over all layers (:func:`head_importance` on the dev split) and the
    ``heads`` lowest removed (:func:`select_heads`), each layer keeping at least one. Removal
    is real: the q/k/v projections lose the heads' rows and the output projection their
    columns. ``out_dir`` is an ordinary model directory: its config records the remaining
    heads (``pruned_heads``, original head indices), so :func:`attend.load` rebuilds it from
    ``config.json`` alone, and it can be pruned, exported or quantised again.

    Args:
        model_dir: An ``encoder`` or BERT-family (``minilm``, ``e5``, ``m3e``) model directory.
        out_dir: Where to write the pruned model directory (not ``model_dir`` itself).
        heads: How many heads to remove in total. Exactly one of ``heads``/``fraction``.
        fraction: Share of all heads to remove, in ``[0, 1)``.
        importance: ``"masking"`` (Michel et al. 2019; needs labels) or ``"attention"``
            (Voita et al. 2019 confidence; needs texts only).
        data: Labelled data for the before/after evaluation (default: the rebuilt test split).
        dev_data: Labelled data to score heads on (default: the rebuilt dev split). Never the
            evaluation data: choosing heads on the test set would flatter the result.
        text_col, label_col: The columns of ``data`` and ``dev_data`` files (default: the ones the
            model was trained from).
        label_sep: A multi-label model's separator of their label cells (default: the one it
            trained with).
        batch_size: Texts per forward pass.
        overwrite: Replace a model directory already at ``out_dir`` (else that is an error,
            found before any work; ``attend prune`` asks for ``--overwrite``).

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
    _check_amount(heads, fraction, importance)
    staged = ArtifactWriter(out, source=source, overwrite=overwrite)  # checks the output before any work
    refuse_ensemble(source, "prune")
    predictor = load(source, runtime="torch")
    if not isinstance(predictor, TorchTextClassifier):
        raise ValueError(f"{source} holds a {predictor.task} model; head pruning takes a text classifier")
    config = {k: v for k, v in copy.deepcopy(predictor.config).items() if k not in ("files", "weights_sha256")}
    holder, original_heads = _head_fields(config["model"], source)
    layers = attention_layers(predictor.model)
    total = sum(layer.num_heads for layer in layers)
    count = heads if heads is not None else round((fraction or 0.0) * total)
    available = sum(layer.num_heads - 1 for layer in layers)
    if count > available:  # said before any work, naming the value given (it had named a count of heads alone)
        given = (f"heads={heads}: " if heads is not None else
                 f"fraction={fraction:g}: {count} of the {total} heads, but ")  # fmt: skip
        most = f"heads={available}" if heads is not None else f"fraction={available / total:.3f} at most"
        raise ValueError(f"{given}every layer keeps at least one head, so at most {available} of the {total} heads in "
                         f"{len(layers)} layers can go; give {most}")  # fmt: skip

    columns = {"text_col": text_col, "label_col": label_col, "label_sep": label_sep}  # of data and dev_data
    test, test_described = held_out(source, config, data, "test", **columns)
    chosen: dict[int, list[int]] = {}
    scores: list[Tensor] = []
    dev_described = None
    say = functools.partial(print, file=sys.stderr, flush=True) if progress else (lambda _: None)
    if count:
        dev, dev_described = held_out(source, config, dev_data, "dev", hint="dev_data=, --dev-data FILE", **columns)
        dev_described += judged_overlap(dev, test, "heads were")
        # said before each pass (a MiniLM's had been 37 s of silence, then the result)
        say(f"scoring the {total} heads by {importance} on the {dev_described}...")
        scores = head_importance(predictor, dev, method=importance, batch_size=batch_size)
        chosen = select_heads(scores, count)

    multi = predictor.multi_label
    say(f"measuring the model before and after removing {count} head(s) on the {test_described}...")
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
    pruned = TorchTextClassifier(rebuilt, predictor.tokenizer, predictor.labels, config, out)
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
        "before": headline_metrics(before),
        "after": headline_metrics(after),
        "accuracy_change": float(after["accuracy"] - before["accuracy"]),
        "macro_f1_change": float(after["macro_f1"] - before["macro_f1"]),
        "max_abs_diff_vs_masked": equivalence,
    }
    config["pruning"] = {k: report[k] for k in ("importance", "removed", "heads_before", "heads_after")} | {
        "source": str(source),
        "source_weights_sha256": predictor.config.get("weights_sha256"),
    }
    metrics = _own_split_metrics(source, predictor.config, pruned, after, test_described, given=data is not None)
    with staged as writer:
        writer.save_weights(rebuilt)
        predictor.tokenizer.save(writer.path / "tokenizer.json")
        writer.record("tokenizer.json")
        writer.write_json("metrics.json", metrics | {"pruning": report})
        writer.copy_training_texts(source)
        writer.publish(config)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
