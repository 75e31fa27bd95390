"""Show which source tokens each token of a translation attended to: JSON, a PNG heatmap, an HTML page.

The cross-attention of an encoder-decoder model, averaged over layers and heads, is a soft
alignment between the output and the source (Bahdanau et al., 2015, "Neural Machine Translation
by Jointly Learning to Align and Translate", fig. 3). This module only *renders* one: it takes
plain data (:class:`Alignment`) and imports no model code, so the runtime, the service and the
CLI all hand it the same thing.

- :func:`to_json_dict`: a small, stable JSON-ready dict: the matrix rounded to 4 decimals and the
  strong ``links`` (each output token's top source token, plus any above half of that row's peak).
- :func:`alignment_png` / :func:`save_alignment_pngs`: matplotlib heatmaps (output tokens down,
  source tokens across), in the CJK-capable font set-up of :mod:`attend.explain.render`.
- :func:`alignment_html`: one self-contained page. Hovering, focusing (Tab) or clicking a
  translated token lights up the source tokens it attended to, and the other way round; a small
  inline script reads the alignment from a JSON blob in the page. Without script the page still
  reads: output tokens are shaded by confidence, carry their top source tokens in a tooltip, and a
  table lists every link. A link such as ``page.html#alignment0-o3`` opens with output token 3
  of the first translation pinned (``-s3`` pins source token 3).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attend.data.validation import page_text
from attend.explain.render import (
    _Report,
    _shade,
    _token_html,
    map_figure,
    remove_stale_pictures,
    token_label,
    wrapped_title,
)
from attend.io import check_picture_folder, enclosing_model_directory
from attend.jsonout import python_values
from attend.plotting import plain_text, pyplot

__all__ = ["LINK_RATIO", "Alignment", "AlignmentReport", "alignment_html", "alignment_png", "save_alignment_pngs",
           "shown_token", "strongest_links", "to_json_dict"]

#: A source token is linked to an output token when its weight is above this fraction of the row's peak.
LINK_RATIO = 0.5
#: At most this many tick labels per axis of a heatmap; longer sentences label every n-th token.
MAX_TICKS = 60
#: Tick labels longer than this are cut with an ellipsis.
MAX_LABEL_CHARS = 14


#: What an unknown token is written as (a translator's SentencePiece vocabulary, WordPiece's).
UNKNOWN_TOKENS = frozenset({"<unk>", "[UNK]"})


@dataclass
class Alignment:
    """The cross-attention alignment of one translation.

    Attributes:
        source_tokens: The source sentence as the model's tokens (``##`` marks a WordPiece continuation).
        output_tokens: The generated tokens.
        weights: ``(T_out, T_src)``: how much each output token attended to each source token,
            averaged over layers and heads, so each row sums to about 1 (a row of zeros shows nothing).
        source: The source sentence as the user wrote it.
        translation: The translation as text.
        log_prob: The sequence log-probability, if known (a translation's ``log_prob``; its
            ``score`` is that divided by a length penalty).
        layers: Optional per-layer / per-head maps by name (``"layer 0 head 2"``, ``"layer 1 mean"``),
            each ``(T_out, T_src)``.
        faithfulness: Optional results of an erasure test of this alignment (rendered as a table).
        output_probabilities: Optional probability the model gave each output token; the HTML
            shades output tokens by it (by the peak alignment weight when it is absent).
        source_spans: Optional characters of ``source`` (``(start, end)``) each source token stands
            for, None for ``</s>``: an ``<unk>`` is shown as the characters it replaced.
    """

    source_tokens: list[str]
    output_tokens: list[str]
    weights: np.ndarray
    source: str = ""
    translation: str = ""
    log_prob: float | None = None
    layers: dict[str, np.ndarray] | None = None
    faithfulness: dict[str, Any] | None = None
    output_probabilities: list[float] | None = None
    source_spans: list[tuple[int, int] | None] | None = None

    def shown_source_tokens(self) -> list[str]:
        """The source tokens as people read them: an unknown one (``<unk>``) as the characters of
        ``source`` it replaced (six Chinese characters had been six ``<unk>``, none told from another)."""
        spans = self.source_spans or [None] * len(self.source_tokens)
        return [self.source[span[0] : span[1]] if token in UNKNOWN_TOKENS and span is not None else token
                for token, span in zip(self.source_tokens, spans, strict=True)]  # fmt: skip

    def __post_init__(self) -> None:
        self.source_tokens = [str(t) for t in self.source_tokens]
        self.output_tokens = [str(t) for t in self.output_tokens]
        shape = (len(self.output_tokens), len(self.source_tokens))
        if self.source_spans is not None and len(self.source_spans) != shape[1]:
            raise ValueError(f"source_spans has {len(self.source_spans)} spans for {shape[1]} source tokens")
        self.weights = _checked_map("weights", self.weights, shape)
        if self.layers is not None:
            self.layers = {str(name): _checked_map(f"layers[{name!r}]", m, shape) for name, m in self.layers.items()}
        if self.output_probabilities is not None:
            self.output_probabilities = [float(p) for p in self.output_probabilities]
            if not all(0.0 <= p <= 1.0 for p in self.output_probabilities):
                raise ValueError(f"output_probabilities must lie in [0, 1]; got {self.output_probabilities}")
            if len(self.output_probabilities) != shape[0]:
                raise ValueError(
                    f"output_probabilities has {len(self.output_probabilities)} values for {shape[0]} output tokens"
                )


def _checked_map(field: str, matrix: Any, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{field} has shape {array.shape}; expected (output tokens, source tokens) = {shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{field} holds non-finite values (NaN or inf)")
    return array


# --- JSON ----------------------------------------------------------------------------------------


def _rounded(matrix: np.ndarray) -> list[list[float]]:
    return (np.round(matrix, 4) + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0


def _links(weights: np.ndarray) -> list[dict[str, Any]]:
    """Each output token's top source token, then any other above ``LINK_RATIO`` of the row's peak."""
    links = []
    for i, row in enumerate(weights):
        peak = float(row.max()) if row.size else 0.0
        if peak <= 0.0:
            continue
        chosen = np.flatnonzero(row > LINK_RATIO * peak)
        for j in sorted(chosen.tolist(), key=lambda j: (-row[j], j)):
            links.append({"output": i, "source": j, "weight": round(float(row[j]), 4)})
    return links


def _plain(value: Any) -> Any:
    """JSON-safe and printable: numpy scalars and arrays to Python, keys to text, non-finite floats
    to None; anything else as it is (the page prints it as text)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    value = python_values(value)
    if isinstance(value, list):  # an array's
        return _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json_dict(alignment: Alignment, *, maps: bool = False) -> dict[str, Any]:
    """A JSON-ready dict of one alignment.

    Keys: ``source``, ``translation``, ``log_prob`` (the sequence log-probability, :attr:`Alignment.log_prob`;
    None when unknown or not finite: not ``translate --json``'s length-normalised ``score``),
    ``source_tokens``, ``output_tokens``, ``alignment`` (``[T_out][T_src]``, 4 decimals) and
    ``links`` (``{"output", "source", "weight"}``, by output token then falling weight); with
    ``maps=True`` also ``maps`` (name -> matrix). ``faithfulness`` and ``output_probabilities``
    appear when the alignment has them.
    """
    data: dict[str, Any] = {
        "source": alignment.source,
        "translation": alignment.translation,
        "log_prob": _plain(None if alignment.log_prob is None else float(alignment.log_prob)),
        "source_tokens": list(alignment.source_tokens),
        "output_tokens": list(alignment.output_tokens),
        **({"source_spans": [None if s is None else list(s) for s in alignment.source_spans]}
           if alignment.source_spans is not None else {}),
        "alignment": _rounded(alignment.weights),
        "links": _links(alignment.weights),
    }
    if alignment.output_probabilities is not None:
        data["output_probabilities"] = [round(p, 4) for p in alignment.output_probabilities]
    if alignment.faithfulness is not None:
        data["faithfulness"] = _plain(alignment.faithfulness)
    if maps:
        data["maps"] = {name: _rounded(m) for name, m in (alignment.layers or {}).items()}
    return data


