"""How a text classifier holds up under noisy input: seeded perturbations and a greedy attack.

Two measurements, each on the same rows as clean accuracy:

* **Perturbations.** Every perturbation of :data:`attend.data.noise.PERTURBATIONS` (typos,
  character drops, word dropout, swaps, WordNet synonyms, casing; defined in
  :mod:`attend.data.noise`) is applied to ``rate`` of each text's words, and the accuracy on the
  noisy texts is reported beside the clean one. Example ``i`` is perturbed with
  ``random.Random(f"{seed}:{name}:{i}")``, so a result depends on the seed and the row only, never
  on batching or on which other perturbations ran.
* **Greedy word substitution.** In the spirit of TextFooler (Jin et al. 2020, "Is BERT Really
  Robust?"): on correctly classified examples, words are ranked by importance (how much the true
  label's probability drops when the word is deleted) and replaced in that order by the candidate
  that lowers the true label's probability most (WordNet synonyms and a few keyboard typos), until
  the predicted label changes (success) or a budget of changed words is spent (failure). Unlike
  TextFooler there is no sentence-encoder similarity filter and no part-of-speech check: synonyms
  hold for *some* sense of a word, so some successes change the meaning and the success rate can
  overstate how fragile the model is.

Every model call is batched over all examples in play, so the attack costs one batched forward pass
for the deletions plus one per substitution round (at most the longest text's word count).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attend.data.datasets import names_dataset
from attend.data.noise import PERTURBATIONS, join_words, perturb, split_words, synonym_variants
from attend.data.readers import DataError, LabelledTexts, match_label
from attend.data.splits import DEFAULT_COLUMNS, load_labelled, model_column, rebuild_split
from attend.data.validation import text_problem
from attend.io import sha256_file, text_fingerprints
from attend.runtime.base import Runtime
from attend.runtime.classifier import TextClassifier

__all__ = [
    "Attack",
    "format_robustness",
    "greedy_attack",
    "perturbed_texts",
    "robustness",
    "robustness_rows",
]

#: Keyboard-typo candidates tried per word by the attack, beside its WordNet synonyms.
TYPO_CANDIDATES = 3


@dataclass(frozen=True)
class Attack:
    """The greedy word-substitution attack on one example.

    Attributes:
        index: The example's position in the texts given.
        text: The text as given.
        adversarial: The text after the substitutions made (``text`` when none lowered the
            true label's probability).
        label: The true label (the model predicted it for ``text``).
        predicted: The model's label for ``adversarial``; differs from ``label`` exactly when
            ``success``.
        success: The predicted label changed within the budget.
        words_changed: Words substituted.
        words_tried: Words that had a substitute to try (0: nothing could be attacked, e.g. a
            Chinese text, whose characters have no WordNet synonym or keyboard typo).
        words: Words in ``text`` (as :func:`attend.data.noise.split_words` counts them).
        probability: The true label's probability on ``text``.
        adversarial_probability: The true label's probability on ``adversarial``.
    """

    index: int
    text: str
    adversarial: str
    label: str
    predicted: str
    success: bool
    words_changed: int
    words_tried: int
    words: int
    probability: float
    adversarial_probability: float


@dataclass
class _InPlay:
    """One example while it is attacked."""

    index: int
    target: int
    words: list[str]
    gaps: list[str]
    limit: int
    probability: float
    order: list[int] = field(default_factory=list)
    next: int = 0
    changed: int = 0
    tried: int = 0
    predicted: int = -1
    done: bool = False
    success: bool = False


def _classifier(runtime: Runtime) -> TextClassifier:
    if not isinstance(runtime, TextClassifier):
        raise ValueError(
            f"robustness needs a text classifier; {runtime.path or 'this model'} is a {runtime.task} model"
        )
    if runtime.multi_label:
        raise ValueError(
            f"robustness measures single-label classifiers; {runtime.path or 'this model'} is multi-label "
            "(multi_label=true in its config.json)"
        )
    return runtime


def _share_read_otherwise(classifier: TextClassifier, texts: Sequence[str], noisy: Sequence[str]) -> float:
    """The share of ``texts`` whose ``noisy`` version the model reads as other tokens (for an
    ensemble, any member): a text changed in a way its tokenizer undoes is not changed for it."""
    if not texts:
        return 0.0
    differ = [i for i, (a, b) in enumerate(zip(texts, noisy, strict=True)) if a != b]
    if differ:
        members = getattr(classifier, "members", None) or [classifier]
        tokenizers = [m.tokenizer for m in _leaves(members)]
        before, after = [texts[i] for i in differ], [noisy[i] for i in differ]
        read = [tok.ids(before) for tok in tokenizers], [tok.ids(after) for tok in tokenizers]
        differ = [k for k in range(len(differ)) if any(a[k] != b[k] for a, b in zip(*read, strict=True))]
    return len(differ) / len(texts)


def _leaves(members: Sequence[Any]) -> list[Any]:
    """An ensemble's classifiers, an ensemble among them opened into its own."""
    return [leaf for m in members for leaf in (_leaves(m.members) if getattr(m, "members", None) else [m])]


def _targets(runtime: TextClassifier, labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(runtime.labels)}
    for i, label in enumerate(labels):
        if label not in index:
            raise ValueError(f"labels[{i}]={label!r} is not a label of the model ({', '.join(runtime.labels)})")
    return np.asarray([index[label] for label in labels], dtype=np.int64)


def perturbed_texts(texts: Sequence[str], name: str, *, seed: int = 0, rate: float = 0.1) -> list[str]:
    """``texts`` with perturbation ``name``, text ``i`` drawn from ``random.Random(f"{seed}:{name}:{i}")``.

    A perturbed text that no model could read (only invisible characters left, say word dropout
    keeping a lone zero-width space) stays as it was, so that one odd row never stops a run.
    """
    out = []
    for i, text in enumerate(texts):
        noisy = perturb(text, name, random.Random(f"{seed}:{name}:{i}"), rate)
        out.append(text if text_problem(noisy) is not None else noisy)
    return out


def _without(words: list[str], gaps: list[str], j: int) -> str:
    """The text with word ``j`` deleted, and the gap after it (before it, for the last word)."""
    cut = j + 1 if j + 1 < len(words) else j
    return join_words(words[:j] + words[j + 1 :], gaps[:cut] + gaps[cut + 1 :])


def _candidates(word: str, *, seed: int, index: int, position: int) -> list[str]:
    """Substitutes for ``word``: its WordNet synonyms, then a few seeded keyboard typos; never the word."""
    typos = [
        perturb(word, "typos", random.Random(f"{seed}:attack:{index}:{position}:{t}"), 1.0)
        for t in range(TYPO_CANDIDATES)
    ]
    return [c for c in dict.fromkeys([*synonym_variants(word), *typos]) if c != word]


def _rank_words(
    runtime: TextClassifier, play: list[_InPlay], batch_size: int, progress: Callable[[str], None] | None
) -> None:
    """Order each example's words by importance: the drop in the true label's probability when
    the word is deleted, largest first (ties: earlier word first). One batched pass for all."""
    texts, owners = [], []
    for k, example in enumerate(play):
        for j in range(len(example.words)):
            if len(example.words) > 1:
                text = _without(example.words, example.gaps, j)
                if text_problem(text) is None:
                    texts.append(text)
                    owners.append((k, j))
    if progress is not None:
        progress(f"attack: ranking words of {len(play)} examples ({len(texts)} deletions)")
    importance = [np.zeros(len(example.words)) for example in play]
    if texts:
        probs = runtime.predict_proba(texts, batch_size=batch_size)
        for (k, j), row in zip(owners, probs, strict=True):
            importance[k][j] = play[k].probability - float(row[play[k].target])
    for example, scores in zip(play, importance, strict=True):
        example.order = sorted(range(len(example.words)), key=lambda j: (-scores[j], j))


def _next_word(example: _InPlay, seed: int) -> tuple[int, list[str]] | None:
    """The next word (in importance order) that has a substitute, with its candidates; None (and the
    example is done) when no word is left. Each word is tried once: replaced words are never revisited."""
    while example.next < len(example.order):
        j = example.order[example.next]
        options = _candidates(example.words[j], seed=seed, index=example.index, position=j)
        if options:
            example.tried += 1
            return j, options
        example.next += 1
    example.done = True
    return None


def _substitute(example: _InPlay, j: int, options: list[str], probs: np.ndarray) -> None:
    """Take the candidate for word ``j`` that flips the prediction with the lowest true-label
    probability, else the one that lowers that probability most (none if no candidate lowers it)."""
    true = probs[:, example.target]
    flipped = np.flatnonzero(probs.argmax(1) != example.target)
    best = int(flipped[true[flipped].argmin()]) if len(flipped) else int(true.argmin())
    example.next += 1
    if len(flipped) or true[best] < example.probability:
        example.words[j] = options[best]
        example.changed += 1
        example.probability = float(true[best])
        example.predicted = int(probs[best].argmax())
        example.success = bool(len(flipped))
    example.done = example.success or example.changed >= example.limit or example.next >= len(example.order)


def _attack(
    runtime: TextClassifier,
    texts: Sequence[str],
    targets: np.ndarray,
    probs: np.ndarray,
    *,
    seed: int,
    examples: int,
    budget: float,
    batch_size: int,
    progress: Callable[[str], None] | None,
) -> list[Attack]:
    correct = [i for i in range(len(texts)) if int(probs[i].argmax()) == int(targets[i])]
    chosen = sorted(random.Random(f"{seed}:attack").sample(correct, min(examples, len(correct))))
    play = []
    for i in chosen:
        words, gaps = split_words(texts[i])
        target = int(targets[i])
        play.append(_InPlay(i, target, words, gaps, max(1, math.floor(budget * len(words) + 1e-9)),
                            float(probs[i, target])))
    _rank_words(runtime, play, batch_size, progress)
    rounds = 0
    while active := [example for example in play if not example.done]:
        rounds += 1
        tried = [(example, *step) for example in active if (step := _next_word(example, seed))]
        batch = [
            join_words([*example.words[:j], option, *example.words[j + 1 :]], example.gaps)
            for example, j, options in tried
            for option in options
        ]
        if not batch:
            break
        if progress is not None:
            progress(f"attack: round {rounds}, {len(tried)} examples in play, {len(batch)} candidate texts")
        found = runtime.predict_proba(batch, batch_size=batch_size)
        start = 0
        for example, j, options in tried:
            _substitute(example, j, options, found[start : start + len(options)])
            start += len(options)
    labels = runtime.labels
    return [
        Attack(
            index=example.index,
            text=texts[example.index],
            adversarial=join_words(example.words, example.gaps),
            label=labels[example.target],
            predicted=labels[example.predicted if example.changed else example.target],
            success=example.success,
            words_changed=example.changed,
            words_tried=example.tried,
            words=len(example.words),
            probability=float(probs[example.index, example.target]),
            adversarial_probability=example.probability,
        )
        for example in play
    ]


def _check_attack(examples: int, budget: float) -> None:
    if examples < 0:
        raise ValueError(f"attack_examples={examples} must be >= 0 (0: no attack)")
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"attack_budget={budget} must be in (0, 1]")


