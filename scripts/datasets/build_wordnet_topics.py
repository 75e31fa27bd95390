"""Rebuild src/attend/data/bundled/wordnet_topics.tsv.gz from Debian's wordnet-base package.

Each noun synset in WordNet's data.noun becomes one example: its definition (the gloss after
``| `` up to the first ``; "`` that opens a usage example) labelled with its lexicographer file,
the second field of the line, named through the table in lexnames(5WN). The licence header at the
top of data.noun (lines starting with two spaces) is skipped. Examples are then cleaned like every
attend data set (see attend.data.datasets): whitespace normalised, repeats and label conflicts dropped.

Usage::

    python scripts/datasets/build_wordnet_topics.py             # apt-get download wordnet-base
    python scripts/datasets/build_wordnet_topics.py --deb PATH  # use a .deb already at hand

Needs dpkg-deb (Debian/Ubuntu) and, without --deb, apt-get with Debian's package lists.
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import tempfile
from pathlib import Path

from _bundle import BUNDLED, summarise, write_tsv_gz

from attend.data.datasets import DATASETS, _deduplicate

OUTPUT = BUNDLED / "wordnet_topics.tsv.gz"
DATA_NOUN = "usr/share/wordnet/data.noun"
LEXNAMES_MAN = "usr/share/man/man5/lexnames.5WN.gz"


def fetch_deb(workdir: Path) -> Path:
    """Download the wordnet-base .deb into ``workdir`` with apt-get (no install, no root needed)."""
    subprocess.run(["apt-get", "download", "wordnet-base"], cwd=workdir, check=True)
    (deb,) = workdir.glob("wordnet-base_*.deb")
    return deb


def lexicographer_files(man_page: bytes) -> dict[int, str]:
    """Map file numbers to names from the table in the lexnames(5WN) man page (``NN<TAB>name<TAB>...``)."""
    table: dict[int, str] = {}
    for line in gzip.decompress(man_page).decode("utf-8").splitlines():
        match = re.match(r"^(\d\d)\t(\S+)\s*\t", line)
        if match:
            table[int(match.group(1))] = match.group(2)
    return table


def definition(gloss: str) -> str:
    """The gloss without its usage examples, which start at the first ``; "``."""
    return gloss.split('; "', 1)[0].strip()


def read_synsets(data_noun: str, names: dict[int, str]) -> list[tuple[str, str]]:
    """``(lexicographer file, definition)`` for every synset line of data.noun, in file order."""
    pairs: list[tuple[str, str]] = []
    for line in data_noun.splitlines():
        if line.startswith("  "):  # The licence header.
            continue
        head, bar, gloss = line.partition(" | ")
        fields = head.split(" ")
        if not bar or fields[2] != "n":
            raise ValueError(f"unexpected data.noun line: {line[:100]!r}")
        name = names[int(fields[1])]
        if not name.startswith("noun."):
            raise ValueError(f"noun synset {fields[0]} filed under {name}")
        pairs.append((name, definition(gloss)))
    return pairs


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
        names = lexicographer_files((workdir / "root" / LEXNAMES_MAN).read_bytes())
        data_noun = (workdir / "root" / DATA_NOUN).read_text(encoding="utf-8")
    pairs = read_synsets(data_noun, names)
    print(f"{len(pairs)} noun synsets read")
    labels, texts = _deduplicate(pairs)
    expected = set(DATASETS["wordnet_topics"].labels)
    if set(labels) != expected:
        raise SystemExit(f"labels differ from DATASETS: {sorted(set(labels) ^ expected)}")
    digest = write_tsv_gz(OUTPUT, labels, texts)
    summarise("wordnet_topics", labels, OUTPUT, digest)


if __name__ == "__main__":
    main()
