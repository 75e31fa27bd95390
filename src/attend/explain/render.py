"""Show explanations the way people read: an HTML report, PNG heatmaps, and JSON.

- :func:`render_html`: one self-contained page (no external files or scripts): each text's
  tokens shaded by importance (blue = supports the label; red = against it, for signed
  methods), the prediction, focus metrics, and per-head attention maps (:func:`map_figure`: a
  pixel per token pair, scaled and labelled by the page). :class:`HtmlReport` builds the same page
  as explanations come.
- :func:`save_heatmaps`: one PNG per layer and head (matplotlib), plus a token-importance bar chart.
- :func:`to_json`: the explanations as JSON.

Chinese (and any CJK) text renders with a CJK font when one is installed (Debian
``fonts-wqy-microhei`` or ``fonts-noto-cjk``); the HTML names them in its font stack.
"""

from __future__ import annotations

import base64
import io
import math
import re
import textwrap
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attend.data.validation import page_text
from attend.explain.methods import Explanation, character_groups
from attend.io import check_picture_folder, enclosing_model_directory, write_page
from attend.jsonout import dumps_json
from attend.plotting import CJK_FONTS, plain_text, pyplot

__all__ = ["HtmlReport", "render_html", "save_heatmaps", "to_json"]

#: Up to this many tokens, a map's rows and columns are labelled with them (past it, too small to read).
MAP_LABELS = 80


