"""The digest: held messages grouped by topic, ranked, each with its key sentence.

- **Groups**: agglomerative clustering of the messages' sentence embeddings (average linkage,
  cosine distance), cut where the average distance passes :data:`GROUP_DISTANCE`: messages about
  one thing share a group whatever their count. A group is named by its most central message's
  subject (or key sentence).
- **Ranking**: groups by their best message's score, messages within a group by score (the
  probability that the message needed the person, which the decision computed).
- **Key sentence**: attention-based extraction. The message is read by MiniLM with its attention
  recorded (:func:`attend.attention.capture_attention`, fused path kept); the attention each token
  *receives*, summed over all tokens' queries, averaged over heads and layers, is its centrality
  (the tokens the encoder keeps looking at). ``[CLS]``/``[SEP]`` and punctuation, which collect
  attention as no-op sinks (Clark et al. 2019), are left out; the sentence with the highest mean
  centrality per token, among sentences of at least three words when there are any, is the key sentence.
  A run of over 300 characters without a sentence end is read as pieces of at most 300
  (:data:`MAX_SENTENCE_CHARS`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attend.apps.focus.components import TextReader
from attend.attention import capture_attention
from attend.data.noise import split_words

__all__ = ["GROUP_DISTANCE", "DigestGroup", "build_digest", "key_sentence"]

#: Cosine distance at which groups stop merging (average linkage): messages whose mean similarity
#: is under 0.45 are not one topic. Fixed before any evaluation.
GROUP_DISTANCE = 0.55

#: Where a sentence ends: . ! ? before a space or the end (not the point of "$49.95"), the CJK marks
#: (no space follows them), or a line break.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)|[。！？]+[”’」』）]*|\n")
#: A word with points inside that ends in one is an abbreviation ("p.m.", "e.g.", "U.S."), not a
#: sentence's end; a number ("2.5.") or a domain ("example.com.") is not one.
_ABBREVIATION = re.compile(r"(?:[A-Za-z]{1,3}\.)+[A-Za-z]{1,3}")


@dataclass
class DigestGroup:
    """One topic of the digest."""

    title: str
    score: float
    messages: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "score": round(self.score, 4), "messages": self.messages}


#: The longest key sentence, in characters: a longer run without a sentence end (a pasted log, a
#: message with no punctuation) is read as pieces of at most this many, cut at a space where there is one.
MAX_SENTENCE_CHARS = 300


#: A line at least this long that ends without a sentence mark runs on into the next (a mail wrapped
#: at 72-78 columns): its line break is no sentence end. A shorter one (a heading, a list item) is.
WRAPPED_LINE = 50
#: What begins a line of its own even after a long one: a list item, a blank line.
_OWN_LINE = re.compile(r"[ \t]*(?:\n|[-*•]\s|\d+[.)]\s)")


def _wrapped(text: str, point: int) -> bool:
    """Whether the line break at ``point`` wraps a long line of one paragraph (plain-text mail): its
    key sentence had been one wrapped line, "... rehearse the spring programme in the community hall next"."""
    line = text[text.rfind("\n", 0, point) + 1 : point]
    return len(line.rstrip()) >= WRAPPED_LINE and not _OWN_LINE.match(text, point + 1)


def _sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        if end.group().startswith(".") and _abbreviation(text, end.start()):
            continue
        if end.group() == "\n" and _wrapped(text, end.start()):
            continue
        if text[start : end.end()].strip():
            spans.append((start, end.end()))
        start = end.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return [piece for span in spans or [(0, len(text))] for piece in _pieces(text, *span)]


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """``text[start:end]`` as spans of at most :data:`MAX_SENTENCE_CHARS`, each cut after the last
    space within the limit (or at the limit where there is none), blank pieces left out."""
    pieces = []
    while end - start > MAX_SENTENCE_CHARS:
        cut = text.rfind(" ", start + 1, start + MAX_SENTENCE_CHARS + 1)
        cut = cut if cut > start else start + MAX_SENTENCE_CHARS
        if text[start:cut].strip():
            pieces.append((start, cut))
        start = cut
    if text[start:end].strip():
        pieces.append((start, end))
    return pieces


def _abbreviation(text: str, point: int) -> bool:
    """Whether the full stop at ``point`` ends an abbreviation (:data:`_ABBREVIATION`, "(e.g."), or
    an initial before a name ("J. Smith"), not a sentence."""
    found = re.search(r"\S+$", text[:point])
    if found is None:
        return False
    word = found.group().lstrip("([{\"'“‘")
    after = text[point + 1 :].lstrip()
    initial = len(word) == 1 and word.isupper() and after[:1].isupper() and after.split(" ", 1)[0].isalpha()
    return _ABBREVIATION.fullmatch(word) is not None or initial


def _long_enough(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sentences of at least 3 words, the candidates for the key sentence (all, if none is): words
    as perturbations count them, a Chinese or Japanese character one (a whole Chinese sentence had been
    one word, so never a candidate beside an English "Meeting moved to 3pm.")."""
    return [s for s in spans if sum(any(c.isalnum() for c in word) for word in split_words(text[s[0] : s[1]])[0]) >= 3
            ] or spans  # words: pieces with a letter or digit (Chinese punctuation had counted as one)


