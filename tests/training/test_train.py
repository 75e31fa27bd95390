"""Training end to end: learning, the model directory, reproducibility and resume."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
from pathlib import Path

import pytest
import torch

from attend.data.readers import DataError, LabelledTexts
from attend.io import ModelDirError
from attend.runtime import evaluate, load
from attend.training import ClassificationTask, TrainingArgs, TrainingInterrupted, state_directory, train
from tests.conftest import planted_rows, write_csv

SMALL_ENCODER = {"dim": 32, "num_layers": 1, "num_heads": 2}
FAST = {"epochs": 4, "batch_size": 16, "lr": 3e-3, "progress": False, "vocab_size": 500}


@pytest.mark.parametrize(
    ("model", "options", "lr"),
    [("encoder", SMALL_ENCODER, 3e-3), ("bilstm_attention", {"embed_dim": 32, "hidden_dim": 32}, 1e-2)],
)
def test_models_learn_a_planted_word_task_and_save_a_loadable_directory(
    tmp_path: Path, planted_csv: Path, model: str, options: dict, lr: float
) -> None:
    out = tmp_path / "model"
    result = train(planted_csv, out, model=model, model_options=options, args=TrainingArgs(**{**FAST, "lr": lr}))
    assert result.metrics["accuracy"] > 0.9, result.report
    assert result.metrics["split"] == "test" and result.metrics["num_examples"] == 40
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    assert not state_directory(out).exists(), "a finished run leaves no training state behind"
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "classification" and set(config["files"]) == {"model.safetensors", "tokenizer.json",
                                                                                  "training_texts.safetensors"}
    assert config["labels"] == ["neg", "pos"] and config["model"]["model_type"] == model
    assert config["training"]["seed"] == 0 and "attend_version" in config and config["weights_sha256"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, len(log) + 1)) and "dev_macro_f1" in log[0]
    assert list((out / "runs").glob("events.out.tfevents.*")), "no TensorBoard event file"

    predictor = load(out)
    assert predictor.predict(["the film was wonderful", "a dreadful movie"]) == ["pos", "neg"]
    top = predictor.top_k(["the plot was superb"], k=2)[0]
    assert top[0][0] == "pos" and abs(sum(p for _, p in top) - 1) < 1e-5
    again = evaluate(out, planted_csv)
    assert again["accuracy"] > 0.9 and set(again["per_class"]) == {"neg", "pos"}


RESULT_KEYS = ("accuracy", "macro_f1", "micro_f1", "per_class", "confusion_matrix", "best_epoch")


def _run(tmp: Path, data: Path, name: str, **overrides: object) -> dict:
    args = TrainingArgs(**{**FAST, "epochs": 2, "checkpoint_every": 7, **overrides})
    metrics = train(data, tmp / name, model="encoder", model_options=SMALL_ENCODER, args=args).metrics
    return {key: metrics[key] for key in RESULT_KEYS}


def test_same_seed_same_metrics_and_resume_matches_an_uninterrupted_run(tmp_path: Path, planted_csv: Path) -> None:
    full = _run(tmp_path, planted_csv, "full")
    assert _run(tmp_path, planted_csv, "again") == full
    assert _run(tmp_path, planted_csv, "other", seed=1) != full

    with pytest.raises(TrainingInterrupted, match="--resume"):  # interrupted mid-epoch 2 (20 steps per epoch)
        _run(tmp_path, planted_csv, "resumed", stop_after_steps=27)
    assert (state_directory(tmp_path / "resumed") / "checkpoint" / "state.json").exists()
    assert not (tmp_path / "resumed").exists()  # nothing is published before the run finishes
    # The interrupted run's state is kept from runs that are not its continuation: other data,
    # an option given again with another value, a fresh start without --overwrite.
    other = tmp_path / "other.csv"
    other.write_text("".join(planted_csv.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    with pytest.raises(DataError, match="same data as the interrupted run"):
        train(other, tmp_path / "resumed", model="encoder", model_options=SMALL_ENCODER, resume=True)
    with pytest.raises(DataError, match=r"lr=0.05 \(the interrupted run had 0.003\)"):
        train(planted_csv, tmp_path / "resumed", model="encoder", model_options=SMALL_ENCODER, resume=True,
              args=TrainingArgs(lr=0.05))  # fmt: skip
    with pytest.raises(DataError, match=r"batch_size=32 \(the interrupted run had 16\)"):  # a default, yet chosen
        train(planted_csv, tmp_path / "resumed", model="encoder", model_options=SMALL_ENCODER, resume=True,
              args={"batch_size": 32})  # fmt: skip
    with pytest.raises(DataError, match="an interrupted run was writing it"):
        _run(tmp_path, planted_csv, "resumed")
    # Without the model: the interrupted run says which it was and what its options were (before:
    # "nothing to resume", as --model auto, the default, looked for an auto run).
    resumed = train(planted_csv, tmp_path / "resumed", resume=True)
    assert {key: resumed.metrics[key] for key in RESULT_KEYS} == full
    finished = r"nothing to resume: no interrupted training run is writing it \(it holds a finished model"
    with pytest.raises(DataError, match=finished):
        train(planted_csv, tmp_path / "resumed", model="encoder", model_options=SMALL_ENCODER, resume=True)
    with pytest.raises(DataError, match=finished):  # said "no interrupted `attend train --model auto` run"
        train(planted_csv, tmp_path / "resumed", resume=True)


def test_class_weights_against_imbalance() -> None:
    from attend.training.tasks.classification import class_weights

    # single-label: inverse frequency, balanced classes weigh 1
    weights = class_weights(torch.tensor([0, 0, 0, 1]), 3, multi_label=False)
    assert torch.allclose(weights, torch.tensor([4 / 9, 4 / 3, 4 / 3]))  # an absent class counts as one row
    # multi-label: negatives over positives per label. Two labels each on 1 row of 10 had weighed 1 (equally
    # rare among the labels), so the loss still pushed both towards "never".
    targets = torch.zeros(10, 3)
    targets[0, 0] = targets[1, 1] = 1
    targets[:, 2] = 1  # on every row: no negative, counted as one
    assert torch.allclose(class_weights(targets, 3, multi_label=True), torch.tensor([9.0, 9.0, 0.1]))


def test_class_weights_multi_label_and_bf16(tmp_path: Path) -> None:
    rows = [
        {"text": f"alpha {'beta' if i % 3 else ''} gamma {i % 7}", "label": "a|b" if i % 3 else "a"} for i in range(60)
    ]
    path = tmp_path / "multi.csv"
    path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    threads = torch.get_num_threads()
    args = TrainingArgs(**{**FAST, "epochs": 1, "class_weights": True, "precision": "bf16", "threads": threads + 1})
    result = train(path, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args, label_sep="|")
    assert torch.get_num_threads() == threads  # the run's thread setting does not leak
    assert "per_class" in result.metrics and "confusion_matrix" not in result.metrics
    # a baseline beside the figures, as for single-label data (there had been none: "it predicts one label")
    assert result.metrics["baseline"]["method"] == "tfidf_logreg_one_vs_rest"
    assert "baseline on the same test split (TF-IDF + logistic regression)" in result.report
    assert "multi-label: a text may have several labels" in result.report  # and the report says what they mean
    predictor = load(tmp_path / "m")
    assert predictor.multi_label and all(isinstance(p, list) for p in predictor.predict(["alpha beta gamma"]))
    # Its own file evaluates, "a|b" read as two labels as training read it (it was "label 'a|b' unknown").
    assert predictor.evaluate(path)["examples"] == 60
    # ... and so does the data quantize and prune judge on (held_out: "label 'a|b' not trained on").
    from attend.data.splits import held_out

    given, _ = held_out(tmp_path / "m", predictor.config, path, "test")
    assert len(given) == 60 and ["a", "b"] in given.labels
    other = tmp_path / "semicolons.csv"  # another separator, given (attend quantize/prune --label-sep)
    other.write_text(path.read_text(encoding="utf-8").replace("a|b", "a;b"), encoding="utf-8")
    assert ["a", "b"] in held_out(tmp_path / "m", predictor.config, other, "test", label_sep=";")[0].labels
    # `attend predict` gives the labels it predicts, not the most probable alone (which read as its answer).
    import io

    from attend.runtime.streaming import PredictionWriter, predict_stream

    sink = io.StringIO()
    predict_stream(predictor, ["alpha beta gamma", "alpha gamma"], PredictionWriter(sink, "jsonl"), top_k=2)
    rows = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [row["labels"] for row in rows] == predictor.predict(["alpha beta gamma", "alpha gamma"])
    # An explanation of a text with no label predicted says so (it read as the model's answer).
    from attend.explain import explain

    (head,) = [m for m in predictor.model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    with torch.no_grad():
        head.bias -= 100.0  # every label far below 0.5
    assert predictor.predict(["alpha beta gamma"]) == [[]]
    (exp,) = explain(predictor, ["alpha beta gamma"], method="attention")
    assert "no label reaches probability 0.5, so the model predicts none, and this explains the most" in exp.note
    from attend.runtime.ensemble import EnsembleClassifier

    ensemble = EnsembleClassifier([predictor], [1.0], predictor.labels, {**predictor.config, "data": None})
    (exp,) = explain(ensemble, ["alpha beta gamma"], method="integrated_gradients", ig_steps=4)
    assert exp.note.startswith("no label reaches probability 0.5, so the model predicts none")
    (exp,) = explain(ensemble, ["alpha beta gamma"], method="attention")  # its member's own said once, not twice
    assert exp.note.count("predicts none") == 1


def test_a_resume_reads_the_data_as_the_interrupted_run_did(tmp_path: Path) -> None:
    """`--resume` alone failed on "no column 'label'" for a run started with --label-col, then asked for
    --multi-label, then blamed the data for the --split-col left out."""
    path = tmp_path / "tickets.csv"
    path.write_text("body,tags,part\n" + "".join(
        f"alpha {'beta' if i % 3 else ''} gamma {i % 7},{'a|b' if i % 3 else 'a'},{'test' if i % 5 == 0 else 'train'}\n"
        for i in range(60)), encoding="utf-8")  # fmt: skip
    columns = {"text_col": "body", "label_col": "tags", "split_col": "part", "label_sep": "|"}
    stopped = TrainingArgs(**{**FAST, "epochs": 2, "stop_after_steps": 3})
    with pytest.raises(TrainingInterrupted):
        train(path, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=stopped, **columns)
    with pytest.raises(DataError, match=r"--resume reads the data as the interrupted run did, which had "
                       r"split_col='part', not 'other'; leave --split-col out"):  # fmt: skip
        train(path, tmp_path / "m", resume=True, split_col="other")
    result = train(path, tmp_path / "m", resume=True)  # nothing but the data: the rest is the interrupted run's
    assert result.metrics["num_examples"] == 12 and load(tmp_path / "m").multi_label


def test_a_run_interrupted_under_the_earlier_split_is_not_resumed_under_the_new_one(
    tmp_path: Path, planted_csv: Path
) -> None:
    """Its dev and test rows could differ: the checkpoint would have trained on some of the new test rows."""
    stopped = TrainingArgs(**{**FAST, "epochs": 2, "stop_after_steps": 3})
    with pytest.raises(TrainingInterrupted):
        train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=stopped)
    record = state_directory(tmp_path / "m") / "run.json"
    run = json.loads(record.read_text(encoding="utf-8"))
    assert run.pop("split_scheme") == 2
    record.write_text(json.dumps(run), encoding="utf-8")  # as a run started before the scheme was recorded
    with pytest.raises(DataError, match=r"split its data by an earlier rule of attend's \(split scheme 1; this attend "
                                        r"splits by 2\), .* cannot be resumed; start again with --overwrite"):
        train(planted_csv, tmp_path / "m", resume=True)


def test_the_report_says_how_many_texts_were_longer_than_the_model_reads(tmp_path: Path) -> None:
    """Documents read to their first tokens had been scored far under the baseline without a word."""
    rows = [{"text": f"text {i} " + " ".join(["filler"] * (40 if i % 2 else 3)) + (" good" if i % 4 < 2 else " bad"),
             "label": "pos" if i % 4 < 2 else "neg"} for i in range(120)]  # fmt: skip
    data = write_csv(tmp_path / "long.csv", rows)
    result = train(data, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER,
                   args={**FAST, "epochs": 1, "max_length": 16})  # fmt: skip
    found = re.search(r"note: (\d+) of (\d+) train texts \(\d+%\), (\d+) of (\d+) dev texts .* are longer than "
                      r"the model reads \(16 tokens with \[CLS\] and \[SEP\]\): it learns from and is scored on",
                      result.report)  # fmt: skip
    assert found is not None, result.report
    assert 0 < int(found[1]) < int(found[2]) and int(found[4]) > 0  # the long ones, about half
    short = train(data, tmp_path / "short", model="encoder", model_options=SMALL_ENCODER,
                  args={**FAST, "epochs": 1, "max_length": 64})  # fmt: skip
    assert "longer than the model reads" not in short.report


def test_the_report_names_labels_never_predicted_right(tmp_path: Path) -> None:
    """A 99:1 model that always answered the common label read 0.99 accuracy, level with the baseline;
    its rare label's recall of 0 was in the table alone."""
    rows = [{"text": f"item {i} x y z", "label": "rare" if i % 15 == 0 else "common"} for i in range(900)]
    result = train(write_csv(tmp_path / "imb.csv", rows), tmp_path / "m", model="encoder",
                   model_options=SMALL_ENCODER, args={**FAST, "epochs": 1})  # fmt: skip
    assert result.metrics["per_class"]["rare"]["recall"] == 0  # (nothing tells it apart)
    support = result.metrics["per_class"]["rare"]["support"]
    assert (f"note: 1 label(s) of the test split are never predicted right ('rare' ({support} examples)): the model "
            "does no better on them than never answering them") in result.report
    assert '{"training": {"class_weights": true}}' in result.report
    from attend.training.tasks.classification import never_right

    weighted = never_right(result.metrics, "test", weighted=True)  # it had advised what the run already did
    assert len(weighted) == 1 and weighted[0].endswith("macro-F1 counts; even with class_weights")


