"""Loading a model directory: the runtime of its task, every needed file checked, older directories still load."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import attend
from attend.io import ModelDirError
from attend.runtime import TorchTextClassifier, load
from tests.conftest import copy_model


def _rewrite(path: Path, change: dict, drop: tuple[str, ...] = ()) -> None:
    config = json.loads((path / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in drop} | change
    (path / "config.json").write_text(json.dumps(config))


def test_a_directory_written_before_the_task_and_files_entries_still_loads(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    old = copy_model(trained["encoder"], tmp_path)
    _rewrite(old, {}, drop=("task", "files"))
    runtime = attend.load(old)
    assert isinstance(runtime, TorchTextClassifier) and runtime.task == "classification"
    # --overwrite replaces it (its files are recorded the old way), a crash's leftover of attend's with it.
    from attend.io import check_output_directory

    (old / ".metrics.json.tmp4242").write_text("{}")
    check_output_directory(old, overwrite=True)
    (old / "NOTES.md").write_text("mine")
    with pytest.raises(ModelDirError, match=r"holds NOTES.md beside its model, which attend did not write"):
        check_output_directory(old, overwrite=True)
    (old / "NOTES.md").unlink()
    # A user's hidden file is no leftover of attend's (those carry a process id); a files entry that
    # is no mapping records nothing, and is no crash.
    (old / ".notes.old").write_text("mine")
    with pytest.raises(ModelDirError, match=r"holds .notes.old beside its model"):
        check_output_directory(old, overwrite=True)
    (old / ".notes.old").unlink()
    recorded = copy_model(trained["encoder"], tmp_path, "recorded")  # its files listed: another tokenizer.json is
    _rewrite(recorded, {"files": {"model.safetensors": "0" * 64}})  # not one of them
    with pytest.raises(ModelDirError, match=r"holds tokenizer.json, training_texts.safetensors beside its model"):
        check_output_directory(recorded, overwrite=True)
    _rewrite(recorded, {"files": ["model.safetensors"]})  # had been a bare "dictionary update sequence" error
    with pytest.raises(ModelDirError, match=r"holds tokenizer.json, training_texts.safetensors"):
        check_output_directory(recorded, overwrite=True)
    assert runtime.predict(["the film was wonderful"]) == ["pos"]
    weights = (old / "model.safetensors").read_bytes()  # its weights hash is still checked
    (old / "model.safetensors").write_bytes(weights[:-4] + b"0000")
    with pytest.raises(ModelDirError, match="does not match the hash"):
        load(old)


def test_a_users_file_inside_attends_own_folders_is_not_replaced(trained: dict[str, Path], tmp_path: Path) -> None:
    """--overwrite looked at a model directory's top level only: a user's file inside its onnx/,
    runs/ or members/NN/ went with the model, in silence (train, prune and export --overwrite)."""
    from attend.deploy.export import export_onnx
    from attend.io import check_output_directory

    model = copy_model(trained["encoder"], tmp_path)
    export_onnx(model, model / "onnx")
    (model / "runs").mkdir(exist_ok=True)
    (model / "runs" / "events.out.tfevents.1765000000.host.42.0").write_bytes(b"\0")
    shutil.copytree(trained["encoder"], model / "members" / "00")
    check_output_directory(model, overwrite=True)  # everything in it is attend's
    for mine, shown in ((model / "onnx" / "notes.txt", "onnx/notes.txt"),
                        (model / "runs" / "mine" / "important.txt", "runs/mine/"),
                        (model / "members" / "00" / "NOTES.md", "members/00/NOTES.md"),
                        (model / "members" / "readme.txt", "members/readme.txt")):  # fmt: skip
        mine.parent.mkdir(exist_ok=True)
        mine.write_text("mine")
        with pytest.raises(ModelDirError, match=rf"holds {re.escape(shown)} beside its model, which attend did not"):
            check_output_directory(model, overwrite=True)
        shutil.rmtree(mine.parent) if shown.endswith("/") else mine.unlink()
    check_output_directory(model, overwrite=True)
    (model / "onnx" / "config.json").unlink()  # no longer attend's export: all of it is the user's
    with pytest.raises(ModelDirError, match=r"holds onnx/metrics.json, onnx/model.onnx, onnx/tokenizer.json"):
        check_output_directory(model, overwrite=True)


def test_a_config_nested_too_deeply_or_with_files_of_another_shape_is_one_error(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A RecursionError and a TypeError had been tracebacks (exit 1) on the command line."""
    from attend.cli import main

    deep = copy_model(trained["encoder"], tmp_path, "deep")
    (deep / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ModelDirError, match=r"config.json is not the config of an attend model: its JSON is nested"):
        load(deep)
    odd = copy_model(trained["encoder"], tmp_path, "odd")
    _rewrite(odd, {"files": 5})
    assert main(["predict", str(odd), "good"]) == 2
    assert "its files entry is a int, not the mapping of file names to SHA-256" in capsys.readouterr().err


