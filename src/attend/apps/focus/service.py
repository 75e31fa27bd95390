"""The focus assistant's verbs as library calls: triage, start, stop, status, feedback, digest.

The CLI (:mod:`attend.apps.focus.cli`) and the HTTP router (:mod:`attend.apps.focus.router`) are
thin shells over these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from attend.apps.focus.assistant import UNREADABLE_REASON, Costs, Decision, FeatureStats, FocusAssistant, Session
from attend.apps.focus.digest import build_digest
from attend.apps.focus.store import FocusStore, SessionError, open_focus_store
from attend.data.messages import Message, message_id
from attend.data.validation import text_problem

__all__ = ["FocusService", "check_unique_ids", "triage"]


def triage(task: str, messages: Sequence[Message], *, allow: Sequence[str] = (), costs: Costs | None = None,
           assistant: FocusAssistant | None = None,
           progress: Callable[[int], None] | None = None) -> list[Decision]:  # fmt: skip
    """Stateless triage: one decision per message, in order (no session, no learning); ``progress`` is
    called with the number of messages each batch read."""
    assistant = assistant if assistant is not None else FocusAssistant(costs=costs)
    return assistant.triage(Session(task, allow), messages, progress=progress)


def _passes_whatever_taught(message: dict[str, Any]) -> str | None:
    """Why answering ``hold`` to ``message`` cannot hold messages like it, if it cannot: it passed on
    the allowlist, or because the encoder cannot read it."""
    components, reasons = message["components"], message["reasons"] or [""]
    if message["decision"] != "pass":
        return None
    if components.get("allowlist") is not None:
        return (f"it passed on the allowlist ({components['allowlist']!r}), which always gets through, whatever is "
                "taught: start a session without that entry to have such messages held")  # fmt: skip
    if reasons[0].startswith(UNREADABLE_REASON):
        return ("it passed as unreadable (a language or script the encoder was not trained on), and such messages "
                "always pass, whatever is taught: the answer counts in its sender's record, which weighs their "
                "messages the encoder can read")  # fmt: skip
    return None


class StoredIdTaken(ValueError):
    """``messages[index]`` has the id of a message stored in the session with another text or sender."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(f"messages[{index}]: {detail}")
        self.index, self.detail = index, detail


def check_unique_ids(messages: Sequence[Message]) -> None:
    """Refuse a batch in which two messages have one id (given, or derived from the same message):
    an answer's id names one message."""
    seen: dict[str, int] = {}
    for i, message in enumerate(messages):
        if message.id in seen:
            raise ValueError(f"messages[{i}] has the id {message.id!r} of messages[{seen[message.id]}] (given, or "
                             "derived from the same text, sender, subject and time); give each message its own id")
        seen[message.id] = i


