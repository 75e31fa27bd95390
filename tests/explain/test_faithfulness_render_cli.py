"""Faithfulness (ERASER), the renderers (HTML in headless Chromium, PNG) and the CLI verbs."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attend.cli import main
from attend.explain import THRESHOLDS, explain, faithfulness, format_faithfulness, render_html, save_heatmaps, to_json
from attend.io import sha256_file
from attend.runtime import load
from tests.conftest import chromium_page, copy_model, planted_rows, write_csv
from tests.explain.conftest import untrained_predictor


def test_comprehensiveness_beats_random_by_a_wide_margin_on_the_planted_task(planted_models: dict) -> None:
    texts = [row["text"] for row in planted_rows(40, seed=7)]
    report = faithfulness(planted_models["encoder"], texts, ["rollout", "grad_attention", "random", "uniform"])
    methods = report["methods"]
    assert set(methods) == {"rollout", "grad_attention", "random", "uniform"} and report["texts"] == 40
    for name in ("rollout", "grad_attention"):
        assert methods[name]["comprehensiveness"] > methods["random"]["comprehensiveness"] + 0.2, methods
        assert methods[name]["sufficiency"] < methods["random"]["sufficiency"] - 0.2, methods
    row = methods["rollout"]
    assert set(row["thresholds"]) == {f"{q:g}" for q in THRESHOLDS}
    aopc = np.mean([row["thresholds"][f"{q:g}"]["comprehensiveness"] for q in THRESHOLDS])
    assert row["comprehensiveness"] == pytest.approx(aopc)
    table = format_faithfulness(report)
    assert "rollout" in table and "uniform" in table and "c@50%" in table


def test_removing_nothing_important_changes_nothing() -> None:
    """A constant model: every method's comprehensiveness and sufficiency are exactly 0."""
    predictor = untrained_predictor("encoder_mean")
    for p in predictor.model.parameters():
        p.data.zero_()
    report = faithfulness(predictor, ["the film was wonderful", "a boring story"], ["attention", "random"])
    for row in report["methods"].values():
        assert row["comprehensiveness"] == pytest.approx(0.0) and row["sufficiency"] == pytest.approx(0.0)


def test_a_methods_figures_do_not_depend_on_which_other_methods_are_measured(planted_models: dict) -> None:
    texts = [row["text"] for row in planted_rows(12, seed=3)]
    alone = faithfulness(planted_models["encoder"], texts, ["uniform"])["methods"]["uniform"]
    beside = faithfulness(planted_models["encoder"], texts, ["rollout", "random", "uniform"])["methods"]["uniform"]
    assert alone == beside  # before, the ties among uniform scores were broken by the method's position


def test_texts_with_nothing_to_remove_give_no_figure_and_strict_json(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # BERT's normaliser (MiniLM's, and a model trained before 2026-12-06) strips a combining accent
    # wherever it is: one alone is no token.
    model_dir = copy_model(model_dir, tmp_path)
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["normalizer"] = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                               "strip_accents": True, "lowercase": True}  # fmt: skip
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config["files"]["tokenizer.json"] = sha256_file(model_dir / "tokenizer.json")
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    data = tmp_path / "marks.csv"
    data.write_text("text,label\n\u0301,pos\n", encoding="utf-8")  # a combining accent alone: no token
    assert main(["faithfulness", str(model_dir), str(data), "--methods", "attention,random", "--json"]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert report["texts"] == 1 and report["texts_scored"] == 0
    assert report["methods"]["attention"]["comprehensiveness"] is None
    assert main(["explain", str(model_dir), "\u0301", "--json"]) == 0
    focus = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"bare {name}"))[0]["focus"]
    assert focus["tokens"] == 0 and focus["entropy"] is None


def _screenshot(html: Path, png: Path) -> str:
    return chromium_page(html.as_uri(), png)


