"""`attend robustness`: seeded perturbations beside clean accuracy, and the greedy word-substitution attack."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from attend.cli import main
from attend.data.noise import PERTURBATIONS, perturb, split_words, synonym_variants
from attend.data.readers import DataError
from attend.data.splits import rebuild_split
from attend.data.validation import text_problem
from attend.runtime import TextClassifier, evaluate, load
from attend.runtime.robustness import format_robustness, greedy_attack, perturbed_texts, robustness, robustness_rows
from tests.conftest import planted_rows, run_cli, write_csv

ODD_TEXTS = ["!", "a", "  x  ", "这部电影很好看", "映画は最高でした", "정말 좋아요", "🙂🙂", "x \u200b", "Ünïcödé ÄÖ ß",
             "great\tfilm\n", "..., great!!"]  # fmt: skip


@pytest.fixture(scope="module")
def classifier(trained: dict[str, Path]) -> TextClassifier:
    return load(trained["encoder"])


@pytest.fixture
def noisy_csv(tmp_path: Path) -> Path:
    """Planted rows not seen in training, every third one with the wrong label: accuracy near 2/3."""
    rows = planted_rows(90, seed=5)
    for row in rows[::3]:
        row["label"] = "pos" if row["label"] == "neg" else "neg"
    return write_csv(tmp_path / "noisy.csv", rows)


def test_clean_accuracy_is_what_evaluate_gives_on_the_same_rows(classifier: TextClassifier, noisy_csv: Path) -> None:
    rows, described = robustness_rows(classifier, noisy_csv, limit=0)
    assert len(rows) == 90 and "90 rows of" in described and "not the file the model was trained from" in described
    report = robustness(classifier, rows.texts, [labels[0] for labels in rows.labels], attack_examples=0)
    expected = evaluate(classifier, noisy_csv)["accuracy"]
    assert 0.5 < expected < 0.8  # a real check, not 1.0 == 1.0
    assert report["clean"] == expected
    assert report["examples"] == 90 and set(report["perturbations"]) == set(PERTURBATIONS)
    assert set(report["changed"]) == set(PERTURBATIONS)
    # The encoder's tokenizer lowercases: casing changes every text but nothing the model reads (it had
    # been reported as 100 % changed, and its +0.00 read as robustness to case)
    assert report["changed"]["casing"] == 0.0 and report["perturbations"]["casing"] == report["clean"]
    assert all(0 < share <= 1 for name, share in report["changed"].items() if name != "casing")

    sampled, described = robustness_rows(classifier, noisy_csv, limit=40, seed=3)
    assert len(sampled) == 40 and described.endswith("; measured on a seeded sample of 40 of them")
    assert sampled.texts == robustness_rows(classifier, noisy_csv, limit=40, seed=3)[0].texts
    assert sampled.texts != robustness_rows(classifier, noisy_csv, limit=40, seed=4)[0].texts


def test_the_training_data_gives_its_test_split_even_from_a_copy(
    classifier: TextClassifier, trained: dict[str, Path], tmp_path: Path
) -> None:
    test = rebuild_split(trained["encoder"], "test")
    copy = Path(shutil.copy(trained["data"], tmp_path / "moved.csv"))  # the same bytes elsewhere
    for data in (trained["data"], copy):
        rows, described = robustness_rows(classifier, data)
        assert rows.texts == test.texts and described.startswith("test split of") and "(60 rows)" in described
    report = robustness(classifier, rows.texts, [labels[0] for labels in rows.labels], attack_examples=0)
    assert report["clean"] == classifier.evaluate(test)["accuracy"]
    # Other columns than training read: not its split, so every row, read as asked.
    # (the columns swapped: one column read as both is refused by the reader now)
    from attend.runtime.robustness import _training_split

    assert _training_split(classifier, copy, "label", "text") == (
        None, "the model's training data, read with other columns than training read it")


def test_an_ensembles_training_data_gives_the_split_its_members_held_out(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from attend.runtime import make_ensemble

    members = [trained["encoder"], trained["bilstm_attention"]]  # the same file and seed: the same test rows
    ensemble = load(make_ensemble(members, tmp_path / "ens")["out_dir"])
    rows, described = robustness_rows(ensemble, trained["data"])
    assert rows.texts == rebuild_split(trained["encoder"], "test").texts and described.startswith("test split of")


def test_rows_of_other_data_leave_out_the_texts_the_model_trained_on(
    classifier: TextClassifier, trained: dict[str, Path], noisy_csv: Path, tmp_path: Path
) -> None:
    """Before: data that was not the training file itself (here: its rows plus others) was measured
    whole, training texts included, so clean and perturbed accuracy came out too high."""
    train = rebuild_split(trained["encoder"], "train")
    mixed = tmp_path / "mixed.csv"
    rows = [{"text": t, "label": labels[0]} for t, labels in zip(train.texts[:30], train.labels[:30], strict=True)]
    unseen = robustness_rows(classifier, noisy_csv, limit=0)[0]  # 90 planted rows training never saw
    write_csv(mixed, rows + [{"text": t, "label": labels[0]} for t, labels in zip(unseen.texts, unseen.labels,
                                                                                   strict=True)])  # fmt: skip
    found, described = robustness_rows(classifier, mixed, limit=0)
    assert len(found) == 90 and "90 of the 120 rows of" in described, described  # not "the 120 rows" of 90 measured
    assert "(not the file the model was trained from): the other 30 are texts the model trained on, left out" in \
        described
    assert not set(found.texts) & set(train.texts)
    only_training = write_csv(tmp_path / "seen.csv", rows)
    with pytest.raises(DataError, match="every row is a text the model trained on"):
        robustness_rows(classifier, only_training, limit=0)


def test_same_seed_same_report_and_texts_perturbed_per_row(
    classifier: TextClassifier, trained: dict[str, Path]
) -> None:
    rows, described = robustness_rows(classifier, trained["data"])
    labels = [labels[0] for labels in rows.labels]
    first = robustness(classifier, rows.texts, labels, seed=1, attack_examples=15, rows=described)
    again = robustness(classifier, rows.texts, labels, seed=1, attack_examples=15, rows=described)
    assert json.dumps(first) == json.dumps(again) and first["rows"] == described
    for name in PERTURBATIONS:
        texts = perturbed_texts(rows.texts, name, seed=1, rate=0.2)
        assert texts == perturbed_texts(rows.texts, name, seed=1, rate=0.2)
        assert texts != perturbed_texts(rows.texts, name, seed=2, rate=0.2), name
        assert texts != rows.texts, name
        # Row i's noise depends on (seed, name, i) only: not on batching or on the other rows.
        assert texts[7] == perturb(rows.texts[7], name, random.Random(f"1:{name}:7"), 0.2)


@pytest.mark.parametrize("rate", [0.1, 1.0])
def test_perturbations_never_raise_or_empty_odd_and_cjk_texts(classifier: TextClassifier, rate: float) -> None:
    for name in PERTURBATIONS:
        for text in perturbed_texts(ODD_TEXTS, name, seed=0, rate=rate):
            assert text_problem(text) is None, (name, text)
    assert perturbed_texts(["x \u200b"], "word_dropout", rate=1.0) in (["x \u200b"], ["x"])
    report = robustness(classifier, ODD_TEXTS, ["pos"] * len(ODD_TEXTS), rate=rate, attack_examples=len(ODD_TEXTS))
    assert report["examples"] == len(ODD_TEXTS)


def test_a_perturbation_that_changes_no_text_is_said_to(classifier: TextClassifier) -> None:
    """On Chinese text typos, casing and synonyms change nothing: shown as +0.00 beside the others,
    they read as robustness. (Swapping the characters changes the text, but not what this model,
    whose vocabulary is English, reads: every character is its unknown token.)"""
    texts = ["这部电影很好看", "我不喜欢这个故事", "演员的表演非常出色", "情节太无聊了"]
    report = robustness(classifier, texts, ["pos", "neg", "pos", "neg"], attack_examples=0)
    assert report["changed"]["typos"] == report["changed"]["casing"] == report["changed"]["swap"] == 0.0
    assert report["perturbations"]["casing"] == report["clean"]
    table = format_robustness(report)
    (note,) = [line for line in table.splitlines() if "changed nothing the model reads here" in line]
    assert "casing" in note and "typos" in note
    english = robustness(classifier, ["the film was great and the story superb"], ["pos"], attack_examples=0)
    assert english["changed"]["swap"] == 1.0 and english["changed"]["casing"] == 0.0  # it lowercases
    # Nor can the attack change a Chinese text: its 0% said "perfectly robust" beside no note.
    labels = [classifier.predict([text])[0] for text in texts]
    attacked = robustness(classifier, texts, labels, attack_examples=4)["attack"]
    assert attacked["attacked"] == attacked["unattackable"] == 4 and attacked["success_rate"] == 0.0
    assert attacked["success_rate_attackable"] is None  # no text had a word to change
    assert "none of them had a word with a substitute" in format_robustness({**report, "attack": attacked})
    mixed = robustness(classifier, [*texts, "a great film"], [*labels, "pos"], attack_examples=5)["attack"]
    assert mixed["unattackable"] == 4 and "(4 of them had no word with a substitute" in format_robustness(
        {**report, "attack": mixed})
    # The rate over the one text that could be changed, beside the rate over all five (it had been alone).
    flipped = mixed["success_rate"] * 5
    assert mixed["success_rate_attackable"] == pytest.approx(flipped / 1)
    assert f"over the 1 that had one, the success rate is {100 * flipped:.1f}%" in format_robustness(
        {**report, "attack": mixed})


def test_noise_keeps_spacing_and_a_word_and_splits_cjk_by_character() -> None:
    assert split_words("很好 movie") == (["很", "好", "movie"], ["", "", " ", ""])
    text = "  One  good\tfilm,\n really  "
    for name in ("typos", "char_drop", "synonyms", "casing", "swap"):
        out = perturb(text, name, random.Random(0), rate=1.0)
        assert split_words(out)[1] == split_words(text)[1], name  # only words change, never the spacing
    for seed in range(20):
        kept = perturb("a b c d e", "word_dropout", random.Random(seed), rate=1.0)
        assert len(split_words(kept)[0]) == 1 and kept.strip() == kept
    variants = synonym_variants("Good,")
    assert variants and all(v[0].isupper() and v.endswith(",") for v in variants)
    assert synonym_variants("...") == [] and synonym_variants("很") == []
    for seed in range(10):  # the synonyms perturbation picks among exactly these variants
        assert perturb("Good,", "synonyms", random.Random(seed), 1.0) in variants
    # Korean is spaced: its words are runs of syllables (swap had traded syllables across words).
    assert split_words("정말 좋아요!") == (["정말", "좋아요!"], ["", " ", ""])
    assert perturb("안녕하세요 친구들", "swap", random.Random(0), 1.0) == "친구들 안녕하세요"
    # Stop words and words of two letters keep their meaning ("no" had become "nobelium", "in" "inch").
    for word in ("no", "No,", "he", "at", "in", "me", "or", "va", "can", "will"):
        assert synonym_variants(word) == [], word
    assert synonym_variants("serious") and synonym_variants("empty")  # content words, which sklearn's list holds
    assert perturb("no good", "synonyms", random.Random(0), 1.0).startswith("no ")


def test_a_successful_attack_really_changes_the_prediction(classifier: TextClassifier, noisy_csv: Path) -> None:
    rows, _ = robustness_rows(classifier, noisy_csv, limit=0)
    labels = [labels[0] for labels in rows.labels]
    attacks = greedy_attack(classifier, rows.texts, labels, seed=0, examples=25, budget=0.2)
    assert len(attacks) == 25 and [a.index for a in attacks] == sorted(a.index for a in attacks)
    assert all(classifier.predict([a.text])[0] == a.label == labels[a.index] for a in attacks)  # only correct ones
    successes = [a for a in attacks if a.success]
    assert successes, "the planted-word model should fall to a substitution of its one sentiment word"
    for attack in successes[:5] + [a for a in attacks if not a.success][:5]:
        now = classifier.predict([attack.adversarial])[0]
        assert now == attack.predicted and (now != attack.label) == attack.success
        before, after = split_words(attack.text)[0], split_words(attack.adversarial)[0]
        assert sum(b != c for b, c in zip(before, after, strict=True)) == attack.words_changed
        assert 1 <= attack.words_changed <= max(1, int(0.2 * attack.words)) or not attack.success
        assert attack.adversarial_probability <= attack.probability
    # Four planted words: one change (the budget of a 5-word text) cannot flip it, and is all it gets.
    (held,) = greedy_attack(classifier, ["great wonderful superb excellent movie"], ["pos"], budget=0.2)
    assert not held.success and held.words_changed == 1 and classifier.predict([held.adversarial]) == ["pos"]
    # 20 % of 8 words is 1.6: one word, not two (before: rounded up to 2, 25 % of the text).
    (eight,) = greedy_attack(classifier, ["great wonderful the movie plot actor scene film"], ["pos"], budget=0.2)
    assert eight.words_changed == 1, eight
    (flipped,) = greedy_attack(classifier, ["great wonderful superb excellent movie"], ["pos"], budget=1.0)
    assert flipped.words_changed > 1 and classifier.predict([flipped.adversarial]) == [flipped.predicted]
    report = robustness(classifier, rows.texts, labels, attack_examples=25)
    assert report["attack"]["attacked"] == 25 and report["attack"]["success_rate"] == len(successes) / 25
    assert report["attack"]["budget"] == 0.2 and report["attack"]["requested"] == 25  # not "examples": a budget


def test_multi_label_models_are_refused_clearly(classifier: TextClassifier) -> None:
    multi = load(classifier.path)
    multi.config = {**multi.config, "model": {**multi.config["model"], "multi_label": True}}
    with pytest.raises(ValueError, match="multi-label"):
        robustness(multi, ["great film"], ["pos"])
    with pytest.raises(ValueError, match=r"labels\[0\]='meh'"):
        robustness(classifier, ["great film"], ["meh"])


def test_cli_json_and_table(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["robustness", str(trained["encoder"]), str(trained["data"]), "--attack-examples", "10", "--seed", "2"]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert captured.err == ""  # no progress lines with --json
    assert {"clean", "perturbations", "attack", "examples", "rows"} <= set(report)
    assert set(report["perturbations"]) == set(PERTURBATIONS) and report["attack"]["attacked"] == 10
    assert report["examples"] == 60 and report["rows"].startswith("test split of")
    assert main(args) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "clean" in table and all(name in table for name in PERTURBATIONS) and "success rate" in table
    assert "perturbation: typos" in captured.err  # progress lines, which --no-progress silences (it had none)
    assert main([*args, "--no-progress"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == table
    # No attack asked for is said so (it read "no correctly classified example attacked", like a result)
    assert main([*args[:3], "--attack-examples", "0", "--limit", "20"]) == 0
    assert "greedy word substitution: not run (--attack-examples 0)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--text-col", "review"], "'review'"),
        (["--label-col", "stars"], "'stars'"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_field(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    other = write_csv(tmp_path / "other.csv", planted_rows(20, seed=9))
    assert main(["robustness", str(trained["encoder"]), str(other), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and named in err and "Traceback" not in err


def test_cli_unknown_model_dir_or_data_exits_2(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["robustness", str(tmp_path / "nope"), str(trained["data"])]) == 2
    assert "nope: no such model directory" in capsys.readouterr().err
    assert main(["robustness", str(trained["encoder"]), str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_a_model_whose_labels_were_read_as_1_0_takes_1_in_new_data(trained: dict[str, Path], tmp_path: Path) -> None:
    """Review: JSON labels 1.0 are read "1" now; a model trained before, knowing "1.0", was refused them here."""
    import copy

    from attend.data.readers import match_label

    assert match_label("1", ["0.0", "1.0"]) == "1.0" and match_label("1", ["1.0", "1e0"]) is None
    assert match_label("pos", ["neg", "pos"]) == "pos" and match_label("2", ["0.0", "1.0"]) is None
    older = copy.copy(load(trained["encoder"]))
    older.labels = ["0.0", "1.0"]  # as an older model of numeric labels would know them
    rows = [{"text": r["text"], "label": "1" if r["label"] == "pos" else "0"} for r in planted_rows(20, seed=5)]
    found, _ = robustness_rows(older, write_csv(tmp_path / "numbers.csv", rows), limit=0)
    assert {labels[0] for labels in found.labels} == {"0.0", "1.0"}


@pytest.mark.parametrize(("flag", "value", "said"), [
    ("--rate", "0", "argument --rate: 0 must be a number in (0, 1]"),
    ("--rate", "1.5", "argument --rate: 1.5 must be a number in (0, 1]"),
    ("--attack-examples", "-3", "argument --attack-examples: -3 must be at least 0"),
    ("--limit", "-1", "argument --limit: -1 must be at least 0")])  # fmt: skip
def test_bad_values_are_named_by_their_flag(flag: str, value: str, said: str) -> None:
    """As train names them (they had been named as the function's parameters: rate=0.0, limit=-1)."""
    done = run_cli("robustness", "model", "data.csv", flag, value)
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr
