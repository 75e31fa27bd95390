"""A trained translator end to end: translate, evaluate, explain, alignments, faithfulness, POST /v1/translate."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from attend.cli import main
from attend.data.parallel import ParallelTexts, group_split
from attend.data.readers import DataError, read_table
from attend.io import ModelDirError
from attend.models.generation import GenerationOptions
from attend.runtime import Translator, load
from attend.serve.app import ServeSettings, create_app
from tests.conftest import TOY_TRANSLATION_ARGS, TOY_TRANSLATOR, reverse_pairs, run_cli, write_csv
from tests.explain.test_faithfulness_render_cli import _screenshot


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attend", *args], capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


def test_a_stopped_translate_says_which_lines_it_printed(translator_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Ctrl-C had said "interrupted" alone: which lines were done, and where to go on, unsaid."""
    from attend import cli

    calls = {"n": 0}
    real = Translator.translate

    def stop_second(self: Translator, texts: list[str], **options: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, texts, **options)

    monkeypatch.setattr(cli, "TRANSLATE_CHUNK", 2)
    monkeypatch.setattr(Translator, "translate", stop_second)
    lines = tmp_path / "in.txt"
    lines.write_text("red cat\nsun dog\nblue red\ncat cat\n", encoding="utf-8")
    assert main(["translate", str(translator_dir), "--input", str(lines), "--beam", "1", "--no-progress"]) == 130
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["cat red", "dog sun"]
    assert captured.err == ("interrupted: the first 2 of 4 lines are translated above; go on from input line 3 "
                            "(output line N is input line N's translation)\n")
    calls["n"] = 0
    assert main(["translate", str(translator_dir), "--input", str(lines), "--json", "--no-progress"]) == 130
    assert capsys.readouterr().err.startswith("interrupted: --json prints its list at the end: nothing was printed")


def test_the_training_test_split_is_scored_under_a_bar_and_in_the_same_batches(translator_dir: Path) -> None:
    """The test split's beam search after the last epoch had been minutes of silence: its batches now
    report their sizes to a bar, and are the batches they were (the same hypotheses)."""
    from attend.training.tasks.seq2seq import translate_batches

    translator = load(translator_dir, runtime="torch")
    ids, _ = translator._encode(["red cat", "sun dog blue", "green", "cat red sun dog"])
    options = translator.options(beam=2)
    sizes: list[int] = []
    counted = translate_batches(translator.model, ids, options, 4, done=sizes.append)
    plain = translate_batches(translator.model, ids, options, 4)
    assert sum(sizes) == 4 and len(sizes) == 2  # 4 sources a call, over a beam of 2: two calls of 2
    assert [h.tokens for h in counted] == [h.tokens for h in plain]


def test_an_error_raised_while_a_ctrl_c_was_handled_is_an_interrupt() -> None:
    """A Ctrl-C inside numpy's first import came back as a RuntimeError, a traceback."""
    from attend.cli import _raised_by_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("Error calling __set_name__") from None
    except RuntimeError as chosen:
        assert not _raised_by_interrupt(chosen)  # raised on purpose, from None: it says what it means
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("Error calling __set_name__")  # noqa: B904  (as numpy's import raises it)
    except RuntimeError as wrapped:
        assert _raised_by_interrupt(wrapped)


def test_translate_prints_one_line_per_input_line_and_nothing_else(translator_dir: Path, tmp_path: Path) -> None:
    done = _process("translate", str(translator_dir), "red cat sun", "dog blue")  # a real stdout: nothing else on it
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["sun cat red", "blue dog"]
    lines = tmp_path / "in.txt"
    lines.write_text("green dog\n\n  \nsun sun red\n", encoding="utf-8")
    done = run_cli("translate", str(translator_dir), "--input", str(lines), "--beam", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["dog green", "", "", "red sun sun", ""]
    piped = run_cli("translate", str(translator_dir), "--input", "-", stdin="cat red\n")
    assert piped.stdout == "red cat\n" and "note:" not in piped.stderr
    # A JSONL table on stdin is plain text: translated as it stands, and said (it had been in silence).
    piped = run_cli("translate", str(translator_dir), "--input", "-", stdin='{"source": "cat red"}\n')
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 1
    assert ("note: standard input is read as plain text, one sentence per line, and its lines are JSON objects; "
            "to translate a field of each, give them as a .jsonl file with --source-col") in piped.stderr
    # Lines end at "\n" (and "\r\n") only: a U+2028 or form feed inside a line does not split it.
    lines.write_bytes("red cat\r\nsun\u2028dog\x0cblue\ngreen dog\n".encode())
    done = run_cli("translate", str(translator_dir), "--input", str(lines), "--beam", "1")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 3, done.stdout
    assert done.stdout.split("\n")[0] == "cat red" and done.stdout.split("\n")[2] == "dog green"
    # A missing file or a folder: said as every verb says it (it had been the OS's "[Errno 2] ...").
    done = run_cli("translate", str(translator_dir), "--input", str(tmp_path / "nope.txt"))
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'nope.txt'}: no such file\n"
    done = run_cli("translate", str(translator_dir), "--input", str(tmp_path))
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path} is a directory, expected a data file\n"
    # An old Mac file's lines end in a bare "\r": its sentences had been one, translated as one.
    lines.write_bytes(b"red cat\nsun dog\rblue\r")
    done = run_cli("translate", str(translator_dir), "--input", str(lines))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {lines}: line 2 has a carriage return inside it: its lines end in a bare " \
                          "carriage return (an old Mac format); re-save it with \\n line endings\n"  # fmt: skip