# --- PNG -----------------------------------------------------------------------------------------


def shown_token(token: str) -> str:
    """A token as text shows it: a piece of spaces alone (a word break) as ␣, which stripped is nothing."""
    return token.strip() or "␣"


def strongest_links(alignment: Alignment) -> list[str]:
    """``output<-source`` for each output token and the source token it attends to most."""
    shown = alignment.shown_source_tokens()
    return [f"{shown_token(out)}<-{shown_token(shown[int(row.argmax())])}"
            for out, row in zip(alignment.output_tokens, alignment.weights, strict=True)]  # fmt: skip


def _label(token: str) -> str:
    token = token_label(token)
    return token if len(token) <= MAX_LABEL_CHARS else token[: MAX_LABEL_CHARS - 1] + "…"


def _ticks(tokens: Sequence[str]) -> tuple[list[int], list[str]]:
    """Every token's position and label, or every n-th one for long sentences."""
    step = max(1, math.ceil(len(tokens) / MAX_TICKS))
    positions = list(range(0, len(tokens), step))
    return positions, [_label(tokens[p]) for p in positions]


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _default_title(alignment: Alignment) -> str:
    title = _short(alignment.translation) if alignment.translation else "cross-attention alignment"
    if alignment.log_prob is not None and math.isfinite(alignment.log_prob):
        title += f"  (log\u00a0p\u00a0=\u00a0{alignment.log_prob:.2f})"  # no break: wrapped whole
    return title


