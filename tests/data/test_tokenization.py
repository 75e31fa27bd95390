"""Tokenizers trained on the user's text, English and Chinese."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from attend.data.tokenization import TextTokenizer

TEXTS = ["the cat sat on the mat", "the dog sat on the log", "这个手机很好用", "质量太差了，不推荐"] * 10


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_train_encode_and_round_trip(tmp_path: Path, kind: str) -> None:
    tokenizer = TextTokenizer.train(TEXTS, kind=kind, vocab_size=300, min_frequency=1, max_length=16)
    tokens = tokenizer.tokenize("The cat sat on the mat")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "[UNK]" not in tokens
    chinese = tokenizer.tokenize("手机很好")
    assert chinese[1:-1] == ["手", "机", "很", "好"]  # one token per character
    tokenizer.save(tmp_path / "tokenizer.json")
    again = TextTokenizer.from_file(tmp_path / "tokenizer.json", max_length=16)
    assert again.tokenize("the dog sat") == tokenizer.tokenize("the dog sat")


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_a_translation_vocabulary_gives_back_each_characters_own_form(kind: str) -> None:
    """NFKC had written Chinese with ASCII punctuation (，！ as ,!), "…" as "...", full-width digits as
    ASCII: what a translator wrote matched no reference. A decomposed accent comes back composed."""
    import unicodedata

    from attend.data.tokenization import SubwordTokenizer

    texts = ["孩子玩，狗跑！", "你好吗？我很好。", "Wait… the ﬁle costs ５００ yen", "Le café est fermé."] * 10
    pieces = SubwordTokenizer.train(texts, kind=kind, vocab_size=120)
    (ids,), _ = pieces.encode_ids(["孩子玩，狗跑！你好吗？"], 64)
    assert pieces.decode(ids) == "孩子玩，狗跑！你好吗？"
    (ids,), _ = pieces.encode_ids(["Wait… the ﬁle costs ５００ yen"], 64)
    assert pieces.decode(ids) == "Wait… the ﬁle costs ５００ yen"
    (ids,), _ = pieces.encode_ids([unicodedata.normalize("NFD", "Le café est fermé.")], 64)
    assert pieces.decode(ids) == "Le café est fermé."  # composed, as NFC writes it


def test_a_pieces_span_covers_the_characters_composed_into_it() -> None:
    """An accent typed after its letter, or Korean typed as jamo, is one character to the tokenizer,
    whose offsets gave its first code point alone: an ``<unk>`` had been shown as ``e`` or ``ᄒ``, and
    the rest was in no piece's span. Characters that do not compose stay apart."""
    import unicodedata

    from attend.data.tokenization import SubwordTokenizer

    pieces = SubwordTokenizer.train(["one two three"] * 10, kind="bpe", vocab_size=40)
    text = "one caf" + "e\u0301" + " two " + unicodedata.normalize("NFD", "한") + " 가가 x\u0301y"
    (ids,), _ = pieces.encode_ids([text], 64)
    (spans,) = pieces.spans([text], 64)
    unknown = [text[a:b] for i, span in zip(ids, spans, strict=True) if span is not None and i == pieces.UNK
               for a, b in [span]]  # fmt: skip
    assert [u for u in unknown if not u.isascii()] == ["e\u0301", unicodedata.normalize("NFD", "한"), "가", "가",
                                                       "\u0301"]  # fmt: skip
    covered = sorted(i for span in spans if span is not None for i in range(*span))
    assert covered == sorted(set(covered)) and set(range(len(text))) - set(covered) <= {
        i for i, ch in enumerate(text) if ch == " "}


def test_special_tokens_typed_in_a_text_are_read_as_text(tmp_path: Path) -> None:
    """A literal "[SEP]" or "[PAD]" became the special token: predictions changed, and explanations hid
    the user's own characters as structure."""
    from attend.data.tokenization import SubwordTokenizer

    tokenizer = TextTokenizer.train(TEXTS, vocab_size=300, min_frequency=1, max_length=32)
    tokens = tokenizer.tokenize("the cat [SEP] sat [PAD] [CLS] [MASK]")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 1
    assert not {"[PAD]", "[MASK]"} & set(tokens) and tokens.count("[CLS]") == 1
    tokenizer.save(tmp_path / "t.json")
    assert TextTokenizer.from_file(tmp_path / "t.json", max_length=32).tokenize("a [SEP] b").count("[SEP]") == 1
    for kind in ("bpe",):  # (a Unigram vocabulary holds the special pieces as scored pieces: not fixed there)
        pieces = SubwordTokenizer.train(TEXTS, kind=kind, vocab_size=100)
        (ids,), _ = pieces.encode_ids(["the cat </s> <pad> sat"], 32)
        assert ids.count(SubwordTokenizer.EOS) == 1 and SubwordTokenizer.PAD not in ids, kind
        (plain,), _ = pieces.encode_ids(["the cat sat"], 32)
        pieces.tokenizer.save(str(tmp_path / f"{kind}.json"))  # saved and loaded, it reads the same
        again = SubwordTokenizer(Tokenizer.from_file(str(tmp_path / f"{kind}.json")))
        assert again.encode_ids(["the cat sat"], 32)[0][0] == plain


