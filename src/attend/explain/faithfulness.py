"""Are the explanations faithful? ERASER comprehensiveness and sufficiency (DeYoung et al. 2020).

For a text ``x`` with predicted label ``c`` and an importance ranking of its tokens, take the
top ``k`` tokens, ``k = ceil(q * n)`` for each threshold ``q`` in 1, 5, 10, 20, 50 % of the
``n`` text tokens (special tokens never count and are never removed):

- comprehensiveness ``p_c(x) - p_c(x without the top k)``: high = the tokens mattered;
- sufficiency ``p_c(x) - p_c(only the top k)``: low = the tokens alone keep the prediction.

Tokens are deleted from the token sequence (not masked), as in ERASER. The headline numbers
are AOPC: the mean over the thresholds. Each method is compared with two references scored the
same way: ``random`` (random importance) and ``uniform`` (every token equal, ties broken at random).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attend.data.batching import length_batches
from attend.data.validation import validate_texts
from attend.explain.methods import (
    METHODS,
    available_methods,
    ceil_fraction,
    explain,
    refuse_unavailable,
)
from attend.explain.protocol import Explainable, check_classifier
from attend.progress import progress_bar

__all__ = ["THRESHOLDS", "default_methods", "faithfulness", "format_faithfulness"]

THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.5)


def default_methods(runtime: Explainable) -> list[str]:
    """Every method that says something distinct for this model, then the two baselines (less what
    the runtime cannot do: gradients for an ONNX graph, the pooling method without attention pooling)."""
    capabilities = runtime.capabilities
    methods = ["attention", "grad_attention"]
    if capabilities.maps:
        methods[1:1] = ["rollout", "flow"]
    if capabilities.pooling and capabilities.maps:
        methods.insert(1, "pooling")
    methods = [*methods, "integrated_gradients", *(name for name, m in METHODS.items() if m.baseline)]
    offered = set(available_methods(runtime))
    return [m for m in methods if m in offered]


@torch.inference_mode()
def _probabilities(runtime: Explainable, rows: list[list[int]], batch_size: int) -> np.ndarray:
    out = np.zeros((len(rows), len(runtime.labels)), dtype=np.float64)
    if getattr(runtime, "batch_dependent", False):  # int8: a text's answer is the one it gets alone
        batch_size = 1
    for chunk in length_batches([len(row) for row in rows], batch_size):
        out[chunk] = runtime.probabilities(runtime.tokenizer.pad([rows[i] for i in chunk]))
    return out


def _ranking(importance: Sequence[float], candidates: list[int], rng: np.random.Generator) -> list[int]:
    """Candidate positions, most important first; ties broken at random."""
    values = np.asarray([importance[i] for i in candidates], dtype=np.float64)
    jitter = rng.random(len(candidates))
    order = np.lexsort((jitter, -values))
    return [candidates[i] for i in order]


def faithfulness(
    runtime: Explainable,
    texts: Sequence[str],
    methods: Sequence[str] | None = None,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    batch_size: int = 32,
    seed: int = 0,
    ig_steps: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Comprehensiveness, sufficiency and their AOPC for each method over ``texts``.

    Returns ``{"methods": {name: {"comprehensiveness", "sufficiency", "thresholds": {q: {...}}}},
    "texts": n, "thresholds": [...]}``; ``comprehensiveness``/``sufficiency`` are the AOPC (mean over
    thresholds) averaged over texts.
    """
    check_classifier(runtime, "faithfulness()")
    checked = validate_texts(texts)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed} must be in [0, 2**32)")
    if isinstance(methods, str):  # one name would be read letter by letter ("method 'r'")
        raise ValueError(f"methods={methods!r} must be a list of method names, e.g. [{methods!r}]")
    methods = list(dict.fromkeys(methods)) if methods is not None else default_methods(runtime)  # a name once
    if not methods:
        raise ValueError(
            f"this {runtime.backend} model records no attention, so no explanation method can run on it: measure "
            "the PyTorch fp32 model, or an ONNX export made with --attentions"
        )
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"methods={method!r}: no such method; choose from {list(METHODS)}")
        refuse_unavailable(runtime, METHODS[method])  # before any work (it was refused once the others had run)
    for q in thresholds:
        if not 0 < q <= 1:
            raise ValueError(f"threshold {q} must be in (0, 1]")
    special_ids = runtime.tokenizer.special_ids
    full_rows = runtime.tokenizer.ids(checked)
    base = _probabilities(runtime, full_rows, batch_size)
    results: dict[str, Any] = {}
    # paced and lined in a log as training's bar (it had written a carriage-return redraw a second)
    # Counted by hand: an iterated bar's count is shown only at its redraws, so a log (a redraw at most
    # every 30 s) had read 0/8 on every line; and its last line is kept, as training's is.
    bar = progress_bar(total=len(methods), desc="faithfulness", unit="method", disable=not progress)
    for method in methods:
        bar.set_postfix_str(method, refresh=False)
        # Each method's draws depend on its name, not on which other methods were asked for: the
        # random and uniform baselines are the same whether measured alone or beside six methods.
        offset = zlib.crc32(method.encode()) % 1_000_003
        explanations = explain(runtime, checked, method, batch_size=batch_size, seed=(seed + offset) % 2**32,
                               ig_steps=ig_steps)  # fmt: skip
        rng = np.random.default_rng((seed, offset))
        removed_rows: list[list[int]] = []
        kept_rows: list[list[int]] = []
        owners: list[tuple[int, int]] = []
        for t, (row, exp) in enumerate(zip(full_rows, explanations, strict=True)):
            candidates = [i for i, tok in enumerate(row) if tok not in special_ids]
            if not candidates:
                continue
            ranked = _ranking(exp.importance, candidates, rng)
            for qi, q in enumerate(thresholds):
                top = set(ranked[: ceil_fraction(q, len(candidates))])
                removed_rows.append([tok for i, tok in enumerate(row) if i not in top])
                kept_rows.append([tok for i, tok in enumerate(row) if i in top or tok in special_ids])
                owners.append((t, qi))
        removed = _probabilities(runtime, removed_rows, batch_size)
        kept = _probabilities(runtime, kept_rows, batch_size)
        comp = np.full((len(checked), len(thresholds)), np.nan)
        suff = np.full((len(checked), len(thresholds)), np.nan)
        for j, (t, qi) in enumerate(owners):
            c = int(base[t].argmax())
            comp[t, qi] = base[t, c] - removed[j, c]
            suff[t, qi] = base[t, c] - kept[j, c]
        results[method] = {
            "comprehensiveness": _mean(comp),
            "sufficiency": _mean(suff),
            "thresholds": {
                f"{q:g}": {"comprehensiveness": _mean(comp[:, qi]), "sufficiency": _mean(suff[:, qi])}
                for qi, q in enumerate(thresholds)
            },
        }
        bar.update(1)
    bar.close()
    scored = len({t for t, _ in owners})
    return {"methods": results, "texts": len(checked), "texts_scored": scored,
            "thresholds": [float(q) for q in thresholds]}  # fmt: skip


