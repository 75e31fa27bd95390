"""The export / quantize / prune verbs, and serving the exported model with ONNX Runtime."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from attend.cli import main
from attend.serve.app import ServeSettings, create_app, load_for_serving
from tests.conftest import copy_model, planted_rows, write_csv


@pytest.fixture(scope="module")
def model_dir(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_model(trained["encoder"], tmp_path_factory.mktemp("deploy"))


def test_export_quantize_prune_and_serve_onnx(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    onnx_dir = tmp_path / "onnx"
    assert main(["export", str(model_dir), "--onnx", str(onnx_dir), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    # said before the silent tracing and parity check (nothing had been said until it was done)
    assert captured.err.startswith(f"exporting the classifier of {model_dir} to ONNX, then checking it against")
    assert report["parity"]["max_abs_diff_logits"] < 1e-4 and (onnx_dir / "model.onnx").is_file()

    assert main(["quantize", str(onnx_dir)]) == 0
    printed = capsys.readouterr().out
    assert "onnx: accuracy" in printed and (onnx_dir / "model.int8.onnx").is_file()
    assert f"serve it with `attend serve {onnx_dir} --int8` (ONNX Runtime" in printed  # the graph it measured
    stored = json.loads((onnx_dir / "metrics.json").read_text())
    assert "accuracy" in stored and abs(stored["quantized"]["onnx"]["accuracy_change"]) <= 0.05

    assert main(["quantize", str(onnx_dir), "--max-loss", "0"]) == 0  # int8 with an accuracy budget
    captured = capsys.readouterr()
    # A count of the sub-layers kept (it printed their numbers, "kept fp32: 4 of 5" for the fifth alone).
    found = re.search(r"budget 0 points on the dev split of .*\(60 examples\): \d of \d sub-layers kept fp32",
                      captured.out)
    assert found, captured.out
    assert "int8 search: fp32 sub-layers none of 5: dev loss" in captured.err
    assert main(["quantize", str(model_dir), "--runtime", "torch", "--max-loss", "0.5"]) == 2
    # the conflict named by both flags, the advice as flags too (it had blamed --max-loss alone)
    assert "error: --max-loss 0.5: an accuracy budget is searched with the ONNX runtime, not --runtime 'torch'; give " \
        "--runtime 'onnx' or 'both'" in capsys.readouterr().err

    assert main(["quantize", str(model_dir), "--runtime", "bf16"]) == 0  # what `serve --bf16` would lose
    printed = capsys.readouterr().out
    assert "torch bf16: accuracy" in printed and "serve it with --bf16" in printed
    half = json.loads((model_dir / "metrics.json").read_text())["quantized"]["bf16"]
    assert abs(half["accuracy_change"]) <= 0.05 and half["same_prediction"] > 0.9 and "bf16" in half
    assert main(["quantize", str(onnx_dir), "--runtime", "bf16"]) == 2  # an ONNX directory has no PyTorch model
    assert "ONNX model directory" in capsys.readouterr().err

    # predict / evaluate take the ONNX directory too, and --int8 picks its int8 graph (or PyTorch's dynamic int8).
    data = write_csv(tmp_path / "held_out.csv", planted_rows(60, seed=7))
    for argv in ([str(onnx_dir)], [str(onnx_dir), "--int8"], [str(model_dir), "--int8"]):
        assert main(["predict", argv[0], "the film was wonderful", "a dreadful plot", "--top-k", "1", *argv[1:]]) == 0
        assert [row["label"] for row in json.loads(capsys.readouterr().out)] == ["pos", "neg"]
        assert main(["evaluate", argv[0], str(data), "--json", *argv[1:]]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.9
    assert main(["evaluate", str(onnx_dir), str(data), "--json"]) == 0
    onnx_metrics = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(model_dir), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == onnx_metrics["accuracy"]  # same model, either runtime

    pruned = tmp_path / "pruned"
    assert main(["prune", str(model_dir), "--out", str(pruned), "--heads", "1", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # each pass said on stderr before it runs (a MiniLM's had been 37 s of silence)
    assert "scoring the 8 heads by masking on the dev split" in captured.err
    assert "measuring the model before and after removing 1 head(s) on the test split" in captured.err
    assert result["heads_before"] == 8 and result["heads_after"] == 7
    assert result["parameters_after"] < result["parameters_before"]
    # The plain report counts heads, not the layers they came from (3 heads from the 2 layers).
    assert main(["prune", str(model_dir), "--out", str(pruned), "--heads", "3", "--overwrite"]) == 0
    removed = json.loads((pruned / "metrics.json").read_text())["pruning"]["removed"]
    assert "removed 3 of 8 heads" in capsys.readouterr().out and sum(map(len, removed.values())) == 3
    # A share that rounds to no head says so: the output is a copy, not a smaller model.
    assert main(["prune", str(model_dir), "--out", str(pruned), "--fraction", "0.05", "--overwrite"]) == 0
    assert f"note: --fraction 0.05 removes no head of 8: {pruned} is an unpruned copy" in capsys.readouterr().err

    for settings in (ServeSettings(runtime="onnx"), ServeSettings(runtime="onnx", quantized=True)):
        app = create_app(load_for_serving(onnx_dir, settings), settings)
        with TestClient(app) as client:
            answer = client.post("/v1/predict", json={"texts": ["the film was wonderful", "a dreadful plot"]})
            refused = client.post("/v1/explain", json={"text": "a"})
            info = client.get("/v1/model").json()
        assert [p["label"] for p in answer.json()["predictions"]] == ["pos", "neg"]
        assert refused.status_code == 400 and info["runtime"].startswith("onnx")
        # as stored, each path by its last name (the server's folders stay on the server)
        from attend.serve.app import _paths_named

        assert str(tmp_path) in (onnx_dir / "metrics.json").read_text() and str(tmp_path) not in json.dumps(info)
        stored = _paths_named(json.loads((onnx_dir / "metrics.json").read_text()))
        if settings.quantized:  # the figures of the model served: they were the fp32 model's beside "onnx-int8"
            int8 = stored["quantized"]["onnx"]["int8"]
            assert info["metrics"]["accuracy"] == int8["accuracy"] and info["metrics"]["runtime"] == "onnx-int8"
            assert info["metrics"]["fp32"] == stored
        else:
            assert info["metrics"] == stored


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "{missing}", "--onnx", "{tmp}/o"], "no such model directory"),
        (["prune", "{model}", "--out", "{tmp}/p"], "give --heads N or --fraction F\n"),  # "(not both)" of neither
        (["prune", "{model}", "--out", "{tmp}/p", "--heads", "1", "--fraction", "0.5"],
         "give --heads N or --fraction F (not both)"),
        (["prune", "{model}", "--out", "{tmp}/p", "--heads", "7"], "head"),
        (["quantize", "{missing}"], "no such"),
        # A value the API refuses is named as the flag that gave it (it had been "heads=-1 must be ...").
        (["prune", "{model}", "--out", "{tmp}/p", "--heads", "-1"], "error: --heads -1: must be a non-negative"),
        (["prune", "{model}", "--out", "{tmp}/p", "--fraction", "2"], "error: --fraction 2.0: must be in [0, 1)"),
        (["prune", "{model}", "--out", "{tmp}/p", "--fraction", "0.99"], "layers can go; give --fraction 0."),
        (["export", "{model}", "--onnx", "{tmp}/o", "--opset", "3"], "error: --opset 3: choose one of 18-"),
        (["quantize", "{model}", "--max-loss", "-1"], "error: --max-loss -1.0: an accuracy budget is in points"),
        (["quantize", "{model}", "--max-loss", "nan"], "error: --max-loss nan: an accuracy budget is in points"),
        (["serve", "{model}", "--runtime", "onnx", "--port", "1"], "model.onnx"),
    ],
)
def test_deploy_errors_are_one_line(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    filled = [a.format(missing=tmp_path / "none", tmp=tmp_path, model=model_dir) for a in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_quantize_and_prune_say_when_their_data_was_trained_on_and_take_its_columns(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The model's own training file scored as if held out, without a word; other column names could not be
    given (the error pointed to --text-col, which these verbs did not have)."""
    model = copy_model(trained["encoder"], tmp_path)
    assert main(["quantize", str(model), "--runtime", "torch", "--data", str(trained["data"])]) == 0
    captured = capsys.readouterr()
    assert "600 examples; 480 of them are texts the model trained on: not a held-out figure" in captured.out
    assert "quantizing " in captured.err and "with torch.ao dynamic int8, then measuring both" in captured.err
    assert main(["quantize", str(model), "--max-loss", "5", "--dev-data", str(trained["data"])]) == 0
    assert "budget 5 points on the " in (out := capsys.readouterr().out) and "480 of them are texts the model" in out
    rows = [{"body": r["text"], "topic": r["label"]} for r in planted_rows(30, seed=9)]
    renamed = write_csv(tmp_path / "renamed.csv", rows)
    assert main(["prune", str(model), "--out", str(tmp_path / "p"), "--heads", "1", "--data", str(renamed),
                 "--dev-data", str(renamed), "--text-col", "body", "--label-col", "topic", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert "renamed.csv (30 examples" in json.dumps(report)
    # The pruned directory's own figures stay those of its rebuilt test split, the baseline beside them (the
    # --data file's had replaced them, served as its accuracy); the file's are under "pruning".
    stored = json.loads((tmp_path / "p" / "metrics.json").read_text())
    original = json.loads((model / "metrics.json").read_text())
    assert stored["split"].startswith("test split of ") and stored["num_examples"] == original["num_examples"]
    assert stored["baseline"] == original["baseline"] and "renamed.csv (30 examples" in stored["pruning"]["data"]
    (model / "metrics.json").unlink()  # a source without metrics (or unreadable ones) prunes all the same
    assert main(["prune", str(model), "--out", str(tmp_path / "p2"), "--heads", "1"]) == 0
    assert "baseline" not in json.loads((tmp_path / "p2" / "metrics.json").read_text())


def test_quantize_says_what_it_does_before_its_silent_seconds(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A PyTorch directory is exported first, then quantized and measured: 48 s of e5 had passed without a word."""
    model = copy_model(trained["encoder"], tmp_path)
    assert main(["quantize", str(model)]) == 0
    err = capsys.readouterr().err
    assert f"exporting {model} to ONNX in {model / 'onnx'} first, then checking it against PyTorch" in err
    assert f"quantizing {model / 'onnx' / 'model.onnx'} to int8, then measuring both on the test split of " in err
    assert err.index("exporting") < err.index("quantizing")


def test_quantize_says_what_to_do_with_a_folder_of_other_files_where_it_exports(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = copy_model(trained["encoder"], tmp_path)
    (model / "onnx").mkdir()
    (model / "onnx" / "notes.txt").write_text("mine")
    assert main(["quantize", str(model)]) == 2
    err = capsys.readouterr().err
    assert "holds files attend did not write" in err and "attend export --onnx DIR" in err
    assert (model / "onnx" / "notes.txt").read_text() == "mine"


def test_columns_without_a_data_file_are_refused(trained: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["quantize", str(trained["encoder"]), "--runtime", "torch", "--text-col", "body"]) == 2
    assert "--text-col, --label-col and --label-sep read a --data / --dev-data file" in capsys.readouterr().err
    assert main(["quantize", str(trained["encoder"]), "--runtime", "torch", "--data", "rotten_tomatoes",
                 "--text-col", "body"]) == 2  # fmt: skip
    assert "a bundled dataset, have their own" in capsys.readouterr().err


def test_an_output_inside_a_model_directory_is_refused_before_anything_is_said(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], planted_csv: Path
) -> None:
    """`export --onnx MODEL/sub` (or prune, ensemble, train into one) had written a folder that then
    stopped `attend train --overwrite` of that model; export said "exporting ..." before refusing."""
    model = copy_model(trained["encoder"], tmp_path)
    for argv in (["export", str(model), "--onnx", str(model / "sub")],
                 ["export", str(trained["encoder_cls"]), "--onnx", str(model / "sub" / "deeper")],
                 ["prune", str(model), "--out", str(model / "pruned"), "--heads", "1"],
                 ["ensemble", str(model), str(trained["encoder_cls"]), "--out", str(model / "ens")],
                 ["train", str(planted_csv), "--model", "encoder", "--out", str(model / "again")],
                 # onnx/ is an export's alone: a pruned or trained model there was replaced by the next quantize
                 ["prune", str(model), "--out", str(model / "onnx"), "--heads", "1"],
                 ["train", str(planted_csv), "--model", "encoder", "--out", str(model / "onnx")]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        inside = ("is inside the member" if argv[0] == "ensemble" else "'s onnx/ folder, where its ONNX export goes"
                  if str(model / "onnx") in argv else "is inside the model directory")  # fmt: skip
        assert err.startswith("error: ") and inside in err and "exporting" not in err, err
        assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in trained["encoder"].iterdir())
    # A link is judged by where it leads, as it is written through (its own place had met a bare ValueError).
    from attend.io import ModelDirError, check_output_directory

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link_out").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "link_in").symlink_to(model / "sub")
    check_output_directory(tmp_path / "link_out")
    with pytest.raises(ModelDirError, match="is inside the model directory"):
        check_output_directory(tmp_path / "link_in")
    # A model put in onnx/ another way (by hand, or an earlier attend) is not replaced by quantize's export.
    shutil.copytree(trained["encoder_cls"], model / "onnx")
    assert main(["quantize", str(model), "--runtime", "onnx"]) == 2
    assert "holds a model that is no ONNX export, where quantize exports the model first" in capsys.readouterr().err
    assert (model / "onnx" / "model.safetensors").is_file()
    shutil.rmtree(model / "onnx")
    # attend's own onnx/ folder is where quantize exports, and train --overwrite replaces it with the model
    assert main(["export", str(model), "--onnx", str(model / "onnx"), "--json"]) == 0
    assert (model / "onnx" / "model.onnx").is_file()
    capsys.readouterr()
    assert main(["export", str(model), "--onnx", str(model), "--overwrite"]) == 2  # its source: said before work
    assert "exporting" not in capsys.readouterr().err
