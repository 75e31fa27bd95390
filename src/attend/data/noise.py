"""Seeded text perturbations: the noise of real users' text, for augmentation and robustness checks.

One function, :func:`perturb`, applies one named perturbation to a share (``rate``) of a text's
words with a caller's :class:`random.Random`, so the same seed gives the same noisy text. Training
(``--augment``, through :class:`Augmenter`) and ``attend robustness`` use the same definitions:

* ``typos``: a letter of each chosen word becomes a neighbouring key on a QWERTY keyboard;
* ``char_drop``: a letter or digit of each chosen word is deleted;
* ``word_dropout``: the chosen words are deleted (at least one word always stays);
* ``swap``: chosen words trade places with their right-hand neighbour;
* ``synonyms``: chosen words become a WordNet synonym (English; words without one are left);
* ``casing``: chosen words change case (upper, lower or title).

Words are runs of non-space characters, except that each Chinese or Japanese character is a word
of its own (those scripts do not put spaces between words; Korean does, and its words are runs of
syllables). ``synonyms`` leaves English function words (:data:`FUNCTION_WORDS`: "no", "he", "in")
and words of one or two letters alone: their WordNet synonyms are other senses ("nobelium",
"helium", "inch"), and a lost "no" turns a sentence's meaning. Spacing is kept: only the chosen
words change. ``k = max(1, round(rate * eligible words))`` words change, so a short text
always gets at least one edit when it has a word the perturbation applies to, and none when it
has not (``typos`` on Chinese text, ``synonyms`` on words WordNet does not know).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FUNCTION_WORDS",
    "PERTURBATIONS",
    "Augmenter",
    "idle_perturbations",
    "join_words",
    "parse_perturbations",
    "perturb",
    "split_words",
    "synonym_variants",
    "unspaced_share",
]

#: Every perturbation :func:`perturb` knows, in a fixed order.
PERTURBATIONS = ("typos", "char_drop", "word_dropout", "swap", "synonyms", "casing")

#: Scripts written without spaces between words: kana and CJK ideographs. Hangul is spaced: a Korean
#: word is a run of syllables, as a Latin one is of letters (each syllable had been a word, and swap
#: had traded syllables across words).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_UNSPACED = re.compile(f"[{_CJK}]")


def unspaced_share(texts: Sequence[str], *, sample: int = 2000) -> float:
    """Share of the non-space characters of (the first ``sample``) ``texts`` that belong to scripts
    written without spaces between words (Chinese, Japanese): where splitting on spaces finds no words."""
    chars = unspaced = 0
    for text in texts[:sample]:
        chars += sum(not c.isspace() for c in text)
        unspaced += len(_UNSPACED.findall(text))
    return unspaced / chars if chars else 0.0
_CORE = re.compile(r"^(\W*)([^\W\d_]+)(\W*)$")

# Neighbouring keys of each letter on a US QWERTY keyboard (same row and the rows above and below).
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        _near = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_ROWS):
                _near += [_ROWS[_other][j] for j in (_c - 1, _c, _c + 1) if 0 <= j < len(_ROWS[_other])]
        _NEIGHBOURS[_key] = "".join(_near)


def parse_perturbations(value: str | Iterable[str], *, field: str = "augment") -> tuple[str, ...]:
    """Names from ``"typos,swap"`` (or a list), checked: an unknown one is a ValueError naming ``field``."""
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"{field}={unknown[0]!r} is not a perturbation; choose from {', '.join(PERTURBATIONS)}")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:  # it had been dropped without a word, read as if it weighed that perturbation more
        raise ValueError(f"{field}={','.join(names)!r} names {twice!r} twice; each perturbation named is picked "
                         "with the same chance, so name each once")  # fmt: skip
    return tuple(names)


def split_words(text: str) -> tuple[list[str], list[str]]:
    """The words of ``text`` as every perturbation sees them, and the gaps around them (spacing,
    kept as is): ``text == gaps[0] + words[0] + gaps[1] + ... + gaps[-1]``, so
    ``join_words(*split_words(text)) == text``. Public for callers that edit words themselves (the
    greedy word-substitution attack of :mod:`attend.runtime.robustness`)."""
    words, gaps, end = [], [], 0
    for match in _WORD.finditer(text):
        gaps.append(text[end : match.start()])
        words.append(match.group())
        end = match.end()
    gaps.append(text[end:])
    return words, gaps


def join_words(words: list[str], gaps: list[str]) -> str:
    """The text of ``words`` with ``gaps`` around them (``len(gaps) == len(words) + 1``)."""
    return "".join(g + w for g, w in zip(gaps, words, strict=False)) + gaps[len(words)]


def _count(rate: float, eligible: int) -> int:
    return min(eligible, max(1, round(rate * eligible)))


def _marks_end(word: str, i: int) -> int:
    """Where the letter at ``i`` ends: after the combining marks that follow it (a decomposed ``é`` is
    ``e`` and U+0301, one letter as a reader sees it)."""
    end = i + 1
    while end < len(word) and unicodedata.combining(word[end]):
        end += 1
    return end


def _typo_spots(word: str) -> list[int]:
    """The letters of ``word`` a typo may replace: a keyboard's plain letters, not one carrying a mark
    (a decomposed ``é``'s ``e`` had become ``ŕ``, as a composed ``é`` never does)."""
    return [i for i, ch in enumerate(word) if ch.lower() in _NEIGHBOURS and _marks_end(word, i) == i + 1]


def _typo(word: str, rng: random.Random) -> str:
    i = rng.choice(_typo_spots(word))
    new = rng.choice(_NEIGHBOURS[word[i].lower()])
    return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1 :]


