"""Turn the installed Debian FAQ (Debian packages ``debian-faq``, ``debian-faq-zh-cn``) into an FAQ table.

The packages install the FAQ as DocBook-generated HTML, one file per chapter, under
``/usr/share/doc/debian/FAQ/`` (English, ``*.en.html``) and ``.../FAQ/zh-cn/`` (simplified
Chinese, ``*.zh-cn.html``). Each chapter is split into question/answer pairs by attend's own
HTML FAQ parser (a question per ``<h2>``/``<h3>`` heading, the answer being the text up to the
next heading; the table of contents, navigation and footnotes are skipped), so this script and
``attend support build CHAPTER.html`` read the pages the same way.

Each row is ``question``, ``answer``, ``intent`` and ``source``. The intent is the chapter's
file name (``pkgtools``, ``uptodate``, ``support``, ...): the FAQ's own grouping of questions
by topic, and the same label in both languages. It is not a customer-intent data set (there
is none to be had offline here), only the closest real stand-in the FAQ offers.
The title page (``index``) holds no questions and is skipped.

Licence: the Debian FAQ is Copyright (C) 1996-2003 Software in the Public Interest, and may be
copied verbatim or modified under the terms in ``/usr/share/doc/debian-faq/copyright``.

Usage::

    apt-get install -y --no-install-recommends debian-faq debian-faq-zh-cn
    python scripts/support/debian_faq.py --lang en --out debian_faq.en.jsonl
    python scripts/support/debian_faq.py --lang zh-cn --out debian_faq.zh-cn.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from attend.apps.support.faq import FaqEntry, parse_html  # noqa: E402
from attend.io import atomic_write_text  # noqa: E402

FAQ_ROOT = Path("/usr/share/doc/debian/FAQ")
#: Where each language's chapters live, and the Debian package that installs them.
LANGUAGES = {"en": (FAQ_ROOT, "*.en.html", "debian-faq"), "zh-cn": (FAQ_ROOT / "zh-cn", "*.zh-cn.html",
             "debian-faq-zh-cn")}  # fmt: skip


def _chapter_number(path: Path) -> int:
    """The chapter's number from its <h1> ("Chapter 7." / "第 7 章"), so rows follow the book's order."""
    head = path.read_text(encoding="utf-8")[:20000]
    match = re.search(r"<h1[^>]*>.*?(\d+)", head, re.S)
    return int(match.group(1)) if match else 10_000


def debian_faq(lang: str = "en") -> list[FaqEntry]:
    """Every question/answer pair of the installed Debian FAQ in ``lang``, in chapter order.

    Raises:
        FileNotFoundError: The language's package is not installed (with the apt-get line).
    """
    if lang not in LANGUAGES:
        raise ValueError(f"lang={lang!r}; choose one of {sorted(LANGUAGES)}")
    directory, pattern, package = LANGUAGES[lang]
    chapters = sorted((p for p in directory.glob(pattern) if not p.name.startswith("index.")), key=_chapter_number)
    if not chapters:
        raise FileNotFoundError(
            f"no {pattern} under {directory}; install the FAQ: apt-get install -y --no-install-recommends {package}"
        )
    entries = []
    for chapter in chapters:
        intent = chapter.name.split(".")[0]
        for n, (question, answer) in enumerate(parse_html(chapter.read_text(encoding="utf-8")), start=1):
            entries.append(FaqEntry(question, answer, intent, f"{chapter.name}#{n}"))
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", default="en", choices=sorted(LANGUAGES), help="FAQ language (default en)")
    parser.add_argument("--out", required=True, help="JSONL file to write (question, answer, intent, source)")
    args = parser.parse_args(argv)
    entries = debian_faq(args.lang)
    lines = [json.dumps(e.to_dict(), ensure_ascii=False) for e in entries]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    intents = len({e.intent for e in entries})
    print(f"wrote {len(entries)} question/answer pairs from {intents} chapters to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
