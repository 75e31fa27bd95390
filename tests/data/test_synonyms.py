"""Tests for the bundled WordNet synonym table (attend.data.synonyms), read for real."""

from __future__ import annotations

import gzip
import re
from importlib import resources

import pytest

from attend.data import synonyms as synonyms_module
from attend.data.datasets import DatasetError
from attend.data.synonyms import load_synonyms, synonyms


def test_known_synonyms() -> None:
    assert {"auto", "automobile"} <= set(synonyms("car"))
    assert {"well", "beneficial"} & set(synonyms("good"))
    assert "large" in synonyms("big")
    assert synonyms("happy")[:2] == ("felicitous", "glad")


def test_most_frequent_sense_comes_first() -> None:
    # "car" is first of all a motor vehicle (sense 1), a railway car only in later senses.
    car = synonyms("car")
    assert car.index("automobile") < car.index("railcar")


def test_unknown_words_have_none() -> None:
    assert synonyms("qwzxplk") == ()
    assert synonyms("") == ()
    assert synonyms("motor vehicle") == ()  # Multi-word lemmas are left out.


def test_lookup_is_case_insensitive() -> None:
    assert synonyms("CAR") == synonyms("Car") == synonyms("car") != ()


def test_table_shape() -> None:
    table = load_synonyms()
    assert len(table) > 40_000
    word_pattern = re.compile(r"[a-z]+")
    for word, found in table.items():
        assert word_pattern.fullmatch(word), word
        assert 1 <= len(found) <= 8, word
        assert word not in found, word
        assert len(set(found)) == len(found), word
        assert all(word_pattern.fullmatch(synonym) for synonym in found), word


def test_load_is_cached() -> None:
    assert load_synonyms() is load_synonyms()


def test_bundled_file_is_sorted_and_licensed() -> None:
    bundled = resources.files("attend.data").joinpath("bundled")
    lines = gzip.decompress(bundled.joinpath("wordnet_synonyms.tsv.gz").read_bytes()).decode("ascii").splitlines()
    words = [line.split("\t", 1)[0] for line in lines]
    assert words == sorted(words)
    assert len(words) == len(set(words)) == len(load_synonyms())
    licence = bundled.joinpath("wordnet_synonyms.LICENSE").read_text(encoding="utf-8")
    assert "wordnet_synonyms.tsv.gz" in licence
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in licence


class _FakeResource:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def joinpath(self, _name: str) -> _FakeResource:
        return self

    def read_bytes(self) -> bytes:
        return self._data


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"not gzip", "cannot read"), (gzip.compress(b"car\tauto\nbroken line\n", mtime=0), "line 2")],
    ids=["not-gzip", "line-without-tab"],  # ids fixed: every xdist worker must collect the same names
)
def test_broken_file_is_reported(monkeypatch: pytest.MonkeyPatch, data: bytes, message: str) -> None:
    monkeypatch.setattr(synonyms_module.resources, "files", lambda _package: _FakeResource(data))
    load_synonyms.cache_clear()
    try:
        with pytest.raises(DatasetError, match=message):
            load_synonyms()
    finally:
        monkeypatch.undo()
        load_synonyms.cache_clear()
    assert "automobile" in synonyms("car")
