"""English synonyms from WordNet 3.0, for synonym substitution in text augmentation and robustness tests.

The table is bundled with the package as ``attend/data/bundled/wordnet_synonyms.tsv.gz``, built by
``scripts/datasets/build_wordnet_synonyms.py`` from Debian's ``wordnet-base`` package: two words
are synonyms when they share a WordNet synset. Only single lowercase words made of the letters a-z
are listed (no multi-word or hyphenated lemmas), each with at most eight synonyms, ordered by the
word's WordNet sense order (its most frequent senses first, across nouns, verbs, adjectives and
adverbs). A synonym holds for *some* sense of the word, not necessarily the one a sentence uses:
``synonyms("bank")`` mixes river banks and money banks.

English only: there is no table for any other language. WordNet 3.0 is Copyright 2006 by
Princeton University and used under its licence, which ships beside the data as
``wordnet_synonyms.LICENSE``.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

from attend.data.datasets import DatasetError

_FILENAME = "wordnet_synonyms.tsv.gz"


@functools.lru_cache(maxsize=1)
def load_synonyms() -> dict[str, tuple[str, ...]]:
    """The whole table: lowercase word -> its synonyms, best first, never the word itself.

    Read once and cached; every call returns the same dict, so treat it as read-only.

    Raises:
        DatasetError: The bundled file is missing or malformed (a broken install).
    """
    resource = resources.files("attend.data").joinpath("bundled").joinpath(_FILENAME)
    try:
        text = gzip.decompress(resource.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read the bundled file {_FILENAME} ({error}); reinstall attend") from error
    table: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        word, tab, rest = line.partition("\t")
        if not tab or not word or not rest:
            raise DatasetError(f"{_FILENAME} line {number} is not 'word<TAB>synonyms': {line[:80]!r}")
        table[word] = tuple(rest.split(" "))
    return table


def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of ``word`` (case-insensitive), best first; ``()`` for a word not in the table.

    Example:
        >>> "automobile" in synonyms("Car")
        True
    """
    return load_synonyms().get(word.lower(), ())
