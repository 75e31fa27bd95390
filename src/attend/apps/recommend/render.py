"""An HTML page showing why: the user's history, each item shaded by its weight, beside the recommendations.

Self-contained (inline CSS, no script, nothing fetched), so it opens from disk or a mail attachment.
Each recommended item gets a column of its own: the history items, most recent first, with a bar
for the weight the model gave each when scoring that item.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from attend.data.validation import page_text
from attend.io import write_page

__all__ = ["render_recommendations"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:15px;margin:4px 0}
.grid{display:flex;gap:18px;flex-wrap:wrap}
.card{border:1px solid #ccc;border-radius:6px;padding:10px;width:300px}
.row{display:flex;align-items:center;gap:6px;font-size:13px;margin:2px 0}
.bar{height:10px;background:#d9480f;border-radius:2px}
.name{flex:1;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.w{width:56px;text-align:right;font-variant-numeric:tabular-nums}
.note{color:#666;font-size:13px}
"""


def _name(item: str, names: Mapping[str, str]) -> str:
    title = names.get(item)
    return f"{title} ({item})" if title else item


def _card(heading: str, score: float | None, rows: Sequence[dict[str, Any]], names: Mapping[str, str],
          unlisted: int = 0) -> str:  # fmt: skip
    peak = max((abs(r["weight"]) for r in rows), default=0.0) or 1.0
    lines = [f'<div class="card"><h2>{page_text(heading)}</h2>']
    if score is not None:
        lines.append(f'<div class="note">score {score:.4f}</div>')
    for row in rows:
        width = int(120 * abs(row["weight"]) / peak)
        # with its place in the history, as the terminal says it: an item seen twice had been two equal rows
        place = f" #{row['position']}" if "position" in row else ""
        lines.append(
            f'<div class="row"><span class="name" title="{page_text(_name(row["item"], names))}">'
            f"{page_text(_name(row['item'], names))}{place}</span>"
            f'<span class="bar" style="width:{width}px"></span><span class="w">{row["weight"]:.3f}</span></div>'
        )
    if not rows:
        lines.append('<div class="note">no history to weigh</div>')
    if unlisted:
        lines.append(f'<div class="note">and {unlisted} more history item(s) of smaller weight</div>')
    lines.append("</div>")
    return "\n".join(lines)


def render_recommendations(
    answer: Mapping[str, Any], path: str | os.PathLike[str] | None = None, *, names: Mapping[str, str] | None = None,
    title: str = "Why these recommendations",
) -> str:  # fmt: skip
    """The page for a ``top --explain`` answer (``items`` with ``history``) or an ``explain`` answer
    (``item``, ``score``, ``history``); written to ``path`` (atomically) if given."""
    names = names or {}
    cards = []
    if "items" in answer:
        for row in answer["items"]:
            cards.append(_card(f"recommended: {_name(row['item'], names)}", row.get("score"), row.get("history", []),
                               names, row.get("history_not_listed", 0)))  # fmt: skip
    else:
        heading = f"{_name(answer['item'], names)}: rank {answer.get('rank')}"
        cards.append(_card(heading, answer.get("score"), answer.get("history", []), names))
    who = answer.get("user")
    intro = f"user {page_text(str(who))}" if who is not None else "the given history"
    model = answer.get("model")
    how = {
        "din": "DIN's target-attention weight of each past item for the candidate",
        "sasrec": "SASRec's last-layer attention from the prediction position (heads averaged)",
    }.get(str(model), "")
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{page_text(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{page_text(title)}</h1>"
        f'<p class="note">For {intro}. Bars: {page_text(how) or "the weight of each history item"}; '
        "largest in size first (a negative weight, DIN's, counts against the item).</p>"
        + "".join(f'<p class="note">{page_text(str(answer[k]))}</p>' for k in ("note", "warning") if answer.get(k))
        + f'<div class="grid">{"".join(cards)}</div></body></html>\n'
    )
    if path is not None:
        write_page(path, page)
    return page
