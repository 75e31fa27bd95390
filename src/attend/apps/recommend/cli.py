"""``attend recommend train|evaluate|top|explain``: thin shells over :mod:`attend.apps.recommend.pipeline`.

Bad input raises ``ValueError`` (``DataError``, ``ModelDirError``), which ``attend``'s ``main``
prints as one ``error:`` line with a non-zero exit code. Heavy imports happen inside the actions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from attend.config import flags_named, positive_int, seed_number, thread_count
from attend.jsonout import dumps_json

__all__ = ["add_serve_options", "format_evaluation", "format_top", "register_cli", "serve_routers"]


def format_evaluation(report: dict[str, Any]) -> str:
    """The model's test figures and every baseline's, one row each."""
    from attend.training.tasks.recommendation import figure_table, repeat_targets_note

    keys = list(report["metrics"])
    lines = [f"{report['model']} on the {report.get('split') or 'test'} split: {report.get('protocol') or ''}", "",
             *figure_table(report["model"], report["metrics"], report["baselines"], keys)]  # fmt: skip

    repeats = report.get("repeat_targets") or {}
    note = repeat_targets_note(repeats.get("targets"), repeats.get("users"), repeats.get("top_hr@10"))
    if note:
        lines += ["", note]
    faith = report.get("faithfulness")
    if faith and not faith["users"]:
        lines += ["", f"erasure: {faith['note']}"]
    elif faith:
        lines.append("")
        top, random = _moves(faith["drop_top_k"], "the top item's score"), _moves(faith["drop_random_k"], "it")
        lines.append(f"erasure ({faith['users']} users, k={faith['k']}): removing the top-{faith['k']} weighted "
                     f"history items {top}, removing {faith['k']} random ones {random} (gap {faith['gap']:+.4f}; "
                     f"top-k lowers it more for {faith['top_k_beats_random']:.0%} of users)")  # fmt: skip
    return "\n".join(lines)


def _moves(drop: float, what: str) -> str:
    """A mean drop in words: "lowers ... by -0.0004" had been said where the score rose."""
    return f"lowers {what} by {drop:.4f}" if drop >= 0 else f"raises {what} by {-drop:.4f}"


def format_top(answer: dict[str, Any], names: dict[str, str], *, asides: bool = True) -> str:
    """A ranked list for people, with the history items behind each when explained; ``asides``: the
    answer's note and warning first (the CLI says them on stderr instead, :func:`_say_aside`)."""
    lines = [f"{kind}: {answer[kind]}" for kind in ("note", "warning") if asides and answer.get(kind)]
    for rank, row in enumerate(answer["items"], start=1):
        title = names.get(row["item"])
        lines.append(f"{rank:>3}. {row['item']}{f'  {title}' if title else ''}  (score {row['score']:.4f})")
        if row.get("history"):
            # with each one's place in the history, as explain says it: an item seen twice had been named twice
            why = ", ".join(f"{names.get(h['item'], h['item'])} (#{h['position']}) {h['weight']:.3f}"
                            for h in row["history"][:3])  # fmt: skip
            lines.append(f"       because of: {why}")
    from attend.data.validation import displayable

    return displayable("\n".join(lines))  # item names are the user's text: no ESC sequence, no bidi override


def _names(runtime: Any) -> dict[str, str]:
    return dict(getattr(runtime, "names", {}) or {})


def _cmd_train(args: argparse.Namespace) -> int:
    from attend.apps.recommend.pipeline import _is_dataset, train_recommender
    from attend.config import read_run_config
    from attend.data.datasets import dataset_columns_error

    columns = {"user_col": args.user_col, "item_col": args.item_col, "time_col": args.time_col,
               "rating_col": args.rating_col}  # fmt: skip
    named: dict[str, str | None] = {k: v for k, v in columns.items() if v is not None}  # the rest: the API's defaults
    if named and _is_dataset(args.data):  # even at a log's default value (the API's check cannot tell them apart)
        name, value = next(iter(named.items()))
        raise dataset_columns_error(f"--{name.replace('_', '-')}", value, args.data, "a log file")
    if named.get("time_col") == "none":
        named["time_col"] = None
    config = read_run_config(args.config)
    training = dict(config.get("training", {}))
    for name in ("epochs", "seed", "threads", "batch_size", "lr"):
        value = getattr(args, name)
        if value is not None:
            training[name] = value
    flagged = {name for name in ("epochs", "seed", "threads", "batch_size", "lr", "positive_threshold")
               if getattr(args, name) is not None}  # fmt: skip
    if args.no_progress:
        training["progress"] = False
    model_options = dict(config.get("model", {}))
    if args.fusion is not None:
        model_options["fusion"] = args.fusion
    features = None if args.features is None else [
        c.strip() for c in args.features.split(",") if c.strip() and c.strip() != "none"
    ]
    with flags_named(flagged):  # a flag's value refused by the API is named as the flag (``--lr -1.0: ...``)
        result = train_recommender(
            args.data, args.out, model=args.model, item_features=args.item_features,
            feature_types=_types(args.feature_types), features=features, model_options=model_options,
            training=training, resume=args.resume, overwrite=args.overwrite,
            positive_threshold=args.positive_threshold, **named,
        )  # fmt: skip
    if not result.is_main:
        return 0
    print(result.report)
    print(f"\nmodel written to {result.model_dir}")
    config = json.loads((Path(result.model_dir) / "config.json").read_text(encoding="utf-8"))
    for note in config.get("data", {}).get("notes") or []:  # how the files were read (dropped rows, missing items)
        print(f"note: {note}", file=sys.stderr)
    return 0


