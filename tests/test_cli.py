"""The CLI: each verb end to end, and errors that are one line and a non-zero exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from attend.cli import main
from tests.conftest import kill_at, planted_rows, run_cli, write_csv

CONFIG = {
    "model": {"dim": 32, "num_layers": 1, "num_heads": 2},
    "training": {"lr": 0.003, "vocab_size": 500, "batch_size": 16},
}



@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG), encoding="utf-8")
    return path


def test_evaluate_draws_a_bar_over_the_texts_and_scores_them_as_in_one_piece(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fine-tuned MiniLM scores about 100 texts a second here: 10,000 had been minutes of silence."""
    import attend.runtime.classifier
    from attend.data.readers import LabelledTexts
    from attend.runtime import TextClassifier, load

    model = load(trained["encoder"])
    whole = model.evaluate(trained["data"])
    # The chunks are the windows predictions() plans its batches over: the same batches.
    monkeypatch.setattr(attend.runtime.classifier, "PLAN_WINDOW", 64)
    with pytest.raises(ValueError, match=r"texts\[600\] is an empty text"):  # its place in the whole (was 88)
        model.evaluate(LabelledTexts(["a wonderful film"] * 600 + [""], ["pos"] * 601), progress=True)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    monkeypatch.setenv("TQDM_DELAY", "0")
    real, sizes = TextClassifier.predictions, []

    def counted(self, texts, **options):  # type: ignore[no-untyped-def]
        sizes.append(len(texts))
        return real(self, texts, **options)

    monkeypatch.setattr(TextClassifier, "predictions", counted)
    done = run_cli("evaluate", str(trained["encoder"]), str(trained["data"]), "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == whole  # in chunks, the same figures
    assert sizes == [128] * 4 + [88]  # evaluate's batches are 128 texts, so its windows are 128 at least
    assert "evaluate: 100%" in done.stderr and "600/600" in done.stderr
    done = run_cli("evaluate", str(trained["encoder"]), str(trained["data"]), "--no-progress")
    assert done.returncode == 0 and "evaluate:" not in done.stderr


@pytest.mark.parametrize("argv", [["evaluate", "{model}", "rotten_tomatoes", "--label-col", "foo"],
                                  ["robustness", "{model}", "chinese_reviews", "--text-col", "foo"],
                                  ["faithfulness", "{model}", "chinese_reviews", "--text-col", "foo"]])
def test_a_column_option_with_a_registered_dataset_is_refused(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """It had been ignored: the dataset's own columns scored, exit 0."""
    from attend.cli import main

    assert main([a.format(model=trained["encoder"]) for a in argv]) == 2
    flag, value = argv[-2:]
    assert capsys.readouterr().err == (f"error: {flag} {value}: {argv[2]} is a registered dataset that names its own "
                                       "columns; the column options are for a data file\n")


@pytest.mark.parametrize(("argv", "said"), [(["explain", "{model}", "great", "--html", ""], "--html ''"),
                                             (["explain", "{model}", "x", "--png", " "], "--png ' '"),
                                             (["predict", "{model}", "great", "--output", ""], "--output ''"),
                                             (["train", "{data}", "--out", ""], "--out ''"),
                                             (["focus", "triage", "--task", "x", "--messages", ""], "--messages ''"),
                                             (["evaluate", "", "{data}"], "MODEL_DIR ''")])
def test_an_empty_path_is_refused_by_its_flag(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: list[str], said: str,
) -> None:
    """`--html "$OUT"` with OUT unset had written no page and exited 0; `--out ''` was the current folder."""
    from attend.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([a.format(model=trained["encoder"], data=trained["data"]) for a in argv]) == 2
    assert capsys.readouterr().err == f"error: {said}: an empty path; give a file or folder name\n"
    assert not list(tmp_path.iterdir())


def test_figures_on_few_examples_say_what_one_is_worth(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """evaluate on 3 rows printed full P/R/F1 tables, and robustness on one row -100.00 points, without a word."""
    from attend.cli import main

    few = write_csv(tmp_path / "few.csv", planted_rows(3, seed=11))
    for argv in (["evaluate", str(trained["encoder"]), str(few)], ["robustness", str(trained["encoder"]), str(few)]):
        assert main(argv) == 0
        assert "note: 3 example(s) scored: one of them is 33.3 points of these figures" in capsys.readouterr().err
    assert main(["evaluate", str(trained["encoder"]), str(write_csv(tmp_path / "many.csv", planted_rows(60, seed=11)))
                 ]) == 0  # fmt: skip
    assert "example(s) scored" not in capsys.readouterr().err
    # Texts cut to the model's length, or that it cannot read at all, are counted and said, as predict marks each.
    odd = write_csv(tmp_path / "odd.csv", [*planted_rows(3, seed=12), {"text": "wonderful " * 400, "label": "pos"},
                                           {"text": "😀😀😀", "label": "neg"}])  # fmt: skip
    assert main(["evaluate", str(trained["encoder"]), str(odd), "--json"]) == 0
    captured = capsys.readouterr()
    assert (json.loads(captured.out)["truncated"], json.loads(captured.out)["unreadable"]) == (1, 1)
    assert "note: 1 of the 5 texts are longer than the model reads: it read their start only" in captured.err
    assert "note: 1 text(s) have no piece in the model's vocabulary (all [UNK])" in captured.err


def test_train_evaluate_predict(tmp_path: Path, planted_csv: Path, config_file: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "model"
    code = main(["train", str(planted_csv), "--model", "encoder", "--out", str(out), "--config", str(config_file),
                 "--epochs", "4", "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and f"model written to {out}" in printed

    assert main(["evaluate", str(out), str(planted_csv), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert {"accuracy", "macro_f1", "per_class"} <= set(metrics) and metrics["accuracy"] > 0.9
    # The training file holds the training split: said, with how many (the figures are not held-out).
    trained_on = json.loads((out / "config.json").read_text())["data"]["sizes"]["train"]
    assert metrics["examples"] == 400 and trained_on <= metrics["training_overlap"] < 400
    assert f"warning: {metrics['training_overlap']} of the 400 examples scored are texts of the model's training " \
           "split" in captured.err
    fresh = write_csv(tmp_path / "fresh.csv", [{"text": "zzz wonderful qqq", "label": "pos"},
                                               {"text": "zzz dreadful qqq", "label": "neg"}])  # fmt: skip
    assert main(["evaluate", str(out), str(fresh), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["training_overlap"] == 0 and "warning" not in captured.err

    assert main(["predict", str(out), "what a wonderful film", "a dreadful plot", "--top-k", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in rows] == ["pos", "neg"] and len(rows[0]["top"]) == 2

    assert main(["predict", str(out), "--input", str(planted_csv), "--format", "csv", "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "text,label_1,probability_1,truncated,warning" and len(lines) == 401

    long = "wonderful " + "a " * 300  # more tokens than the model reads
    assert main(["predict", str(out), long, "great", "😀👍", "--top-k", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["truncated"] for row in rows] == [True, False, False]
    assert [("warning" in row) for row in rows] == [False, False, True]
    assert main(["explain", str(out), long, "--json", "--html", str(tmp_path / "new" / "folder" / "why.html")]) == 0
    explained = json.loads(capsys.readouterr().out)[0]
    assert explained["truncated"] and len(explained["text"]) < len(long)  # what the model read, not the whole text
    assert (tmp_path / "new" / "folder" / "why.html").is_file()
    # --png naming a file (or a path below one) is refused before the work, naming the flag
    assert main(["explain", str(out), "great", "--png", str(tmp_path / "new" / "folder" / "why.html" / "x")]) == 2
    refused = capsys.readouterr().err
    assert refused.startswith("error: --png ") and "why.html is a file; give a directory for the PNG files" in refused


def test_verbs_read_the_model_s_own_columns(tmp_path: Path, config_file: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A model trained on a file with its own column names: evaluate, predict --input, explain
    --input and faithfulness read that file without --text-col/--label-col (robustness did; they
    said "has no column 'text'")."""
    rows = [{"Body": row["text"], "Tag": row["label"]} for row in planted_rows(120)]
    data = write_csv(tmp_path / "own.csv", rows)
    out = tmp_path / "model"
    assert main(["train", str(data), "--model", "encoder", "--out", str(out), "--config", str(config_file),
                 "--epochs", "1", "--no-progress", "--text-col", "Body", "--label-col", "Tag"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(out), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 120
    assert main(["predict", str(out), "--input", str(data), "--format", "jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 120
    few = write_csv(tmp_path / "few.csv", rows[:3])
    assert main(["explain", str(out), "--input", str(few), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["faithfulness", str(out), str(few), "--methods", "attention", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["export", str(out), "--onnx", str(tmp_path / "onnx"), "--texts-file", str(few)]) == 0
    capsys.readouterr()
    # An ensemble reads its members' columns where they agree.
    assert main(["train", str(data), "--model", "encoder", "--out", str(tmp_path / "m2"), "--config", str(config_file),
                 "--epochs", "1", "--no-progress", "--text-col", "Body", "--label-col", "Tag", "--seed", "1"]) == 0
    assert main(["ensemble", str(out), str(tmp_path / "m2"), "--out", str(tmp_path / "ens")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "ens"), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 120
    assert main(["predict", str(tmp_path / "ens"), "--input", str(few), "--format", "jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    # Members that differ in one column (a label separator) still agree on the others; a malformed
    # member entry (back into the directory itself) is no column at all, not a RecursionError.
    from attend.data.splits import trained_columns

    for name, sep in (("a", ";"), ("b", "+")):
        (tmp_path / "fake" / "members" / name).mkdir(parents=True)
        (tmp_path / "fake" / "members" / name / "config.json").write_text(json.dumps(
            {"task": "classification", "data": {"text_col": "Body", "label_col": "Tag", "label_sep": sep}}))
    members = {"members": [{"path": "members/a"}, {"path": "members/b"}]}
    assert trained_columns({"ensemble": members}, tmp_path / "fake") == {"text_col": "Body", "label_col": "Tag"}
    assert trained_columns({"ensemble": {"members": [{"path": "."}]}}, tmp_path / "fake") == {}
    fresh = write_csv(tmp_path / "fresh.csv", [{"Body": f"zz{i} wonderful", "Tag": "pos"} for i in range(4)])
    assert main(["robustness", str(tmp_path / "ens"), str(fresh), "--attack-examples", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 4
    # Given, a column is read as given; a file without the model's columns says which option chooses one.
    renamed = write_csv(tmp_path / "renamed.csv", [{"Words": row["Body"], "Tag": row["Tag"]} for row in rows])
    assert main(["evaluate", str(out), str(renamed), "--text-col", "Words", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 120
    # One column for both (every text had been called an unknown label)
    assert main(["evaluate", str(out), str(data), "--text-col", "Tag", "--json"]) == 2
    assert "text_col and label_col are both 'Tag'" in capsys.readouterr().err
    other = write_csv(tmp_path / "other.csv", [{"text": "a", "label": "pos"}])
    assert main(["faithfulness", str(out), str(other)]) == 2
    err = capsys.readouterr().err
    assert "has no column 'Body'" in err and "--text-col" in err and "--label-col" not in err


def test_an_empty_augment_turns_off_a_files_augment_with_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--augment ''` turns off a --config file's augment: the file's augment_rate had then been
    refused ("has no effect without augment"), a flag the user never typed."""
    import attend.training
    from attend.cli import main

    seen: list[dict] = []

    def train(*args: object, **options: Any) -> object:
        seen.append(dict(options["args"]))
        raise SystemExit(0)

    monkeypatch.setattr(attend.training, "train", train)
    config = tmp_path / "aug.json"
    config.write_text('{"training": {"augment": "typos", "augment_rate": 0.3}}', encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["train", "data.csv", "--out", str(tmp_path / "m"), "--config", str(config), "--augment", ""])
    assert seen[-1]["augment"] == "" and "augment_rate" not in seen[-1]
    # A rate given as a flag beside it is still refused.
    assert main(["train", "data.csv", "--out", str(tmp_path / "m"), "--config", str(config), "--augment", "",
                 "--augment-rate", "0.2"]) == 2  # fmt: skip
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "missing.csv", "--out", "m"], "missing.csv: no such file"),
        (["evaluate", "no_model", "missing.csv"], "no_model: no such model directory"),
        (["predict", "no_model"], "give texts to classify, or --input FILE"),
        (["train", "data.csv", "--out", "m", "--text-col", "body"], "has no column 'body'"),
        (["train", "data.csv", "--out", "m", "--config", "bad.json"], "bad.json is not valid JSON"),
        (["train", "data.csv", "--out", "m", "--config", "stray"], "--config stray is a directory; give a JSON file"),
        (["train", "data.csv", "--out", "m", "--config", "top.json"], "top.json: unknown entry ['foo']; it takes"),
        (["train", "data.csv", "--out", "m", "--config", "null.json"], 'null.json: "training" must be a JSON object of '
         'options ({"epochs": 3}), not null'),  # a TypeError traceback
        (["train", "data.csv", "--out", "m", "--config", "text.json"], '"model" must be a JSON object of options '
         '({"dim": 64}), not str'),  # "dictionary update sequence element #0 has length 1"
        # A byte-order mark is read past (it had been "Unexpected UTF-8 BOM"); a key given twice is refused
        # (the last had won in silence).
        (["train", "data.csv", "--out", "m", "--config", "twice.json"],
         "twice.json: the key 'training' is given twice in one object; keep one"),
        (["train", "data.csv", "--out", "m", "--model", "gpt"], "unknown model 'gpt'"),
        (["train", "data.csv", "--out", "data.csv"], "data.csv exists and is not a directory"),
        (["train", "data.csv", "--out", "data.csv/m"], "data.csv is a file, so the output directory"),
        (["train", "data.csv", "--out", "m" * 245, "--model", "encoder"],
         "is 245 bytes; attend writes beside it under names up to 16"),  # failed at its staging, after training
        (["train", "data.csv", "--out", "m" * 250, "--model", "encoder"],
         "is 250 bytes; attend writes beside it under names up to 16"),  # its lock file had been blamed
        (["train", "data.csv", "--out", "m", "--config", "types.json"], 'training option field epochs="3" must be an'),
        (["train", "data.csv", "--out", "m", "--config", "float.json"], "field epochs=1.5 must be an integer"),
        (["train", "data.csv", "--out", "m", "--model", "encoder", "--config", "wide.json"],
         'model field dim="wide" must be an integer'),
        (["train", "data.csv", "--out", "m", "--model", "encoder", "--config", "bool.json"],
         "field num_layers=true must be an integer"),
        (["train", "data.csv", "--out", "stray"], "stray exists, is not empty and is not a model directory"),
        (["train", "one_label.csv", "--out", "m", "--model", "encoder"], "every example has the label 'pos'; a"),
        (["train", "one_label.csv", "--out", "m"], "a classifier needs at least two labels"),  # auto too
        (["train", "one_label.csv", "--out", "m", "--model", "encoder", "--multi-label"],
         "every example has the label 'pos'; a"),  # trained, with accuracy 1.0 and F1 0.0 side by side
        (["train", "data.csv", "--out", "m", "--model", "seq2seq", "--multi-label"],
         "--text-col, --label-col, --multi-label and --label-sep are for text classifiers"),
        (["train", "data.csv", "--out", "m", "--source-col", "en"], "--source-col and --target-col are for --model"),
        (["train", "data.csv", "--out", "m", "--model", "encoder", "--config", "short.json"],
         "model option max_length=16 is less than the training max_length=128"),
        (["train", "data.csv", "--out", "m", "--split-col", "part"], "choose the column with --split-col"),
        (["serve", "data.csv"], "data.csv is a file, not a model directory"),
        (["train", "data.csv", "--out", "m", "--model", "seq2seq", "--config", "layers.json"],
         "unknown 'seq2seq' model field(s) ['num_layers']; known: ['attention'"),  # was a TypeError traceback
        (["train", "data.csv", "--out", "m", "--config", "typo.json"],  # the near name first, before the long list
         "unknown training option field(s) ['epochz'] (did you mean 'epochs'?); known: ['adversarial'"),
        (["train", "data.csv", "--out", "m", "--model", "encoder", "--config", "typos.json"],
         "unknown attention option(s) ['gatee', 'windw'] (did you mean 'gate' for 'gatee', 'window' for 'windw'?)"),
        (["train", "data.csv", "--out", "m", "--lr", "inf"], "--lr inf: must be positive and finite"),  # trained to nan
        (["train", "data.csv", "--out", "m", "--lr", "nan"], "--lr nan: must be positive and finite"),  # torch's words
        (["train", "data.csv", "--out", "m", "--augment", "typos", "--augment-rate", "0"],
         "--augment-rate 0.0: must be in (0, 1]"),  # a flag's value named as the flag (it said augment_rate=0.0)
        (["train", "data.csv", "--out", "m", "--max-length", "1"], "--max-length 1: must be at least 3"),
        (["train", "data.csv", "--out", "m", "--augment", "word drop"], "--augment word drop: is not a perturbation"),
        (["train", "data.csv", "--out", "m", "--augment", " , "], "--augment ' , ' names no perturbation"),  # was none
        (["train", "data.csv", "--out", "m", "--augment", "typos,swap,typos"],
         "--augment typos,swap,typos: names 'typos' twice; each perturbation named is picked with the same chance"),
        # ^ it had been dropped in silence, as if naming it twice weighed typos more
        (["train", "data.csv", "--out", "m", "--config", "rate.json"],
         "--config rate.json: augment_rate=0.0 must be in (0, 1]"),  # the file named, as a flag is
        (["train", "data.csv", "--out", "m", "--candidates", " , "], "--candidates ' , ' names no model"),  # was all
        (["train", "data.csv", "--out", "m", "--config", "types.json", "--epochs", "1"],
         '--config types.json: training option field epochs="3" must be an'),  # a flag over it hid the file's bad value
        (["train", "data.csv", "--out", "m", "--model", "encoder", "--config", "labels.json"],
         "model field(s) ['num_labels'] are set from the data"),  # was overwritten without a word
        (["train", "data.csv", "--out", "m", "--model", "seq2seq", "--config", "vocab.json"],
         "model field(s) ['vocab_size'] are set from the tokenizer trained on the data"),  # was a TypeError traceback
        # A registered dataset's columns are its own: the options had been ignored, and it trained in full.
        (["train", "rotten_tomatoes", "--out", "m", "--text-col", "foo"],
         "--text-col foo: rotten_tomatoes is a registered dataset that names its own columns"),
        (["train", "chinese_reviews", "--out", "m", "--split-col", "part"], "--split-col part: chinese_reviews is a"),
        (["train", "tatoeba_en_de", "--out", "m", "--model", "seq2seq", "--target-col", "de"],
         "--target-col de: tatoeba_en_de is a registered dataset"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "data.csv").write_text("text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n", encoding="utf-8")
    (tmp_path / "one_label.csv").write_text("text,label\n" + "".join(f"text {i},pos\n" for i in range(30)))
    (tmp_path / "bad.json").write_text("{oops", encoding="utf-8")
    (tmp_path / "rate.json").write_text('{"training": {"augment": "typos", "augment_rate": 0.0}}', encoding="utf-8")
    (tmp_path / "top.json").write_text('{"foo": {}, "training": {"epochs": 1}}', encoding="utf-8")
    (tmp_path / "null.json").write_text('{"training": null}', encoding="utf-8")
    (tmp_path / "text.json").write_text('{"model": "x"}', encoding="utf-8")
    (tmp_path / "twice.json").write_text('\ufeff{"training": {"epochs": 1}, "training": {"lr": 0.1}}', encoding="utf-8")
    (tmp_path / "short.json").write_text('{"model": {"max_length": 16}}', encoding="utf-8")
    (tmp_path / "layers.json").write_text('{"model": {"num_layers": 1}}', encoding="utf-8")
    (tmp_path / "typo.json").write_text('{"training": {"epochz": 1}}', encoding="utf-8")
    (tmp_path / "typos.json").write_text('{"model": {"attention": {"gatee": true, "windw": 2}}}', encoding="utf-8")
    (tmp_path / "vocab.json").write_text('{"model": {"vocab_size": 64}}', encoding="utf-8")
    (tmp_path / "labels.json").write_text('{"model": {"num_labels": 5}}', encoding="utf-8")
    (tmp_path / "types.json").write_text('{"training": {"epochs": "3"}}', encoding="utf-8")
    (tmp_path / "float.json").write_text('{"training": {"epochs": 1.5}}', encoding="utf-8")
    (tmp_path / "wide.json").write_text('{"model": {"dim": "wide"}}', encoding="utf-8")
    (tmp_path / "bool.json").write_text('{"model": {"num_layers": true}}', encoding="utf-8")
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "old.pkl").write_bytes(b"\x80\x04.")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert not (tmp_path / "m" / "config.json").exists()


def test_an_error_ends_a_real_process_with_one_line_and_status_2(tmp_path: Path) -> None:
    """As the cases above say it in-process: nothing else on stderr when the interpreter ends."""
    result = subprocess.run([sys.executable, "-m", "attend", "train", "missing.csv", "--out", "m"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    said = "error: missing.csv: no such file, and no data set of that name (`attend datasets` lists them)\n"
    assert (result.returncode, result.stdout, result.stderr) == (2, "", said)


def test_help_and_argument_errors_load_no_model_code() -> None:
    """Building the parser imports no torch, numpy or FastAPI (``attend --help`` took 3.5 s when
    the app packages and the explain methods' registry were imported for it), and the method names
    spelled out for the parser are attend.explain's registry."""
    probe = ("import sys; from attend.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'numpy', 'fastapi', 'sklearn') if m in sys.modules)); "
             "import attend.runtime, attend.serve.app; print('sklearn' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    # Nor does loading a model to predict, translate or serve import scikit-learn (1.5 s of each
    # command): only scoring does.
    assert result.stdout.split() == ["[]", "False"]
    import inspect

    from attend.cli import EXPLAIN_METHODS, IG_STEPS
    from attend.explain import METHODS, explain, faithfulness

    assert EXPLAIN_METHODS == tuple(METHODS)
    assert IG_STEPS == inspect.signature(explain).parameters["ig_steps"].default
    assert IG_STEPS == inspect.signature(faithfulness).parameters["ig_steps"].default


@pytest.mark.parametrize("verb", ["predict", "explain", "translate"])
def test_a_verb_given_nothing_asks_for_the_model_only(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse had also required `texts`, which --input replaces."""
    with pytest.raises(SystemExit) as stopped:
        main([verb])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.endswith("error: the following arguments are required: model_dir\n")


def test_app_packages_still_export_their_names() -> None:
    import attend.apps.focus as focus
    import attend.apps.monitor as monitor

    for package in (focus, monitor):
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = focus.nothing  # type: ignore[attr-defined]


def test_an_argument_whose_bytes_are_not_utf8_is_a_one_line_error(tmp_path: Path, planted_csv: Path) -> None:
    out = tmp_path / "m"
    assert run_cli("train", str(planted_csv), "--model", "encoder", "--out", str(out), "--epochs", "1",
                   "--no-progress").returncode == 0
    result = subprocess.run([sys.executable.encode(), b"-m", b"attend", b"predict", str(out).encode(), b"caf\xe9"],
                            capture_output=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert b"text argument 1 contains an unpaired surrogate '\\udce9'" in result.stderr  # not texts[0]: a list index


@pytest.mark.processes
def test_torchrun_two_processes_train_to_the_same_quality(tmp_path: Path, planted_csv: Path, config_file: Path) -> None:
    common = ["train", str(planted_csv), "--model", "encoder", "--config", str(config_file), "--epochs", "4",
              "--no-progress"]
    single = run_cli(*common, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun binds a free port itself, so no other test can take it in between.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "attend"]  # fmt: skip
    ddp = subprocess.run(
        [*launcher, *common, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=300
    )
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count("model written to") == 1  # only rank 0 reports
    one = json.loads((tmp_path / "single" / "metrics.json").read_text())
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert two["accuracy"] > 0.8 and abs(two["accuracy"] - one["accuracy"]) <= 0.08, (one["accuracy"], two["accuracy"])


@pytest.mark.processes
def test_a_killed_run_resumes_to_the_same_result(tmp_path: Path, planted_csv: Path) -> None:
    """SIGKILL mid-epoch (no chance to clean up), then --resume: same metrics as a run left alone."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**CONFIG, "training": {**CONFIG["training"], "checkpoint_every": 3}}))
    common = ["train", str(planted_csv), "--model", "encoder", "--config", str(config), "--epochs", "2",
              "--no-progress"]
    whole = run_cli(*common, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    kill_at(tmp_path, "checkpoint:1:3", *common, "--out", str(out))  # a checkpoint part-way through epoch 2
    assert not (out / "config.json").exists()  # it really died before finishing
    resumed = run_cli(*common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch 2" in resumed.stderr
    first = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    second = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "best_epoch"):
        assert second[key] == first[key], key


def test_a_database_error_is_one_line_without_the_statement_or_its_texts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only focus database printed SQLAlchemy's traceback, whose parameters held the message's
    text, on stderr."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    import attend.cli

    def refused(args: object) -> int:
        raise OperationalError("INSERT INTO focus_messages ...", ("m1", "the boiler is leaking"),
                               sqlite3.OperationalError("attempt to write a readonly database"))  # fmt: skip

    monkeypatch.setattr(attend.cli, "_cmd_datasets", refused)
    assert attend.cli.main(["datasets"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: the database refused: attempt to write a readonly database (is the database file, or "
                   "its folder, read-only?)\n")  # fmt: skip


def test_an_app_run_as_a_module_reports_a_database_error_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m attend.apps.focus ...` printed the traceback, message text and all."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from attend.apps import run_app_cli

    def register(verbs: object) -> None:
        def refused(args: object) -> int:
            raise OperationalError("INSERT ...", ("secret text",), sqlite3.OperationalError("disk I/O error"))

        verbs.add_parser("ingest").set_defaults(func=refused)  # type: ignore[attr-defined]

    assert run_app_cli("ingest", register, []) == 2
    assert capsys.readouterr().err == "error: the database refused: disk I/O error\n"


@pytest.mark.parametrize("verb", [["train", "data.csv", "--out", "m"], ["focus", "triage", "--task", "t", "--messages",
                                  "m.jsonl"], ["monitor", "run", "--events", "e.jsonl", "--model", "m", "--db", "d.db"],
                                  ["recommend", "train", "log.csv", "--out", "m"]])  # fmt: skip
def test_every_threads_flag_takes_a_thread_count(capsys: pytest.CaptureFixture[str], verb: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--threads", "99999999999999999999"])
    assert exit_info.value.code == 2 and "--threads: 99999999999999999999 is not a thread count (0 to 1024" in \
        capsys.readouterr().err  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "argument --port: 70000 is not a port (1 to 65535)"),
        (["--max-batch", "0"], "argument --max-batch: 0 must be at least 1"),
        (["--workers", "-1"], "argument --workers: -1 must be at least 1"),
        # a huge number had started processes until the machine choked, and left its snapshot behind
        (["--workers", "99999999999999999999"], "argument --workers: 99999999999999999999 is not a number of worker "
         "processes (1 to 64)"),
        # "Overflow when unpacking long long", naming no flag
        (["--threads", "99999999999999999999"], "argument --threads: 99999999999999999999 is not a thread count (0 to "
         "1024; 0: the runtime's default)"),
        (["--max-chars", "0"], "argument --max-chars: 0 must be at least 1"),
        # inf was taken, then overflowed the batch thread's timeout at the first request (which hung)
        (["--max-wait-ms", "inf"], "argument --max-wait-ms: inf is not a wait in milliseconds (0 to 60,000)"),
        (["--max-wait-ms", "nan"], "argument --max-wait-ms: nan is not a wait in milliseconds"),
        (["--max-wait-ms", "-1"], "argument --max-wait-ms: -1 is not a wait in milliseconds"),
        (["--max-wait-ms", "soon"], "argument --max-wait-ms: 'soon' is not a number of milliseconds"),
    ],
)
def test_serve_options_out_of_range_name_the_flag(capsys: pytest.CaptureFixture[str], args: list[str],
                                                  message: str) -> None:  # fmt: skip
    """Before: 'port=70000 must be in 1..65535', naming a Python argument, after the model had loaded."""
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "some_model", *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_serve_passes_its_limits_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import attend.serve.app

    given: dict = {}
    monkeypatch.setattr(attend.serve.app, "serve", lambda model_dir, **kwargs: given.update(kwargs))
    assert main(["serve", "some_model", "--max-body-bytes", "1000", "--max-chars", "50"]) == 0
    assert given["settings"].max_body_bytes == 1000 and given["settings"].max_chars == 50


@pytest.mark.parametrize(
    "argv",
    [["train", "data.csv", "--out", "m"], ["support", "build", "faq.csv", "--out", "idx"],
     ["recommend", "train", "log.csv", "--out", "rec"], ["robustness", "m", "data.csv"]],
)  # fmt: skip
def test_a_seed_out_of_range_names_the_flag(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Before: "Seed must be between 0 and 2**32 - 1", numpy's words, from deep in the command."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--seed", "-3"])
    assert exit_info.value.code == 2
    assert "argument --seed: -3 is not a seed (0 to 4294967295)" in capsys.readouterr().err


def test_sigterm_interrupts_a_verb_as_ctrl_c_does(trained: dict[str, Path], tmp_path: Path) -> None:
    """`kill` (SIGTERM) had ended `attend predict` without a word, exit -15; Ctrl-C said
    "interrupted" and exited 130, what was written kept for --resume. Both do the latter now."""
    import signal
    import time

    fifo, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    os.mkfifo(fifo)  # an input that is still being written: the run is mid-way when the signal comes
    proc = subprocess.Popen([sys.executable, "-m", "attend", "predict", str(trained["encoder"]), "--input", str(fifo),
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DELAY": "0"})  # fmt: skip
    with open(fifo, "w", encoding="utf-8") as writer:
        writer.write("".join(json.dumps({"text": f"a wonderful film number {i}"}) + "\n" for i in range(600)))
        writer.flush()
        deadline = time.monotonic() + 120
        while (not out.exists() or not out.stat().st_size) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert out.exists() and out.stat().st_size, "no prediction was written"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    rows = out.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line)["label"] for line in rows[:-1])
    # what is kept and how to go on (it had said "interrupted" alone)
    said = re.search(r"interrupted: (\d+) predictions? in (.*); run the same command with --resume", err)
    assert said and said.group(2) == str(out) and int(said.group(1)) in (len(rows) - 1, len(rows)), err
    assert err.splitlines()[-1].startswith("interrupted: ") and "predict:" in err  # the bar's last line before it


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_command_finished_ends_it_with_its_status(signum: int) -> None:
    """A Ctrl-C just after `train` wrote its model broke the interpreter's shutdown: torch's atexit
    traceback and exit 0, or death by the signal (SIGTERM: 143). Once a command returns, either signal
    ends the process at once with the command's status and its output flushed (ignored, a shutdown
    that hung could not be stopped)."""
    script = ("import os, signal, sys\nsys.argv = ['attend', 'datasets', '--json']\nfrom attend.cli import main\n"
              f"code = main()\nos.kill(os.getpid(), {int(signum)})\nprint('not reached', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "not reached" not in done.stderr and "Traceback" not in done.stderr
    assert json.loads(done.stdout)  # what the command printed, whole


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_interpreters_last_teardown_leaves_the_commands_status(signum: int) -> None:
    """After atexit the interpreter puts the default handlers back while it frees torch's and ONNX
    Runtime's objects (a second after `export` printed its last line): a Ctrl-C then had killed the
    finished command by the signal, without a word. Here the signal comes from an object freed in
    that teardown."""
    script = ("import os, signal, sys\nsys.argv = ['attend', 'datasets', '--json']\nfrom attend.cli import main\n"
              "class Late:\n    def __del__(self):\n"
              f"        os.kill(os.getpid(), {int(signum)})\n        os.write(2, b'survived')\n"
              "late = Late()\nsys.exit(main())\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.endswith("survived"), (done.returncode, done.stderr)
    assert json.loads(done.stdout)


def test_an_unrecognised_argument_is_shown_with_its_verbs_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """`attend recommend evaluate DIR other.csv` had printed `usage: attend [-h] [--version] VERB ...`."""
    with pytest.raises(SystemExit) as stopped:
        main(["recommend", "evaluate", "some_dir", "other.csv"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "usage: attend recommend evaluate" in err
    assert "attend recommend evaluate: error: unrecognized arguments: other.csv" in err
    with pytest.raises(SystemExit):
        main(["datasets", "--bogus"])
    assert "attend datasets: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_an_os_error_in_a_working_file_names_the_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`error: imm/.model.prepared12128.onnx: Operation not permitted` named a file the user never chose."""
    import attend.cli as cli

    def fail(args: object) -> int:
        raise PermissionError(1, "Operation not permitted", "/data/imm/.model.prepared12128.onnx")

    monkeypatch.setattr(cli, "_cmd_datasets", fail)
    assert main(["datasets"]) == 2
    assert capsys.readouterr().err == ("error: /data/imm (while writing its working file .model.prepared12128.onnx): "
                                       "Operation not permitted\n")  # fmt: skip
    def denied(args: object) -> int:
        raise PermissionError(13, "Denied", "a.csv")

    monkeypatch.setattr(cli, "_cmd_datasets", denied)  # a file the user named is named as given
    assert main(["datasets"]) == 2 and capsys.readouterr().err == "error: a.csv: Denied\n"

    def unlockable(args: object) -> int:  # `--out /sys/m`: the lock beside it cannot be made
        raise PermissionError(13, "Permission denied", "/sys/.m.lock")

    monkeypatch.setattr(cli, "_cmd_datasets", unlockable)
    assert main(["datasets"]) == 2
    said = capsys.readouterr().err
    assert said == "error: /sys/m (while taking its lock file .m.lock beside it): Permission denied\n"


def test_a_negative_weight_is_read_as_a_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--weights -1,2` was argparse's "expected one argument": the value read as an option."""
    assert main(["ensemble", "a", "b", "--out", str(tmp_path / "e"), "--weights", "-1,2"]) == 2
    assert capsys.readouterr().err == "error: --weights -1,2: weight -1.0 must be a positive number\n"


def test_a_mount_point_as_the_output_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It had trained to the end, then failed to swap the model in ("Device or resource busy"), leaving
    # .vol.training behind and the next run told to --resume into the same failure.
    import attend.io

    volume = tmp_path / "vol"
    volume.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(attend.io.os.path, "ismount", lambda path: Path(path) == volume or real(path))
    data = write_csv(tmp_path / "data.csv", planted_rows(40))
    assert main(["train", str(data), "--out", str(volume), "--model", "encoder", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{volume} is a mount point" in err and str(volume / "model") in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "vol"]


def test_under_torchrun_rank_0_alone_says_a_usage_error_and_the_others_wait_for_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each rank had printed the usage; a rank leaving at once had had torchrun stop rank 0 before it said
    # the error ("interrupted" alone).
    import attend.cli

    waited: list[float] = []
    monkeypatch.setattr(attend.cli, "_wait_for_rank_0", lambda: waited.append(attend.cli.QUIET_RANK_GRACE))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exited:
        main(["train", "data.csv", "--bogus", "3"])
    assert exited.value.code == 2 and capsys.readouterr().err == "" and waited == [attend.cli.QUIET_RANK_GRACE]
    assert main(["train", "missing.csv", "--out", "m"]) == 2 and capsys.readouterr().err == ""
    assert len(waited) == 2
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit):
        main(["train", "data.csv", "--bogus", "3"])
    assert "error: the following arguments are required: --out" in capsys.readouterr().err and len(waited) == 2


def test_a_quiet_rank_stopped_by_torchrun_while_it_waits_exits_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """torchrun's SIGTERM, once rank 0 had said the error and exited, came as Ctrl-C into the other
    ranks' wait inside the error handler: 40 lines of traceback after rank 0's one line."""
    import attend.cli

    def stopped(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(attend.cli.time, "sleep", stopped)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "missing.csv", "--out", "m"]) == 2 and capsys.readouterr().err == ""


def test_a_stop_under_torchrun_with_restarts_left_says_the_group_may_resume_by_itself(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from attend.cli import _elastic_note

    assert _elastic_note() == ""  # not under torchrun
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert "it restarts the group, which resumes this run itself" in _elastic_note()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")  # none left: the advice to resume stands alone
    assert _elastic_note() == ""


def test_verbs_that_do_not_train_are_refused_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `evaluate` had printed its report once per process; `predict --output` had one rank write the file
    # and the other fail on it (exit 1 with a whole file)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["evaluate", "m", "data.csv"]) == 2
    assert "error: attend evaluate runs in one process; torchrun is for training" in capsys.readouterr().err
    assert main(["recommend", "top", "m", "--user", "1"]) == 2
    assert "attend recommend top runs in one process" in capsys.readouterr().err
    assert main(["train", "missing.csv", "--out", "m"]) == 2  # train goes on, to its own error
    assert "under torchrun name a --model" in capsys.readouterr().err


def test_a_failed_exchange_under_torchrun_is_one_line_from_the_rank_that_met_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import attend.training
    from attend.training import ExchangeFailed

    def lost(*args: object, **kwargs: object) -> None:
        raise ExchangeFailed("an exchange with the other torchrun processes failed (Connection closed by peer)")

    monkeypatch.setattr(attend.training, "train", lost)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")  # not rank 0: it says so all the same, as the others may be gone
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,x\n", encoding="utf-8")
    assert main(["train", str(data), "--out", str(tmp_path / "m"), "--model", "encoder"]) == 1
    assert capsys.readouterr().err == ("[rank 1] error: an exchange with the other torchrun processes failed "
                                       "(Connection closed by peer)\n")  # fmt: skip


def test_a_loop_of_symbolic_links_as_an_output_is_one_line(
    trained: dict[str, Path], planted_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Path.resolve() raises RuntimeError on a loop (Python 3.11): every writing verb had ended in its traceback."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    model = str(trained["encoder"])
    for argv in (["train", str(planted_csv), "--model", "encoder", "--out", str(loop)],
                 ["predict", model, "a text", "--output", str(loop)],
                 ["explain", model, "a text", "--html", str(loop)],
                 ["export", model, "--onnx", str(loop)]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err  # or the system's own words, where an open() met the loop first
        assert err in (f"error: {loop}: a loop of symbolic links (it leads back to itself)\n",
                       f"error: {loop}: Too many levels of symbolic links\n"), (argv, err)  # fmt: skip


def test_a_failed_copy_is_said_by_its_first_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An ensemble copying its members onto a full disk had printed the list of every failed file."""
    import shutil

    import attend.runtime.ensemble as ensemble

    def full(*args: object, **kwargs: object) -> None:
        raise shutil.Error([(f"m1/{name}", f"ens/members/00/{name}", "[Errno 28] No space left on device")
                            for name in ("config.json", "model.safetensors", "tokenizer.json")])  # fmt: skip

    monkeypatch.setattr(ensemble, "make_ensemble", full)
    assert main(["ensemble", "m1", "m2", "--out", str(tmp_path / "ens")]) == 2
    assert capsys.readouterr().err == ("error: ens/members/00/config.json: [Errno 28] No space left on device (and 2 "
                                       "more file(s))\n")  # fmt: skip


def test_a_refused_argument_is_said_as_its_flag_whatever_its_value() -> None:
    from attend.config import as_flag, flags_named

    said = as_flag(ValueError("weights=[1.0, 0.0]: weight 0.0 must be a positive number"), {"weights"})
    assert str(said) == "--weights [1.0, 0.0]: weight 0.0 must be a positive number"  # a list value whole
    typed = as_flag(ValueError("weights=[1.0, 0.0]: weight 0.0 must be ..."), {"weights"}, {"weights": "1,0"})
    assert str(typed) == "--weights 1,0: weight 0.0 must be ..."  # as the flag was typed
    other = ValueError("seed=3: taken")
    assert as_flag(other, {"weights"}) is other  # not a flag given: as it was
    with pytest.raises(ValueError, match=r"^--fraction 0\.99: give --fraction 0\.5 at most$"):
        with flags_named({"fraction"}):
            raise ValueError("fraction=0.99: give fraction=0.5 at most")