def _drop_char(word: str, rng: random.Random) -> str:
    spots = [i for i, ch in enumerate(word) if ch.isalnum()]
    i = rng.choice(spots)
    return word[:i] + word[_marks_end(word, i) :]  # with its marks: one had been left on the letter before


def _recase(word: str, rng: random.Random) -> str:
    options = [w for w in (word.upper(), word.lower(), word.title()) if w != word]
    return rng.choice(options) if options else word


def synonym_variants(word: str) -> list[str]:
    """Every WordNet synonym of ``word`` as the ``synonyms`` perturbation would write it: the word's
    punctuation kept and its casing copied (``"Good,"`` -> ``"Beneficial,"``, ...). ``[]`` when it has none."""
    from attend.data.synonyms import synonyms

    match = _CORE.match(word)
    if match is None or not _swappable(match.group(2)):
        return []
    head, core, tail = match.groups()
    variants = []
    for new in synonyms(core):
        if core.isupper() and len(core) > 1:
            new = new.upper()
        elif core[0].isupper():
            new = new[0].upper() + new[1:]
        variants.append(head + new + tail)
    return variants


def _synonym(word: str, rng: random.Random) -> str:
    return rng.choice(synonym_variants(word))  # same draw as choosing among synonyms(core)


def _has_synonym(word: str) -> bool:
    from attend.data.synonyms import synonyms

    match = _CORE.match(word)
    return match is not None and _swappable(match.group(2)) and bool(synonyms(match.group(2)))


#: English function words: pronouns, articles, determiners, prepositions, conjunctions, auxiliaries
#: and negations. WordNet's "synonyms" of them are other senses ("no" -> "nobelium", "he" -> "helium",
#: "can" -> "tin"), and a lost "not" turns a sentence's meaning. (A general list: scikit-learn's also
#: holds content words such as "serious", "empty" and "fire".)
FUNCTION_WORDS = frozenset(
    "a about above after again against all am an and any are as at be been before being below between both but "
    "by can could did do does doing down during each either few for from further had has have having he her here "
    "hers herself him himself his how i if in into is it its itself just me might more most must my myself neither "
    "no nor not of off on once only or other ought our ours ourselves out over own same shall she should so some "
    "such than that the their theirs them themselves then there these they this those through to too under until "
    "up upon us very was we were what when where whether which while who whom whose why will with within without "
    "would yet you your yours yourself yourselves".split()
)


