"""Explanations through attention: token importance, focus metrics, faithfulness, renderers.

>>> import attend
>>> from attend.explain import explain, render_html
>>> predictor = attend.load("model/")
>>> explanations = explain(predictor, ["a text"], method="rollout", maps=True)
>>> render_html(explanations, "explanation.html")
"""

from attend.explain.faithfulness import THRESHOLDS, default_methods, faithfulness, format_faithfulness
from attend.explain.focus import distribution_focus, focus, map_focus
from attend.explain.methods import (
    BASELINES,
    METHODS,
    Explanation,
    attention_flow,
    explain,
    grad_rollout,
    readout,
    rollout,
    top_tokens,
)
from attend.explain.render import render_html, save_heatmaps, to_json

__all__ = [
    "BASELINES",
    "METHODS",
    "THRESHOLDS",
    "Explanation",
    "attention_flow",
    "default_methods",
    "distribution_focus",
    "explain",
    "faithfulness",
    "focus",
    "format_faithfulness",
    "grad_rollout",
    "map_focus",
    "readout",
    "render_html",
    "rollout",
    "save_heatmaps",
    "to_json",
    "top_tokens",
]