def test_the_baseline_that_stops_at_its_iteration_limit_says_nothing_to_the_user(tmp_path: Path) -> None:
    """Texts nothing tells apart: sklearn's two-line ConvergenceWarning had been printed amid the report."""
    import warnings

    from attend.training.metrics import tfidf_baseline

    texts = [f"item {i} x y z" for i in range(900)]
    labels = ["rare" if i % 15 == 0 else "common" for i in range(900)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tfidf_baseline(texts, labels, texts, labels) is not None
    # Seeded: saga samples at random, and one split had given 0.6357 or 0.6063 by the run (noisy texts
    # that stop the fit at max_iter, as here, are where the draws show).
    import numpy as np

    rng = np.random.default_rng(0)
    words = [a + b for a in "abcdefg" for b in "hijklmn"]
    noisy = [" ".join(rng.choice(words, 8)) for _ in range(300)]
    tags = [str(rng.integers(3)) for _ in range(300)]
    found = {json.dumps(tfidf_baseline(noisy[:200], tags[:200], noisy[200:], tags[200:])) for _ in range(6)}
    assert len(found) == 1 and "macro_f1" in found.pop()  # unseeded, 6 fits gave 5 figures here


def test_model_directory_safety(tmp_path: Path, planted_csv: Path) -> None:
    out = tmp_path / "m"
    train(planted_csv, out, model="encoder", model_options=SMALL_ENCODER, args=TrainingArgs(**{**FAST, "epochs": 1}))
    (out / "extra.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelDirError, match=r"pickle-format file\(s\) \['extra.bin'\]"):
        load(out)
    for i in range(7):  # every name was listed: a 15 KB line for a folder of checkpoints
        (out / f"w{i}.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelDirError, match=r"\['extra.bin', 'w0.pt', 'w1.pt', 'w2.pt', 'w3.pt'\] and 3 more"):
        load(out)
    for path in [out / "extra.bin", *out.glob("w*.pt")]:
        path.unlink()
    folder = tmp_path / "not-a-model"  # said as such, before any scan for pickles (it walked all of /usr)
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "old.pkl").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelDirError, match=r"not-a-model is not a model directory: config.json is missing$"):
        load(folder)
    # The path itself named: "" had been read as "." and None failed in os.fspath, naming no argument.
    with pytest.raises(ModelDirError, match=r"^path='': give the path of a model directory$"):
        load("")
    for wrong, said in ((None, "path=None"), (3, "path=3"), (b"model", "path=b'model'")):
        with pytest.raises(TypeError, match=rf"^{re.escape(said)}: load\(\) takes the path of a model directory"):
            load(wrong)  # type: ignore[arg-type]
    weights = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(weights[:-10] + b"0123456789")
    with pytest.raises(ModelDirError, match="does not match the hash"):
        load(out)
    with pytest.raises(ModelDirError, match="no such model directory"):
        load(tmp_path / "nowhere")


def test_unknown_labels_and_bad_options_are_clear_errors(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m"
    train(planted_csv, out, model="encoder", model_options=SMALL_ENCODER, args=TrainingArgs(**{**FAST, "epochs": 1}))
    other = tmp_path / "other.csv"
    other.write_text("text,label\nfine words,pos\nstrange words,meh\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3 has label 'meh', which the model was not trained on"):
        evaluate(out, other)
    cased = tmp_path / "cased.csv"  # said, not matched: "A" and "a" may be two labels of someone's data
    cased.write_text("text,label\nfine words,POS\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"'POS' differs from the model's 'pos' only in letter case"):
        evaluate(out, cased)
    with other.open("a", encoding="utf-8") as f:  # more: every one named in one error (it had stopped at the first)
        f.write("odd words,huh\nmore,meh\n")
    with pytest.raises(DataError, match=r"2 labels the model was not trained on: 'meh' \(line 3\), 'huh' \(line 4\)"):
        evaluate(out, other)
    # The --label-sep hint only for a cell joining the model's own labels (not another unknown one's).
    from attend.data.readers import LabelledTexts
    from attend.training.tasks.classification import label_targets

    cells = LabelledTexts(texts=["x", "y", "z"], labels=[["spam"], ["spam|bug"], ["bug|billing"]], lines=[2, 3, 4],
                          source="f.csv")  # fmt: skip
    with pytest.raises(DataError) as raised:
        label_targets(cells, ["bug", "billing"], multi_label=True)
    assert "'bug|billing' joins the model's labels 'bug' and 'billing' with '|'" in str(raised.value)
    with pytest.raises(DataError) as raised:
        label_targets(LabelledTexts(texts=["x"], labels=[["spam|bug"]], lines=[2], source="f.csv"), ["bug", "billing"],
                      multi_label=True)  # fmt: skip
    assert "--label-sep" not in str(raised.value)
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        train(planted_csv, tmp_path / "x", model="gpt")
    with pytest.raises(ValueError, match=r"not a text classifier: 'din'.*attend recommend train"):
        train(planted_csv, tmp_path / "x", model="din")  # a recommender, not a model field error
    with pytest.raises(ValueError, match=r"unknown 'encoder' model field\(s\) \['depth'\]; known: \['att") as error:
        train(planted_csv, tmp_path / "x", model="encoder", model_options={"depth": 3})
    assert "num_labels" not in str(error.value) and "vocab_size" not in str(error.value)  # listed, then refused
    from attend.training import ClassificationTask

    with pytest.raises(ValueError, match="model_options names model_type 'bilstm_attention', but the model is "
                                         "'encoder'; name it once"):  # the task built the other model  # fmt: skip
        ClassificationTask(planted_csv, model="encoder", model_options={"model_type": "bilstm_attention"})
    assert ClassificationTask(planted_csv, model="encoder", model_options={"model_type": "encoder"}).options == {}
    with pytest.raises(TypeError, match=r"data is list \[\('great', 'pos'\)\]: give a file path or a dataset name"):
        evaluate(out, [("great", "pos")])  # failed deep in pathlib
    with pytest.raises(ValueError, match="schedule='steep'"):
        TrainingArgs(schedule="steep")
    with pytest.raises(DataError, match="nothing to resume"):
        train(planted_csv, tmp_path / "fresh", resume=True)
    # ... under torchrun too: it had been told that --model auto runs on one process, to name a --model
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DataError, match="nothing to resume"):
        train(planted_csv, tmp_path / "fresh", resume=True)


def test_attention_variants_train_through_the_same_pipeline(tmp_path: Path, planted_csv: Path) -> None:
    for i, attention in enumerate(
        [{"score": "additive"}, {"attention": "local", "window": 4}, {"attention": "linear"}]
    ):
        options = {**SMALL_ENCODER, "attention": attention}
        result = train(planted_csv, tmp_path / f"v{i}", model="encoder", model_options=options,
                       args=TrainingArgs(**{**FAST, "epochs": 1}))  # fmt: skip
        assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_chinese_reviews_train_end_to_end(tmp_path: Path) -> None:
    """Real Chinese text (a sample of the bundled reviews) through tokenizer, training and predict."""
    from attend.data.datasets import load_dataset
    from attend.data.readers import LabelledTexts

    data = load_dataset("chinese_reviews")
    rows = list(range(0, len(data.texts), len(data.texts) // 600))[:600]
    sample = LabelledTexts(texts=[data.texts[i] for i in rows], labels=[[data.labels[i]] for i in rows],
                           source="chinese_reviews sample")  # fmt: skip
    result = train(sample, tmp_path / "zh", model="encoder", model_options=SMALL_ENCODER,
                   args=TrainingArgs(**{**FAST, "epochs": 2, "vocab_size": 3000}))  # fmt: skip
    assert result.metrics["num_examples"] == 60
    predictor = load(tmp_path / "zh")
    explanation = predictor.explain(["这个酒店的服务很好"])[0]
    assert explanation["tokens"][1:-1] == list("这个酒店的服务很好")  # one token per character
    assert abs(sum(explanation["importance"]) - 1) < 1e-5
    assert explanation["label"] in {"positive", "negative"}


def test_default_learning_rate_depends_on_pretrained_weights(tmp_path: Path, planted_csv: Path) -> None:
    def default_lr(model: str, options: dict) -> float:
        return ClassificationTask(planted_csv, model=model, model_options=options).default_lr()

    assert default_lr("encoder", {}) == 1e-3
    assert default_lr("minilm", {}) == 5e-5  # fine-tuning: a from-scratch rate would wreck the weights
    assert default_lr("minilm", {"pretrained": False}) == 1e-3
    args = TrainingArgs(**{**FAST, "epochs": 1, "lr": None})
    train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["lr"] == 1e-3


def test_macro_averages_cover_the_labels_present_and_name_the_absent_ones() -> None:
    from attend.training import classification_metrics, format_report

    labels = ["a", "b", "c", "d"]
    perfect = classification_metrics([0, 1, 0, 1], [0, 1, 0, 1], labels)  # no c or d in this data
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0 and perfect["averaged_labels"] == 2
    assert perfect["absent_labels"] == ["c", "d"] and "no example of 2 label(s): c, d" in format_report(perfect)
    wrong = classification_metrics([0, 1], [0, 2], labels)  # a predicted label counts even if absent
    assert wrong["averaged_labels"] == 3 and wrong["macro_f1"] == pytest.approx(1 / 3)
    multi = classification_metrics([[1, 0, 0], [1, 0, 0]], [[1, 0, 0], [1, 0, 0]], labels[:3])
    assert multi["macro_f1"] == 1.0 and multi["absent_labels"] == ["b", "c"]
    # Chinese labels take two columns a character: the figures stay under their headings.
    table = format_report(classification_metrics([0, 1, 2], [0, 1, 2], ["体育", "科技新闻", "x"])).splitlines()[1:]
    from attend.data.validation import display_width

    assert len({display_width(line) for line in table}) == 1, table  # each row as wide as the header
    # A label is the data's text: its escape sequence had set the terminal's title and colours.
    hostile = "\x1b]0;PWNED\x07\x1b[31mRED"
    shown = format_report(classification_metrics([0, 1], [0, 1], [hostile, "\u202eevil"]))
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown and "RED" in shown


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 4], [0, 1], r"y_true holds 4, not a label index \(0 to 3\)"),
        ([0, 1], [0, -1], r"y_pred holds -1"),
        ([0, 1], [0], r"y_true has shape \(2,\) but y_pred has \(1,\)"),
        ([[1, 0]], [[1, 0]], "indicator matrices have 2 columns for 4 labels"),
    ],
)
def test_metrics_refuse_indices_with_no_label(y_true: list, y_pred: list, message: str) -> None:
    from attend.training import classification_metrics

    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])


