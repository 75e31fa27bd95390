"""Rebuild src/attend/data/bundled/wordnet_synonyms.tsv.gz from Debian's wordnet-base package.

The words of one WordNet synset are synonyms of one another. Every synset line of data.noun,
data.verb, data.adj and data.adv (wndb(5WN); the licence header, lines starting with two spaces,
is skipped) gives its words: the ``w_cnt`` field is two hexadecimal digits, and an adjective may
carry a syntactic marker such as ``(p)`` that is stripped. Only single words made of letters a-z
(after lowercasing) are kept, so multi-word lemmas (``_``), hyphenated ones, abbreviations with dots
and numbers are all left out.

A word's synonyms are collected in sense order: the index files (index.noun, ...) list each
lemma's synsets from the most to the least frequent sense, and the senses of the four parts of
speech are interleaved by rank (every first sense, then every second sense, ...; noun, verb,
adjective, adverb within a rank). Each synonym is kept once, the word itself never, and at most
MAX_SYNONYMS per word. Words left with no synonym are dropped.

The output has one ``word<TAB>synonym synonym ...`` line per word, sorted by word, no header, in a
gzip file with a pinned header so that a rebuild from the same package gives the same bytes.

Usage::

    python scripts/datasets/build_wordnet_synonyms.py             # apt-get download wordnet-base
    python scripts/datasets/build_wordnet_synonyms.py --deb PATH  # use a .deb already at hand

Needs dpkg-deb (Debian/Ubuntu) and, without --deb, apt-get with Debian's package lists.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from _bundle import BUNDLED, ROOT, write_gz_text
from build_wordnet_topics import fetch_deb

OUTPUT = BUNDLED / "wordnet_synonyms.tsv.gz"
WORDNET_DIR = "usr/share/wordnet"
# File suffix and the ss_type values its synset lines may carry (``s`` is an adjective satellite).
PARTS_OF_SPEECH = {"noun": {"n"}, "verb": {"v"}, "adj": {"a", "s"}, "adv": {"r"}}
MAX_SYNONYMS = 8
# Keep the bundled file small; the build fails rather than ship something much bigger.
MAX_BYTES = 1_000_000

_WORD = re.compile(r"[a-z]+")
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def _data_lines(text: str) -> list[str]:
    """The lines of a WordNet data or index file, without the licence header (two leading spaces)."""
    return [line for line in text.splitlines() if line and not line.startswith("  ")]


def read_synsets(text: str, ss_types: set[str]) -> dict[str, list[str]]:
    """Map each synset offset of a data.* file to its usable words, lowercased, distinct, in order."""
    synsets: dict[str, list[str]] = {}
    for line in _data_lines(text):
        fields = line.split(" ")
        offset, ss_type = fields[0], fields[2]
        if ss_type not in ss_types:
            raise ValueError(f"synset {offset} has type {ss_type!r}, expected one of {sorted(ss_types)}")
        w_cnt = int(fields[3], 16)
        raw_words = fields[4 : 4 + 2 * w_cnt : 2]
        pointer_count = fields[4 + 2 * w_cnt]
        if len(raw_words) != w_cnt or not pointer_count.isdigit():
            raise ValueError(f"cannot parse the words of synset {offset}: {line[:100]!r}")
        words: list[str] = []
        for raw in raw_words:
            word = _ADJ_MARKER.sub("", raw).lower()
            if _WORD.fullmatch(word) and word not in words:
                words.append(word)
        synsets[offset] = words
    return synsets


def read_senses(text: str) -> dict[str, list[str]]:
    """Map each lemma of an index.* file to its synset offsets, most frequent sense first."""
    senses: dict[str, list[str]] = {}
    for line in _data_lines(text):
        fields = line.split()
        lemma, synset_count, pointer_count = fields[0], int(fields[2]), int(fields[3])
        offsets = fields[4 + pointer_count + 2 :]
        if len(offsets) != synset_count:
            raise ValueError(f"index entry {lemma!r} lists {len(offsets)} synsets, expected {synset_count}")
        senses[lemma] = offsets
    return senses


def build_synonyms(
    parts: list[tuple[dict[str, list[str]], dict[str, list[str]]]],
) -> dict[str, list[str]]:
    """Word -> synonyms from ``(senses, synsets)`` per part of speech, in the order documented above."""
    lemmas = sorted({lemma for senses, _ in parts for lemma in senses if _WORD.fullmatch(lemma)})
    table: dict[str, list[str]] = {}
    for lemma in lemmas:
        ranked = [(senses.get(lemma, []), synsets) for senses, synsets in parts]
        found: list[str] = []
        for rank in range(max(len(offsets) for offsets, _ in ranked)):
            for offsets, synsets in ranked:
                if rank < len(offsets):
                    found.extend(w for w in synsets[offsets[rank]] if w != lemma and w not in found)
        if found:
            table[lemma] = found[:MAX_SYNONYMS]
    return table


def write_synonyms(path: Path, table: dict[str, list[str]]) -> str:
    """Write the table as a reproducible gzip file, replaced atomically; return its SHA-256."""
    return write_gz_text(path, "".join(f"{word}\t{' '.join(table[word])}\n" for word in sorted(table)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deb", type=Path, help="a wordnet-base .deb to use instead of downloading one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        deb = args.deb.resolve() if args.deb else fetch_deb(workdir)
        version = subprocess.run(
            ["dpkg-deb", "--field", str(deb), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        print(f"wordnet-base {version} from {deb.name}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "root")], check=True)
        wordnet = workdir / "root" / WORDNET_DIR
        parts = []
        for suffix, ss_types in PARTS_OF_SPEECH.items():
            synsets = read_synsets((wordnet / f"data.{suffix}").read_text(encoding="utf-8"), ss_types)
            senses = read_senses((wordnet / f"index.{suffix}").read_text(encoding="utf-8"))
            print(f"{suffix}: {len(synsets)} synsets, {len(senses)} index lemmas")
            parts.append((senses, synsets))
    table = build_synonyms(parts)
    digest = write_synonyms(OUTPUT, table)
    size = OUTPUT.stat().st_size
    pairs = sum(len(synonyms) for synonyms in table.values())
    print(f"wordnet_synonyms: {len(table)} words, {pairs} synonyms -> {OUTPUT.relative_to(ROOT)}")
    print(f"  size {size} bytes, sha256 {digest}")
    if size > MAX_BYTES:
        raise SystemExit(f"{OUTPUT.name} is {size} bytes, over the {MAX_BYTES} byte budget")


if __name__ == "__main__":
    main()
