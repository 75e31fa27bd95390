"""Ensembles: the weighted mean of members' probabilities, label checks, word-level explanations,
and every verb (predict, evaluate, explain, serve) on an ensemble directory."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from attend.cli import main
from attend.data.splits import load_labelled
from attend.explain import available_methods, explain
from attend.explain.words import onto_words, word_spans
from attend.io import ModelDirError
from attend.runtime import EnsembleClassifier, load, make_ensemble
from attend.serve.app import ServeSettings, create_app
from tests.conftest import copy_model

TEXTS = ["the film was wonderful", "a dreadful plot, and tedious music", "great acting", "the camera"]


def _rewrite(path: Path, **change: object) -> None:
    config = json.loads((path / "config.json").read_text())
    for key, value in change.items():
        if key == "multi_label":
            config["model"]["multi_label"] = value
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def members(trained: dict[str, Path]) -> list[Path]:
    """Three classifiers of the planted-word task: two encoders (attention / CLS pooling) and a BiLSTM."""
    return [trained["encoder"], trained["encoder_cls"], trained["bilstm_attention"]]


@pytest.fixture(scope="module")
def ensemble_dir(members: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "ens"
    make_ensemble(members, out)
    return out


# --- the words every tokenizer agrees on ---------------------------------------------------


def test_words_are_runs_of_letters_cjk_characters_and_punctuation() -> None:
    text = "Un-watchable, 2 hours!  好看吗"
    words = ["Un", "-", "watchable", ",", "2", "hours", "!", "好", "看", "吗"]
    assert [text[a:b] for a, b in word_spans(text)] == words
    # Marks stay with their letter and an emoji sequence is one unit: a Hindi vowel sign, a Thai one, an
    # NFD accent and each person of a family emoji had been units of their own, ranked as words.
    text = "बहुत अच्छा ดีมาก cafe\u0301 👨\u200d👩\u200d👧 👍🏽 می\u200cخواهم x² H₂O"
    words = ["बहुत", "अच्छा", "ดีมาก", "cafe\u0301", "👨\u200d👩\u200d👧", "👍🏽", "می\u200cخواهم", "x²", "H₂O"]
    assert [text[a:b] for a, b in word_spans(text)] == words


def test_token_importance_is_moved_onto_words_by_character_overlap() -> None:
    text = "unwatchable film"
    units = word_spans(text)  # unwatchable (0, 11), film (12, 16)
    # WordPiece-like pieces, a special token, and a piece spanning the space into the next word.
    spans = [None, (0, 2), (2, 7), (7, 11), (12, 16), None]
    values = onto_words(units, spans, [0.1, 0.2, 0.3, 0.1, 0.2, 0.1])
    np.testing.assert_allclose(values, [0.6, 0.2])
    across = onto_words(units, [(8, 14)], [1.0])  # 3 characters of "unwatchable", 2 of "film"
    np.testing.assert_allclose(across, [0.6, 0.4])
    assert onto_words(units, [(11, 12)], [5.0]).tolist() == [0.0, 0.0]  # whitespace only: no word gets it


# --- averaging ----------------------------------------------------------------------------


def test_probabilities_are_exactly_the_mean_of_the_members(ensemble_dir: Path, members: list[Path]) -> None:
    ensemble = load(ensemble_dir)
    assert isinstance(ensemble, EnsembleClassifier) and ensemble.labels == ["neg", "pos"]
    assert ensemble.backend == "ensemble:torch,torch,torch" and not ensemble.multi_label
    own = [load(path).predict_proba(TEXTS) for path in members]
    expected = np.mean(np.stack(own).astype(np.float64), axis=0)
    np.testing.assert_array_equal(ensemble.predict_proba(TEXTS), expected)
    assert ensemble.predict([]) == [] and ensemble.explain([]) == []  # none: an empty answer, as a member gives
    assert ensemble.predict(TEXTS) == [ensemble.labels[j] for j in expected.argmax(1)]
    assert ensemble.top_k(TEXTS[:1], k=1)[0][0] == ("pos", pytest.approx(expected[0, 1]))
    # self-contained: every member is a copy that loads on its own
    config = json.loads((ensemble_dir / "config.json").read_text())
    assert [m["path"] for m in config["ensemble"]["members"]] == ["members/00", "members/01", "members/02"]
    assert config["task"] == "classification" and config["ensemble"]["labels"] == ["neg", "pos"]
    for index, path in enumerate(members):
        copied = load(ensemble_dir / "members" / f"{index:02d}")
        np.testing.assert_array_equal(copied.predict_proba(TEXTS), own[index])
        assert config["ensemble"]["members"][index]["source"] == str(path.absolute())


def test_weights_weigh_the_mean(members: list[Path], tmp_path: Path) -> None:
    ensemble = load(make_ensemble(members[:2], tmp_path / "weighted", weights=[1, 3])["out_dir"])
    first, second = (load(path).predict_proba(TEXTS).astype(np.float64) for path in members[:2])
    np.testing.assert_allclose(ensemble.predict_proba(TEXTS), (first + 3 * second) / 4, rtol=0, atol=1e-12)
    # numpy numbers, as a script computes weights: np.int64(1) had been "must be a positive number"
    again = load(make_ensemble(members[:2], tmp_path / "numpy", weights=np.array([1, 3]))["out_dir"])
    np.testing.assert_array_equal(again.predict_proba(TEXTS), ensemble.predict_proba(TEXTS))
    huge = load(make_ensemble(members[:2], tmp_path / "huge", weights=[1e308, 3e307])["out_dir"])
    np.testing.assert_allclose(huge.predict_proba(TEXTS), (first + 0.3 * second) / 1.3, rtol=0, atol=1e-12)
    for weights, message in (([1.0], "1 weights for 2 members"), ([1.0, 0.0], "weight 0.0 must be a positive"),
                             ([1.0, float("nan")], "weight nan must be a positive")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            make_ensemble(members[:2], tmp_path / "bad", weights=weights)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ModelDirError, match="is inside the member"):  # a rebuild would copy it into itself
        make_ensemble(members[:2], members[1] / "sub")
    assert not (members[1] / "sub").exists()


def test_an_ensemble_of_one_is_the_member(members: list[Path], trained: dict[str, Path], tmp_path: Path) -> None:
    member = load(members[0])
    ensemble = load(make_ensemble(members[:1], tmp_path / "one")["out_dir"])
    probs = ensemble.predict_proba(TEXTS)
    assert probs.dtype == np.float64
    np.testing.assert_array_equal(probs.astype(np.float32), member.predict_proba(TEXTS))
    data = load_labelled(trained["data"])
    assert ensemble.evaluate(data) == member.evaluate(data)
    assert ensemble.evaluate(data)["training_overlap"] > 0  # its member's training texts, counted
    # explanations: the member's token importances summed onto words, renormalised over the text
    for mine, theirs in zip(explain(ensemble, TEXTS, "rollout"), explain(member, TEXTS, "rollout"), strict=True):
        units = word_spans(theirs.text)
        assert mine.tokens == [theirs.text[a:b] for a, b in units] and not any(mine.special)
        assert mine.label == theirs.label and mine.probability == pytest.approx(theirs.probability)
        expected = onto_words(units, theirs.spans, theirs.importance)
        np.testing.assert_allclose(mine.importance, expected / expected.sum(), atol=1e-6)
    (first,) = explain(member, TEXTS[:1], "rollout")  # one token per word here: the member's own text tokens
    text_values = np.asarray([v for v, s in zip(first.importance, first.special, strict=True) if not s])
    np.testing.assert_allclose(explain(ensemble, TEXTS[:1])[0].importance, text_values / text_values.sum(), atol=1e-6)


def test_evaluate_scores_the_averaged_predictions(ensemble_dir: Path, trained: dict[str, Path]) -> None:
    ensemble = load(ensemble_dir)
    data = load_labelled(trained["data"])
    metrics = ensemble.evaluate(data)
    predicted = ensemble.predict(data.texts)
    assert metrics["accuracy"] == pytest.approx(np.mean([p == gold[0] for p, gold in zip(predicted, data.labels,
                                                                                          strict=True)]))  # fmt: skip
    assert metrics["accuracy"] > 0.9 and {"macro_f1", "per_class"} <= set(metrics)


# --- labels, kinds, nesting, output --------------------------------------------------------


def test_members_with_other_labels_are_refused_naming_them(members: list[Path], tmp_path: Path) -> None:
    other = copy_model(members[1], tmp_path, "stars")
    _rewrite(other, labels=["one_star", "pos"])
    with pytest.raises(ModelDirError, match=r"\['one_star'\] only in .*stars.*\['neg'\] only in .*encoder"):
        make_ensemble([members[0], other], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    for one in (str(members[0]), members[0]):  # a str's letters had been read as directories ("m: no such ...")
        with pytest.raises(ValueError, match=r"members: a list of model directories, not one path"):
            make_ensemble(one, tmp_path / "one")  # type: ignore[arg-type]


def test_the_same_labels_in_another_order_are_reordered(members: list[Path], tmp_path: Path) -> None:
    flipped = copy_model(members[0], tmp_path, "flipped")
    _rewrite(flipped, labels=["pos", "neg"])  # the same network, its outputs named the other way round
    ensemble = load(make_ensemble([members[0], flipped], tmp_path / "ens")["out_dir"])
    assert ensemble.labels == ["neg", "pos"]
    probs = load(members[0]).predict_proba(TEXTS).astype(np.float64)
    np.testing.assert_allclose(ensemble.predict_proba(TEXTS), (probs + probs[:, ::-1]) / 2, rtol=0, atol=1e-12)


def test_multi_label_and_single_label_members_are_refused(members: list[Path], tmp_path: Path) -> None:
    multi = copy_model(members[1], tmp_path, "multi")
    _rewrite(multi, multi_label=True)
    with pytest.raises(ModelDirError, match=r"multi.*is multi-label but .*encoder is single-label"):
        make_ensemble([members[0], multi], tmp_path / "mixed")


def test_an_ensemble_of_ensembles_is_flattened(ensemble_dir: Path, members: list[Path], tmp_path: Path) -> None:
    pair = make_ensemble(members[:2], tmp_path / "pair")["out_dir"]
    nested = make_ensemble([pair, members[2]], tmp_path / "nested", weights=[2, 1])
    assert [m["weight"] for m in nested["members"]] == pytest.approx([1 / 3] * 3)  # shares: they sum to 1
    assert [m["model_type"] for m in nested["members"]] == ["encoder", "encoder", "bilstm_attention"]
    # Each member's source is the directory it came from, not its copy inside `pair` (gone with `pair`).
    assert [m["source"] for m in nested["members"]] == [str(path.absolute()) for path in members]
    np.testing.assert_allclose(load(nested["out_dir"]).predict_proba(TEXTS), load(ensemble_dir).predict_proba(TEXTS),
                               rtol=0, atol=1e-12)  # fmt: skip


def test_an_existing_output_is_kept_without_overwrite(members: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "ens"
    make_ensemble(members[:2], out)
    before = (out / "config.json").read_text()
    with pytest.raises(ModelDirError, match="pass --overwrite"):
        make_ensemble(members, out)
    assert (out / "config.json").read_text() == before
    make_ensemble(members, out, overwrite=True)
    assert len(load(out).members) == 3
    with pytest.raises(ModelDirError, match="would overwrite the model it is made from"):
        make_ensemble([out / "members" / "00", members[1]], out / "members", overwrite=True)
    with pytest.raises(ModelDirError, match="no such model directory"):
        make_ensemble([tmp_path / "missing"], tmp_path / "other")


def test_the_same_model_twice_is_refused_and_one_model_is_said(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Both were written without a word: two copies at 0.5 each, and "the mean of 1 models'"."""
    from attend.cli import main

    assert main(["ensemble", str(members[0]), "--out", str(tmp_path / "one")]) == 0
    assert "warning: an ensemble of one model predicts as" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"are the same model; give each model once"):
        make_ensemble([members[0], members[0]], tmp_path / "twice")
    copied = copy_model(members[0], tmp_path, "copy")  # another folder, the same weights and labels
    with pytest.raises(ValueError, match=r"copy and .* are the same model"):
        make_ensemble([members[0], members[1], copied], tmp_path / "thrice")
    from attend.deploy.export import export_onnx

    exported = tmp_path / "onnx"  # the model again, as a graph: accepted before (no weights file to compare)
    export_onnx(members[0], exported, texts=TEXTS)
    with pytest.raises(ValueError, match=r"onnx and .* are the same model"):
        make_ensemble([members[0], exported], tmp_path / "graph")
    assert not any((tmp_path / name).exists() for name in ("twice", "thrice", "graph"))


