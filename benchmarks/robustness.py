"""Robust training, measured: every option's effect on clean, noisy and attacked accuracy.

For each data set and each training variant (the same `attend train` defaults plus one robust
option, or the issue's combination ``--augment typos,word_dropout --adversarial fgm``), the script
trains the default model (``encoder``) into ``--out-dir/DATA/VARIANT`` (or reuses a model already
there, trained with the same options) and runs :func:`attend.runtime.robustness.robustness` on the
test split `attend train` held out (at most ``--limit`` rows, seeded): clean accuracy, accuracy
under each seeded perturbation at ``--rate`` of the words, and the greedy attack's success rate.
Each variant is printed beside the baseline (no robust option) in points.

Nothing here is tuned: every option runs at its default (augmentation rate 0.1 and probability
0.5, FGM/PGD epsilon 1.0, PGD 3 steps, R-Drop alpha 1.0, label smoothing 0.1, averaging of the
last 3 epochs), settled before any run, and only test splits the models never saw are measured.

Usage::

    python benchmarks/robustness.py --threads 1                     # every variant, ~1 h 30 min
    python benchmarks/robustness.py --datasets rotten_tomatoes --variants baseline,augment_fgm
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from attend.data.datasets import DATASETS
from attend.runtime import load
from attend.runtime.robustness import robustness, robustness_rows
from attend.training import TrainingArgs, train

#: Training variants: the robust options each adds to the defaults of `attend train`.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "augment_fgm": {"augment": "typos,word_dropout", "adversarial": "fgm"},
    "augment": {"augment": "typos,word_dropout"},
    "augment_all": {"augment": "typos,word_dropout,swap,synonyms"},
    "fgm": {"adversarial": "fgm"},
    "pgd": {"adversarial": "pgd"},
    "rdrop": {"rdrop": 1.0},
    "label_smoothing": {"label_smoothing": 0.1},
    "average_checkpoints": {"average_checkpoints": 3},
}


def _trained(data: str, variant: str, out_dir: Path, threads: int) -> tuple[Path, float | None]:
    """The model directory of ``variant`` on ``data``: reused when its options match, else trained."""
    out = out_dir / harness.run_name(data) / variant
    options = VARIANTS[variant]
    config = out / "config.json"
    if config.is_file():
        saved = json.loads(config.read_text(encoding="utf-8"))["training"]
        defaults = TrainingArgs()
        keys = ("augment", "adversarial", "rdrop", "label_smoothing", "augment_rate", "adversarial_epsilon",
                "average_checkpoints")
        if all(saved.get(k, getattr(defaults, k)) == options.get(k, getattr(defaults, k)) for k in keys):
            return out, None
    start = time.perf_counter()
    args = TrainingArgs(**options, threads=threads, progress=False)
    train(data, out, model="encoder", args=args, overwrite=True)
    return out, time.perf_counter() - start


def _rate(text: str) -> float:
    """A share of words in (0, 1]."""
    value = harness.positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a share of words in (0, 1], not {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    classification = [name for name, info in DATASETS.items() if info.task == "classification"]
    parser.add_argument("--datasets", type=harness.comma_choices(classification, files=True),
                        default="rotten_tomatoes,wordnet_topics")  # fmt: skip
    parser.add_argument("--variants", type=harness.comma_choices(VARIANTS), default=",".join(VARIANTS),
                        help=f"of {', '.join(VARIANTS)}")  # fmt: skip
    parser.add_argument("--out-dir", type=harness.output_dir, default="runs/bench-robust",
                        help="where the models go (reused when there)")  # fmt: skip
    parser.add_argument("--limit", type=harness.non_negative_int, default=2000,
                        help="test rows measured (seeded sample; 0: all)")  # fmt: skip
    parser.add_argument("--rate", type=_rate, default=0.1, help="share of words each perturbation changes")
    parser.add_argument("--attack-examples", type=harness.non_negative_int, default=200)
    parser.add_argument("--threads", type=harness.positive_int, default=1)
    parser.add_argument("--json", type=harness.output_file, help="also write every figure to this JSON file")
    args = parser.parse_args()
    variants = args.variants
    results: dict[str, dict[str, Any]] = {}
    with harness.torch_threads(args.threads):
        for data in args.datasets:
            results[data] = {}
            for variant in variants:
                out, seconds = _trained(data, variant, Path(args.out_dir), args.threads)
                runtime = load(out)
                rows, described = robustness_rows(runtime, data, limit=args.limit)
                found = robustness(runtime, rows.texts, [labels[0] for labels in rows.labels], rate=args.rate,
                                   attack_examples=args.attack_examples, rows=described)  # fmt: skip
                log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line]
                found["train_seconds"] = seconds if seconds is not None else sum(r["seconds"] for r in log)
                found["epochs"] = len(log)
                results[data][variant] = found
                print(f"{data} {variant}: clean {found['clean']:.4f} typos {found['perturbations']['typos']:.4f} "
                      f"attack {found['attack']['success_rate']:.3f}", file=sys.stderr, flush=True)  # fmt: skip
    for data, by_variant in results.items():
        base = by_variant.get("baseline")
        headers = ["variant", "clean", "typos", "char_drop", "word_dropout", "swap", "synonyms", "casing",
                   "attack success", "epochs", "train s"]  # fmt: skip
        rows_out = []
        for variant, found in by_variant.items():
            cells = [variant, _cell(found["clean"], base and base["clean"])]
            for name in headers[2:8]:
                cells.append(_cell(found["perturbations"][name], base and base["perturbations"][name]))
            attack = found["attack"]["success_rate"]
            cells.append(_cell(attack, base and base["attack"]["success_rate"]))
            cells += [str(found["epochs"]), f"{found['train_seconds']:.0f}"]
            rows_out.append(cells)
        examples = next(iter(by_variant.values()))["examples"]
        harness.print_table(
            f"{data}: accuracy (change vs baseline in points), {examples} test rows, rate {args.rate}",
            headers, rows_out, notes=["attack success: share of attacked (correct) texts flipped; lower is better"],
        )  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


def _cell(value: float, base: float | None) -> str:
    if base is None:
        return f"{value:.4f}"
    return f"{value:.4f} ({100 * (value - base):+.1f})"


if __name__ == "__main__":
    main()
