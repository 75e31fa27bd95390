"""Robust training options: augmentation, FGM/PGD on the embeddings, R-Drop; checked and resumable."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attend.data.noise import PERTURBATIONS, Augmenter, perturb
from attend.data.parallel import ParallelTexts
from attend.data.readers import LabelledTexts
from attend.training import TrainingArgs
from attend.training.adversarial import EmbeddingAdversary
from attend.training.tasks.classification import ClassificationTask, symmetric_kl
from attend.training.tasks.seq2seq import TranslationTask
from attend.training.trainer import Trainer
from tests.conftest import kill_at, planted_rows, run_cli, write_csv

SMALL = {"dim": 32, "num_layers": 1, "num_heads": 2, "dropout": 0.1}
FAST = {"lr": 0.003, "vocab_size": 300, "batch_size": 16, "progress": False}



def _planted(n: int = 200) -> LabelledTexts:
    rows = planted_rows(n)
    return LabelledTexts([r["text"] for r in rows], [[r["label"]] for r in rows], source="planted")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"augment": "typos,typo"}, "augment='typo'"),
        ({"augment_rate": 0.0}, "augment_rate=0.0"),
        ({"adversarial": "fgsm"}, "adversarial='fgsm'"),
        ({"adversarial": "fgm", "adversarial_epsilon": 0.0}, "adversarial_epsilon"),
        ({"adversarial": "pgd", "adversarial_epsilon": -1.0}, "adversarial_epsilon"),
        ({"rdrop": -0.5}, "rdrop=-0.5"),
        ({"patience": -1}, "patience=-1 must be >= 0"),  # ran one epoch, "not improved for -1 epochs"
        ({"weight_decay": -5.0}, "weight_decay=-5.0 must be >= 0"),
        ({"grad_clip": -1.0}, "grad_clip=-1.0 must be >= 0"),  # silently turned clipping off
        ({"seed": -1}, "seed=-1 must be in [0, 2**32)"),
        ({"max_length": 100_000_000}, "max_length=100000000 is more than 65,536 tokens"),  # an allocation traceback
        ({"average_checkpoints": 1}, "average_checkpoints=1 must be 0 (off) or at least 2"),  # did nothing, silently
        # a million ran for minutes, printing nothing, never ending an epoch
        ({"adversarial": "pgd", "adversarial_steps": 1_000_000}, "adversarial_steps=1000000 is more than 100"),
    ],
)
def test_bad_robustness_options_name_the_value(options: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        TrainingArgs(**options)


def test_augment_is_a_comma_separated_string_normalised() -> None:
    assert TrainingArgs.from_dict({"augment": " swap, typos,"}).augment == "swap,typos"
    with pytest.raises(ValueError, match=r"augment='swap,typos,swap' names 'swap' twice"):  # was dropped unsaid
        TrainingArgs.from_dict({"augment": "swap, typos,swap"})
    with pytest.raises(ValueError, match="augment"):
        TrainingArgs.from_dict({"augment": ["swap"]})


def test_cli_refuses_an_unknown_augmentation_without_a_traceback(tmp_path: Path, planted_csv: Path) -> None:
    done = run_cli("train", str(planted_csv), "--out", str(tmp_path / "m"), "--augment", "typos,emoji", "--no-progress")
    assert done.returncode == 2
    assert "--augment emoji: is not a perturbation" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()


def test_a_task_without_the_feature_refuses_it(tmp_path: Path) -> None:
    pairs = ParallelTexts(["a b", "c d"] * 10, ["b a", "d c"] * 10)
    trainer = Trainer(TranslationTask(pairs), TrainingArgs(epochs=1, augment="typos", progress=False))
    with pytest.raises(ValueError, match="augment='typos': the translation task does not support it"):
        trainer.fit(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_augmented_batches_vary_by_epoch_and_replay_for_the_same_epoch() -> None:
    args = TrainingArgs(**FAST, augment="typos,word_dropout,swap", augment_probability=1.0, augment_rate=0.3)
    task = ClassificationTask(_planted(), model_options=SMALL)
    task.prepare(args, None)
    clean = ClassificationTask(_planted(), model_options=SMALL)
    clean.prepare(TrainingArgs(**FAST), None)
    indices = list(range(16))

    def ids(epoch: int) -> torch.Tensor:
        task.start_epoch(epoch)
        return task.train_batch(indices)["input_ids"]

    first, again, other = ids(0), ids(0), ids(1)
    plain = clean.train_batch(indices)["input_ids"]
    assert torch.equal(first, again)  # a resumed epoch sees the same noise
    assert first.shape != other.shape or not torch.equal(first, other)
    assert first.shape != plain.shape or not torch.equal(first, plain)
    assert torch.equal(task.train_batch(indices)["labels"], clean.train_batch(indices)["labels"])


def test_augmenter_leaves_some_examples_clean_and_is_seeded() -> None:
    augmenter = Augmenter(("typos",), rate=0.2, probability=0.5, seed=3)
    text = "the quick brown fox jumps over the lazy dog"
    outputs = [augmenter(text, (0, i)) for i in range(200)]
    changed = sum(o != text for o in outputs)
    assert 60 < changed < 140  # about half
    assert outputs == [augmenter(text, (0, i)) for i in range(200)]
    assert outputs != [Augmenter(("typos",), rate=0.2, probability=0.5, seed=4)(text, (0, i)) for i in range(200)]


def test_every_perturbation_keeps_spacing_and_handles_cjk_and_empty_text() -> None:
    rng = random.Random(0)
    for name in PERTURBATIONS:
        assert perturb("", name, rng) == ""
        assert perturb("   ", name, rng) == "   "
        out = perturb("  Good movie,  really good!  ", name, random.Random(1), rate=0.5)
        assert out.startswith("  ") and out.endswith("  ")
    assert perturb("这部电影很好看", "word_dropout", random.Random(0), rate=0.5) != "这部电影很好看"
    assert perturb("这部电影很好看", "typos", random.Random(0)) == "这部电影很好看"  # no QWERTY letters
    assert perturb("one", "word_dropout", random.Random(0), rate=1.0) == "one"
    swapped = perturb("a b c d", "swap", random.Random(0), rate=0.5)
    assert sorted(swapped.split()) == ["a", "b", "c", "d"] and swapped != "a b c d"
    assert perturb("Good film", "synonyms", random.Random(0), rate=1.0).split()[0][0].isupper()
    # A decomposed accent (macOS, PDF copies) stays on its letter: "caf\u0301" had been left, and "ŕ" typed.
    decomposed = "e\u0301te\u0301 cafe\u0301"
    for seed in range(20):
        dropped = perturb(decomposed, "char_drop", random.Random(seed), rate=1.0)
        typed = perturb(decomposed, "typos", random.Random(seed), rate=1.0)
        for out in (dropped, typed):
            assert all(not unicodedata.combining(ch) or out[i - 1] == "e" for i, ch in enumerate(out)), (seed, out)
        assert unicodedata.normalize("NFC", typed).count("é") == 3  # only the plain letters are typed over


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def input_embeddings(self) -> nn.Embedding:
        return self.embed

    def loss(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(self.embed(ids).mean(1)), labels)


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_adversary_adds_gradients_within_epsilon_and_restores_the_table(method: str) -> None:
    model = _Tiny()
    ids, labels = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([0, 1])
    clean_table = model.embed.weight.detach().clone()
    model.loss(ids, labels).backward()
    clean_grad = model.head.weight.grad.clone()
    distances: list[float] = []

    def adversarial_loss() -> torch.Tensor:
        distances.append(float((model.embed.weight.detach() - clean_table).norm()))
        return model.loss(ids, labels)

    adversary = EmbeddingAdversary(model, model.embed, method, epsilon=0.5, steps=3)
    value = adversary.step(adversarial_loss)
    assert value is not None and value > 0
    assert len(distances) == (1 if method == "fgm" else 3)
    assert all(0 < d <= 0.5 + 1e-6 for d in distances)
    assert distances[-1] == pytest.approx(0.5, rel=1e-4)  # FGM's step is epsilon; PGD ends on the ball
    assert torch.equal(model.embed.weight.detach(), clean_table)  # exactly the clean table again
    # The clean gradients are kept and the adversarial ones added to them.
    assert not torch.allclose(model.head.weight.grad, clean_grad)
    unchanged = _Tiny()
    unchanged.loss(ids, labels).backward()
    assert torch.allclose(unchanged.head.weight.grad, clean_grad)
    assert torch.norm(model.head.weight.grad - 2 * clean_grad) < torch.norm(clean_grad)


def test_symmetric_kl_is_zero_for_equal_predictions_and_matches_its_definition() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert symmetric_kl(a, a, multi_label=False) == pytest.approx(0.0, abs=1e-7)
    p, q = a.softmax(-1), b.softmax(-1)
    expected = 0.5 * ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean()
    assert symmetric_kl(a, b, multi_label=False) == pytest.approx(float(expected), rel=1e-5)
    p, q = torch.sigmoid(a), torch.sigmoid(b)
    forward = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    backward = q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()
    bern = forward + backward
    assert symmetric_kl(a, b, multi_label=True) == pytest.approx(float(0.5 * bern.sum(-1).mean()), rel=1e-5)


def test_rdrop_without_dropout_is_plain_cross_entropy_and_with_dropout_adds_a_penalty() -> None:
    from attend.models import build

    task = ClassificationTask(_planted(64), model_options=SMALL)
    task.prepare(TrainingArgs(**FAST, rdrop=1.0), None)
    torch.manual_seed(0)
    model = build(task.model_config())
    batch = task.train_batch(list(range(16)))
    model.eval()
    plain = F.cross_entropy(model(batch).logits.float(), batch["labels"])
    assert float(task.loss(model, batch).detach()) == pytest.approx(float(plain.detach()), rel=1e-5)
    model.train()
    torch.manual_seed(1)
    value = float(task.loss(model, batch).detach())
    torch.manual_seed(1)
    first, second = model({k: torch.cat([v, v]) for k, v in batch.items()}).logits.float().detach().chunk(2)
    penalty = float(symmetric_kl(first, second, multi_label=False))
    assert penalty > 1e-4  # the two copies saw different dropout
    fit = 0.5 * (F.cross_entropy(first, batch["labels"]) + F.cross_entropy(second, batch["labels"]))
    assert value == pytest.approx(float(fit) + penalty, rel=1e-5)


def test_robust_options_train_record_and_resume_to_the_same_result(tmp_path: Path, planted_csv: Path) -> None:
    config = tmp_path / "config.json"
    training = {**FAST, "checkpoint_every": 3}
    training.pop("progress")
    config.write_text(json.dumps({"model": SMALL, "training": training}))
    # Six epochs: with this much noise, three left the model half-trained (test accuracy 0.55-0.85
    # over seeds 0-2, so "> 0.8" was luck); six reach 1.0 on every one of those seeds.
    common = ["train", str(planted_csv), "--model", "encoder", "--config", str(config), "--epochs", "6",
              "--no-progress", "--augment", "typos,word_dropout,synonyms", "--adversarial", "pgd",
              "--adversarial-steps", "2", "--rdrop", "0.5"]  # fmt: skip
    whole = run_cli(*common, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())["training"]
    assert saved["augment"] == "typos,word_dropout,synonyms" and saved["adversarial"] == "pgd"
    assert saved["adversarial_steps"] == 2 and saved["rdrop"] == 0.5

    out = tmp_path / "killed"
    kill_at(tmp_path, "checkpoint:1:3", *common, "--out", str(out))  # part-way through epoch 2
    # --resume with one of the run's options given again, and the others left out: it was refused as
    # "--adversarial-steps 2 has no effect without --adversarial" (checked before the run's options were in).
    resumed = run_cli("train", str(planted_csv), "--model", "encoder", "--config", str(config), "--no-progress",
                      "--adversarial-steps", "2", "--out", str(out), "--resume")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "confusion_matrix", "best_epoch"):
        assert again[key] == metrics[key], key


def test_average_weights_is_the_elementwise_mean(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from attend.training.trainer import average_weights

    for i, value in enumerate([1.0, 2.0, 6.0]):
        save_file({"w": torch.full((2, 2), value), "count": torch.tensor([i])}, str(tmp_path / f"e{i}.safetensors"))
    averaged = average_weights(sorted(tmp_path.glob("*.safetensors")))
    assert torch.equal(averaged["w"], torch.full((2, 2), 3.0))
    assert torch.equal(averaged["count"], torch.tensor([2]))  # integer buffers: the last file's


def test_a_worse_average_is_not_kept(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from attend.training.trainer import TrainingArgs, _Dist, _State, _try_average

    model = _Tiny()
    best = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in (2, 3):
        save_file({k: v + epoch for k, v in best.items()}, str(tmp_path / f"epoch-{epoch}.safetensors"))

    class Scored:
        selection = "accuracy"

        def evaluate(self, network: nn.Module, split: str, batch_size: int) -> dict[str, float]:
            moved = not torch.equal(network.state_dict()["head.weight"], best["head.weight"])
            return {"accuracy": 0.5 if moved else 0.9, "loss": 1.0}

    state = _State(best_score=0.9, best_loss=1.0, best_epoch=1)
    found = _try_average(Scored(), model, tmp_path, state, TrainingArgs(average_checkpoints=2), _Dist())  # type: ignore[arg-type]
    assert found == {"epochs": [2, 3], "dev_accuracy": 0.5, "best_epoch_dev_accuracy": 0.9, "dev_loss": 1.0,
                     "best_epoch_dev_loss": 1.0, "kept": False}  # fmt: skip
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())  # the best epoch's weights again


def test_one_epoch_to_average_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--average-checkpoints 5 with --epochs 1 did nothing without a word."""
    from safetensors.torch import save_file

    from attend.training.trainer import TrainingArgs, _Dist, _State, _try_average

    model = _Tiny()
    save_file(dict(model.state_dict()), str(tmp_path / "epoch-1.safetensors"))
    state = _State(best_score=0.9, best_loss=1.0, best_epoch=1)
    assert _try_average(None, model, tmp_path, state, TrainingArgs(average_checkpoints=5), _Dist()) is None  # type: ignore[arg-type]
    assert "checkpoint average: 1 epoch's weights kept, at least 2 are needed" in capsys.readouterr().err
    # Two of five asked for: averaged, and said (it read as the five).
    save_file({k: v + 1 for k, v in model.state_dict().items()}, str(tmp_path / "epoch-2.safetensors"))

    class Scored:
        selection = "accuracy"

        def evaluate(self, network: nn.Module, split: str, batch_size: int) -> dict[str, float]:
            return {"accuracy": 0.5, "loss": 1.0}

    found = _try_average(Scored(), model, tmp_path, state, TrainingArgs(average_checkpoints=5), _Dist())  # type: ignore[arg-type]
    assert found is not None and found["epochs"] == [1, 2]
    assert "checkpoint average of epochs [1, 2] (the last 5 were asked for; 2 ran)" in capsys.readouterr().err