def test_a_swapped_member_is_refused(ensemble_dir: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(ensemble_dir, tmp_path / "broken"))
    shutil.copy(broken / "members" / "01" / "config.json", broken / "members" / "00" / "config.json")
    with pytest.raises(ModelDirError, match=r"members/00/config.json does not match the hash"):
        load(broken)


def test_what_needs_one_network_says_so(ensemble_dir: Path) -> None:
    with pytest.raises(ModelDirError, match=r"is an ensemble.*runtime='torch'.*leave the runtime out.*To export, "
                                            r"quantise or prune it, run those on the source directories"):
        load(ensemble_dir, runtime="torch")
    ensemble = load(ensemble_dir)
    assert ensemble.capabilities.maps is False and ensemble.capabilities.gradients is False
    with pytest.raises(ValueError, match="no tokenizer of its own"):
        ensemble.tokenizer  # noqa: B018
    with pytest.raises(ValueError, match="no attention maps of its own"):
        ensemble.attention_outputs({})


# --- explanations ---------------------------------------------------------------------------


def test_explanations_average_the_members_on_words(ensemble_dir: Path, members: list[Path]) -> None:
    ensemble = load(ensemble_dir)
    # the BiLSTM has no self-attention layers, so rollout and flow read its pooling; all three give gradients
    assert available_methods(ensemble) == [m for m in available_methods(load(members[1]))
                                           if m in available_methods(load(members[2]))]  # fmt: skip
    found = explain(ensemble, TEXTS, "grad_attention")
    probs = ensemble.predict_proba(TEXTS)
    for exp, text, row in zip(found, TEXTS, probs, strict=True):
        assert exp.tokens == [t for t in text.replace(",", " ,").split()] and exp.text == text
        assert exp.label == ensemble.labels[int(row.argmax())] and exp.probability == pytest.approx(row.max())
        assert sum(exp.importance) == pytest.approx(1.0) and exp.spans == word_spans(text)
        assert "weighted mean over 3 members" in exp.note
    # the mean of the members' word-level distributions, each explaining the ensemble's label
    each = [explain(load(path), TEXTS, "grad_attention", target="pos") for path in members]
    mine = explain(ensemble, TEXTS, "grad_attention", target="pos")
    for i, exp in enumerate(mine):
        per_member = []
        for member_exps in each:
            values = onto_words(word_spans(TEXTS[i]), member_exps[i].spans, member_exps[i].importance)
            per_member.append(values / values.sum())
        np.testing.assert_allclose(exp.importance, np.mean(per_member, axis=0), atol=1e-6)
        assert exp.target == "pos"
    wonderful = mine[0].importance[mine[0].tokens.index("wonderful")]
    assert wonderful == max(mine[0].importance)  # the planted word decides the label
    with pytest.raises(ValueError, match=r"no attention maps of its own .* maps are unavailable \(maps=True; --maps"):
        explain(ensemble, TEXTS, maps=True)  # named as a Python caller gave it, not only as the CLI's flag
    with pytest.raises(ValueError, match="target='meh' is not a label"):
        explain(ensemble, TEXTS, target="meh")