def _types(value: str | None) -> dict[str, str] | None:
    """``title=text,year=categorical`` as a dict; a part without ``=`` is an error naming it."""
    if value is None:
        return None
    types = {}
    for part in (p.strip() for p in value.split(",") if p.strip()):
        column, sep, kind = part.partition("=")
        if not sep or not column.strip() or not kind.strip():
            raise ValueError(f"--feature-types: {part!r} is not COLUMN=TYPE (text, categorical or numeric)")
        types[column.strip()] = kind.strip()
    return types


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from attend.apps.recommend.pipeline import evaluate_recommender

    report = evaluate_recommender(args.model_dir, erasure=args.erasure)
    print(dumps_json(report) if args.json else format_evaluation(report))
    return 0


def _history(args: argparse.Namespace) -> list[str] | None:
    """``--history I1,I2,...``, or ``--history-file`` (one id per line: ids may hold commas)."""
    if getattr(args, "history_file", None) is not None:
        from attend.data.readers import DataError

        try:
            lines = Path(args.history_file).read_text(encoding="utf-8-sig").splitlines()  # a BOM is no id
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"--history-file {args.history_file}: cannot read it ({exc})") from None
        return [line.strip() for line in lines if line.strip()]
    value = args.history
    if value is None:
        return None
    if not value.strip():  # --history "": no history (a new user's popularity ranking), as it had been
        return []
    items = [item.strip() for item in value.split(",")]
    if blank := [place for place, item in enumerate(items, start=1) if not item]:  # dropped in silence, it had been
        raise ValueError(f"--history {value!r}: item {blank[0]} of {len(items)} is empty (ids are separated by "
                         "commas; give an id that holds one in --history-file, one per line)")  # fmt: skip
    return items


def _cmd_top(args: argparse.Namespace) -> int:
    from attend.apps.recommend.pipeline import load_recommender

    if args.user is None and args.history is None and args.history_file is None:
        raise ValueError("give --user, --history or --history-file: whose recommendations?")
    if args.html:  # before any work: not over the model's files or a file that is no page
        from attend.io import check_page_path

        check_page_path("--html", args.html, model_dir=args.model_dir)
    runtime = load_recommender(args.model_dir)
    # The HTML page is "the explained recommendations": --html brings the explanations with it.
    explain = args.explain or bool(args.html)
    answer = runtime.top(args.user, _history(args), k=args.k, explain=explain).to_dict()
    answer["model"] = runtime.kind
    if args.html:
        from attend.apps.recommend.render import render_recommendations

        render_recommendations(answer, args.html, names=_names(runtime))
        print(f"HTML page: {Path(args.html).resolve()}", file=sys.stderr)
        if not args.explain:  # the page explains; what is printed is what was asked for
            answer["items"] = [{k: v for k, v in row.items() if k not in ("history", "history_not_read",
                                                                         "history_not_listed")}
                               for row in answer["items"]]  # fmt: skip
    if not args.json:
        _say_aside(answer)
    print(dumps_json(answer) if args.json else format_top(answer, _names(runtime), asides=False))
    return 0


def _say_aside(answer: dict[str, Any]) -> None:
    """An answer's note and warning on stderr, as every verb's (on stdout they had been read as results
    by a pipe: `recommend top ... | cut` took in "warning: ..." lines)."""
    from attend.data.validation import displayable

    for kind in ("note", "warning"):
        if answer.get(kind):
            print(displayable(f"{kind}: {answer[kind]}"), file=sys.stderr)


def _cmd_explain(args: argparse.Namespace) -> int:
    from attend.apps.recommend.pipeline import load_recommender

    if args.html:  # before any work: not over the model's files or a file that is no page
        from attend.io import check_page_path

        check_page_path("--html", args.html, model_dir=args.model_dir)
    runtime = load_recommender(args.model_dir)
    answer = runtime.explain(args.user, args.item.strip(), _history(args))
    if args.html:
        from attend.apps.recommend.render import render_recommendations

        render_recommendations(answer, args.html, names=_names(runtime), title=f"Why {args.item}")
        print(f"HTML page: {Path(args.html).resolve()}", file=sys.stderr)
    if args.json:
        print(dumps_json(answer))
        return 0
    _say_aside({"warning": answer.get("warning")})  # as top says it: the weights are over the known items only
    names = _names(runtime)
    seen = " (already in the history)" if answer["in_history"] else " (already rated)" if answer.get("rated") else ""
    from attend.data.validation import displayable

    print(displayable(f"{names.get(answer['item'], answer['item'])}: score {answer['score']:.4f}, rank "
                      f"{answer['rank']}{seen}"))  # fmt: skip
    for row in answer["history"][:10]:
        print(displayable(f"  {row['weight']:>8.4f}  {names.get(row['item'], row['item'])}  (#{row['position']})"))
    if len(answer["history"]) > 10:
        print(f"  ... and {len(answer['history']) - 10} more history items of smaller weight (--json lists every one)")
    _say_aside({"note": answer.get("note")})
    return 0