def test_checkpoint_averaging_runs_in_training_and_is_recorded(tmp_path: Path) -> None:
    args = TrainingArgs(**FAST, epochs=4, patience=0, average_checkpoints=3)
    result = Trainer(ClassificationTask(_planted(160), model_options=SMALL), args).fit(tmp_path / "m")
    found = result.metrics["checkpoint_average"]
    assert found["epochs"] == [2, 3, 4]
    score, best = found["dev_macro_f1"], found["best_epoch_dev_macro_f1"]
    tie_won = score == best and found["dev_loss"] <= found["best_epoch_dev_loss"]
    assert found["kept"] == (score > best or tie_won)
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["checkpoint_average"] == found
    assert not (tmp_path / ".m.training").exists()  # the epochs' weights went with the training state


def test_averaging_without_dev_rows_is_refused(tmp_path: Path) -> None:
    """The average is kept only where it scores better on dev: without dev rows every epoch's weights
    had been kept, never averaged, and the option recorded as if it had run."""
    planted = _planted(160)
    planted.splits = ["test" if i % 5 == 0 else "train" for i in range(len(planted.texts))]
    args = TrainingArgs(**FAST, epochs=2, patience=0, average_checkpoints=2)
    with pytest.raises(ValueError, match=r"average_checkpoints=2: the average is kept only where it scores better "
                                         r"on dev, and this data has no dev rows; give the data dev rows"):  # fmt: skip
        Trainer(ClassificationTask(planted, model_options=SMALL), args).fit(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    # A task's own default (a translator's average of 5), not chosen, is off with a note: every translator
    # without dev rows had been refused, told to leave out an option it was never given.
    done = Trainer(ClassificationTask(planted, model_options=SMALL), args, given=frozenset()).fit(tmp_path / "m")
    assert "checkpoint_average" not in done.metrics and (tmp_path / "m" / "model.safetensors").is_file()


def test_a_setting_of_an_option_that_is_off_is_refused_not_ignored(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    from attend.cli import main

    for flags, message in ((["--adversarial-epsilon", "0.5"], "--adversarial-epsilon 0.5 has no effect without "
                            "--adversarial"), (["--augment-rate", "0.3"], "without --augment")):  # fmt: skip
        assert main(["train", str(planted_csv), "--model", "encoder", "--out", str(tmp_path / "m"), *flags]) == 2
        assert message in capsys.readouterr().err
    # Through --config, and settings an option that is on ignores: each was recorded and ignored.
    config = tmp_path / "config.json"
    for training, flags, message in (
        ({"adversarial_epsilon": 2.0}, [], "adversarial_epsilon=2.0 has no effect without adversarial"),
        ({"augment_rate": 0.3}, [], "augment_rate=0.3 has no effect without augment"),
        ({}, ["--adversarial", "fgm", "--adversarial-steps", "5"], "--adversarial-steps 5: has no effect with "
         "--adversarial 'fgm'"),  # named as the flags given (it had been the fields)
        # Given at the default value it passed (the check compared with the default, not what was set).
        ({}, ["--adversarial", "fgm", "--adversarial-steps", "3"], "--adversarial-steps 3: has no effect with "
         "--adversarial 'fgm'"),
        ({"adversarial": "pgd", "adversarial_steps": 3}, ["--adversarial", "fgm"], "adversarial_steps=3 has no "
         "effect with adversarial='fgm'"),
        # The encoder's tokenizer lowercases: its casing copies read as the clean text (bit-identical weights).
        ({}, ["--augment", "typos,casing"], "--augment typos,casing: 'casing' changes only letter case, which the "
         "tokenizer of 'encoder' lowercases away"),
        ({"augment_probability": 0.0}, ["--augment", "typos"], "augment_probability=0 perturbs no example"),
    ):  # fmt: skip
        config.write_text(json.dumps({"training": training}))
        assert main(["train", str(planted_csv), "--model", "encoder", "--out", str(tmp_path / "m"), "--config",
                     str(config), "--no-progress", *flags]) == 2  # fmt: skip
        assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    # A perturbation that changes no training text: Chinese data had trained bit for bit as without it.
    rows = [{"text": f"这部电影{'很好看' if i % 2 else '太无聊'}{i}", "label": "ab"[i % 2]} for i in range(40)]
    chinese = write_csv(tmp_path / "zh.csv", rows)
    assert main(["train", str(chinese), "--model", "encoder", "--out", str(tmp_path / "m"), "--augment",
                 "synonyms,swap,typos", "--no-progress"]) == 2  # fmt: skip
    assert capsys.readouterr().err == ("error: --augment synonyms,swap,typos: 'synonyms' and 'typos' change none of "
                                       "the training texts tried (typos needs letters of a QWERTY keyboard, synonyms "
                                       "English content words WordNet knows, casing letters with case, char_drop "
                                       "words of two letters or digits, swap and word_dropout two words or more); "
                                       "leave it out\n")  # fmt: skip
    assert not (tmp_path / "m").exists()
    # --model auto leaves such a candidate out (a cased one still learns from it), and says so.
    assert main(["train", str(planted_csv), "--out", str(tmp_path / "m"), "--augment", "casing", "--candidates",
                 "encoder", "--no-progress"]) == 2  # fmt: skip
    assert ("no candidate model could be trained (encoder: its tokenizer lowercases, so --augment casing would "
            "change nothing it reads)") in capsys.readouterr().err  # fmt: skip


def test_a_resumed_run_keeps_the_interrupted_runs_threads_unless_given(tmp_path: Path) -> None:
    """--threads left out on --resume ran with PyTorch's default instead of the interrupted run's."""
    from dataclasses import asdict

    from attend.training.trainer import _resumed_args

    recorded = asdict(TrainingArgs(threads=1, adversarial="pgd", adversarial_steps=2))
    kept = _resumed_args(tmp_path, recorded, TrainingArgs(adversarial_steps=2), frozenset({"adversarial_steps"}))
    assert kept.threads == 1 and kept.adversarial == "pgd" and kept.adversarial_steps == 2
    changed = _resumed_args(tmp_path, recorded, TrainingArgs(threads=2), frozenset({"threads"}))
    assert changed.threads == 2
    assert _resumed_args(tmp_path, recorded, TrainingArgs(), None).threads == 1  # nothing chosen away from defaults


def test_an_interrupted_run_with_a_setting_now_refused_still_resumes(capsys: pytest.CaptureFixture) -> None:
    """A run started before FGM's steps were refused cannot change its options: it is warned, not stopped."""
    from attend.training.trainer import _check_features

    task = ClassificationTask(_planted(20), model_options=SMALL)
    args = TrainingArgs(adversarial="fgm", adversarial_steps=5)
    with pytest.raises(ValueError, match="adversarial_steps=5 has no effect with adversarial='fgm'"):
        _check_features(task, args)
    _check_features(task, args, resumed=True)
    assert "warning: the interrupted run's options: adversarial_steps=5" in capsys.readouterr().err


def test_auto_refuses_an_ignored_setting_before_planning(tmp_path: Path, planted_csv: Path) -> None:
    from attend.training import train

    with pytest.raises(ValueError, match=r"augment_rate=0\.3 has no effect without augment"):
        train(planted_csv, tmp_path / "m", model="auto", args={"augment_rate": 0.3})
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m*"))


def test_rdrop_on_a_model_without_dropout_is_refused(tmp_path: Path) -> None:
    """Both passes were the same: a KL term of 0 at twice the cost of a step, without a word."""
    args = TrainingArgs(**FAST, epochs=1, rdrop=1.0)
    with pytest.raises(ValueError, match=r"rdrop=1 compares two passes .* every dropout of this model is 0"):
        Trainer(ClassificationTask(_planted(40), model_options={**SMALL, "dropout": 0.0}), args).fit(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    from attend.models import build
    from attend.training.trainer import _has_dropout

    assert _has_dropout(build({"model_type": "encoder", "num_labels": 2, "vocab_size": 50, **SMALL}))