def test_a_member_that_gives_the_words_nothing_is_left_out_of_the_mean(
    ensemble_dir: Path, members: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BiLSTM can put all of a method's weight on [SEP]: its words' share had been 0, so the
    ensemble's importances summed to 2/3 of what the others said."""
    import dataclasses

    import attend.explain.methods as methods

    ensemble = load(ensemble_dir)
    quiet = ensemble.members[2]
    real = methods.explain

    def explain_quietly(runtime, texts, *args, **kwargs):
        found = real(runtime, texts, *args, **kwargs)
        if runtime is not quiet:
            return found
        return [dataclasses.replace(e, importance=[float(s) / sum(e.special) for s in e.special]) for e in found]

    monkeypatch.setattr(methods, "explain", explain_quietly)
    mine = explain(ensemble, TEXTS[:2], "grad_attention", target="pos")
    others = [real(load(path), TEXTS[:2], "grad_attention", target="pos") for path in members[:2]]
    for i, exp in enumerate(mine):
        assert sum(exp.importance) == pytest.approx(1.0)
        assert "member(s) [2] gave the words no importance" in exp.note
        spread = [onto_words(word_spans(TEXTS[i]), o[i].spans, o[i].importance) for o in others]
        np.testing.assert_allclose(exp.importance, np.mean([v / v.sum() for v in spread], axis=0), atol=1e-6)


def test_signed_attributions_are_summed_onto_words(members: list[Path], tmp_path: Path) -> None:
    member = load(members[0])
    ensemble = load(make_ensemble(members[:1], tmp_path / "one")["out_dir"])
    mine = explain(ensemble, TEXTS[:2], "integrated_gradients", ig_steps=8)
    theirs = explain(member, TEXTS[:2], "integrated_gradients", ig_steps=8)
    for exp, ref in zip(mine, theirs, strict=True):
        # float32 attributions of a few units: relative too (3.1e-6 apart at 2.86 was seen on this CPU)
        np.testing.assert_allclose(exp.importance, onto_words(word_spans(ref.text), ref.spans, ref.importance),
                                   atol=1e-6, rtol=1e-5)  # fmt: skip


def test_an_onnx_member_joins_a_torch_member(members: list[Path], tmp_path: Path) -> None:
    from attend.deploy.export import export_onnx

    onnx_dir = tmp_path / "onnx"
    export_onnx(members[1], onnx_dir, attentions=True, texts=TEXTS)
    report = make_ensemble([members[0], onnx_dir], tmp_path / "ens")
    assert report["unexplainable_members"] == []
    ensemble = load(report["out_dir"])
    assert ensemble.backend == "ensemble:torch,onnx"
    own = [load(members[0]).predict_proba(TEXTS), load(onnx_dir).predict_proba(TEXTS)]
    np.testing.assert_array_equal(ensemble.predict_proba(TEXTS), np.mean(np.stack(own).astype(np.float64), axis=0))
    methods = available_methods(ensemble)
    assert "rollout" in methods and "grad_attention" not in methods  # the ONNX member gives no gradients
    with pytest.raises(ValueError, match=r"member 1 of the ensemble .* cannot be explained with it \(method "
                                         r"'grad_attention' needs gradients, which an ONNX graph"):  # its reason, too
        explain(ensemble, TEXTS, "grad_attention")
    assert len(explain(ensemble, TEXTS, "rollout")) == len(TEXTS)
    with pytest.raises(ModelDirError, match=r"member members/01 \(from .*onnx\) has no int8 model: quantise that"):
        load(tmp_path / "ens", int8=True)
    # Exporting the ensemble names the member already exported as such (it had been among those to
    # export, which refuse an ONNX directory).
    with pytest.raises(ModelDirError, match=rf"export the source directory {re.escape(str(members[0].absolute()))} "
                                            rf"\({re.escape(str(onnx_dir.absolute()))} is an ONNX directory already: "
                                            r"keep as is\); then build"):  # fmt: skip
        export_onnx(tmp_path / "ens", tmp_path / "again")


def test_a_member_that_records_no_attention_is_said_when_the_ensemble_is_made(
        members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """An export without --attentions joined in silence, and explain then said "the ensemble offers []" alone."""
    from attend.deploy.export import export_onnx

    plain = tmp_path / "plain"
    export_onnx(members[1], plain, texts=TEXTS)
    assert main(["ensemble", str(members[0]), str(plain), "--out", str(tmp_path / "ens")]) == 0
    assert f"warning: {plain} records no attention (an ONNX graph exported without --attentions" \
        in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"member 1 of the ensemble .* \(this onnx model records no attention, so "
                                         r"method 'rollout' cannot explain it: .*--attentions\); the ensemble "
                                         r"offers \[\]"):  # fmt: skip
        explain(load(tmp_path / "ens"), TEXTS, "rollout")
    app = create_app(load(tmp_path / "ens"), ServeSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        said = client.post("/v1/explain", json={"text": TEXTS[0]}).json()
    assert "make the ensemble of the PyTorch model" in json.dumps(said) and "--runtime torch" not in json.dumps(said)


# --- serving and the command line -------------------------------------------------------------


def test_serve_predicts_and_explains_with_an_ensemble(ensemble_dir: Path) -> None:
    ensemble = load(ensemble_dir)
    app = create_app(ensemble, ServeSettings(max_batch=8, max_wait_ms=2, max_texts=5, max_chars=400))
    with TestClient(app, raise_server_exceptions=False) as client:
        body = client.post("/v1/predict", json={"texts": TEXTS[:2]}).json()
        probs = ensemble.predict_proba(TEXTS[:2])
        assert [p["label"] for p in body["predictions"]] == ["pos", "neg"]
        assert [p["probability"] for p in body["predictions"]] == pytest.approx(probs.max(1).tolist())
        explained = client.post("/v1/explain", json={"text": TEXTS[0], "method": "rollout"})
        assert explained.status_code == 200
        exp = explained.json()["explanations"][0]
        assert exp["tokens"] == ["the", "film", "was", "wonderful"] and exp["label"] == "pos"
        info = client.get("/v1/model").json()
        assert info["runtime"] == "ensemble:torch,torch,torch" and info["labels"] == ["neg", "pos"]
        assert info["limits"]["max_tokens"] == 128 and "rollout" in info["explain_methods"]
        assert info["config"]["ensemble"]["labels"] == ["neg", "pos"]


def test_cli_builds_and_uses_an_ensemble(members: list[Path], trained: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "ens"
    assert main(["ensemble", *map(str, members), "--out", str(out), "--weights", "1,1,2"]) == 0
    printed = capsys.readouterr().out
    assert "members/02" in printed and "weight 0.500" in printed and f"wrote {out}: the weighted mean of 3" in printed
    assert main(["predict", str(out), TEXTS[0], "--top-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == "pos"
    assert main(["evaluate", str(out), str(trained["data"]), "--json"]) == 0
    scored = capsys.readouterr()
    assert json.loads(scored.out)["accuracy"] > 0.9
    # An ensemble directory holds no metrics.json: the warning names where the held-out figures are.
    assert "(those are in its members' metrics.json files)" in scored.err, scored.err
    assert main(["explain", str(out), TEXTS[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["tokens"] == ["the", "film", "was", "wonderful"]
    assert main(["explain", str(out), TEXTS[0]]) == 0
    assert "wonderful" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "1,x"], "--weights '1,x': expected numbers"),
        # named as the flag, as typed (it had been "weights=[1.0, -2.0]: ...", the Python argument)
        (["--weights", "1,-2"], "error: --weights 1,-2: weight -2.0 must be a positive number"),
        (["--weights", "1"], "error: --weights 1: 1 weights for 2 members"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            args: list[str], message: str) -> None:  # fmt: skip
    code = main(["ensemble", str(members[0]), str(members[1]), "--out", str(tmp_path / "ens"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_refuses_mismatched_labels_export_and_maps(members: list[Path], ensemble_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    other = copy_model(members[1], tmp_path, "stars")
    _rewrite(other, labels=["neg", "five_stars"])
    assert main(["ensemble", str(members[0]), str(other), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err
    assert "['five_stars'] only in" in err and str(other) in err and "['pos'] only in" in err
    assert main(["export", str(ensemble_dir), "--onnx", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    sources = ", ".join(str(m.absolute()) for m in members)  # the directories to run the verb on instead
    assert f"is an ensemble of 3 models: it has no network of its own to export; export the source directories " \
           f"{sources}; then build the ensemble again" in err and "runtime" not in err  # it named runtime='torch'
    assert not (tmp_path / "onnx").exists()
    assert main(["quantize", str(ensemble_dir)]) == 2  # not "model.safetensors is missing": it has none to have
    assert f"no network of its own to quantise; quantise the source directories {sources}" in capsys.readouterr().err
    assert main(["prune", str(ensemble_dir), "--out", str(tmp_path / "pruned"), "--heads", "1"]) == 2
    assert "no network of its own to prune; prune the source directories" in capsys.readouterr().err
    # A member is covered by the ensemble's hashes: quantising it in place, or writing another model
    # into it (export, prune, train with --overwrite), would break the ensemble.
    member = ensemble_dir / "members" / "00"
    before = (member / "config.json").read_bytes()
    assert main(["quantize", str(member)]) == 2
    err = capsys.readouterr().err
    assert f"is a member of the ensemble {ensemble_dir.absolute()}" in err
    assert f"quantise the source directory {members[0].absolute()}; then build the ensemble again" in err
    assert main(["export", str(members[1]), "--onnx", str(member), "--overwrite"]) == 2
    assert f"{member.absolute()} is a member of the ensemble" in capsys.readouterr().err
    assert main(["prune", str(members[1]), "--out", str(member), "--heads", "1", "--overwrite"]) == 2
    assert "choose another output directory" in capsys.readouterr().err
    assert main(["prune", str(members[1]), "--out", str(member / ".." / "00"), "--heads", "1", "--overwrite"]) == 2
    assert "is a member of the ensemble" in capsys.readouterr().err  # the same member, named another way
    assert (member / "config.json").read_bytes() == before and load(ensemble_dir).predict(TEXTS[:1])
    # Members whose sources are gone (--model auto records "auto:NAME") are copied out instead.
    auto = tmp_path / "auto"
    shutil.copytree(ensemble_dir, auto)
    config = json.loads((auto / "config.json").read_text())
    for entry in config["ensemble"]["members"]:
        entry["source"] = "auto:encoder"
    (auto / "config.json").write_text(json.dumps(config))
    assert main(["quantize", str(auto / "members" / "01")]) == 2
    assert f"quantise a copy of {auto / 'members' / '01'}, whose source is gone (cp -r {auto / 'members' / '01'} " \
           "DIR); then build the ensemble again" in capsys.readouterr().err
    assert main(["quantize", str(auto)]) == 2
    copies = ", ".join(str(auto / "members" / f"0{i}") for i in range(3))
    assert f"quantise a copy of each of {copies}, whose source is gone" in capsys.readouterr().err
    assert main(["explain", str(ensemble_dir), TEXTS[0], "--png", str(tmp_path / "png")]) == 2
    assert "no attention maps of its own" in capsys.readouterr().err
    # The HTML report needs no maps: it shades the words by the members' averaged importance.
    assert main(["explain", str(ensemble_dir), TEXTS[0], "--html", str(tmp_path / "x.html")]) == 0
    page = (tmp_path / "x.html").read_text(encoding="utf-8")
    assert "HTML report" in capsys.readouterr().err and TEXTS[0].split()[0] in page and "<img" not in page


def test_a_members_own_files_are_not_copied_and_the_ensemble_is_replaced_again(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A user's notes beside a member's model had been copied into members/NN, and --overwrite of the
    ensemble then refused them as files attend did not write."""
    member = copy_model(trained["encoder"], tmp_path / "members", "noted")
    (member / "NOTES.md").write_text("mine")
    (member / "pruned").mkdir()
    (member / "pruned" / "x.txt").write_text("mine")
    out = tmp_path / "ens"
    make_ensemble([member], out)
    copied = out / "members" / "00"
    assert (copied / "config.json").is_file() and not (copied / "NOTES.md").exists()
    assert not (copied / "pruned").exists()
    make_ensemble([member], out, overwrite=True)  # had been refused: "holds members/00/NOTES.md"
    assert load(out).predict(TEXTS) == load(member).predict(TEXTS)
