"""Unpadded layers vs the padded layout, one run: what skipping padding buys MiniLM (or the encoder).

MiniLM's encoder and the Transformer-encoder classifier run their per-token work on real tokens
only when a batch has padding (``attend.attention.unpad``); ``unpad = False`` on the module that
holds the switch restores the padded layout. Both are
timed on the same batches by the benchmarks' shared harness (``benchmarks/harness.py``: a
warm-up, then interleaved rounds), medians reported, and printed as ratios padded / unpadded:
the ratio of the medians and the median of per-round ratios ("paired"):

1. Inference, one forward per batch of 32 random test texts (what a DataLoader hands a model).
2. ``TorchTextClassifier.predict_proba`` on the whole sample, batch size 32: texts sorted by length and
   cut where padding would cost more than another call; the planner knows that padding costs
   the unpadded model little, so it plans fewer, larger calls there.
3. A served micro-batch: 16 random WordNet glosses (the texts of ``benchmarks/serve_load.py``),
   as one ``predict_proba`` call.
4. One training step (forward, backward, AdamW) on a batch of 32 random training texts.
5. With ``--onnx``: ONNX Runtime, fp32 and dynamic int8, a graph exported padded (``attend
   export``) against one exported with ``--unpad``, on one text at a time, length-sorted
   batches of 32 short test texts, random batches of 32 and 16-gloss calls; logits compared.

Texts come from the model's own splits (``attend train`` records them), or Rotten Tomatoes with
the pretrained MiniLM and an untrained head when no model directory is given.

Usage::

    python benchmarks/unpad.py                    # pretrained MiniLM, Rotten Tomatoes texts
    python benchmarks/unpad.py runs/minilm_rt     # a trained model directory
    python benchmarks/unpad.py runs/minilm_rt --onnx   # also ONNX Runtime, padded vs unpadded graphs
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F

import harness
from attend.attention.unpad import unpadding_modules
from attend.data.datasets import DATASETS, load_dataset
from attend.runtime import TorchTextClassifier, load


def _switch(model: torch.nn.Module) -> torch.nn.Module:
    """The module holding the model's ``unpad`` switch (MiniLM: its encoder; the encoder classifier: itself)."""
    modules = unpadding_modules(model)
    if not modules:
        raise SystemExit(f"{type(model).__name__} cannot skip padding (only MiniLM and the encoder classifier do)")
    return modules[0]