def test_every_file_the_model_needs_is_checked(trained: dict[str, Path], tmp_path: Path) -> None:
    mixed = copy_model(trained["encoder"], tmp_path)
    (mixed / "tokenizer.json").write_text((trained["encoder_cls"] / "tokenizer.json").read_text().replace(" ", "  "))
    with pytest.raises(ModelDirError, match=r"tokenizer.json does not match the hash in config.json"):
        load(mixed)


def test_unknown_tasks_and_mismatched_labels_are_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    other = copy_model(trained["encoder"], tmp_path, "other")
    _rewrite(other, {"task": "telepathy"})
    with pytest.raises(ModelDirError, match="task 'telepathy' has no runtime"):
        load(other)
    for value, shown in ((None, "null"), ("", '""'), (5, "5")):  # null had been a classifier, 5 task '5'
        _rewrite(other, {"task": value})
        with pytest.raises(ModelDirError, match=re.escape(f'config.json: "task" is {shown}; it names the task')):
            load(other)
    short = copy_model(trained["encoder"], tmp_path, "short")
    _rewrite(short, {"labels": ["pos"]})
    with pytest.raises(ModelDirError, match="lists 1 labels, but its model has num_labels=2"):
        load(short)
    twice = copy_model(trained["encoder"], tmp_path, "twice")
    _rewrite(twice, {"labels": ["pos", "pos"]})
    with pytest.raises(ModelDirError, match=r"lists the label\(s\) \['pos'\] more than once"):
        load(twice)


@pytest.mark.parametrize("max_length", ["abc", 1.5, 0])
def test_a_tokenizer_length_that_is_not_a_length_is_refused_at_load(
    trained: dict[str, Path], tmp_path: Path, max_length: object
) -> None:
    edited = copy_model(trained["encoder"], tmp_path)
    config = json.loads((edited / "config.json").read_text())
    _rewrite(edited, {"tokenizer": {**config["tokenizer"], "max_length": max_length}})
    with pytest.raises(ModelDirError, match=f"tokenizer max_length={max_length!r} must be an integer >= 2"):
        load(edited)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda model: model.predict(["good film"], batch_size=1.5), "batch_size=1.5 must be a whole number"),
        (lambda model: model.top_k(["good film"], k=None), "k=None must be a whole number"),
        (lambda model: model.predict_proba(["good film"], batch_size=True), "batch_size=True must be a whole number"),
    ],
)
def test_counts_of_the_wrong_type_are_named(trained: dict[str, Path], call: object, message: str) -> None:
    """Before: batch_size=1.5 raised an IndexError from numpy, k=None a TypeError from a comparison."""
    model = load(trained["encoder"])
    with pytest.raises(ValueError, match=message):
        call(model)  # type: ignore[operator]
    assert model.top_k(["good film"], k=1, batch_size=2)[0][0][0] in model.labels


def test_weights_that_do_not_fit_a_hand_edited_config_are_named_briefly(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Before: one error line, then PyTorch's list of every tensor that did not fit (90 lines)."""
    wide = copy_model(trained["encoder"], tmp_path, "wide")
    config = json.loads((wide / "config.json").read_text())
    _rewrite(wide, {"model": {**config["model"], "dim": config["model"]["dim"] * 2}})
    fits = r"does not fit the model in config.json \(size mismatch for .*; and \d+ more\)$"
    with pytest.raises(ModelDirError, match=fits) as refused:
        load(wide)
    assert "\n" not in str(refused.value)


def test_the_library_refuses_what_it_would_answer_wrongly_and_leaves_the_global_rng(trained: dict[str, Path]) -> None:
    import torch

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    runtime = load(trained["encoder"])  # built with random weights first: it drew from the host's generator
    assert torch.equal(torch.rand(3), expected)
    # A dict's keys or a set's members were predicted, in an order no answer could be lined up with.
    for texts in ({"a film": 1}, {"a film", "a book"}, b"a film"):
        with pytest.raises(ValueError, match=rf"texts must be a list of strings, not {type(texts).__name__}"):
            runtime.predict(texts)  # type: ignore[arg-type]
    # No texts is an empty answer, as translate() gives (it was "texts is empty", a ValueError).
    assert runtime.predict([]) == [] and runtime.top_k(iter([])) == [] and runtime.explain([]) == []
    assert runtime.predict_proba(()).shape == (0, len(runtime.labels))
    with pytest.raises(ValueError, match="method='nope'"):  # the arguments are checked all the same
        runtime.explain([], method="nope")
    # threshold= chooses a multi-label model's labels: on a single-label one it did nothing, silently.
    with pytest.raises(ValueError, match=r"threshold=0\.9 is for a multi-label model"):
        runtime.predict(["a film"], threshold=0.9)
    with pytest.raises(ValueError, match=r"threads='2' must be a whole number >= 0"):
        load(trained["encoder"], threads="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"int8='yes' must be True or False"):  # it had loaded the int8 model
        load(trained["encoder"], int8="yes")  # type: ignore[arg-type]