def test_written_files_follow_the_umask(tmp_path: Path, planted_csv: Path) -> None:
    import os

    previous = os.umask(0o022)
    try:
        args = TrainingArgs(**{**FAST, "epochs": 1, "stop_after_steps": 3, "checkpoint_every": 2})
        with pytest.raises(TrainingInterrupted):
            train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args)
        checkpoint = state_directory(tmp_path / "m") / "checkpoint"
        saved = {p.name: p.stat().st_mode & 0o777 for p in checkpoint.iterdir()}
        assert set(saved.values()) == {0o644} and "optimiser.safetensors" in saved, saved
        train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, resume=True)
    finally:
        os.umask(previous)
    assert not checkpoint.exists()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == modes["tokenizer.json"] == 0o644, modes


def test_every_report_shows_the_bag_of_words_baseline_on_the_same_split(tmp_path: Path, planted_csv: Path) -> None:
    from attend.training.metrics import tfidf_baseline

    args = TrainingArgs(**{**FAST, "epochs": 1})
    result = train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args)
    task = ClassificationTask(planted_csv)
    task.prepare(args, None)
    train_part, test_part = task.parts["train"], task.parts["test"]
    expected = tfidf_baseline(train_part.texts, [r[0] for r in train_part.labels], test_part.texts,
                              [r[0] for r in test_part.labels])  # fmt: skip
    assert expected is not None and result.metrics["baseline"] == expected
    stored = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert stored["baseline"] == expected
    gap = abs(result.metrics["accuracy"] - expected["accuracy"]) * 100
    assert "baseline on the same test split (TF-IDF + logistic regression)" in result.report
    assert f"{gap:.1f} points" in result.report
    assert tfidf_baseline(["a b", "a c"], ["x", "x"], ["a"], ["x"]) is None  # one class: nothing to fit
    size = len(test_part)  # a small held-out split says what one example is worth
    assert f"note: the test split has {size} example(s): one of them is {100 / size:.1f} points" in result.report


