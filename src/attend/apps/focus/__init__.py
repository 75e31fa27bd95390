"""The focus assistant: hold or pass each incoming message by its importance to the task at hand, and say why.

Pipeline: messages (:mod:`attend.data.messages`: JSONL/CSV, mbox, Maildir) -> one MiniLM reading
each and the task's cross-attention over it (:mod:`.components`) -> relevance, urgency, the
person's learned shifts and the allowlist, weighed by the cost rule (:mod:`.assistant`, whose
docstring states it; :mod:`.person`) -> SQLite sessions, feedback and statistics (:mod:`.store`,
:mod:`.service`) -> digest (:mod:`.digest`), dashboard (:mod:`.dashboard`), HTTP routes
(:mod:`.router`) and ``attend focus`` (:mod:`.cli`). :mod:`.evaluation` scores it beside baselines
on the project's scenario suite and on a real news stream (:mod:`.corpora`).

>>> from attend.apps.focus import FocusService, triage
>>> from attend.data.messages import read_messages
>>> decisions = triage("write the Q3 board deck", read_messages("inbox.mbox"))
>>> service = FocusService("focus.db")
>>> session = service.start("write the Q3 board deck", allow=["boss@example.com"], until="2026-12-03T17:30+01:00")
>>> decisions = service.ingest(read_messages("new.jsonl"))
>>> service.feedback(decisions[0].id, "hold")
"""

from attend.apps.focus.assistant import Costs, Decision, FeatureStats, FocusAssistant, Session
from attend.apps.focus.person import PersonModel
from attend.apps.focus.service import FocusService, triage
from attend.apps.focus.store import FocusStore, SessionError, open_focus_store

__all__ = [
    "Costs",
    "Decision",
    "FeatureStats",
    "FocusAssistant",
    "FocusService",
    "FocusStore",
    "PersonModel",
    "Session",
    "SessionError",
    "open_focus_store",
    "triage",
]