@torch.inference_mode()
def key_sentence(reader: TextReader, text: str) -> str:
    """The sentence of ``text`` the encoder attends to most (see the module docstring)."""
    spans = _sentences(text)
    if len(spans) == 1:
        return text[spans[0][0] : spans[0][1]].strip()
    encoding = reader.tokenizer.encode([text], offsets=True)
    inputs = {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}
    with capture_attention(reader.model) as capture:
        reader.model.encoder(inputs["input_ids"], inputs["attention_mask"])  # type: ignore[operator]
    maps = torch.stack([w[0].float().mean(0) for w in capture.weights])  # (layers, L, L)
    received = maps.mean(0).sum(0)  # (L,): attention each token receives
    offsets = encoding["offsets"][0]
    best, best_score = spans[0], -1.0
    for start, end in _long_enough(text, spans):
        weights = [float(received[t]) for t, span in enumerate(offsets) if span is not None
                   and start <= span[0] < end and any(c.isalnum() for c in text[span[0] : span[1]])]  # fmt: skip
        if weights:
            score = sum(weights) / len(weights)
            if score > best_score:
                best, best_score = (start, end), score
    return text[best[0] : best[1]].strip()


def build_digest(reader: TextReader, messages: Sequence[dict[str, Any]],
                 embeddings: Sequence[Sequence[float]]) -> list[DigestGroup]:  # fmt: skip
    """Group, rank and summarise held messages (rows of the focus store, with their embeddings):
    every group, best first (a limit is the caller's, which says how many there were)."""
    if not messages:
        return []
    items = []
    for row in messages:
        text = row["text"] or row["subject"] or ""  # both empty: forgotten (`focus stop --forget`)
        items.append({"id": row["id"], "sender": row["sender"], "subject": row["subject"], "time": row["time"],
                      "score": round(float(row["score"]), 4), "channel": row["channel"],
                      "key_sentence": key_sentence(reader, text) if text else ""})  # fmt: skip
    vectors = torch.tensor([list(e) for e in embeddings], dtype=torch.float32)
    if len(items) == 1 or vectors.numel() == 0 or vectors.shape[1] == 0:
        labels = [0] * len(items) if len(items) == 1 else list(range(len(items)))
    else:
        from sklearn.cluster import AgglomerativeClustering

        clustering = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                             distance_threshold=GROUP_DISTANCE)  # fmt: skip
        labels = clustering.fit_predict(vectors.numpy()).tolist()
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    digest = []
    for members in groups.values():
        members.sort(key=lambda i: -items[i]["score"])
        if vectors.numel() and vectors.shape[1]:
            centre = vectors[members].mean(0)
            central = max(members, key=lambda i: float(vectors[i] @ centre))
        else:
            central = members[0]
        head = items[central]
        title = head["subject"] or head["key_sentence"] or "(forgotten)"
        title = title if len(title) <= 80 else title[:77].rstrip() + "..."
        digest.append(DigestGroup(title=title, score=items[members[0]]["score"], messages=[items[i] for i in members]))
    digest.sort(key=lambda g: -g.score)
    return digest