def test_caveats_name_small_splits_labels_missing_from_dev_and_conflicting_copies() -> None:
    from attend.data.readers import LabelledTexts
    from attend.training.tasks.classification import _caveats

    data = LabelledTexts(["a", "b", "a ", "c", "d"], ["x", "y", "y", "z", "x"])
    parts = {"train": data.subset([0, 1, 2, 3]), "dev": data.subset([4]), "test": data.subset([])}
    notes = _caveats(data, parts)
    assert notes[0].startswith("the dev split has 1 example(s): one of them is 100.0 points of choosing the epoch")
    assert "2 label(s) have no dev example ('y', 'z')" in notes[1]
    assert notes[2].startswith("1 text(s) occur with different labels")  # "a" and "a " are one text
    assert len(notes) == 3  # an empty test split is no small one
    # Copies of a text stay in one split: 60 of one short text had made dev 44% of the rows, and
    # --model auto picked on it, without a word.
    texts = [f"review number {i} of the product" for i in range(100)] + ["y"] * 60
    copied = LabelledTexts(texts, ["x", "z"] * 50 + ["z"] * 60)
    parts = {"train": copied.subset(range(80)), "dev": copied.subset([*range(80, 90), *range(100, 160)]),
             "test": copied.subset(range(90, 100))}  # fmt: skip
    notes = _caveats(copied, parts, {"dev": 0.1, "test": 0.1})
    assert notes[0] == ("the dev split is 44% of the rows, not the 10% asked: every copy of a text stays in one split, "
                        "and it holds 11 distinct text(s) in 70 rows (the most repeated, 60 times: 'y'); choosing the "
                        "epoch (and, with --model auto, the model) rests on them")  # fmt: skip
    assert not any("test split is" in note for note in notes)  # 6% of the rows against 10%: near enough
    assert not any("dev split's" in note for note in notes)  # its copies said once, with its share
    # Copies within a held-out split of its asked share are counted one by one in its figures: said.
    parts = {"train": copied.subset(range(80)), "dev": copied.subset(range(80, 90)),
             "test": copied.subset([*range(90, 100), *range(100, 105)])}  # fmt: skip
    assert ("the test split's 15 rows hold 11 distinct text(s) (the most repeated, 5 times: 'y'): each copy counts in "
            "the figures above") in _caveats(copied, parts)
    pair = LabelledTexts([f"text {i}" for i in range(99)] + ["text 0"], ["x", "z"] * 50)  # one pair among 100
    parts = {"train": pair.subset([]), "dev": pair.subset([]), "test": pair.subset(range(100))}
    assert not any("distinct text" in note for note in _caveats(pair, parts))  # moves little: not said
    # One test example of a label: its F1 is 0 or 1 (a macro-F1 of 0.71 beside accuracy 0.97 had been one).
    parts = {"train": data.subset([0, 1, 2]), "dev": data.subset([]), "test": data.subset([3, 4])}
    assert "2 label(s) have one test example ('x', 'z'): each one's F1 rests on that example, and macro-F1 " \
        "weighs it as much as any label's" in _caveats(data, parts)
    four = LabelledTexts(["a", "b", "c", "d"], ["x", "y", "x", "y"])  # one dev row of four is 25%: no copies, no note
    parts = {"train": four.subset([0, 1]), "dev": four.subset([2]), "test": four.subset([3])}
    assert not any("split is" in note for note in _caveats(four, parts, {"dev": 0.1, "test": 0.1}))
    # A split column that puts a training text in the test split: said (attend's own split cannot).
    given = LabelledTexts(["a b", "c", "a  b", "d"], ["x", "y", "x", "y"], splits=["train", "train", "test", "dev"])
    leaked = _caveats(given, {name: given.subset([i for i, s in enumerate(given.splits) if s == name])
                              for name in ("train", "dev", "test")})  # fmt: skip
    assert any(n.startswith("1 of the 1 test text(s) also occur in the training split") for n in leaked)
    assert not any("dev text(s) also occur" in n for n in leaked)
    given = LabelledTexts(["a b", "c", "a  b", "d"], ["x", "y", "x", "y"], splits=["train", "train", "dev", "test"])
    leaked = _caveats(given, {name: given.subset([i for i, s in enumerate(given.splits) if s == name])
                              for name in ("train", "dev", "test")})  # fmt: skip
    assert ("1 of the 1 dev text(s) also occur in the training split (as the split column has it): the epoch is "
            "chosen on texts the model learned from") in leaked  # it was "chosen on include texts"
    # A label that is other labels joined (a --label-sep other than the file's): said, not refused,
    # since "CI/CD" beside "CI" and "CD" may be a name; it had trained as a class of its own in silence.
    tickets = LabelledTexts(["a", "b", "c", "d"], [["billing|bug"], ["billing"], ["bug"], ["CI/CD"]])
    parts = {name: tickets.subset([0, 1, 2, 3]) if name == "train" else tickets.subset([]) for name in
             ("train", "dev", "test")}  # fmt: skip
    said = [n for n in _caveats(tickets, parts) if "joined by" in n]
    assert said == ["the label 'billing|bug' is other labels of the data joined by '|' (['billing', 'bug']), and is "
                    "learned as a class of its own: if it means those labels, give --label-sep '|' (with "
                    "--multi-label)"]  # fmt: skip
    same = LabelledTexts(["good film", "good film"], [["pos", "movie"], ["movie", "pos"]])
    assert _caveats(same, {"train": same, "dev": same.subset([]), "test": same.subset([])}) == []  # one label set
    # Four labels written in two cases: three named and the fourth counted (it had been left out unsaid).
    cased = LabelledTexts([f"t{i}" for i in range(8)], ["A", "a", "B", "b", "C", "c", "D", "d"])
    said = [n for n in _caveats(cased, {"train": cased, "dev": cased.subset([]), "test": cased.subset([])})
            if "letter case" in n]  # fmt: skip
    assert said and "('A' and 'a'; 'B' and 'b'; 'C' and 'c'; and 1 more)" in said[0]



