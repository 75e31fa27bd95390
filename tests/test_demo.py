"""The main demo runs end to end on the real bundled data (a small sample of it here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from attend.demo import DEMO_MODEL, main


def test_demo_trains_evaluates_and_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(out=str(out), limit=1500, epochs=1) == 0
    printed = capsys.readouterr().out
    # A 1500-example sample, less the few examples of topics too rare to split.
    assert re.search(r"-> \d+ topics, 1[34]\d\d examples", printed)
    assert "test split of dataset:wordnet_topics" in printed and "baseline on the same test split" in printed
    assert "Why " in printed and f"model directory: {out.resolve()}" in printed
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    report = out / "explanation.html"
    assert f"explanation (tokens shaded by importance, per-head attention maps): {report.resolve()}" in printed
    page = report.read_text(encoding="utf-8")
    assert "Prediction: <b>noun." in page and page.count('<img alt="layer 1 head') == 4
    from attend.io import check_output_directory

    check_output_directory(out, overwrite=True)  # a second `make demo` replaces it: its page is attend's own
    # A sample's model is no file's: said, since quantize and prune had failed on it without a way on.
    assert "note: this model learned from a sample (--limit 1500), which is no file: quantize and prune, which " \
        "measure on its test split rebuilt from its data, need --data FILE" in printed  # fmt: skip


def test_the_whole_dataset_is_trained_by_name_so_its_splits_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handed over loaded, the demo model recorded no rebuildable source: quantize, prune and export of
    runs/demo could not use its test split (the README's figures for it are on that split)."""
    import attend.demo

    given = []

    class Stop(Exception):
        pass

    def fake_train(data: object, *args: object, **kwargs: object) -> None:
        given.append(data)
        raise Stop

    monkeypatch.setattr(attend.demo, "train", fake_train)
    with pytest.raises(Stop):
        main(out="unused")
    assert given == ["wordnet_topics"]
    with pytest.raises(Stop):
        main(out="unused", limit=300)
    assert not isinstance(given[1], str) and len(given[1]) <= 300  # a sample: handed over as loaded texts


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs: 0 must be at least 1"),  # ran the full demo: 0 read as "not given"
        (["--limit", "0"], "--limit: 0 must be at least 1"),
        (["--limit", "5", "--epochs", "1"], "--limit 5: a sample this small leaves"),  # an IndexError traceback
        (["--attention", "--limit", "5"], "--limit: the --attention demonstration trains nothing"),  # ignored
    ],
)
def test_demo_options_are_checked(argv: list[str], message: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from attend.cli import main as cli

    try:
        code = cli(["demo", "--out", str(tmp_path / "d"), *argv] if "--attention" not in argv else ["demo", *argv])
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_an_interrupted_demo_says_how_to_start_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """It said 'run the same command with --resume', an option the demo does not have."""
    import attend.demo
    from attend.training import TrainingInterrupted

    def interrupted(*args: object, **kwargs: object) -> None:
        raise TrainingInterrupted("interrupted at step 3; run the same command with --resume to continue")

    monkeypatch.setattr(attend.demo, "train", interrupted)
    with pytest.raises(TrainingInterrupted, match=r"^the demo was interrupted before writing x; `attend demo` starts"):
        main(out="x", limit=300)


def test_the_demo_replaces_only_a_demos_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`attend demo --out runs/prod` had replaced a model of the user's own, in silence."""
    import attend.demo

    class Stop(Exception):
        pass

    def fake_train(*args: object, **kwargs: object) -> None:
        raise Stop

    monkeypatch.setattr(attend.demo, "train", fake_train)
    own = tmp_path / "own"
    own.mkdir()
    (own / "model.safetensors").write_bytes(b"weights")
    (own / "config.json").write_text(json.dumps({"model": {**DEMO_MODEL, "dim": 64}, "data": {"source": "x.csv"}}))
    with pytest.raises(ValueError, match=r"--out .*own: holds files the demo did not write \(a model of your own\?\)"):
        main(out=str(own), limit=300)
    assert (own / "model.safetensors").read_bytes() == b"weights"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"holds a file the demo did not write"):
        main(out=str(tmp_path / "file"), limit=300)
    earlier = tmp_path / "earlier"  # an earlier demo's (its page), and an empty folder: trained into
    earlier.mkdir()
    (earlier / "explanation.html").write_text("<html></html>")
    (tmp_path / "empty").mkdir()
    # A demo stopped after training, before its page: its model says it is the demo's (it had been refused
    # for good, as "a model of your own").
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.json").write_text(json.dumps({"model": {**DEMO_MODEL, "model_type": "encoder"},
                                                     "data": {"source": "dataset:wordnet_topics"}}))  # fmt: skip
    for out in (earlier, tmp_path / "empty", tmp_path / "new", stopped):
        with pytest.raises(Stop):
            main(out=str(out), limit=300)
