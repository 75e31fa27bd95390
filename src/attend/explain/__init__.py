"""Explanations through attention: token importance, focus metrics, faithfulness, renderers.

>>> import attend
>>> from attend.explain import explain, render_html
>>> model = attend.load("model/")
>>> explanations = explain(model, ["a text"], method="rollout", maps=True)
>>> render_html(explanations, "explanation.html")
"""

from attend.explain.alignment import (
    Alignment,
    AlignmentReport,
    alignment_html,
    alignment_png,
    save_alignment_pngs,
    to_json_dict,
)
from attend.explain.faithfulness import THRESHOLDS, default_methods, faithfulness, format_faithfulness
from attend.explain.focus import distribution_focus, focus, map_focus
from attend.explain.methods import (
    BASELINES,
    METHODS,
    Evidence,
    ExplainMethod,
    Explanation,
    attention_flow,
    available_methods,
    explain,
    grad_rollout,
    readout,
    register_method,
    rollout,
    top_tokens,
)
from attend.explain.protocol import Explainable
from attend.explain.render import HtmlReport, render_html, save_heatmaps, to_json

__all__ = [
    "BASELINES",
    "METHODS",
    "THRESHOLDS",
    "Alignment",
    "AlignmentReport",
    "Evidence",
    "ExplainMethod",
    "Explainable",
    "Explanation",
    "HtmlReport",
    "alignment_html",
    "alignment_png",
    "attention_flow",
    "available_methods",
    "default_methods",
    "distribution_focus",
    "explain",
    "faithfulness",
    "focus",
    "format_faithfulness",
    "grad_rollout",
    "map_focus",
    "readout",
    "register_method",
    "render_html",
    "rollout",
    "save_alignment_pngs",
    "save_heatmaps",
    "to_json",
    "to_json_dict",
    "top_tokens",
]