def _mean(values: np.ndarray) -> float | None:
    """The mean over the texts that had tokens to remove; None when none had (no figure, not NaN)."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else None


def format_faithfulness(report: dict[str, Any]) -> str:
    """A plain-text table: one row per method, AOPC and per-threshold comprehensiveness."""
    thresholds = report["thresholds"]
    head = f"{'method':<22} {'comp.':>7} {'suff.':>7}  " + " ".join(
        f"{'c@' + format(q * 100, 'g') + '%':>7}" for q in thresholds
    )
    unscored = report["texts"] - report.get("texts_scored", report["texts"])
    note = f" ({unscored} with no token to remove are left out)" if unscored else ""
    lines = [f"ERASER faithfulness over {report['texts']} texts{note} (AOPC; comprehensiveness: higher is better, "
             "sufficiency: lower is better)", head, "-" * len(head)]  # fmt: skip

    def cell(value: float | None) -> str:
        return f"{value:7.3f}" if value is not None else f"{'-':>7}"

    for name, row in report["methods"].items():
        per = " ".join(cell(row["thresholds"][f"{q:g}"]["comprehensiveness"]) for q in thresholds)
        lines.append(f"{name:<22} {cell(row['comprehensiveness'])} {cell(row['sufficiency'])}  {per}")
    return "\n".join(lines)
