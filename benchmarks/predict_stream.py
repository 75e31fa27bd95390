"""Batch scoring memory: peak RSS of `attend predict --input` from 10k to 1M lines.

Each size runs ``attend predict MODEL --input FILE --output OUT --format csv --no-progress`` in a
fresh process and reads that process's peak resident memory (``ru_maxrss`` from ``os.wait4``),
its wall time and its rate. Memory must stay flat as the file grows a hundredfold: the texts are
read, classified and written in chunks (``attend.runtime.streaming``), never held whole. The
ratio printed is each size's peak over the smallest size's, measured in the same run.

The input repeats Rotten Tomatoes' texts (real sentences of varied length) to the size wanted.
Without ``--model`` a small encoder (width 64, one layer) is trained on them for one epoch first,
so that a million lines take minutes, not hours; the model's size does not change what is
measured (how memory grows with the file).

Usage::

    python benchmarks/predict_stream.py                              # 10k, 100k, 1M lines, ~5 min
    python benchmarks/predict_stream.py --sizes 10000,100000 --model runs/demo
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from attend.data.datasets import load_dataset


def _write_input(path: Path, texts: list[str], size: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        for i in range(size):
            writer.writerow([texts[i % len(texts)]])


def _measure(command: list[str]) -> tuple[float, float]:
    """Peak RSS (MiB) and wall seconds of ``command`` run to completion."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    error = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(error.decode(errors="replace")[-2000:])
    return usage.ru_maxrss / 1024.0, seconds  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=harness.comma_list(harness.positive_int), default="10000,100000,1000000",
                        help="lines per input file")  # fmt: skip
    parser.add_argument("--model", type=harness.model_directory,
                        help="a text classifier directory (default: train a small one)")  # fmt: skip
    parser.add_argument("--json", type=harness.output_file, help="also write every figure to this JSON file")
    args = parser.parse_args()
    sizes = args.sizes
    texts = list(load_dataset("rotten_tomatoes").texts)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            model = str(work / "model")
            config = work / "config.json"
            config.write_text(json.dumps({"model": {"dim": 64, "num_layers": 1, "num_heads": 2}}), encoding="utf-8")
            done = subprocess.run([sys.executable, "-m", "attend", "train", "rotten_tomatoes", "--model", "encoder",
                                   "--out", model, "--epochs", "1", "--config", str(config), "--no-progress",
                                   "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"training the benchmark's model failed:\n{done.stderr[-2000:]}")
        for size in sizes:
            data, out = work / f"in-{size}.csv", work / f"out-{size}.csv"
            _write_input(data, texts, size)
            command = [sys.executable, "-m", "attend", "predict", model, "--input", str(data), "--output", str(out),
                       "--format", "csv", "--no-progress", "--top-k", "1"]  # fmt: skip
            peak, seconds = _measure(command)
            with open(out, encoding="utf-8", newline="") as handle:
                rows = sum(1 for _ in csv.reader(handle)) - 1
            assert rows == size, (rows, size)
            figures.append({"lines": size, "peak_rss_mib": peak, "seconds": seconds, "lines_per_s": size / seconds,
                            "input_mib": data.stat().st_size / 2**20})  # fmt: skip
            data.unlink()
            out.unlink()
    first = figures[0]["peak_rss_mib"]
    rows = [
        [f"{f['lines']:,}", f"{f['input_mib']:.1f} MiB", f"{f['peak_rss_mib']:.0f} MiB",
         f"{f['peak_rss_mib'] / first:.2f}x", harness.format_seconds(f["seconds"]), f"{f['lines_per_s']:,.0f}"]
        for f in figures
    ]  # fmt: skip
    harness.print_table(
        "attend predict --input FILE --output OUT (one thread, fresh process per size)",
        ["lines", "input", "peak RSS", "vs smallest", "wall", "lines/s"],
        rows,
        notes=["peak RSS: ru_maxrss of the predict process (interpreter, torch and model included)"],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
