"""Customer support from an FAQ: answer with attend's MiniLM, show why, hand off when unsure.

>>> from attend.apps.support import build_index, ask
>>> report = build_index("faq.csv", "support_index")        # question, answer[, intent] columns
>>> reply = ask("support_index", "how do I put a package on hold?")
>>> reply["answers"][0]["answer"], reply["handoff"], reply["reason"], reply["words"][:3]

Modules: :mod:`~attend.apps.support.faq` (read tables, Markdown and HTML FAQs),
:mod:`~attend.apps.support.encoder` (embeddings and attention-based explanations),
:mod:`~attend.apps.support.index` (build, calibrate, ask), :mod:`~attend.apps.support.evaluation`
(encoder vs BM25, hand-off), :mod:`~attend.apps.support.cli` and
:mod:`~attend.apps.support.router` (the ``attend support`` verb and ``POST /v1/support/ask``).

Names are imported on first use, so ``attend --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FaqEntry",
    "SupportIndex",
    "ask",
    "build_index",
    "evaluate_handoff",
    "evaluate_retrieval",
    "read_faq",
    "register_cli",
    "support_router",
]

_WHERE = {
    "FaqEntry": "faq",
    "read_faq": "faq",
    "SupportIndex": "index",
    "ask": "index",
    "build_index": "index",
    "evaluate_handoff": "evaluation",
    "evaluate_retrieval": "evaluation",
    "register_cli": "cli",
    "support_router": "router",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"attend.apps.support.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'attend.apps.support' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
