"""ONNX Runtime settings attend chooses, each against the alternative, in one run.

``attend.runtime.onnx.session_for`` builds every ONNX Runtime session with two choices that are
not ONNX Runtime's defaults. This times each against its alternative on the same inputs, in
interleaved rounds (``benchmarks/harness.py``), medians, ratio = alternative / attend's choice:

1. ``SkipLayerNormFusion`` left off (:data:`attend.runtime.onnx.DISABLED_OPTIMIZERS`): the fusion
   merges a residual Add and the LayerNormalization after it into one ``SkipLayerNormalization``.
   Timed on a graph of just that pair, (32, 32, 384) float32, and on MiniLM exported by ``attend
   export`` (fp32 and dynamic int8) running length-sorted batches of 32 short texts.
2. Denormals flushed on the calling thread around each run
   (:func:`attend.runtime.onnx.denormals_flushed`): on the same MiniLM graphs and batches.

Each line says whether the fusion fired in the graph ONNX Runtime ran (its optimised graph is
saved and read back), and the largest logit difference between the two ways.

Usage::

    python benchmarks/onnx_settings.py             # pretrained MiniLM, untrained head, one thread
    python benchmarks/onnx_settings.py runs/minilm_rt
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

import harness
from attend.data.datasets import load_dataset
from attend.deploy.export import INT8_FILE, ONNX_FILE, export_onnx
from attend.deploy.quantization import quantize_onnx_file
from attend.runtime import load
from attend.runtime.onnx import DISABLED_OPTIMIZERS, denormals_flushed, session_for

FUSED_OP = "SkipLayerNormalization"


def add_layer_norm_graph(path: Path, shape: tuple[int, int, int]) -> Path:
    """A graph of one residual Add followed by LayerNormalization over the last axis."""
    width = shape[-1]
    rng = np.random.default_rng(0)
    weights = [helper.make_tensor(name, TensorProto.FLOAT, [width], rng.standard_normal(width).astype(np.float32))
               for name in ("gamma", "beta")]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "residual"], ["summed"]),
         helper.make_node("LayerNormalization", ["summed", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)],
        "add_layer_norm",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name in ("x", "residual")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
        initializer=weights,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def fused_count(optimized: Path) -> int:
    """How many ``SkipLayerNormalization`` nodes ONNX Runtime's rewritten graph holds."""
    return sum(node.op_type == FUSED_OP for node in onnx.load(str(optimized)).graph.node)


def sessions(path: Path, threads: int, work: Path) -> tuple[dict[str, object], dict[str, int]]:
    """attend's session and one with every rewrite on, and the fused nodes each ran with."""
    built, fused = {}, {}
    for name, disabled in (("attend", DISABLED_OPTIMIZERS), ("every rewrite", ())):
        optimized = work / f"{path.stem}.{name.replace(' ', '_')}.optimized.onnx"
        built[name] = session_for(path, threads=threads, save_optimized=optimized, disabled_optimizers=disabled)
        fused[name] = fused_count(optimized)
    return built, fused


def row(label: str, timings: dict[str, harness.Timing], ours: str, other: str, note: str, *,
        same_graph: bool = False) -> None:  # fmt: skip
    ratio = harness.paired_ratio(timings[other], timings[ours])
    # no fusion fired: both ran one graph, and their ratio is noise (a 1.20x of it had gone unflagged)
    shown = f"{'n/a':>7} {'n/a':>7}" if same_graph else f"{ratio.of_medians:6.2f}x {ratio.median:6.2f}x"
    print(f"{label:52} {1000 * timings[ours].median:9.2f} ms {1000 * timings[other].median:9.2f} ms "
          f"{shown}  {note}" + ("; the same graph either way (no fusion fired)" if same_graph else ""))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_model_arguments(parser, what="a MiniLM or encoder directory")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = harness.temp_dir("onnx-settings")
    model_dir = harness.model_dir_or_pretrained(args.model_dir, "onnx-settings")
    print(f"ONNX Runtime, {args.threads} thread(s), {args.rounds} interleaved rounds, medians; "
          "ratio = the alternative's time / attend's")  # fmt: skip
    print(f"{'':52} {'attend':>12} {'alternative':>12} {'ratio':>7} {'paired':>7}")

    shape = (32, 32, 384)
    graph = add_layer_norm_graph(work / "add_layer_norm.onnx", shape)
    built, fused = sessions(graph, args.threads, work)
    rng = np.random.default_rng(1)
    feed = {name: rng.standard_normal(shape).astype(np.float32) for name in ("x", "residual")}
    outputs = {name: session.run(["y"], feed)[0] for name, session in built.items()}
    diff = float(np.abs(outputs["attend"] - outputs["every rewrite"]).max())
    timings = harness.interleave({name: lambda s=session: s.run(["y"], feed) for name, session in built.items()},
                                 rounds=args.rounds, number=20)  # fmt: skip
    row(f"Add + LayerNorm {shape}: fusion off vs on", timings, "attend", "every rewrite",
        f"fused nodes {fused['attend']} vs {fused['every rewrite']}, max|diff| {diff:.1e}",
        same_graph=fused["attend"] == fused["every rewrite"])  # fmt: skip

    predictor = load(model_dir)
    tokenizer = predictor.tokenizer
    texts = load_dataset("rotten_tomatoes").texts
    sample = random.Random(0).sample(texts, min(512, len(texts)))
    short = sorted((ids for ids in tokenizer.ids(sample) if len(ids) <= 32), key=len)[:256]
    feeds = [{key: batch[key].numpy() for key in ("input_ids", "attention_mask")}
             for batch in (tokenizer.pad(short[i : i + 32]) for i in range(0, len(short), 32))]  # fmt: skip
    print(f"{type(predictor.model).__name__} ({model_dir}) in ONNX Runtime: {len(feeds)} length-sorted batches of 32 "
          "short Rotten Tomatoes texts (at most 32 tokens)")  # fmt: skip
    export_onnx(predictor, work / "export", threads=args.threads)
    quantize_onnx_file(work / "export" / ONNX_FILE, work / "export" / INT8_FILE)
    for precision, name in (("fp32", ONNX_FILE), ("int8", INT8_FILE)):
        built, fused = sessions(work / "export" / name, args.threads, work)
        session = built["attend"]

        def run_all(s: object, flush: bool) -> Callable[[], list[np.ndarray]]:
            def run() -> list[np.ndarray]:
                with denormals_flushed() if flush else contextlib.nullcontext():
                    return [s.run(["logits"], f)[0] for f in feeds]

            return run

        calls = {"attend": run_all(session, True), "every rewrite": run_all(built["every rewrite"], True),
                 "denormals kept": run_all(session, False)}  # fmt: skip
        logits = {label: call() for label, call in calls.items()}
        timings = harness.interleave(calls, rounds=args.rounds)
        for other, what in (("every rewrite", "fusion off vs on"), ("denormals kept", "denormals flushed vs kept")):
            diff = max(float(np.abs(a - b).max()) for a, b in zip(logits["attend"], logits[other], strict=True))
            note = f"max|logit diff| {diff:.1e}"
            if other == "every rewrite":
                note = f"fused nodes {fused['attend']} vs {fused['every rewrite']}, " + note
            row(f"{precision}: {what}", timings, "attend", other, note,
                same_graph=other == "every rewrite" and fused["attend"] == fused["every rewrite"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
