"""Translation metrics, and the translation-memory floor every translator must beat on the same split.

BLEU and chrF alone say little: on Tatoeba, whose sentences are short and repetitive, answering
the stored translation of the most similar training sentence already scores 10 BLEU (en-de) to
22 (ja-en).
So every translation figure is printed next to that floor (:func:`translation_baselines`),
computed on the same split.

* BLEU: Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation", ACL 2002.
* chrF: Popović, "chrF: character n-gram F-score for automatic MT evaluation", WMT 2015.

Both are sacrebleu's corpus scores (Post, "A Call for Clarity in Reporting BLEU Scores", WMT
2018), with one reference per sentence. BLEU needs words; :func:`bleu_tokenizer` picks how to cut
the references into them and callers record its answer beside the score, since BLEU figures under
different tokenizers are not comparable.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np
from scipy import sparse

__all__ = [
    "TM_NGRAM_RANGE",
    "bleu_tokenizer",
    "translation_baselines",
    "translation_memory",
    "translation_scores",
]

#: Character n-gram lengths of the translation memory's TF-IDF vectors. Unigrams count for
#: Japanese and Chinese, where one character is often a word. On Tatoeba (group split, seed 0),
#: (1, 2) and (1, 3) scored within 0.4 BLEU of each other, and up to 1.6 above (2, 4) and (3, 5),
#: at about the same speed; (1, 3) was the better of the two on English sources.
TM_NGRAM_RANGE = (1, 3)

#: Upper bound on the entries of one block of the query x train similarity matrix (about 8 bytes
#: each as a sparse matrix; on Tatoeba almost every pair shares some n-gram, so blocks are nearly
#: dense), which bounds the memory of :func:`translation_memory`. Small blocks also measured faster:
#: on Tatoeba ja-en, blocks of 32 queries took about half the time of blocks of 256.
_BLOCK_ENTRIES = 5_000_000


def _is_kana(char: str) -> bool:
    # Hiragana, katakana, katakana phonetic extensions, half-width katakana.
    return "\u3040" <= char <= "\u30ff" or "\u31f0" <= char <= "\u31ff" or "\uff66" <= char <= "\uff9f"


def _is_han(char: str) -> bool:
    # CJK unified ideographs, extension A, compatibility ideographs.
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" or "\uf900" <= char <= "\ufaff"


def _is_unspaced(char: str) -> bool:
    # Thai, Lao, Myanmar, Khmer (and Khmer symbols): scripts written without spaces between words.
    return ("\u0e00" <= char <= "\u0eff" or "\u1000" <= char <= "\u109f" or "\u1780" <= char <= "\u17ff"
            or "\u19e0" <= char <= "\u19ff")  # fmt: skip


#: ISO 639 codes of the languages :func:`_is_unspaced` finds by script.
_UNSPACED_LANGUAGES = frozenset({"th", "tha", "lo", "lao", "my", "mya", "bur", "km", "khm"})


def bleu_tokenizer(references: Sequence[str], *, target_language: str | None = None) -> str:
    """The sacrebleu tokenizer BLEU should use for ``references``: ``"zh"``, ``"char"`` or ``"13a"``.

    BLEU counts word n-grams, but Chinese and Japanese are written without spaces, so with the
    default ``13a`` a whole sentence would be one "word". Chinese gets sacrebleu's ``zh``
    tokenizer (each Han character a token, other text as ``13a``), as WMT does. Japanese would get
    ``ja-mecab`` in WMT, but that needs MeCab and a dictionary installed; it gets ``char`` instead
    (every character a token), which needs nothing and is exact, but scores are higher than
    word-level BLEU (character n-grams match more easily) and not comparable to published
    ``ja-mecab`` figures. Thai, Lao, Khmer and Burmese, also written without spaces between
    words, get ``char`` too (with ``13a`` every sentence was one word, and BLEU 0 whatever the
    output). Everything else gets ``13a``, sacrebleu's default.

    Args:
        references: The reference translations; their script decides when ``target_language`` is
            None: Chinese-like when most of their letters are Han characters or kana, and Japanese
            among those when at least 5% of those characters are kana (Chinese has none); else
            unspaced when most of their letters are Thai, Lao, Khmer or Myanmar.
        target_language: An ISO 639 code (``"ja"``, ``"zh"``, ``"zh-TW"``, ``"jpn"``, ...), which
            wins over the script.

    Returns:
        The tokenizer's name, as sacrebleu's ``tokenize=`` takes it.
    """
    if target_language is not None:
        language = target_language.lower().replace("_", "-").split("-")[0]
        if language in {"zh", "zho", "chi", "cmn", "yue"}:
            return "zh"
        if language in {"ja", "jpn"} or language in _UNSPACED_LANGUAGES:
            return "char"
        return "13a"
    letters = han = kana = unspaced = 0
    for text in references:
        for char in text:
            if char.isalpha():
                letters += 1
                han += _is_han(char)
                kana += _is_kana(char)
                unspaced += _is_unspaced(char)
    if letters and unspaced > letters / 2:
        return "char"
    if letters == 0 or han + kana <= letters / 2:
        return "13a"
    return "char" if kana >= 0.05 * (han + kana) else "zh"


def _check_pairs(
    hypotheses: Sequence[str], references: Sequence[str], names: tuple[str, str] = ("hypotheses", "references")
) -> None:
    """Refuse a lone string, lists of different lengths, or nothing to score; errors use ``names``."""
    for name, texts in zip(names, (hypotheses, references), strict=True):
        if isinstance(texts, str):
            raise ValueError(f"{name} must be a list of sentences, not one string (wrap it in a list)")
    if len(hypotheses) != len(references):
        raise ValueError(f"{names[0]} has {len(hypotheses)} sentences but {names[1]} has {len(references)}")
    if not references:
        raise ValueError(f"{names[1]} is empty: there is nothing to score")


def translation_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    target_language: str | None = None,
    tokenize: str | None = None,
) -> dict[str, float]:
    """Corpus BLEU and chrF (0-100) of ``hypotheses`` against one reference each, both sides
    NFC-normalised first (an accent composed or decomposed is one character to a reader).

    Args:
        hypotheses: The system's translations.
        references: The reference translation of each, in the same order.
        target_language: Decides BLEU's tokenizer (:func:`bleu_tokenizer`); by default the
            references' script does. Record ``bleu_tokenizer(...)`` beside the scores.
        tokenize: BLEU's tokenizer, chosen already (a model's, from its training targets, so that
            its dev and test figures are counted alike); wins over ``target_language``.

    Returns:
        ``{"bleu": ..., "chrf": ...}``. chrF (character 6-grams, beta 2) needs no tokenizer.

    Raises:
        ValueError: The two lists differ in length, or are empty.
    """
    from sacrebleu.metrics import BLEU, CHRF

    _check_pairs(hypotheses, references)
    # Composed and decomposed accents are one text to a reader: counted so ("café" had not matched "café").
    hypotheses = [unicodedata.normalize("NFC", text) for text in hypotheses]
    references = [unicodedata.normalize("NFC", text) for text in references]
    tokenize = tokenize or bleu_tokenizer(references, target_language=target_language)
    bleu = BLEU(tokenize=tokenize).corpus_score(hypotheses, [references])
    chrf = CHRF().corpus_score(hypotheses, [references])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


def translation_memory(train_sources: Sequence[str], train_targets: Sequence[str], queries: Sequence[str]) -> list[str]:
    """The translation-memory floor: answer each query with the target of its most similar training source.

    A query found verbatim among the training sources (after whitespace normalisation) gets that
    source's first target. Any other query gets the target of the training source with the
    highest cosine similarity between TF-IDF vectors of character n-grams (scikit-learn's
    ``char_wb`` analyser, lengths :data:`TM_NGRAM_RANGE`, lower-cased, sublinear tf), fitted on
    the training sources; ties go to the earliest training pair, and a query that shares no
    n-gram with any source gets the first training target. Exact, not approximate: the similarity
    is computed as sparse products in blocks of queries, whose size bounds memory (about
    :data:`_BLOCK_ENTRIES` entries per block) for any number of queries.

    Args:
        train_sources: Source sentences of the memory.
        train_targets: Their translations.
        queries: Sentences to translate.

    Returns:
        One training target per query.

    Raises:
        ValueError: The training lists differ in length or are empty, or ``queries`` is one string.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if isinstance(queries, str):
        raise ValueError("queries must be a list of sentences, not one string (wrap it in a list)")
    _check_pairs(train_sources, train_targets, ("train_sources", "train_targets"))
    answers: list[str | None] = [None] * len(queries)
    exact: dict[str, str] = {}
    for source, target in zip(train_sources, train_targets, strict=True):
        exact.setdefault(" ".join(source.split()), target)
    pending = []  # indices of queries with no verbatim match
    for i, query in enumerate(queries):
        answers[i] = exact.get(" ".join(query.split()))
        if answers[i] is None:
            pending.append(i)
    if pending:
        vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=TM_NGRAM_RANGE, lowercase=True, sublinear_tf=True, dtype=np.float32
        )
        memory = vectorizer.fit_transform(train_sources).T.tocsr()  # (features, n_train), rows unit-normed
        block = max(1, _BLOCK_ENTRIES // len(train_sources))
        for start in range(0, len(pending), block):
            indices = pending[start : start + block]
            vectors = vectorizer.transform([queries[i] for i in indices])  # (block, features)
            similarity = (vectors @ memory).tocsr()  # (block, n_train) cosines, sparse
            for i, nearest in zip(indices, _first_argmax(similarity), strict=True):
                answers[i] = train_targets[int(nearest)]
    return [answer if answer is not None else "" for answer in answers]


def _first_argmax(similarity: sparse.csr_matrix) -> np.ndarray:
    """Per row, the column of the largest stored value, the smallest such column on a tie, 0 for an empty row.

    The same answer as ``similarity.argmax(axis=1)`` for non-negative values, but vectorised:
    scipy's loops over rows in Python after sorting every row's indices, which took longer than the
    similarity product itself on Tatoeba-sized data.
    """
    counts = np.diff(similarity.indptr)  # (rows,) stored values per row
    best = np.zeros(similarity.shape[0], dtype=np.int64)
    filled = counts > 0
    if not filled.any():
        return best
    starts = similarity.indptr[:-1][filled]
    row_max = np.full(similarity.shape[0], -np.inf, dtype=similarity.data.dtype)
    row_max[filled] = np.maximum.reduceat(similarity.data, starts)
    at_max = similarity.data == np.repeat(row_max, counts)  # (nnz,)
    columns = np.where(at_max, similarity.indices, np.iinfo(similarity.indices.dtype).max)
    best[filled] = np.minimum.reduceat(columns, starts)
    return best


def translation_baselines(
    train_sources: Sequence[str],
    train_targets: Sequence[str],
    test_sources: Sequence[str],
    test_references: Sequence[str],
    *,
    target_language: str | None = None,
    tokenize: str | None = None,
) -> dict[str, float]:
    """The translation-memory floor (:func:`translation_memory`) scored on a test split.

    Args:
        train_sources: Source sentences of the training split.
        train_targets: Their translations.
        test_sources: Source sentences of the evaluated split.
        test_references: Their reference translations.
        target_language: Passed to :func:`translation_scores` for BLEU's tokenizer.
        tokenize: Passed to :func:`translation_scores`: the model's BLEU tokenizer.

    Returns:
        ``{"baseline_tm_bleu": ..., "baseline_tm_chrf": ...}``.

    Raises:
        ValueError: A pair of lists differs in length, or the training or test lists are empty.
    """
    _check_pairs(test_sources, test_references, ("test_sources", "test_references"))
    hypotheses = translation_memory(train_sources, train_targets, test_sources)
    scores = translation_scores(hypotheses, test_references, target_language=target_language, tokenize=tokenize)
    return {f"baseline_tm_{name}": value for name, value in scores.items()}