@plain_text
def _heatmap_png(matrix: np.ndarray, tokens: Sequence[str], title: str, dpi: int = 80) -> bytes:
    tokens = [t.removeprefix("##") for t in tokens]
    plt = pyplot()
    n = len(tokens)
    size = max(3.0, min(14.0, 0.28 * n + 1.5))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(float(matrix.max()), 1e-9))
    ax.set_title(title, fontsize=9)
    if n <= MAP_LABELS:
        ax.set_xticks(range(n), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(n), tokens, fontsize=7)
    ax.set_xlabel("key (attended to)", fontsize=8)
    ax.set_ylabel("query", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _read(exp: Explanation) -> str:
    """``", layer 0, head 1"`` after a method's name (``""`` for a method that reads no one layer)."""
    reading = exp.reading()
    return f", {reading}" if reading else ""


def _heading(exp: Explanation) -> str:
    """A chart's title: the method (and what it read), and the label it explains, which is not the
    prediction when a target was asked for (the title named the prediction over another label's bars)."""
    if exp.target != exp.label:
        return (f"{exp.method}{_read(exp)}: explaining {exp.target} ({exp.explained_probability:.2f}; "
                f"predicted {exp.label}, {exp.probability:.2f})")
    return f"{exp.method}{_read(exp)}: {exp.label} ({exp.probability:.2f})"


def wrapped_title(title: str, width: float) -> str:
    """A chart title wrapped to a figure ``width`` inches wide at 9 points (a long translation's title
    had run off both sides, its start and its score unreadable); past three lines, shortened, its
    last word (the score, joined by no-break spaces) kept. A wide character (Chinese, Japanese)
    counts as two."""
    wide = sum(unicodedata.east_asian_width(char) in "WF" for char in title)
    chars = max(10, int(width * 11 / (1 + wide / max(1, len(title)))))
    lines = textwrap.wrap(title, chars) or [""]
    if len(lines) > 3:
        words = [word for word in title.split(" ") if word]  # not split(): it splits at no-break spaces too
        kept = words[-1] if "\u00a0" in words[-1] else ""
        rest = textwrap.wrap(" ".join(words[:-1]) if kept else title, chars)
        third = textwrap.shorten(" ".join(rest[2:]), max(5, chars - len(kept) - 1), placeholder=" …")
        lines = [*rest[:2], f"{third} {kept}".strip()]
    return "\n".join(lines)


@plain_text
def _importance_png(exp: Explanation, dpi: int = 80) -> bytes:
    plt = pyplot()
    n = len(exp.tokens)
    width = max(4.0, min(20.0, 0.3 * n + 1.5))
    fig, ax = plt.subplots(figsize=(width, 2.8))
    colours = ["#c0392b" if v < 0 else "#2e86c1" for v in exp.importance]
    ax.bar(range(n), exp.importance, color=colours)
    ax.set_xticks(range(n), exp.display_tokens(), rotation=90, fontsize=7)
    ax.set_title(wrapped_title(_heading(exp), width), fontsize=9)  # a --target heading had been cut at both ends
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save_heatmaps(explanations: Sequence[Explanation], directory: str | Path, *,
                  progress: Callable[[int], object] | None = None) -> list[Path]:  # fmt: skip
    """Write ``text{i}/layer{l}_head{h}.png`` (when maps were requested) and ``text{i}/importance.png``;
    ``progress(1)`` is called as each text's are written.

    Returns the written paths.
    """
    directory = check_picture_folder("directory", directory, model_dir=enclosing_model_directory(directory))
    written: list[Path] = []
    for i, exp in enumerate(explanations):
        folder = directory / f"text{i}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "importance.png"
        path.write_bytes(_importance_png(exp))
        written.append(path)
        for layer, heads in enumerate(exp.maps or []):
            for head, matrix in enumerate(heads):
                path = folder / f"layer{layer}_head{head}.png"
                path.write_bytes(_heatmap_png(matrix, exp.display_tokens(), f"layer {layer}, head {head}"))
                written.append(path)
        if progress is not None:
            progress(1)
    remove_stale_pictures(directory, "text*/*.png", r"text\d+/(importance|layer\d+_head\d+)\.png", written)
    return written


def remove_stale_pictures(directory: Path, glob: str, pattern: str, written: Sequence[Path]) -> None:
    """Remove the files ``directory.glob(glob)`` finds whose path (relative, with ``/``) matches
    ``pattern`` but this run did not write: an earlier run's pictures of more texts, or of layers
    a run without maps leaves out, had stood beside the new ones as if they belonged to them.
    Nothing else is touched; a folder of ours left empty goes too."""
    fresh = {path.resolve() for path in written}
    rule = re.compile(pattern)
    for path in sorted(directory.glob(glob)):
        relative = path.relative_to(directory).as_posix()
        if rule.fullmatch(relative) and path.resolve() not in fresh:
            path.unlink(missing_ok=True)
            if path.parent != directory and not any(path.parent.iterdir()):
                path.parent.rmdir()


def _shade(value: float, scale: float) -> str:
    strength = 0.0 if scale <= 0 else min(1.0, abs(value) / scale)
    colour = "192,57,43" if value < 0 else "46,134,193"
    return f"rgba({colour},{0.08 + 0.82 * strength:.3f})" if strength > 0 else "transparent"


def _token_html(token: str) -> str:
    # WordPiece continuation pieces attach to the previous piece; others start a new word.
    if token.startswith("##"):
        return page_text(token[2:])
    return page_text(token)


def _tokens_block(exp: Explanation) -> str:
    # A token whose characters an earlier token showed (a ligature read as three pieces, a Hangul
    # syllable as its jamo, "½" as "1⁄2") joins that token's cell, with its value added: each had
    # printed its characters again ("ﬃﬃﬃ", "정정정말말말").
    cells: list[dict[str, Any]] = []
    shown = exp.display_tokens()
    spans = exp.spans or [None] * len(exp.tokens)
    end = None  # where the previous cell's characters end in the text
    for group in character_groups(exp):
        titles = [f"{shown[i]}{'' if shown[i] == exp.tokens[i] else f' (the model saw {exp.tokens[i]})'}: "
                  f"{exp.importance[i]:.4f}" for i in group]  # fmt: skip
        first = spans[group[0]]
        # A cell whose characters follow the previous one's in the text is drawn against it, as the
        # text has it (Chinese characters, `">` had been drawn apart, as if words).
        joined = shown[group[0]].startswith("##") or (first is not None and first[0] == end and first[1] > first[0])
        cells.append({"token": shown[group[0]], "value": sum(exp.importance[i] for i in group),
                      "special": exp.special[group[0]], "titles": titles, "joined": joined})  # fmt: skip
        ends = [spans[i][1] for i in group if spans[i] is not None]
        end = max(ends) if ends else None
    scale = max((abs(c["value"]) for c in cells if not c["special"]), default=0.0)
    return "".join(
        f'<span class="{"tok special" if c["special"] else "tok"}{" joined" if c["joined"] else ""}" '
        f'style="background:{"transparent" if c["special"] else _shade(c["value"], scale)}" '
        f'title="{page_text("; ".join(c["titles"]))}">{_token_html(c["token"])}</span>'
        for c in cells
    )


def _focus_table(exp: Explanation) -> str:
    f = exp.focus

    def fmt(x: float) -> str:
        return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    return (
        "<table class='focus'><tr><th>normalised entropy</th><th>top-3 mass</th><th>effective tokens</th>"
        f"<th>text tokens</th></tr><tr><td>{fmt(f.get('entropy'))}</td><td>{fmt(f.get('top_k_mass'))}</td>"
        f"<td>{fmt(f.get('effective_tokens'))}</td><td>{f.get('tokens', '')}</td></tr></table>"
    )


def _matrix_png(matrix: np.ndarray) -> bytes:
    """The matrix as a picture, one pixel per cell, shaded as the PNG heatmaps are (Blues, from 0 to
    its largest value); the page scales it up without smoothing."""
    from matplotlib import colormaps
    from PIL import Image

    values = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = max(float(values.max()) if values.size else 0.0, 1e-9)
    rgba = colormaps["Blues"](np.clip(values / top, 0.0, 1.0), bytes=True)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba[..., :3])).save(buffer, format="PNG")
    return buffer.getvalue()


