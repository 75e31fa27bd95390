"""How focused is attention? Entropy, top-k mass and the effective number of attended tokens.

For one distribution ``p`` over ``n`` tokens:

- ``entropy``: ``-sum p log p / log n``, normalised to ``[0, 1]`` (0 = all mass on one token,
  1 = uniform); 0 when ``n = 1``.
- ``top_k_mass``: the mass of the ``k`` largest weights (``k`` = 3 by default).
- ``effective_tokens``: ``exp(-sum p log p)``, the number of tokens a uniform distribution with
  the same entropy would spread over (1 = one token, ``n`` = all).

Attention maps are rows of such distributions; their metrics are averaged over the real query
positions of each text. :func:`focus` answers "how focused is this model" in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attend.data.validation import validate_texts
from attend.explain.protocol import Explainable, check_classifier

__all__ = ["distribution_focus", "focus", "map_focus"]


def _entropy_terms(p: Tensor) -> Tensor:
    return torch.where(p > 0, -p * torch.log(p.clamp_min(1e-30)), torch.zeros_like(p))


def distribution_focus(weights: Tensor, keep: Sequence[bool] | Tensor | None = None, *, k: int = 3) -> dict[str, float]:
    """Focus metrics of one non-negative vector (renormalised over the ``keep`` positions)."""
    w = weights.detach().float().flatten().clamp_min(0)
    if keep is not None:
        w = w[torch.as_tensor(list(keep) if not isinstance(keep, Tensor) else keep, dtype=torch.bool)]
    n = int(w.numel())
    total = float(w.sum())
    if n == 0 or total <= 0:
        return {"entropy": float("nan"), "top_k_mass": float("nan"), "effective_tokens": float("nan"), "tokens": n}
    p = w / total
    entropy = float(_entropy_terms(p).sum())
    return {
        "entropy": entropy / float(np.log(n)) if n > 1 else 0.0,
        "top_k_mass": float(p.topk(min(k, n)).values.sum()),
        "effective_tokens": float(np.exp(entropy)),
        "tokens": n,
    }


def map_focus(weights: Tensor, attention_mask: Tensor, *, k: int = 3) -> dict[str, Tensor]:
    """Per text and head: focus metrics of ``(B, H, L, L)`` maps, averaged over real query rows.

    Returns ``entropy``, ``top_k_mass`` and ``effective_tokens``, each ``(B, H)``.
    """
    w = weights.detach().float()
    mask = attention_mask.to(torch.bool)
    keys = mask[:, None, None, :]  # (B, 1, 1, L)
    w = w * keys
    p = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    n = mask.sum(1).float()  # (B,)
    entropy = _entropy_terms(p).sum(-1)  # (B, H, L)
    log_n = torch.log(n).clamp_min(1e-30)[:, None, None]
    normalised = torch.where(n[:, None, None] > 1, entropy / log_n, torch.zeros_like(entropy))
    top = p.topk(min(k, p.shape[-1]), dim=-1).values.sum(-1)  # (B, H, L)
    queries = mask[:, None, :].float()  # (B, 1, L)
    count = queries.sum(-1).clamp_min(1.0)

    def mean(x: Tensor) -> Tensor:
        return (x * queries).sum(-1) / count

    return {"entropy": mean(normalised), "top_k_mass": mean(top), "effective_tokens": mean(torch.exp(entropy))}


@torch.inference_mode()
def focus(runtime: Explainable, texts: Sequence[str], *, k: int = 3, batch_size: int = 32) -> dict[str, Any]:
    """How focused is this model on these texts? Per layer and head, and overall.

    Returns a JSON-ready dict: ``layers`` (per layer, per head: mean ``entropy``, ``top_k_mass``,
    ``effective_tokens`` over the texts), ``overall`` (their mean over layers and heads),
    ``pooling`` (the same metrics for the attention pooling, if the model has one), ``texts``
    (how many) and ``k``.
    """
    check_classifier(runtime, "focus()")
    checked = validate_texts(texts)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    sums: list[dict[str, Tensor]] = []
    pooling_rows: list[dict[str, float]] = []
    for indices in runtime.plan(checked, batch_size):
        batch = runtime.tokenizer.encode([checked[i] for i in indices])
        outputs = runtime.attention_outputs({key: v for key, v in batch.items() if key != "truncated"})
        for layer, weights in enumerate(outputs.maps):
            metrics = map_focus(weights, batch["attention_mask"], k=k)
            if len(sums) <= layer:
                sums.append({name: torch.zeros(weights.shape[1]) for name in metrics})
            for name, value in metrics.items():
                sums[layer][name] += value.sum(0)
        if outputs.pooling is not None:
            pooled = outputs.pooling
            for row in range(pooled.shape[0]):
                keep = batch["attention_mask"][row].bool()
                pooling_rows.append(distribution_focus(pooled[row], keep, k=k))
    n = len(checked)
    layers = [{name: (value / n).tolist() for name, value in layer.items()} for layer in sums]
    overall = {name: float(np.mean([np.mean(layer[name]) for layer in layers])) for name in layers[0]} if layers else {}
    pooling = (
        {name: float(np.nanmean([row[name] for row in pooling_rows])) for name in ("entropy", "top_k_mass",
                                                                                   "effective_tokens")}
        if pooling_rows
        else None
    )  # fmt: skip
    return {"texts": n, "k": k, "layers": layers, "overall": overall, "pooling": pooling}