def test_the_baseline_reads_unspaced_scripts_by_character_ngrams() -> None:
    from attend.data.noise import unspaced_share
    from attend.training.metrics import tfidf_baseline

    assert unspaced_share(["这家酒店很好", "very good"]) == pytest.approx(6 / 14)
    assert unspaced_share(["안녕 하세요", "good"]) == 0.0 and unspaced_share([]) == 0.0
    # Each label has its own characters, but no two texts share a space-separated "word": split on
    # spaces, the test texts are unseen clauses; read by characters, the label is plain.
    good, bad = "好棒赞美满意", "差烂糟慢坏贵"
    train_texts = [good[i % 6] + good[(i + 1) % 6] + str(i) for i in range(30)]
    train_texts += [bad[i % 6] + bad[(i + 2) % 6] + str(i) for i in range(30)]
    labels = ["pos"] * 30 + ["neg"] * 30
    found = tfidf_baseline(train_texts, labels, ["棒满意了", "烂慢坏了"], ["pos", "neg"])
    assert found is not None and found["features"] == "char 1-3-grams" and found["accuracy"] == 1.0
    english = tfidf_baseline(["good film", "fine good", "bad film", "awful bad"], ["p", "p", "n", "n"],
                             ["good"], ["p"])  # fmt: skip
    assert english is not None and english["features"] == "word 1-2-grams"


