"""``attend monitor run | alerts | dashboard``: thin shells over :mod:`attend.apps.monitor`.

``register_cli(verbs)`` adds the ``monitor`` verb to the ``attend`` parser's sub-parsers; each
command raises ``ValueError`` / ``DataError`` for input a user can fix, which ``attend``'s ``main``
prints as one ``error:`` line (exit 2). :func:`main` does the same on its own, for
``python -m attend.apps.monitor``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from attend.config import flags_named, port_number, thread_count
from attend.jsonout import dumps_json

__all__ = ["add_serve_options", "main", "register_cli", "serve_routers"]


@contextlib.contextmanager
def _log_to_stderr(quiet: bool) -> Iterator[None]:
    """Alert lines (and, unless quiet, progress notes) on stderr for the duration of one command."""
    logger = logging.getLogger("attend.monitor")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


#: ``monitor run``'s detection flags where neither they nor the database (its last run) say otherwise.
RUN_DEFAULTS = {"window": "1h", "z": 3.0, "min_volume": 10, "alpha": 0.2, "warmup": 4, "min_lift": 0.0}


def _detection(args: argparse.Namespace, saved: dict[str, Any] | None = None) -> Any:
    """The run's detection settings: the flags given, else the database's (``saved``: what its last
    run used; a rerun without ``--z`` had put the default back in silence), else :data:`RUN_DEFAULTS`."""
    from attend.apps.monitor.events import parse_window

    given = {name: getattr(args, name) for name in RUN_DEFAULTS if getattr(args, name) is not None}
    if "window" in given:
        given["window"] = parse_window(given["window"])
    defaults = {**RUN_DEFAULTS, "window": parse_window(RUN_DEFAULTS["window"])}
    return _detection_settings({**defaults, **(saved or {}), **given})


def _flagged(flag: str, path: str, loader: Any) -> Any:
    """``loader(path)``, a refused directory named with the flag that gave it (``--topic-model nodir:
    no such model directory``; two model options had given the same bare message)."""
    from attend.io import ModelDirError

    try:
        return loader(path)
    except ModelDirError as exc:
        said = str(exc)
        raise ModelDirError(f"{flag} {said}" if said.startswith(f"{path}:") else f"{flag} {path}: {said}") from None


def _detection_settings(values: dict[str, Any]) -> Any:
    """``DetectionSettings(**values)``, a refused value named as its flag (``--z -1.0: must be ...``, as
    every verb names one)."""
    from attend.apps.monitor.detect import DetectionSettings

    with flags_named(values):
        return DetectionSettings(**values)


#: How the highlighted words are found when --explain-method is not given.
DEFAULT_EXPLAIN_METHOD = "grad_attention"


def _cmd_run(args: argparse.Namespace) -> int:
    from attend.apps.monitor.events import follow_events, read_events, stream_events
    from attend.apps.monitor.monitor import FUTURE_TOLERANCE, Monitor, MonitorSettings, run_events
    from attend.apps.monitor.scoring import Scorer, find_negative_label, load_text_classifier
    from attend.apps.monitor.store import open_store

    # Checked before anything is loaded or written (a refused --max-rate left an empty database).
    for flag, value, fine, rule in (
        ("--threads", args.threads, args.threads >= 0, ">= 0 (0: PyTorch's default)"),
        ("--poll", args.poll, args.poll > 0, "seconds > 0 (0 would look for new lines in a busy loop)"),
        ("--webhook-timeout", args.webhook_timeout, 0 < args.webhook_timeout <= 600, "seconds in (0, 600]"),
        ("--max-rate", args.max_rate, args.max_rate is None or args.max_rate > 0, "events per second > 0"),
        ("--batch-size", args.batch_size, args.batch_size >= 1, ">= 1"),
    ):
        if not fine:  # NaN fails every comparison, so it lands here too
            raise ValueError(f"{flag} {value}: must be {rule}")
    # Checked before anything is loaded or written (the database's thresholds come in once it is open).
    settings = MonitorSettings(detection=_detection(args), examples=args.examples, webhook=args.webhook,
                               webhook_timeout=args.webhook_timeout)  # fmt: skip
    if args.follow and args.events == "-":
        raise ValueError("--follow tails a file; stdin (--events -) is already read as it arrives")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sentiment = _flagged("--model", args.model, functools.partial(load_text_classifier, flag="--model"))
    method = args.explain_method or DEFAULT_EXPLAIN_METHOD
    try:
        scorer = Scorer(sentiment, find_negative_label(sentiment, args.negative_label),
                        topic_model=_flagged("--topic-model", args.topic_model, load_text_classifier) if
                        args.topic_model else None,
                        method=method, words=args.top_words, batch_size=args.batch_size)  # fmt: skip
    except ValueError as exc:  # the method refused is the default, not one the user gave
        said = f"--explain-method {method}:"
        if args.explain_method is not None or not str(exc).startswith(said):
            raise
        raise ValueError(f"--explain-method {method} (the default):{str(exc)[len(said):]}") from None
    total: int | None = None
    if args.events == "-":
        events: Any = stream_events(sys.stdin, fmt=args.format, poll=args.poll)
    elif args.follow:
        events = follow_events(args.events, fmt=args.format, poll=args.poll)
    else:
        events = read_events(args.events, fmt=args.format)  # validated whole before anything is written
        total = len(events)
    store = open_store(args.db)
    saved = store.saved_detection()
    defaults = settings.detection.to_dict()
    settings = dataclasses.replace(settings, detection=_detection(args, saved))
    kept = [name for name in RUN_DEFAULTS if getattr(args, name) is None and saved.get(name, defaults[name]) !=
            defaults[name]]  # fmt: skip
    if kept and not args.quiet:  # --quiet: only alert lines on stderr
        from attend.apps.monitor.events import format_window

        values = settings.detection.to_dict()
        values["window"] = format_window(values["window"])
        shown = ", ".join(f"--{name.replace('_', '-')} {values[name]:g}" if name != "window" else
                          f"--window {values[name]}" for name in kept)  # fmt: skip
        print(f"note: {shown}: {args.db}'s, from its last run (give a flag to change it)", file=sys.stderr)
    with _log_to_stderr(args.quiet), _progress(total, args.quiet) as on_batch:
        monitor = Monitor(store, scorer, settings)  # its notes (another sentiment model) on stderr too
        summary = run_events(monitor, events, batch_size=args.batch_size, max_rate=args.max_rate,
                             finite=not args.follow, on_batch=on_batch)  # fmt: skip
    stored_alerts = store.count_alerts(window=settings.detection.window)
    other = store.count_alerts() - stored_alerts  # alerts of runs with another --window
    other_windows = f" (and {other} of other window lengths)" if other else ""
    conflicts = f" ({summary.conflicts} with a different text: the first kept)" if summary.conflicts else ""
    withdrawn = f", {summary.withdrawn} withdrawn (their windows are no surge now)" if summary.withdrawn else ""
    reinstated = f", {summary.reinstated} reinstated (a surge again)" if summary.reinstated else ""
    print(f"read {summary.read} events: {summary.stored} stored, {summary.duplicates} already stored{conflicts}; "
          f"{len(summary.alerts)} new alert(s){withdrawn}{reinstated}, {stored_alerts} in {args.db}"
          f"{other_windows}")  # fmt: skip
    store.close()
    if summary.times_without_zone:  # a warning about the data, kept with --quiet as the log's warnings are
        print(f"note: {summary.times_without_zone} event time(s) had no time zone and were taken as UTC "
              "(write them with Z or an offset such as +02:00)", file=sys.stderr)  # fmt: skip
    if summary.unreadable:
        print(f"note: {summary.unreadable} event(s) stored unreadable (the first: id {summary.first_unreadable!r}): "
              "no piece of their text is in the sentiment model's vocabulary (all [UNK]: another language or "
              "script?), so their scores are a guess; they are kept, flagged, and counted in no window's volume "
              "or negatives", file=sys.stderr)  # fmt: skip
    if summary.future:
        future_id, future_time = summary.first_future or ("?", "?")
        print(f"note: {summary.future} event(s) dated more than {FUTURE_TOLERANCE // 3600} h after now (the first: "
              f"id {future_id!r}, time {future_time}; a mistyped date?) are stored and counted in their windows, "
              "but close no window: the others are judged as the rest of the stream closes them",
              file=sys.stderr)  # fmt: skip
    streamed = args.follow or args.events == "-"
    if summary.interrupted:  # a stream asked to stop that stops is no failure; a replay of a file stopped is
        rerun = "" if streamed else ", rerun to continue"
        kept = (f"{summary.unstored} event(s) read were not stored (stopped again while they were)"
                if summary.unstored else "every event read is stored")  # fmt: skip
        print(f"stopped (Ctrl-C or SIGTERM); {kept}{rerun}", file=sys.stderr)
    if summary.undelivered:  # said on a stop too (a --follow run had exited 0 with an alert undelivered)
        print(f"error: {summary.undelivered} alert(s) could not be delivered to {args.webhook} (they are kept in "
              f"{args.db}; the next run tries again)", file=sys.stderr)  # fmt: skip
    if summary.interrupted and not streamed:  # a replay stopped: 130, as other verbs, whatever else it says
        return 130
    return 1 if summary.undelivered else 0


@contextlib.contextmanager
def _progress(total: int | None, quiet: bool) -> Iterator[Any]:
    """A progress bar for a replay of known length: redrawn on a terminal, a line at most every 30 s
    in a log (a replay under cron or CI had said nothing until its summary); none for --follow."""
    if total is None or quiet:
        yield None
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    from attend.progress import progress_bar

    with progress_bar(total=total, unit="event", desc="monitor") as bar, logging_redirect_tqdm(
        loggers=[logging.getLogger("attend.monitor")]
    ):
        yield lambda result: bar.update(result.received)


def _cmd_alerts(args: argparse.Namespace) -> int:
    from attend.apps.monitor.monitor import describe
    from attend.apps.monitor.store import open_store

    given = {name: getattr(args, name) for name in ("window", "z", "min_volume", "alpha", "warmup", "min_lift")}
    if not args.preview and any(value is not None for value in given.values()):
        flags = ", ".join(f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None)
        raise ValueError(f"{flags}: thresholds to try, with --preview (the stored alerts are the ones runs raised)")
    store = open_store(args.db, create=False)
    try:
        topics = store.topics()
        if args.topic is not None and args.topic not in topics:
            shown = ", ".join(map(repr, topics[:10])) + (" ..." if len(topics) > 10 else "")
            raise ValueError(f"--topic {args.topic!r}: no event of that topic in {args.db} (its topics: "
                             f"{shown or 'none yet'})")  # fmt: skip
        if args.preview:
            return _preview(store, args, given)
        alerts = store.alerts(topic=args.topic)
    finally:
        store.close()
    if args.json:
        print(dumps_json(alerts))
    elif not alerts:
        print(f"no alerts in {args.db}" + (f" for topic {args.topic!r}" if args.topic is not None else ""))
    else:
        for alert in alerts:
            print(describe(alert))
    return 0


def _preview(store: Any, args: argparse.Namespace, given: dict[str, Any]) -> int:
    """The surges the stored events hold at the thresholds given (the others: the database's), beside
    the stored alerts; nothing is written, and the next run's thresholds are not changed."""
    from attend.apps.monitor.detect import detect
    from attend.apps.monitor.events import format_time, format_window, parse_window

    if given["window"] is not None:
        given["window"] = parse_window(given["window"])
    settings = _detection_settings({**store.saved_detection(), **{k: v for k, v in given.items() if v is not None}})
    stored = store.alert_windows(settings.window)
    series = detect(store.window_counts(settings.window), settings)
    surges = [s for topic, stats in sorted(series.items()) for s in stats
              if s.surge and args.topic in (None, topic)]  # fmt: skip
    found = {(s.topic, s.start) for s in surges}
    # A withdrawn alert is not raised again by a run (its window is judged again only when its counts
    # move): not NEW, and not a live alert either.
    rows = [{**s.to_dict(), "window_start": format_time(s.start), "window_end": format_time(s.end),
             "stored": (s.topic, s.start) in stored and not stored[(s.topic, s.start)][0],
             "withdrawn": (s.topic, s.start) in stored and stored[(s.topic, s.start)][0]} for s in surges]  # fmt: skip
    for row in rows:
        del row["start"], row["end"], row["surge"]
        row["score"] = row.pop("z")  # as a stored alert and the webhook name it
    kept = sorted((topic, start) for (topic, start), (withdrawn, _, _) in stored.items()
                  if not withdrawn and (topic, start) not in found and args.topic in (None, topic))  # fmt: skip
    not_raised = [{"topic": topic, "window_start": format_time(start)} for topic, start in kept]
    if args.json:
        print(dumps_json({"settings": settings.to_dict(), "surges": rows, "stored_not_raised": not_raised}))
        return 0
    print(f"preview of {args.db} (nothing stored): window {format_window(settings.window)}, z >= {settings.z:g}, "
          f"volume >= {settings.min_volume}, min lift {settings.min_lift:g}, EWMA alpha {settings.alpha:g}, "
          f"warmup {settings.warmup}")  # fmt: skip
    for row in rows:
        status = "stored" if row["stored"] else "withdrawn" if row["withdrawn"] else "NEW"
        print(f"{status:<9} topic={row['topic']!r} {row['window_start']}: negative "
              f"{row['share']:.0%} vs baseline {row['baseline']:.0%}, z={row['score']:.1f}, "
              f"{row['negatives']}/{row['volume']} events")  # fmt: skip
    new = sum(not row["stored"] and not row["withdrawn"] for row in rows)
    withdrawn = sum(row["withdrawn"] for row in rows)
    other = store.count_alerts() - store.count_alerts(window=settings.window)
    print(f"{len(rows)} surge(s) at these thresholds: {new} not stored (a run with them would raise those), "
          f"{len(rows) - new - withdrawn} stored already, {withdrawn} stored and withdrawn (a run raises them again "
          f"only if their counts change); {len(not_raised)} stored alert(s) these thresholds would not raise (a run "
          "keeps them: it rewrites no stored alert)" + (f"; {other} alert(s) of other window lengths not compared"
                                                        if other else ""))  # fmt: skip
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from attend.apps.monitor.dashboard import serve_dashboard
    from attend.apps.monitor.events import parse_window

    window = parse_window(args.window) if args.window else None
    serve_dashboard(args.db, host=args.host, port=args.port, window=window)
    return 0


def register_cli(verbs: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``monitor run | alerts | dashboard`` to the ``attend`` command's sub-parsers."""
    monitor = verbs.add_parser("monitor", help="watch a text stream; alert on surges of negative sentiment per topic")
    sub = monitor.add_subparsers(dest="monitor_command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="score a stream of events, store them, and alert on surges")
    run.add_argument("--events", required=True, help="JSONL or CSV file of {id, time, text[, topic, source]}, or -")
    run.add_argument("--format", choices=["jsonl", "csv"], help="events format (default: from the extension)")
    run.add_argument("--model", required=True, help="sentiment model directory (attend train)")
    run.add_argument("--negative-label", help="its negative label (default: the one named negative/neg/rotten/bad)")
    run.add_argument("--topic-model", help="model directory assigning topics to events without one")
    run.add_argument("--db", required=True, help="SQLite file, or a SQLAlchemy URL such as postgresql://...")
    run.add_argument("--window", help="window length: 15m, 1h, 1d, 1w ... (default: the database's, else 1h)")
    run.add_argument("--follow", action="store_true", help="keep reading lines appended to the file (Ctrl-C stops)")
    run.add_argument("--poll", type=float, default=0.5, help="seconds between looks for new lines (0.5)")
    run.add_argument("--z", type=float, help="z-score of the negative share that is a surge (default: the "
                     "database's, else 3)")
    run.add_argument("--min-volume", type=int, help="fewest events in a window to judge it (the database's, else 10)")
    run.add_argument("--alpha", type=float, help="EWMA weight of the newest window (the database's, else 0.2)")
    run.add_argument("--warmup", type=int, help="windows of history before judging any (the database's, else 4)")
    run.add_argument("--min-lift", type=float, help="smallest rise of the share over baseline (the database's, "
                     "else 0)")
    run.add_argument("--webhook", help="POST each new alert as JSON to this URL (and each sent one later withdrawn)")
    run.add_argument("--webhook-timeout", type=float, default=5.0,
                     help="seconds a webhook receiver has to answer before the POST counts as failed (5)")
    run.add_argument("--batch-size", type=int, default=64, help="events per transaction and model call (64)")
    run.add_argument("--max-rate", type=float, help="at most this many events per second (default: no cap)")
    run.add_argument("--explain-method",
                     help="how the highlighted words are found: an `attend explain --method` (grad_attention)")
    run.add_argument("--top-words", type=int, default=4, help="highlighted words kept per event (4)")
    run.add_argument("--examples", type=int, default=3, help="most negative texts kept per alert (3)")
    run.add_argument("--threads", type=thread_count, default=0, help="PyTorch threads (default: PyTorch's)")
    run.add_argument("--quiet", action="store_true", help="only alert lines on stderr, no progress")
    run.set_defaults(func=_cmd_run)

    alerts = sub.add_parser("alerts", help="list the stored alerts")
    alerts.add_argument("--db", required=True, help="SQLite file or SQLAlchemy URL")
    alerts.add_argument("--topic", help="only this topic's alerts")
    alerts.add_argument("--json", action="store_true", help="print a JSON list")
    alerts.add_argument("--preview", action="store_true", help="list the surges the stored events hold at the "
                        "thresholds below (the others: the last run's), beside the stored alerts; nothing is written")
    alerts.add_argument("--window", help="with --preview: window length (default: the last run's)")
    alerts.add_argument("--z", type=float, help="with --preview: z-score of a surge (default: the last run's)")
    alerts.add_argument("--min-volume", type=int, help="with --preview: fewest events in a window judged")
    alerts.add_argument("--alpha", type=float, help="with --preview: EWMA weight of the newest window")
    alerts.add_argument("--warmup", type=int, help="with --preview: windows of history before judging any")
    alerts.add_argument("--min-lift", type=float, help="with --preview: smallest rise of the share over baseline")
    alerts.set_defaults(func=_cmd_alerts)

    dash = sub.add_parser("dashboard", help="serve the monitor's dashboard page (FastAPI)")
    dash.add_argument("--db", required=True, help="SQLite file or SQLAlchemy URL")
    dash.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    dash.add_argument("--port", type=port_number, default=8050, help="port (default 8050)")
    dash.add_argument("--window", help="window length to draw (default: the last run's)")
    dash.set_defaults(func=_cmd_dashboard)
    return monitor


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """``attend serve`` options that mount ``POST /v1/monitor/events``."""
    parser.add_argument("--monitor-db", help="also take POST /v1/monitor/events into this monitor database")
    parser.add_argument("--negative-label", help="with --monitor-db: the served model's negative label "
                        "(default: the one named negative/neg/rotten/bad)")  # fmt: skip
    parser.add_argument("--monitor-topic-model", metavar="DIR", help="with --monitor-db: a model directory giving "
                        "topics to events without one (as `attend monitor run --topic-model`)")  # fmt: skip


def serve_routers(args: argparse.Namespace) -> list[Any]:
    """The routers ``attend serve`` mounts for these options (none without ``--monitor-db``)."""
    from attend.serve import RouterSpec

    if args.monitor_db is None:
        if args.negative_label is not None or args.monitor_topic_model is not None:
            given = "--negative-label" if args.negative_label is not None else "--monitor-topic-model"
            raise ValueError(f"{given} goes with --monitor-db")
        return []
    options = {"db": args.monitor_db, "negative_label": args.negative_label, "topic_model": args.monitor_topic_model}
    return [RouterSpec("attend.apps.monitor.router:served_monitor_router", options)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attend.apps.monitor COMMAND ...``: the same verbs, with ``attend``'s error handling."""
    from attend.apps import run_app_cli

    return run_app_cli("monitor", register_cli, argv)
