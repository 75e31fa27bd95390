"""Translation metrics and the translation-memory floor, each checked against what it must obviously give."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from scipy import sparse

from attend.training import translation
from attend.training.translation import bleu_tokenizer, translation_baselines, translation_memory, translation_scores

TRAIN_SOURCES = ["I like cats.", "The weather is nice today.", "Where is the station?", "I have to go to sleep."]
TRAIN_TARGETS = ["Ich mag Katzen.", "Das Wetter ist heute schön.", "Wo ist der Bahnhof?", "Ich muss schlafen gehen."]
REFERENCES = ["Ich mag Katzen sehr.", "Das Wetter ist heute schön.", "Wo ist der Bahnhof?", "Ich bin müde."]


def test_memory_returns_the_target_of_an_identical_source() -> None:
    queries = [*reversed(TRAIN_SOURCES), "Where  is the\tstation?"]
    expected = [*reversed(TRAIN_TARGETS), "Wo ist der Bahnhof?"]
    assert translation_memory(TRAIN_SOURCES, TRAIN_TARGETS, queries) == expected


def test_memory_exact_match_wins_over_a_case_variant() -> None:
    # Lower-cased TF-IDF vectors of the two sources are equal; the verbatim match decides.
    sources, targets = ["hello there", "Hello there"], ["hallo (lower)", "Hallo"]
    assert translation_memory(sources, targets, ["Hello there", "hello there", "HELLO THERE"]) == [
        "Hallo", "hallo (lower)", "hallo (lower)",  # the tie goes to the earliest pair
    ]  # fmt: skip


def test_memory_finds_the_nearest_source() -> None:
    queries = ["I like dogs.", "Is the weather nice today?", "Where is the bus station?", "zzzz"]
    answers = translation_memory(TRAIN_SOURCES, TRAIN_TARGETS, queries)
    assert answers[:3] == TRAIN_TARGETS[:3]
    assert answers[3] == TRAIN_TARGETS[0]  # nothing shared: the first pair
    assert translation_memory(TRAIN_SOURCES, TRAIN_TARGETS, []) == []


def test_memory_matches_a_dense_computation_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    words = "cat dog the a is was house garden red blue runs sleeps under over".split()
    sources = [" ".join(rng.choice(words, size=rng.integers(2, 7))) for _ in range(60)]
    targets = [f"t{i}" for i in range(60)]
    queries = [" ".join(rng.choice(words, size=rng.integers(2, 7))) for _ in range(25)]
    monkeypatch.setattr(translation, "_BLOCK_ENTRIES", 60 * 4)  # blocks of 4 queries
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=translation.TM_NGRAM_RANGE, sublinear_tf=True)
    similarity = (vectorizer.fit_transform(sources) @ vectorizer.transform(queries).T).toarray().T
    exact = {source: targets[i] for i, source in reversed(list(enumerate(sources)))}
    expected = [exact.get(q, targets[int(np.argmax(row))]) for q, row in zip(queries, similarity, strict=True)]
    assert translation_memory(sources, targets, queries) == expected


def test_first_argmax_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    dense = rng.integers(0, 4, size=(30, 12)).astype(np.float32) * (rng.random((30, 12)) < 0.4)
    dense[3] = 0.0  # an empty row
    matrix = sparse.csr_matrix(dense)
    assert translation._first_argmax(matrix).tolist() == np.argmax(dense, axis=1).tolist()
    assert translation._first_argmax(sparse.csr_matrix((2, 5), dtype=np.float32)).tolist() == [0, 0]


def test_memory_errors() -> None:
    with pytest.raises(ValueError, match="train_sources has 2 sentences but train_targets has 1"):
        translation_memory(["a", "b"], ["x"], ["a"])
    with pytest.raises(ValueError, match="train_targets is empty"):
        translation_memory([], [], ["a"])
    with pytest.raises(ValueError, match="queries must be a list of sentences"):
        translation_memory(["a"], ["b"], "a")  # type: ignore[arg-type]


def test_identical_translations_score_100() -> None:
    scores = translation_scores(REFERENCES, REFERENCES)
    assert set(scores) == {"bleu", "chrf"}
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    worse = translation_scores(TRAIN_TARGETS, REFERENCES)
    assert 0.0 < worse["bleu"] < 100.0 and 0.0 < worse["chrf"] < 100.0
    assert all(isinstance(value, float) for value in worse.values())


def test_score_errors() -> None:
    with pytest.raises(ValueError, match="hypotheses has 1 sentences but references has 2"):
        translation_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="references is empty"):
        translation_scores([], [])
    with pytest.raises(ValueError, match="hypotheses must be a list of sentences, not one string"):
        translation_scores("a", ["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("references", "language", "expected"),
    [
        (["Ich mag Katzen.", "Wo ist der Bahnhof?"], None, "13a"),
        (["我喜欢猫。", "火车站在哪里？"], None, "zh"),
        (["猫が好きです。", "駅はどこですか。"], None, "char"),
        (["カタカナだけ", "ひらがな"], None, "char"),
        (["The kanji 猫 means cat, and 駅 means station."], None, "13a"),  # a minority of CJK
        (["12345", "!?"], None, "13a"),  # no letters at all
        (["I like cats."], "ja", "char"),  # the language wins over the script
        (["猫が好き。"], "en", "13a"),
        (["x"], "zh-TW", "zh"),
        (["x"], "JPN", "char"),
        (["ฉันชอบแมว", "สถานีรถไฟอยู่ที่ไหน"], None, "char"),  # Thai: no spaces between words (13a gave BLEU 0)
        (["ខ្ញុំចូលចិត្តឆ្មា"], None, "char"),  # Khmer
        (["x"], "th", "char"),
        (["x"], "my", "char"),
    ],
)
def test_bleu_tokenizer(references: list[str], language: str | None, expected: str) -> None:
    assert bleu_tokenizer(references, target_language=language) == expected


def test_an_accent_composed_or_decomposed_scores_as_one() -> None:
    """A reference saved decomposed (macOS file names, some editors) had not matched its composed output."""
    composed, decomposed = "Le café est fermé.", unicodedata.normalize("NFD", "Le café est fermé.")
    assert composed != decomposed
    assert translation_scores([composed], [decomposed]) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}


def test_japanese_bleu_is_per_character() -> None:
    # Under 13a an unspaced Japanese sentence is one token, so one wrong character scores 0;
    # per character it keeps partial credit.
    references = ["猫が大好きです。駅はどこですか。"]
    hypotheses = ["犬が大好きです。駅はどこですか。"]
    assert translation_scores(hypotheses, references, target_language="en")["bleu"] == pytest.approx(0.0)
    assert translation_scores(hypotheses, references)["bleu"] > 50.0


def test_baselines_score_the_memory() -> None:
    test_sources = ["I like cats.", "The weather is nice today.", "Where is the station?", "I am tired."]
    result = translation_baselines(TRAIN_SOURCES, TRAIN_TARGETS, test_sources, REFERENCES)
    assert set(result) == {"baseline_tm_bleu", "baseline_tm_chrf"}
    hypotheses = translation_memory(TRAIN_SOURCES, TRAIN_TARGETS, test_sources)
    scores = translation_scores(hypotheses, REFERENCES)
    assert result == {"baseline_tm_bleu": scores["bleu"], "baseline_tm_chrf": scores["chrf"]}
    with pytest.raises(ValueError, match="test_sources has 1 sentences but test_references has 4"):
        translation_baselines(TRAIN_SOURCES, TRAIN_TARGETS, test_sources[:1], REFERENCES)