def test_the_baseline_of_many_labels_of_few_texts_prints_no_warning() -> None:
    """300 labels of 2 texts: scikit-learn's "could represent a regression problem" had come before
    the training report (and before a one-line error)."""
    import warnings

    from attend.training.metrics import tfidf_baseline

    texts = [f"word{i // 2} shared text" for i in range(120)]
    labels = [f"c{i // 2}" for i in range(120)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tfidf_baseline(texts, labels, texts[:4], labels[:4]) is not None


def test_a_run_without_dev_rows_says_what_picks_its_epoch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{**row, "part": "test" if i % 5 == 0 else "train"} for i, row in enumerate(planted_rows(120))]
    data = write_csv(tmp_path / "no_dev.csv", rows)
    train(data, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, split_col="part",
          args=TrainingArgs(**{**FAST, "epochs": 1}))  # fmt: skip
    assert "no dev examples: the epoch with the lowest training loss is kept" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": "3"}, 'training option field epochs="3" must be an integer'),
        ({"batch_size": None}, "training option field batch_size=null must be an integer"),
        ({"epochs": 1.5}, "training option field epochs=1.5 must be an integer"),
        # Refused when built, not once the data is read (or, for these two, never: -1 stopped the run
        # after one step, and inf failed inside the time budget's plan).
        ({"stop_after_steps": -1}, "stop_after_steps=-1 must be >= 0 (0: never)"),
        ({"time_budget": float("inf")}, "time_budget=inf must be a finite number >= 0"),
        ({"dev_fraction": 1.5}, "dev_fraction=1.5 must be in [0, 1)"),
        ({"test_fraction": float("nan")}, "test_fraction=nan must be in [0, 1)"),
        ({"dev_fraction": 0.5, "test_fraction": 0.5}, "dev_fraction + test_fraction = 1 leaves no training data"),
        ({"vocab_size": 1}, "vocab_size=1 is too small: a tokenizer needs its special tokens and some pieces"),
    ],
)
def test_training_args_built_from_python_check_their_types(options: dict, message: str) -> None:
    """Before: only from_dict checked types; TrainingArgs(epochs="3") failed on a comparison inside,
    and epochs=1.5 once the data had been read."""
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainingArgs(**options)


def test_a_model_that_learned_labels_written_1_0_takes_1_in_new_data() -> None:
    """A model trained before whole numbers were read alike knows '1.0'; data written 1 is that label."""
    from attend.data.readers import DataError, LabelledTexts
    from attend.training.tasks.classification import label_targets

    data = LabelledTexts(["a", "b", "c"], ["1", "2.0", "2"], source="new.jsonl")
    assert label_targets(data, ["1.0", "2.0"], False).tolist() == [0, 1, 1]
    with pytest.raises(DataError, match=r"row 1 has label '1', which the model was not trained on"):  # two are 1
        label_targets(LabelledTexts(["a"], ["1"], source="x"), ["1.0", "1e0"], False)


def test_one_number_written_two_ways_is_refused_and_labels_differing_in_case_are_noted(tmp_path: Path) -> None:
    """A CSV's "1" and "1.0" (a spreadsheet's float column) were two classes, each half of one, and
    "Pos" beside "pos" two classes without a word."""
    rows = [{"text": f"w{i} good film", "label": ["1", "1.0", "0", "0"][i % 4]} for i in range(40)]
    with pytest.raises(DataError, match=r"the labels '1' \(line 2\) and '1.0' \(line 3\) are the same number"):
        train(write_csv(tmp_path / "n.csv", rows), tmp_path / "n", model="encoder", model_options=SMALL_ENCODER,
              args=TrainingArgs(**{**FAST, "epochs": 1}))  # fmt: skip
    assert not (tmp_path / "n").exists()
    # Two numbers that are two classes (sections 3.1 and 3.10, codes 01 and 1) are not one written two ways.
    from attend.training.tasks.classification import check_labels_to_learn

    for pair in (["3.1", "3.10"], ["01", "1"]):
        check_labels_to_learn(LabelledTexts(texts=["a", "b"], labels=[[pair[0]], [pair[1]]], lines=[2, 3]), False)
    with pytest.raises(DataError, match=r"the labels '7.0' \(line 2\) and '7' \(line 3\)"):  # in the file's order
        check_labels_to_learn(LabelledTexts(texts=["a", "b"], labels=[["7.0"], ["7"]], lines=[2, 3]), False)
    rows = [{**row, "label": ["pos", "Pos", "neg", "neg"][i % 4]} for i, row in enumerate(planted_rows(80))]
    result = train(write_csv(tmp_path / "c.csv", rows), tmp_path / "c", model="encoder", model_options=SMALL_ENCODER,
                   args=TrainingArgs(**{**FAST, "epochs": 1}))  # fmt: skip
    assert "labels that differ only in letter case or Unicode form (composed or decomposed accents, full-width " \
        "letters) are learned as different classes ('Pos' and 'pos')" in result.report
    # "café" composed and decomposed print alike: said, escaped (it had not been noted at all).
    from attend.training.tasks.classification import _caveats

    labels = [["bon caf\u00e9"], ["bon cafe\u0301"], ["ＢＡＤ"], ["bad"]]
    data = LabelledTexts(texts=["a", "b", "c", "d"], labels=labels)
    none = LabelledTexts(texts=[], labels=[])
    (said,) = [n for n in _caveats(data, {"train": data, "dev": none, "test": none}) if "Unicode" in n]
    assert "('bad' and 'ＢＡＤ'; 'bon cafe\\u0301' and 'bon caf\\xe9')" in said