def test_translate_reads_compressed_input(translator_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import gzip

    lines = tmp_path / "in.txt.gz"
    lines.write_bytes(gzip.compress(b"red cat sun\ndog blue\n"))
    assert main(["translate", str(translator_dir), "--input", str(lines), "--beam", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["sun cat red", "blue dog"]
    table = tmp_path / "in.csv.gz"
    table.write_bytes(gzip.compress(b"id,src\n1,dog blue\n"))
    assert main(["translate", str(translator_dir), "--input", str(table), "--source-col", "src"]) == 0
    assert capsys.readouterr().out == "blue dog\n"


def test_an_input_table_is_read_in_the_source_column_the_model_trained_on(
    translator_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    model = tmp_path / "model"  # as if trained with --source-col src (config.json's data records it)
    shutil.copytree(translator_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["data"]["source_col"] = "src"
    (model / "config.json").write_text(json.dumps(config))
    table = tmp_path / "in.csv"
    table.write_text("id,src\n1,dog blue\n", encoding="utf-8")
    assert main(["translate", str(model), "--input", str(table)]) == 0  # it said "has no column 'source'"
    assert capsys.readouterr().out == "blue dog\n"
    assert main(["explain", str(model), "--input", str(table), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == "dog blue"
    table.write_text("source\ndog blue\n", encoding="utf-8")  # given, the column read is the one named
    assert main(["translate", str(model), "--input", str(table), "--source-col", "source"]) == 0
    assert capsys.readouterr().out == "blue dog\n"
    assert main(["translate", str(model), "--input", str(table)]) == 2
    assert "has no column 'src'" in capsys.readouterr().err


def test_an_unknown_source_character_is_shown_as_itself(translator_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Characters the vocabulary lacks had all been shown as `<unk>`, none told from another."""
    source = "red  猫 cat\tsun"
    assert main(["translate", str(translator_dir), source, "--json"]) == 0
    alignment = json.loads(capsys.readouterr().out)[0]["alignment"]
    tokens, spans = alignment["source_tokens"], alignment["source_spans"]
    assert len(spans) == len(tokens) and tokens[-1] == "</s>" and spans[-1] is None
    assert [source[a:b] for (a, b), token in zip(spans[:-1], tokens, strict=False) if token == "<unk>"] == ["猫"]
    words = [(source[a:b], token) for (a, b), token in zip(spans[:-1], tokens, strict=False)
             if token.strip() not in ("", "<unk>")]  # fmt: skip
    # every other piece spells its own characters (a word's first with the space before it, as given)
    assert words == [("red", " red"), (" cat", " cat"), ("\tsun", " sun")]
    page = tmp_path / "page.html"
    assert main(["explain", str(translator_dir), source, "--html", str(page)]) == 0
    cells = re.findall(r'<span class="(tok src[^"]*)" data-j="\d+" tabindex="0"[^>]*>([^<]*)<', page.read_text("utf-8"))
    # shown as it is spelt, the model's token named in its title; a piece that goes on with a word drawn
    # against what it continues (each had stood apart, "y o u"), one that starts a word apart
    assert 'title="猫 (the model saw &lt;unk&gt;)">猫</span>' in page.read_text(encoding="utf-8")
    assert [cell for cell in cells if cell[1].strip()] == [("tok src", " red"), ("tok src joined", "猫"),
                                                           ("tok src", " cat"), ("tok src", " sun"),
                                                           ("tok src", "&lt;/s&gt;")]
    assert main(["explain", str(translator_dir), source, "--top", "20"]) == 0
    assert "<unk>" not in capsys.readouterr().out


def test_translate_json_has_scores_and_alignments(translator_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["translate", str(translator_dir), "red cat sun", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["source"] == "red cat sun" and row["translation"] == "sun cat red"
    assert row["score"] < 0 and row["finished"] is True
    alignment = row["alignment"]
    assert alignment["source_tokens"] == [" red", " cat", " sun", "</s>"]
    assert alignment["output_tokens"] == [" sun", " cat", " red", "</s>"]
    weights = np.asarray(alignment["alignment"])
    assert weights.shape == (4, 4) and np.allclose(weights.sum(1), 1.0, atol=1e-3)
    # A blank input line has the same fields, empty (it lacked log_prob, truncated and finished).
    lines = tmp_path / "in.txt"
    lines.write_text("red cat\n\n", encoding="utf-8")
    assert main(["translate", str(translator_dir), "--input", str(lines), "--json"]) == 0
    full, blank = json.loads(capsys.readouterr().out)
    assert set(blank) == set(full) and blank["translation"] == "" and blank["log_prob"] is None


def test_length_penalty_ranks_beams_and_is_checked(translator_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # score = log-probability / length ** penalty: 0 ranks by the raw log-probability
    for penalty in (0.0, 2.0):
        assert main(["translate", str(translator_dir), "red cat sun", "--json", "--length-penalty", str(penalty)]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["translation"] == "sun cat red"
        length = len(row["alignment"]["output_tokens"])  # the output's pieces and </s>
        assert row["score"] == pytest.approx(row["log_prob"] / length**penalty, abs=1e-4)
    data = translator_dir.parent / "pairs.csv"
    assert main(["evaluate", str(translator_dir), str(data), "--json", "--length-penalty", "0.5"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["decoding"] == "beam 4, length penalty 0.5" and found["length_penalty"] == 0.5
    for value in ("-1", "nan", "1000"):  # 1000: length ** 1000 would overflow
        done = run_cli("translate", str(translator_dir), "red", "--length-penalty", value)
        assert done.returncode == 2 and f"--length-penalty {value}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    with pytest.raises(ValueError, match=r"length_penalty=-0\.5"):
        GenerationOptions(length_penalty=-0.5)
    translator = load(translator_dir)  # a TypeError had named GenerationOptions.__init__; maps alone was dropped
    with pytest.raises(ValueError, match=r"nonsense: not a decoding option \(they are: .*length_penalty"):
        translator.translate(["red"], nonsense=3)
    with pytest.raises(ValueError, match=r"maps=True keeps each layer's and head's alignment map: give alignments"):
        translator.translate(["red"], maps=True)


def test_alignment_of_a_reversal_points_at_the_mirrored_word(translator_dir: Path) -> None:
    translator = load(translator_dir)
    assert isinstance(translator, Translator)
    (result,) = translator.translate(["red cat sun dog"], alignments=True, maps=True)
    assert result.alignment is not None and result.alignment.layers
    top = result.alignment.weights[:4, :4].argmax(1).tolist()  # output word i came from source word 3 - i
    assert top == [3, 2, 1, 0], result.alignment.weights.round(2)
    # Stopped at the length limit: no </s> row (it had ended in a </s> the model never wrote).
    (cut,) = translator.translate(["red cat sun dog"], alignments=True, max_length_a=0.0, max_length_b=2)
    assert cut.finished is False and cut.alignment is not None
    assert cut.alignment.output_tokens == [" dog", " sun"] and cut.alignment.weights.shape[0] == 2
    assert len(cut.alignment.output_probabilities) == 2


def test_an_output_stopped_at_the_models_length_limit_is_aligned(translator_dir: Path) -> None:
    """An output of ``max_length`` tokens (stopped there, no ``</s>``) had been teacher-forced one
    position past the decoder's table: "the output has 17 tokens, more than max_length=16", for
    ``--json``, ``explain``, ``faithfulness`` and a served alignment, the whole batch lost."""
    translator = load(translator_dir, runtime="torch")
    limit = translator.model.config.max_length
    runaway, normal = translator.translate(["red cat blue", "sun dog"], alignments=True, min_length=limit,
                                           max_length_b=limit)  # fmt: skip
    assert not runaway.finished and len(runaway.output_ids) == limit
    assert runaway.alignment.weights.shape[0] == limit and "</s>" not in runaway.alignment.output_tokens
    assert normal.alignment is not None and normal.alignment.weights.shape[0] == len(normal.output_ids) + 1 - (
        not normal.finished)
    assert translator.sentence_faithfulness(runaway)["tokens"] == limit


def test_faithfulness_gap_is_positive_on_the_reversal(translator_dir: Path) -> None:
    translator = load(translator_dir)
    assert isinstance(translator, Translator)
    report = translator.faithfulness([r["source"] for r in reverse_pairs(30, seed=7)], seed=0)
    assert report["tokens"] > 60
    assert report["gap"] > 0.1 and report["top_beats_random"] > 0.5, report
    assert report["sentences"] == 30


def test_faithfulness_verb_and_explain_give_a_translators_gap(translator_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # `attend faithfulness` had refused a translator ("use attend translate", which gives no gap), and
    # explain filled no alignment's faithfulness: the check was reachable from Python alone.
    translator = load(translator_dir)
    assert isinstance(translator, Translator)
    sources = [r["source"] for r in reverse_pairs(12, seed=3)]
    data = write_csv(tmp_path / "own.csv", [{"en": s, "xx": "-"} for s in sources])
    assert main(["faithfulness", str(translator_dir), str(data), "--source-col", "en", "--limit", "0", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found == pytest.approx(translator.faithfulness(sources, seed=0) | {"texts": 12})
    assert main(["faithfulness", str(translator_dir), str(data), "--text-col", "en", "--limit", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == found  # --text-col names the source, as explain reads it
    assert found["gap"] > 0.1 and found["sentences"] == 12
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(sources[:5]) + "\n\n", encoding="utf-8")  # a sentence a line; the blank one skipped
    assert main(["faithfulness", str(translator_dir), str(lines), "--limit", "3", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("alignment faithfulness over 3 of 3 sentences") and "gap +" in said, said
    # In a log the bar's last line stays: it had been its first, "0%", alone, though every sentence was scored.
    assert main(["faithfulness", str(translator_dir), str(lines), "--limit", "3"]) == 0
    assert "faithfulness: 100%|██████████| 3/3" in capsys.readouterr().err
    for extra, message in [(["--methods", "attention"], "--methods: for classifiers only"),
                           (["--text-col", "en", "--source-col", "en"], "each names the translator's source column"),
                           (["--text-col", "en"], "--text-col en: "),  # a text file has no columns
                           (["--beam", "0"], "--beam 0: must be from 1 to 100"),
                           (["--beam", "100000"], "--beam 100000: must be from 1 to 100")]:  # fmt: skip
        assert main(["faithfulness", str(translator_dir), str(lines), *extra]) == 2
        assert message in capsys.readouterr().err
    # explain: each sentence's own test, printed, in --json and on the page.
    html = tmp_path / "page.html"
    assert main(["explain", str(translator_dir), sources[0], "--json", "--html", str(html)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    (result,) = translator.translate([sources[0]], alignments=True)
    assert row["alignment"]["faithfulness"] == pytest.approx(translator.sentence_faithfulness(result))
    assert "Faithfulness</h4>" in html.read_text(encoding="utf-8")
    assert main(["explain", str(translator_dir), sources[0]]) == 0
    assert "faithfulness: hiding each output token's top-aligned source token" in capsys.readouterr().out


def test_the_alignment_page_draws_the_heatmaps_its_layers_option_names(translator_dir: Path, tmp_path: Path) -> None:
    # The default page had drawn no heatmap, and --html-layers all only the average (its maps were not computed).
    heads = TOY_TRANSLATOR["num_heads"]
    last = TOY_TRANSLATOR["decoder_layers"] - 1
    for layers, expected in [("last", 1 + heads + 1), ("all", 1 + (heads + 1) * (last + 1))]:
        page = tmp_path / f"{layers}.html"
        assert main(["explain", str(translator_dir), "red cat sun", "--html", str(page), "--html-layers", layers]) == 0
        captions = re.findall(r"<figcaption>([^<]*)", page.read_text(encoding="utf-8"))
        assert len(captions) == expected and captions[0] == "average", captions
        if layers == "last":
            assert all(c == "average" or c.startswith(f"layer {last} ") for c in captions), captions


def test_evaluate_draws_a_bar_over_the_sentences_and_scores_them_as_in_one_piece(
    translator_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test split of 4,000 sentences is minutes of beam search here; it had been minutes of silence."""
    import attend.runtime.base

    data = write_csv(tmp_path / "pairs.csv", reverse_pairs(30))
    whole = load(translator_dir).evaluate(data, beam=2)
    monkeypatch.setattr(attend.runtime.base, "EVALUATE_CHUNK", 8)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    monkeypatch.setenv("TQDM_DELAY", "0")
    real, sizes = Translator.translate, []

    def counted(self, texts, **options):  # type: ignore[no-untyped-def]
        sizes.append(len(texts))
        return real(self, texts, **options)

    monkeypatch.setattr(Translator, "translate", counted)
    done = run_cli("evaluate", str(translator_dir), str(data), "--beam", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == pytest.approx(whole)  # in chunks of 8, the same figures
    assert sizes == [8, 8, 8, 6] and whole["sentences"] == 30
    assert f"evaluate: 100%|██████████| {whole['sentences']}/{whole['sentences']}" in done.stderr
    done = run_cli("evaluate", str(translator_dir), str(data), "--beam", "2", "--no-progress")
    assert done.returncode == 0 and "evaluate:" not in done.stderr


def test_evaluate_scores_only_the_held_out_split_of_the_training_file(translator_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = translator_dir.parent / "pairs.csv"
    assert main(["evaluate", str(translator_dir), str(data), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    metrics = json.loads((translator_dir / "metrics.json").read_text())
    assert found["pairs_used"].startswith("test split") and found["sentences"] == metrics["sentences"]
    assert found["bleu"] == pytest.approx(metrics["bleu"])
    other = write_csv(tmp_path / "other.csv", [{"source": "red cat", "target": "cat red"},
                                               {"source": "sun dog blue", "target": "dog sun blue"}])  # fmt: skip
    assert main(["evaluate", str(translator_dir), str(other), "--json", "--beam", "1"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["sentences"] == 2 and found["pairs_used"] == "all" and 0 < found["chrf"] < 100
    # Other columns of the training file are not its test split (it was rebuilt from them, and so named).
    capsys.readouterr()
    assert main(["evaluate", str(translator_dir), str(data), "--source-col", "target", "--target-col", "source"]) == 2
    assert "is the model's training data, read as 'source' -> 'target'" in capsys.readouterr().err
    # The training file with a row added is new data, scored whole: how much of it was learned is said.
    grown = write_csv(tmp_path / "grown.csv", [*reverse_pairs(2000), {"source": "blue sun", "target": "sun blue"}])
    assert main(["evaluate", str(translator_dir), str(grown), "--json", "--beam", "1"]) == 0
    captured = capsys.readouterr()
    found = json.loads(captured.out)
    trained_on = json.loads((translator_dir / "config.json").read_text())["data"]["pairs"]["train"]
    assert found["pairs_used"] == "all" and found["training_overlap"] >= trained_on
    said = f"warning: {found['training_overlap']} of the 2001 examples scored are sources of the model's"
    assert said in captured.err
    # int8 is for classifiers (it was ignored without a word).
    assert main(["evaluate", str(translator_dir), str(other), "--int8"]) == 2
    assert "--int8: translators run on PyTorch in float32" in capsys.readouterr().err


def test_training_split_rebuilds_the_splits_training_made(translator_dir: Path, tmp_path: Path) -> None:
    from attend.training.tasks.seq2seq import load_parallel_data

    translator = load(translator_dir)
    assert isinstance(translator, Translator)
    pairs = load_parallel_data(translator_dir.parent / "pairs.csv")
    parts = {name: translator.training_split(pairs, name) for name in ("train", "dev", "test")}
    recorded = translator.config["data"]["pairs"]
    assert {name: len(part) for name, part in parts.items()} == recorded
    assert sum(recorded.values()) == len(pairs)
    # Every copy of a source sentence is in one split.
    seen = {name: set(part.sources) for name, part in parts.items()}
    assert not (seen["train"] & seen["dev"] or seen["train"] & seen["test"] or seen["dev"] & seen["test"])
    # Data with a split column was split by it, as training splits it.
    rows = [{"source": "red cat", "target": "cat red", "part": "test"},
            {"source": "sun dog", "target": "dog sun", "part": "train"}]  # fmt: skip
    marked = load_parallel_data(write_csv(tmp_path / "marked.csv", rows), split_col="part")
    assert translator.training_split(marked, "test").sources == ["red cat"]
    # The split scheme training recorded is the one rebuilt: a model from before it was recorded (1)
    # keeps the split it made of sources in two Unicode forms; one from a newer attend is refused.
    assert translator.config["data"]["split_scheme"] == 2
    twins = [text for i in range(40) for text in (f"café {i}", unicodedata.normalize("NFD", f"café {i}"))]
    pairs = ParallelTexts(sources=twins, targets=twins)
    training = translator.config["training"]
    fractions = {"dev_fraction": training["dev_fraction"], "test_fraction": training["test_fraction"]}
    for scheme in (1, 2):
        translator.config["data"]["split_scheme"] = scheme
        test = translator.training_split(pairs, "test").sources
        made = group_split(twins, **fractions, seed=training["seed"], scheme=scheme)
        assert test == [twins[i] for i, part in enumerate(made) if part == "test"]
    translator.config["data"]["split_scheme"] = 3
    with pytest.raises(ModelDirError, match=r"its split scheme 3 is none this attend knows \(1 to 2"):
        translator.training_split(pairs, "test")


def test_explain_writes_html_png_and_json(translator_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    html, png = tmp_path / "align.html", tmp_path / "pngs"
    code = main(["explain", str(translator_dir), "red cat sun", "green dog", "--html", str(html), "--png", str(png),
                 "--json"])  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["translation"] for r in rows] == ["sun cat red", "dog green"]
    assert all("links" in r["alignment"] for r in rows)
    assert {p.name for p in png.glob("alignment-*.png")} >= {"alignment-000.png", "alignment-001.png"}
    # Again with one sentence: the second sentence's pictures of the first run go (they had stayed).
    assert main(["explain", str(translator_dir), "red cat sun", "--png", str(png), "--json"]) == 0
    assert capsys.readouterr().out and not list(png.glob("alignment-001*.png"))
    assert (png / "alignment-000.png").is_file()
    dom = _screenshot(html, tmp_path / "shot.png")
    for token in ("red", "cat", "sun", "green", "dog"):
        assert token in dom
    image = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(int)
    assert (image.sum(-1) < 200).sum() > 300, "no text visible in the screenshot"
    assert main(["explain", str(translator_dir), "red cat sun"]) == 0
    assert "sun<-sun" in capsys.readouterr().out.replace(" ", "")
    assert main(["explain", str(translator_dir), "red cat sun", "--top", "2"]) == 0  # two links (it printed 8)
    assert capsys.readouterr().out.splitlines()[2].count("<-") == 2
    assert main(["explain", str(translator_dir), "red cat sun", "--top", "0"]) == 2  # an empty line before
    assert "--top 0: must be at least 1" in capsys.readouterr().err
    # Sentences from a text file, as `attend translate` reads them; classifier options are refused, not ignored.
    (tmp_path / "in.txt").write_text("red cat sun\n", encoding="utf-8")
    (tmp_path / "in.ndjson").write_text('{"source": "red cat sun"}\n', encoding="utf-8")  # a table, not text
    assert main(["translate", str(translator_dir), "--input", str(tmp_path / "in.ndjson"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == "red cat sun"
    assert main(["explain", str(translator_dir), "--input", str(tmp_path / "in.txt")]) == 0
    assert "sun<-sun" in capsys.readouterr().out.replace(" ", "")
    assert main(["explain", str(translator_dir), "red cat sun", "--layer", "9", "--head", "1"]) == 2
    assert "--layer, --head: for classifiers only" in capsys.readouterr().err
    assert main(["explain", str(translator_dir), "red cat sun", "--method", "rollout"]) == 2  # the default, named
    assert "--method: for classifiers only" in capsys.readouterr().err


def test_bad_input_is_a_clear_error(translator_dir: Path, tmp_path: Path) -> None:
    for args, message in [
        (["translate", str(translator_dir)], "give sentences to translate"),
        (["translate", str(translator_dir), "red", "--beam", "0"], "--beam 0"),
        (["translate", str(translator_dir), "   "], "text 1 is an empty text"),
    ]:
        done = run_cli(*args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    bad = tmp_path / "bad.csv"
    bad.write_text("english,german\nhello,hallo\n", encoding="utf-8")
    done = run_cli("translate", str(translator_dir), "--input", str(bad))
    assert done.returncode == 2 and "choose the column with --source-col" in done.stderr, done.stderr
    plain = tmp_path / "lines.txt"
    plain.write_text("red cat\n", encoding="utf-8")
    done = run_cli("translate", str(translator_dir), "--input", str(plain), "--source-col", "en")  # was ignored
    assert done.returncode == 2 and "--source-col en: " in done.stderr and "read as plain text" in done.stderr
    plain.write_bytes(b"red cat\nblue \xff dog\n")  # the line is named, as the table readers name it
    done = run_cli("translate", str(translator_dir), "--input", str(plain))
    assert done.returncode == 2 and "lines.txt: line 2 is not UTF-8 text (byte 0xff at offset 13)" in done.stderr
    for given, name in ((str(plain), str(plain)), ("-", "standard input")):  # translated as if it were not there
        plain.write_bytes(b"red cat\nblue \x00 dog\n")
        done = run_cli("translate", str(translator_dir), "--input", given, stdin=plain.read_bytes())
        assert done.returncode == 2 and done.stdout == ""
        assert f"error: {name}: line 2 holds NUL bytes: this is a binary file, not text" in done.stderr
    done = run_cli("train", str(bad), "--model", "seq2seq", "--out", str(tmp_path / "m"))
    assert done.returncode == 2 and "'source'" in done.stderr and "english" in done.stderr, done.stderr
    assert not (tmp_path / "m").exists()
    labelled = write_csv(tmp_path / "labelled.csv", [{"text": "red cat", "label": "a"}])
    done = run_cli("faithfulness", str(translator_dir), str(labelled))  # a translator's, on a table of no source
    assert done.returncode == 2 and "choose the column with --source-col" in done.stderr, done.stderr
    # Before its input is read too (it had been told the input lacked a 'text' column).
    for verb in (["predict", str(translator_dir), "red cat"], ["predict", str(translator_dir), "--input", str(bad)]):
        done = run_cli(*verb)  # a classifier's verb: a one-line error, not an AttributeError
        assert done.returncode == 2 and "holds a translation model, not a text classifier: use `attend translate`" \
            in done.stderr and "Traceback" not in done.stderr, done.stderr
    # Verbs only classifiers have: said so (they had pointed to `attend translate`, which neither quantizes nor prunes)
    for verb in (["quantize", str(translator_dir)], ["prune", str(translator_dir), "--out", str(tmp_path / "p"),
                                                    "--heads", "1"]):  # fmt: skip
        done = run_cli(*verb)
        assert done.returncode == 2 and f"holds a translation model: `attend {verb[0]}` is for text classifiers only " \
            "(translators run on PyTorch in float32" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_cli_trains_a_translator_with_the_usual_options(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "pairs.csv", [{"en": r["source"], "xx": r["target"]} for r in reverse_pairs(200)])
    config = tmp_path / "config.json"
    training = {k: v for k, v in TOY_TRANSLATION_ARGS.items() if k not in ("progress", "epochs")}
    config.write_text(json.dumps({"model": TOY_TRANSLATOR, "training": training}), encoding="utf-8")
    done = run_cli("train", str(data), "--model", "seq2seq", "--out", str(tmp_path / "m"), "--config", str(config),
                   "--epochs", "1", "--source-col", "en", "--target-col", "xx", "--schedule", "inverse_sqrt",
                   "--label-smoothing", "0.1", "--time-budget", "20", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "translation-memory floor" in done.stdout and "BLEU" in done.stdout
    assert re.search(r"the model is \d+\.\d\d BLEU (above|BELOW) it", done.stdout)  # not "-59.02 below it"
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["training"]["schedule"] == "inverse_sqrt" and saved["training"]["label_smoothing"] == 0.1
    assert saved["training"]["average_checkpoints"] == 5  # the translation defaults under the user's options
    assert saved["training"]["time_budget"] == 20.0 and json.loads((tmp_path / "m" / "metrics.json").read_text())[
        "planned_epochs"] == 1  # fmt: skip


@pytest.mark.parametrize("named", [[], ["--model", "seq2seq"]])
def test_resume_alone_continues_an_interrupted_translator_with_its_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], named: list[str]
) -> None:
    """`attend train DATA --out DIR --resume` is enough, as the README says; before, a translator's
    run fell through to --model auto, which said there was nothing to resume, and with --model
    seq2seq the translation defaults read as options changed from the interrupted run's."""
    from attend.cli import main

    data = write_csv(tmp_path / "pairs.csv", [{"en": r["source"], "xx": r["target"]} for r in reverse_pairs(200)])
    config = tmp_path / "config.json"
    training = {**{k: v for k, v in TOY_TRANSLATION_ARGS.items() if k != "progress"}, "epochs": 2}
    config.write_text(json.dumps({"model": TOY_TRANSLATOR, "training": {**training, "stop_after_steps": 3}}))
    out = tmp_path / "m"
    stopped = main(["train", str(data), "--model", "seq2seq", "--out", str(out), "--config", str(config),
                    "--source-col", "en", "--target-col", "xx", "--no-progress"])  # fmt: skip
    assert stopped == 130 and not out.exists()
    capsys.readouterr()
    # An option given again with another value is refused, also one equal to a classifier's default
    # (--epochs 5 read as left out, and the run went on to its own 2 epochs without a word).
    assert main(["train", str(data), "--out", str(out), "--resume", "--no-progress", "--epochs", "5", *named]) == 2
    assert "epochs=5 (the interrupted run had 2)" in capsys.readouterr().err
    resumed = main(["train", str(data), "--out", str(out), "--resume", "--no-progress", *named])
    assert resumed == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["task"] == "translation" and saved["model"]["dim"] == TOY_TRANSLATOR["dim"]
    assert "resuming from epoch 1, step 3" in capsys.readouterr().err
    # Its training file is evaluated through the columns training read (before: "has no column 'source'").
    assert main(["evaluate", str(out), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs_used"] == "test split (rebuilt as in training)"
    # Columns given are the columns read, even when they are the defaults' names (they read as left out).
    assert main(["evaluate", str(out), str(data), "--source-col", "source", "--target-col", "xx"]) == 2
    assert "--source-col source --target-col xx would score other pairs" in capsys.readouterr().err
    # Another file with the same column names is read through them too, as translate reads an --input
    # table (it was "has no column 'source'" unless both flags were given again).
    rows = [{"en": r["source"], "xx": r["target"]} for r in reverse_pairs(8, seed=5)]
    fresh = write_csv(tmp_path / "fresh.csv", rows)
    assert main(["evaluate", str(out), str(fresh), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["pairs_used"] == "all" and scored["sentences"] == 8


def test_service_translates_micro_batched_with_alignments(translator_dir: Path) -> None:
    app = create_app(load(translator_dir), ServeSettings(max_batch=8, max_wait_ms=20, max_texts=4, max_chars=100))
    with TestClient(app, raise_server_exceptions=False) as client:
        one = client.post("/v1/translate", json={"texts": ["red cat sun"], "alignment": True})
        assert one.status_code == 200, one.text
        (answer,) = one.json()["translations"]
        assert answer["translation"] == "sun cat red" and "alignment" in answer
        assert client.post("/v1/translate", json={"texts": [""]}).status_code == 422
        assert client.post("/v1/translate", json={"texts": ["a"], "beam": 0}).status_code == 422
        for penalty in (-1, "nan", 11, "1"):  # a string, as "beam": "4" is (it was coerced)
            assert client.post("/v1/translate", json={"texts": ["a"], "length_penalty": penalty}).status_code == 422
        assert client.post("/v1/translate", json={"texts": ["a"], "alignment": "yes"}).status_code == 422
        raw = client.post("/v1/translate", json={"texts": ["red cat sun"], "length_penalty": 0}).json()
        (ranked,) = raw["translations"]
        assert ranked["score"] == pytest.approx(ranked["log_prob"], abs=1e-4)  # penalty 0: the raw log-probability
        assert client.post("/v1/translate", json={"texts": ["x"] * 5}).status_code == 422
        # One "text", as /v1/predict takes it (it was refused), and never both or neither.
        single = client.post("/v1/translate", json={"text": "red cat sun", "beam": 1})
        assert single.status_code == 200 and single.json()["translations"][0]["translation"] == "sun cat red"
        assert client.post("/v1/translate", json={"text": "a", "texts": ["b"]}).status_code == 422
        assert "text is an empty text" in client.post("/v1/translate", json={"text": " "}).text
        info = client.get("/v1/model").json()
        assert info["task"] == "translation"
        # The defaults a request without options gets, and the beam a request may ask for (both were left out).
        assert info["generation"] == load(translator_dir).generation.__dict__ and info["limits"]["max_beam"] == 16
        metrics = client.get("/metrics").text
        assert "/v1/translate" in metrics

    async def many() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            texts = [" ".join(r["source"].split()) for r in reverse_pairs(12, seed=3)]
            # concurrent requests with different options share batches but get their own decoding
            return await asyncio.gather(*[client.post("/v1/translate", json={"texts": [t], "beam": 2,
                                                                             "length_penalty": i % 3})
                                          for i, t in enumerate(texts)])  # fmt: skip

    with TestClient(app):
        responses = asyncio.run(many())
    assert all(r.status_code == 200 for r in responses)
    for i, response in enumerate(responses):
        (found,) = response.json()["translations"]
        assert found["finished"]
        length = len(found["translation"].split()) + 1  # the toy vocabulary: one piece per word, and </s>
        assert found["score"] == pytest.approx(found["log_prob"] / length ** (i % 3), abs=1e-4), i


@pytest.mark.processes
def test_torchrun_two_processes_train_a_translator_as_one_does(tmp_path: Path) -> None:
    import os

    data = write_csv(tmp_path / "pairs.csv", reverse_pairs(600))
    config = tmp_path / "config.json"
    training = {k: v for k, v in TOY_TRANSLATION_ARGS.items() if k not in ("progress", "epochs")}
    config.write_text(json.dumps({"model": TOY_TRANSLATOR, "training": training}), encoding="utf-8")
    common = ["train", str(data), "--model", "seq2seq", "--config", str(config), "--epochs", "6", "--no-progress"]
    single = run_cli(*common, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "attend"]  # fmt: skip
    ddp = subprocess.run([*launcher, *common, "--out", str(tmp_path / "ddp")], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=False)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count("model written to") == 1  # only rank 0 reports
    one = json.loads((tmp_path / "single" / "metrics.json").read_text())
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # Learned (well above the translation-memory floor), and to the quality one process reaches.
    assert two["bleu"] > two["baseline_tm_bleu"] + 20, two
    assert abs(two["chrf"] - one["chrf"]) < 5 and abs(two["bleu"] - one["bleu"]) < 8, (one, two)


def test_the_beam_limit_is_checked_before_work_and_a_wider_saved_beam_still_loads(
    translator_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """explain took any --beam (translate refused it); a directory saved with a beam over the limit,
    valid before it, loads decoding at the limit."""
    from tests.conftest import copy_model

    assert main(["explain", str(translator_dir), "red cat", "--beam", "101"]) == 2
    assert "--beam 101: must be from 1 to 100" in capsys.readouterr().err
    wide = copy_model(translator_dir, tmp_path)
    config = json.loads((wide / "config.json").read_text())
    config["generation"] = {**config.get("generation", {}), "beam": 500}
    (wide / "config.json").write_text(json.dumps(config))
    translator = load(wide)
    assert isinstance(translator, Translator) and translator.generation.beam == 100
    # Served, its default is the widest beam a request may ask for (it had decoded at 100, shown beside
    # max_beam 16, and a client asking for that beam got a 422).
    seen: list[int] = []
    real = translator.translate
    translator.translate = lambda texts, **kw: seen.append(kw["beam"]) or real(texts, **kw)  # type: ignore[method-assign]
    with TestClient(create_app(translator, ServeSettings(max_texts=4, max_wait_ms=5))) as client:
        info = client.get("/v1/model").json()
        assert info["generation"]["beam"] == info["limits"]["max_beam"] == 16
        assert client.post("/v1/translate", json={"text": "red cat"}).status_code == 200
    assert seen == [16]


def test_a_source_of_unknown_letters_is_all_unknown(translator_dir: Path) -> None:
    """The bare word mark that begins a word of unknown letters, and </s>, are not pieces of the
    text: "🐱🐶🐭" read 75 % unknown, "🐱" 50 %."""
    translator = load(translator_dir)
    assert isinstance(translator, Translator)
    for text in ("🐱🐶🐭", "🐱"):
        (result,) = translator.translate([text], beam=1)
        assert result.warning is not None and result.warning.startswith("100% of the source's pieces are unknown")
    (known,) = translator.translate(["red cat"], beam=1)
    assert known.warning is None
    # Both said where both hold: the cut had gone unsaid beside the unknown pieces.
    (both,) = translator.translate(["🐱 " * 40], beam=1)
    assert both.truncated and both.warning is not None
    assert both.warning.startswith("100% of the source's pieces are unknown")
    assert both.warning.endswith(f"; the source was cut to its first {translator.max_length} tokens")


def test_warnings_name_the_files_own_line_and_explain_skips_blank_lines(
    translator_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_csv(tmp_path / "in.csv", [{"source": "red cat"}, {"source": "🐱🐶"}])
    assert main(["translate", str(translator_dir), "--input", str(table), "--beam", "1"]) == 0
    assert capsys.readouterr().err.startswith("line 3: 100% of the source's pieces")  # its line (was "line 2")
    assert main(["translate", str(translator_dir), "red cat", "🐱", "--beam", "1"]) == 0
    assert capsys.readouterr().err.startswith("text 2: ")  # arguments are texts, as in errors
    lines = tmp_path / "in.txt"
    lines.write_text("red cat\n\n   \ngreen dog\n", encoding="utf-8")
    assert main(["explain", str(translator_dir), "--input", str(lines), "--json"]) == 0  # was "text 2 is empty"
    assert [r["source"] for r in json.loads(capsys.readouterr().out)] == ["red cat", "green dog"]
    # A table's cell of two lines is shown on one, as the model reads it (its block's layout had broken).
    two = write_csv(tmp_path / "two.csv", [{"source": "red cat\nsun dog"}])
    assert main(["explain", str(translator_dir), "--input", str(two)]) == 0
    assert capsys.readouterr().out.startswith("red cat sun dog\n  -> ")


def test_an_empty_output_is_warned_of(translator_dir: Path) -> None:
    """English given to a model that translates from another language came back empty, with no
    warning: it looked like the blank line a blank input gives."""
    from attend.models.generation import Hypothesis
    from attend.runtime.translator import translations

    translator = load(translator_dir)
    ids, cut = translator._encode(["red cat", "sun dog"])
    hyps = [Hypothesis([], -0.1, -0.1, True), Hypothesis(ids[1][:-1], -0.2, -0.1, True)]
    empty, written = translations(["red cat", "sun dog"], ids, cut, hyps, translator.source_tokenizer,
                                  translator.target_tokenizer, translator.max_length)  # fmt: skip
    assert empty.translation == "" and empty.warning == (
        "the model wrote nothing for it: is it in the language the model translates from?")  # fmt: skip
    assert written.translation == "sun dog" and written.warning is None


def test_translate_from_python_takes_lists_and_generators_and_refuses_one_string(translator_dir: Path) -> None:
    """Before: one string was translated character by character (a space among them: 'text 2 is
    empty'), a generator gave [] and a number was called 'empty', counted from 1."""
    from attend.runtime import load

    translator = load(translator_dir)
    sentences = ["red cat sun", "dog blue"]
    expected = [t.translation for t in translator.translate(sentences, beam=1)]
    with pytest.raises(ValueError, match=r"alignments='no' must be True or False"):  # it had aligned
        translator.translate(sentences, alignments="no")
    with pytest.raises(TypeError, match="beem"):  # a misspelt option had been scored at the defaults
        translator.evaluate(translator_dir.parent / "pairs.csv", beem=1)
    assert [t.translation for t in translator.translate((s for s in sentences), beam=1)] == expected
    assert translator.translate([]) == []
    with pytest.raises(ValueError, match=r"not one string \(wrap it in a list\)"):
        translator.translate("red cat sun")
    with pytest.raises(ValueError, match=r"texts\[1\] is int 5"):
        translator.translate(["red cat", 5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"texts\[1\] is an empty text"):
        translator.translate(["red cat", "  "])
    # A dict's keys or a set's members were translated, in an order no answer could be lined up with.
    for texts in ({"red cat": 1}, {"red cat", "dog blue"}):
        for call in (translator.translate, translator.faithfulness):
            with pytest.raises(ValueError, match=rf"texts must be a list of strings, not {type(texts).__name__}"):
                call(texts)  # type: ignore[arg-type]


def test_the_classifier_explain_function_on_a_translator_says_what_to_use(translator_dir: Path) -> None:
    """Before: AttributeError: 'Translator' object has no attribute 'labels' (focus: 'plan'; faithfulness
    and available_methods: 'capabilities'; the monitor's Scorer: 'labels')."""
    from attend.apps.monitor import Scorer
    from attend.explain import available_methods, explain, faithfulness, focus
    from attend.runtime import load

    translator = load(translator_dir)
    for doing, call in (("explain()", lambda: explain(translator, ["red cat"])),
                        ("focus()", lambda: focus(translator, ["red cat"])),
                        ("faithfulness()", lambda: faithfulness(translator, ["red cat"])),
                        ("available_methods()", lambda: available_methods(translator)),
                        ("Scorer(sentiment=...)", lambda: Scorer(translator, "neg"))):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=rf"^{re.escape(doing)} reads a text classifier's predictions; this is a "
                                             r"translation model: use its translate\(texts, alignments=True\)"):
            call()
    with pytest.raises(TypeError, match=r"is a path: focus\(\) takes a loaded model, attend.load\("):
        focus(str(translator_dir), ["red cat"])  # type: ignore[arg-type]


def test_translate_prints_each_chunk_as_it_is_done_with_a_bar_and_stops_keeping_them(
    translator_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file had been translated in one call and printed at the end: minutes of silence on a large
    one, every translation lost to a Ctrl-C."""
    import attend.cli as cli
    from attend.runtime.translator import Translator as Loaded

    lines = tmp_path / "in.txt"
    lines.write_text("red cat\n\ndog blue\nsun\n\n\ngreen dog\nsun red\n\n", encoding="utf-8")
    whole = run_cli("translate", str(translator_dir), "--input", str(lines), "--beam", "1")
    monkeypatch.setattr(cli, "TRANSLATE_CHUNK", 2)
    printed: list[str] = []
    translate = Loaded.translate

    def noting(self: Loaded, sources: list[str], **options: object) -> list:
        printed.append(capsys.readouterr().out)  # what was on stdout as this call began
        if len(printed) == 3:  # the last of 3 chunks (5 sentences, 2 a call)
            raise KeyboardInterrupt
        return translate(self, sources, **options)

    monkeypatch.setattr(Loaded, "translate", noting)
    assert cli.main(["translate", str(translator_dir), "--input", str(lines), "--beam", "1"]) == 130
    out = whole.stdout.split("\n")
    # Line by line in order, blank lines in their places, each chunk flushed before the next began.
    assert printed == ["", "\n".join(out[:3]) + "\n", "\n".join(out[3:7]) + "\n"]
    assert capsys.readouterr().err == ("interrupted: the first 7 of 9 lines are translated above; go on from input "
                                       "line 8 (output line N is input line N's translation)\n")
    monkeypatch.setattr(Loaded, "translate", translate)
    assert cli.main(["translate", str(translator_dir), "--input", str(lines), "--beam", "1", "--no-progress"]) == 0
    assert capsys.readouterr().out == whole.stdout  # the chunks' lines are the whole file's


def test_a_line_of_invisible_characters_translates_to_a_blank_line(translator_dir: Path, tmp_path: Path) -> None:
    """A zero-width space passed the blank-line filter, then failed the whole file (naming the wrong line)."""
    lines = tmp_path / "in.txt"
    lines.write_text("red cat sun\n\ndog blue\n\u200b\nsun\n", encoding="utf-8")
    done = run_cli("translate", str(translator_dir), "--input", str(lines), "--beam", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout.split("\n")
    assert len(out) == 6 and out[1] == out[3] == "" and all(out[i] for i in (0, 2, 4)), out


def test_an_empty_cell_of_a_table_translates_to_a_blank_line(translator_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """One empty cell failed the whole file, where a text file's blank line gives a blank line."""
    table = tmp_path / "in.jsonl"
    rows = ['{"s": "red cat"}', '{"s": ""}', '{"s": null}', '{"s": " \u200b "}', '{"s": "dog blue"}']
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["translate", str(translator_dir), "--input", str(table), "--source-col", "s", "--beam", "1"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert len(out) == 6 and out[1] == out[2] == out[3] == "" and out[0] and out[4], out
    assert main(["translate", str(translator_dir), "--input", str(table), "--source-col", "s", "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["translation"] == "" for a in answers] == [False, True, True, True, False]
    assert answers[1]["score"] is None
    assert main(["explain", str(translator_dir), "--input", str(table), "--source-col", "s"]) == 0
    assert capsys.readouterr().out.count("<-") > 0
    # A training file's empty cell is still an error (the reader keeps them only when asked).
    with pytest.raises(DataError, match="line 2 has an empty text in column 's'"):
        read_table(table, text_col="s", label_col=None)
    # --source-col beside typed sentences was ignored; nothing given says how to read standard input.
    assert main(["translate", str(translator_dir), "red cat", "--source-col", "s"]) == 2
    assert "--source-col s: reads a column of an --input table" in capsys.readouterr().err
    assert main(["translate", str(translator_dir)]) == 2
    assert "--input - reads standard input" in capsys.readouterr().err
    assert main(["explain", str(translator_dir), "red cat", "--text-col", "s"]) == 2  # named as --source-col
    assert "--text-col s: reads a column of an --input table" in capsys.readouterr().err
    (tmp_path / "plain.txt").write_text("red cat\n", encoding="utf-8")
    assert main(["explain", str(translator_dir), "--input", str(tmp_path / "plain.txt"), "--text-col", "s"]) == 2
    assert "--text-col s: " in capsys.readouterr().err
    assert main(["explain", str(translator_dir), "--input", str(table), "--text-col", "nope"]) == 2
    assert "choose the column with --text-col" in capsys.readouterr().err
    # An input with no sentence at all: blank lines, or nothing, and exit 0, had been the answer.
    (tmp_path / "other.csv").write_text("s,t\n,a\n,b\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    for verb in ("translate", "explain"):
        assert main([verb, str(translator_dir), "--input", str(tmp_path / "other.csv"), "--source-col", "s"]) == 2
        assert capsys.readouterr().err == (f"error: {tmp_path / 'other.csv'}: column 's' is empty in every row (2): "
                                           "is it the right column? (choose it with --source-col)\n")
        assert main([verb, str(translator_dir), "--input", str(tmp_path / "empty.txt"), "--json"]) == 2
        assert capsys.readouterr().err.endswith("empty.txt: no sentence in it (it is empty)\n")
        assert main([verb, str(translator_dir), "--input", str(tmp_path / "blank.txt")]) == 2
        assert capsys.readouterr().err.endswith("blank.txt: no sentence in it (every line is blank)\n")


def test_explain_on_a_translator_prints_each_chunk_as_it_comes_and_an_interrupted_page_holds_what_was_done(
    translator_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It had translated every sentence, then drawn, then printed: no bar, nothing on stdout till the
    end, and Ctrl-C left no page; the page's path was printed among the explanations on stdout."""
    import attend.cli
    from attend.runtime.translator import Translator

    monkeypatch.setattr(attend.cli, "EXPLAIN_CHUNK", 2)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    real, calls = Translator.translate, []

    def stopped_at_the_third_chunk(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate", stopped_at_the_third_chunk)
    lines = tmp_path / "in.txt"
    lines.write_text("red cat\nsun dog\ngreen sun\ncat cat\nblue red\n", encoding="utf-8")
    page = tmp_path / "page.html"
    done = run_cli("explain", str(translator_dir), "--input", str(lines), "--html", str(page))
    assert done.returncode == 130 and calls == [2, 2, 1], done.stderr
    assert [line for line in done.stdout.splitlines() if not line.startswith(" ")] == [
        "red cat", "sun dog", "green sun", "cat cat"]  # fmt: skip
    assert f"interrupted: the HTML report of the first 4 of 5 texts is {page.resolve()}" in done.stderr
    assert "explain:" in done.stderr
    html = page.read_text(encoding="utf-8")
    assert "Interrupted: the first 4 of 5 texts." in html and html.count("<section class='card'") == 4
    monkeypatch.setattr(Translator, "translate", real)
    done = run_cli("explain", str(translator_dir), "--input", str(lines), "--html", str(page), "--no-progress")
    assert done.returncode == 0 and "explain:" not in done.stderr
    assert f"HTML report: {page.resolve()}" in done.stderr and "HTML report" not in done.stdout  # status: stderr
    assert page.read_text(encoding="utf-8").count("<section class='card'") == 5


def test_explain_numbers_a_bad_typed_sentence_as_translate_does(translator_dir: Path) -> None:
    done = run_cli("explain", str(translator_dir), "red cat", "  ")
    assert done.returncode == 2 and "text 2 is an empty text" in done.stderr, done.stderr


def test_generation_counts_must_be_whole_numbers() -> None:
    """Before: beam=2.5 failed inside torch's repeat_interleave."""
    from attend.models.generation import GenerationOptions

    with pytest.raises(ValueError, match=r"beam=2.5 must be a whole number"):
        GenerationOptions(beam=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no_repeat_ngram=True must be a whole number"):
        GenerationOptions(no_repeat_ngram=True)


def test_the_training_file_is_scored_on_the_split_column_training_read(translator_dir: Path, tmp_path: Path) -> None:
    """Before: a file trained with --split-col was split again by evaluate, scoring training pairs as its test."""
    from attend.io import sha256_file

    rows = [{**row, "split": "test" if i < 3 else "train"} for i, row in enumerate(reverse_pairs(40))]
    data = write_csv(tmp_path / "split.csv", rows)
    runtime = load(translator_dir)
    runtime.config = {**runtime.config, "data": {**runtime.config["data"], "path": str(data),
                                                 "sha256": sha256_file(data), "split_col": "split"}}  # fmt: skip
    found = runtime.evaluate(data, beam=1)
    assert found["sentences"] == 3 and found["pairs_used"] == "test split (split column 'split')"
    assert found["bleu_tokenize"] == runtime.config["data"]["bleu_tokenize"] == "13a"  # the model's own
    everything_train = write_csv(tmp_path / "train_only.csv", [{**row, "split": "train"} for row in rows])
    with pytest.raises(ValueError, match=r"split column 'split' marks every pair 'train': no test or dev pairs to "
                                         r"evaluate on \(leave --split-col out to score every pair\)"):  # fmt: skip
        runtime.evaluate(everything_train, split_col="split")
    # The training file itself, every pair 'train': leaving --split-col out (advised) had changed nothing.
    runtime.config["data"] = {**runtime.config["data"], "sha256": sha256_file(everything_train)}
    with pytest.raises(ValueError, match=r"\(it is the model's training data, every pair of it learned from: "
                                         r"evaluate on another file\)"):  # fmt: skip
        runtime.evaluate(everything_train)


def test_an_alignment_carries_the_log_probability_its_pictures_call_it(translator_dir: Path, tmp_path: Path) -> None:
    """Before: the HTML and PNG called the length-normalised score the log-probability."""
    from attend.explain import alignment_html

    (result,) = load(translator_dir).translate(["red cat sun"], alignments=True, length_penalty=1.0)
    assert result.alignment is not None and result.alignment.log_prob == result.log_prob != result.score
    assert f"log-probability {result.log_prob:.3f}" in alignment_html([result.alignment])
