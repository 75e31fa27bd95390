"""PyTorch's CPU dropout against ``attend.attention.dropout`` (16-bit mask draws), one run.

Both are timed by the benchmarks' shared harness (``benchmarks/harness.py``: a warm-up, then
interleaved rounds) and printed as ratios PyTorch / ours (above 1: ours is faster):

1. The op alone, forward and backward, on the activations of a translator's feed-forward layer
   (64 sentences x 20 tokens x 1,024) and of its residual stream (x 256).
2. Training steps (forward, backward, AdamW) of the default translator on real ``tatoeba_en_de``
   batches (64 pairs of similar length), and of the default encoder classifier and the
   pretrained MiniLM on ``wordnet_topics`` batches of 32 glosses (the Trainer's length-grouped
   batches, 16 spread over the first epoch). Each contender has its own copy of the model; both
   see the same batches in the same order.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/dropout.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F
from torch import nn

import harness
from attend.attention import dropout as dropout_module
from attend.models import build


def _pytorch_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    return F.dropout(x, p, training)


def _with(kind: str, call: Callable[[], object]) -> Callable[[], object]:
    """``call`` with the models' dropout routed to PyTorch's (``"pytorch"``) or kept (``"ours"``)."""
    ours = dropout_module.dropout

    def run() -> object:
        if kind == "pytorch":
            dropout_module.dropout = _pytorch_dropout
        try:
            return call()
        finally:
            dropout_module.dropout = ours

    return run


def _op_rows(rounds: int) -> list[list[str]]:
    rows = []
    for width in (1024, 256):
        x = torch.randn(64, 20, width, requires_grad=True)

        def step(fn: Callable[..., torch.Tensor], x: torch.Tensor = x) -> None:
            fn(x, 0.1, True).sum().backward()

        timings = harness.interleave({"pytorch": lambda s=step: s(_pytorch_dropout),
                                      "ours": lambda s=step: s(dropout_module.dropout)}, rounds=rounds)  # fmt: skip
        ratio = harness.paired_ratio(timings["pytorch"], timings["ours"])
        rows.append([f"op: 64 x 20 x {width}, forward + backward", harness.format_seconds(timings["pytorch"].median),
                     harness.format_seconds(timings["ours"].median), ratio.fmt()])  # fmt: skip
    return rows


def _train_step(model: nn.Module, batches: list[dict[str, torch.Tensor]], loss: Callable[..., torch.Tensor]):
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    position = {"i": 0}

    def step() -> None:
        batch = batches[position["i"] % len(batches)]
        position["i"] += 1
        value = loss(model, batch)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()

    return step


def _step_rows(rounds: int) -> list[list[str]]:
    from attend.training.tasks.classification import ClassificationTask
    from attend.training.tasks.seq2seq import TRANSLATION_DEFAULTS, TranslationTask
    from attend.training.trainer import TrainingArgs, epoch_batches

    runs = {
        "translator (default shape), 64 tatoeba_en_de pairs": (TranslationTask("tatoeba_en_de"),
                                                               TrainingArgs(**TRANSLATION_DEFAULTS)),
        "encoder (default shape), 32 WordNet glosses": (ClassificationTask("wordnet_topics", model="encoder"),
                                                        TrainingArgs()),
        "minilm (pretrained), 32 WordNet glosses": (ClassificationTask("wordnet_topics", model="minilm"),
                                                    TrainingArgs()),
    }  # fmt: skip
    rows = []
    for label, (task, args) in runs.items():
        task.prepare(args, None)
        order = epoch_batches(task.train_size, args, 0, None, task.lengths())
        batches = [task.train_batch(order[i]) for i in range(0, len(order), max(1, len(order) // 16))][:16]
        torch.manual_seed(0)
        model = build(task.model_config())
        model.train()
        steps = {kind: _with(kind, _train_step(copy.deepcopy(model), batches, task.loss))
                 for kind in ("pytorch", "ours")}  # fmt: skip
        timings = harness.interleave(steps, rounds=rounds)
        ratio = harness.paired_ratio(timings["pytorch"], timings["ours"])
        rows.append([f"training step: {label}", harness.format_seconds(timings["pytorch"].median),
                     harness.format_seconds(timings["ours"].median), ratio.fmt()])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=harness.positive_int, default=2)
    parser.add_argument("--rounds", type=harness.positive_int, default=15)
    args = parser.parse_args()
    with harness.torch_threads(args.threads):
        rows = _op_rows(args.rounds * 4) + _step_rows(args.rounds)
    harness.print_table(
        f"Dropout: PyTorch's CPU kernel vs 16-bit mask draws ({args.threads} thread(s), {args.rounds} interleaved "
        "rounds of training steps, medians)",
        ["what", "PyTorch", "ours", "PyTorch / ours (paired, IQR)"],
        rows,
        ["every model's dropout layers and attention-weight dropout outside the fused SDPA kernel use ours on CPU"],
    )


if __name__ == "__main__":
    main()
