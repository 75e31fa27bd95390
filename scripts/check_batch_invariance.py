"""How much a served answer depends on the other requests in its micro-batch, per runtime.

`attend serve` runs concurrent requests together in one padded call. A text's probabilities should
not depend on which other texts share that call. In float32 they differ only by rounding (about
1e-7). In bfloat16 (``--bf16``) each product is rounded to 8 bits of mantissa, so a call's shape
changes the last bits of the answer. Dynamic int8 takes its activation range from the whole input,
so the runtime runs each text alone.

This script predicts each text alone, then in seeded random groups of ``--batch`` texts (one padded
call per group, as a micro-batch). It prints, per runtime, the largest probability difference and
how many predicted labels changed.

Usage::

    python scripts/check_batch_invariance.py MODEL_DIR DATA [--text-col C] [--limit 300] [--batch 32]

DATA is a data file or a registered dataset name; its texts are read from the model's own text
column unless ``--text-col`` names another.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch start their thread pools

import numpy as np


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("data")
    parser.add_argument("--text-col")
    parser.add_argument("--limit", type=_count, default=300, help="texts to check (a seeded sample; default 300)")
    parser.add_argument("--batch", type=_count, default=32,
                        help="texts per padded call (default 32, serve's --max-batch)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.isdir(args.model_dir):
        parser.error(f"{args.model_dir}: no such model directory")

    from attend.data.splits import load_labelled, model_column
    from attend.io import ArtifactDir
    from attend.runtime import load

    config = ArtifactDir.open(args.model_dir).config
    column = model_column(config, args.model_dir, "text_col", args.text_col)
    texts = load_labelled(args.data, text_col=column, label_col=model_column(config, args.model_dir, "label_col",
                                                                            None)).texts  # fmt: skip
    rng = np.random.default_rng(args.seed)
    texts = [texts[i] for i in rng.permutation(len(texts))[: args.limit]]
    order = rng.permutation(len(texts))
    runtimes = {"float32": {}, "bfloat16 (--bf16)": {"bf16": True}, "int8 (--int8)": {"int8": True}}
    print(f"{args.model_dir}: {len(texts)} texts of {args.data}, alone vs in random groups of {args.batch}")
    for name, options in runtimes.items():
        model = load(args.model_dir, threads=1, **options)
        alone = np.stack([model.predict_proba([text])[0] for text in texts])
        together = np.empty_like(alone)
        for start in range(0, len(texts), args.batch):
            group = order[start : start + args.batch]
            together[group] = model.predict_proba([texts[i] for i in group], batch_size=args.batch)
        flips = int((alone.argmax(1) != together.argmax(1)).sum())
        print(f"  {name:<18} largest probability difference {np.abs(alone - together).max():.1e}, "
              f"labels changed {flips} of {len(texts)}")  # fmt: skip


if __name__ == "__main__":
    main()