def token_label(token: str) -> str:
    """A token as a map labels it: a WordPiece continuation without its ``##``, a piece of spaces
    alone (a word break) as ``␣`` (stripped, it is nothing)."""
    return token.removeprefix("##").strip() or "␣"


def _labels(kind: str, tokens: Sequence[str]) -> str:
    return "".join(f"<span title='{kind} {i}: {page_text(token)}'>{page_text(token_label(token))}</span>"
                   for i, token in enumerate(tokens))  # fmt: skip


def map_figure(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], alt: str, caption: str) -> str:
    """One attention map in a page: the matrix as an image, its row tokens (queries) beside it and
    its column tokens (keys) under it, each labelled up to ``MAP_LABELS`` tokens.

    Drawn by the browser, not by matplotlib: each head took about 0.3 s to draw as a chart, which
    made a report of a few hundred texts minutes of work (PNG files, from :func:`save_heatmaps`,
    are still charts)."""
    n_rows, n_columns = matrix.shape
    if not matrix.size:  # an empty translation: no picture to draw (PIL refuses an empty image)
        return f"<figure class='map'><figcaption>{page_text(caption)}: empty</figcaption></figure>"
    longest = max(n_rows, n_columns, 1)
    labelled = longest <= MAP_LABELS
    cell = 16.0 if longest <= 24 else 11.0 if labelled else max(1.0, min(11.0, 640.0 / longest))
    data = base64.b64encode(_matrix_png(matrix)).decode()
    image = (f'<img alt="{page_text(alt)}" src="data:image/png;base64,{data}" '
             f"style='width:{n_columns * cell:g}px;height:{n_rows * cell:g}px'>")  # fmt: skip
    if not labelled:
        return f"<figure class='map'><figcaption>{page_text(caption)}</figcaption>{image}</figure>"
    font = 11 if cell >= 16 else 9
    return (f"<figure class='map'><figcaption>{page_text(caption)}</figcaption>"
            f"<div class='grid' style='--cell:{cell:g}px;--font:{font}px' lang='und'>"
            f"<div class='rows'>{_labels('query', rows)}</div>{image}<div></div>"
            f"<div class='cols'>{_labels('key', columns)}</div></div></figure>")  # fmt: skip