def greedy_attack(
    runtime: Runtime,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int = 0,
    examples: int = 200,
    budget: float = 0.2,
    batch_size: int = 128,
) -> list[Attack]:
    """Greedy word substitution (see the module docstring) on up to ``examples`` correctly
    classified texts, a sample seeded by ``seed``; one :class:`Attack` per attacked text, in row order.

    Args:
        runtime: A single-label text classifier.
        texts: The texts.
        labels: Their true labels (names the model knows).
        seed: Seeds the sample and the typo candidates.
        examples: Most texts to attack.
        budget: Most words changed per text, as a share of its words, rounded down and at least one:
            ``max(1, floor(budget * words))``.
        batch_size: Texts per model call.

    Raises:
        ValueError: a multi-label or non-classifier model, an unknown label, a bad option.
    """
    classifier = _classifier(runtime)
    _check_attack(examples, budget)
    targets = _targets(classifier, labels)
    probs = classifier.predict_proba(texts, batch_size=batch_size)
    return _attack(classifier, texts, targets, probs, seed=seed, examples=examples, budget=budget,
                   batch_size=batch_size, progress=None)  # fmt: skip


def _accuracy(probs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(probs.argmax(1) == targets))


def robustness(
    runtime: Runtime,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int = 0,
    rate: float = 0.1,
    attack_examples: int = 200,
    attack_budget: float = 0.2,
    rows: str = "the texts given",
    batch_size: int = 128,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Clean accuracy, accuracy under each perturbation, and the greedy attack's success rate.

    Args:
        runtime: A single-label text classifier.
        texts: The texts to measure on.
        labels: Their true labels.
        seed: Seeds every perturbation and the attack (same seed, same report).
        rate: Share of each text's words a perturbation changes, in (0, 1].
        attack_examples: Most correctly classified texts to attack (0: no attack).
        attack_budget: Most words the attack changes per text, as a share of its words.
        rows: Which rows these are, in words; reported as ``rows``.
        batch_size: Texts per model call (128, as ``evaluate`` uses, so clean accuracy matches it).
        progress: Called with a line of text at each stage, for long runs.

    Returns:
        ``{"clean", "perturbations": {name: accuracy}, "changed": {name: share of the texts the
        perturbation changed}, "attack": {"success_rate", "attacked", "unattackable", "mean_words_changed",
        "budget", "requested" (``attack_examples``)},
        "examples", "rows"}``. ``success_rate`` is successes /
        attacked (None when nothing was attacked); ``unattackable`` counts the attacked examples
        with no word that has a substitute (a success rate over them says nothing of robustness),
        and ``success_rate_attackable`` is successes / the others (None when there are none);
        ``mean_words_changed`` is over successes (None without any).

    Raises:
        ValueError: a multi-label or non-classifier model, no texts, texts and labels of
            different lengths, an unknown label, or an option out of range (each named).
    """
    classifier = _classifier(runtime)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate={rate} must be in (0, 1]")
    _check_attack(attack_examples, attack_budget)
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels differ in length ({len(texts)} vs {len(labels)})")
    targets = _targets(classifier, labels)
    if progress is not None:
        progress(f"clean: {len(texts)} texts")
    probs = classifier.predict_proba(texts, batch_size=batch_size)
    perturbed, changed = {}, {}
    for name in PERTURBATIONS:
        if progress is not None:
            progress(f"perturbation: {name}")
        noisy = perturbed_texts(texts, name, seed=seed, rate=rate)
        perturbed[name] = _accuracy(classifier.predict_proba(noisy, batch_size=batch_size), targets)
        # A perturbation that cannot touch what the model reads (typos on Chinese characters; casing, for
        # a tokenizer that lowercases) leaves it as it was: its accuracy then says nothing of robustness,
        # which the share says (casing had been "100 % changed" for a model that reads none of it).
        changed[name] = _share_read_otherwise(classifier, texts, noisy)
    attacks = _attack(classifier, texts, targets, probs, seed=seed, examples=attack_examples, budget=attack_budget,
                      batch_size=batch_size, progress=progress)  # fmt: skip
    successes = [a for a in attacks if a.success]
    attackable = sum(a.words_tried > 0 for a in attacks)
    return {
        "clean": _accuracy(probs, targets),
        "perturbations": perturbed,
        "changed": changed,
        "attack": {
            "success_rate": len(successes) / len(attacks) if attacks else None,
            "attacked": len(attacks),
            "unattackable": len(attacks) - attackable,
            # over the texts that had a word to change: a mixed-language set had halved the rate above
            "success_rate_attackable": len(successes) / attackable if attackable else None,
            "mean_words_changed": float(np.mean([a.words_changed for a in successes])) if successes else None,
            "budget": attack_budget,
            # asked for (--attack-examples; 0 is no attack, not one that found nothing to attack): named so it is
            # not read as a count of texts beside the report's own "examples" (it had been "examples" too)
            "requested": attack_examples,
        },
        "examples": len(texts),
        "rows": rows,
    }


def _training_split(
    runtime: TextClassifier, data: str | os.PathLike[str], text_col: str | None, label_col: str | None
) -> tuple[LabelledTexts | None, str]:
    """The model's own test split when ``data`` is what it was trained on, else None; and why not.

    An ensemble's is its members' when they all hold out the same rows (members trained on the same
    data with the same seed, as ``--model auto``'s are); otherwise no rows are held out from all.
    """
    members = getattr(runtime, "members", None)
    if members:
        found = [_training_split(member, data, text_col, label_col) for member in members]
        first, note = found[0]
        if first is None:
            return None, f"its first member: {note}"
        if all(split is not None and split.texts == first.texts and split.labels == first.labels
               for split, _ in found[1:]):  # fmt: skip
            return first, note
        return None, "its members hold out different rows of this data (other seeds or splits)"
    recorded = runtime.config.get("data") or {}
    source = str(recorded.get("source") or "")
    if not source or recorded.get("rebuildable") is False:
        return None, "the model directory records no rebuildable training data"
    path = Path(data)
    config = dict(runtime.config)
    if source.startswith("dataset:"):
        same = names_dataset(data) and str(data) == source.removeprefix("dataset:")
    elif recorded.get("sha256"):
        same = path.is_file() and sha256_file(path) == recorded["sha256"]
    else:
        same = path.is_file() and str(path.resolve()) == str(recorded.get("path"))
    if not same:
        return None, "not the file the model was trained from"
    given = {"text_col": text_col, "label_col": label_col}
    if any(value is not None and value != recorded.get(name, DEFAULT_COLUMNS[name]) for name, value in given.items()):
        return None, "the model's training data, read with other columns than training read it"
    if not source.startswith("dataset:"):
        config["data"] = {**recorded, "path": str(path.resolve())}  # the very bytes, wherever they are now
    try:
        split = rebuild_split(config, "test")
        if not len(split):
            return rebuild_split(config, "dev"), "dev"
    except DataError as exc:
        return None, f"its test split could not be rebuilt: {exc}"
    return split, "test"


def robustness_rows(
    runtime: Runtime,
    data: str | os.PathLike[str],
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    limit: int = 2000,
    seed: int = 0,
) -> tuple[LabelledTexts, str]:
    """The labelled rows ``attend robustness`` measures on, and a description of them.

    When ``data`` (a file or a bundled dataset name) is what the model was trained on, read the
    same way, its test split (dev when training held out no test rows) is rebuilt exactly as
    ``attend train`` made it (:func:`attend.data.splits.rebuild_split`), so no training text is
    measured; otherwise every row of ``data``, as ``attend evaluate`` reads it. Columns default to
    the ones the model was trained with (else ``text`` and ``label``). Then, when there are more
    than ``limit`` rows (0: no limit), a sample of ``limit`` seeded by ``seed``, in file order.

    Raises:
        ValueError: a multi-label or non-classifier model, ``limit < 0``, an unreadable file, a
            missing column, no rows, or a label the model does not know (with its line).
    """
    classifier = _classifier(runtime)
    if limit < 0:
        raise ValueError(f"limit={limit} must be >= 0 (0: every row)")
    dataset, note = _training_split(classifier, data, text_col, label_col)
    if dataset is not None:
        described = f"{note} split of {dataset.source}, rebuilt as `attend train` made it ({len(dataset)} rows)"
    else:
        dataset = load_labelled(data, text_col=model_column(classifier.config, classifier.path, "text_col", text_col),
                                label_col=model_column(classifier.config, classifier.path, "label_col", label_col))
        total = len(dataset)
        described = f"{total} rows of {dataset.source} ({note})"
        dataset, left_out = _held_out(classifier, dataset)
        if left_out is None:
            described += "; the model directory does not say which texts it trained on"
        elif left_out:  # it had said "the 40 rows ... 32 of them, texts the model trained on, left out" of 8 measured
            described = (f"{len(dataset)} of the {total} rows of {dataset.source} ({note}): the other {left_out} are "
                         "texts the model trained on, left out")  # fmt: skip
            if not len(dataset):
                raise DataError(f"{dataset.source}: every row is a text the model trained on: nothing held out to "
                                "measure on")  # fmt: skip
    if not len(dataset):
        raise DataError(f"{dataset.source}: no rows to measure on")
    for labels, line in zip(dataset.labels, dataset.lines or range(1, len(dataset) + 1), strict=True):
        spelled = match_label(labels[0], classifier.labels)  # the model's spelling (1 for its 1.0)
        if spelled is not None:
            labels[0] = spelled
        else:
            raise DataError(f"{dataset.source} line {line}: label {labels[0]!r} is not one the model knows "
                            f"({', '.join(classifier.labels)})")  # fmt: skip
    if limit and len(dataset) > limit:
        dataset = dataset.subset(sorted(random.Random(seed).sample(range(len(dataset)), limit)))
        described += f"; measured on a seeded sample of {limit} of them"
    return dataset, described


def _held_out(runtime: TextClassifier, dataset: LabelledTexts) -> tuple[LabelledTexts, int | None]:
    """``dataset`` less the texts the model trained on (its directory's fingerprints of them; an
    ensemble's, every member's), and how many were left out (None: the directory does not say)."""
    seen = runtime.training_fingerprints()
    if seen is None:
        return dataset, None
    keep = [i for i, value in enumerate(text_fingerprints(dataset.texts).tolist()) if value not in seen]
    if len(keep) == len(dataset):
        return dataset, 0
    return dataset.subset(keep), len(dataset) - len(keep)


def format_robustness(report: dict[str, Any]) -> str:
    """A plain-text table: clean accuracy, each perturbation's accuracy and change, the attack."""
    clean = report["clean"]
    changed = report.get("changed") or {}
    header = f"{'':<14}{'accuracy':>9}{'change':>9}{'texts read otherwise':>22}"
    lines = [f"measured on the {report['rows']}", "", header, f"{'clean':<14}{clean:>9.4f}"]
    for name, accuracy in report["perturbations"].items():
        share = f"{100 * changed[name]:>21.1f}%" if name in changed else ""
        lines.append(f"{name:<14}{accuracy:>9.4f}{100 * (accuracy - clean):>+9.2f}{share}")
    untouched = [name for name in report["perturbations"] if changed.get(name) == 0]
    if untouched:
        lines.append(f"({', '.join(untouched)} changed nothing the model reads here, e.g. Chinese characters have no "
                     "letter case or WordNet synonym, and a tokenizer that lowercases reads every casing alike: their "
                     "accuracy is the clean one, not a measure of robustness)")  # fmt: skip
    attack = report["attack"]
    budget = f"at most {100 * attack['budget']:g}% of a text's words changed, and at least one"
    if attack.get("requested", attack.get("examples")) == 0:  # "examples" in a report of an earlier attend
        lines.append("\ngreedy word substitution: not run (--attack-examples 0)")
    elif not attack["attacked"]:
        lines.append(f"\ngreedy word substitution ({budget}): no correctly classified example attacked")
    else:
        words = attack["mean_words_changed"]
        changed = f", changing {words:.2f} words on average" if words is not None else ""
        lines.append(f"\ngreedy word substitution ({budget}):\n  success rate {100 * attack['success_rate']:.1f}% "
                     f"of {attack['attacked']} correctly classified examples{changed}")  # fmt: skip
        why = "e.g. Chinese characters have no WordNet synonym or keyboard typo"
        if (unattackable := attack.get("unattackable")) and unattackable == attack["attacked"]:
            lines.append(f"  (none of them had a word with a substitute to try ({why}): nothing could be changed, "
                         "so this rate is no measure of robustness)")  # fmt: skip
        elif unattackable:
            rate = attack.get("success_rate_attackable")  # not in a report of an earlier attend
            over = "" if rate is None else (f"; over the {attack['attacked'] - unattackable} that had one, the success "
                                            f"rate is {100 * rate:.1f}%")  # fmt: skip
            lines.append(f"  ({unattackable} of them had no word with a substitute to try ({why}) and count as "
                         f"not flipped{over})")  # fmt: skip
    return "\n".join(lines)
