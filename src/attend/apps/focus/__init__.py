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

from attend.apps import lazy_exports

# Each name loads its module on first use, so ``attend --help`` and the app's CLI start without torch.
__getattr__, __dir__ = lazy_exports(__name__, {
    "attend.apps.focus.assistant": ("Costs", "Decision", "FeatureStats", "FocusAssistant", "Session"),
    "attend.apps.focus.person": ("PersonModel",),
    "attend.apps.focus.service": ("FocusService", "triage"),
    "attend.apps.focus.store": ("FocusStore", "SessionError", "open_focus_store"),
})  # fmt: skip

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
