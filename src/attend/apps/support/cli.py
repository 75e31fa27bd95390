"""``attend support build`` and ``attend support ask``: thin shells over the library functions.

``register_cli(verbs)`` adds the ``support`` verb to the ``attend`` parser's sub-commands. Each
action only parses, calls :func:`~attend.apps.support.index.build_index` or
:func:`~attend.apps.support.index.ask`, and prints. Bad input raises ``ValueError`` (``DataError``,
``ModelDirError``), which ``attend``'s ``main`` prints as one ``error:`` line with exit code 2.
Heavy imports happen inside the actions, so ``attend --help`` stays fast.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from attend.config import positive_int, seed_number
from attend.jsonout import dumps_json

__all__ = ["add_serve_options", "format_answer", "format_build", "register_cli", "serve_routers"]


def format_build(report: dict[str, Any]) -> str:
    """The build report for people."""
    handoff = report["handoff"]
    # a left-out question that finds another entry with its answer is answered right, not a miss
    shared = f"; {handoff['shared_answers']} entries share an answer" if handoff.get("shared_answers") else ""
    lines = [
        f"indexed {report['entries']} FAQ entries ({report['passages']} answer passages) from {report['faq']}",
        f"encoder: {report['encoder']['model']} (weights {report['encoder']['weights_sha256'][:12]}…)",
        f"hand-off threshold {handoff['threshold']:.3f} ({handoff['method']} on {handoff['answerable_trials']} "
        f"reworded FAQ questions + {handoff['unanswerable_trials']} left-out ones"
        f"{' the encoder reads' if 'lexical_threshold' in handoff else ''}{shared}: "
        f"precision {handoff['precision']:.2f}, recall {handoff['recall']:.2f}, F1 {handoff['f1']:.2f})",
    ]
    intents = report.get("intents")
    if intents:
        accuracy = intents["cv_accuracy"]
        single = ", no cross-validated accuracy (an intent has a single question: none can be held out)"
        scored = f", {intents['cv_folds']}-fold accuracy {accuracy:.2f}" if accuracy is not None else single
        lines.append(f"intents: {len(intents['labels'])} labels from {intents['examples']} questions{scored} "
                     f"({intents['method']})")  # fmt: skip
        if intents.get("note"):
            lines.append(f"note: {intents['note']}")
    else:
        lines.append("intents: none (no intent column)")
    rerank = report.get("rerank")
    if rerank and all(h["reranked_mrr"] is None for h in rerank["halves"]):
        lines.append("re-ranker: not kept (too few entries to hold any out and judge it)")
    elif rerank:
        halves = ", ".join(f"{h['first_stage_mrr']:.3f} -> {h['reranked_mrr']:.3f}" if h["reranked_mrr"] is not None
                           else "none (too few entries)" for h in rerank["halves"])  # fmt: skip
        verdict = "kept" if rerank["used"] else "not kept (it did not win on both halves)"
        lines.append(f"re-ranker: held-out MRR {halves}: {verdict}")
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    retrieval = report.get("retrieval")
    if retrieval:
        from attend.apps.support.fusion import Retrieval

        lines.append(f"ranking: {Retrieval(**retrieval).note()}")
    lines.append(f"written to {report['index_dir']} in {report['seconds']:.1f} s")
    return "\n".join(lines)


def format_answer(reply: dict[str, Any], *, width: int = 100) -> str:
    """One reply for people: the decision first, then the best answer, the alternatives and why."""
    lines = []
    if reply["handoff"]:
        lines.append(f"HAND-OFF to a person: {reply['reason']}")
    answers = reply["answers"]
    best = answers[0]
    heading = "closest FAQ entry" if reply["handoff"] else "answer"
    lines.append(f"{heading} (score {best['score']:.2f}): {best['question']}")
    body = best["answer"] if len(best["answer"]) <= 1200 else best["answer"][:1200].rsplit(" ", 1)[0] + " …"
    for paragraph in body.split("\n\n"):
        # line by line, each with its indentation: wrapped whole, a code block's lines had run together
        for line in paragraph.split("\n"):
            indent = "    " + line[: len(line) - len(line.lstrip())]  # tabs too (a Makefile's had gone)
            lines.extend(textwrap.wrap(line.strip(), width=width, initial_indent=indent, subsequent_indent=indent)
                         or [""])  # fmt: skip
    if len(answers) > 1:
        lines.append("other matches:")
        lines.extend(f"  {rank}. ({a['score']:.2f}) {a['question']}" for rank, a in enumerate(answers[1:], start=2))
    if reply.get("intent") and reply["intent"]["label"] is None:
        lines.append(f"intent: none ({reply['intent']['note'].removeprefix('no intent: ')})")
    elif reply.get("intent"):
        lines.append(f"intent: {reply['intent']['label']} (p={reply['intent']['probability']:.2f})")
    if reply.get("words"):
        shown = ", ".join(f"{w['word']} {w['weight']:.2f}" for w in reply["words"][:6])
        lines.append(f"words that drove the match: {shown}")
    if reply.get("answer_words"):
        shown = ", ".join(f"{w['word']} {w['weight']:.2f}" for w in reply["answer_words"][:6])
        lines.append(f"answer terms it matched: {shown}")
    if reply.get("retrieval"):
        lines.append(f"ranking: {reply['retrieval']['note']}")
    if not reply["handoff"]:
        lines.append(f"confident: {reply['reason']}")
    if reply.get("truncated"):
        lines.append("note: the question was longer than the encoder reads; its start was used")
    return "\n".join(lines)


def _cmd_build(args: argparse.Namespace) -> int:
    from attend.apps.support.index import build_index

    if args.fusion is not None and args.retrieval != "hybrid":  # it had been accepted and changed nothing
        raise ValueError(f"--fusion {args.fusion}: fuses the encoder's and BM25's rankings, for --retrieval hybrid; "
                         f"--retrieval {args.retrieval} ranks by one of them")  # fmt: skip
    report = build_index(
        args.faq,
        args.out,
        model=args.model,
        intents=not args.no_intents,
        question_weight=args.question_weight,
        target_precision=args.target_precision,
        retrieval=args.retrieval,
        fusion=args.fusion or "weighted",
        rerank=not args.no_rerank,
        seed=args.seed,
        progress=not args.json,
        overwrite=args.overwrite,
    )
    print(dumps_json(report) if args.json else format_build(report))
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from attend.apps.support.index import ask

    reply = ask(args.index_dir, " ".join(args.question), k=args.k)
    print(dumps_json(reply) if args.json else format_answer(reply))
    return 0


def register_cli(verbs: Any) -> argparse.ArgumentParser:
    """Add ``support build`` and ``support ask`` to ``verbs`` (the ``attend`` parser's subparsers).

    Returns the ``support`` parser, in case the caller wants to add to it.
    """
    support = verbs.add_parser("support", help="answer customer questions from an FAQ; hand off when unsure")
    actions = support.add_subparsers(dest="support_action", metavar="ACTION")
    actions.required = True

    build = actions.add_parser("build", help="index an FAQ (CSV/JSONL with question,answer[,intent]; Markdown; HTML)")
    build.add_argument("faq", metavar="FAQ_FILE", help="the FAQ: .csv/.tsv/.jsonl/.parquet, .md, .html or .txt (Q:/A: "
                       "lines)")  # fmt: skip
    build.add_argument("--out", required=True, metavar="INDEX_DIR", help="index directory to write")
    build.add_argument("--model", default="minilm",
                       help="'minilm' (pretrained, default) or a fine-tuned attend minilm model directory")  # fmt: skip
    build.add_argument("--no-intents", action="store_true", help="do not train an intent classifier")
    build.add_argument("--question-weight", type=float, default=0.5,
                       help="weight of the stored question vs the answer in a match score (default 0.5)")  # fmt: skip
    build.add_argument("--target-precision", type=float,
                       help="calibrate the hand-off threshold for this precision instead of the best F1")  # fmt: skip
    build.add_argument("--retrieval", choices=["hybrid", "dense", "bm25"], default="hybrid",
                       help="rank by the encoder and BM25 fused (default), the encoder, or BM25")  # fmt: skip
    build.add_argument("--fusion", choices=["weighted", "rrf"],
                       help="hybrid: a weight chosen on the FAQ's questions (default), or reciprocal rank")  # fmt: skip
    build.add_argument("--no-rerank", action="store_true",
                       help="skip the cross-attention re-ranker (else it is kept where it wins on held-out questions)")
    build.add_argument("--seed", type=seed_number, default=0, help="seed of the calibration rewordings (default 0)")
    build.add_argument("--overwrite", action="store_true", help="replace an index already in INDEX_DIR")
    build.add_argument("--json", action="store_true", help="print the build report as one JSON object")
    build.set_defaults(func=_cmd_build)

    ask = actions.add_parser("ask", help="answer a question from an index (or hand off)")
    ask.add_argument("index_dir", metavar="INDEX_DIR", help="an index from `attend support build`")
    ask.add_argument("question", nargs="+", help="the customer's question (quote it, or give its words)")
    ask.add_argument("-k", type=positive_int, default=3, help="answers to rank (default 3)")
    ask.add_argument("--json", action="store_true", help="print one JSON object (answers, intent, words, handoff)")
    ask.set_defaults(func=_cmd_ask)
    return support


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """``attend serve`` options that mount ``POST /v1/support/ask``."""
    parser.add_argument("--support-index", help="also answer POST /v1/support/ask from this FAQ index")


def serve_routers(args: argparse.Namespace) -> list[Any]:
    """The routers ``attend serve`` mounts for these options (none without ``--support-index``)."""
    from attend.serve import RouterSpec

    if args.support_index is None:
        return []
    return [RouterSpec("attend.apps.support.router:served_support_router", {"index": args.support_index})]
