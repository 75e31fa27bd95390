"""Charts drawn with matplotlib, shared by every part of attend that draws one (explanations'
heatmaps, alignment pictures, the training report's confusion matrix).

- :func:`pyplot`: ``matplotlib.pyplot`` set up once: the Agg backend (no display needed), and a
  font list that falls back to an installed CJK font, so Chinese and Japanese labels and tokens
  are drawn, not boxes (Debian ``fonts-wqy-microhei`` or ``fonts-noto-cjk``).
- :func:`plain_text`: run a chart function with its text drawn as written ("$" is a dollar).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CJK_FONTS", "CJK_FONT_FILES", "plain_text", "pyplot"]

_T = TypeVar("_T")

# Chinese fonts first (they also carry Japanese kana), then Japanese-only ones, so that translations
# into or out of Japanese render where only a Japanese font is installed.
CJK_FONTS = ("WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
             "SimHei", "Microsoft YaHei", "PingFang SC",
             "Noto Sans CJK JP", "Noto Sans JP", "IPAexGothic", "IPAGothic", "TakaoGothic", "Hiragino Sans",
             "Yu Gothic")  # fmt: skip
#: Substrings of the file names of those fonts, to register ones installed after matplotlib cached its list.
CJK_FONT_FILES = ("wqy", "cjk", "sourcehan", "droidsansfallback", "ipafont", "ipaexfont", "takao")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, its fonts falling back to an installed CJK font
    (:data:`CJK_FONTS`), and its missing-glyph warnings off."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    family = [name for name in CJK_FONTS if name in installed]
    if not family:  # installed after matplotlib cached its font list: register CJK fonts directly
        for path in font_manager.findSystemFonts():
            if any(key in path.lower() for key in CJK_FONT_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        installed = {f.name for f in font_manager.fontManager.ttflist}
        family = [name for name in CJK_FONTS if name in installed]
    plt.rcParams["font.family"] = ["DejaVu Sans", *family]
    plt.rcParams["axes.unicode_minus"] = False
    # A character no installed font has (an emoji) is drawn as a box; matplotlib warned once per
    # glyph and heatmap, hundreds of lines over the progress bar. The README says so instead.
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
    return plt


def plain_text(draw: Callable[..., _T]) -> Callable[..., _T]:
    """Run a chart function with its text drawn as written: tokens, labels and translations are the
    user's text, and a "$" in them is a dollar, not maths markup (a token "$\\foo$" failed the whole
    chart; "cost $5 and $6" was drawn garbled). For its own figure only, not the caller's plots."""

    @functools.wraps(draw)
    def plain(*args: Any, **kwargs: Any) -> _T:
        with pyplot().rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return plain
