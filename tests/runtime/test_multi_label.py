"""A multi-label model's threshold and label separator, from the command line, HTTP and Python."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from attend.cli import main
from attend.runtime import load
from attend.serve.app import ServeSettings, create_app
from attend.training import TrainingArgs, train

WORDS = {"a": "alpha", "b": "beta", "c": "gamma"}


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        labels = [label for j, label in enumerate(WORDS) if (i >> j) & 1] or ["a"]
        rows.append({"text": " ".join([WORDS[label] for label in labels] + [f"w{i % 5}"]), "labels": labels})
    return rows


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-label model trained on JSON lists (no separator of its own)."""
    root = tmp_path_factory.mktemp("tagged")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _rows(160)), encoding="utf-8")
    args = TrainingArgs(epochs=3, batch_size=16, lr=3e-3, progress=False, vocab_size=200)
    train(data, root / "m", model="encoder", model_options={"dim": 32, "num_layers": 1, "num_heads": 2}, args=args,
          label_col="labels", multi_label=True)  # fmt: skip
    return root / "m"


def test_evaluate_takes_a_separator_and_a_threshold(
    tagged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    """A model trained on JSON lists could not score a CSV of "a|b" cells (no --label-sep), and its
    labels were chosen from 0.5 alone: a rare label it is unsure of was never predicted."""
    scored = tmp_path / "scored.csv"
    scored.write_text("text,labels\n" + "".join(f"{r['text']},{'|'.join(r['labels'])}\n" for r in _rows(40)),
                      encoding="utf-8")  # fmt: skip
    assert main(["evaluate", str(tagged), str(scored)]) == 2
    err = capsys.readouterr().err
    assert "the model was not trained on" in err
    assert "with '|': give --label-sep '|' (label_sep='|') to read such cells as several labels" in err, err
    assert "labels the model was not trained on: " in err  # every one, in one error
    assert main(["evaluate", str(tagged), str(scored), "--label-sep", "|", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["examples"] == 40 and "threshold" not in default
    assert main(["evaluate", str(tagged), str(scored), "--label-sep", "|", "--threshold", "0.999", "--json"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert strict["threshold"] == 0.999
    runtime = load(tagged)
    probs = runtime.predict_proba([r["text"] for r in _rows(40)])
    truth = np.array([[label in r["labels"] for label in runtime.labels] for r in _rows(40)])
    for found, cut in ((default, 0.5), (strict, 0.999)):  # each recall as the probabilities give it at its threshold
        assert found["micro_recall"] == pytest.approx(((probs >= cut) & truth).sum() / truth.sum(), abs=1e-4)
    for argv, said in ((["--label-sep", ""], "--label-sep '': splits nothing"),
                       (["--threshold", "0"], "argument --threshold: 0 must be a probability in (0, 1]"),
                       (["--threshold", "nan"], "argument --threshold: nan must be a probability")):  # fmt: skip
        with pytest.raises(SystemExit) if argv[0] == "--threshold" else _nothing():
            assert main(["evaluate", str(tagged), str(scored), *argv]) == 2
        assert said in capsys.readouterr().err
    # train too (its cells had been read whole: "label 'a|b' appears only once")
    assert main(["train", str(scored), "--multi-label", "--label-sep", "", "--out", str(tmp_path / "none")]) == 2
    assert "--label-sep '': splits nothing" in capsys.readouterr().err and not (tmp_path / "none").exists()
    single = trained["encoder"]  # a single-label model: the threshold would change nothing
    assert main(["evaluate", str(single), str(trained["data"]), "--threshold", "0.3"]) == 2
    assert "--threshold 0.3: chooses a multi-label model's labels" in capsys.readouterr().err
    assert main(["evaluate", str(single), str(trained["data"]), "--label-sep", "|"]) == 2  # named as the flag
    assert "--label-sep '|': splits a multi-label model's label cells" in capsys.readouterr().err
    one = load(single)
    with pytest.raises(ValueError, match=r"threshold=0\.3 is for a multi-label model"):
        one.chosen(one.predict_proba(["a film"]), 0.3)  # it returned None, the threshold unseen


def test_every_row_of_a_file_bounds_the_threshold_a_resumed_run_must_use(tmp_path: Path) -> None:
    """Only the last row was checked: a file written at 0.3 whose last row read the same at 0.5 was
    continued at 0.5, its rows chosen by two thresholds (an auditor's 22 of 200 rows)."""
    from attend.data.readers import DataError
    from attend.runtime.streaming import read_existing

    def row(text: str, top: list[tuple[str, float]], labels: list[str]) -> str:
        return json.dumps({"text": text, "label": top[0][0], "labels": labels, "truncated": False,
                           "top": [{"label": lab, "probability": p} for lab, p in top]}) + "\n"  # fmt: skip

    out = tmp_path / "p.jsonl"
    out.write_text(row("a", [("food", 0.9), ("travel", 0.41)], ["food", "travel"])  # 0.41 chosen: at most 0.41
                   + row("b", [("travel", 0.8), ("food", 0.2)], ["travel"])  # 0.2 left out: above 0.2
                   + row("c", [("food", 0.95), ("travel", 0.05)], ["food"]), encoding="utf-8")  # fmt: skip
    existing = read_existing(out, "jsonl")
    for threshold in (0.21, 0.3, 0.41):
        existing._check_threshold(threshold)
    for threshold in (0.5, 0.19, 0.1):  # (0.2 itself passes: the bounds allow for rounding)
        with pytest.raises(DataError, match=r"written with a --threshold above 0\.200000 \(row 2 left out a label "
                                            r"of that probability\) and at most 0\.410000 \(row 1 chose"):  # fmt: skip
            existing._check_threshold(threshold)
    with out.open("a", encoding="utf-8") as f:  # a row chosen at 0.5 after them: no one threshold fits
        f.write(row("d", [("food", 0.7), ("travel", 0.45)], ["food"]))
    with pytest.raises(DataError, match=r"no one --threshold chose its rows' labels \(row 1 chose a label of "
                                        r"probability 0\.410000, row 4 left out one of 0\.450000\)"):  # fmt: skip
        read_existing(out, "jsonl")._check_threshold(0.41)
    # A CSV joins the chosen labels with '|': a label holding '|' itself is found whole in the cell.
    table = tmp_path / "p.csv"
    table.write_text("text,label_1,probability_1,label_2,probability_2,truncated,warning,labels\n"
                     "a,a|b,0.900000,c,0.800000,false,,a|b|c\nb,c,0.700000,a|b,0.100000,false,,c\n",
                     encoding="utf-8")  # fmt: skip
    existing = read_existing(table, "csv")
    assert (existing.above, existing.at_most) == ((0.1, 2), (0.7, 2))
    existing._check_threshold(0.5)


def test_the_rows_classified_again_on_resume_must_choose_the_labels_the_file_has(tmp_path: Path) -> None:
    """With --top-k 1 a chosen label outside the top-k bounds no threshold: a file written at 0.5 went
    on at 0.95, row 1 reading 'billing|bug' and its copy further down 'bug'. The rows of the chunk a
    resumed run starts in are classified again: their labels must be the file's. And a label holding
    '|' ('CI|CD') had failed the last row's check as two labels, at the same threshold."""
    from types import SimpleNamespace

    from attend.data.readers import DataError
    from attend.runtime.streaming import _check_chosen_again, read_existing

    table = tmp_path / "p.csv"
    table.write_text("text,label_1,probability_1,truncated,warning,labels\n"
                     "a,bug,0.960000,false,,billing|bug\nb,CI|CD,0.900000,false,,CI|CD\n",
                     encoding="utf-8")  # fmt: skip
    existing = read_existing(table, "csv")
    assert existing.chosen_cells == {0: "billing|bug", 1: "CI|CD"}
    model = SimpleNamespace(checked_threshold=lambda threshold: threshold)
    _check_chosen_again(existing, [["billing", "bug"], ["CI|CD"]], 0.5, model)  # the same: goes on
    with pytest.raises(DataError, match=r"row 1's labels are 'billing\|bug', this run's 'bug' \(--threshold 0\.95\): "
                                        "resume with the --threshold it was written with"):  # fmt: skip
        _check_chosen_again(existing, [["bug"], ["CI|CD"]], 0.95, model)


def test_an_ensemble_of_a_json_list_member_and_a_separator_member_reads_cells_at_that_separator(
    tagged: Path, tmp_path: Path
) -> None:
    """The members did not agree on a separator (the JSON-list one has none), so the ensemble had none,
    and a CSV of "a|b" cells, which its '|' member reads by itself, was refused as unknown labels."""
    from attend.runtime import make_ensemble

    piped_csv = tmp_path / "piped.csv"
    piped_csv.write_text("text,labels\n" + "".join(f"{r['text']},{'|'.join(r['labels'])}\n" for r in _rows(160)),
                         encoding="utf-8")  # fmt: skip
    train(piped_csv, tmp_path / "piped", model="encoder", model_options={"dim": 32, "num_layers": 1, "num_heads": 2},
          args=TrainingArgs(epochs=1, batch_size=16, lr=3e-3, progress=False, vocab_size=200), label_col="labels",
          label_sep="|")  # fmt: skip
    make_ensemble([tagged, tmp_path / "piped"], tmp_path / "both")
    both = load(tmp_path / "both")
    scored = both.evaluate(piped_csv)
    assert scored["examples"] == 160


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_predict_chooses_labels_from_the_threshold_and_resumes_only_with_it(
    tagged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = tmp_path / "texts.csv"
    texts.write_text("text\n" + "".join(f"{r['text']}\n" for r in _rows(12)), encoding="utf-8")
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(tagged), "--input", str(texts), "--output", str(out), "--threshold", "0.001",
                 "--no-progress"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    probs = load(tagged).predict_proba([r["text"] for r in _rows(12)])
    assert [row["labels"] for row in rows] == [[label for label, p in zip(load(tagged).labels, row, strict=True)
                                                if p >= 0.001] for row in probs]  # fmt: skip
    before = out.read_bytes()
    # Another threshold would choose the last row's labels otherwise: the file mixes no two.
    assert main(["predict", str(tagged), "--input", str(texts), "--output", str(out), "--resume", "--threshold",
                 "1", "--no-progress"]) == 2  # fmt: skip
    assert "resume with the --threshold it was written with" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["predict", str(tagged), "--input", str(texts), "--output", str(out), "--resume", "--threshold",
                 "0.001", "--no-progress"]) == 0  # fmt: skip
    # Another model with the same labels is said to be another model, not another threshold.
    other = tmp_path / "other"
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _rows(160)), encoding="utf-8")
    train(data, other, model="encoder", model_options={"dim": 32, "num_layers": 1, "num_heads": 2},
          args=TrainingArgs(epochs=1, batch_size=16, lr=3e-3, progress=False, vocab_size=200, seed=5),
          label_col="labels", multi_label=True)  # fmt: skip
    assert main(["predict", str(other), "--input", str(texts), "--output", str(out), "--resume", "--threshold",
                 "0.001", "--no-progress"]) == 2  # fmt: skip
    assert "another model (or --int8 where it was written without" in capsys.readouterr().err


def test_the_http_route_takes_a_threshold_for_a_multi_label_model(tagged: Path, trained: dict[str, Path]) -> None:
    text = _rows(3)[2]["text"]
    probs = load(tagged).predict_proba([text])[0]
    with TestClient(create_app(load(tagged), ServeSettings())) as client:
        for threshold in (0.001, 1.0):
            reply = client.post("/v1/predict", json={"text": text, "threshold": threshold})
            assert reply.status_code == 200, reply.text
            expected = [label for label, p in zip(load(tagged).labels, probs, strict=True) if p >= threshold]
            assert reply.json()["predictions"][0]["labels"] == expected
        for bad in (0, True, "0.3"):  # true had been read as 1.0, "0.3" as 0.3
            assert client.post("/v1/predict", json={"text": text, "threshold": bad}).status_code == 422, bad
    with TestClient(create_app(load(trained["encoder"]), ServeSettings())) as client:
        refused = client.post("/v1/predict", json={"text": "a film", "threshold": 0.3})
        assert refused.status_code == 422 and "chooses a multi-label model's labels" in refused.text


def test_an_explanation_of_another_label_gives_that_labels_probability(tagged: Path) -> None:
    """`probability` was the most probable label's, beside a `target` the user asked about."""
    runtime = load(tagged)
    text = _rows(2)[1]["text"]  # "beta w1": label b
    probs = runtime.predict_proba([text])[0]
    other = runtime.labels[int(np.argmin(probs))]
    (found,) = runtime.explain([text], method="integrated_gradients", target=other, ig_steps=4)
    assert found["target"] == other and found["label"] != other
    assert found["target_probability"] == pytest.approx(float(probs[runtime.labels.index(other)]), abs=1e-5)
    assert found["probability"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_plain_explain_sets_the_labels_apart_from_the_method(tagged: Path, capsys: pytest.CaptureFixture) -> None:
    """It printed "labels: billing, bug, rollout": the method read as one more label."""
    assert main(["explain", str(tagged), _rows(2)[1]["text"]]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert re.search(r"\) \[labels: [^\]]*\], rollout$", line), line


def test_the_html_page_names_the_labels_predicted(tagged: Path, tmp_path: Path) -> None:
    """The page showed a multi-label model's top label as "Prediction", also where it predicts none
    or several."""
    from attend.explain import HtmlReport, explain

    runtime = load(tagged)
    texts = [row["text"] for row in _rows(12)] + ["zzz qqq"]
    found = explain(runtime, texts, "rollout")
    report = HtmlReport()
    report.add(found)
    page = report.page()
    assert "Prediction: " not in page
    for exp in found:
        chosen = ", ".join(f"<b>{label}</b>" for label in exp.labels) or "<b>none</b>"
        assert f"Predicted labels: {chosen} &middot; most probable <b>{exp.label}</b>" in page
    assert len({len(exp.labels) for exp in found}) > 1  # sets of different sizes were drawn


def test_texts_with_none_of_the_labels_train_and_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    """Most toxic comments carry no tag: an empty cell of multi-label data had been "no label", refused."""
    rows = [{"text": f"w{i % 7} plain words", "labels": []} if i % 4 == 0 else row for i, row in enumerate(_rows(160))]
    data = tmp_path / "tags.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    args = TrainingArgs(epochs=2, batch_size=16, lr=3e-3, progress=False, vocab_size=200)
    result = train(data, tmp_path / "m", model="encoder", model_options={"dim": 32, "num_layers": 1, "num_heads": 2},
                   args=args, label_col="labels", multi_label=True)  # fmt: skip
    assert "40 row(s) have none of the labels" in result.report
    scored = tmp_path / "scored.csv"
    scored.write_text("text,labels\nw3 plain words,\nalpha beta w1,a|b\n", encoding="utf-8")
    assert main(["evaluate", str(tmp_path / "m"), str(scored), "--label-sep", "|", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 2
    # explain names the set predict chooses (it had shown the top label alone); a single-label model has none.
    model = load(tmp_path / "m")
    (explained,) = model.explain(["alpha beta w1"])
    probs = model.predict_proba(["alpha beta w1"])[0]
    chosen = [label for label, p in zip(model.labels, probs, strict=True) if p >= 0.5]
    assert explained["labels"] == chosen == model.predict(["alpha beta w1"], threshold=0.5)[0]
    assert "labels" not in load(trained["encoder"]).explain(["a good film"])[0]


def test_a_label_holding_the_csv_joiner_is_said_when_predicting_to_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV's labels cell joins labels with '|': a model's label 'CI|CD' made the cell 'CI|CD|bug'
    read as three labels, with nothing said."""
    rows = [{"text": row["text"], "labels": ["CI|CD" if label == "a" else label for label in row["labels"]]}
            for row in _rows(40)]  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    train(data, tmp_path / "m", model="encoder", model_options={"dim": 16, "num_layers": 1, "num_heads": 2},
          args=TrainingArgs(epochs=1, batch_size=16, progress=False, vocab_size=100), label_col="labels",
          multi_label=True)  # fmt: skip
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m"), "alpha beta", "--format", "csv"]) == 0
    assert "note: the model's label 'CI|CD' holds '|', which also joins the labels" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "m"), "alpha beta", "--format", "jsonl"]) == 0  # a list: nothing to say
    assert "note:" not in capsys.readouterr().err
