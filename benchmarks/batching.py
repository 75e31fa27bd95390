"""Padding-aware batches vs one padded batch: what the length planner buys a call of mixed-length texts.

``predict`` (and every served micro-batch) tokenises its texts once, sorts them by token count and
cuts them where the padding saved outweighs the cost of one more model call
(``attend.data.batching.length_batches``). This times, on the same texts in interleaved rounds
(``benchmarks/harness.py``), calls of 32 random WordNet glosses run

1. as one padded batch (every text padded to the longest), and
2. through ``predict_proba``: the planner's batches.

Both with the model's per-token layers unpadded (the default) and with the padded layout (``unpad =
False``), for which the planner prices padding at a whole token. Printed as texts/s and the ratio
planned / one batch (the ratio of the medians and the median of per-round ratios). Probabilities
of the two ways are compared too.

Usage::

    python benchmarks/batching.py                 # pretrained MiniLM with an untrained head, one thread
    python benchmarks/batching.py runs/minilm_rt  # a trained MiniLM or encoder directory
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

import harness
from attend.attention.unpad import unpadding_modules
from attend.data.batching import CALL_COST_TOKENS, length_batches
from attend.data.datasets import load_dataset
from attend.runtime import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_model_arguments(parser, what="a model directory")
    parser.add_argument("--calls", type=harness.positive_int, default=8, help="calls per round (default 8)")
    parser.add_argument("--batch", type=harness.positive_int, default=32, help="texts per call (default 32)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = harness.model_dir_or_pretrained(args.model_dir, "batching")
    predictor = load(model_dir)
    if predictor.batch_dependent:
        raise SystemExit(f"{model_dir}: this runtime runs each text alone, so there is nothing to plan")
    glosses = load_dataset("wordnet_topics").texts
    rng = random.Random(0)
    calls = [rng.sample(glosses, args.batch) for _ in range(args.calls)]
    tokenizer = predictor.tokenizer
    lengths = [len(ids) for texts in calls for ids in tokenizer.ids(texts)]
    print(f"{type(predictor.model).__name__}: {model_dir}, {args.calls} calls of {args.batch} random WordNet glosses "
          f"({statistics.mean(lengths):.1f} tokens on average, longest {max(lengths)}), {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds, medians")  # fmt: skip
    switches = unpadding_modules(predictor.model)

    def one_batch() -> list[np.ndarray]:
        return [predictor.probabilities(tokenizer.encode(texts)) for texts in calls]

    def planned() -> list[np.ndarray]:
        return [predictor.predict_proba(texts, batch_size=args.batch) for texts in calls]

    layouts = [("unpadded layers", True), ("padded layers", False)] if switches else [("", True)]
    print(f"{'':34} {'one batch':>14} {'planned':>14} {'ratio':>7} {'paired':>7} {'batches/call':>13}")
    for name, unpad in layouts:
        for module in switches:
            module.unpad = unpad
        try:
            call_cost = CALL_COST_TOKENS / predictor.padding_cost
            plans = [length_batches([len(ids) for ids in tokenizer.ids(texts)], args.batch, call_cost=call_cost)
                     for texts in calls]  # fmt: skip
            worst = max(float(np.abs(a - b).max()) for a, b in zip(one_batch(), planned(), strict=True))
            timings = harness.interleave({"one": one_batch, "planned": planned}, rounds=args.rounds,
                                         items=args.batch * args.calls)  # fmt: skip
        finally:
            for module in switches:
                module.unpad = True
        ratio = harness.paired_ratio(timings["one"], timings["planned"])
        label = f"{args.batch} texts a call" + (f", {name}" if name else "")
        print(f"{label:34} {timings['one'].rate:8.1f} txt/s {timings['planned'].rate:8.1f} txt/s "
              f"{ratio.of_medians:6.2f}x {ratio.median:6.2f}x {statistics.mean(len(p) for p in plans):13.1f}"
              f"   (largest probability difference {worst:.1e})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
