"""Rendering a translation's cross-attention alignment: JSON, PNG heatmaps and the interactive HTML page."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attend.explain import Alignment, alignment_html, alignment_png, save_alignment_pngs, to_json_dict
from attend.explain.alignment import strongest_links
from tests.explain.test_faithfulness_render_cli import _screenshot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cat() -> Alignment:
    """English -> Japanese with a clear diagonal-ish alignment; output token 2 attends to two source tokens."""
    source = ["the", "cat", "sat", "</script>"]
    output = ["猫", "が", "座った", "<script>alert(1)</script>"]
    weights = np.array(
        [
            [0.10, 0.80, 0.05, 0.05],  # 猫 <- cat
            [0.40, 0.30, 0.20, 0.10],  # が <- the (cat 0.30 > 0.5 * 0.40 too)
            [0.05, 0.05, 0.90, 0.00],  # 座った <- sat
            [0.00, 0.00, 0.00, 1.00],  # <script> <- </script>
        ]
    )
    layers = {"layer 0 head 0": weights[:, ::-1].copy(), "layer 1 mean": weights.copy()}
    faithfulness = {"comprehensiveness": 0.42, "random": {"comprehensiveness": 0.1}}
    return Alignment(source, output, weights, source="the cat sat", translation="猫が座った", log_prob=-1.25,
                     layers=layers, faithfulness=faithfulness)  # fmt: skip


def test_a_piece_of_spaces_is_shown_not_printed_as_nothing() -> None:
    alignment = Alignment([" ", "cat", "</s>"], ["猫", " "], np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    assert strongest_links(alignment) == ["猫<-␣", "␣<-</s>"]  # `explain` printed "猫<-" and " <-</s>"


def test_json_shape_links_and_rounding() -> None:
    alignment = _cat()
    alignment.weights[0, 0] = 0.123456789
    data = to_json_dict(alignment)
    assert list(data) == ["source", "translation", "log_prob", "source_tokens", "output_tokens", "alignment", "links",
                          "faithfulness"]  # fmt: skip
    # The log-probability under its own name: "score" is the length-normalised one elsewhere (translate --json)
    assert data["log_prob"] == -1.25 and "score" not in data and data["output_tokens"][0] == "猫"
    assert np.shape(data["alignment"]) == (4, 4) and data["alignment"][0][0] == 0.1235
    assert data["links"] == [
        {"output": 0, "source": 1, "weight": 0.8},
        {"output": 1, "source": 0, "weight": 0.4},
        {"output": 1, "source": 1, "weight": 0.3},  # above half of the row's peak
        {"output": 2, "source": 2, "weight": 0.9},
        {"output": 3, "source": 3, "weight": 1.0},
    ]
    assert "maps" not in data
    with_maps = to_json_dict(alignment, maps=True)
    assert list(with_maps["maps"]) == ["layer 0 head 0", "layer 1 mean"]
    assert with_maps["maps"]["layer 0 head 0"][0] == [0.05, 0.05, 0.8, 0.1]
    json.dumps(with_maps, allow_nan=False)  # plain JSON all the way down


def test_json_of_edge_cases_stays_valid() -> None:
    empty_row = Alignment(["a", "b"], ["x", "y"], np.array([[0.0, 0.0], [0.5, 0.5]]), log_prob=float("-inf"))
    data = to_json_dict(empty_row, maps=True)
    assert data["log_prob"] is None and data["maps"] == {}
    assert data["links"] == [{"output": 1, "source": 0, "weight": 0.5}, {"output": 1, "source": 1, "weight": 0.5}]
    json.dumps(data, allow_nan=False)
    nothing = Alignment(["a"], [], np.zeros((0, 1)))
    assert to_json_dict(nothing)["alignment"] == [] and alignment_png(nothing).startswith(PNG_SIGNATURE)


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"weights has shape \(2, 3\); expected .* \(3, 2\)"):
        Alignment(["a", "b"], ["x", "y", "z"], np.ones((2, 3)))
    with pytest.raises(ValueError, match="layers\\['layer 0 head 1'\\] holds non-finite"):
        Alignment(["a"], ["x"], np.ones((1, 1)), layers={"layer 0 head 1": np.array([[np.nan]])})
    with pytest.raises(ValueError, match="output_probabilities"):
        Alignment(["a"], ["x"], np.ones((1, 1)), output_probabilities=[0.5, 0.5])


def test_png_with_japanese_tokens_needs_no_missing_glyph(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for tofu
        png = alignment_png(_cat(), title="英語 → 日本語")
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size[0] > 200 and image.size[1] > 150
    long = Alignment([f"s{j}" for j in range(150)], [f"o{i}" for i in range(90)], np.full((90, 150), 1 / 150))
    assert alignment_png(long, dpi=40).startswith(PNG_SIGNATURE)  # ticks thinned, figure size capped

    paths = save_alignment_pngs([_cat(), _cat()], tmp_path / "png", maps=True)
    names = [f"alignment-00{i}{suffix}.png" for i in range(2) for suffix in ("", "-layer-0-head-0", "-layer-1-mean")]
    assert [p.name for p in paths] == names
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(p.name for p in paths)  # no temporaries


def _blob(page: str) -> list[dict]:
    match = re.search(r"<script type='application/json' id='attend-alignments'>(.*?)</script>", page, re.S)
    assert match, "no JSON blob"
    return json.loads(match.group(1))


def test_html_escapes_tokens_and_the_embedded_json_cannot_close_its_script() -> None:
    page = alignment_html([_cat()], title="<b>title</b>")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;title&lt;/b&gt;" in page
    # Only the page's own two script elements open and close.
    assert page.count("<script") == 2 and page.lower().count("</script") == 2
    blob = _blob(page)
    assert blob[0]["output_tokens"][3] == "<script>alert(1)</script>" and blob[0]["source_tokens"][3] == "</script>"
    assert blob[0]["links"] == to_json_dict(_cat())["links"]
    assert "http" not in page  # nothing fetched: no URL at all


def test_html_reads_without_script() -> None:
    page = alignment_html([_cat()])
    fallback = page[page.index("<details class='fallback' open>") :]
    fallback = fallback[: fallback.index("</details>")]
    rows = re.findall(r"<tr><td>(\d+)</td><td lang='und'>(.*?)</td><td lang='und'>(.*?)</td></tr>", fallback)
    assert [(i, token) for i, token, _ in rows] == [("0", "猫"), ("1", "が"), ("2", "座った"),
                                                    ("3", "&lt;script&gt;alert(1)&lt;/script&gt;")]  # fmt: skip
    assert rows[1][2] == "the&nbsp;<small>0.40</small>, cat&nbsp;<small>0.30</small>"
    # Each output token is shaded by its confidence (here: its peak weight) and names its source in a tooltip.
    assert 'data-i="2" tabindex="0" data-shade="rgba(46,134,193,0.818)"' in page
    assert 'title="座った (peak alignment weight 0.90) ← sat 0.90"' in page
    assert "Faithfulness" in page and "comprehensiveness" in page and "random · comprehensiveness" in page
    assert "<img" not in page
    with_maps = alignment_html([_cat()], maps=True)
    assert [alt for alt in re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', with_maps)] == [
        "average", "layer 0 head 0", "layer 1 mean"]  # fmt: skip


def test_a_long_title_is_wrapped_to_the_picture_not_cut_at_both_ends() -> None:
    from attend.explain.render import wrapped_title

    score = "(log\u00a0p\u00a0=\u00a0-12.30)"  # as _default_title writes it: one word to wrap
    title = f"al viejo profesor le gusta la pelota por la mañana y por la tarde también mucho  {score}"
    lines = wrapped_title(title, 4.5).split("\n")
    assert len(lines) == 3 and all(len(line) <= 49 for line in lines)  # 11 characters an inch at 9 points
    assert lines[0].startswith("al viejo") and lines[-1].endswith(score)  # both ends readable
    many = wrapped_title(" ".join(["palabra"] * 60), 4.0).split("\n")
    assert len(many) == 3 and many[-1].endswith("…") and all(len(line) <= 44 for line in many)
    long = wrapped_title(f"{' '.join(['palabra'] * 60)}  {score}", 4.0).split("\n")
    assert len(long) == 3 and long[-1].endswith(f"… {score}") and all(len(line) <= 44 for line in long)
    chinese = wrapped_title("老人早上喜欢在公园里打球然后回家吃饭睡觉看书写字画画唱歌跳舞", 4.0).split("\n")
    assert all(len(line) <= 22 for line in chinese)  # a wide character counts as two


def test_alignment_report_grows_and_says_when_it_was_cut_short(tmp_path: Path) -> None:
    from attend.explain import AlignmentReport

    report = AlignmentReport()
    report.add([_cat()])
    report.add([_cat()])
    page = report.write(tmp_path / "a.html", note="Interrupted: the first 2 of 5 texts.")
    assert len(report) == 2 and page.count("<section class='card'") == 2 and "id='alignment1'" in page
    assert "Interrupted: the first 2 of 5 texts." in page and len(json.loads(
        re.search(r"id='attend-alignments'>(.*?)</script>", page).group(1))) == 2  # fmt: skip
    assert alignment_html([_cat(), _cat()]) == report.page()  # the same page, built at once
    empty = alignment_html([Alignment(["a", "b"], [], np.zeros((0, 2)))], maps=True)  # PIL refused an empty image
    assert "<figcaption>average: empty</figcaption>" in empty and "<img" not in empty
    spaced = alignment_html([Alignment(["a", " "], ["##b"], np.ones((1, 2)))], maps=True)
    assert "<span title='key 1:  '>␣</span>" in spaced and "<span title='query 0: ##b'>b</span>" in spaced


def test_html_script_wires_hover_focus_and_pinning() -> None:
    """The interactive parts that a headless screenshot cannot hover: the listeners are in the page."""
    page = alignment_html([_cat()])
    script = page[page.rindex("<script>") :]
    for listener in ("mouseover", "mouseout", "focusin", "focusout", "click", "keydown", "hashchange"):
        assert f'"{listener}"' in script, listener
    assert page.count('tabindex="0"') == 8  # every token is reachable by keyboard
    assert "aria-live='polite'" in page


class _WithFragment:
    """A page path for the shared ``_screenshot`` helper (which opens ``html.as_uri()``), plus a ``#fragment``."""

    def __init__(self, path: Path, fragment: str) -> None:
        self.path, self.fragment = path, fragment

    def as_uri(self) -> str:
        return self.path.as_uri() + self.fragment