def _swappable(core: str) -> bool:
    """Whether a word may become a synonym: no English function word, and of three letters or more."""
    return len(core) > 2 and core.lower() not in FUNCTION_WORDS


def perturb(text: str, name: str, rng: random.Random, rate: float = 0.1) -> str:
    """``text`` with perturbation ``name`` applied to ``rate`` of its words (see the module docstring).

    Raises:
        ValueError: ``name`` is not in :data:`PERTURBATIONS`, or ``rate`` is not in (0, 1].
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"perturbation={name!r} is unknown; choose from {', '.join(PERTURBATIONS)}")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate={rate} must be in (0, 1]")
    words, gaps = split_words(text)
    if name == "word_dropout":
        if len(words) < 2:
            return text
        drop = set(rng.sample(range(len(words)), _count(rate, len(words) - 1)))
        kept = [i for i in range(len(words)) if i not in drop]
        # Each kept word keeps the gap before it; the text's leading and trailing space stay.
        new_gaps = [gaps[0]] + [gaps[i] for i in kept[1:]] + [gaps[-1]]
        return join_words([words[i] for i in kept], new_gaps)
    if name == "swap":
        if len(words) < 2:
            return text
        for i in rng.sample(range(len(words) - 1), _count(rate, len(words) - 1)):
            words[i], words[i + 1] = words[i + 1], words[i]
        return join_words(words, gaps)
    edit, eligible = {
        "typos": (_typo, lambda w: bool(_typo_spots(w))),
        "char_drop": (_drop_char, lambda w: sum(ch.isalnum() for ch in w) >= 2),
        "synonyms": (_synonym, _has_synonym),
        "casing": (_recase, lambda w: w.upper() != w.lower()),
    }[name]
    candidates = [i for i, w in enumerate(words) if eligible(w)]
    if not candidates:
        return text
    for i in rng.sample(candidates, _count(rate, len(candidates))):
        words[i] = edit(words[i], rng)
    return join_words(words, gaps)


def idle_perturbations(names: Sequence[str], texts: Sequence[str], *, rate: float = 0.1, seed: int = 0,
                       sample: int = 500) -> list[str]:  # fmt: skip
    """Those of ``names`` that change none of (a seeded sample of ``sample``) ``texts``: ``typos`` and
    ``casing`` on Chinese, ``synonyms`` on words WordNet does not know. Augmenting with one trains on
    clean copies, though the run records it."""
    rng = random.Random(seed)
    tried = rng.sample(list(texts), sample) if len(texts) > sample else list(texts)
    return [name for name in names
            if not any(perturb(text, name, random.Random(f"{seed}:{name}:{i}"), rate) != text
                       for i, text in enumerate(tried))]  # fmt: skip


@dataclass(frozen=True)
class Augmenter:
    """Training-time augmentation: each example, each epoch, may get one of ``names``.

    With probability ``probability`` an example is perturbed, by one of ``names`` picked at random,
    at ``rate``; otherwise it is seen clean. The choice is a function of ``(seed, key)`` only (the
    trainer passes ``(epoch, example index)``), so a resumed run sees the same noise.
    """

    names: tuple[str, ...]
    rate: float = 0.1
    probability: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        parse_perturbations(self.names)
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"augment_rate={self.rate} must be in (0, 1]")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"augment_probability={self.probability} must be in [0, 1]")

    def __call__(self, text: str, key: tuple[int, ...]) -> str:
        if not self.names:
            return text
        rng = random.Random(f"{self.seed}:{':'.join(map(str, key))}")  # str seeds hash the same in every process
        if rng.random() >= self.probability:
            return text
        return perturb(text, rng.choice(self.names), rng, self.rate)
