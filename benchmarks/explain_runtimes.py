"""Explanations by runtime: PyTorch fp32 vs ONNX Runtime fp32 / int8 reading the graph's own attention maps.

``attend export --attentions`` puts every layer's attention maps (and the pooling weights) among
the graph's outputs, and :func:`attend.explain.explain` reads them from an ONNX Runtime predictor
for every method that needs no gradients. This script measures what that buys on a trained model:

1. Agreement, on the model's test split: ONNX Runtime fp32 importances against PyTorch's (max
   absolute difference; they should agree to float rounding), and for int8 how often each text's
   most important text token and its top-3 set are unchanged (int8 changes the maps a little).
2. Speed: texts/s of ``explain(..., method)`` for ``attention`` and ``rollout``, one text per
   call (what ``POST /v1/explain`` does for one text) and calls of 32 texts, timed by the
   benchmarks' shared harness (``benchmarks/harness.py``: a warm-up, then interleaved rounds),
   medians, and each runtime's ratio to PyTorch fp32 in the same run: the ratio of the medians
   and the median of per-round ratios. Plain prediction (``predict_proba``) is timed beside it
   for scale.

Usage::

    python benchmarks/explain_runtimes.py runs/minilm_rt            # a trained model directory
    python benchmarks/explain_runtimes.py runs/demo --threads 1 --texts 128
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/harness.py, a sibling module

import numpy as np
import torch

import harness
from attend.data.splits import rebuild_split
from attend.deploy.export import export_onnx
from attend.deploy.quantization import quantize
from attend.explain import explain
from attend.runtime import load
from attend.runtime.onnx import load_onnx

METHODS = ("attention", "rollout")


def _top(explanation: Any, k: int) -> set[int]:
    """Positions of the k most important *text* tokens ([CLS], [SEP] and the like left out)."""
    pairs = zip(explanation.importance, explanation.special, strict=True)
    scores = [(value, i) for i, (value, special) in enumerate(pairs) if not special]
    return {i for _, i in sorted(scores, reverse=True)[:k]}


def agreement(runtimes: dict[str, Any], texts: list[str]) -> None:
    print(f"\nagreement with PyTorch fp32 on {len(texts)} test texts (top tokens: text tokens only)")
    for method in METHODS:
        reference = explain(runtimes["PyTorch fp32"], texts, method)
        for name in ("ONNX Runtime fp32", "ONNX Runtime int8"):
            pairs = list(zip(explain(runtimes[name], texts, method), reference, strict=True))
            gap = max(float(np.abs(np.subtract(a.importance, b.importance)).max()) for a, b in pairs)
            top1 = np.mean([_top(a, 1) == _top(b, 1) for a, b in pairs])
            top3 = np.mean([_top(a, 3) == _top(b, 3) for a, b in pairs])
            labels = np.mean([a.label == b.label for a, b in pairs])
            print(f"  {method:<10} {name:<18} max |importance diff| {gap:.1e}; same top token {100 * top1:5.1f} %, "
                  f"same top-3 {100 * top3:5.1f} %, same label {100 * labels:5.1f} %")  # fmt: skip


def speed(runtimes: dict[str, Any], texts: list[str], rounds: int) -> None:
    for batch in (1, 32):
        chosen = texts[:32] if batch == 1 else texts
        jobs: dict[str, Callable[[], Any]] = {}
        for name, predictor in runtimes.items():
            calls = [chosen[i : i + batch] for i in range(0, len(chosen), batch)]
            jobs[f"{name} | predict"] = lambda p=predictor, c=calls, b=batch: [
                p.predict_proba(t, batch_size=b) for t in c
            ]
            for method in METHODS:
                jobs[f"{name} | {method}"] = lambda p=predictor, c=calls, m=method, b=batch: [
                    explain(p, t, m, batch_size=b) for t in c
                ]
        timings = harness.interleave(jobs, rounds=rounds, warmup=1, items=len(chosen))
        rows = []
        for runtime in runtimes:
            cells = [runtime]
            for task in ("predict", *METHODS):
                timing = timings[f"{runtime} | {task}"]
                speedup = harness.paired_ratio(timings[f"PyTorch fp32 | {task}"], timing)
                cells.append(f"{timing.rate:.1f} ({speedup.of_medians:.2f}x, {speedup.median:.2f}x)")
            rows.append(cells)
        harness.print_table(
            f"{len(chosen)} short test texts, {batch} per call, {rounds} rounds",
            ["runtime", "predict", *METHODS],
            rows,
            ["texts/s (x PyTorch fp32: ratio of medians, median of per-round ratios)"],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=harness.model_directory,
                        help="a trained model directory with self-attention layers")  # fmt: skip
    parser.add_argument("--threads", type=harness.positive_int, default=1)
    parser.add_argument("--texts", type=harness.positive_int, default=256, help="short test texts (default 256)")
    parser.add_argument("--rounds", type=harness.positive_int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    predictor = load(model_dir)
    test = rebuild_split(model_dir, "test")
    lengths = [len(ids) for ids in predictor.tokenizer.ids(test.texts)]
    short = [text for text, n in zip(test.texts, lengths, strict=True) if n <= 32][: args.texts]
    print(f"attend explanations by runtime: {model_dir}, {len(short)} short test texts (<= 32 tokens), "
          f"{args.threads} thread(s), torch {torch.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="attend-explain-runtimes-") as tmp:
        onnx_dir = Path(tmp) / "onnx"
        report = export_onnx(predictor, onnx_dir, attentions=True, threads=args.threads)
        quantized = quantize(onnx_dir, runtime="onnx", threads=args.threads)["onnx"]
        parity = report["parity"]
        print(f"exported with attention outputs {report['outputs'][1:]}; parity: logits "
              f"{parity['max_abs_diff_logits']:.1e}, maps {parity['max_abs_diff_attentions']:.1e}; int8 test "
              f"accuracy {quantized['fp32']['accuracy']:.4f} -> {quantized['int8']['accuracy']:.4f}")  # fmt: skip
        fp32 = load_onnx(onnx_dir, threads=args.threads)
        int8 = load_onnx(onnx_dir, quantized=True, threads=args.threads)
        runtimes = {"PyTorch fp32": predictor, "ONNX Runtime fp32": fp32, "ONNX Runtime int8": int8}
        agreement(runtimes, short)
        speed(runtimes, short, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