def _compare(
    predictor: TorchTextClassifier, call: Callable[[], object], rounds: int, items: int = 1
) -> tuple[harness.Timing, harness.Timing, harness.Ratio]:
    """Padded and unpadded timings of ``call()`` (interleaved, so drift on a shared machine hits
    both alike), and the ratio padded / unpadded."""
    encoder = _switch(predictor.model)

    def layout(unpad: bool) -> Callable[[], object]:
        def run() -> object:
            encoder.unpad = unpad  # a plain attribute: nothing to time
            return call()

        return run

    try:
        timings = harness.interleave({"padded": layout(False), "unpadded": layout(True)}, rounds=rounds, items=items)
    finally:
        encoder.unpad = True
    padded, unpadded = timings["padded"], timings["unpadded"]
    return padded, unpadded, harness.paired_ratio(padded, unpadded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_model_arguments(parser, what="a MiniLM or encoder model directory")
    parser.add_argument("--texts", type=harness.positive_int, default=512, help="test texts sampled (default 512)")
    parser.add_argument("--onnx", action="store_true", help="also ONNX Runtime: padded vs --unpad graphs (fp32, int8)")
    parser.add_argument("--texts-from", help="a bundled dataset to take texts from (default: the model's own splits; "
                        "needed for `attend demo`'s model, whose splits are not recorded)",
                        choices=[name for name, info in DATASETS.items() if info.task == "classification"])  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = harness.model_dir_or_pretrained(args.model_dir, "unpad")
    if args.texts_from or not args.model_dir:
        train_texts = test_texts = load_dataset(args.texts_from or "rotten_tomatoes").texts
    else:
        from attend.data.readers import DataError
        from attend.data.splits import rebuild_split

        try:
            train_texts, test_texts = rebuild_split(model_dir, "train").texts, rebuild_split(model_dir, "test").texts
        except DataError as exc:
            raise SystemExit(f"{exc}\nname a dataset to take texts from: --texts-from wordnet_topics") from None
    predictor = load(model_dir)
    _switch(predictor.model)  # fails early, naming the model, when it cannot unpad
    rng = random.Random(0)
    sample = rng.sample(test_texts, min(args.texts, len(test_texts)))
    glosses = load_dataset("wordnet_topics").texts
    tokenizer = predictor.tokenizer
    lengths = [len(ids) for ids in tokenizer.ids(sample)]
    print(f"{type(predictor.model).__name__} unpadded vs padded: {model_dir}, {len(sample)} texts "
          f"({statistics.mean(lengths):.1f} tokens on average, longest {max(lengths)}, max_length "
          f"{tokenizer.max_length}), {args.threads} thread(s), {args.rounds} interleaved rounds, medians")  # fmt: skip
    model = predictor.model.eval()
    batches = [tokenizer.encode(sample[i : i + 32]) for i in range(0, len(sample), 32)]
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)

    def forward_all() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(batch)

    served = [rng.sample(glosses, 16) for _ in range(8)]
    rows = [
        (f"forward, random batches of 32 ({real / padded:.0%} real tokens)", forward_all, len(sample)),
        ("predict_proba, batch size 32 (length-planned)", lambda: predictor.predict_proba(sample, batch_size=32),
         len(sample)),
        ("served micro-batch: 16 WordNet glosses, one call",
         lambda: [predictor.predict_proba(texts, batch_size=16) for texts in served], 16 * len(served)),
    ]  # fmt: skip
    print(f"{'':58} {'padded':>14} {'unpadded':>14} {'ratio':>7} {'paired':>7}")
    for label, call, n in rows:
        before, after, ratio = _compare(predictor, call, args.rounds, items=n)
        print(f"{label:58} {before.rate:9.1f} txt/s {after.rate:9.1f} txt/s {ratio.of_medians:6.2f}x "
              f"{ratio.median:6.2f}x")  # fmt: skip

    # Training: the loaded model itself in train mode, AdamW, batches of 32 random training texts
    # (lr 1e-6: the weights hardly move, and the ONNX comparison below exports them both ways).
    train_batches = [tokenizer.encode(rng.sample(train_texts, 32)) for _ in range(4)]
    labels = torch.zeros(32, dtype=torch.long)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    step_index = [0]

    def step() -> None:
        batch = train_batches[step_index[0] % len(train_batches)]
        step_index[0] += 1
        optimizer.zero_grad()
        F.cross_entropy(model(batch).logits, labels).backward()
        optimizer.step()

    before, after, ratio = _compare(predictor, step, max(3, args.rounds // 3))
    real = sum(int(b["attention_mask"].sum()) for b in train_batches) / sum(b["attention_mask"].numel()
                                                                            for b in train_batches)  # fmt: skip
    print(f"{f'training step, 32 random training texts ({real:.0%} real tokens)':58} {1000 * before.median:11.1f} ms "
          f"{1000 * after.median:11.1f} ms {ratio.of_medians:6.2f}x {ratio.median:6.2f}x")  # fmt: skip
    if args.onnx:
        model.eval()
        _onnx(predictor, sample, served, args)
    return 0


def _onnx(predictor: TorchTextClassifier, sample: list[str], served: list[list[str]], args: argparse.Namespace) -> None:
    """ONNX Runtime: the padded graph against the ``--unpad`` one, fp32 and int8, same batches."""
    import numpy as np

    from attend.deploy.export import INT8_FILE, ONNX_FILE, export_onnx
    from attend.deploy.quantization import quantize_onnx_file
    from attend.runtime.onnx import denormals_flushed, session_for

    tokenizer = predictor.tokenizer
    work = harness.temp_dir("unpad-onnx")
    for unpad in (False, True):
        export_onnx(predictor, work / str(unpad), unpad=unpad, threads=args.threads)
        quantize_onnx_file(work / str(unpad) / ONNX_FILE, work / str(unpad) / INT8_FILE)
    short = sorted((ids for ids in tokenizer.ids(sample) if len(ids) <= 32), key=len)[:256]
    cases = {
        "one text at a time (short test texts)": [tokenizer.pad([ids]) for ids in short[::8]],
        "length-sorted batches of 32 short texts": [tokenizer.pad(short[i : i + 32]) for i in range(0, len(short), 32)],
        "random batches of 32": [tokenizer.encode(sample[i : i + 32]) for i in range(0, len(sample), 32)],
        "16 WordNet glosses, one call": [tokenizer.encode(texts) for texts in served],
    }
    print(f"\nONNX Runtime, {args.threads} thread(s): the padded graph vs `attend export --unpad`")
    print(f"{'':58} {'padded':>10} {'unpadded':>10} {'ratio':>7} {'paired':>7} {'max|logit diff|':>16}")
    for precision, name in (("fp32", ONNX_FILE), ("int8", INT8_FILE)):
        sessions = {unpad: session_for(work / str(unpad) / name, threads=args.threads) for unpad in (False, True)}
        for label, batches in cases.items():
            feeds = [{key: b[key].numpy() for key in ("input_ids", "attention_mask")} for b in batches]
            logits = {u: [s.run(["logits"], f)[0] for f in feeds] for u, s in sessions.items()}
            diff = max(float(np.abs(a - b).max()) for a, b in zip(logits[False], logits[True], strict=True))
            calls = {
                "unpadded" if unpad else "padded": lambda s=session, fs=feeds: [s.run(["logits"], f) for f in fs]
                for unpad, session in sessions.items()
            }
            with denormals_flushed():  # as OnnxTextClassifier runs a graph
                timings = harness.interleave(calls, rounds=args.rounds)
            before, after = timings["padded"], timings["unpadded"]
            ratio = harness.paired_ratio(before, after)
            print(f"{f'{precision}, {label}':58} {1000 * before.median:7.1f} ms {1000 * after.median:7.1f} ms "
                  f"{ratio.of_medians:6.2f}x {ratio.median:6.2f}x {diff:16.1e}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
