"""FAQ answering on the real Debian FAQ: BM25, attend's MiniLM attention encoder, and their fusion, in one run.

Data: the Debian GNU/Linux FAQ as the Debian packages ``debian-faq`` (English) and
``debian-faq-zh-cn`` (simplified Chinese) install it, split into question/answer pairs by
``scripts/support/debian_faq.py`` (attend's HTML FAQ parser; 153 pairs from 16 chapters in each
language; the chapter is each pair's intent). There is no real customer-query or
customer-intent data set offline, so queries are derived from the FAQ's own questions without
looking at any answer (see :mod:`attend.apps.support.evaluation`): each question as written,
and a reworded search-box form with the first two words and the final punctuation dropped.
Only headings that are questions (end in "?") are queries; every entry stays a candidate.

For each language it:

1. builds the index exactly as ``attend support build`` does (timed), which also calibrates the
   hand-off threshold on the FAQ alone and trains the intent classifier, and times ``ask`` (with
   the driving words) on 20 question queries, one call each after a warm-up call, median per
   query (both through the benchmarks' shared harness, ``benchmarks/harness.py``);
2. ranks *all* answers for every query (the stored questions are not used, or a question would
   find itself): top-1 accuracy and MRR for BM25 (``rank_bm25`` Okapi), the encoder (the index's
   answer score, and its two halves: answer lead only, best passage only), and hybrid retrieval
   (:mod:`attend.apps.support.fusion`): the index's weighted fusion, whose weight the build chooses
   on these same questions (``hybrid``), the same with the weight chosen on the other half of the
   questions (``hybrid_2fold``, the honest figure), and reciprocal-rank fusion (``rrf``); then checks
   the goals: hybrid MRR at least the better of BM25 and the encoder, and top-1 at least both;
3. measures hand-off on two folds: each half of the FAQ indexed and calibrated alone, its
   questions answerable, the other half's questions unanswerable; for the default scoring
   (stored question + answer) and for answers only (``question_weight=0``, where an original
   question is as new to the index as a user's);
4. scores the intent classifier (FAQ chapter) by the build's cross-validation, beside TF-IDF +
   logistic regression on the same folds.

Nothing is tuned here: the scoring, passage size, calibration and rewording rules are fixed in
the library, and the same settings serve both languages. all-MiniLM-L6-v2 was trained on English
only, so the Chinese rows show what happens outside its language, not a tuned result.

5. times ``ask`` (with the words that drove the match) on a 1,000-entry FAQ: the English Debian FAQ's
   entries repeated until there are 1,000 (each copy's question numbered), so that the scoring and
   BM25 run over a thousand entries of real text.

Usage::

    apt-get install -y --no-install-recommends debian-faq debian-faq-zh-cn
    OMP_NUM_THREADS=1 python benchmarks/support.py [--langs en,zh-cn] [--json results.json]

About 5 minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/harness.py, a sibling module

import harness  # noqa: E402
from attend.apps.support.evaluation import (  # noqa: E402
    evaluate_handoff,
    evaluate_rerank,
    evaluate_retrieval,
    question_queries,
)
from attend.apps.support.faq import FaqEntry, read_faq  # noqa: E402
from attend.apps.support.index import INTENT_C, SupportIndex, build_index  # noqa: E402
from attend.io import atomic_write_text  # noqa: E402

#: Sample questions a person might type, shown with the answer, hand-off and driving words.
EXAMPLES = {
    "en": ["how do I find out which package a file belongs to?", "can I sell CDs with Debian on them?",
           "what is the capital of Australia?"],
    "zh-cn": ["如何知道某个文件属于哪个软件包？", "我可以出售 Debian 光盘吗？", "澳大利亚的首都是哪里？"],
}  # fmt: skip


def _debian_faq_module() -> Any:
    spec = importlib.util.spec_from_file_location("debian_faq", ROOT / "scripts" / "support" / "debian_faq.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tfidf_intents(entries: list[FaqEntry], lang: str, folds: int, seed: int) -> float:
    """Cross-validated accuracy of TF-IDF + logistic regression on question -> chapter, same folds."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    labels = sorted({e.intent for e in entries if e.intent is not None})
    texts = [e.question for e in entries if e.intent is not None]
    y = [labels.index(e.intent) for e in entries if e.intent is not None]
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3)) if lang != "en" else TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True)  # fmt: skip
    model = make_pipeline(vectorizer, LogisticRegression(C=INTENT_C, max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, texts, y, cv=splitter).mean())


