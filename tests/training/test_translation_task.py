"""Training a translator through the one Trainer: it learns a toy task, resumes, and reports honestly."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from attend.data.parallel import ParallelTexts
from attend.runtime import Translator, load
from attend.training import TrainingArgs, TrainingInterrupted, train_translation
from attend.training.trainer import _Dist, _lr_factor, epoch_batches
from tests.conftest import REVERSE_WORDS, TOY_TRANSLATION_ARGS, TOY_TRANSLATOR, reverse_pairs, write_csv


def test_the_reversal_task_is_learned_to_every_held_out_sentence(translator_dir: Path) -> None:
    translator = load(translator_dir)
    assert isinstance(translator, Translator)
    metrics = json.loads((translator_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["sentences"] > 50
    seen = {row["source"] for row in reverse_pairs(2000)}
    every = [" ".join(p) for n in (3, 4) for p in itertools.product(REVERSE_WORDS, repeat=n)]
    unseen = [s for s in every if s not in seen]
    sample = random.Random(0).sample(unseen, 100)
    for beam in (1, 4):
        outputs = [t.translation for t in translator.translate(sample, beam=beam)]
        wrong = [(s, o) for s, o in zip(sample, outputs, strict=True) if o != " ".join(reversed(s.split()))]
        assert not wrong, (beam, wrong[:5])
    # The report's figures are the model's own and the floor's, on the same test split.
    assert metrics["bleu"] > 95 and metrics["baseline_tm_bleu"] < metrics["bleu"]
    config = json.loads((translator_dir / "config.json").read_text())
    assert config["task"] == "translation" and config["tokenizer"]["files"] == ["tokenizer.json"]
    assert config["data"]["pairs"]["train"] + config["data"]["pairs"]["dev"] + config["data"]["pairs"]["test"] == 2000


def test_copies_of_a_source_stay_in_one_split(translator_dir: Path) -> None:
    from attend.data.parallel import group_split

    rows = reverse_pairs(2000)
    splits = group_split([r["source"] for r in rows], dev_fraction=0.1, test_fraction=0.1, seed=0)
    by_source: dict[str, set[str]] = {}
    for row, split in zip(rows, splits, strict=True):
        by_source.setdefault(row["source"], set()).add(split)
    assert all(len(found) == 1 for found in by_source.values())
    assert any(len([r for r in rows if r["source"] == s]) > 1 for s in by_source), "no duplicates: nothing tested"


def test_an_interrupted_run_resumes_to_a_working_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_csv(tmp_path / "pairs.csv", reverse_pairs(200))
    options = {**TOY_TRANSLATION_ARGS, "epochs": 2}
    with pytest.raises(TrainingInterrupted):
        train_translation(data, tmp_path / "m", model_options=dict(TOY_TRANSLATOR),
                          args=TrainingArgs(**options, stop_after_steps=5))  # fmt: skip
    state = json.loads((tmp_path / ".m.training" / "checkpoint" / "state.json").read_text())["state"]
    # The same file named from another directory resumes (it was refused: "these differ: data=...").
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = train_translation("../pairs.csv", tmp_path / "m", model_options=dict(TOY_TRANSLATOR),
                               args=TrainingArgs(**options), resume=True)  # fmt: skip
    assert result.history[-1]["step"] == 2 * result.history[0]["step"]
    # The resumed epoch's seconds include those before the interruption (they were left out).
    assert state["epoch_seconds"] > 0 and result.history[0]["seconds"] >= round(state["epoch_seconds"], 2)
    uninterrupted = train_translation(data, tmp_path / "u", model_options=dict(TOY_TRANSLATOR),
                                      args=TrainingArgs(**options))  # fmt: skip
    assert result.metrics["bleu"] == pytest.approx(uninterrupted.metrics["bleu"])
    assert result.metrics["loss"] == pytest.approx(uninterrupted.metrics["loss"], rel=1e-4)
    with pytest.raises(TrainingInterrupted):
        train_translation(data, tmp_path / "n", model_options=dict(TOY_TRANSLATOR),
                          args=TrainingArgs(**options, stop_after_steps=5))  # fmt: skip
    # Started with a relative name, resumed from another directory (the name was recorded as typed).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingInterrupted):
        train_translation("pairs.csv", tmp_path / "r", model_options=dict(TOY_TRANSLATOR),
                          args=TrainingArgs(**options, stop_after_steps=5))  # fmt: skip
    monkeypatch.chdir(tmp_path / "elsewhere")
    train_translation("../pairs.csv", tmp_path / "r", model_options=dict(TOY_TRANSLATOR), args=TrainingArgs(**options),
                      resume=True)  # fmt: skip
    # What differs is named (it was "must use the same model and options" alone).
    with pytest.raises(ValueError, match=r"these differ: source_col='en' \(the interrupted run had 'source'\)"):
        train_translation(data, tmp_path / "n", model_options=dict(TOY_TRANSLATOR), args=TrainingArgs(**options),
                          resume=True, source_col="en")  # fmt: skip
    # From Python as from the command line: the columns and the model options left out are the
    # interrupted run's (the columns were "no column 'source'", the options "these differ").
    renamed = write_csv(tmp_path / "renamed.csv", [{"en": r["source"], "xx": r["target"]} for r in reverse_pairs(200)])
    with pytest.raises(TrainingInterrupted):
        train_translation(renamed, tmp_path / "c", model_options=dict(TOY_TRANSLATOR),
                          args=TrainingArgs(**options, stop_after_steps=5), source_col="en",
                          target_col="xx")  # fmt: skip
    done = train_translation(renamed, tmp_path / "c", args=TrainingArgs(**options), resume=True)
    assert done.history[-1]["step"] == result.history[-1]["step"]
    # The same rows at another path (moved to scratch storage) resume; other rows there do not.
    moved = tmp_path / "scratch.csv"
    moved.write_bytes(data.read_bytes())
    other = write_csv(tmp_path / "other.csv", reverse_pairs(200, seed=9))
    with pytest.raises(ValueError, match="--resume must read the same data as the interrupted run"):
        train_translation(other, tmp_path / "n", model_options=dict(TOY_TRANSLATOR), args=TrainingArgs(**options),
                          resume=True)  # fmt: skip
    again = train_translation(moved, tmp_path / "n", model_options=dict(TOY_TRANSLATOR), args=TrainingArgs(**options),
                              resume=True)  # fmt: skip  (it was refused: "these differ: data=...")
    assert again.history[-1]["step"] == result.history[-1]["step"]


def test_separate_vocabularies_and_a_split_column(tmp_path: Path) -> None:
    rows = reverse_pairs(120)
    for i, row in enumerate(rows):
        row["target"] = row["target"].upper()
        row["part"] = "test" if i % 10 == 0 else "dev" if i % 10 == 1 else "train"
    # a test pair training also has, in other letter case: a copy as the split itself finds copies
    rows[10]["source"], rows[10]["target"] = rows[2]["source"].upper(), rows[2]["target"]
    rows[21]["source"] = rows[3]["source"]  # and a dev source, which chooses the epoch
    data = write_csv(tmp_path / "pairs.csv", rows)
    result = train_translation(
        data, tmp_path / "m", model_options={**TOY_TRANSLATOR, "shared_vocabulary": False},
        args=TrainingArgs(**{**TOY_TRANSLATION_ARGS, "epochs": 1}), split_col="part",
    )  # fmt: skip
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["tokenizer"]["files"] == ["source_tokenizer.json", "target_tokenizer.json"]
    assert config["data"]["pairs"] == {"train": 96, "dev": 12, "test": 12}
    assert config["model"]["target_vocab_size"] is not None
    assert result.metrics["sentences"] == 12
    # The split column put training sources in the test split: the report says how many (it was silent).
    train_sources = {r["source"].casefold() for r in rows if r["part"] == "train"}
    seen = sum(r["source"].casefold() in train_sources for r in rows if r["part"] == "test")
    assert seen >= 1 and f"{seen} of the 12 test sources also occur in the training split" in result.report
    # ... and the dev split's too, which chose the epoch (only the scored split's was said).
    dev_seen = sum(r["source"].casefold() in train_sources for r in rows if r["part"] == "dev")
    assert dev_seen >= 1 and (f"{dev_seen} of the 12 dev sources also occur in the training split (as the split "
                              "column has it): the epoch was chosen on" in result.report)  # fmt: skip
    translator = load(tmp_path / "m")
    assert isinstance(translator, Translator)
    assert translator.source_tokenizer is not translator.target_tokenizer


def test_a_run_with_no_held_out_pairs_says_its_figures_are_on_the_training_split(tmp_path: Path) -> None:
    """A split column of 'train' alone: the report's floor, near-perfect on training sources, had stood as
    if held-out figures were 98 BLEU below it."""
    rows = [{**row, "part": "train"} for row in reverse_pairs(60)]
    result = train_translation(write_csv(tmp_path / "pairs.csv", rows), tmp_path / "m",
                               model_options=dict(TOY_TRANSLATOR), split_col="part",
                               args=TrainingArgs(**{**TOY_TRANSLATION_ARGS, "epochs": 1}))  # fmt: skip
    assert result.report.startswith("train split: 60 sentences"), result.report
    assert "no dev or test pairs: the figures above are on the training split, which the model learned from" \
        in result.report


def test_bad_pairs_are_named_before_any_training(tmp_path: Path) -> None:
    from attend.data.readers import DataError

    rows = reverse_pairs(30)
    rows[4]["target"] = "   "
    data = write_csv(tmp_path / "pairs.csv", rows)
    with pytest.raises(DataError, match="line 6"):
        train_translation(data, tmp_path / "m", args=TrainingArgs(**TOY_TRANSLATION_ARGS))
    with pytest.raises(DataError, match="'english'"):
        train_translation(data, tmp_path / "m", source_col="english", args=TrainingArgs(**TOY_TRANSLATION_ARGS))
    with pytest.raises(ValueError, match="tokenizer="):
        train_translation(ParallelTexts(["a b"], ["b a"]), tmp_path / "m", model_options={"tokenizer": "words"})
    # Options of the wrong type are named: "false" had shared the vocabulary, a string "generation"
    # gave Python's "dictionary update sequence" message.
    for options, said in (({"shared_vocabulary": "false"}, r"shared_vocabulary='false' must be true or false"),
                          ({"generation": "beam 4"}, r"generation='beam 4' must be an object of decoding options"),
                          ({"generation": []}, r"generation=\[\] must be an object")):
        with pytest.raises(ValueError, match=said):
            train_translation(ParallelTexts(["a b"], ["b a"]), tmp_path / "m", model_options=options)
    # A model shorter than what training cuts sentences to: it had trained, then failed on translate.
    with pytest.raises(ValueError, match=r"max_length=12 \(the model's longest sequence\) is shorter than the "
                                         r"training max_length=16 \(--max-length\)"):  # fmt: skip
        train_translation(data, tmp_path / "m", model_options={**TOY_TRANSLATOR, "max_length": 12},
                          args=TrainingArgs(**TOY_TRANSLATION_ARGS))  # fmt: skip
    assert not (tmp_path / "m").exists()


def test_length_pooled_batches_cover_every_example_once_and_replay() -> None:
    lengths = np.random.default_rng(0).integers(1, 40, 1000)
    args = TrainingArgs(batch_size=8)
    batches = epoch_batches(1000, args, 3, _Dist(), lengths)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == epoch_batches(1000, args, 3, _Dist(), lengths)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    random_spread = np.mean([lengths[b].max() - lengths[b].min() for b in epoch_batches(1000, args, 3, _Dist())])
    assert spread < random_spread / 4


def test_translation_batches_leave_little_target_padding_and_the_loss_skips_it() -> None:
    # Pairs whose source and target lengths are unrelated: sorting by their sum would pad both
    # sides; the task orders by target length first, so targets come out nearly unpadded.
    import torch
    import torch.nn.functional as F

    from attend.models import build
    from attend.training.tasks.seq2seq import TranslationTask

    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]
    rows = [(" ".join(rng.choices(words, k=rng.randint(1, 12))), " ".join(rng.choices(words, k=rng.randint(1, 12))))
            for _ in range(1200)]  # fmt: skip
    task = TranslationTask(ParallelTexts([a for a, _ in rows], [b for _, b in rows]))
    args = TrainingArgs(batch_size=16, vocab_size=60, max_length=16, seed=0)
    task.prepare(args, None)
    _, targets = task.encoded["train"]
    batches = epoch_batches(task.train_size, args, 0, _Dist(), task.lengths())
    assert sorted(i for b in batches for i in b) == list(range(task.train_size))
    target_lengths = np.asarray([len(t) for t in targets])
    padded = sum(len(b) * target_lengths[b].max() for b in batches)
    assert target_lengths.sum() / padded > 0.95  # (by the sum of both lengths: 0.70)

    torch.manual_seed(0)
    model = build({"model_type": "seq2seq", **task.model_config(), "dim": 32, "encoder_layers": 1,
                   "decoder_layers": 1, "num_heads": 2}).eval()  # fmt: skip
    batch = next(b for b in map(task.train_batch, batches) if (b["labels"] == 0).any())  # one with padding
    labels = batch["labels"]
    real = labels != 0
    full = model(batch).logits  # (B, T, V)
    torch.testing.assert_close(model({**batch, "logit_positions": real}).logits, full[real])
    every_position = F.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=0, label_smoothing=0.1)
    task.label_smoothing = 0.1
    torch.testing.assert_close(task.loss(model, batch), every_position)


def test_inverse_sqrt_schedule_and_label_smoothing_are_checked() -> None:
    args = TrainingArgs(schedule="inverse_sqrt", warmup_ratio=0.1)
    factors = [_lr_factor(step, 100, args) for step in range(100)]
    assert max(factors) == pytest.approx(1.0) and factors[9] == pytest.approx(1.0)
    assert factors[39] == pytest.approx((10 / 40) ** 0.5)
    with pytest.raises(ValueError, match=r"label_smoothing=1\.0"):
        TrainingArgs(label_smoothing=1.0)
    with pytest.raises(ValueError, match="schedule='sqrt'"):
        TrainingArgs(schedule="sqrt")



def test_training_pairs_cut_to_max_length_are_counted_and_learned_without_their_end(tmp_path: Path) -> None:
    """The README says cut pairs are counted in the report: the training split's were not, and a cut
    target ended in </s>, teaching the decoder to stop mid-sentence."""
    from attend.data.tokenization import SubwordTokenizer

    rows = reverse_pairs(200) + [{"source": " ".join(["red cat"] * (20 + i)), "target": "cat red " * (20 + i)}
                                 for i in range(10)]  # fmt: skip
    data = write_csv(tmp_path / "long.csv", rows)
    result = train_translation(data, tmp_path / "m", model_options=dict(TOY_TRANSLATOR),
                               args=TrainingArgs(**{**TOY_TRANSLATION_ARGS, "epochs": 1}))  # fmt: skip
    assert result.metrics["truncated_training_pairs"] >= 1
    assert f"{result.metrics['truncated_training_pairs']} training pairs were cut to max_length=16" in result.report
    translator = load(tmp_path / "m")
    assert isinstance(translator, Translator)
    tokenizer = translator.target_tokenizer
    (cut,), _ = tokenizer.encode_ids([rows[-1]["target"]], 16, end_cut=False)
    (whole,), _ = tokenizer.encode_ids(["cat red"], 16, end_cut=False)
    assert len(cut) == 16 and cut[-1] != SubwordTokenizer.EOS and whole[-1] == SubwordTokenizer.EOS


def test_every_split_counts_bleu_with_the_tokenizer_of_the_training_targets() -> None:
    """Before, each split's references chose: a dev split with one Japanese reference among digits was
    counted by character, the test split by word, and only the test's tokenizer was reported."""
    import torch

    from attend.models import build
    from attend.training.tasks.seq2seq import TranslationTask

    rows = [(f"number {i}", str(i)) for i in range(40)]
    splits = ["train"] * 30 + ["dev"] * 5 + ["test"] * 5
    targets = [b for _, b in rows]
    targets[31] = "こんにちは"  # one dev reference in Japanese
    task = TranslationTask(ParallelTexts([a for a, _ in rows], targets, splits=splits))
    task.prepare(TrainingArgs(batch_size=8, vocab_size=60, max_length=8, seed=0), None)
    assert task.bleu_tokenize == "13a"
    torch.manual_seed(0)
    model = build({"model_type": "seq2seq", **task.model_config(), "dim": 16, "encoder_layers": 1,
                   "decoder_layers": 1, "num_heads": 2}).eval()  # fmt: skip
    dev, test = task.evaluate(model, "dev", 8), task.evaluate(model, "test", 8)
    assert dev["bleu_tokenize"] == test["bleu_tokenize"] == "13a"  # dev was "char"
    from sacrebleu.metrics import BLEU

    outputs, references = [s["translation"] for s in dev["samples"]], [s["reference"] for s in dev["samples"]]
    assert len(outputs) == 5 and "こんにちは" in references
    assert dev["bleu"] == pytest.approx(BLEU(tokenize="13a").corpus_score(outputs, [references]).score)
    assert task.reference_metrics("dev")["baseline_tm_bleu"] >= 0
