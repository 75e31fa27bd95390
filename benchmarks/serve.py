"""Deployment benchmark, one run: offline runtimes (PyTorch / ONNX Runtime, fp32 / int8), then served load.

1. Offline inference, texts/s on the same texts (the benchmarks' shared harness,
   ``benchmarks/harness.py``: a warm-up, then interleaved rounds, medians; each runtime's
   speed-up over PyTorch fp32 as the ratio of medians and as the median of per-round ratios,
   "paired"), on short texts
   (<= 32 tokens, from the model's own test split) one at a time (batch 1, what a service does
   without batching) and in batches of 32, and on long texts (>= 256 tokens: test texts joined;
   the tokenizer limit is raised to 256 where the model has the positions) in batches of 32:
   PyTorch fp32 (the reference), ONNX Runtime fp32, ONNX Runtime int8 (dynamic, from ``attend
   quantize``; also with an accuracy budget, and from the ``--unpad`` graph), PyTorch int8
   (dynamic) and PyTorch bf16. Accuracy and macro-F1 of each on the model's test split, as
   ``attend quantize`` measures them. Goal: ORT int8 >= 3x PyTorch fp32 on short texts with
   <= 0.5 points accuracy loss (speed-up as the ratio of medians). Also printed: one int8 and
   one fp32 matrix product of an encoder layer's size, alone (interleaved rounds too), i.e.
   what int8 can gain where products dominate.
2. Served throughput and p50/p99 latency at C concurrent clients in a second process, with and
   without micro-batching (``benchmarks/serve_load.py``), for PyTorch fp32 and bf16.
   Goal: batching >= 3x throughput at 32 clients.

Every runtime gets the same number of intra-op threads (``--threads``, default 1).

Usage::

    python benchmarks/serve.py runs/minilm_rt          # a trained model directory
    python benchmarks/serve.py runs/minilm_rt --skip-served --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

import harness
from attend.data.splits import rebuild_split
from attend.deploy.export import export_onnx
from attend.deploy.quantization import _compare, _quiet_quantizer, quantize
from attend.runtime import load

BATCH = 32
BUDGET = 0.5  # points of dev accuracy, for `attend quantize --max-loss`
BUDGET_ROW = f"ORT int8, budget {BUDGET}"
UNPAD_ROW = "ORT int8, --unpad"


def _positions(predictor: Any) -> int:
    config = predictor.config["model"]
    if config.get("model_type") == "minilm":
        return int((config.get("bert") or {}).get("max_position_embeddings", 512))
    return int(config.get("max_length", predictor.tokenizer.max_length))


def _texts(predictor: Any, test_texts: list[str], n: int) -> dict[str, list[str]]:
    lengths = [len(ids) for ids in predictor.tokenizer.ids(test_texts)]
    short = [t for t, n_tok in zip(test_texts, lengths, strict=True) if n_tok <= 32][:n]
    long_texts, current = [], ""
    for text in test_texts:
        current = f"{current} {text}".strip()
        if len(predictor.tokenizer.tokenizer.encode(current).ids) >= 256:
            long_texts.append(current)
            current = ""
        if len(long_texts) >= max(8, n // 4):
            break
    return {"short": short, "long": long_texts}


def gemm_ceiling(threads: int, rounds: int = 30) -> dict[str, harness.Timing]:
    """One (1024 x 384) @ (384 x 1536) product: PyTorch fp32, ONNX Runtime fp32 and int8 (dynamic)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 384)).astype(np.float32)
    w = (0.05 * rng.standard_normal((384, 1536))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", 384])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 1536])], [numpy_helper.from_array(w, "w")],
        )  # fmt: skip
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), fp32_path)
        with _quiet_quantizer():  # its advice to pre-process: a single product has nothing to fold
            quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in (("ONNX Runtime fp32", fp32_path), ("ONNX Runtime int8", int8_path))}  # fmt: skip
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        calls = {"PyTorch fp32": lambda: tx @ tw}
        calls |= {name: (lambda s=s: s.run(None, {"x": x})) for name, s in sessions.items()}
        return harness.interleave(calls, rounds=rounds)


