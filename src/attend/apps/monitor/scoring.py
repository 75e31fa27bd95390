"""Score events in batches: negative probability, topic, and the words the sentiment rested on.

The words are the sentiment model's own explanation of its prediction (:func:`attend.explain.explain`,
gradient-weighted attention by default: the most faithful attention method in ``attend
faithfulness``), read out in the text's own spelling and with word pieces joined back into words,
so an alert can show *why* the texts behind a surge were judged negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from attend.apps.monitor.events import Event, format_time
from attend.apps.monitor.store import StoredEvent
from attend.explain import METHODS, Explanation, available_methods, explain
from attend.explain.protocol import check_classifier
from attend.runtime import TextClassifier

__all__ = ["NEGATIVE_NAMES", "Scorer", "find_negative_label", "top_words"]

#: Label names taken to mean "negative" when ``--negative-label`` is not given (case-insensitive).
NEGATIVE_NAMES = ("negative", "neg", "rotten", "bad")

#: The topic of every event when neither the stream nor a topic model gives one.
DEFAULT_TOPIC = "all"


def find_negative_label(predictor: TextClassifier, given: str | None = None) -> str:
    """The model's label for negative sentiment: ``given`` if it is one, else the one that is named so.

    Raises:
        ValueError: ``given`` is not a label, or no single label looks negative (lists the labels).
    """
    if not isinstance(predictor, TextClassifier):  # a recommender had failed on its missing .labels
        kind = getattr(predictor, "task", None) or type(predictor).__name__
        raise ValueError(f"the monitor scores sentiment with a text classifier, not a {kind} model")
    where = f"the model {predictor.path}" if predictor.path else "the model"
    if given is not None:
        if given not in predictor.labels:
            raise ValueError(f"--negative-label {given!r} is not a label of {where}; its labels are {predictor.labels}")
        return given
    found = [label for label in predictor.labels if label.strip().lower() in NEGATIVE_NAMES]
    if len(found) != 1:
        why = "several labels look negative" if found else "no label is named like negative/neg/rotten/bad"
        raise ValueError(f"cannot tell which label of {where} means negative ({why}); its labels are "
                         f"{predictor.labels}: pass --negative-label LABEL")  # fmt: skip
    return found[0]


def top_words(explanation: Explanation, k: int) -> list[tuple[str, float]]:
    """The ``k`` most important words, as the text spells them, with word pieces merged.

    A word's weight is the sum of its pieces' importance; a word that occurs twice is listed once,
    with its larger weight; tokens without a letter or digit (punctuation) are left out: people
    read highlighted *words*.
    """
    words: list[list[object]] = []
    for token, shown, value, special in zip(explanation.tokens, explanation.display_tokens(), explanation.importance,
                                            explanation.special, strict=True):  # fmt: skip
        if special:
            continue
        if token.startswith("##") and words:
            words[-1][0] = f"{words[-1][0]}{shown.removeprefix('##')}"
            words[-1][1] = float(words[-1][1]) + float(value)  # type: ignore[arg-type]
        else:
            words.append([shown, float(value)])
    best: dict[str, tuple[str, float]] = {}  # a repeated word counts once, at its strongest
    for word, value in words:
        text, weight = str(word), float(value)  # type: ignore[arg-type]
        if any(c.isalnum() for c in text) and weight > best.get(text.lower(), ("", -1.0))[1]:
            best[text.lower()] = (best.get(text.lower(), (text, 0.0))[0], weight)
    ranked = sorted(best.values(), key=lambda p: -p[1])
    return [(word, round(value, 4)) for word, value in ranked[: max(0, k)]]


@dataclass
class Scorer:
    """The models the monitor runs on each batch.

    Attributes:
        sentiment: The sentiment classifier.
        negative_label: Its label for negative (see :func:`find_negative_label`).
        topic_model: Assigns a topic to events whose stream gives none (optional).
        method: Explanation method for the highlighted words (one of :data:`attend.explain.METHODS`).
        words: How many words to keep per event.
        batch_size: Texts per forward pass.
    """

    sentiment: TextClassifier
    negative_label: str
    topic_model: TextClassifier | None = None
    method: str = "grad_attention"
    words: int = 4
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_classifier(self.sentiment, "Scorer(sentiment=...)")
        if self.topic_model is not None:
            check_classifier(self.topic_model, "Scorer(topic_model=...)")
        if self.negative_label not in self.sentiment.labels:
            raise ValueError(f"negative_label {self.negative_label!r} is not one of {self.sentiment.labels}")
        if self.method not in METHODS:
            raise ValueError(f"--explain-method {self.method!r}: choose one of {list(METHODS)}")
        offered = available_methods(self.sentiment)
        if self.words and self.method not in offered:  # found at the first batch, and over HTTP a 500 each
            choose = f"choose one of {', '.join(offered)}, or" if offered else "it records no attention:"
            raise ValueError(f"--explain-method {self.method}: the model cannot be explained with it ({choose} "
                             "--top-words 0 for no highlighted words)")  # fmt: skip
        if self.words < 0:
            raise ValueError(f"--top-words {self.words} must be >= 0")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size} must be >= 1")

    def score(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Score a batch; one model call per model (batched inside), in the order given. A text the
        sentiment model cannot read at all (every piece ``[UNK]``: another script, emoji only) is
        marked ``unreadable``, as ``attend predict`` flags it: its scores are the model's guess."""
        if not events:
            return []
        texts = [e.text for e in events]
        found = self.sentiment.predictions(texts, batch_size=self.batch_size)
        probs = found.probs
        neg = self.sentiment.labels.index(self.negative_label)
        if self.sentiment.multi_label:
            negative = probs[:, neg] >= 0.5
        else:
            negative = probs.argmax(1) == neg
        explained = explain(self.sentiment, texts, self.method, batch_size=self.batch_size) if self.words else None
        topics: list[str | None] = [e.topic for e in events]
        topic_probs: list[float | None] = [None] * len(events)
        need = [i for i, topic in enumerate(topics) if topic is None]
        if need and self.topic_model is not None:
            topic_p = self.topic_model.predict_proba([texts[i] for i in need], batch_size=self.batch_size)
            for i, row in zip(need, topic_p, strict=True):
                best = int(np.argmax(row))
                topics[i], topic_probs[i] = self.topic_model.labels[best], float(row[best])
        labels = self.sentiment.labels
        return [
            StoredEvent(
                id=event.id, topic=topics[i] or DEFAULT_TOPIC, ts=event.ts, time=format_time(event.time),
                text=event.text, source=event.source, label=labels[int(np.argmax(probs[i]))],
                negative=bool(negative[i]), negative_prob=float(probs[i, neg]),
                scores={label: round(float(p), 6) for label, p in zip(labels, probs[i], strict=True)},
                topic_prob=topic_probs[i],
                words=top_words(explained[i], self.words) if explained is not None else [],
                unreadable=bool(found.unknown[i]),
            )
            for i, event in enumerate(events)
        ]


def load_text_classifier(path: str, flag: str = "--topic-model") -> TextClassifier:
    """The text classifier at ``path`` (the sentiment model, or the one that gives topics to events
    without one), named by ``flag`` in errors: another kind of model is refused, not run on the events."""
    from attend.runtime import load

    model = load(path)
    if not isinstance(model, TextClassifier):
        raise ValueError(f"{flag} {path}: a {getattr(model, 'task', 'other')} model, not a text classifier")
    return model
