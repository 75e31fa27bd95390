"""What the focus assistant reads a message with: one MiniLM pass, and the attention from the task.

Every message (subject and body) and every task description is read once by attend's MiniLM
(all-MiniLM-L6-v2 from the installed package, :mod:`attend.apps.support.encoder`): the last
layer's token states and their mean, L2-normalised (the sentence embedding). Everything the
components need comes from that one pass:

- **Relevance to the task** reads the cross-attention from the task's tokens (queries) to the
  message's tokens (keys), scored by attend.attention's ``cosine`` score (a temperature times
  the cosine of two token states) and softmax-normalised over the message's content tokens. The
  attention mass each message token receives is the highlight: the words that linked the message
  to the task, each paired with the task word that attended to it most. The similarities drawn from
  it, and how the relevance head reads them, are in :mod:`attend.apps.focus.assistant`.
- **Urgency** reads the sentence embedding and the max-pooled token states (a logistic regression,
  :mod:`attend.apps.focus.assistant`); its logit splits over the tokens, which gives its highlights.

Texts are read to :data:`MAX_TOKENS` tokens (a longer message is judged by its beginning and
flagged ``truncated``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attend.apps.support.encoder import SentenceEncoder, load_encoder
from attend.attention import build_score
from attend.data.batching import length_batches

__all__ = [
    "ATTENTION_TAU",
    "MAX_TOKENS",
    "CrossAttention",
    "Reading",
    "TextReader",
    "Weighted",
    "cross_attention",
    "merge_words",
    "token_words",
    "unreadable_letters",
]

#: Most tokens read of a message (``[CLS]``/``[SEP]`` included); all-MiniLM-L6-v2 reads up to 512.
MAX_TOKENS = 256
#: Longest highlight text shown; a longer "word" (a URL, a base64 blob) is cut, ending in "…".
MAX_HIGHLIGHT = 60
#: Temperature of the task-to-message cross-attention (cosines in [-1, 1] times 20): sharp
#: enough that one strongly matching word can take most of a task word's attention, soft enough
#: that near-synonyms share it. Fixed before any evaluation.
ATTENTION_TAU = 20.0


@dataclass(frozen=True)
class Reading:
    """One text as the encoder read it.

    Attributes:
        text: The text read.
        embedding: Its sentence embedding ``(E,)``, unit length.
        states: Last-layer states of its real tokens ``(L, E)`` (special tokens excluded).
        spans: Each of those tokens' character span in ``text``.
        pieces: Each token as the tokenizer wrote it (``##`` marks a word's continuation).
        truncated: Whether the text was longer than :data:`MAX_TOKENS`.
        content: ``(L,)`` True for tokens of content words: words with a letter or digit that are
            not on scikit-learn's generic English stop-word list. Attention between tasks and
            messages runs over content tokens (else "and" attends to "and" in every message).
    """

    text: str
    embedding: Tensor
    states: Tensor
    spans: list[tuple[int, int]]
    pieces: list[str]
    truncated: bool
    content: Tensor


@dataclass(frozen=True)
class Weighted:
    """A word of a message and its weight (the weights of one list sum to 1)."""

    text: str
    start: int
    end: int
    weight: float
    link: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"text": self.text, "weight": round(self.weight, 4)}
        if self.link is not None:
            out["linked_to"] = self.link
        return out


class TextReader:
    """Reads texts with MiniLM into :class:`Reading` objects (batched by length)."""

    def __init__(self, encoder: SentenceEncoder | None = None) -> None:
        self.encoder = encoder if encoder is not None else load_encoder()
        self.tokenizer = self.encoder.tokenizer
        self.model = self.encoder.model

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @torch.inference_mode()
    def read(self, texts: Sequence[str], *, batch_size: int = 32,
             progress: Callable[[int], None] | None = None) -> list[Reading]:  # fmt: skip
        """Each text's reading, in order; ``progress`` is called with the number of texts each batch read."""
        encodings = self.tokenizer.tokenizer.encode_batch(list(texts))
        out: list[Reading | None] = [None] * len(texts)
        rows = []
        for enc in encodings:
            ids, special, offsets = enc.ids, enc.special_tokens_mask, enc.offsets
            if len(ids) > MAX_TOKENS:  # keep the head and the closing [SEP]
                ids, special, offsets = (
                    [*ids[: MAX_TOKENS - 1], ids[-1]],
                    [*special[: MAX_TOKENS - 1], special[-1]],
                    [*offsets[: MAX_TOKENS - 1], offsets[-1]],
                )
            rows.append((ids, special, offsets, len(enc.ids) > MAX_TOKENS))
        for chunk in length_batches([len(r[0]) for r in rows], batch_size):
            inputs = self.tokenizer.pad([rows[i][0] for i in chunk])
            mask = inputs["attention_mask"]
            hidden = self.model.encoder(inputs["input_ids"], mask).float()  # (B, L, E)
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            embeddings = F.normalize(pooled, dim=-1)  # (B, E): the sentence-transformers recipe
            for b, i in enumerate(chunk):
                ids, special, offsets, truncated = rows[i]
                keep = [t for t in range(len(ids)) if not special[t]]
                pieces = [self.tokenizer.tokenizer.id_to_token(ids[t]) or "" for t in keep]
                spans = [tuple(offsets[t]) for t in keep]
                out[i] = Reading(
                    text=texts[i],
                    embedding=embeddings[b],
                    states=hidden[b, keep],  # (L_real, E)
                    spans=spans,  # type: ignore[arg-type]
                    pieces=pieces,
                    truncated=truncated,
                    content=_content_mask(texts[i], pieces, spans),  # type: ignore[arg-type]
                )
            if progress is not None:
                progress(len(chunk))
        return out  # type: ignore[return-value]


def _content_mask(text: str, pieces: Sequence[str], spans: Sequence[tuple[int, int]]) -> Tensor:
    """True for the tokens of content words (see :attr:`Reading.content`)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    word_of: list[int] = []  # token -> index of its word
    words: list[list[int]] = []  # [start, end]
    for piece, span in zip(pieces, spans, strict=True):
        if words and piece.startswith("##") and span[0] == words[-1][1]:
            words[-1][1] = span[1]
        else:
            words.append([span[0], span[1]])
        word_of.append(len(words) - 1)
    # One-character words ("s" of "Anna's", "t" of "don't") carry no topic either.
    keep = [len(text[a:b]) > 1 and any(c.isalnum() for c in text[a:b]) and text[a:b].lower() not in ENGLISH_STOP_WORDS
            for a, b in words]  # fmt: skip
    return torch.tensor([keep[w] for w in word_of], dtype=torch.bool)


@dataclass(frozen=True)
class CrossAttention:
    """The task's attention over one message.

    Attributes:
        weights: ``(Lt, Lm)`` attention of each of the task's content tokens over the message's
            tokens (rows sum to 1; the message's non-content tokens get 0).
        similarity: ``(Lt, Lm)`` cosine of each of those task tokens' state with each message token's.
        queries: ``(Lt,)`` the task tokens that are the queries (indices into ``task.pieces``).
        sentence_similarity: Cosine of the two sentence embeddings.
        attended_similarity: Mean over task tokens of the cosine each finds under its attention.
        received: ``(Lm,)`` attention mass each message token receives (mean over task tokens; sums to 1).
    """

    weights: Tensor
    similarity: Tensor
    queries: Tensor
    sentence_similarity: float
    attended_similarity: float
    received: Tensor


_SCORE = build_score("cosine", 1, 1, init_tau=ATTENTION_TAU)  # head_dim only sizes learned parts; cosine has none


@torch.inference_mode()
def cross_attention(task: Reading, message: Reading) -> CrossAttention:
    """Attention from ``task``'s tokens (queries) to ``message``'s tokens (keys)."""
    if not len(task.pieces) or not len(message.pieces):
        empty = torch.zeros((len(task.pieces), len(message.pieces)))
        cosine = float(task.embedding @ message.embedding)
        return CrossAttention(
            empty, empty, torch.arange(len(task.pieces)), cosine, 0.0, torch.zeros(len(message.pieces))
        )
    queries = task.content if bool(task.content.any()) else torch.ones_like(task.content)
    keys = message.content if bool(message.content.any()) else torch.ones_like(message.content)
    q = task.states[queries][None, None]  # (1, 1, Lt, E): the task's content tokens
    k = message.states[None, None]  # (1, 1, Lm, E)
    scores = _SCORE(q, k)[0, 0]  # (Lt, Lm) = tau * cos
    similarity = scores / ATTENTION_TAU
    weights = scores.masked_fill(~keys, float("-inf")).softmax(-1)  # attend to content tokens only
    attended = (weights * similarity).sum(-1).mean()
    return CrossAttention(
        weights=weights,
        similarity=similarity,
        queries=queries.nonzero().flatten(),
        sentence_similarity=float(task.embedding @ message.embedding),
        attended_similarity=float(attended),
        received=weights.mean(0),
    )


def unreadable_letters(reading: Reading) -> tuple[int, int]:
    """``(unreadable, letters)``: of the letters read (the truncated tail is not), how many the
    encoder cannot read, i.e. letters inside a piece it does not know (``[UNK]``) or spelled out
    one piece per letter of a script outside its word vocabulary (a single non-ASCII letter:
    Arabic, Hangul, Devanagari or Cyrillic to the English MiniLM, which knows their letters but no
    words). Emoji and digits are not letters: a message of them has nothing to read. An unknown
    piece of ASCII letters only is an over-long token (a URL, a base64 blob), no language at all:
    it counts on neither side."""
    unreadable = letters = 0
    for piece, (start, end) in zip(reading.pieces, reading.spans, strict=True):
        found = [c for c in reading.text[start:end] if c.isalpha()]
        core = piece.removeprefix("##")
        if piece == "[UNK]" and all(c.isascii() for c in found):
            continue
        letters += len(found)
        if piece == "[UNK]" or (len(core) == 1 and core.isalpha() and not core.isascii()):
            unreadable += len(found)
    return unreadable, letters


def token_words(reading: Reading) -> list[str]:
    """For each token of ``reading``, the whole word it belongs to (``##`` pieces joined)."""
    bounds: list[list[int]] = []
    word_of: list[int] = []
    for piece, span in zip(reading.pieces, reading.spans, strict=True):
        if bounds and piece.startswith("##") and span[0] == bounds[-1][1]:
            bounds[-1][1] = span[1]
        else:
            bounds.append([span[0], span[1]])
        word_of.append(len(bounds) - 1)
    return [reading.text[bounds[w][0] : bounds[w][1]] for w in word_of]


def merge_words(reading: Reading, token_weights: Sequence[float], *, links: Sequence[str | None] | None = None,
                top: int = 8) -> list[Weighted]:  # fmt: skip
    """Sum token weights into the words of ``reading.text`` (``##`` pieces join their word), keep
    words with a letter or digit and some weight, renormalise to sum 1 and return the ``top``
    heaviest, heaviest first. A word that occurs several times is one highlight (its occurrences'
    weights summed, at its heaviest occurrence): a long mail had listed one word seven times.

    Negative weights count as 0 (a highlight shows what pushed *towards* the decision).
    """
    words: list[list] = []  # [start, end, weight, link, best token weight]
    for t, (piece, span) in enumerate(zip(reading.pieces, reading.spans, strict=True)):
        weight = max(0.0, float(token_weights[t]))
        link = links[t] if links is not None else None
        if words and piece.startswith("##") and span[0] == words[-1][1]:
            words[-1][1] = span[1]
            words[-1][2] += weight
            if weight > words[-1][4]:
                words[-1][3], words[-1][4] = link, weight
        else:
            words.append([span[0], span[1], weight, link, weight])
    text = reading.text
    kept = [w for w in words if w[2] > 0 and any(c.isalnum() for c in text[w[0] : w[1]])]  # weightless: not shown
    total = sum(w[2] for w in kept)
    if total <= 0 or not math.isfinite(total):
        return []
    by_word: dict[str, list] = {}
    for word in sorted(kept, key=lambda w: -w[2]):  # heaviest occurrence first: its place and link are kept
        key = text[word[0] : word[1]].casefold()
        if key in by_word:
            by_word[key][2] += word[2]
        else:
            by_word[key] = list(word)
    ranked = sorted(by_word.values(), key=lambda w: -w[2])[:top]
    return [Weighted(_shown(text[a:b]), a, b, weight / total, link) for a, b, weight, link, _ in ranked]


def _shown(word: str) -> str:
    return word if len(word) <= MAX_HIGHLIGHT else word[: MAX_HIGHLIGHT - 1] + "…"
