"""Charts drawn with matplotlib, shared by every part of attend that draws one (explanations'
heatmaps, alignment pictures, the training report's confusion matrix).

- :func:`pyplot`: ``matplotlib.pyplot`` on the Agg backend (no display needed), with CJK fonts
  installed after matplotlib cached its list registered (Debian ``fonts-wqy-microhei`` or
  ``fonts-noto-cjk``), so Chinese and Japanese labels and tokens are drawn, not boxes.
- :func:`chart_style`: the settings attend's charts draw with, for the block only;
  :func:`plain_text` runs a chart function inside it.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["CJK_FONTS", "CJK_FONT_FILES", "chart_style", "plain_text", "pyplot"]

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
    """``matplotlib.pyplot`` on the Agg backend, with any CJK font installed after matplotlib cached
    its font list registered. Changes no setting: charts draw inside :func:`chart_style`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    _cjk_family()
    return plt


@functools.cache
def _cjk_family() -> tuple[str, ...]:
    """The installed fonts of :data:`CJK_FONTS`, registering CJK font files matplotlib had not listed."""
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
    return tuple(family)


@contextlib.contextmanager
def chart_style() -> Iterator[Any]:
    """Within the block, ``pyplot`` draws attend's charts: DejaVu Sans falling back to a CJK font
    (Chinese and Japanese labels drawn, not boxes), an ASCII minus, text drawn as written (a "$" in a
    label or token is a dollar, not maths markup: "$\\foo$" failed a whole chart, "cost $5 and $6"
    was drawn garbled), and no warning per glyph no font has (an emoji: drawn as a box, hundreds of
    lines over the progress bar). Every setting is put back after: a caller's own plots keep theirs."""
    plt = pyplot()
    style = {"font.family": ["DejaVu Sans", *_cjk_family()], "axes.unicode_minus": False, "text.parse_math": False}
    with plt.rc_context(style), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield plt


def plain_text(draw: Callable[..., _T]) -> Callable[..., _T]:
    """Run a chart function inside :func:`chart_style`."""

    @functools.wraps(draw)
    def styled(*args: Any, **kwargs: Any) -> _T:
        with chart_style():
            return draw(*args, **kwargs)

    return styled