# The maps' layout, shared with the translation page's.
MAP_STYLE = """
.heads { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 0.4em 1.2em; }
figure.map { margin: 0 0 0.6em 0; }
figure.map figcaption { font-size: 0.8em; color: #555; text-align: center; }
figure.map img { image-rendering: pixelated; outline: 1px solid #ccc; display: block; }
.grid { display: grid; grid-template-columns: auto auto; justify-content: start; align-items: start; }
.grid .rows, .grid .cols { font-size: var(--font); color: #444; line-height: var(--cell); }
.grid .rows span { display: block; height: var(--cell); text-align: right; padding-right: 4px; white-space: nowrap;
                   max-width: 9em; overflow: hidden; text-overflow: ellipsis; }
.grid .cols { display: flex; }
.grid .cols span { width: var(--cell); writing-mode: vertical-rl; transform: rotate(180deg); text-align: end;
                   white-space: nowrap; max-height: 9em; overflow: hidden; text-overflow: ellipsis;
                   padding-bottom: 4px; }
"""


def _maps_block(exp: Explanation, layers: str) -> str:
    if not exp.maps:
        return ""
    # The layer the importance read (method 'attention' with --layer), else the last.
    last = exp.layer % len(exp.maps) if isinstance(exp.layer, int) else len(exp.maps) - 1
    chosen = range(len(exp.maps)) if layers == "all" else [last]
    tokens = exp.display_tokens()
    parts = []
    for layer in chosen:
        figures = [map_figure(np.asarray(matrix), tokens, tokens, f"layer {layer} head {head}", f"head {head}")
                   for head, matrix in enumerate(exp.maps[layer])]  # fmt: skip
        parts.append(f"<h4>Layer {layer}: attention per head <small class='note'>(rows: each token as query; "
                     f"columns: the tokens it attends to)</small></h4><div class='heads'>{''.join(figures)}</div>")
    return "".join(parts)


_STYLE = f"""
body {{ font-family: system-ui, "DejaVu Sans", {", ".join(f'"{f}"' for f in CJK_FONTS)}, sans-serif;
       margin: 2em auto; max-width: 72em; color: #222; line-height: 1.5; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 1em 1.2em; margin-bottom: 1.5em; }}
.pred {{ font-size: 1.1em; }} .pred b {{ color: #1a5276; }}
.tokens {{ font-size: 1.15em; line-height: 2.1; }}
.tok {{ padding: 0.15em 0.2em; margin-left: 0.25em; border-radius: 3px; }}
.tok.joined {{ margin-left: 0; }}
.tok.special {{ color: #999; font-size: 0.8em; }}
table.focus {{ border-collapse: collapse; margin: 0.8em 0; }}
table.focus td, table.focus th {{ border: 1px solid #ddd; padding: 0.2em 0.6em; font-size: 0.9em; }}
.note {{ color: #666; font-size: 0.9em; }}
{MAP_STYLE}"""


def render_html(
    explanations: Sequence[Explanation],
    path: str | Path | None = None,
    *,
    title: str = "attend explanation",
    layers: str = "last",
    progress: bool = False,
) -> str:
    """A self-contained HTML report; written atomically to ``path`` if given. Returns the HTML.

    Args:
        layers: Which layers' per-head heatmaps to embed (when maps were requested):
            ``"last"`` or ``"all"``.
        progress: Show a progress bar with an ETA on stderr.
    """
    report = HtmlReport(title=title, layers=layers)  # an unknown `layers` is refused there
    explanations = list(explanations)
    wrong = next((e for e in explanations if not isinstance(e, Explanation)), None)
    if wrong is not None:  # predictor.explain()'s JSON dicts had failed on a missing attribute
        given = type(wrong).__name__
        raise TypeError(f"render_html draws Explanation objects (attend.explain.explain(model, texts)), got a {given}"
                        + (": predictor.explain() returns their JSON form" if isinstance(wrong, dict) else ""))
    from attend.progress import progress_bar

    for exp in progress_bar(explanations, desc="HTML report", unit="text", disable=not progress):
        report.add([exp])
    return report.write(path) if path is not None else report.page()