def test_html_report_opens_in_headless_chromium_and_shows_the_tokens(tmp_path: Path) -> None:
    english = untrained_predictor("encoder_attention_pool")
    exps = explain(english, ["the film was wonderful"], "rollout", maps=True)
    chinese = untrained_predictor("minilm")  # its vocabulary has some CJK characters
    exps += explain(chinese, ["服务很好"], "grad_attention", maps=True)
    html_path = tmp_path / "report.html"
    page = render_html(exps, html_path)
    assert html_path.read_text(encoding="utf-8") == page and "<script" not in page and "http" not in page
    dom = _screenshot(html_path, tmp_path / "shot.png")
    for token in ["wonderful", "film", "服", "好"]:
        assert f">{token}</span>" in dom, token
    assert dom.count('<img alt="layer') == 2 + 12  # last layer: 2 heads (encoder) + 12 heads (MiniLM)
    image = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(int)
    assert image.shape[0] >= 800 and image.shape[1] >= 1000
    blue = (image[..., 2] > image[..., 0] + 40) & (image[..., 2] > 150)  # token shading and heatmaps
    assert blue.sum() > 2000, "no shaded tokens or heatmaps visible in the screenshot"
    dark = image.sum(-1) < 200  # text glyphs
    assert dark.sum() > 500


def test_tokens_that_share_their_characters_are_shown_once_on_the_page() -> None:
    """A ligature read as three pieces, a Hangul syllable as its jamo (MiniLM): each piece had printed
    the characters again ("ﬃﬃﬃ", "정정정말말말"), so the page's text was not the user's."""
    from attend.explain.methods import Explanation
    from attend.explain.render import _tokens_block

    shared = Explanation(text="정말 ﬃ", tokens=["[CLS]", "ᄌ", "##ᅥ", "##ᆼ", "말", "ffi", "[SEP]"],
                         importance=[0.0, 0.1, 0.2, 0.3, 0.1, 0.3, 0.0],
                         special=[True, False, False, False, False, False, True], label="a", probability=1.0,
                         target="a", method="attention", truncated=False, focus={},
                         spans=[None, (0, 1), (0, 1), (0, 1), (1, 2), (3, 4), None])  # fmt: skip
    block = _tokens_block(shared)
    shown = re.findall(r">([^<]*)</span>", block)
    assert shown == ["[CLS]", "정", "말", "ﬃ", "[SEP]"], block
    # A cell whose characters follow the last one's in the text is drawn against it (each had a gap).
    assert re.findall(r'class="(tok[^"]*)"', block) == ["tok special", "tok", "tok joined", "tok", "tok special"]
    # One cell holds the three pieces, shaded by their sum, each named in its title.
    assert 'title="정 (the model saw ᄌ): 0.1000; ##정 (the model saw ##ᅥ): 0.2000; ##정 (the model saw ##ᆼ): ' in block
    page = render_html([shared])
    assert "정정" not in page and "ﬃﬃ" not in page
    # The plain output's top tokens too (the ligature's pieces had been listed three times).
    from attend.explain import top_tokens

    assert top_tokens(shared, 5) == [("정", pytest.approx(0.6)), ("ﬃ", 0.3), ("말", 0.1)]
    real = explain(untrained_predictor("minilm"), ["정말 good ﬁne"], "attention")[0]
    assert "".join(re.findall(r">([^<]*)</span>", _tokens_block(real))).replace("##", "") == "[CLS]정말goodﬁne[SEP]"


def test_png_heatmaps_and_json(tmp_path: Path) -> None:
    predictor = untrained_predictor("encoder_cls")
    exps = explain(predictor, ["the film was wonderful", "a boring story"], "attention", maps=True)
    paths = save_heatmaps(exps, tmp_path / "png")
    assert len(paths) == 2 * (1 + 2 * 4)  # per text: importance + 2 layers x 4 heads
    with Image.open(tmp_path / "png" / "text1" / "layer1_head3.png") as image:
        assert image.size[0] > 100
    rows = json.loads(to_json(exps, maps=True))
    assert len(rows[0]["maps"]) == 2 and len(rows[0]["maps"][0]) == 4
    assert len(rows[0]["tokens"]) == len(rows[0]["importance"]) == len(rows[0]["maps"][0][0])