def offline(model_dir: Path, work: Path, *, threads: int, n_texts: int, rounds: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    onnx_dir = work / "onnx"
    watch = harness.Stopwatch()
    exported = export_onnx(model_dir, onnx_dir, threads=threads)
    report = quantize(onnx_dir, runtime="onnx", threads=threads)
    torch_int8 = quantize(model_dir, runtime="torch", threads=threads)  # model_dir is a scratch copy
    budget_dir = work / "onnx-budget"  # int8 with an accuracy budget: sub-layers kept fp32 as the dev split asks
    shutil.copytree(onnx_dir, budget_dir)
    budgeted = quantize(budget_dir, runtime="onnx", threads=threads, max_loss=BUDGET)["onnx"]
    search = budgeted["accuracy_budget"]
    print(f"accuracy budget {BUDGET} points on the dev split: kept fp32 sub-layers {search['fp32_groups']} "
          f"of {search['group_count']}, {100 * search['fp32_weights'] / search['weights']:.1f} % of the weights "
          f"(dev loss {search['dev_loss_points']:+.2f})")  # fmt: skip
    unpad_dir = work / "onnx-unpad"  # the graph whose layers run on real tokens only (attend export --unpad)
    export_onnx(model_dir, unpad_dir, threads=threads, unpad=True)
    unpadded = quantize(unpad_dir, runtime="onnx", threads=threads)["onnx"]
    print(f"exported and quantised in {watch.seconds:.0f} s; parity "
          f"{exported['parity']['max_abs_diff_logits']:.1e}; ONNX fp32 {report['onnx']['bytes']['fp32'] / 1e6:.1f} MB, "
          f"int8 {report['onnx']['bytes']['int8'] / 1e6:.1f} MB")  # fmt: skip
    runtimes = {
        "PyTorch fp32": load(model_dir),
        "ONNX Runtime fp32": load(onnx_dir, runtime="onnx", threads=threads),
        "ONNX Runtime int8": load(onnx_dir, runtime="onnx", int8=True, threads=threads),
        BUDGET_ROW: load(budget_dir, runtime="onnx", int8=True, threads=threads),
        UNPAD_ROW: load(unpad_dir, runtime="onnx", int8=True, threads=threads),
        "PyTorch int8": load(model_dir, runtime="torch", int8=True),
        "PyTorch bf16": load(model_dir, runtime="torch", bf16=True),
    }
    test = rebuild_split(model_dir, "test")
    texts_by_length = _texts(runtimes["PyTorch fp32"], test.texts, n_texts)
    long_limit = min(256, _positions(runtimes["PyTorch fp32"]))
    bf16 = _compare(runtimes["PyTorch fp32"], runtimes["PyTorch bf16"], test, 64, precision="bf16")
    accuracy = {
        "PyTorch fp32": report["onnx"]["fp32"],  # ORT fp32 matches PyTorch to ~1e-6 (parity above)
        "ONNX Runtime fp32": report["onnx"]["fp32"],
        "ONNX Runtime int8": report["onnx"]["int8"],
        BUDGET_ROW: budgeted["int8"],
        UNPAD_ROW: unpadded["int8"],
        "PyTorch int8": torch_int8["torch"]["int8"],
        "PyTorch bf16": bf16["bf16"],
    }
    results: dict[str, Any] = {"accuracy": accuracy, "settings": {}, "parity": exported["parity"]}
    settings = {"short, batch 1": ("short", 1), "short, batch 32": ("short", BATCH), "long, batch 32": ("long", BATCH)}
    for setting, (length, batch) in settings.items():
        texts = texts_by_length[length][: max(8, n_texts // 4)] if batch == 1 else texts_by_length[length]
        limit = 32 if length == "short" else long_limit
        for predictor in runtimes.values():
            predictor.tokenizer.max_length = max(predictor.tokenizer.max_length, limit)

        def run(t: list[str], p: Any, b: int = batch) -> None:
            for i in range(0, len(t), b):  # the caller's batches, as a service would form them
                p.predict_proba(t[i : i + b], batch_size=b)

        for predictor in runtimes.values():  # warm-up, on one batch
            run(texts[:BATCH], predictor)
        # Interleaved, rotating order: load drifts hit every runtime alike.
        timings = harness.interleave(
            {name: lambda p=predictor, t=texts: run(t, p) for name, predictor in runtimes.items()},
            rounds=rounds,
            warmup=0,  # done above
            items=len(texts),
        )
        rows = {}
        for name, timing in timings.items():
            speedup = harness.paired_ratio(timings["PyTorch fp32"], timing)
            rows[name] = {"texts_per_s": timing.rate, "speedup": speedup.of_medians, "speedup_paired": speedup.median}
        results["settings"][setting] = {"texts": len(texts), "batch": batch, "max_length": limit, "rows": rows}
        print(f"\n{setting}: {len(texts)} texts, up to {limit} tokens, {rounds} rounds, threads {threads}")
        print(f"  {'runtime':<22} {'texts/s':>9} {'x PyTorch fp32':>15} {'paired':>7} {'accuracy':>9} {'macro-F1':>9}")
        for name, row in rows.items():
            acc = accuracy[name]
            print(f"  {name:<22} {row['texts_per_s']:9.1f} {row['speedup']:14.2f}x {row['speedup_paired']:6.2f}x "
                  f"{acc['accuracy']:9.4f} {acc['macro_f1']:9.4f}")  # fmt: skip
    gemm = gemm_ceiling(threads)
    results["gemm_ms"] = {name: 1000 * timing.median for name, timing in gemm.items()}
    int8 = harness.paired_ratio(gemm["PyTorch fp32"], gemm["ONNX Runtime int8"])
    print("\none (1024 x 384) @ (384 x 1536) product alone: "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in results["gemm_ms"].items())
          + f"; int8 is {int8.of_medians:.2f}x PyTorch fp32 here (paired {int8.median:.2f}x)")  # fmt: skip
    results["goal"] = {}
    for row in ("ONNX Runtime int8", BUDGET_ROW, UNPAD_ROW):
        loss = 100 * (accuracy["PyTorch fp32"]["accuracy"] - accuracy[row]["accuracy"])
        for setting in ("short, batch 1", "short, batch 32"):
            speedup = results["settings"][setting]["rows"][row]["speedup"]
            met = speedup >= 3 and loss <= 0.5
            print(f"goal: {row} >= 3x PyTorch fp32 on short texts, {setting.split(', ')[1]} ({speedup:.2f}x), "
                  f"<= 0.5 points test accuracy loss ({loss:+.2f}): {'MET' if met else 'NOT MET'}")  # fmt: skip
            results["goal"][f"{row}, {setting}"] = {"speedup": speedup, "accuracy_loss_points": loss, "met": met}
    return results


def _copy(model_dir: Path, target: Path) -> Path:
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("checkpoint", "runs", "onnx"))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=harness.model_directory,
                        help="a trained model directory (its test split is rebuilt for accuracy)")  # fmt: skip
    parser.add_argument("--threads", type=harness.positive_int, default=1)
    parser.add_argument("--texts", type=harness.positive_int, default=256, help="short texts per pass (default 256)")
    parser.add_argument("--rounds", type=harness.positive_int, default=5)
    parser.add_argument("--clients", type=harness.positive_int, default=32)
    parser.add_argument("--seconds", type=harness.positive_float, default=20.0,
                        help="measured seconds per served setting")  # fmt: skip
    parser.add_argument("--skip-served", action="store_true")
    parser.add_argument("--skip-offline", action="store_true")
    parser.add_argument("--json", type=harness.output_file, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    print(f"attend deployment benchmark: {model_dir}; torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="attend-bench-serve-") as tmp:
        work = Path(tmp)
        if not args.skip_offline:
            print("\n== offline inference")
            results["offline"] = offline(_copy(model_dir, work / "model"), work, threads=args.threads,
                                         n_texts=args.texts, rounds=args.rounds)  # fmt: skip
    if not args.skip_served:
        import serve_load

        results["served"] = {}
        for dtype in ("fp32", "bf16"):
            print(f"\n== served, PyTorch {dtype} (attend serve on 127.0.0.1, load from a second process)")
            served = harness.temp_dir("serve-load") / "served.json"
            serve_load.main([str(model_dir), "--clients", str(args.clients), "--seconds", str(args.seconds),
                             "--threads", str(args.threads), "--json", str(served),
                             *(["--bf16"] if dtype == "bf16" else [])])  # fmt: skip
            results["served"][dtype] = json.loads(served.read_text())
            shutil.rmtree(served.parent, ignore_errors=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