@plain_text
def _alignment_heatmap(matrix: np.ndarray, source: Sequence[str], output: Sequence[str], title: str, dpi: int) -> bytes:
    plt = pyplot()
    t_out, t_src = matrix.shape
    width = max(4.0, min(16.0, 0.28 * min(t_src, MAX_TICKS) + 2.8))
    height = max(3.0, min(16.0, 0.28 * min(t_out, MAX_TICKS) + 1.8))
    fig, ax = plt.subplots(figsize=(width, height))
    try:
        if matrix.size:
            image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(float(matrix.max()), 1e-9), aspect="auto")
            fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=7)
            ax.set_xticks(*_ticks(source), rotation=90, fontsize=7)
            ax.set_yticks(*_ticks(output), fontsize=7)
        else:
            ax.text(0.5, 0.5, "empty alignment", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(wrapped_title(title, width), fontsize=9)
        ax.set_xlabel("source token (attended to)", fontsize=8)
        ax.set_ylabel("output token", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()




def alignment_png(alignment: Alignment, *, dpi: int = 80, title: str | None = None) -> bytes:
    """A PNG heatmap of the averaged alignment: output tokens down, source tokens across, a colour bar.

    Sentences longer than ``MAX_TICKS`` tokens label every n-th token; long labels are cut.
    """
    return _alignment_heatmap(
        alignment.weights, alignment.shown_source_tokens(), alignment.output_tokens,
        _default_title(alignment) if title is None else title, dpi,
    )  # fmt: skip


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "map"


def _atomic_write_bytes(path: Path, data: bytes) -> Path:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return path


def save_alignment_pngs(alignments: Sequence[Alignment], directory: str | Path, *, maps: bool = False,
                        progress: Callable[[int], object] | None = None) -> list[Path]:  # fmt: skip
    """Write ``alignment-000.png``, ``alignment-001.png``, … (each atomically) into ``directory``.

    With ``maps=True`` also each per-layer/head map as ``alignment-000-layer-0-head-2.png``;
    ``progress(1)`` is called as each sentence's are written. Returns the written paths.
    """
    directory = check_picture_folder("directory", directory, model_dir=enclosing_model_directory(directory))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i, alignment in enumerate(alignments):
        written.append(_atomic_write_bytes(directory / f"alignment-{i:03d}.png", alignment_png(alignment)))
        for name, matrix in (alignment.layers or {}).items() if maps else ():
            png = _alignment_heatmap(matrix, alignment.shown_source_tokens(), alignment.output_tokens, name, 80)
            written.append(_atomic_write_bytes(directory / f"alignment-{i:03d}-{_slug(name)}.png", png))
        if progress is not None:
            progress(1)
    remove_stale_pictures(directory, "alignment-*.png", r"alignment-\d{3,}(-[\w.-]+)?\.png", written)
    return written


# --- HTML ----------------------------------------------------------------------------------------


def _script_json(data: Any) -> str:
    """JSON to embed in ``<script type="application/json">``: no ``<``, ``>`` or ``&`` survive, so
    no token can close the script element or open a comment."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(char, escape)
    return text


def _joined(tokens: Sequence[str], index: int) -> str:
    """A piece that continues the word before it is drawn against it, as the text has it: a
    WordPiece ``##`` piece, or, among SentencePiece pieces (some start with the word-start space, as
    a translator's do), one without it (words had been drawn as spaced letters, "y o u")."""
    token = tokens[index]
    pieces = any(t.startswith(" ") for t in tokens)
    continues = token.startswith("##") or (pieces and index > 0 and not token.startswith(" ") and token != "</s>")
    return " joined" if continues else ""


def _source_cell(tokens: Sequence[str], j: int, shown: str) -> str:
    """A source token's cell: as the text spells it, the model's own token in its title where they differ."""
    note = "" if shown == tokens[j] else f' title="{page_text(f"{shown} (the model saw {tokens[j]})")}"'
    return f'<span class="tok src{_joined(tokens, j)}" data-j="{j}" tabindex="0"{note}>{_token_html(shown)}</span>'


def _confidence(alignment: Alignment) -> tuple[list[float], str]:
    if alignment.output_probabilities is not None:
        return alignment.output_probabilities, "probability"
    peaks = alignment.weights.max(axis=1) if alignment.weights.shape[1] else np.zeros(len(alignment.output_tokens))
    return [float(p) for p in peaks], "peak alignment weight"


def _tokens_rows(alignment: Alignment, k: int, links: list[dict[str, Any]]) -> str:
    by_output: dict[int, list[dict[str, Any]]] = {}
    for link in links:
        by_output.setdefault(link["output"], []).append(link)
    shown = alignment.shown_source_tokens()
    source_spans = [_source_cell(alignment.source_tokens, j, shown[j]) for j in range(len(shown))]
    confidence, measure = _confidence(alignment)
    output_spans = []
    for i, token in enumerate(alignment.output_tokens):
        shade = _shade(confidence[i], 1.0)
        attended = ", ".join(f"{shown[x['source']]} {x['weight']:.2f}" for x in by_output.get(i, []))
        tip = f"{token} ({measure} {confidence[i]:.2f}) ← {attended or 'nothing'}"
        output_spans.append(
            f'<span class="tok out{_joined(alignment.output_tokens, i)}" data-i="{i}" tabindex="0" '
            f'data-shade="{shade}" style="background:{shade}" title="{page_text(tip)}">{_token_html(token)}</span>'
        )
    return (
        f"<div class='pair' id='alignment{k}-tokens'>"
        f"<div class='side'>source</div><div class='tokens' lang='und'>{''.join(source_spans)}</div>"
        f"<div class='side'>translation</div><div class='tokens' lang='und'>{''.join(output_spans)}</div></div>"
    )


def _links_table(alignment: Alignment, links: list[dict[str, Any]]) -> str:
    """The no-script view: each output token and the source tokens it attended to most."""
    by_output: dict[int, list[dict[str, Any]]] = {}
    for link in links:
        by_output.setdefault(link["output"], []).append(link)
    rows = []
    shown = alignment.shown_source_tokens()
    for i, token in enumerate(alignment.output_tokens):
        attended = ", ".join(
            f"{page_text(shown[x['source']])}&nbsp;<small>{x['weight']:.2f}</small>"
            for x in by_output.get(i, [])
        )
        rows.append(
            f"<tr><td>{i}</td><td lang='und'>{page_text(token)}</td><td lang='und'>{attended or '–'}</td></tr>"
        )
    return (
        "<details class='fallback' open><summary>Alignment table</summary><table class='links'>"
        "<tr><th>#</th><th>output token</th><th>attended to (weight)</th></tr>"
        f"{''.join(rows)}</table></details>"
    )


def _flat(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flat(value, f"{name} · "))
        else:
            rows.append((name, value))
    return rows


def _faithfulness_table(faithfulness: Mapping[str, Any] | None) -> str:
    if not faithfulness:
        return ""

    def fmt(value: Any) -> str:
        value = _plain(value)
        if isinstance(value, float):
            return f"{value:.3f}"
        return "–" if value is None else page_text(str(value))

    rows = "".join(f"<tr><th>{page_text(_FAITHFULNESS_LABELS.get(k, k))}</th><td>{fmt(v)}</td></tr>"
                   for k, v in _flat(faithfulness))  # fmt: skip
    return f"<h4>Faithfulness</h4><table class='focus faithfulness'>{rows}</table>"


#: The words of the page's faithfulness table for the keys of ``Translator.faithfulness``'s results
#: (other keys are shown as they are).
_FAITHFULNESS_LABELS = {
    "tokens": "output tokens tested",
    "drop_top": "probability drop, top-aligned source token hidden",
    "drop_random": "probability drop, a random source token hidden",
    "gap": "gap (above 0: the alignment points at what the output depends on)",
    "top_beats_random": "share of tokens where the top-aligned drop is larger",
}


def _last_layer(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The maps of the last layer, by their names (``"layer 5 head 2"``, ``"layer 5 mean"``); every
    map where the names number no layer."""
    numbered = {name: int(found.group(1)) for name in layers if (found := re.match(r"layer (\d+)\b", name))}
    if not numbered:
        return layers
    last = max(numbered.values())
    return {name: matrix for name, matrix in layers.items() if numbered.get(name) == last}


def _maps_grid(alignment: Alignment, layers: str = "all") -> str:
    shown = alignment.layers or {}
    named = {"average": alignment.weights, **(_last_layer(shown) if layers == "last" else shown)}
    figures = [map_figure(np.asarray(matrix), alignment.output_tokens, alignment.shown_source_tokens(), name, name)
               for name, matrix in named.items()]  # fmt: skip
    return ("<h4>Cross-attention per layer and head <small class='note'>(rows: each output token; columns: the "
            f"source tokens it attended to)</small></h4><div class='heads'>{''.join(figures)}</div>")


def _card(alignment: Alignment, k: int, maps: bool, layers: str = "all") -> str:
    links = _links(alignment.weights)
    score = ""
    if alignment.log_prob is not None and math.isfinite(alignment.log_prob):
        per_token = math.exp(alignment.log_prob / max(1, len(alignment.output_tokens)))
        score = (f" &middot; log-probability {alignment.log_prob:.3f} "
                 f"(geometric mean per token {per_token:.3f})")  # fmt: skip
    source = f"<p class='pred'>Source: <span lang='und'>{page_text(alignment.source)}</span></p>"
    translation = (f"<p class='pred'>Translation: <b lang='und'>{page_text(alignment.translation)}</b>"
                   f"{score}</p>")  # fmt: skip
    return (
        f"<section class='card' id='alignment{k}' data-alignment='{k}'>{source}{translation}"
        f"{_tokens_rows(alignment, k, links)}<p class='status' aria-live='polite'></p>"
        f"{_links_table(alignment, links)}{_faithfulness_table(alignment.faithfulness)}"
        f"{_maps_grid(alignment, layers) if maps else ''}</section>"
    )


_ALIGNMENT_STYLE = """
.pair { display: grid; grid-template-columns: 6.5em 1fr; gap: 0.3em 0.8em; align-items: baseline; }
.side { color: #666; font-size: 0.85em; text-align: right; }
.tok.src, .tok.out { cursor: pointer; }
.tok:focus-visible { outline: 2px solid #1a5276; }
.tok.active { outline: 2px solid #d35400; }
.js .tok[data-weight]::after { content: attr(data-weight); font-size: 0.6em; color: #7e5109; vertical-align: super;
                               margin-left: 0.1em; }
.status { min-height: 1.5em; color: #444; font-size: 0.95em; margin: 0.4em 0; }
table.links { border-collapse: collapse; margin: 0.5em 0; }
table.links td, table.links th { border: 1px solid #ddd; padding: 0.1em 0.5em; font-size: 0.9em; text-align: left; }
table.faithfulness th { text-align: left; font-weight: normal; }
"""

# Reads the alignments from the JSON blob; everything it needs is in the page.
_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("attend-alignments").textContent);
  document.documentElement.classList.add("js");
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };
  each(document.querySelectorAll("details.fallback"), function (d) { d.open = false; });
  function shade(weight) {  // orange, darker = more weight (square root: small weights stay visible)
    return weight >= 0.01 ? "rgba(230,126,34," + (0.12 + 0.78 * Math.sqrt(Math.min(1, weight))).toFixed(3) + ")" : "";
  }
  var views = {};
  each(document.querySelectorAll("section[data-alignment]"), function (card) {
    var k = card.getAttribute("data-alignment"), w = data[Number(k)].alignment;
    var src = card.querySelectorAll(".tok.src"), out = card.querySelectorAll(".tok.out");
    var status = card.querySelector(".status"), pinned = null;
    function reset() {
      each(src, function (el) { el.style.background = ""; });
      each(out, function (el) { el.style.background = el.getAttribute("data-shade"); });
      each(card.querySelectorAll(".tok.active"), function (el) { el.classList.remove("active"); });
      each(card.querySelectorAll(".tok[data-weight]"), function (el) { el.removeAttribute("data-weight"); });
      status.textContent = "";
    }
    function show(kind, index) {
      var self = (kind === "o" ? out : src)[index];
      if (!self) { return; }
      reset();
      var targets = kind === "o" ? src : out;
      var weights = kind === "o" ? w[index] : w.map(function (row) { return row[index]; });
      each(targets, function (el, n) {
        var v = weights[n] || 0;
        el.style.background = shade(v);
        if (v >= 0.05) { el.setAttribute("data-weight", v.toFixed(2)); }
      });
      self.classList.add("active");
      var order = weights.map(function (v, n) { return n; }).filter(function (n) { return weights[n] >= 0.05; });
      order.sort(function (a, b) { return weights[b] - weights[a] || a - b; });
      var named = order.slice(0, 5).map(function (n) { return targets[n].textContent + " " + weights[n].toFixed(2); });
      status.textContent = "\\u201c" + self.textContent + "\\u201d " +
        (kind === "o" ? "attended to: " : "was attended to by: ") + (named.join(", ") || "nothing above 0.05");
    }
    function restore() { if (pinned) { show(pinned[0], pinned[1]); } else { reset(); } }
    function token(event) {
      var el = event.target.closest ? event.target.closest(".tok.src, .tok.out") : null;
      return el && card.contains(el) ? el : null;
    }
    function key(el) {
      return el.classList.contains("out") ? ["o", Number(el.getAttribute("data-i"))]
                                          : ["s", Number(el.getAttribute("data-j"))];
    }
    function pin(el) {
      var next = key(el);
      pinned = pinned && pinned[0] === next[0] && pinned[1] === next[1] ? null : next;
      try {
        history.replaceState(null, "", pinned ? "#alignment" + k + "-" + pinned[0] + pinned[1] : location.pathname);
      } catch (e) { /* some file: URLs refuse; pinning still works */ }
      restore();
    }
    card.addEventListener("mouseover", function (e) { var el = token(e); if (el) { show.apply(null, key(el)); } });
    card.addEventListener("mouseout", function (e) { if (token(e)) { restore(); } });
    card.addEventListener("focusin", function (e) { var el = token(e); if (el) { show.apply(null, key(el)); } });
    card.addEventListener("focusout", function (e) { if (!card.contains(e.relatedTarget)) { restore(); } });
    card.addEventListener("click", function (e) { var el = token(e); if (el) { pin(el); } });
    card.addEventListener("keydown", function (e) {
      var el = token(e);
      if (el && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); pin(el); }
      if (e.key === "Escape") { pinned = null; reset(); }
    });
    views[k] = { pin: function (kind, index) { pinned = [kind, index]; show(kind, index); } };
  });
  function fromHash() {
    var m = /^#alignment(\\d+)-([os])(\\d+)$/.exec(location.hash);
    if (m && views[m[1]]) {
      views[m[1]].pin(m[2], Number(m[3]));
      document.getElementById("alignment" + m[1]).scrollIntoView({ block: "nearest" });
    }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""


def alignment_html(
    alignments: Sequence[Alignment],
    *,
    title: str = "Translation alignments",
    maps: bool = False,
    layers: str = "all",
    path: str | Path | None = None,
) -> str:
    """One self-contained HTML page (nothing fetched) of the alignments; written atomically to ``path``
    if given. Returns the HTML.

    Args:
        maps: Also embed a map of the average and of the per-layer/head maps.
        layers: With ``maps``, which of those: ``"all"``, or ``"last"`` (the last layer's).
    """
    report = AlignmentReport(title=title, maps=maps, layers=layers)
    report.add(alignments)
    return report.write(path) if path is not None else report.page()


class AlignmentReport(_Report):
    """The page :func:`alignment_html` writes, built as alignments come (``attend explain --input``
    on a translator adds each chunk as it is explained, so an interrupted run writes those done)."""

    guide = ("Hover, focus (Tab) or click a translated token to light up the source tokens it attended to (darker "
             "orange = more weight; the small numbers are the weights); hover a source token to see which translated"
             " tokens attended to it. Click or Enter pins, Escape clears. Blue shade of a translated token = the "
             "model's confidence in it. Without script, the table under each translation lists the alignment.")
    style = _ALIGNMENT_STYLE

    def __init__(self, *, title: str = "Translation alignments", maps: bool = False, layers: str = "all") -> None:
        if layers not in ("all", "last"):
            raise ValueError(f"layers={layers!r}: 'all' or 'last'")
        super().__init__(title)
        self.maps = maps
        self.layers = layers

    def add(self, alignments: Sequence[Alignment]) -> None:
        """Draw these alignments' cards (all or, interrupted, none of them), each with its JSON."""
        start = len(self._cards)
        self._cards.extend([(_card(alignment, start + k, self.maps, self.layers), to_json_dict(alignment))
                            for k, alignment in enumerate(alignments)])  # fmt: skip

    def _after_cards(self) -> str:
        data = [entry for _, entry in self._cards]
        return (f"<script type='application/json' id='attend-alignments'>{_script_json(data)}</script>"
                f"<script>{_SCRIPT}</script>")  # fmt: skip