def test_batches_are_padded_and_long_texts_truncated() -> None:
    tokenizer = TextTokenizer.train(TEXTS, vocab_size=300, min_frequency=1, max_length=6)
    batch = tokenizer.encode(["the cat", "the cat sat on the mat and the dog"])
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert batch["truncated"].tolist() == [False, True]
    assert tokenizer.tokens_of(batch["input_ids"], batch["attention_mask"])[1][-1] == "[SEP]"


def test_bad_tokenizer_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tokenizer kind 'chars'"):
        TextTokenizer.train(TEXTS, kind="chars")
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        TextTokenizer.from_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"not a valid tokenizer\.json"):
        TextTokenizer.from_file(tmp_path / "bad.json")


def test_trained_ids_are_canonical_special_tokens_first_then_sorted() -> None:
    """The Rust trainer numbers pieces in hash-map order (different per process); we renumber them."""
    from attend.data.tokenization import SPECIAL_TOKENS, TextTokenizer

    texts = ["the film was wonderful", "a dreadful plot", "wonderful music and a dreadful film"] * 5
    for kind in ("wordpiece", "bpe"):
        tokenizer = TextTokenizer.train(texts, kind=kind, vocab_size=200, min_frequency=1)
        vocab = sorted(tokenizer.tokenizer.get_vocab().items(), key=lambda item: item[1])
        tokens = [token for token, _ in vocab]
        assert [i for _, i in vocab] == list(range(len(vocab)))
        assert tokens[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS and tokens[5:] == sorted(tokens[5:])
        assert tokenizer.tokenize("the film")[0] == "[CLS]" and tokenizer.ids(["film"])[0][0] == 2


def test_unknown_rate_counts_the_texts_own_tokens_that_the_vocabulary_cannot_read() -> None:
    from attend.models.minilm import tokenizer_path

    english = TextTokenizer.from_file(tokenizer_path(), max_length=64)
    assert english.unknown_rate(["a good film", "the plot"]) == 0.0
    assert english.unknown_rate([]) == 0.0
    # [CLS] and [SEP] are not the text's: one unreadable token of two is half, not a quarter.
    assert english.unknown_rate(["good \U0001f9ff"]) == 0.5
    assert english.unknown_rate(["这家酒店很干净"]) > 0.5


def test_a_long_text_is_read_from_its_start_with_the_tokens_reading_it_whole_gives() -> None:
    """Before: a 12 MB line was tokenised whole (16 s, 1.8 GB) for the 128 tokens the model reads."""
    from attend.data.tokenization import CHARS_PER_TOKEN, SubwordTokenizer
    from attend.models.minilm import tokenizer_path

    english = TextTokenizer.from_file(tokenizer_path(), max_length=16)
    texts = [
        "the film was good, " * 200,  # cut: its start gives far more than 16 tokens
        "x" * (16 * CHARS_PER_TOKEN + 50) + " good film",  # its start is one [UNK]: read again whole
        "a short one",
        "ab,cd," * 3000,  # no space anywhere: cut beside punctuation (it was read whole)
    ]
    real = english.tokenizer
    whole = [real.encode(t) for t in texts]
    seen: list[int] = []

    class Recording:  # the tokenizer, noting how long each text it reads is
        def encode_batch(self, batch: list[str]) -> list:
            seen.extend(map(len, batch))
            return real.encode_batch(batch)

    english.tokenizer = Recording()  # type: ignore[assignment]
    ids, cut = english.ids_truncated(texts)
    spans = english.offsets(texts)
    assert max(seen) == len(texts[1]) and len(texts[0]) not in seen  # only the second was read whole
    assert len(texts[3]) not in seen
    assert ids == [english._truncate(e.ids) for e in whole] and cut == [True, False, False, True]
    assert spans == [english._spans(e) for e in whole]
    pieces = SubwordTokenizer.train(TEXTS, kind="bpe", vocab_size=100)
    long = "a b c " * 5000
    expected = [*pieces.tokenizer.encode(long).ids[:7], SubwordTokenizer.EOS]
    assert pieces.encode_ids([long], 8) == ([expected], [True])


def test_the_vocabulary_is_learned_from_what_the_model_reads_of_each_text() -> None:
    """A 200 MB line was learned from whole (18.7 GB of memory) though no encoding reaches past its start."""
    long = "good film " * 200 + "zebra " * 50  # the zebras lie past 8 tokens x 64 characters
    tokenizer = TextTokenizer.train([long, "good film", "bad film"], vocab_size=200, max_length=8)
    vocab = tokenizer.tokenizer.get_vocab()
    assert "good" in vocab and "zebra" not in vocab
    assert "zebra" in TextTokenizer.train([long], vocab_size=200, max_length=512).tokenizer.get_vocab()


def test_kana_keep_their_voicing_and_an_unknown_one_costs_only_itself() -> None:
    """BERT's accent stripping made が of か and パ, バ of ハ; its pre-tokenizer took a run of kana for
    one word, which one unknown character made a single [UNK] (10 of 13 characters lost)."""
    tok = TextTokenizer.train(["パンとバンとハンが好き", "トウキョウのチームが勝った", "かけた"] * 3, vocab_size=200,
                              min_frequency=1)  # fmt: skip
    pieces = tok.tokenizer.encode("パンとバンとハン").tokens
    assert pieces[1:-1] == ["パ", "ン", "と", "バ", "ン", "と", "ハ", "ン"]
    assert tok.tokenizer.encode("が").tokens[1:-1] == ["が"]
    unseen = tok.tokenizer.encode("トウキョウのチームがズ勝った").tokens[1:-1]  # ズ was never seen
    assert unseen.count("[UNK]") == 1 and "チ" in unseen and "ム" in unseen


def test_an_emoji_glued_to_a_word_is_a_word_of_its_own() -> None:
    """``Wow😀`` was one pre-token, which WordPiece (no ``##😀``) made a single [UNK] though both were known."""
    tok = TextTokenizer.train(["wow 😀 nice 👍🏽 ok ❤️"] * 3, vocab_size=200, min_frequency=1)
    assert tok.tokenizer.encode("Wow😀nice👍🏽").tokens[1:-1] == tok.tokenizer.encode("wow 😀 nice 👍🏽").tokens[1:-1]
    assert "[UNK]" not in tok.tokenizer.encode("ok❤️wow").tokens
    words = [word for word, _ in tok.tokenizer.pre_tokenizer.pre_tokenize_str("fam👨\u200d👩\u200d👧!")]
    assert words == ["fam", "👨\u200d👩\u200d👧", "!"]  # a joined family stays one emoji
    # ... through the whole tokenizer: BERT's cleaning had dropped its joiners first, making it three.
    family = "👨\u200d👩\u200d👧"
    tok = TextTokenizer.train([f"fam {family} ok", "wow 👩 ok"] * 3, vocab_size=200, min_frequency=1)
    encoded = tok.tokenizer.encode(f"Fam{family}!")
    assert encoded.tokens[1:-1] == ["fam", family, "[UNK]"] and encoded.offsets[2] == (3, 3 + len(family))
    # A joiner elsewhere, and the other invisible characters, are still cleaned away as BERT's cleaning did.
    assert tok.tokenizer.normalizer.normalize_str("o\u200dk\u200b\ufeff\u00ad 👩\u200d\tx\x00") == "ok 👩 x"


def test_full_width_letters_are_their_ascii_and_latin_accents_still_go() -> None:
    tok = TextTokenizer.train(["cpu 和 xp 系统", "cafe viet", "ελα"] * 3, vocab_size=200, min_frequency=1)
    assert tok.tokenizer.encode("ＣＰＵ和ＸＰ").tokens[1:-1] == ["cpu", "和", "xp"]
    assert tok.tokenizer.encode("Café Việt ἔλα").tokens[1:-1] == ["cafe", "viet", "ελα"]
    assert tok.tokenizer.encode("हिन्दी").tokens[1:-1] == ["[UNK]"]  # unseen, but not stripped to another word
    assert tok.tokenizer.normalizer.normalize_str("हिन्दी") == "हिन्दी"
    # A Thai consonant keeps its vowel sign and tone mark: they are no words on their own.
    thai = [word for word, _ in tok.tokenizer.pre_tokenizer.pre_tokenize_str("สวัสดีครับ")]
    assert thai == ["ส", "วั", "ส", "ดี", "ค", "รั", "บ"]