class _Report:
    """A page of cards, built as they come: ``len`` is the cards drawn so far, ``page`` and ``write``
    give the page of them (with a note on top, such as why it holds fewer than asked). A kind of
    page says how to read it (``guide``), adds its own ``style`` and what follows the cards."""

    guide = ""
    style = ""

    def __init__(self, title: str) -> None:
        self.title = title
        self._cards: list[tuple[str, Any]] = []  # each card's HTML, with what the page's script reads of it

    def __len__(self) -> int:
        return len(self._cards)

    def _after_cards(self) -> str:
        return ""

    def page(self, note: str | None = None) -> str:
        said = f"<p class='note'><b>{page_text(note)}</b></p>" if note else ""
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{page_text(self.title)}</title><style>{_STYLE}{self.style}</style></head><body>"
            f"<h1>{page_text(self.title)}</h1>{said}<p class='note'>{self.guide}</p>"
            f"{''.join(card for card, _ in self._cards)}{self._after_cards()}</body></html>"
        )

    def write(self, path: str | Path, note: str | None = None) -> str:
        """Write the page atomically (a new folder is made; a file that is no page is refused)."""
        page = self.page(note)
        write_page(path, page)
        return page


class HtmlReport(_Report):
    """The page :func:`render_html` writes, built as explanations come: ``add`` draws their cards,
    ``page`` and ``write`` give the page of those added so far (with a note on top, such as why it
    holds fewer texts than asked). ``attend explain --input`` adds each chunk as it is explained, so
    an interrupted run writes the texts it had done."""

    guide = ("Darker = more important to the prediction (blue supports it; red, for signed methods, argues "
             "against). Hover a token for its score.")  # fmt: skip

    def __init__(self, *, title: str = "attend explanation", layers: str = "last") -> None:
        if layers not in ("last", "all"):
            raise ValueError(f"layers={layers!r}; choose 'last' or 'all'")
        super().__init__(title)
        self.layers = layers

    def add(self, explanations: Sequence[Explanation]) -> None:
        """Draw these explanations' cards (all or, interrupted, none of them)."""
        start = len(self._cards)
        self._cards.extend([(_card(start + i, exp, self.layers), None) for i, exp in enumerate(explanations)])


def _card(i: int, exp: Explanation, layers: str) -> str:
    note = f"<p class='note'>{page_text(exp.note)}</p>" if exp.note else ""
    truncated = "<p class='note'>The text was truncated to the model's maximum length.</p>" if exp.truncated else ""
    target = (f" (explaining <b>{page_text(exp.target)}</b>, probability "
              f"{exp.explained_probability:.3f})" if exp.target != exp.label else "")  # fmt: skip
    if exp.labels is not None:  # a multi-label model's chosen set (the page had shown its top label alone)
        chosen = ", ".join(f"<b>{page_text(label)}</b>" for label in exp.labels) or "<b>none</b>"
        lead = (f"Predicted labels: {chosen} &middot; most probable <b>{page_text(exp.label)}</b> with probability "
                f"{exp.probability:.3f}")  # fmt: skip
    else:
        lead = f"Prediction: <b>{page_text(exp.label)}</b> with probability {exp.probability:.3f}"
    return (
        f"<section class='card' id='text{i}'>"
        f"<p class='pred'>{lead}"
        f"{target} &middot; method <code>{page_text(exp.method)}</code>{page_text(_read(exp))}</p>"
        f"<div class='tokens' lang='und'>{_tokens_block(exp)}</div>{truncated}{note}"
        f"{_focus_table(exp)}{_maps_block(exp, layers)}</section>"
    )


def to_json(explanations: Sequence[Explanation], *, maps: bool = False) -> str:
    """The explanations as a JSON list (one object per text; a figure that does not exist, such as the
    focus of a text with no tokens, is null)."""
    return dumps_json([e.to_dict(maps=maps) for e in explanations])