def test_a_report_says_when_its_figures_are_not_held_out_and_when_no_baseline_fits(tmp_path: Path) -> None:
    """Without test rows the dev figures stood as the result; an emoji-only set's baseline line was
    left out; "NA" cells became a class; all without a word."""
    rows = [{"text": f"good fine {i}" if i % 3 else f"bad poor {i}", "label": ["pos", "neg", "NA"][i % 3],
             "split": "dev" if i % 5 == 0 else "train"} for i in range(60)]  # fmt: skip
    path = write_csv(tmp_path / "no_test.csv", rows)
    args = TrainingArgs(**{**FAST, "epochs": 1})
    result = train(path, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args, split_col="split")
    assert result.metrics["split"] == "dev"
    assert "the data has no test split, so these are the dev figures" in result.report
    assert "the label(s) 'NA' read like an empty cell written out" in result.report and "(20 row(s))" in result.report
    emoji = write_csv(tmp_path / "emoji.csv", [{"text": "😀" * (1 + i % 4) if i % 2 else "😡" * (1 + i % 3),
                                                "label": ["pos", "neg"][i % 2]} for i in range(40)])  # fmt: skip
    done = train(emoji, tmp_path / "e", model="encoder", model_options=SMALL_ENCODER, args=args)
    assert "baseline" not in done.metrics and "(TF-IDF + logistic regression): not fitted" in done.report
    from attend.data.readers import stratified_split

    once = LabelledTexts(texts=["a b", "c d", "e f", "g h", "i j"], labels=[["x"], ["x"], ["y"], ["y"], ["null"]])
    with pytest.raises(DataError, match=r"'null' reads like an empty cell written out"):
        stratified_split(once, seed=0)


@pytest.mark.parametrize(("signum", "said"), [(signal.SIGINT, "Ctrl-C: stopping after this step (Ctrl-C to stop now)"),
                                              (signal.SIGTERM, "terminated: stopping after this step (a second SIGTERM "
                                                               "to stop now)")])  # fmt: skip
def test_the_first_stop_signal_says_how_to_stop_at_once(signum: int, said: str, capsys: pytest.CaptureFixture) -> None:
    # A SIGTERM (kill, a scheduler) had been answered "Ctrl-C again to stop now", which no one there can press.
    from attend.training.trainer import _Dist, _install_stop_signals

    flag: dict[str, object] = {"flag": False, "at": 0.0}
    previous = _install_stop_signals(flag, _Dist())
    try:
        signal.getsignal(signum)(signum, None)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    assert flag["flag"] is True and said in capsys.readouterr().err


def test_a_resumed_epochs_loss_weighs_every_step_alike_with_another_process_count(
    tmp_path: Path, planted_csv: Path
) -> None:
    # A checkpoint of 2 processes (every rank counting every step) resumed by 1 had weighed its steps twice
    # in the epoch's train_loss (0.20 or 0.08 where an uninterrupted run said 0.12).
    options = {**SMALL_ENCODER, "dropout": 0.0, "attention_dropout": 0.0}  # no draws: another count may resume
    args = {**FAST, "epochs": 2, "checkpoint_every": 7}

    def epoch_losses(name: str) -> list[float]:
        lines = (tmp_path / name / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["train_loss"] for line in lines]

    train(planted_csv, tmp_path / "whole", model="encoder", model_options=options, args=TrainingArgs(**args))
    with pytest.raises(TrainingInterrupted):  # mid-epoch 2 (20 steps per epoch)
        train(planted_csv, tmp_path / "cut", model="encoder", model_options=options,
              args=TrainingArgs(**args, stop_after_steps=27))  # fmt: skip
    saved = state_directory(tmp_path / "cut") / "checkpoint" / "state.json"
    payload = json.loads(saved.read_text(encoding="utf-8"))
    state = payload["state"]
    assert state["world_size"] == 1 and state["loss_count"] == 7
    # what two processes with these losses would have saved: each rank's sum and count, added up
    state |= {"world_size": 2, "loss_sum": 2 * state["loss_sum"], "loss_count": 2 * state["loss_count"]}
    saved.write_text(json.dumps(payload), encoding="utf-8")
    train(planted_csv, tmp_path / "cut", resume=True)
    assert epoch_losses("cut") == pytest.approx(epoch_losses("whole"), rel=1e-5)


def test_a_restarted_worker_group_resumes_its_own_jobs_run_only(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # torchrun --max-restarts: a first attempt refused for an earlier run's checkpoint had been followed by a
    # restart that resumed that run, with its options, and exit 0.
    args = TrainingArgs(**{**FAST, "epochs": 1, "checkpoint_every": 5})
    with pytest.raises(TrainingInterrupted):  # an earlier run, outside torchrun
        train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER,
              args=dataclasses.replace(args, stop_after_steps=6))  # fmt: skip
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # a restarted group of another job
    with pytest.raises(DataError, match="an interrupted run was writing it"):
        train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args)
    assert "restart 1 of the worker group: the interrupted run in" in capsys.readouterr().err
    # this job's own run, interrupted in attempt 0, is resumed by the restarted group
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(TrainingInterrupted):
        train(planted_csv, tmp_path / "own", model="encoder", model_options=SMALL_ENCODER,
              args=dataclasses.replace(args, stop_after_steps=6))  # fmt: skip
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    train(planted_csv, tmp_path / "own", model="encoder", model_options=SMALL_ENCODER, args=args)
    said = capsys.readouterr().err
    assert "restart 1 of the worker group: resuming" in said and "resuming from epoch 1, step 6" in said


def test_the_elastic_job_is_named_by_the_agents_log_folder_through_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Named by the worker's parent process it changed with a wrapper (torchrun --no-python sh run.sh) at
    # every restart; the agent's log folder, in each worker's error-file path, lasts the whole job.
    from attend.training.trainer import _elastic_job

    assert _elastic_job() is None  # not under torchrun
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "myrun")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", "/tmp/torchelastic_x/myrun_ab12/attempt_0/1/error.json")
    first = _elastic_job()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", "/tmp/torchelastic_x/myrun_ab12/attempt_1/0/error.json")
    assert _elastic_job() == first and first is not None and first.endswith(":/tmp/torchelastic_x/myrun_ab12")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", "/tmp/torchelastic_y/myrun_cd34/attempt_1/0/error.json")
    assert _elastic_job() != first  # another torchrun: another job