@pytest.fixture(scope="module")
def model_dir(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_model(trained["encoder"], tmp_path_factory.mktemp("cli"))


def test_the_library_writes_no_page_over_a_model_or_a_file_and_no_pictures_into_a_model(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Only the command line had checked: render_html(exps, "model/config.json") replaced the config
    (the model then failed to load), and save_heatmaps wrote into the model directory."""
    from attend.explain import alignment_html, save_alignment_pngs
    from attend.explain.alignment import Alignment

    model_dir = copy_model(trained["encoder"], tmp_path, "model")
    exps = explain(load(model_dir), ["a wonderful film"], "attention", maps=True)
    before = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"exists and is no HTML page"):
        render_html(exps, tmp_path / "notes.txt")
    for target in (model_dir / "config.json", model_dir / "model.safetensors", model_dir / "why.html",
                   model_dir / "runs" / "why.html", model_dir / "items.json"):  # fmt: skip
        # a new page beside the model had been written: `attend train --overwrite` then refused the
        # directory ("holds why.html ..., which attend did not write there")
        with pytest.raises(ValueError, match=r"that is in the model directory .*write the page elsewhere"):
            render_html(exps, target)
    # The predictor's JSON dicts and a path for a model are named (they had been AttributeErrors).
    with pytest.raises(TypeError, match=r"got a dict: predictor.explain\(\) returns their JSON form"):
        render_html(load(model_dir).explain(["a wonderful film"]), tmp_path / "page.html")
    with pytest.raises(TypeError, match=r"is a path: explain\(\) takes a loaded model"):
        explain(model_dir, ["a wonderful film"])
    assert not (tmp_path / "page.html").exists()
    alignment = Alignment(["a"], ["b"], np.ones((1, 1)))
    with pytest.raises(ValueError, match=r"that is in the model directory"):
        alignment_html([alignment], path=model_dir / "config.json")
    for save, what in ((save_heatmaps, exps), (save_alignment_pngs, [alignment])):
        for folder in (model_dir, model_dir / "pictures"):
            with pytest.raises(ValueError, match=r"that is in the model directory"):
                save(what, folder)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()} == before
    assert not (model_dir / "pictures").exists() and (tmp_path / "notes.txt").read_text() == "mine\n"
    render_html(exps, model_dir / "explanation.html")  # `attend demo`'s own page there is fine
    render_html(exps, tmp_path / "new" / "page.html")
    assert render_html(exps, tmp_path / "new" / "page.html")  # over its own earlier page
    assert load(model_dir).predict(["a wonderful film"])


def test_cli_explain_json_html_png(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html_path, png = tmp_path / "e.html", tmp_path / "png"
    code = main(["explain", str(model_dir), "the film was superb", "a dreadful plot", "--json", "--method", "flow",
                 "--html", str(html_path), "--png", str(png)])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0
    rows = json.loads(out.out)
    assert [r["label"] for r in rows] == ["pos", "neg"]
    for row in rows:
        assert len(row["tokens"]) == len(row["importance"]) and 0 < row["probability"] <= 1
        assert "maps" not in row  # only with --maps
    assert html_path.is_file() and (png / "text1" / "importance.png").is_file()
    assert "HTML report" in out.err  # paths go to stderr so stdout stays one JSON document


def test_cli_explain_png_has_a_bar_and_a_ctrl_c_there_says_what_was_drawn(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pictures came after the explanations' bar said 100%: a minute of silence for 100 texts, and a
    Ctrl-C there left 133 files without a word."""
    import attend.explain.render as render

    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    monkeypatch.setenv("TQDM_DELAY", "0")
    png = tmp_path / "png"
    assert main(["explain", str(model_dir), "a", "b", "c", "--png", str(png)]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("png:")][-1].startswith("png: 100%|"), err
    drawn = render._importance_png

    def stopping(exp: object) -> bytes:
        if (png / "text1").exists():
            raise KeyboardInterrupt
        return drawn(exp)

    monkeypatch.setattr(render, "_importance_png", stopping)
    png = tmp_path / "again"
    assert main(["explain", str(model_dir), "a", "b", "c", "--png", str(png), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"interrupted: the pictures of 1 of 3 texts are under {png.resolve()}", err
    assert "png:" not in err

    labelled = write_csv(tmp_path / "labelled.csv", [{"text": "what a wonderful film", "label": "pos", "part": "test"}])
    assert main(["evaluate", str(model_dir), str(labelled), "--split-col", "part"]) == 2  # it was ignored
    assert "a classifier is scored on the whole of DATA" in capsys.readouterr().err
    assert main(["evaluate", str(model_dir), str(labelled), "--beam", "2", "--length-penalty", "3"]) == 2  # ignored
    assert "--beam and --length-penalty: for translators only" in capsys.readouterr().err

    texts = tmp_path / "texts.csv"
    write_csv(texts, [{"text": "what a wonderful film"}])
    assert main(["explain", str(model_dir), "--input", str(texts), "--method", "integrated_gradients"]) == 0
    printed = capsys.readouterr().out
    assert "what a wonderful film" in printed and "-> pos" in printed


def test_cli_explain_writes_no_picture_over_what_it_would_destroy(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--html DIR/model.safetensors` replaced the weights and `--html input.txt` the input, exit 0; a
    second `--png` run into a folder left the first run's pictures of other texts beside its own."""
    weights = (model_dir / "model.safetensors").read_bytes()
    rows = tmp_path / "rows.csv"
    rows.write_text("text\nhello\n", encoding="utf-8")
    for flag, target, message in (
        ("--html", model_dir / "model.safetensors", "that is in the model directory"),
        ("--png", model_dir / "pictures", "that is in the model directory"),
        ("--html", rows, "exists and is no HTML page; a report replaces only an earlier page"),
        ("--html", tmp_path, "is a folder; give a file name for the page"),
    ):
        assert main(["explain", str(model_dir), "--input", str(rows), flag, str(target)]) == 2
        err = capsys.readouterr().err
        assert f"{flag} {target}: {message}" in err and "Traceback" not in err
    assert (model_dir / "model.safetensors").read_bytes() == weights and rows.read_text() == "text\nhello\n"
    assert not (model_dir / "pictures").exists()
    made = tmp_path / "made.html"
    made.write_bytes(b"")  # an empty file made for the page (mktemp --suffix .html) is written
    assert main(["explain", str(model_dir), "a", "--html", str(made)]) == 0 and made.stat().st_size
    page, png = tmp_path / "report.html", tmp_path / "png"
    page.write_text("\ufeff<!DOCTYPE html><html>an earlier report</html>", encoding="utf-8")
    png.mkdir()
    (png / "mine.png").write_bytes(b"a picture of the user's")
    assert main(["explain", str(model_dir), "a", "b", "c", "--html", str(page), "--png", str(png)]) == 0
    assert "an earlier report" not in page.read_text(encoding="utf-8")  # an HTML page is replaced
    assert sorted(p.name for p in png.iterdir()) == ["mine.png", "text0", "text1", "text2"]
    assert main(["explain", str(model_dir), "a", "--png", str(png)]) == 0
    assert sorted(p.name for p in png.iterdir()) == ["mine.png", "text0"]  # the user's own file is kept


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "nope", "x"], "invalid choice"),
        (["--layer", "two", "--method", "attention", "x"], "--layer 'two': expected an integer or 'mean'"),
        # Named as the flags given (they had been the Python arguments: "head=7; ...", "target='maybe' ...").
        (["--head", "7", "--method", "attention", "x"], "error: --head 7: this model has 4 heads"),
        (["--layer", "5", "--method", "attention", "x"], "error: --layer 5: this model has 2 layers"),
        (["--target", "maybe", "x"], "error: --target maybe: is not a label"),
        (["--method", "integrated_gradients", "--ig-steps", "0", "x"],
         "error: --ig-steps 0: must be an integer from 2 to 1000"),
        ([""], "text argument 1 is an empty text"),  # it named texts[0], a list index
        ([], "give texts to explain, or --input FILE, but not both (neither was given)"),
        # Accepted and ignored before:
        (["--layer", "5", "--head", "9", "x"], "--layer, --head: for --method attention only (rollout does not"),
        (["--layer", "-1", "x"], "--layer: for --method attention only"),  # the default's own value was taken
        (["--maps", "x"], "--maps: adds the maps to --json output; give --json"),
        (["--top", "0", "x"], "--top 0: must be at least 1"),
        (["--beam", "3", "x"], "--beam: for translators only\n"),  # not "(a classifier's column is --text-col)"
        (["--source-col", "en", "x"], "--source-col: for translators only (a classifier's column is --text-col)"),
        (["--ig-steps", "5", "x"], "--ig-steps 5: for --method integrated_gradients only"),
        (["--ig-steps", "32", "x"], "--ig-steps 32: for --method integrated_gradients only"),  # its default had passed
        (["--html-layers", "all", "x"], "--html-layers: chooses the heatmaps of the --html report; give --html"),
        (["--html", "setup.cfg/x.html", "x"], "setup.cfg is a file, not a folder"),  # "File exists" before
        (["--input", "rows.csv", "--text-col", "nope"], "choose the column with --text-col"),  # named --label-col
    ],
)
def test_cli_explain_errors(model_dir: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "setup.cfg").write_text("a file\n", encoding="utf-8")
    (tmp_path / "rows.csv").write_text("text\nhello\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["explain", str(model_dir), *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_explain_text_output_prints_the_note_and_what_was_read(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the note (an unreadable text's explanation is a guess) was in --json and --html only."""
    assert main(["explain", str(model_dir), "\u6211\u559c\u6b22\u8fd9\u4e2a"]) == 0
    assert "  note: " in capsys.readouterr().out
    assert main(["explain", str(model_dir), "a fine film", "--method", "attention", "--layer", "0", "--head", "1"]) == 0
    assert ", attention (layer 0, head 1)" in capsys.readouterr().out
    assert main(["explain", str(model_dir), "a fine film\x1b[31m \u202eevil\x07"]) == 0  # ESC reached the terminal
    shown = capsys.readouterr().out
    assert "a fine film\ufffd[31m evil\ufffd" in shown and not {"\x1b", "\x07", "\u202e"} & set(shown)
    assert main(["explain", str(model_dir), "a fine\nfilm"]) == 0  # "film" had been a line of its own
    assert capsys.readouterr().out.startswith("a fine film\n  -> ")


def test_cli_explain_prints_each_chunk_as_it_comes_and_an_interrupted_page_holds_what_was_done(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It had explained every text, then drawn the page, then printed: 700 texts with --html showed
    nothing for a quarter of an hour, and a Ctrl-C lost it all (no page, nothing on stdout)."""
    import attend.cli
    import attend.explain

    monkeypatch.setattr(attend.cli, "EXPLAIN_CHUNK", 2)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    real, calls = attend.explain.explain, []

    def stopped_at_the_third_chunk(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(attend.explain, "explain", stopped_at_the_third_chunk)
    rows = write_csv(tmp_path / "rows.csv", [{"text": f"review {i} was fine"} for i in range(5)])
    page = tmp_path / "page.html"
    assert main(["explain", str(model_dir), "--input", str(rows), "--html", str(page)]) == 130
    out, err = capsys.readouterr()
    assert calls == [2, 2, 1]
    assert [line for line in out.splitlines() if line.startswith("review")] == [f"review {i} was fine" for i in
                                                                                range(4)]  # fmt: skip
    assert f"interrupted: the HTML report of the first 4 of 5 texts is {page.resolve()}" in err
    assert "explain:" in err and "\r" not in err  # the bar, a line at a time in a log
    html = page.read_text(encoding="utf-8")
    assert "Interrupted: the first 4 of 5 texts." in html and html.count("<section class='card'") == 4

    monkeypatch.setattr(attend.explain, "explain", real)
    assert main(["explain", str(model_dir), "--input", str(rows), "--html", str(page), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    html = page.read_text(encoding="utf-8")
    assert "Interrupted" not in html and html.count("<section class='card'") == 5 and "explain:" not in err
    assert [line for line in out.splitlines() if line.startswith("review")] == [f"review {i} was fine" for i in
                                                                                range(5)]  # fmt: skip


def test_the_pages_maps_are_drawn_by_the_browser_not_as_charts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each head had been a matplotlib chart, about 0.3 s apiece: a report of a few hundred texts took
    a quarter of an hour and weighed 45 MB. Now a pixel per cell, labelled by the page."""
    import attend.explain.render as render

    exps = explain(untrained_predictor("encoder_cls"), ["the film was wonderful", "a <b>bold</b> plot"], "attention",
                   maps=True)  # fmt: skip

    def no_charts() -> None:
        raise AssertionError("a chart was drawn")

    monkeypatch.setattr(render, "pyplot", no_charts)
    page = render_html(exps, tmp_path / "maps.html", layers="all")
    drawn = r'<img alt="(layer \d head \d)" src="data:image/png;base64,([^"]+)" style=\'width:(\d+)px'
    images = re.findall(drawn, page)
    assert len(images) == 2 * 2 * 4  # texts x layers x heads
    n = len(exps[0].tokens)
    with Image.open(io.BytesIO(base64.b64decode(images[0][1]))) as picture:
        assert picture.size == (n, n)  # one pixel per cell, scaled up by the page
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    matrix = np.asarray(exps[0].maps[0][0])
    darkest, lightest = np.unravel_index(matrix.argmax(), matrix.shape), np.unravel_index(matrix.argmin(), matrix.shape)
    assert pixels[darkest].sum() < pixels[lightest].sum()  # darker = more attention
    assert int(images[0][2]) == 16 * n  # a token's row and column: 16 pixels
    first = exps[0].display_tokens()
    assert f"<span title='query 0: {first[0]}'>{first[0]}</span>" in page
    assert f"<span title='key {n - 1}: {first[-1]}'>{first[-1]}</span>" in page
    assert ": &lt;'>&lt;</span>" in page and "bold</b>" not in page  # the tokens of "<b>" are text in the page

    wide = np.random.default_rng(0).random((120, 120))
    figure = render.map_figure(wide, [f"t{i}" for i in range(120)], [f"t{i}" for i in range(120)], "a", "b")
    assert "class='rows'" not in figure and "width:640px" in figure  # too many tokens to label: scaled to fit


def test_cli_faithfulness_progress_in_a_log_is_lined_and_can_be_turned_off(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into a log (no terminal) it had written a carriage-return redraw a second, and had no --no-progress."""
    data = write_csv(tmp_path / "eval.csv", planted_rows(10, seed=5))
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # every method redrawn
    argv = ["faithfulness", str(model_dir), str(data), "--methods", "rollout,random", "--limit", "5"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and len([line for line in err.splitlines() if line.startswith("faithfulness:")]) >= 2, err
    # The count moves, and the last line stays: every line had read 0/2, and none was left at the end.
    assert [line[:21] for line in err.splitlines() if line.startswith("faithfulness:")][-1] == "faithfulness: 100%|██"
    assert "2/2" in err.splitlines()[-1], err
    assert main([*argv, "--no-progress"]) == 0
    assert "faithfulness:" not in capsys.readouterr().err


def test_cli_faithfulness_json(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    data = write_csv(tmp_path / "eval.csv", planted_rows(30, seed=5))
    assert main(["faithfulness", str(model_dir), str(data), "--limit", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    methods = report["methods"]
    assert {"attention", "pooling", "rollout", "flow", "grad_attention", "integrated_gradients", "random",
            "uniform"} == set(methods)  # fmt: skip
    assert report["texts"] == 20
    for row in methods.values():
        assert {"comprehensiveness", "sufficiency", "thresholds"} <= set(row)
    assert methods["rollout"]["comprehensiveness"] > methods["random"]["comprehensiveness"]
    assert main(["faithfulness", str(model_dir), str(data), "--methods", "rollout,random", "--limit", "5"]) == 0
    assert "rollout" in capsys.readouterr().out
    # --limit 0 is every text, as robustness reads it (it was refused here)
    assert main(["faithfulness", str(model_dir), str(data), "--methods", "random", "--limit", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["texts"] == 30
    assert main(["faithfulness", str(model_dir), str(data), "--limit", "-1"]) == 2
    assert "--limit -1: must be 0 (every text) or more" in capsys.readouterr().err
    assert main(["faithfulness", str(model_dir), "no_such_data"]) == 2
    assert "no_such_data: no such file, and no data set of that name (`attend datasets`" in capsys.readouterr().err
    assert main(["faithfulness", str(model_dir), "rotten_tomatos"]) == 2  # a typo: the name it is close to
    assert "no data set of that name (did you mean rotten_tomatoes? `attend datasets`" in capsys.readouterr().err
    assert main(["faithfulness", str(model_dir), str(data), "--methods", "rollout,bogus"]) == 2
    assert "error: --methods bogus: no such method; choose from" in capsys.readouterr().err  # the flag named
    # --ig-steps where integrated gradients is not measured (explain refused it; this ignored it).
    assert main(["faithfulness", str(model_dir), str(data), "--methods", "rollout", "--ig-steps", "4"]) == 2
    assert "--ig-steps 4: for the integrated_gradients method only" in capsys.readouterr().err
    # Said before the bar starts and the first method is measured (it had come after them).
    monkeypatch.setenv("TQDM_DELAY", "0")  # the bar drawn from its start, as a slow run's is
    assert main(["faithfulness", str(model_dir), str(data), "--methods", "rollout,integrated_gradients",
                 "--ig-steps", "1"]) == 2  # fmt: skip
    assert capsys.readouterr().err == "error: --ig-steps 1: must be an integer from 2 to 1000\n"
    assert main(["faithfulness", str(model_dir), str(data), "--methods", "integrated_gradients",
                 "--ig-steps", "99999999999999999999"]) == 2  # an OverflowError traceback, exit 1  # fmt: skip
    assert capsys.readouterr().err == "error: --ig-steps 99999999999999999999: must be an integer from 2 to 1000\n"
    assert main(["faithfulness", str(model_dir), str(data), "--methods", " , "]) == 2  # it ran every method
    assert "names no method" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, naming the flag
        main(["faithfulness", str(model_dir), str(data), "--seed", "-1", "--limit", "2"])
    assert exit_info.value.code == 2 and "argument --seed: -1 is not a seed (0 to" in capsys.readouterr().err
    highest = ["--seed", str(2**32 - 1), "--limit", "2", "--methods", "random"]  # plus a method's offset: wrapped
    assert main(["faithfulness", str(model_dir), str(data), *highest]) == 0, capsys.readouterr().err


def test_a_character_no_font_has_is_drawn_without_a_warning_per_glyph(recwarn: pytest.WarningsRecorder) -> None:
    """Emoji in texts printed matplotlib's "Glyph ... missing from font(s)" for every heatmap."""
    import io

    from attend.plotting import chart_style

    with chart_style() as plt:
        fig, ax = plt.subplots()
        ax.set_title("party 🎉 time")
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)
    assert not [w for w in recwarn if "missing from" in str(w.message)]


def test_an_importance_charts_long_heading_is_wrapped_to_the_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    # "integrated_gradients: explaining pos (0.00; predicted neg, 1.00)" had been cut at both ends
    import attend.explain.render as render

    predictor = untrained_predictor("encoder_cls")
    (predicted,) = explain(predictor, ["a b c"], "rollout")
    other = next(label for label in predictor.labels if label != predicted.label)
    (exp,) = explain(predictor, ["a b c"], "integrated_gradients", target=other, ig_steps=4)
    titles: list[tuple[str, float]] = []
    real = render.wrapped_title
    monkeypatch.setattr(render, "wrapped_title",
                        lambda title, width: titles.append((title, width)) or real(title, width))  # fmt: skip
    Image.open(io.BytesIO(render._importance_png(exp))).verify()
    ((title, width),) = titles
    assert title.startswith("integrated_gradients") and "explaining" in title
    assert "\n" in real(title, width)  # too long for the chart's width of a 5-token text: wrapped