def run_language(lang: str, workdir: Path, seed: int) -> dict[str, Any]:
    entries = _debian_faq_module().debian_faq(lang)
    faq_file = workdir / f"debian_faq.{lang}.jsonl"
    atomic_write_text(faq_file, "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in entries))
    entries = read_faq(faq_file)  # exactly what the index holds

    with harness.Stopwatch() as build:
        report = build_index(faq_file, workdir / f"index.{lang}", seed=seed, overwrite=True)
    index = SupportIndex.load(workdir / f"index.{lang}")
    tensors = {k: index.tensors[k] for k in ("questions", "heads", "passages", "passage_entry")}

    retrieval = evaluate_retrieval(entries, tensors, index.encoder, seed=seed)
    if index.retrieval.effective == "hybrid":
        rerank = evaluate_rerank(entries, tensors, index.encoder, seed=seed)
        retrieval["hybrid_reranked"] = {form: rerank[form] for form in ("original", "reworded")}
        retrieval["rerank_report"] = rerank["report"]
    handoff = {
        "questions+answers": evaluate_handoff(entries, tensors, index.encoder, question_weight=0.5, seed=seed),
        "answers only": evaluate_handoff(entries, tensors, index.encoder, question_weight=0.0, seed=seed),
        "encoder only": evaluate_handoff(entries, tensors, index.encoder, question_weight=0.5, retrieval="dense",
                                         seed=seed) if index.retrieval.dense_readable else None,
    }
    goals = {}
    for form in ("original", "reworded"):
        hybrid, bm25, dense = (retrieval[k][form] for k in ("hybrid", "bm25", "encoder"))
        goals[f"{form}: hybrid MRR >= max(BM25, encoder)"] = hybrid["mrr"] >= max(bm25["mrr"], dense["mrr"])
        goals[f"{form}: hybrid top-1 >= both"] = hybrid["top1"] >= max(bm25["top1"], dense["top1"])
    intents = report["intents"]
    tfidf = _tfidf_intents(entries, lang, intents["cv_folds"], seed) if intents and intents["cv_folds"] else None

    examples = []
    queries = [q for _, q, _ in question_queries(entries)][:20]
    questions = itertools.cycle(queries)  # the warm-up asks the first, then every one is timed once
    ask = harness.interleave({"ask": lambda: index.ask(next(questions))}, rounds=len(queries), warmup=1)["ask"]
    for question in EXAMPLES.get(lang, []):
        reply = index.ask(question, k=1)
        examples.append({"question": question, "match": reply["answers"][0]["question"],
                         "score": reply["answers"][0]["score"], "handoff": reply["handoff"],
                         "words": [w["word"] for w in reply["words"][:4]]})  # fmt: skip
    return {
        "lang": lang,
        "entries": len(entries),
        "chapters": len({e.intent for e in entries}),
        "queries": len(question_queries(entries)),
        "passages": report["passages"],
        "build_seconds": build.seconds,
        "ask_seconds_median": ask.median,
        "threshold": report["handoff"],
        "retrieval": retrieval,
        "goals": goals,
        "handoff": {name: value for name, value in handoff.items() if value is not None},
        "intents": {
            "labels": len(intents["labels"]),
            "folds": intents["cv_folds"],
            "minilm_logreg": intents["cv_accuracy"],
            "tfidf_logreg": tfidf,
        }
        if intents
        else None,
        "examples": examples,
    }


def format_language(result: dict[str, Any]) -> str:
    r = result["retrieval"]
    lines = [
        f"Debian FAQ ({result['lang']}): {result['entries']} entries from {result['chapters']} chapters "
        f"({result['passages']} answer passages), {result['queries']} question queries; "
        f"index built in {result['build_seconds']:.1f} s, "
        f"ask (with words) {result['ask_seconds_median'] * 1000:.0f} ms",
        "",
        f"retrieval of the right answer among all {result['entries']} answers (stored questions not used)",
        f"{'method':<28}{'original':>16}{'reworded':>18}",
        f"{'':<28}{'top-1':>8}{'MRR':>8}{'top-1':>10}{'MRR':>8}",
    ]
    names = {"bm25": "BM25 (Okapi)", "encoder": "MiniLM encoder (index)", "encoder_lead": "  answer lead only",
             "encoder_passages": "  best passage only", "hybrid": "hybrid (index)",
             "hybrid_2fold": "  weight from other half", "hybrid_reranked": "hybrid + re-ranker",
             "rrf": "reciprocal-rank fusion"}  # fmt: skip
    for key, name in names.items():
        if key not in r:
            continue
        o, w = r[key]["original"], r[key]["reworded"]
        lines.append(f"{name:<28}{o['top1']:>8.3f}{o['mrr']:>8.3f}{w['top1']:>10.3f}{w['mrr']:>8.3f}")
    ratio_o = r["encoder"]["original"]["mrr"] / r["bm25"]["original"]["mrr"]
    ratio_w = r["encoder"]["reworded"]["mrr"] / r["bm25"]["reworded"]["mrr"]
    lines.append(f"{'encoder / BM25 (MRR)':<28}{ratio_o:>15.2f}x{ratio_w:>17.2f}x")
    alpha = r["hybrid"]["alpha"]
    lines.append(f"hybrid ranks by {r['hybrid']['mode']}; encoder weight {alpha['in_sample']:g} (chosen on these "
                 f"questions), {alpha['folds'][0]:g} / {alpha['folds'][1]:g} (chosen on each other half)")  # fmt: skip
    if "rerank_report" in r:
        report = r["rerank_report"]
        halves = ", ".join(
            f"{h['first_stage_mrr']:.3f} -> {h['reranked_mrr']:.3f} (tau {h['tau']:g}, beta {h['beta']:g})"
            for h in report["halves"]
        )
        lines.append(f"re-ranker, held-out halves: {halves}; kept by the build: {report['used']}")
    for goal, met in result["goals"].items():
        lines.append(f"goal {goal}: {'MET' if met else 'NOT MET'}")
    lines += [
        "",
        "hand-off, 2 folds (each half indexed and calibrated alone; the other half's questions are unanswerable)",
        f"{'scoring':<20}{'thresholds':>13}{'answerable original':>24}{'answerable reworded':>24}"
        f"{'unanswerable':>14}{'all answered':>14}",
        f"{'':<20}{'':>13}{'hand-off':>12}{'acc.':>12}{'hand-off':>12}{'acc.':>12}{'hand-off':>14}{'acc.':>14}",
    ]
    for name, h in result["handoff"].items():
        o, w, u = h["answerable"]["original"], h["answerable"]["reworded"], h["unanswerable"]
        thresholds = "/".join(f"{t:.2f}" for t in h["thresholds"])
        lines.append(
            f"{name:<20}{thresholds:>13}{o['handoff_rate']:>12.3f}{o['answered_accuracy']:>12.3f}"
            f"{w['handoff_rate']:>12.3f}{w['answered_accuracy']:>12.3f}{u['handoff_rate']:>14.3f}"
            f"{h['overall_answered_accuracy']:>14.3f}"
        )
    t = result["threshold"]
    lines.append(
        f"full index: threshold {t['threshold']:.3f} ({t['method']}; precision {t['precision']:.2f}, recall "
        f"{t['recall']:.2f}, F1 {t['f1']:.2f} on {t['answerable_trials']} reworded + {t['unanswerable_trials']} "
        "left-out FAQ questions)"
    )
    intents = result["intents"]
    if intents:
        lines.append(
            f"intent = FAQ chapter ({intents['labels']} labels), {intents['folds']}-fold accuracy: MiniLM + logistic "
            f"regression {intents['minilm_logreg']:.3f}, TF-IDF + logistic regression {intents['tfidf_logreg']:.3f}"
        )
    lines.append("examples:")
    for ex in result["examples"]:
        decision = "HAND-OFF" if ex["handoff"] else "answer"
        lines.append(f"  {ex['question']!r} -> {decision} ({ex['score']:.2f}) {ex['match']!r}; words {ex['words']}")
    return "\n".join(lines)


def latency_1000(workdir: Path, seed: int) -> dict[str, Any]:
    """Median ``ask`` time (with the driving words) on a 1,000-entry FAQ of real text (see the module docstring)."""
    base = _debian_faq_module().debian_faq("en")
    entries = [FaqEntry(f"{e.question} ({i // len(base) + 1})", e.answer, e.intent) for i, e in
               zip(range(1000), itertools.cycle(base), strict=False)]  # fmt: skip
    faq_file = workdir / "faq1000.jsonl"
    atomic_write_text(faq_file, "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in entries))
    with harness.Stopwatch() as build:
        build_index(faq_file, workdir / "index1000", seed=seed, intents=False, overwrite=True)
    index = SupportIndex.load(workdir / "index1000")
    queries = [q for _, q, _ in question_queries(base)][:30]
    questions = itertools.cycle(queries)
    timed = harness.interleave({"ask": lambda: index.ask(next(questions)),
                                "ask, no words": lambda: index.ask(next(questions), explain=False)},
                               rounds=len(queries), warmup=2)  # fmt: skip
    return {"entries": len(entries), "build_seconds": build.seconds,
            "ask_ms_median": timed["ask"].median * 1000, "ask_no_words_ms_median": timed["ask, no words"].median * 1000,
            "goal_ms": 30.0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", type=harness.comma_choices(_debian_faq_module().LANGUAGES), default="en,zh-cn",
                        help="comma-separated: en, zh-cn (default both)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of calibration, folds and CV (default 0)")
    parser.add_argument("--threads", type=harness.positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=harness.output_file, help="also write the results here")
    parser.add_argument("--keep", type=harness.output_dir,
                        help="write the JSONL files and indexes here instead of a temporary directory")  # fmt: skip
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for lang in args.langs:
            result = run_language(lang.strip(), workdir, args.seed)
            results.append(result)
            print(format_language(result), end="\n\n", flush=True)
        latency = latency_1000(workdir, args.seed)
        results.append({"latency_1000": latency})
        met = "MET" if latency["ask_ms_median"] <= latency["goal_ms"] else "NOT MET"
        print(f"1,000-entry FAQ (index built in {latency['build_seconds']:.0f} s): ask with the driving words "
              f"{latency['ask_ms_median']:.1f} ms, without {latency['ask_no_words_ms_median']:.1f} ms (median, "
              f"{args.threads} thread(s)); goal <= 30 ms: {met}")  # fmt: skip
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    sys.exit(main())