def test_a_failed_exchange_with_torchrun_peers_says_what_comes_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The processes test (test_elastic.py) kills a peer; here, each thing the one line can say.
    import torch.distributed as dist

    from attend.training.trainer import _exchange_failure, _raised_in_exchange

    with pytest.raises(Exception) as raised:  # its type is PyTorch's to choose
        dist.barrier()  # no process group: raised inside torch.distributed, as a peer's loss is
    assert _raised_in_exchange(raised.value)
    assert _raised_in_exchange(dist.DistNetworkError("x"))
    assert not _raised_in_exchange(torch.OutOfMemoryError("CUDA out of memory"))  # no peer's doing
    try:
        raise RuntimeError("a bug of our own")
    except RuntimeError as exc:
        assert not _raised_in_exchange(exc)
    gloo = RuntimeError("[/x/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:24485. This is "
                        "typically caused by a remote worker crashing. GLHF!")  # fmt: skip
    work = tmp_path / ".m.training"
    said = _exchange_failure(gloo, work)
    assert "(Connection closed by peer [127.0.0.1]:24485)" in said and "pair.cc" not in said
    assert "no training state was saved yet: run the same torchrun command again" in said
    (work / "checkpoint").mkdir(parents=True)
    assert f"the state saved last is in {work}: run the same torchrun command with --resume" in _exchange_failure(
        gloo, work)
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert "torchrun restarts the group (--max-restarts), which resumes" in _exchange_failure(gloo, work)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")  # none left
    assert "with --resume" in _exchange_failure(gloo, work)


def test_the_trainer_takes_options_as_train_does_and_checks_them_as_the_run_starts(
    planted_csv: Path, tmp_path: Path
) -> None:
    """From a notebook: a dict of options had failed on `.augment`, a field set after TrainingArgs
    was made (lr = 0.0, batch_size = 0) trained at that value or failed on a ZeroDivisionError, and a
    callback that changed its record changed the run's history (or failed the run after it)."""
    from attend.training import Trainer

    def task() -> ClassificationTask:
        return ClassificationTask(planted_csv, model="encoder", model_options=SMALL_ENCODER)

    with pytest.raises(TypeError, match=r"args must be a TrainingArgs or a dict of training options, not str"):
        Trainer(task(), "epochs=1")  # type: ignore[arg-type]
    args = TrainingArgs(**{**FAST, "epochs": 1})
    for field, value, said in (("lr", 0.0, "lr=0.0 must be positive and finite"),
                               ("batch_size", 0, "batch_size=0 must be at least 1"),
                               ("epochs", "x", "epochs")):  # fmt: skip
        changed = dataclasses.replace(args)
        setattr(changed, field, value)
        with pytest.raises(ValueError, match=said):
            Trainer(task(), changed).fit(tmp_path / field)
        assert not (tmp_path / field).exists()
    # A float option given as a whole number is told the float's rule ("at least 1" was wrong for lr).
    with pytest.raises(ValueError, match=r"^lr=0 must be positive and finite$"):
        TrainingArgs(lr=0)

    def meddle(record: dict) -> None:
        record["dev_macro_f1"] = 999.0
        record.pop("seconds")
        record["when"] = object()

    result = Trainer(task(), {**FAST, "epochs": 2}, on_epoch=meddle).fit(tmp_path / "m")
    logged = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    assert [r["dev_macro_f1"] for r in result.history] == [r["dev_macro_f1"] for r in logged] != [999.0, 999.0]
    assert all("seconds" in r and "when" not in r for r in result.history)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["epochs"] == 2


def test_training_leaves_the_callers_random_state_as_it_was(planted_csv: Path, tmp_path: Path) -> None:
    """The run seeds PyTorch and numpy for itself; a notebook's seeded draws had come out otherwise after it
    (after ``auto``, the default, too: its plan seeds and probes before any candidate's loop)."""
    import numpy as np

    torch.manual_seed(7)
    np.random.seed(7)
    expected = (torch.rand(3), np.random.rand(3))
    for model, options in (("encoder", {"model_options": SMALL_ENCODER}), ("auto", {"candidates": ["encoder"]})):
        torch.manual_seed(7)
        np.random.seed(7)
        train(planted_csv, tmp_path / model, model=model, args={**FAST, "epochs": 1}, **options)
        assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1]), model
    with pytest.raises(ValueError, match=r"candidates: a list of model names, not one string \('encoder'"):
        train(planted_csv, tmp_path / "one", candidates="encoder")  # type: ignore[arg-type]
    for model in ("auto", "encoder"):  # None had failed in pathlib, frames deep, naming nothing
        with pytest.raises(TypeError, match=r"^out: the model directory to write, a path \(not None\)"):
            train(planted_csv, None, model=model)  # type: ignore[arg-type]


def test_a_damaged_checkpoint_weight_file_is_refused_in_words(planted_csv: Path, tmp_path: Path) -> None:
    """A weight file cut short (a power loss after the rename) had ended --resume in safetensors' traceback."""
    args = TrainingArgs(**{**FAST, "epochs": 1, "checkpoint_every": 3})
    with pytest.raises(TrainingInterrupted):
        train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER,
              args=dataclasses.replace(args, stop_after_steps=3))  # fmt: skip
    weights = state_directory(tmp_path / "m") / "checkpoint" / "optimiser.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"checkpoint: cannot resume, the checkpoint is unreadable \("):
        train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args, resume=True)


def test_a_file_where_the_training_state_goes_is_named_before_any_work(planted_csv: Path, tmp_path: Path) -> None:
    """It had failed at the first save with a bare "File exists", --overwrite or not."""
    work = state_directory(tmp_path / "m")
    work.write_text("mine\n", encoding="utf-8")
    for overwrite in (False, True):
        with pytest.raises(ModelDirError, match=rf"^{re.escape(str(work))} is a file, where a run writing "):
            train(planted_csv, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER,
                  args=TrainingArgs(**{**FAST, "epochs": 1}), overwrite=overwrite)  # fmt: skip
    assert work.read_text(encoding="utf-8") == "mine\n" and not (tmp_path / "m").exists()


def test_a_separator_that_splits_no_label_cell_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stray --label-sep on a single-label file had trained a multi-label model without a word."""
    rows = [{"text": f"alpha {'beta' if i % 2 else 'delta'} gamma {i % 7}", "label": "b" if i % 2 else "d"}
            for i in range(60)]  # fmt: skip
    path = tmp_path / "single.csv"
    path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    args = TrainingArgs(**{**FAST, "epochs": 1})
    train(path, tmp_path / "m", model="encoder", model_options=SMALL_ENCODER, args=args, label_sep="|")
    assert f"note: --label-sep '|' (label_sep='|') splits no label cell of {path}: every text has one label; it " \
        "trains a multi-label model" in capsys.readouterr().err
    train(path, tmp_path / "m2", model="encoder", model_options=SMALL_ENCODER, args=args, label_sep="|",
          multi_label=True)  # asked for in so many words: nothing to say
    assert "splits no label cell" not in capsys.readouterr().err
