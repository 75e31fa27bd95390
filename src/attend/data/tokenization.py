"""Tokenisers from Hugging Face ``tokenizers``: trained on the user's training split, saved as JSON.

A model trained from scratch gets a WordPiece (or BPE) vocabulary learned from its own
training texts, so it needs no download. The BERT normaliser puts spaces around every CJK
character, so Chinese is tokenised character by character, and English by words and
word pieces; text mixing both works. The pretrained MiniLM uses the tokenizer.json it ships
with. Either way the tokenizer is one ``tokenizer.json`` in the model directory.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor

__all__ = ["SEQUENCE_SPECIAL_TOKENS", "SPECIAL_TOKENS", "SubwordTokenizer", "TextTokenizer", "check_max_length",
           "pad_rows"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: A translator's special tokens, ids 0-3 in this order: padding, unknown, start and end of a sentence.
SEQUENCE_SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """``(ids, mask)``: id rows padded with ``pad_id`` to the longest, and 1 where a row has a token."""
    width = max((len(row) for row in rows), default=1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _read_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a corrupt file
        raise ValueError(f"{path}: not a valid tokenizer.json ({exc})") from None


def _save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike[str]) -> None:
    """Write ``tokenizer.json`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tokenizer.save(str(tmp))
    os.replace(tmp, path)


def _canonical_ids(tokenizer: Tokenizer) -> Tokenizer:
    """Renumber a freshly trained vocabulary: special tokens first, then the pieces in sorted order.

    The Rust trainers learn the same pieces in every process but hand out ids in hash-map order,
    which changes from one process to the next; embedding rows are initialised by id, so without
    this the same seed would not give the same model. Tokenisation itself does not depend on ids.
    """
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    specials = [t for t in SPECIAL_TOKENS if t in vocab]
    rest = sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    data["model"]["vocab"] = {token: i for i, token in enumerate([*specials, *rest])}
    # Only the real special tokens stay "added tokens"; the declared character pieces are vocabulary.
    data["added_tokens"] = [a for a in data.get("added_tokens") or [] if a["content"] in SPECIAL_TOKENS]
    for added in data["added_tokens"]:
        added["id"] = data["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(data))


#: Characters a token covers at most, for :func:`encode_start`'s cut: far more than any real
#: vocabulary's pieces (a WordPiece word over 100 characters is one ``[UNK]``).
CHARS_PER_TOKEN = 64


def encode_start(tokenizer: Tokenizer, texts: Sequence[str], keep: int) -> list[Any]:
    """``tokenizer.encode_batch(texts)``, reading only the start of a text far longer than ``keep``
    tokens could cover: a 12 MB line took 16 s and 1.8 GB to tokenise whole when its first 128
    tokens were all the model would read. The start is cut between words (:func:`_word_boundary`),
    so its tokens are the whole text's there; one that gives no more than ``keep`` tokens (and a
    margin) is read again whole, so the tokens kept are the same either way (short of a single
    word tens of thousands of characters long, whose pieces by the cut lie past those kept)."""
    texts = list(texts)
    starts = [_start_of(text, keep) for text in texts]
    long = [i for i, (text, start) in enumerate(zip(texts, starts, strict=True)) if len(start) < len(text)]
    if not long:
        return tokenizer.encode_batch(texts)
    encodings = tokenizer.encode_batch(starts)
    again = [i for i in long if len(encodings[i].ids) <= keep + 8]
    for i, encoding in zip(again, tokenizer.encode_batch([texts[i] for i in again]) if again else [], strict=True):
        encodings[i] = encoding
    return encodings


#: Scripts written without spaces between words, besides the CJK ideographs BERT's normaliser
#: already splits: each of their characters, with the vowel signs and other marks that follow it, is
#: a word of its own (BERT's pre-tokenizer took a run of kana, or a whole Thai sentence, for one
#: word, which a single unknown character made one [UNK]).
UNSPACED_SCRIPTS = r"[\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}][\p{Mn}\p{Mc}]*"

#: An emoji with what joins it: a variation selector, a skin tone, more pictographs after a zero-width
#: joiner. A word of its own wherever it stands: glued to a word (``Wow😀``), BERT's pre-tokenizer
#: took both for one word, which WordPiece, finding no ``##😀``, made one [UNK].
EMOJI = r"\p{Extended_Pictographic}(?:[\x{FE0F}\x{1F3FB}-\x{1F3FF}]|\x{200D}\p{Extended_Pictographic})*"


#: A zero-width joiner inside an emoji sequence (``👨‍👩‍👧``), kept by :func:`_normalizer`'s cleaning.
_EMOJI_JOINER = r"(?<=[\p{Extended_Pictographic}\x{FE0F}\x{1F3FB}-\x{1F3FF}])\x{200D}(?=\p{Extended_Pictographic})"


def _normalizer(lowercase: bool) -> Any:
    """How a trained vocabulary's texts are normalised: NFKC (full-width ``ＣＰＵ`` is ``CPU``,
    half-width ``ﾁｰﾑ`` is ``チーム``), BERT's cleaning and spacing of CJK ideographs, and with
    ``lowercase`` lower case without the accents of Latin and Greek letters (``Café`` is ``cafe``).
    BERT's own accent stripping removed every combining mark, whatever the script: Japanese
    ``が`` became ``か``, Hindi and Thai lost their vowel signs.

    The cleaning is BERT's (control, format and private-use characters dropped, NUL and U+FFFD
    too, each space character a space) but for the zero-width joiners of an emoji sequence: BERT's
    dropped them, so the family ``👨‍👩‍👧`` was three emoji where :data:`EMOJI` keeps it one."""
    dropped = rf"(?!{_EMOJI_JOINER})(?:[\x00\x{{FFFD}}]|(?![\t\n\r])[\p{{Cc}}\p{{Cf}}\p{{Co}}])"
    clean = [normalizers.Replace(Regex(dropped), ""), normalizers.Replace(Regex(r"[\t\n\r\p{White_Space}]"), " ")]
    bert = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False,
                                      lowercase=lowercase)  # fmt: skip
    if not lowercase:
        return normalizers.Sequence([normalizers.NFKC(), *clean, bert])
    accents = normalizers.Replace(Regex(r"(?<=[\p{Latin}\p{Greek}])\p{Mn}+"), "")
    return normalizers.Sequence([normalizers.NFKC(), *clean, bert, normalizers.NFD(), accents, normalizers.NFC()])


def _pre_tokenizer() -> Any:
    """BERT's split at spaces and punctuation, after one at each character of :data:`UNSPACED_SCRIPTS`
    and at each :data:`EMOJI`. A vocabulary keeps the splitter it was trained with (``tokenizer.json``)."""
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(UNSPACED_SCRIPTS), behavior="isolated"),
                                    pre_tokenizers.Split(Regex(EMOJI), behavior="isolated"),
                                    pre_tokenizers.BertPreTokenizer()])  # fmt: skip


def check_max_length(max_length: int) -> None:
    """Refuse an encoding too short to hold a text: ``[CLS]``, one token and ``[SEP]``."""
    if max_length < 3:
        raise ValueError(f"max_length={max_length} must be at least 3 ([CLS], a token, [SEP])")


def _start_of(text: str, keep: int) -> str:
    """The start of ``text`` that ``keep`` tokens could cover, cut between words (the text itself
    when it is no longer)."""
    limit = max(keep, 1) * CHARS_PER_TOKEN
    return text[: _word_boundary(text, limit)] if len(text) > limit else text


def _word_boundary(text: str, limit: int) -> int:
    """Where to cut ``text`` at or before ``limit`` so that no word is split: at a space, beside a
    punctuation mark, or between two CJK ideographs (the tokenizers split at each), the last such
    place in the start's second half; ``limit`` itself where there is none (one giant "word": its
    pieces near the cut may differ, and lie past the tokens kept)."""
    for end in range(limit, limit // 2, -1):
        before, after = text[end - 1], text[end]
        if _splits(before) or _splits(after) or (_is_cjk(before) and _is_cjk(after)):
            return end
    return limit


def _splits(char: str) -> bool:
    """A space (not a control character the normaliser deletes) or a punctuation mark."""
    category = unicodedata.category(char)
    return char in " \t\n\r" or category == "Zs" or category.startswith("P")


def _is_cjk(char: str) -> bool:
    """A CJK ideograph, each a word of its own to the BERT normaliser (not kana or Hangul)."""
    code = ord(char)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF
            or 0x20000 <= code <= 0x2FA1F)  # fmt: skip


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the settings every attend model expects.

    Encodings start with ``[CLS]`` and end with ``[SEP]``; batches are padded with ``[PAD]``
    to the longest text (at most ``max_length`` tokens; longer texts are truncated).

    Args:
        tokenizer: The underlying fast tokenizer.
        max_length: Longest encoding, special tokens included.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int = 256) -> None:
        check_max_length(max_length)
        self.tokenizer = tokenizer
        self.max_length = max_length
        pad_id = tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            raise ValueError("the tokenizer has no [PAD] token")
        self.pad_id = pad_id
        # "[SEP]" or "[PAD]" typed in a text is text: read as special tokens they changed predictions
        # and were hidden from explanations as structure the user never wrote.
        self.tokenizer = tokenizer = specials_as_text(tokenizer)
        tokenizer.no_padding()
        tokenizer.no_truncation()

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        kind: str = "wordpiece",
        vocab_size: int = 16000,
        min_frequency: int = 2,
        lowercase: bool = True,
        max_length: int = 256,
    ) -> TextTokenizer:
        """Learn a vocabulary from ``texts`` (the training split only, so nothing leaks).

        Args:
            kind: ``"wordpiece"`` (BERT-style ``##`` continuation pieces) or ``"bpe"``.
            vocab_size: Upper bound on the vocabulary, special tokens included.
            min_frequency: Pieces seen fewer times are not added.
            lowercase: Lower-case (and strip the accents of Latin and Greek letters) before tokenising.
            max_length: Longest encoding; the vocabulary is learned from the start of each text
                that many tokens can cover (what the model reads of it).
        """
        if kind not in ("wordpiece", "bpe"):
            raise ValueError(f"unknown tokenizer kind {kind!r}; choose 'wordpiece' or 'bpe'")
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ValueError(f"vocab_size={vocab_size} is too small")
        normalizer = _normalizer(lowercase)
        # What the model reads of a text, its start (as encode_start cuts it): a 200 MB line was
        # learned from whole, 18.7 GB of memory for words no encoding would reach.
        texts = [_start_of(text, max_length) for text in texts]
        # The Rust trainer creates each in-word character piece ("##a", or "a</w>" for BPE) the
        # first time it meets it while iterating a hash map, so piece ids -- and with them the
        # merges chosen on count ties -- change from run to run (huggingface/tokenizers#1794).
        # Declaring every such piece up front, in sorted order, makes training deterministic; they
        # are then turned back into ordinary vocabulary entries.
        splitter = _pre_tokenizer()
        inner: set[str] = set()  # characters met inside a word, after its first character
        for text in texts:
            for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)):
                inner.update(word[1:])
        last: set[str] = set()
        if kind == "bpe":  # BPE marks each word's last character instead
            for text in texts:
                last.update(word[-1] for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
        chars = sorted(inner) if kind == "wordpiece" else sorted(last)
        pieces = [f"##{c}" for c in chars] if kind == "wordpiece" else [f"{c}</w>" for c in chars]
        declared = [*SPECIAL_TOKENS, *pieces]
        if kind == "wordpiece":
            tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=declared,
                show_progress=False,
            )  # fmt: skip
            tokenizer.decoder = decoders.WordPiece()
        else:
            tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=declared,
                show_progress=False,
                end_of_word_suffix="</w>",
            )
            tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
        tokenizer.normalizer = normalizer
        tokenizer.pre_tokenizer = splitter
        tokenizer.train_from_iterator(texts, trainer=trainer)
        tokenizer = _canonical_ids(tokenizer)
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return cls(tokenizer, max_length=max_length)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, max_length: int = 256) -> TextTokenizer:
        """Load a ``tokenizer.json`` (ours, or a pretrained model's)."""
        tokenizer = _read_tokenizer(path)
        return cls(tokenizer, max_length=max_length)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json`` atomically."""
        _save_tokenizer(self.tokenizer, path)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the special tokens (``[PAD]``, ``[CLS]``, ``[SEP]``, ``[MASK]``) this vocabulary has.

        ``[UNK]`` is left out: it stands for a real word of the text.
        """
        ids = (self.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS if t != "[UNK]")
        return frozenset(i for i in ids if i is not None)

    @property
    def unknown_id(self) -> int | None:
        """The id of ``[UNK]``, the piece a text's unreadable characters become (None if the vocabulary has none)."""
        return self.tokenizer.token_to_id("[UNK]")

    def unreadable(self, rows: Sequence[Sequence[int]], shares: Sequence[float] | None = None) -> list[bool]:
        """Per row of ids, whether all of it but the special tokens is ``[UNK]``: the model reads nothing
        (``shares``: the rows' :meth:`unknown_shares` with ``empty=1.0``, when already counted)."""
        if self.unknown_id is None:
            return [False] * len(rows)
        return [share == 1.0 for share in (shares if shares is not None else self.unknown_shares(rows, empty=1.0))]

    def unknown_shares(self, rows: Sequence[Sequence[int]], *, empty: float = 0.0) -> list[float]:
        """Per row of ids, the share of its own tokens (special tokens out) that are ``[UNK]``;
        ``empty`` for a row with none."""
        special, unknown = self.special_ids, self.unknown_id
        shares = []
        for row in rows:
            own = [t for t in row if t not in special]
            shares.append((sum(t == unknown for t in own) / len(own) if unknown is not None else 0.0) if own else empty)
        return shares

    def unknown_rate(self, texts: Sequence[str]) -> float | None:
        """Share of the text's own tokens (as the model reads them: special tokens out, truncated)
        that are ``[UNK]``: how much of ``texts`` this vocabulary cannot read (None without ``[UNK]``)."""
        unknown, special = self.unknown_id, self.special_ids
        if unknown is None:
            return None
        rows = self.ids(texts)
        total = sum(1 for row in rows for token in row if token not in special)
        return sum(row.count(unknown) for row in rows) / total if total else 0.0

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def tokenize(self, text: str) -> list[str]:
        """The tokens one text becomes, special tokens included, truncated as the model sees it."""
        encoded = self.encode([text])
        return self.tokens_of(encoded["input_ids"], encoded["attention_mask"])[0]

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, unpadded; texts over ``max_length`` keep their first tokens and ``[SEP]``."""
        return self.ids_truncated(texts)[0]

    def ids_truncated(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """:meth:`ids`, and per text whether it was cut to ``max_length`` (one tokenisation for both)."""
        rows = [e.ids for e in encode_start(self.tokenizer, texts, self.max_length)]
        return [self._truncate(row) for row in rows], [len(row) > self.max_length for row in rows]

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int] | None]]:
        """Per text and token (as :meth:`ids` gives them): the ``(start, end)`` characters it covers.

        ``None`` for special tokens. Lets explanations show the user's own characters even where
        the vocabulary has none (``[UNK]``) or lower-cases them.
        """
        return [self._spans(e) for e in encode_start(self.tokenizer, texts, self.max_length)]

    def _spans(self, encoding: Any) -> list[tuple[int, int] | None]:
        # Read each list once: every attribute access on an Encoding builds a new Python list.
        spans = [
            None if special else offset
            for special, offset in zip(encoding.special_tokens_mask, encoding.offsets, strict=True)
        ]
        # SentencePiece's word-start mark as a piece of its own where no space precedes the word (a
        # text's first word, a CJK text): tokenizers gives it the first character of the piece after
        # it, which would show that character twice and credit it with the mark's importance. It
        # covers no character of the text.
        for i, token in enumerate(encoding.tokens[:-1]):
            span, after = spans[i], spans[i + 1]
            if token == "\u2581" and span is not None and after is not None and after[0] == span[0] < after[1]:
                spans[i] = (span[0], span[0])
        return self._truncate(spans)  # type: ignore[arg-type]

    def _truncate(self, row: list[int]) -> list[int]:
        return row if len(row) <= self.max_length else [*row[: self.max_length - 1], row[-1]]

    def pad(self, rows: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        """``input_ids`` and ``attention_mask`` (1 = token) for id rows, padded to the longest."""
        input_ids, attention_mask = pad_rows(rows, self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def encode(self, texts: Sequence[str], *, offsets: bool = False) -> dict[str, Any]:
        """Encode a batch: ``input_ids`` and ``attention_mask`` (1 = token), padded to the longest.

        Also returns ``truncated`` (bool per text), so callers can tell the user, and with
        ``offsets=True`` the character spans of :meth:`offsets` under ``"offsets"`` (a list).
        """
        encodings = encode_start(self.tokenizer, texts, self.max_length)
        rows = [e.ids for e in encodings]
        batch: dict[str, Any] = self.pad([self._truncate(row) for row in rows])
        batch["truncated"] = torch.tensor([len(row) > self.max_length for row in rows])
        if offsets:
            batch["offsets"] = [self._spans(e) for e in encodings]
        return batch

    def tokens_of(self, input_ids: Tensor, attention_mask: Tensor) -> list[list[str]]:
        """Token strings of an encoded batch, padding removed (for explanations).

        BPE's end-of-word marker is dropped for display; WordPiece keeps its ``##`` prefix,
        which tells a reader the piece continues a word.
        """
        return [
            [
                (self.tokenizer.id_to_token(int(i)) or "[UNK]").removesuffix("</w>")
                for i, m in zip(row, mask, strict=True)
                if m
            ]
            for row, mask in zip(input_ids, attention_mask, strict=True)
        ]


def _composed_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` with ``end`` moved past the characters that NFC composes into ``text[end - 1]``
    (``e`` + U+0301 is one ``é``, three jamo one ``한``: the tokenizer's offsets gave the first alone)."""
    last = end - 1
    while end < len(text) and not text[end].isspace() and len(unicodedata.normalize("NFC", text[last : end + 1])) == 1:
        end += 1
    return start, end


class SubwordTokenizer:
    """A lossless subword tokenizer for text that is generated, not only read (translation).

    Unlike :class:`TextTokenizer` it keeps case, accents, spacing and each character's own form
    (full-width punctuation, ligatures): the text is NFC-normalised (composed accents),
    spaces become ``▁`` (SentencePiece's convention) and decoding puts them back, so an output
    detokenises to ordinary text for BLEU. Unigram (Kudo 2018) or BPE pieces are learned from the
    training split; text without spaces (Japanese, Chinese) is split into pieces just the same.
    Ids 0-3 are :data:`SEQUENCE_SPECIAL_TOKENS`; :meth:`encode_ids` appends ``</s>``.

    Args:
        tokenizer: The underlying fast tokenizer.
    """

    PAD, UNK, BOS, EOS = 0, 1, 2, 3

    def __init__(self, tokenizer: Tokenizer) -> None:
        ids = [tokenizer.token_to_id(t) for t in SEQUENCE_SPECIAL_TOKENS]
        if ids != [0, 1, 2, 3]:
            raise ValueError(f"a translation tokenizer needs {SEQUENCE_SPECIAL_TOKENS} as ids 0-3, found ids {ids}")
        self.tokenizer = tokenizer = specials_as_text(tokenizer)  # "</s>" typed in a sentence is text, not its end
        tokenizer.no_padding()
        tokenizer.no_truncation()

    @classmethod
    def train(cls, texts: Iterable[str], *, kind: str = "unigram", vocab_size: int = 8000) -> SubwordTokenizer:
        """Learn pieces from ``texts`` (the training split only).

        Args:
            kind: ``"unigram"`` (the default: the best-scoring segmentation under a unigram
                language model of pieces) or ``"bpe"`` (merges of frequent pairs).
            vocab_size: Upper bound on the vocabulary, special tokens included.
        """
        if kind not in ("unigram", "bpe"):
            raise ValueError(f"unknown tokenizer kind {kind!r}; choose 'unigram' or 'bpe'")
        if vocab_size < len(SEQUENCE_SPECIAL_TOKENS) + 1:
            raise ValueError(f"vocab_size={vocab_size} is too small")
        texts = [t for t in texts if t]
        if kind == "unigram":
            tokenizer = Tokenizer(models.Unigram())
            trainer: Any = trainers.UnigramTrainer(
                vocab_size=vocab_size, special_tokens=SEQUENCE_SPECIAL_TOKENS, unk_token="<unk>",
                max_piece_length=16, show_progress=False,
            )  # fmt: skip
        else:
            tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, special_tokens=SEQUENCE_SPECIAL_TOKENS, show_progress=False
            )
        # NFC, not NFKC: a generated text keeps its own forms. NFKC had written Chinese and Japanese
        # with ASCII punctuation (，！？ as ,!?), "…" as "...", and full-width digits as ASCII ones,
        # which no reference has: their BLEU and chrF fell by two thirds.
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(_canonical_sequence_ids(tokenizer))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SubwordTokenizer:
        """Load a ``tokenizer.json`` written by :meth:`save`."""
        tokenizer = _read_tokenizer(path)
        return cls(tokenizer)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json`` atomically."""
        _save_tokenizer(self.tokenizer, path)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode_ids(self, texts: Sequence[str], max_length: int, *, end_cut: bool = True
                   ) -> tuple[list[list[int]], list[bool]]:  # fmt: skip
        """Per text, its piece ids followed by ``</s>`` (at most ``max_length`` ids: longer texts keep
        their first pieces), and whether it was cut. ``end_cut=False``: a cut text gets no ``</s>``
        (a training target cut short must not teach the decoder to stop there)."""
        rows = [e.ids for e in encode_start(self.tokenizer, texts, max_length)]
        cut = [len(row) + 1 > max_length for row in rows]
        return [[*row[: max_length - 1], self.EOS] if not c or end_cut else row[:max_length]
                for row, c in zip(rows, cut, strict=True)], cut  # fmt: skip

    def spans(self, texts: Sequence[str], max_length: int) -> list[list[tuple[int, int] | None]]:
        """Per text, the characters (``(start, end)`` in the text) of each id :meth:`encode_ids` gives
        it, None for ``</s>`` and for a piece of no characters (the word-start mark put before the
        first word, given that word's first character): where an ``<unk>`` came from. A piece ends
        after the characters NFC composes into its last one (an accent typed after its letter,
        Korean written as jamo), which the tokenizer's offsets leave out of every piece."""
        return [[_composed_span(text, start, end) if end > start and (token.strip("\u2581") or
                                                                      not text[start:end].strip()) else None
                 for token, (start, end) in zip(e.tokens[: max_length - 1], e.offsets[: max_length - 1], strict=True)]
                + [None] for text, e in zip(texts, encode_start(self.tokenizer, texts, max_length), strict=True)]

    def unknown_rate(self, texts: Sequence[str]) -> float:
        """Share of pieces that are ``<unk>``: how much of ``texts`` this vocabulary cannot read."""
        rows = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        total = sum(len(row) for row in rows)
        return sum(row.count(self.UNK) for row in rows) / total if total else 0.0

    def decode(self, ids: Sequence[int]) -> str:
        """Text of piece ids (special tokens dropped)."""
        return self.tokenizer.decode([i for i in ids if i > self.EOS or i == self.UNK], skip_special_tokens=False)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """Display form of each id: the piece with its ``▁`` word marker shown as a leading space."""
        return [(self.tokenizer.id_to_token(int(i)) or "<unk>").replace("\u2581", " ") for i in ids]

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """``(ids, mask)`` of id rows padded with ``<pad>`` to the longest (mask 1 = token)."""
        return pad_rows(rows, self.PAD)


def specials_as_text(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer`` reading its special tokens' strings in a text ("[SEP]", "</s>") as text: its
    added tokens stop matching there (``encode_special_tokens``); the post-processor's own [CLS]
    and [SEP] are unchanged. A Unigram vocabulary that holds the same strings as scored pieces
    (e5's SentencePiece model, a Unigram translator's) still matches them inside a text: its
    lattice picks the piece over unknown characters whatever its score."""
    tokenizer.encode_special_tokens = True
    return tokenizer


def _canonical_sequence_ids(tokenizer: Tokenizer) -> Tokenizer:
    """Ids in a fixed order, for the reason given in :func:`_canonical_ids`: the special tokens,
    then BPE's pieces sorted (merges kept as learned), or Unigram's by falling score, ties by piece
    (the trainer orders equal scores differently from one process to the next)."""
    data = json.loads(tokenizer.to_str())
    model = data["model"]
    if model["type"] == "Unigram":
        scores = {piece: score for piece, score in model["vocab"]}
        rest = sorted((t for t in scores if t not in SEQUENCE_SPECIAL_TOKENS), key=lambda t: (-scores[t], t))
        model["vocab"] = [[t, scores[t]] for t in [*SEQUENCE_SPECIAL_TOKENS, *rest]]
        model["unk_id"] = SEQUENCE_SPECIAL_TOKENS.index("<unk>")
        order = {t: i for i, t in enumerate([*SEQUENCE_SPECIAL_TOKENS, *rest])}
    else:
        rest = sorted(t for t in model["vocab"] if t not in SEQUENCE_SPECIAL_TOKENS)
        model["vocab"] = order = {token: i for i, token in enumerate([*SEQUENCE_SPECIAL_TOKENS, *rest])}
    for added in data.get("added_tokens") or []:
        added["id"] = order[added["content"]]
    return Tokenizer.from_str(json.dumps(data))
