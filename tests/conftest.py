"""Shared fixtures: small synthetic labelled data whose label is decided by one planted word."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

POSITIVE = ["great", "excellent", "wonderful", "superb", "delightful"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "tedious"]
FILLER = "the movie plot actor scene film story music camera time one it was is and a of with".split()


def planted_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts of filler words with one sentiment word planted; the label follows that word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.choices(FILLER, k=rng.randint(4, 12))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def planted_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "planted.csv", planted_rows(400))
