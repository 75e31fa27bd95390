"""The attention mechanism: scores, masks, multi-head attention, efficient and adaptive variants.

Public contract (see DESIGN.md): :class:`MultiHeadAttention`, :data:`SCORES`, the mask helper,
:class:`AttentionPooling`, :class:`TargetAttention`, :class:`CrossModalAttention` and :func:`capture_attention`.
"""

from attend.attention.adaptive import AdaptiveSpan, clamp_spans
from attend.attention.backends import BACKENDS
from attend.attention.cache import KeyValueCache, cached_causal_mask
from attend.attention.capture import (
    AttentionCapture,
    CapturedAttention,
    Recordable,
    capture_attention,
    recordable_names,
)
from attend.attention.crossmodal import CrossModalAttention
from attend.attention.dropout import Dropout
from attend.attention.efficient import EluFeatureMap, FavorFeatureMap
from attend.attention.masks import AttentionMask, MaskSpec, causal_mask, positional_mask, window_mask
from attend.attention.multihead import ATTENTION_KINDS, MultiHeadAttention
from attend.attention.pooling import AttentionPooling
from attend.attention.scores import SCORES, Score, build_score
from attend.attention.target import TargetAttention
from attend.attention.unpad import UNPAD_MIN_PADDING, TokenLayout, unpadding_modules

__all__ = [
    "ATTENTION_KINDS",
    "BACKENDS",
    "SCORES",
    "UNPAD_MIN_PADDING",
    "AdaptiveSpan",
    "AttentionCapture",
    "AttentionMask",
    "AttentionPooling",
    "CapturedAttention",
    "CrossModalAttention",
    "Dropout",
    "EluFeatureMap",
    "FavorFeatureMap",
    "KeyValueCache",
    "MaskSpec",
    "MultiHeadAttention",
    "Recordable",
    "Score",
    "TargetAttention",
    "TokenLayout",
    "build_score",
    "cached_causal_mask",
    "capture_attention",
    "causal_mask",
    "clamp_spans",
    "positional_mask",
    "recordable_names",
    "unpadding_modules",
    "window_mask",
]