class FocusService:
    """A focus database and the assistant that fills it.

    Args:
        db: SQLite path or SQLAlchemy URL.
        assistant: The assistant (loaded on first need when None: ``start``/``stop``/``status`` do
            not load MiniLM).
        create: Create the database if missing.
    """

    def __init__(
        self, db: str | os.PathLike[str], *, assistant: FocusAssistant | None = None, create: bool = True
    ) -> None:
        self.store: FocusStore = open_focus_store(db, create=create)
        self._assistant = assistant

    @property
    def assistant(self) -> FocusAssistant:
        if self._assistant is None:
            self._assistant = FocusAssistant()
        return self._assistant

    def close(self) -> None:
        self.store.close()

    def start(self, task: str, *, allow: Sequence[str] = (), until: str | None = None) -> dict[str, Any]:
        allow = Session(task, allow).allow  # validates (one string is refused, not read letter by letter)
        with self.store.updating():  # "none running" and the insert, as one step across processes
            return self.store.start_session(task, allow, until)

    def stop(self, *, forget: bool = False) -> dict[str, Any]:
        with self.store.updating():
            session = self.store.stop_session(forget=forget)
        return {"session": session, "stats": self.store.stats(session["id"])}

    def status(self) -> dict[str, Any]:
        session = self.store.active_session() or self.store.last_session()
        out: dict[str, Any] = {"running": bool(session and session["stopped_at"] is None), "session": session,
                               "all_sessions": self.store.stats()}  # fmt: skip
        if session is not None:
            out["stats"] = self.store.stats(session["id"])
            recent = self.store.messages(session_id=session["id"])[-10:]
            out["recent"] = [{k: m[k] for k in ("id", "sender", "subject", "decision", "score", "feedback")}
                             for m in recent]  # fmt: skip
        return out

    def ingest(self, messages: Sequence[Message], *, progress: Callable[[int], None] | None = None,
               mail: bool = False) -> list[Decision]:  # fmt: skip
        """Triage ``messages`` in the running session and store the decisions (one transaction);
        ``progress`` is called with the number of messages done: those stored before, then each batch read.

        A message under a stored message's id with another text or sender is refused (:class:`StoredIdTaken`),
        unless ``mail``: the messages are mails, whose ids are Message-IDs their reader cannot change, and
        such a mail is triaged under the id its content gives (:func:`~attend.data.messages.message_id`),
        as reading one mailbox treats a reused Message-ID. A list's footer added to a mail had refused every
        later ingest of its mailbox."""
        session = self.store.active_session()
        if session is None:
            raise SessionError("no focus session is running: start one with `attend focus start --task TEXT`")
        check_unique_ids(messages)
        self.assistant  # noqa: B018 - load the encoder before taking the lock
        with self.store.updating():
            return self._ingest(session, messages, progress, mail)

    def _ingest(self, session: dict[str, Any], messages: Sequence[Message],
                progress: Callable[[int], None] | None, mail: bool) -> list[Decision]:  # fmt: skip
        person = self.store.person(self.assistant.reader.dim)
        stored = self.store.session_messages(session["id"], [m.id for m in messages])

        def taken(m: Message) -> bool:
            return m.id in stored and (stored[m.id]["text"], stored[m.id]["sender"]) != (m.text, m.sender)

        if mail and any(taken(m) for m in messages):
            # The stored mail is itself wherever it is in the batch (its reader may have given it its content's
            # id, another mail there holding its Message-ID first: it had been triaged a second time); any
            # other mail under a stored Message-ID gets its content's id.
            same = {(row["text"], row["sender"]): key for key, row in stored.items()}

            def derived(m: Message) -> bool:  # the id its reader gave it from its content, not a Message-ID
                return m.id == message_id(m.text, m.sender, m.subject, m.time)

            messages = [replace(m, id=same[(m.text, m.sender)]) if derived(m) and (m.text, m.sender) in same else
                        replace(m, id=message_id(m.text, m.sender, m.subject, m.time)) if taken(m) else m
                        for m in messages]  # fmt: skip
            check_unique_ids(messages)
            stored = self.store.session_messages(session["id"], [m.id for m in messages])
        for index, m in enumerate(messages):
            if taken(m):
                # Another message under a stored one's id (a numbering per export starts again at 1):
                # "stored once" would drop it unseen, and feedback on the id would teach the old one.
                raise StoredIdTaken(index, (
                    f"message id {m.id!r} is stored in this session already, for a message with another "
                    f"{'text' if stored[m.id]['text'] != m.text else 'sender'}: an id names one message; give this one "
                    "its own id, or leave ids out and each is derived from its message"
                ))  # fmt: skip
        fresh = [m for m in messages if m.id not in stored]  # a message seen before is not traffic twice
        if progress is not None and len(fresh) < len(messages):
            progress(len(messages) - len(fresh))  # stored before: done, with nothing to read
        pool = FeatureStats.from_dict(self.store.traffic(session["id"]))
        session_ = Session(session["task"], tuple(session["allow"]))
        decided = {d.id: d for d in self.assistant.triage(session_, fresh, person=person, pool=pool,
                                                                progress=progress)}
        # A message sent again gets the decision it was given, as stored, counted and taught: deciding it
        # again had answered PASS for a message the database, the statistics and feedback held.
        decided |= {message_id: Decision.from_stored(row) for message_id, row in stored.items()}
        decisions = [decided[m.id] for m in messages]
        self.store.add_decisions(session["id"], messages, decisions, traffic=pool.to_dict())
        return decisions

    def feedback(self, message_id: str, label: str) -> dict[str, Any]:
        """Learn the person's ``pass``/``hold`` for a stored message, online, and persist it."""
        if label not in ("pass", "hold"):
            raise SessionError(f"feedback {label!r}: say pass or hold")
        if (problem := text_problem(message_id)) is not None and "surrogate" in problem:
            # bytes that were not UTF-8 on a command line: the database's codec error had been the message
            raise ValueError(f"message id {message_id!r} {problem}")
        with self.store.updating():
            return self._feedback(message_id, label)

    def _feedback(self, message_id: str, label: str) -> dict[str, Any]:
        message = self.store.message(message_id)
        embedding = self.store.embedding(message_id, message["session_id"])
        if not embedding:
            raise SessionError(f"message {message_id!r} was forgotten (`focus stop --forget`); nothing to learn from")
        person = self.store.person(len(embedding))
        if message["feedback"] == label:  # said before: nothing new to learn
            return {"id": message_id, "decision": message["decision"], "feedback": label,
                    "agreed": message["decision"] == label, "updates": person.updates, "repeated": True}  # fmt: skip
        if message["feedback"] is not None:  # a changed answer: what the earlier one taught is taken back
            person.retract(message_id, message["sender"], embedding, message["feedback"] == "pass")
        person.update(message["sender"], embedding, float(message["components"]["relevance_logit"]), label == "pass",
                      message_id=message_id)  # fmt: skip
        stored = self.store.record_feedback(message_id, label, person)
        answer = {"id": message_id, "decision": stored["decision"], "feedback": label,
                  "agreed": stored["decision"] == label, "updates": person.updates}  # fmt: skip
        if message["feedback"] is not None:
            answer["changed_from"] = message["feedback"]  # the person's earlier answer, now replaced
        if label == "hold" and (note := _passes_whatever_taught(message)):
            answer["note"] = note  # "learnt" alone, and the sender's next such message passed as before
        return answer

    def digest(self, *, session_id: int | None = None, limit: int | None = None) -> dict[str, Any]:
        session = self.store.session(session_id) if session_id is not None else (
            self.store.active_session() or self.store.last_session())  # fmt: skip
        if session is None:
            raise SessionError("no focus session in this database yet: start one with `attend focus start`")
        messages = self.store.messages(session_id=session["id"])
        held = [m for m in messages if (m["feedback"] or m["decision"]) == "hold"]
        embeddings = [self.store.embedding(m["id"], session["id"]) for m in held]
        groups = build_digest(self.assistant.reader, held, embeddings)
        # The person's answer wins over the assistant's decision: `status` counts the decisions, so the two
        # counts differ by the corrections, which are said (they had read as a disagreement).
        by_feedback = sum(m["feedback"] == "hold" and m["decision"] != "hold" for m in held)
        return {"session": session, "held": len(held), "held_by_feedback": by_feedback,
                "passed_by_feedback": sum(m["feedback"] == "pass" and m["decision"] == "hold" for m in messages),
                "group_count": len(groups),  # before the limit: what `limit` left out is said
                "groups": [g.to_dict() for g in (groups[:limit] if limit else groups)]}  # fmt: skip
