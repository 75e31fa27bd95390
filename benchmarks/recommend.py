"""The attention recommenders (SASRec, DIN) on MovieLens-100K: quality against the baselines, feature
ablation, how training and top-k grow with the log, and served latency, in one run.

Sections (``--sections``, default all; each prints its table and, where there is one, its goal as
MET / NOT MET):

1. ``goals``: SASRec and DIN trained with the library defaults (``attend recommend train``'s: every
   feature of ``movielens_100k``: title as text, genres as categories, year as a number), printed
   beside every non-neural baseline the library scores on the same test split
   (:mod:`attend.training.baselines`). Goals: SASRec HR@10 >= 1.10 x the best baseline's HR@10 and
   NDCG@10 >= the best baseline's NDCG@10 (the best of each metric over all baselines); DIN AUC >=
   ``bias_lr``'s AUC + 0.01 and GAUC >= ``bias_lr``'s GAUC. Also the faithfulness of each model's
   history weights by erasure (k=3 items, 200 users; :meth:`attend.runtime.Recommender.erasure`) and
   the training time.
2. ``ablation``: each model with item ids only, + genres, + text (title), and all features: the test
   metrics in one table (the README's), each beside the ids-only row. The "all" row is the goals
   model when both sections run (same data, options and seed: the same run).
3. ``scale``: SASRec (item ids only, one epoch) on synthetic logs of 100k, 300k and 1M interactions
   (:func:`synthetic_log`: users and items grow with N, Zipf item popularity, runs of related items,
   increasing timestamps; seeded). Per size: seconds per training epoch, the peak memory of training,
   and the time of one ``top_many`` call for 256 users over the whole catalogue; each as a ratio to
   the smallest size. Memory is resident memory (RSS), what the machine must have (``tracemalloc``
   would miss PyTorch's own allocator). Each size trains in a fresh process and ranks in another;
   each phase's figure is its peak RSS (Linux's high-water mark ``VmHWM``, reset as the phase starts
   by writing 5 to ``/proc/self/clear_refs``) minus the RSS at that moment. Before the phase, the
   process trains (or ranks) once on a 2,000-interaction log, so neither the imports' transient peak
   nor what any run loads once (lazy imports, allocator pools) is counted: the figure is what the
   data and the model add. Where the mark cannot be reset (not Linux), the figure is the process's
   peak since it started, and the table says so. The training process skips the item x item
   baselines (ItemKNN, EASE: dense ``items^2`` matrices, minutes and gigabytes at 16k items) by
   lowering the library's ``DENSE_BASELINE_ITEMS``: they are not what this measures.
4. ``latency``: the goals section's SASRec (or, without it, the same architecture trained one epoch)
   served in this process by uvicorn on a free port (:func:`attend.serve.app.create_app`), once
   micro-batched (``max_batch=32``) and once with ``max_batch=1`` (every request alone, the
   reference). A load generator in a second process (this script with ``--client``; bare asyncio
   HTTP/1.1 as in ``benchmarks/serve_load.py``) runs 32 closed-loop clients sending
   ``POST /v1/recommend {"user", "k": 10}`` for known users, a fixed number of requests per round,
   the two servers alternating in interleaved rounds. Printed: requests/s, p50/p99 latency (every
   request kept), mean batch, and batched / unbatched as paired per-round ratios.

Every time goes through the benchmarks' one timing harness (``benchmarks/harness.py``); every process
gets ``--threads`` PyTorch threads (default 1). ``--quick`` shrinks everything (a 150-user sample of
MovieLens-100K, small models, a few epochs, small synthetic logs, few requests) to check that the
script works in a minute or two; its figures mean nothing.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/recommend.py [--sections goals,ablation,scale,latency] [--json out.json]
    python benchmarks/recommend.py --quick            # does it run? (1-2 minutes)

The full run trains 2 + 6 models to early stopping (SASRec up to 200 epochs) and a 1M-interaction
epoch: hours on one thread; run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # harness.py and serve_load.py, sibling modules

# attend (and torch) are imported where they are used, so that the load generator (this script
# with --client, a second process beside the server) stays light.
import harness  # noqa: E402
from serve_load import _exchange, _free_port  # noqa: E402

SECTIONS = ("goals", "ablation", "scale", "latency")
MODELS = ("sasrec", "din")
#: Feature sets of the ablation: label -> ``features`` of ``train_recommender`` (None: all).
ABLATION: dict[str, list[str] | None] = {
    "ids only": [],
    "+ genres": ["genres"],
    "+ text (title)": ["title"],
    "all (title, genres, year)": None,
}
METRICS = {"sasrec": ("hr@10", "ndcg@10", "mrr@10"), "din": ("auc", "gauc", "logloss")}
NAMES = {"sasrec": "SASRec", "din": "DIN"}
SASREC_HR_FACTOR = 1.10  # goal: HR@10 >= this x the best baseline's
DIN_AUC_MARGIN = 0.01  # goal: AUC >= bias_lr's + this
ERASURE_K = 3
TOPK_USERS = 256
MiB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """What the sections run: the full benchmark, or ``--quick``'s check that the script works.

    Attributes:
        data: ``train_recommender``'s ``data``: the dataset name, or a sample CSV (``--quick``).
        item_features: The sample's item features CSV (None for the dataset, which has its own).
        data_label: How the tables name the data.
        options: Model options per model (None: the library's defaults).
        training: TrainingArgs fields over the library's recommender defaults (e.g. fewer epochs).
        erasure_users: Users of the erasure test.
        scale_sizes: Interactions of the synthetic logs; the first is the reference row.
        topk_rounds: Timed ``top_many`` calls per size.
        requests: Requests per server per round of the load test.
        warmup_requests: Untimed requests per server before the rounds.
        rounds: Rounds of the load test.
    """

    data: str
    item_features: str | None
    data_label: str
    options: dict[str, dict[str, Any] | None]
    training: dict[str, dict[str, Any]]
    erasure_users: int
    scale_sizes: tuple[int, ...]
    topk_rounds: int
    requests: int
    warmup_requests: int
    rounds: int


def full_plan(args: argparse.Namespace) -> Plan:
    epochs = {"epochs": args.epochs} if args.epochs else {}
    return Plan(data="movielens_100k", item_features=None, data_label="MovieLens-100K",
                options={"sasrec": None, "din": None}, training={"sasrec": epochs, "din": epochs},
                erasure_users=args.erasure_users, scale_sizes=tuple(args.scale_sizes), topk_rounds=10,
                requests=args.requests, warmup_requests=200, rounds=args.rounds)  # fmt: skip


def quick_plan(args: argparse.Namespace, workdir: Path) -> Plan:
    """A 150-user sample of MovieLens-100K (written as CSV files: GroupLens forbids shipping it), small models."""
    log, items = movielens_sample(workdir / "sample", users=150)
    return Plan(data=str(log), item_features=str(items), data_label="MovieLens-100K, first 150 users (--quick)",
                options={"sasrec": {"dim": 16, "max_length": 50}, "din": {"dim": 8}},
                training={"sasrec": {"epochs": args.epochs or 10}, "din": {"epochs": args.epochs or 3}},
                erasure_users=20, scale_sizes=(5_000, 10_000, 20_000), topk_rounds=3, requests=150,
                warmup_requests=32, rounds=2)  # fmt: skip


def movielens_sample(directory: Path, users: int) -> tuple[Path, Path]:
    """The first ``users`` users' ratings (``log.csv``) and their films' title, genres, year (``items.csv``)."""
    from attend.data.datasets import load_interactions

    data, features = load_interactions("movielens_100k")
    directory.mkdir(parents=True, exist_ok=True)
    keep = data.users < users
    log, items = directory / "log.csv", directory / "items.csv"
    with open(log, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "timestamp", "rating"])
        for u, i, t, r in zip(data.users[keep], data.items[keep], data.times[keep], data.ratings[keep], strict=True):
            writer.writerow([data.user_ids[u], data.item_ids[i], int(t), int(r)])
    with open(items, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title", "genres", "year"])
        for i in sorted(set(data.items[keep].tolist())):
            year = features.numeric["year"][i]
            writer.writerow([data.item_ids[i], features.text["title"][i], "|".join(features.categorical["genres"][i]),
                             "" if math.isnan(year) else int(year)])  # fmt: skip
    return log, items


# --- training -----------------------------------------------------------------------------------


@dataclass
class Trained:
    """One trained model directory and what its training reported."""

    model: str
    features: list[str] | None
    directory: Path
    metrics: dict[str, Any]  # the test split's, plus best_epoch, epochs_run, seconds_per_epoch
    baselines: dict[str, dict[str, float]]
    minutes: float

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "features": self.features, "metrics": self.metrics,
                "baselines": self.baselines, "train_minutes": self.minutes}  # fmt: skip


@contextlib.contextmanager
def quiet_training(verbose: bool) -> Iterator[None]:
    """Hide the trainer's per-epoch JSON lines on stderr (hundreds per model); pass anything else on."""
    if verbose:
        yield
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip() and not line.startswith('{"epoch"'):
                print(line, file=sys.stderr)


@dataclass
class Models:
    """Trains each (model, features) once per run, so sections that need the same model share it."""

    plan: Plan
    workdir: Path
    threads: int
    verbose: bool
    done: dict[tuple[str, tuple[str, ...] | None], Trained] = field(default_factory=dict)

    def train(self, model: str, features: list[str] | None) -> Trained:
        from attend.apps.recommend.pipeline import evaluate_recommender, train_recommender

        key = (model, None if features is None else tuple(features))
        if key in self.done:
            return self.done[key]
        name = "all" if features is None else "-".join(features) or "ids"
        out = self.workdir / "models" / f"{model}-{name}"
        training = {"progress": False, "threads": self.threads, **self.plan.training[model]}
        print(f"  training {NAMES[model]} ({feature_label(features)}) ...", end="", flush=True)
        with harness.Stopwatch() as watch, quiet_training(self.verbose):
            result = train_recommender(self.plan.data, out, model=model, item_features=self.plan.item_features,
                                       features=features, model_options=self.plan.options[model], training=training,
                                       overwrite=True)  # fmt: skip
        baselines = evaluate_recommender(out)["baselines"]
        trained = Trained(model, features, out, dict(result.metrics), baselines, watch.seconds / 60)
        m = result.metrics
        print(f" {trained.minutes:.1f} min, epochs run {m['epochs_run']} (best {m['best_epoch']}, "
              f"{m['seconds_per_epoch']:.1f} s each)", flush=True)  # fmt: skip
        self.done[key] = trained
        return trained


def ratio(value: float, reference: float) -> float:
    """``value / reference``, NaN where the reference is 0 (an untrained model's NDCG) or missing."""
    return value / reference if reference and not math.isnan(reference) else math.nan


def times(factor: float) -> str:
    """``"1.23x"``, or ``"n/a"`` for NaN."""
    return "n/a" if math.isnan(factor) else f"{factor:.2f}x"


def feature_label(features: list[str] | None) -> str:
    return "all features" if features is None else ", ".join(features) or "item ids only"


# --- 1. goals -----------------------------------------------------------------------------------


def sasrec_goals(metrics: dict[str, Any], baselines: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    best_hr = max(baselines.items(), key=lambda kv: kv[1]["hr@10"])
    best_ndcg = max(baselines.items(), key=lambda kv: kv[1]["ndcg@10"])
    need_hr = SASREC_HR_FACTOR * best_hr[1]["hr@10"]
    return {
        f"HR@10 >= {SASREC_HR_FACTOR:.2f} x best baseline's ({best_hr[0]})": {
            "value": metrics["hr@10"], "target": need_hr, "met": metrics["hr@10"] >= need_hr},
        f"NDCG@10 >= best baseline's ({best_ndcg[0]})": {
            "value": metrics["ndcg@10"], "target": best_ndcg[1]["ndcg@10"],
            "met": metrics["ndcg@10"] >= best_ndcg[1]["ndcg@10"]},
    }  # fmt: skip


def din_goals(metrics: dict[str, Any], baselines: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    reference = baselines["bias_lr"]
    need_auc = reference["auc"] + DIN_AUC_MARGIN
    return {
        f"AUC >= bias_lr's + {DIN_AUC_MARGIN}": {"value": metrics["auc"], "target": need_auc,
                                                 "met": metrics["auc"] >= need_auc},
        "GAUC >= bias_lr's": {"value": metrics["gauc"], "target": reference["gauc"],
                              "met": metrics["gauc"] >= reference["gauc"]},
    }  # fmt: skip


def run_goals(models: Models, plan: Plan) -> dict[str, Any]:
    from attend.apps.recommend.pipeline import evaluate_recommender

    results: dict[str, Any] = {}
    for model in MODELS:
        trained = models.train(model, None)
        with harness.Stopwatch() as watch:
            faithfulness = evaluate_recommender(trained.directory, erasure=ERASURE_K,
                                                users=plan.erasure_users)["faithfulness"]  # fmt: skip
        goals = (sasrec_goals if model == "sasrec" else din_goals)(trained.metrics, trained.baselines)
        results[model] = {**trained.to_json(), "goals": goals, "faithfulness": faithfulness,
                          "erasure_seconds": watch.seconds}  # fmt: skip
        print_goals(model, trained, goals, faithfulness, plan, watch.seconds)
    return results


def print_goals(model: str, trained: Trained, goals: dict[str, dict[str, Any]], faithfulness: dict[str, Any],
                plan: Plan, erasure_seconds: float) -> None:  # fmt: skip
    keys = METRICS[model]
    lead = keys[0]
    lower_is_better = {"logloss"}
    rows = [[NAMES[model], *(f"{trained.metrics[k]:.4f}" for k in keys), "1.00"]]
    for name, row in trained.baselines.items():
        rows.append([name, *(f"{row.get(k, math.nan):.4f}" for k in keys),
                     f"{ratio(trained.metrics[lead], row.get(lead, math.nan)):.2f}"])  # fmt: skip
    protocol = "leave-one-out, full ranking" if model == "sasrec" else "last 20% of each user's events"
    harness.print_table(
        f"{NAMES[model]} vs baselines on {plan.data_label} (test split: {protocol})",
        ["model", *(k.upper() for k in keys), f"{NAMES[model]} {lead.upper()} / row's"],
        rows,
        [f"trained with all features in {trained.minutes:.1f} min: epochs run {trained.metrics['epochs_run']}, "
         f"best {trained.metrics['best_epoch']}, {trained.metrics['seconds_per_epoch']:.1f} s per epoch",
         *(f"{k.upper()}: lower is better" for k in keys if k in lower_is_better)],
    )  # fmt: skip
    for goal, check in goals.items():
        print(f"goal {NAMES[model]} {goal}: {check['value']:.4f} vs {check['target']:.4f}: "
              f"{'MET' if check['met'] else 'NOT MET'}")  # fmt: skip
    f = faithfulness
    print(f"erasure faithfulness ({f['users']} users, k={f['k']}): removing the {f['k']} history items weighted most "
          f"lowers the top item's score by {f['drop_top_k']:.4f}, removing {f['k']} random ones by "
          f"{f['drop_random_k']:.4f} (gap {f['gap']:+.4f}; top-k lowers it more for {f['top_k_beats_random']:.0%} "
          f"of users; {erasure_seconds:.0f} s)", flush=True)  # fmt: skip


# --- 2. ablation --------------------------------------------------------------------------------


def run_ablation(models: Models, plan: Plan) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for model in MODELS:
        rows = {label: models.train(model, features) for label, features in ABLATION.items()}
        results[model] = {label: t.to_json() for label, t in rows.items()}
        keys = METRICS[model]
        lead = "ndcg@10" if model == "sasrec" else "auc"
        reference = rows["ids only"].metrics[lead]
        table = []
        for label, t in rows.items():
            change = (times(ratio(t.metrics[lead], reference)) if model == "sasrec"
                      else f"{t.metrics[lead] - reference:+.4f}")  # fmt: skip
            table.append([label, *(f"{t.metrics[k]:.4f}" for k in keys), change,
                          f"{t.metrics['best_epoch']}/{t.metrics['epochs_run']}", f"{t.minutes:.1f}"])  # fmt: skip
        change_header = f"{lead.upper()} vs ids" if model == "sasrec" else "AUC - ids"
        harness.print_table(
            f"{NAMES[model]} feature ablation on {plan.data_label} (test split)",
            ["features", *(k.upper() for k in keys), change_header, "best/run epochs", "minutes"],
            table,
            ["text = the title embedded once by frozen MiniLM; genres = categories; year = a number",
             "same split, seed and training settings in every row"],
        )  # fmt: skip
    return results


# --- 3. scale -----------------------------------------------------------------------------------

#: Synthetic logs: interactions per user and per item (ML-100K has 106 and 59), the shortest user
#: log, item popularity's Zipf exponent, the chance that an interaction continues the previous one's
#: run of related items, and the mean gap between a user's interactions.
PER_USER, PER_ITEM, MIN_PER_USER, ZIPF_S, CONTINUE, MEAN_GAP_S = 100, 60, 5, 1.0, 0.5, 3600.0


def synthetic_log(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, timestamps)`` of ``n`` interactions, in time order.

    ``n / 100`` users with log-normal activity (at least 5 interactions each), ``n / 60`` items with
    Zipf(1) popularity (popularity rank independent of the item's index). Sequential structure: each
    interaction either starts a run with a popularity draw or, with probability 0.5, continues the
    previous one's run with the item 1 to 3 indices further on (a series, the next episode), so the
    order carries information a sequence model can use. Each user's timestamps increase (exponential
    gaps, at least 1 s) from a start spread over a year.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, n // PER_USER), max(20, n // PER_ITEM)
    activity = rng.lognormal(0.0, 1.0, n_users)
    lengths = MIN_PER_USER + rng.multinomial(n - MIN_PER_USER * n_users, activity / activity.sum())
    users = np.repeat(np.arange(n_users), lengths)
    user_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -ZIPF_S
    fresh = rng.permutation(n_items)[rng.choice(n_items, size=n, p=popularity / popularity.sum())]
    new_run = rng.random(n) >= CONTINUE
    new_run[user_start] = True
    step = np.where(new_run, 0, rng.integers(1, 4, size=n))
    run_start = np.flatnonzero(new_run)[np.cumsum(new_run) - 1]  # (n,) where each interaction's run began
    walked = np.cumsum(step)
    items = (fresh[run_start] + walked - walked[run_start]) % n_items
    gaps = np.floor(rng.exponential(MEAN_GAP_S, n)) + 1
    elapsed = np.cumsum(gaps)
    times = (rng.integers(0, 365 * 86400, n_users)[users] + elapsed - elapsed[user_start][users]).astype(np.int64)
    times += 1_000_000_000
    order = np.argsort(times, kind="stable")
    return users[order], items[order], times[order]


def write_log(path: Path, users: np.ndarray, items: np.ndarray, times: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("user,item,timestamp\n")
        handle.writelines(f"u{u},i{i},{t}\n" for u, i, t in zip(users.tolist(), items.tolist(), times.tolist(),
                                                                   strict=True))  # fmt: skip


class PhaseMemory:
    """Resident memory one phase of this process adds at its peak (see the module docstring).

    Made at the start of the phase: resets the high-water mark and notes the RSS; :meth:`peak_mb` is
    the mark since, minus that RSS.
    """

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM reset per phase"
        except OSError:
            self.method = "ru_maxrss since the process started"
        self.start_mb = self._status("VmRSS")

    @staticmethod
    def _status(name: str) -> float:
        """A ``/proc/self/status`` size in MiB; without /proc, the peak RSS from ``getrusage``."""
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1]) / 1024  # kB
        except OSError:
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / MiB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux

    def peak_mb(self) -> float:
        return self._status("VmHWM") - self.start_mb

    def to_json(self) -> dict[str, Any]:
        return {"phase_peak_mb": self.peak_mb(), "rss_at_start_mb": self.start_mb, "method": self.method}


WARMUP_INTERACTIONS = 2_000


def _train_one_epoch(data: str | Path, out: str | Path, threads: int) -> Any:
    from attend.apps.recommend.pipeline import train_recommender

    with quiet_training(False):
        return train_recommender(str(data), out, model="sasrec", features=[], overwrite=True,
                                 training={"epochs": 1, "progress": False, "threads": threads})  # fmt: skip


def child_train(data: str, out: str, warmup: str, threads: int) -> dict[str, Any]:
    """In a fresh process: SASRec, item ids only, one epoch; its time and the memory it took.

    A first run on the small warm-up log (``warmup/log.csv``) pays for what any run loads once
    (modules imported lazily, allocator pools), so the measured phase shows what the data and model add.
    """
    import attend.training.tasks.recommendation as recommendation

    recommendation.DENSE_BASELINE_ITEMS = 0  # skip ItemKNN and EASE (see the module docstring)
    _train_one_epoch(Path(warmup) / "log.csv", Path(warmup) / "sasrec", threads)
    memory = PhaseMemory()
    with harness.Stopwatch() as watch:
        result = _train_one_epoch(data, out, threads)
    config = json.loads((Path(out) / "config.json").read_text(encoding="utf-8"))
    return {"seconds_per_epoch": result.metrics["seconds_per_epoch"], "train_seconds": watch.seconds,
            "users": config["data"]["users"], "items": config["data"]["items"], "memory": memory.to_json()}  # fmt: skip


def child_topk(out: str, warmup: str, threads: int, rounds: int) -> dict[str, Any]:
    """In a fresh process: load the model, time ``top_many`` for 256 known users (k=10, whole catalogue).

    Users are drawn with replacement where the log has fewer than 256. The warm-up model (trained by
    :func:`child_train`) is loaded and asked first, for the reason given there.
    """
    from attend.apps.recommend.pipeline import load_recommender

    def requests_for(runtime: Any) -> list[dict[str, Any]]:
        users = random.Random(0).choices(runtime.user_ids, k=TOPK_USERS)
        return [{"user": user, "k": 10} for user in users]

    with harness.torch_threads(threads):
        warm = load_recommender(Path(warmup) / "sasrec")
        warm.top_many(requests_for(warm))
        del warm
        memory = PhaseMemory()
        runtime = load_recommender(out)
        requests = requests_for(runtime)
        timing = harness.interleave({"top_many": lambda: runtime.top_many(requests)}, rounds=rounds, warmup=1,
                                    items=len(requests))["top_many"]  # fmt: skip
    return {"topk": timing.to_json(), "topk_seconds": timing.median, "batch": len(requests),
            "memory": memory.to_json()}  # fmt: skip


def _run_child(arguments: list[str], threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, *arguments, "--threads", str(threads)], capture_output=True,
                          text=True, env=env)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(arguments[:2])} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_scale(plan: Plan, workdir: Path, threads: int, seed: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    warmup = workdir / "scale" / "warmup"
    warmup.mkdir(parents=True, exist_ok=True)
    write_log(warmup / "log.csv", *synthetic_log(WARMUP_INTERACTIONS, seed + 1))
    for n in plan.scale_sizes:
        directory = workdir / "scale" / str(n)
        directory.mkdir(parents=True, exist_ok=True)
        with harness.Stopwatch() as watch:
            write_log(directory / "log.csv", *synthetic_log(n, seed))
        print(f"  {n:,} interactions: log written in {watch.seconds:.1f} s; training one epoch ...", end="", flush=True)
        train = _run_child(["--child", "train", "--child-data", str(directory / "log.csv"), "--child-out",
                            str(directory / "sasrec"), "--child-warmup", str(warmup)], threads)  # fmt: skip
        print(f" {train['train_seconds']:.0f} s in all; top-k ...", end="", flush=True)
        topk = _run_child(["--child", "topk", "--child-out", str(directory / "sasrec"), "--child-warmup", str(warmup),
                           "--child-rounds", str(plan.topk_rounds)], threads)  # fmt: skip
        print(" done", flush=True)
        rows.append({"interactions": n, "train": train, "topk": topk})
    first = rows[0]

    def growth(row: dict[str, Any], value: float, reference: float) -> str:
        factor = ratio(value, reference)
        if math.isnan(factor) or factor <= 0:
            return "n/a"
        if row is first:
            return f"{factor:.2f}"
        return f"{factor:.2f} (N^{math.log(factor) / math.log(row['interactions'] / first['interactions']):.2f})"

    table = []
    for row in rows:
        train, topk = row["train"], row["topk"]
        memory = train["memory"]["phase_peak_mb"]
        row["train_memory_mb"] = memory
        row["topk_memory_mb"] = topk["memory"]["phase_peak_mb"]
        table.append([
            f"{row['interactions']:,}", f"{train['users']:,}", f"{train['items']:,}",
            f"{train['seconds_per_epoch']:.1f}", growth(row, train["seconds_per_epoch"],
                                                         first["train"]["seconds_per_epoch"]),
            f"{memory:.0f}", growth(row, memory, first["train_memory_mb"]),
            harness.format_seconds(topk["topk_seconds"]), growth(row, topk["topk_seconds"],
                                                                 first["topk"]["topk_seconds"]),
            f"{row['topk_memory_mb']:.0f}",
        ])  # fmt: skip
    harness.print_table(
        f"SASRec (item ids only) on synthetic logs: growth with N ({threads} thread(s))",
        ["interactions", "users", "items", "s/epoch", "x first", "train MB", "x first",
         f"top_many({TOPK_USERS})", "x first", "top-k MB"],
        table,
        ["s/epoch: the training loop of one epoch (dev evaluation excluded), default SASRec (dim 64, 50 positions, "
         "full softmax over the catalogue, which grows with N)",
         f"train MB / top-k MB: peak RSS of the phase ({first['train']['memory']['method']}) minus the RSS when it "
         f"began ({first['train']['memory']['rss_at_start_mb']:.0f} MB, imports done), a fresh process per size "
         f"and phase, after a warm-up run on {WARMUP_INTERACTIONS:,} interactions; the training process skipped "
         "ItemKNN/EASE",
         f"top_many: {TOPK_USERS} known users, k=10 over the whole catalogue, median of {plan.topk_rounds} calls",
         "x first: ratio to the first row; N^e: the exponent e with ratio = (N / N_first)^e"],
    )  # fmt: skip
    return {"rows": rows}


# --- 4. latency ---------------------------------------------------------------------------------


@dataclass
class InProcessServer:
    """A uvicorn server for one app, on a free port, in a thread of this process."""

    app: Any
    port: int = field(default_factory=_free_port)
    server: Any = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> InProcessServer:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit(f"the server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=60)


def _recommend_request(host: str, user: str, k: int = 10) -> bytes:
    body = json.dumps({"user": user, "k": k}).encode()
    head = (f"POST /v1/recommend HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


async def _fixed_load(url: str, users: list[str], clients: int, requests: int, seed: int) -> dict[str, Any]:
    """``clients`` closed-loop clients (kept-alive connections) send ``requests`` requests in all."""
    host, port = url.removeprefix("http://").split(":")
    bodies = [_recommend_request(f"{host}:{port}", user) for user in users]
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def client(i: int) -> None:
        nonlocal errors, remaining
        rng = random.Random(seed * 1000 + i)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    ok = await _exchange(reader, writer, rng.choice(bodies)) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"seconds": time.perf_counter() - start, "latencies": latencies, "errors": errors}


def client_main(spec_path: str) -> dict[str, Any]:
    """The load generator (a second process): warm-up, then interleaved rounds over the servers."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    targets: dict[str, str] = spec["targets"]
    for url in targets.values():
        asyncio.run(_fixed_load(url, spec["users"], spec["clients"], spec["warmup"], seed=0))
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(spec["rounds"]):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            rounds[name].append(asyncio.run(_fixed_load(targets[name], spec["users"], spec["clients"],
                                                        spec["requests"], seed=r + 1)))  # fmt: skip
    return rounds


def _serving_model(models: Models, plan: Plan) -> Path:
    """The goals section's SASRec if it was trained; else the same architecture trained for one epoch."""
    if ("sasrec", None) in models.done:
        return models.done[("sasrec", None)].directory
    one_epoch = dataclasses.replace(plan, training={**plan.training, "sasrec": {"epochs": 1}})
    quick_one = Models(one_epoch, models.workdir / "latency", models.threads, models.verbose)
    return quick_one.train("sasrec", None).directory


def run_latency(models: Models, plan: Plan, workdir: Path, threads: int, clients: int) -> dict[str, Any]:
    from attend.apps.recommend.pipeline import load_recommender
    from attend.serve import ServeSettings
    from attend.serve.app import create_app

    runtime = load_recommender(_serving_model(models, plan))
    settings = {"micro-batched (max_batch 32)": ServeSettings(max_batch=32, max_wait_ms=5.0, threads=threads),
                "unbatched (max_batch 1)": ServeSettings(max_batch=1, max_wait_ms=5.0, threads=threads)}  # fmt: skip
    apps = {name: create_app(runtime, s) for name, s in settings.items()}
    users = random.Random(0).sample(runtime.user_ids, min(500, len(runtime.user_ids)))
    print(f"  load: {clients} clients, {plan.requests} requests per server per round, {plan.rounds} rounds, "
          f"after {plan.warmup_requests} warm-up requests each; server threads {threads}", flush=True)  # fmt: skip
    with harness.torch_threads(threads), contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(InProcessServer(app)) for name, app in apps.items()}
        spec = {"targets": {name: s.url for name, s in servers.items()}, "users": users, "clients": clients,
                "requests": plan.requests, "warmup": plan.warmup_requests, "rounds": plan.rounds}  # fmt: skip
        spec_path = workdir / "load.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        rounds = _run_child(["--client", str(spec_path)], 1)
    results: dict[str, Any] = {}
    timings: dict[str, harness.Timing] = {}
    for name, runs in rounds.items():
        # One sample per round: seconds per request (1 / throughput), so ratios pair round by round.
        timings[name] = harness.Timing(name, [run["seconds"] / plan.requests for run in runs])
        latency = harness.Timing("request", [x for run in runs for x in run["latencies"]])
        registry = apps[name].state.metrics.registry
        batches = registry.get_sample_value("attend_batch_size_count") or math.nan
        model_seconds = registry.get_sample_value("attend_inference_seconds_sum", {"route": "/v1/recommend"})
        results[name] = {
            "throughput_rps": timings[name].rate, "p50_ms": latency.quantile(0.5) * 1000,
            "p99_ms": latency.quantile(0.99) * 1000, "mean_ms": latency.mean * 1000,
            "errors": sum(run["errors"] for run in runs), "requests": len(latency.samples),
            "mean_batch": (registry.get_sample_value("attend_batch_size_sum") or math.nan) / batches,
            "model_ms_per_call": 1000 * (model_seconds or math.nan) / batches,
            "seconds_per_request": timings[name].to_json(),
        }  # fmt: skip
    batched, unbatched = settings  # the names, in order
    speedup = harness.paired_ratio(timings[unbatched], timings[batched])
    rows = [[name, f"{r['throughput_rps']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['mean_batch']:.1f}",
             f"{r['model_ms_per_call']:.2f}", str(r["errors"])] for name, r in results.items()]  # fmt: skip
    harness.print_table(
        f"served SASRec, POST /v1/recommend (k=10, known users), {clients} concurrent clients",
        ["server", "req/s", "p50 ms", "p99 ms", "mean batch", "model ms/call", "errors"],
        rows,
        ["req/s: median over rounds; p50/p99: every request of every round",
         f"catalogue {runtime.num_items} items, SASRec {runtime.model.config.dim} dims, "
         f"{runtime.max_length} positions; load from a second process"],
    )  # fmt: skip
    p50 = results[unbatched]["p50_ms"] / results[batched]["p50_ms"]
    p99 = results[unbatched]["p99_ms"] / results[batched]["p99_ms"]
    print(f"micro-batched / unbatched throughput: {speedup.fmt()} (paired per round; ratio of medians "
          f"{speedup.of_medians:.2f}); unbatched / micro-batched latency: p50 {p50:.2f}x, p99 {p99:.2f}x",
          flush=True)  # fmt: skip
    return {"servers": results, "throughput_ratio": speedup.to_json(), "p50_ratio": p50, "p99_ratio": p99,
            "clients": clients}  # fmt: skip


# --- main ---------------------------------------------------------------------------------------


def _size(text: str) -> int:
    """A log size, integer or like ``1e6``, >= 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"must be a number of interactions >= 1, not {text!r}")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sections", type=harness.comma_choices(SECTIONS), default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)}")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="shrink everything: does the script run? (1-2 minutes)")
    parser.add_argument("--threads", type=harness.positive_int, default=1,
                        help="PyTorch threads of every process (default 1)")  # fmt: skip
    parser.add_argument("--json", type=harness.output_file, help="also write every result here")
    parser.add_argument("--epochs", type=harness.positive_int, help="epochs of goals/ablation (default: the library's)")
    parser.add_argument("--erasure-users", type=harness.positive_int, default=200,
                        help="users of the erasure test (default 200)")  # fmt: skip
    parser.add_argument("--scale-sizes", type=harness.comma_list(_size), default=[100_000, 300_000, 1_000_000],
                        help="interactions of the synthetic logs (default 100000,300000,1000000)")  # fmt: skip
    parser.add_argument("--clients", type=harness.positive_int, default=32,
                        help="concurrent clients of the load test (default 32)")  # fmt: skip
    parser.add_argument("--requests", type=harness.positive_int, default=2000,
                        help="requests per server per round (default 2000)")  # fmt: skip
    parser.add_argument("--rounds", type=harness.positive_int, default=3, help="rounds of the load test (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic logs (default 0)")
    parser.add_argument("--keep", type=harness.output_dir,
                        help="write data and models here instead of a temporary directory")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show the trainer's per-epoch lines")
    parser.add_argument("--child", choices=("train", "topk"), help=argparse.SUPPRESS)
    parser.add_argument("--child-data", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-warmup", help=argparse.SUPPRESS)
    parser.add_argument("--child-rounds", type=harness.positive_int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        print(json.dumps(client_main(args.client)))
        return 0
    if args.child == "train":
        print(json.dumps(child_train(args.child_data, args.child_out, args.child_warmup, args.threads)))
        return 0
    if args.child == "topk":
        print(json.dumps(child_topk(args.child_out, args.child_warmup, args.threads, args.child_rounds)))
        return 0

    import torch

    from attend.io import atomic_write_text

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if not k.startswith("child")
                                            and k != "client"}}  # fmt: skip
    print(f"recommenders benchmark: sections {', '.join(args.sections)}{' (--quick)' if args.quick else ''}; "
          f"{args.threads} thread(s), torch {torch.__version__}; load average at start {os.getloadavg()[0]:.2f}",
          flush=True)  # fmt: skip
    with harness.Stopwatch() as total, tempfile.TemporaryDirectory(prefix="attend-recommend-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        plan = quick_plan(args, workdir) if args.quick else full_plan(args)
        results["plan"] = dataclasses.asdict(plan)
        models = Models(plan, workdir, args.threads, args.verbose)
        if "goals" in args.sections:
            print("\n[1/4] goals", flush=True)
            results["goals"] = run_goals(models, plan)
        if "ablation" in args.sections:
            print("\n[2/4] feature ablation", flush=True)
            results["ablation"] = run_ablation(models, plan)
        if "scale" in args.sections:
            print("\n[3/4] scale", flush=True)
            results["scale"] = run_scale(plan, workdir, args.threads, args.seed)
        if "latency" in args.sections:
            print("\n[4/4] served latency", flush=True)
            results["latency"] = run_latency(models, plan, workdir, args.threads, args.clients)
    results["seconds"] = total.seconds
    print(f"\ndone in {total.seconds / 60:.1f} min; load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2, default=_json_default) + "\n")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    sys.exit(main())
