"""Write a bundled data set as a CSV with a fixed ``split`` column, and its test rows alone.

Models trained with different seeds draw different splits (the seed seeds both the split and the
weights). To compare them, or an ensemble of them, on the same held-out texts, give each the same
split: this writes ``text``, ``label`` and ``split`` (``train``/``dev``/``test``) from attend's own
stratified split with the given seed (``attend.data.readers.stratified_split``, 10 % dev, 10 %
test, as ``attend train`` draws it), and with ``--test-out`` the test rows alone (``text``,
``label``) for ``attend evaluate``.

Usage::

    python scripts/datasets/with_split_column.py rotten_tomatoes rt.csv --test-out rt_test.csv
    attend train rt.csv --model encoder --split-col split --seed 1 --out s1
    attend evaluate s1 rt_test.csv --json
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from attend.data.datasets import DATASETS
from attend.data.readers import stratified_split
from attend.data.splits import load_labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [name for name, info in DATASETS.items() if info.task == "classification"]
    parser.add_argument("dataset", choices=names, help="a bundled classification data set")
    parser.add_argument("out", type=Path, help="CSV file to write: text, label, split")
    parser.add_argument("--test-out", type=Path, help="also write the test rows alone here: text, label")
    parser.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    args = parser.parse_args()
    data = load_labelled(args.dataset)  # read as `attend train DATASET` reads it
    labels = [first for first, *_ in data.labels]
    split_of = {}
    for name, indices in zip(("train", "dev", "test"), stratified_split(data, seed=args.seed), strict=True):
        split_of |= dict.fromkeys(indices, name)
    with open(args.out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "split"])
        writer.writerows((text, label, split_of[i]) for i, (text, label) in enumerate(zip(data.texts, labels,
                                                                                           strict=True)))  # fmt: skip
    counts = {name: sum(1 for s in split_of.values() if s == name) for name in ("train", "dev", "test")}
    print(f"{args.out}: {len(data)} rows of {args.dataset}, split {counts} (seed {args.seed})")
    if args.test_out:
        with open(args.test_out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows((text, label) for i, (text, label) in enumerate(zip(data.texts, labels, strict=True))
                             if split_of[i] == "test")  # fmt: skip
        print(f"{args.test_out}: the {counts['test']} test rows")


if __name__ == "__main__":
    main()
