"""ONNX export of a translator: encoder, cross keys/values and a static-cache decoder step, checked
against PyTorch (greedy outputs identical, every step's log-probabilities within tolerance)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from attend.cli import main
from attend.deploy import export_seq2seq
from attend.deploy.export import ExportParityError
from attend.deploy.export_seq2seq import GRAPHS, OnnxTranslator, export_translator
from attend.io import sha256_file
from attend.runtime import load

#: Sentences of the toy task (reverse the words) that the parity check did not choose.
SENTENCES = ["red cat", "sun dog blue green", "blue blue red", "cat", "dog sun red"]


@pytest.fixture(scope="module")
def exported(translator_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The translator exported once, through the CLI verb (``--json`` report)."""
    out = tmp_path_factory.mktemp("translator_onnx") / "onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", str(translator_dir), "--onnx", str(out), "--json"])
    assert code == 0
    return out, json.loads(printed.getvalue())


@pytest.fixture
def reuse_graphs(exported: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """Later exports copy the graphs already exported (a few seconds saved each) and check them again."""
    good, _ = exported

    def copy_graphs(model: object, directory: Path, *, opset: int | None) -> int:
        for name in GRAPHS:
            shutil.copyfile(good / name, directory / name)
        return 18

    monkeypatch.setattr(export_seq2seq, "_export_graphs", copy_graphs)


def test_export_writes_three_graphs_with_hashes_and_parity(exported: tuple[Path, dict], translator_dir: Path) -> None:
    out, report = exported
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "translation"
    assert set(config["onnx"]["files"]) == set(GRAPHS) == {"encoder.onnx", "cross_kv.onnx", "decoder_step.onnx"}
    for name, digest in config["onnx"]["files"].items():
        assert sha256_file(out / name) == digest == config["files"][name]
    assert (out / "tokenizer.json").is_file() and "tokenizer.json" in config["files"]
    assert not (out / "model.safetensors").exists()
    assert config["onnx"]["opset"] == report["opset"] and isinstance(report["opset"], int)
    assert "torch.onnx.export(dynamo=True)" in config["onnx"]["exporter"]
    parity = config["onnx"]["parity"]
    assert parity == report["parity"]
    assert parity["identical_outputs"] and parity["sentences"] == 16 and parity["source"].startswith("test split")
    assert parity["batch_sizes"] == [16, 1] and parity["steps_compared"] > 16
    assert 0 <= parity["max_abs_diff_log_probs"] <= parity["tolerance"] == 1e-4
    assert parity["max_abs_diff_sequence_log_prob"] <= 1e-4


def test_onnx_greedy_equals_pytorch(exported: tuple[Path, dict], translator_dir: Path) -> None:
    out, _ = exported
    onnx = OnnxTranslator(out, threads=1)
    torch_translator = load(translator_dir, runtime="torch")
    expected = [t.translation for t in torch_translator.translate(SENTENCES, beam=1)]
    assert [t.translation for t in onnx.translate(SENTENCES)] == expected
    assert [t.translation for t in onnx.translate(SENTENCES, batch_size=1)] == expected  # caches of other sizes
    assert onnx.translate(["red cat"])[0].translation == "cat red"  # and the model learned the task

    # Teacher-forced, every step of every sentence, batched and alone, against Seq2Seq.step.
    ids = onnx.encode(SENTENCES)
    outputs = [h.tokens for h in onnx.greedy(ids)]
    got = onnx.teacher_forced(ids, outputs)
    reference = export_seq2seq.torch_teacher_forced(torch_translator.model, ids, outputs)
    for ours, theirs, out_tokens in zip(got, reference, outputs, strict=True):
        assert ours.shape == theirs.shape == (len(out_tokens) + 1, onnx.target_tokenizer.vocab_size)
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    # An output stopped at the model's length limit has no </s> step: one step more had failed the
    # export's parity check inside ONNX Runtime ("GatherND ... invalid index found, index = 16").
    full = [[outputs[0][0]] * onnx.max_length, outputs[1]]
    got = onnx.teacher_forced(ids[:2], full)
    reference = export_seq2seq.torch_teacher_forced(torch_translator.model, ids[:2], full)
    assert [g.shape[0] for g in got] == [r.shape[0] for r in reference] == [onnx.max_length, len(outputs[1]) + 1]
    for ours, theirs in zip(got, reference, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_onnx_translations_say_what_pytorch_says(exported: tuple[Path, dict], translator_dir: Path) -> None:
    """A cut source and one of unknown letters are flagged as the PyTorch translator flags them (the
    ONNX one had answered bare strings), and no sentences is no translation (it had raised)."""
    onnx = OnnxTranslator(exported[0], threads=1)
    texts = ["red cat", "\U0001f431 " * 40, "blue " * 40, "\U0001f431"]
    got = onnx.translate(texts)
    expected = load(translator_dir, runtime="torch").translate(texts, beam=1)
    assert [(t.translation, t.truncated, t.finished, t.warning) for t in got] == [
        (t.translation, t.truncated, t.finished, t.warning) for t in expected]
    assert got[1].truncated and got[2].truncated and not got[0].truncated and got[0].warning is None
    assert got[3].warning is not None and got[3].warning.startswith("100% of the source's pieces are unknown")
    np.testing.assert_allclose([t.log_prob for t in got], [t.log_prob for t in expected], atol=1e-4)
    assert onnx.translate([]) == []
    with pytest.raises(ValueError, match="not one string"):
        onnx.translate("red cat")
    for bad in (0, -1, "8"):  # 0 and -1 had run as 1, "8" failed inside a comparison, as the PyTorch one refuses
        with pytest.raises(ValueError, match=f"batch_size={bad!r} must be a whole number of at least 1"):
            onnx.translate(["red cat"], batch_size=bad)


def test_decoder_step_rows_at_different_positions(exported: tuple[Path, dict], translator_dir: Path) -> None:
    """The step graph takes one position per row: a row one step behind matches its own step."""
    out, _ = exported
    onnx = OnnxTranslator(out, threads=1)
    ids = onnx.encode(SENTENCES[:2])
    outputs = [h.tokens for h in onnx.greedy(ids)]
    forced = onnx.teacher_forced(ids, outputs)
    state = onnx._start(ids, 6)
    onnx._step(state, np.array([2, 2]), 0)  # <s> for both rows
    # Row 0 reads its first token at position 1; row 1 re-reads <s> at position 0 (overwriting slot 0).
    session = onnx.sessions["decoder_step.onnx"]
    feed = {**state, "tokens": np.array([[outputs[0][0]], [2]]), "position": np.array([1, 0])}
    log_probs, _, _ = session.run(None, feed)
    np.testing.assert_allclose(log_probs[0], forced[0][1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(log_probs[1], forced[1][0], atol=1e-5, rtol=0)


@pytest.mark.usefixtures("reuse_graphs")
def test_failed_parity_writes_nothing(translator_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph off by 1e-3 per step is refused, and the output directory never appears."""
    step = OnnxTranslator._step

    def off_step(self: OnnxTranslator, state: dict, tokens: np.ndarray, position: int) -> np.ndarray:
        return step(self, state, tokens, position) + 1e-3

    monkeypatch.setattr(OnnxTranslator, "_step", off_step)
    out = tmp_path / "bad"
    with pytest.raises(ExportParityError, match="log-probabilities differ"):
        export_translator(translator_dir, out, texts=SENTENCES)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.usefixtures("reuse_graphs")
def test_cli_prints_a_report_and_refuses_classifier_options(
    translator_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    texts = tmp_path / "texts.csv"  # a translator's sentences, in its `source` column (it read `text`)
    texts.write_text("source\n" + "\n".join(SENTENCES) + "\n")
    out = tmp_path / "onnx"
    assert main(["export", str(translator_dir), "--onnx", str(out), "--texts-file", str(texts)]) == 0
    printed = capsys.readouterr().out
    assert "decoder_step.onnx" in printed and "greedy outputs identical" in printed
    assert json.loads((out / "config.json").read_text())["onnx"]["parity"]["source"] == "given texts"
    lines = tmp_path / "texts.txt"  # one per line, as `attend translate` reads (it was refused)
    lines.write_text("\n".join(SENTENCES) + "\n\n")
    assert main(["export", str(translator_dir), "--onnx", str(tmp_path / "txt"), "--texts-file", str(lines)]) == 0
    capsys.readouterr()
    named = tmp_path / "named.csv"  # --text-col text given is the column read, as the default's name (it read source)
    named.write_text("text\n" + "\n".join(SENTENCES) + "\n")
    assert main(["export", str(translator_dir), "--onnx", str(tmp_path / "named"), "--texts-file", str(named),
                 "--text-col", "text"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["export", str(translator_dir), "--onnx", str(tmp_path / "x"), "--attentions"]) == 2
    assert "--attentions" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_an_export_directory_given_to_translate_says_what_it_is(
    exported: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = exported
    assert main(["translate", str(out), "red cat"]) == 2
    err = capsys.readouterr().err
    # Before: "is not a complete model directory: model.safetensors is missing".
    assert "is an `attend export` directory (ONNX graphs, no PyTorch weights); this needs the model directory it " \
           "was exported from (a translator runs on PyTorch)" in err