def register_cli(verbs: Any) -> argparse.ArgumentParser:
    """Add ``recommend train|evaluate|top|explain`` to the ``attend`` parser's sub-commands."""
    recommend = verbs.add_parser("recommend", help="SASRec / DIN recommenders on an interaction log, and why")
    actions = recommend.add_subparsers(dest="recommend_action", metavar="ACTION")
    actions.required = True

    train = actions.add_parser("train", help="train SASRec (next item) or DIN (likes) on a user,item,timestamp log")
    train.add_argument("data", metavar="DATA", help="log file (.csv/.tsv/.jsonl/.parquet) or a dataset name "
                       "(movielens_100k)")  # fmt: skip
    train.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    train.add_argument("--model", choices=["sasrec", "din"],
                       help="default sasrec (with --resume, the interrupted run's)")  # fmt: skip
    train.add_argument("--item-features", metavar="FILE", help="item,... file of text/categorical/numeric features")
    train.add_argument("--features", metavar="COLS",
                       help="feature columns to use, comma-separated ('none': ids only; default all)")  # fmt: skip
    train.add_argument("--feature-types", metavar="COL=TYPE,...",
                       help="override the inferred type of feature columns: text, categorical or numeric")  # fmt: skip
    train.add_argument("--fusion", choices=["gated", "attention"], help="how item modalities fuse (default gated)")
    train.add_argument("--user-col", metavar="C", help="default user")
    train.add_argument("--item-col", metavar="C", help="default item")
    train.add_argument("--time-col", metavar="C",
                       help="epoch seconds or ISO-8601 times (default timestamp); 'none': the file's order is "
                       "the time order")  # fmt: skip
    train.add_argument("--rating-col", metavar="C", help="ratings (din needs them; default 'rating' for din)")
    train.add_argument("--positive-threshold", type=float, metavar="X",
                       help="din: rating >= X is a like (default 4)")  # fmt: skip
    train.add_argument("--epochs", type=positive_int, help="default 200 (sasrec) / 30 (din), early-stopped on dev")
    train.add_argument("--batch-size", type=positive_int, help="default 128 (sasrec) / 256 (din)")
    train.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    train.add_argument("--seed", type=seed_number, help="seed of every RNG (default 0)")
    train.add_argument("--threads", type=thread_count, help="PyTorch threads (default: one per core)")
    train.add_argument("--config", help="JSON with 'model' and 'training' sections")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run writing --out")
    train.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    evaluate = actions.add_parser("evaluate", help="test figures of the model and the baselines (same split)")
    evaluate.add_argument("model_dir", metavar="DIR")
    erasure_help = "also test the history weights: drop the top-K weighted items vs K random ones"
    evaluate.add_argument("--erasure", type=positive_int, metavar="K", help=erasure_help)
    evaluate.add_argument("--json", action="store_true", help="one JSON object: protocol, metrics, baselines")
    evaluate.set_defaults(func=_cmd_evaluate)

    top = actions.add_parser("top", help="the k best items for a user or a history")
    top.add_argument("model_dir", metavar="DIR")
    top.add_argument("--user", help="a user id from the training log")
    who = top.add_mutually_exclusive_group()
    who.add_argument("--history", metavar="I1,I2,...",
                     help="item ids, oldest first: a new user's, or with --user after that user's log")  # fmt: skip
    who.add_argument("--history-file", metavar="FILE",
                     help="as --history, one item id per line (ids with commas; blank lines skipped)")
    top.add_argument("--k", type=positive_int, default=10, help="items to return (default 10)")
    top.add_argument("--explain", action="store_true", help="add the history items behind each recommendation")
    top.add_argument("--html", metavar="FILE", help="write the explained recommendations as an HTML page")
    top.add_argument("--json", action="store_true", help="one JSON object")
    top.set_defaults(func=_cmd_top)

    explain = actions.add_parser("explain", help="why an item scores as it does for a user: the history weights")
    explain.add_argument("model_dir", metavar="DIR")
    explain.add_argument("--user", help="a user id from the training log")
    histories = explain.add_mutually_exclusive_group()
    histories.add_argument("--history", metavar="I1,I2,...",
                           help="item ids, oldest first (instead of or after --user)")  # fmt: skip
    histories.add_argument("--history-file", metavar="FILE", help="as --history, one item id per line")
    explain.add_argument("--item", required=True, help="the item to explain")
    explain.add_argument("--html", metavar="FILE", help="write an HTML page")
    explain.add_argument("--json", action="store_true", help="one JSON object")
    explain.set_defaults(func=_cmd_explain)
    return recommend


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Recommender directories are served by their task's route (``POST /v1/recommend``): no options."""


def serve_routers(args: argparse.Namespace) -> list[Any]:
    """Nothing beyond the task's own route."""
    return []
