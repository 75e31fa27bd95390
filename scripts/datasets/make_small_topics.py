"""Write a small-data scenario derived from ``wordnet_topics``: about 3,000 glosses in 16 topics.

The case ``--model auto`` is for: a user with a few thousand short labelled texts in a dozen or so
classes. The 16 most frequent lexicographer files of the bundled ``wordnet_topics``, sampled in
proportion to their size (at least 20 glosses each), seeded; a CSV with ``text`` and ``label``.
It is derived from a bundled set, not a new one: its glosses are a subset of ``wordnet_topics``.

Usage::

    python scripts/datasets/make_small_topics.py small_topics.csv
    attend train small_topics.csv --out runs/small --threads 1
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path

from attend.data.datasets import load_dataset

TOPICS = 16
SIZE = 3000
MINIMUM = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="CSV file to write")
    out = parser.parse_args().out
    data = load_dataset("wordnet_topics")
    topics = {label for label, _ in Counter(data.labels).most_common(TOPICS)}
    rows = [(text, label) for text, label in zip(data.texts, data.labels, strict=True) if label in topics]
    random.Random(0).shuffle(rows)
    by_topic: dict[str, list[str]] = {}
    for text, label in rows:
        by_topic.setdefault(label, []).append(text)
    sample = [(text, label) for label, texts in by_topic.items()
              for text in texts[: max(MINIMUM, round(SIZE * len(texts) / len(rows)))]]  # fmt: skip
    random.Random(1).shuffle(sample)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(sample)
    print(f"{out}: {len(sample)} glosses in {len(by_topic)} topics")


if __name__ == "__main__":
    main()
