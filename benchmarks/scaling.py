"""Data-parallel scaling on this machine: training steps/s with 1 and with 2 torchrun processes.

Each contender trains the default model (``encoder``) for one epoch on ``--data`` in a fresh
process group, with one PyTorch thread per process, and reports the training loop's own speed
(optimiser steps per second and examples per second, from the epoch time in ``train_log.jsonl``,
so start-up, tokenizer training and evaluation are left out). The contenders run in interleaved
rounds through ``harness.interleave``; the wall time of each whole run is timed there too.

* ``1 process``: ``attend train`` with the global batch (``--batch-size``, default 32).
* ``2 processes``: ``torchrun --standalone --nproc-per-node 2``, the same global batch, each
  process computing half of it: the same optimiser steps, so the same model quality.
* ``2 processes, 2x batch``: each process computes a whole ``--batch-size`` batch (global batch
  doubled): the throughput a cluster buys when the batch may grow with it.

Usage::

    python benchmarks/scaling.py                       # rotten_tomatoes, 2 rounds, ~4 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness


def _run(command: list[str], out: Path) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--out", str(out), "--overwrite"], capture_output=True, text=True, env=env,
                          check=False)  # fmt: skip
    if done.returncode != 0:  # the command's own error lines first: torchrun's failure report buries them
        errors = [line for line in done.stderr.splitlines() if line.lstrip().startswith("error:")]
        raise RuntimeError("\n".join(dict.fromkeys(errors)) or done.stderr[-2000:])
    (record,) = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line]
    config = json.loads((out / "config.json").read_text())
    steps = record["step"]
    return {"steps_per_s": steps / record["seconds"],
            "examples_per_s": steps * config["training"]["batch_size"] / record["seconds"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="rotten_tomatoes")
    parser.add_argument("--batch-size", type=harness.positive_int, default=32)
    parser.add_argument("--rounds", type=harness.positive_int, default=2)
    parser.add_argument("--json", type=harness.output_file, help="also write every figure to this JSON file")
    args = parser.parse_args()
    from attend.data.datasets import DATASETS, unknown_data

    if args.data not in DATASETS and not Path(args.data).is_file():
        parser.error(f"--data {unknown_data(args.data)}")
    if Path(args.data).is_file():  # a file attend train cannot read had failed in every child process
        from attend.data.readers import DataError, open_data_file

        try:
            open_data_file(args.data, None)
        except DataError as exc:
            parser.error(f"--data {exc}")
    # The encoder, named: --model auto (the default) times its candidates on one process and is
    # refused under torchrun.
    train = ["-m", "attend", "train", args.data, "--model", "encoder", "--epochs", "1", "--threads", "1",
             "--no-progress"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    commands = {
        "1 process": [sys.executable, *train, "--batch-size", str(args.batch_size)],
        "2 processes": [*torchrun, *train, "--batch-size", str(args.batch_size)],
        "2 processes, 2x batch": [*torchrun, *train, "--batch-size", str(2 * args.batch_size)],
    }
    speeds: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:

        def contender(name: str) -> Any:
            return lambda: speeds[name].append(_run(commands[name], Path(tmp) / name.replace(" ", "_")))

        timings = harness.interleave({name: contender(name) for name in commands}, rounds=args.rounds, warmup=0)
    base = statistics.median(s["steps_per_s"] for s in speeds["1 process"])
    base_examples = statistics.median(s["examples_per_s"] for s in speeds["1 process"])
    rows = []
    for name, found in speeds.items():
        steps = statistics.median(s["steps_per_s"] for s in found)
        examples = statistics.median(s["examples_per_s"] for s in found)
        rows.append([name, f"{steps:.2f}", f"{steps / base:.2f}x", f"{examples:.0f}",
                     f"{examples / base_examples:.2f}x", harness.format_seconds(timings[name].median)])  # fmt: skip
    harness.print_table(
        f"{args.data}, encoder, one epoch, one thread per process ({args.rounds} rounds, medians)",
        ["contender", "steps/s", "vs 1 process", "examples/s", "vs 1 process", "whole run"], rows,
        notes=["steps/s and examples/s: the training loop only (epoch time in train_log.jsonl)"],
    )  # fmt: skip
    if args.json:
        figures = {"speeds": speeds, "timings": {k: v.to_json() for k, v in timings.items()}}
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