def test_page_opens_in_headless_chromium_with_an_output_token_pinned(tmp_path: Path) -> None:
    """``#alignment0-o2`` runs the code that hovering output token 2 (座った) runs: its source (sat) lights up."""
    chinese = Alignment(["我", "爱", "猫"], ["I", "love", "cats"], np.eye(3) * 0.9 + 0.1 / 3, source="我爱猫",
                        translation="I love cats", output_probabilities=[0.9, 0.8, 0.7])  # fmt: skip
    path = tmp_path / "alignments.html"
    page = alignment_html([_cat(), chinese], path=path)
    assert path.read_text(encoding="utf-8") == page
    shot = tmp_path / "shot.png"
    dom = _screenshot(_WithFragment(path, "#alignment0-o2"), shot)  # type: ignore[arg-type]
    assert '<html class="js">' in dom  # the script ran
    first = dom[dom.index('id="alignment0"') : dom.index('id="alignment1"')]
    source = dict(re.findall(r'<span class="tok src[^"]*" data-j="(\d+)"([^>]*)>', first))
    assert "rgba(230, 126, 34" in source["2"]  # sat: lit
    assert "rgba" not in source["3"]  # </script>: weight 0, not lit
    assert '<span class="tok out active" data-i="2"' in first
    assert "“座った” attended to: sat 0.90" in first
    assert '<details class="fallback">' in first  # the script folds the table away; it stays one click off
    for token in ["猫", "座った", "&lt;script&gt;alert(1)&lt;/script&gt;", "我", "cats"]:
        assert token in dom, token
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[0] >= 800 and image.shape[1] >= 1000
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    orange = (red > 200) & (green > 110) & (green < 190) & (blue < 120)  # the lit source token
    shaded = (blue > red + 40) & (blue > 150)  # confidence shading of the output tokens
    assert orange.sum() > 200, "the pinned output token's source is not lit in the screenshot"
    assert shaded.sum() > 1000 and (image.sum(-1) < 200).sum() > 500  # shading and text glyphs


def test_the_page_draws_the_last_layers_maps_or_every_map() -> None:
    """``layers="last"``: the average and the last numbered layer's maps; maps whose names number no
    layer are all drawn."""

    def captions(alignment: Alignment, layers: str) -> list[str]:
        return re.findall(r"<figcaption>([^<]*)", alignment_html([alignment], maps=True, layers=layers))

    cat = _cat()
    assert captions(cat, "last") == ["average", "layer 1 mean"]
    assert captions(cat, "all") == ["average", "layer 0 head 0", "layer 1 mean"]
    named = Alignment(cat.source_tokens, cat.output_tokens, cat.weights, layers={"encoder": cat.weights,
                                                                                  "decoder": cat.weights})  # fmt: skip
    assert captions(named, "last") == ["average", "encoder", "decoder"]
    with pytest.raises(ValueError, match=r"layers='first': 'all' or 'last'"):
        alignment_html([cat], maps=True, layers="first")
