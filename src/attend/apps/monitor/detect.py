r"""Surge detection: is this window's share of negative texts far above what is normal for its topic?

The method (per topic, windows in time order)
---------------------------------------------
Each window ``t`` has a volume ``n_t`` (events) and a negative count ``k_t``; its negative share is
``p_t = k_t / n_t``. Windows with ``n_t < min_volume`` are shown but neither judged nor learned
from: their share is too noisy to say anything.

The baseline is an exponentially weighted moving average (EWMA) of the share and an EWMA of its
variance (Finch 2009, "Incremental calculation of weighted mean and variance"), started at the
first eligible window (``m = p_1``, ``v = 0``) and updated after every eligible window::

    d   = p_t - m_{t-1}
    m_t = m_{t-1} + alpha * d
    v_t = (1 - alpha) * (v_{t-1} + alpha * d^2)

Window ``t`` is scored against the baseline *before* it, so a surge cannot hide itself::

    z_t = (p_t - m_{t-1}) / sqrt(max(v_{t-1}, b_t)),    b_t = m~ (1 - m~) / n_t

``b_t`` is the binomial sampling variance of a share measured on ``n_t`` events, with the baseline
clipped to ``[0.5 / n_t, 1 - 0.5 / n_t]`` so it is never zero. It keeps z honest where the history
is short or unusually calm, and where this window is smaller than usual: a window cannot be more
certain than its own sample size allows.

A window is a **surge** when all hold:

* at least ``warmup`` eligible windows came before it (a baseline exists);
* ``n_t >= min_volume``;
* ``z_t >= z`` (``--z``, default 3);
* ``p_t - m_{t-1} >= min_lift`` (``--min-lift``, default 0: the share is above the baseline).

Surge windows update the baseline like any other, so a lasting shift becomes the new normal
instead of alerting forever. ``alpha`` sets the memory: about ``2 / alpha - 1`` windows.

Windows are aligned in UTC to a Monday (1970-01-05T00:00Z), so ``1d`` windows are calendar days
and ``1w`` windows are ISO weeks; any length that divides a day gives the usual clock boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ORIGIN", "DetectionSettings", "WindowCount", "WindowStat", "detect", "window_start"]

#: Windows are aligned to this instant (epoch seconds of Monday 1970-01-05T00:00:00Z).
ORIGIN = 4 * 86400


def window_start(ts: int, window: int) -> int:
    """Start (epoch seconds) of the window holding ``ts``."""
    return ts - (ts - ORIGIN) % window


@dataclass(frozen=True)
class DetectionSettings:
    """How surges are found (see the module docstring for the method).

    Attributes:
        window: Window length in seconds.
        z: Smallest z-score that counts as a surge.
        min_volume: Fewest events for a window to be judged or to update the baseline.
        alpha: EWMA weight of the newest window, in (0, 1].
        warmup: Eligible windows needed before any window is judged.
        min_lift: Smallest rise of the share over the baseline (absolute, 0..1) that counts.
    """

    window: int = 3600
    z: float = 3.0
    min_volume: int = 10
    alpha: float = 0.2
    warmup: int = 4
    min_lift: float = 0.0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window={self.window} seconds must be >= 1")
        if not math.isfinite(self.z) or self.z <= 0:
            raise ValueError(f"z={self.z} must be a positive number")
        if self.min_volume < 1:
            raise ValueError(f"min_volume={self.min_volume} must be >= 1")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha={self.alpha} must be in (0, 1]")
        if self.warmup < 1:
            raise ValueError(f"warmup={self.warmup} must be >= 1")
        if not 0 <= self.min_lift < 1:
            raise ValueError(f"min_lift={self.min_lift} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WindowCount:
    """Counts of one topic in one window."""

    topic: str
    start: int
    volume: int
    negatives: int


@dataclass(frozen=True)
class WindowStat:
    """One window, judged.

    Attributes:
        topic: The topic.
        start: Window start, epoch seconds (UTC).
        end: Window end (exclusive).
        volume: Events in the window.
        negatives: Of which negative.
        share: ``negatives / volume``.
        baseline: The EWMA share before this window (None until there is one).
        baseline_sd: The standard deviation the z-score divided by (None until there is a baseline).
        z: The z-score (None when the window was not judged).
        surge: Whether the window is a surge.
    """

    topic: str
    start: int
    end: int
    volume: int
    negatives: int
    share: float
    baseline: float | None
    baseline_sd: float | None
    z: float | None
    surge: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _judge(topic_counts: Sequence[WindowCount], settings: DetectionSettings) -> list[WindowStat]:
    mean, var, seen = 0.0, 0.0, 0
    stats = []
    for count in sorted(topic_counts, key=lambda c: c.start):
        share = count.negatives / count.volume if count.volume else 0.0
        eligible = count.volume >= settings.min_volume
        baseline = sd = z = None
        surge = False
        if seen:
            baseline = mean
            clipped = min(max(mean, 0.5 / max(count.volume, 1)), 1 - 0.5 / max(count.volume, 1))
            sd = math.sqrt(max(var, clipped * (1 - clipped) / max(count.volume, 1)))
            if eligible and seen >= settings.warmup:
                z = (share - mean) / sd
                surge = z >= settings.z and share - mean >= settings.min_lift and share > mean
        if eligible:
            if seen == 0:
                mean, var = share, 0.0
            else:
                delta = share - mean
                mean += settings.alpha * delta
                var = (1 - settings.alpha) * (var + settings.alpha * delta * delta)
            seen += 1
        stats.append(WindowStat(topic=count.topic, start=count.start, end=count.start + settings.window,
                                volume=count.volume, negatives=count.negatives, share=share, baseline=baseline,
                                baseline_sd=sd, z=z, surge=surge))  # fmt: skip
    return stats


def detect(counts: Iterable[WindowCount], settings: DetectionSettings) -> dict[str, list[WindowStat]]:
    """Judge every window of every topic; returns per topic its windows in time order."""
    by_topic: dict[str, list[WindowCount]] = {}
    for count in counts:
        by_topic.setdefault(count.topic, []).append(count)
    return {topic: _judge(rows, settings) for topic, rows in sorted(by_topic.items())}
