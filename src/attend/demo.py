"""The main job (``make demo`` / ``attend demo``): train, evaluate and explain on real data.

On the bundled WordNet topics data (each noun definition labelled with one of 26 topics),
it trains an attention encoder from scratch, evaluates it on a held-out test split, prints
the report beside a TF-IDF + logistic-regression baseline on the same split, and shows
which words one test prediction rested on. A few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from attend.data.datasets import load_dataset
from attend.data.readers import LabelledTexts, stratified_split
from attend.io import DEMO_PAGE
from attend.runtime import TextClassifier, load
from attend.training import TrainingArgs, TrainingInterrupted, train

#: The demo's model: small enough for a few minutes of CPU, attention pooling to explain with.
DEMO_MODEL = {"dim": 128, "num_layers": 2, "num_heads": 4, "pooling": "attention", "dropout": 0.1}
# One thread: this model's ops are too small to split across cores (a step takes 0.16 s on two
# idle cores, 0.2 s on one), and one thread keeps that speed when another job shares the machine,
# where two threads slowed to 1.5 s a step in our measurements.
DEMO_TRAINING = {"epochs": 2, "batch_size": 64, "lr": 2e-3, "max_length": 64, "vocab_size": 16000, "patience": 2,
                 "threads": 1}  # fmt: skip


def _bar(value: float, width: int = 24) -> str:
    return "#" * max(0, round(value * width))


def show_explanation(predictor: TextClassifier, text: str, truth: str, html_path: Path | None = None) -> dict[str, Any]:
    """Print which tokens one prediction rested on (attention rollout); write the HTML report."""
    from attend.explain import explain, render_html

    explanation = explain(predictor, [text], "rollout", maps=html_path is not None)[0]
    print(f'\nWhy "{text}"')
    print(f"  is {explanation.label} (p={explanation.probability:.2f}; true topic: {truth}), by attention rollout:")
    for token, weight in zip(explanation.tokens, explanation.importance, strict=True):
        print(f"  {token:>16}  {weight:5.3f}  {_bar(weight)}")
    if html_path is not None:
        render_html([explanation], html_path, title=f"attend demo: why {explanation.label}?")
        print(f"\nexplanation (tokens shaded by importance, per-head attention maps): {html_path.resolve()}")
    return explanation.to_dict(maps=False)


def _written_by_a_demo(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier demo's output: its page, or (a demo stopped before it
    wrote the page) its model of WordNet topics."""
    if (folder / DEMO_PAGE).is_file():
        return True
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    model, data = config.get("model"), config.get("data")
    return (isinstance(model, dict) and isinstance(data, dict) and data.get("source") == "dataset:wordnet_topics"
            and all(model.get(key) == value for key, value in DEMO_MODEL.items()))  # fmt: skip


def main(*, seed: int = 0, out: str = "runs/demo", limit: int | None = None, epochs: int | None = None) -> int:
    # It replaces its --out as a re-run should, but only a demo's: a model of the user's own given as
    # --out had been replaced in silence.
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not _written_by_a_demo(folder))):
        raise ValueError(f"--out {out}: holds {'a file' if not folder.is_dir() else 'files'} the demo did not write "
                         "(a model of your own?); the demo replaces its --out, so give another one, or remove it first")
    print("attend demo: an attention model trained, evaluated and explained on real data\n")
    dataset = load_dataset("wordnet_topics")
    texts, labels = dataset.texts, dataset.labels
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit}: must be at least 1 (a seeded sample of that many examples)")
    if limit is not None and limit < len(texts):
        keep = sorted(random.Random(seed).sample(range(len(texts)), limit))  # the file is sorted by topic
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
        counts = Counter(labels)
        rare = {label for label, n in counts.items() if n < 3}  # too few to appear in every split
        if rare:
            kept = [i for i, label in enumerate(labels) if label not in rare]
            print(f"(sample of {limit}: leaving out {len(rare)} topic(s) with fewer than 3 examples in it)")
            texts, labels = [texts[i] for i in kept], [labels[i] for i in kept]
    if len(set(labels)) < 2:  # every topic of a tiny sample has fewer than 3 examples: nothing left to learn
        raise ValueError(f"--limit {limit}: a sample this small leaves {len(set(labels))} topic(s) with 3 examples "
                         "or more; give a larger --limit (e.g. 300)")  # fmt: skip
    data = LabelledTexts(texts=texts, labels=[[label] for label in labels], lines=list(range(1, len(texts) + 1)),
                         source="dataset:wordnet_topics")  # fmt: skip
    print(f"data: WordNet 3.0 noun definitions -> {len(set(labels))} topics, {len(texts)} examples")
    print(f"      ({dataset.info.licence.split(':')[0]})\n")

    training = TrainingArgs(**{**DEMO_TRAINING, "seed": seed, **({"epochs": epochs} if epochs is not None else {})})
    start = time.perf_counter()
    # The whole dataset goes by name (the same texts, labels and order as `data`), so the model records a
    # source its splits rebuild from: quantize, prune, export and robustness then use its own test split.
    whole = len(texts) == len(dataset.texts)
    try:
        result = train("wordnet_topics" if whole else data, out, model="encoder", model_options=DEMO_MODEL,
                       args=training, overwrite=True)  # fmt: skip
    except TrainingInterrupted:  # its own message says "--resume", which the demo does not take
        raise TrainingInterrupted(f"the demo was interrupted before writing {out}; `attend demo` starts it again "
                                  "(the partial run beside it is discarded then)") from None  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    print(f"\ntrained a {DEMO_MODEL['num_layers']}-layer attention encoder in {minutes:.1f} min")
    print(result.report)

    # The report above ends with the TF-IDF + logistic regression baseline on the same test split.

    predictor = load(out)
    assert isinstance(predictor, TextClassifier)
    _, _, test_idx = stratified_split(data, seed=seed)
    example = min(test_idx[:200], key=lambda i: abs(len(texts[i].split()) - 10))
    show_explanation(predictor, texts[example], labels[example], Path(out) / DEMO_PAGE)
    print(f"\nmodel directory: {Path(out).resolve()}")
    print(f'try: attend predict {out} "a small furry animal that hunts mice"')
    if not whole:  # they had failed, each with "its training data was passed in already loaded"
        print(f"note: this model learned from a sample (--limit {limit}), which is no file: quantize and prune, "
              "which measure on its test split rebuilt from its data, need --data FILE (labelled texts of its "
              "topics); run `attend demo` without --limit for a model they take as it is")  # fmt: skip
    return 0
