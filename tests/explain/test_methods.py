"""Explanation methods: captured maps, rollout, flow, gradient-weighted attention, IG, focus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attend.attention import capture_attention
from attend.explain import (
    METHODS,
    Evidence,
    attention_flow,
    available_methods,
    distribution_focus,
    explain,
    faithfulness,
    focus,
    grad_rollout,
    map_focus,
    register_method,
    rollout,
    top_tokens,
)
from attend.explain.methods import NO_POSITIVE_POOLING
from attend.runtime import TorchTextClassifier, quantize_torch_model
from tests.conftest import NEGATIVE, POSITIVE, planted_rows
from tests.explain.conftest import MODEL_CONFIGS, TEXTS, untrained_predictor


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_captured_maps_are_distributions_and_masked_positions_are_zero(name: str) -> None:
    predictor = untrained_predictor(name)
    batch = predictor.tokenizer.encode(TEXTS)  # different lengths: padding in every row but one
    mask = batch.pop("attention_mask").bool()
    batch.pop("truncated")
    with capture_attention(predictor.model) as cap:
        logits = predictor.model({**batch, "attention_mask": mask.long()}).logits
    assert cap.records, "nothing was captured"
    real = mask[:, None, :]  # (B, 1, L)
    for weights in cap.weights:  # (B, H, L, L)
        rows = weights.sum(-1)  # (B, H, L)
        assert torch.allclose(rows.transpose(1, 2)[mask], torch.ones_like(rows.transpose(1, 2)[mask]), atol=1e-5)
        assert (weights.masked_select(~real[:, :, None, :].expand_as(weights)) == 0).all()
    for weights in cap.pooling_weights:  # (B, L)
        assert torch.allclose(weights.sum(-1), torch.ones(len(TEXTS)), atol=1e-5)
        assert (weights[~mask] == 0).all()
    # The captured forward gives exactly the prediction path's output.
    assert torch.equal(logits, predictor.model({**batch, "attention_mask": mask.long()}).logits)
    for method in ("attention", "rollout", "grad_attention"):
        for exp, length in zip(explain(predictor, TEXTS, method, maps=True), mask.sum(1).tolist(), strict=True):
            assert len(exp.tokens) == len(exp.importance) == len(exp.special) == length
            assert abs(sum(exp.importance) - 1) < 1e-5 and min(exp.importance) >= 0
            for layer in exp.maps or []:
                assert layer.shape[-2:] == (length, length)
                np.testing.assert_allclose(layer.sum(-1), 1.0, atol=1e-5)


def test_rollout_of_one_layer_is_its_residual_mixed_attention() -> None:
    torch.manual_seed(0)
    weights = torch.softmax(torch.randn(3, 4, 6, 6), -1)
    expected = 0.5 * weights.mean(1) + 0.5 * torch.eye(6)
    assert torch.allclose(rollout([weights]), expected, atol=1e-6)
    assert torch.allclose(rollout([weights], residual=False), weights.mean(1), atol=1e-6)
    two = rollout([weights, weights.flip(0)])
    assert torch.allclose(two, (0.5 * weights.flip(0).mean(1) + 0.5 * torch.eye(6)) @ expected, atol=1e-6)
    assert torch.allclose(two.sum(-1), torch.ones(3, 6), atol=1e-5)


def test_rollout_method_matches_the_formula_on_a_real_model() -> None:
    predictor = untrained_predictor("encoder_cls")
    exp = explain(predictor, [TEXTS[1]], "rollout", maps=True)[0]
    maps = [torch.from_numpy(m)[None] for m in exp.maps]
    expected = rollout(maps)[0, 0]  # [CLS] pooling: the first row
    special = torch.tensor(exp.special)
    assert torch.allclose(torch.tensor(exp.importance), expected / expected.sum(), atol=1e-5)
    assert special[0] and special[-1] and not special[1:-1].any()


def test_attention_flow_follows_capacities() -> None:
    # Identity attention: each position keeps its own information, so flow equals the readout.
    eye = torch.eye(4).expand(1, 2, 4, 4)
    r = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    assert torch.allclose(attention_flow([eye, eye], r, [4]), r, atol=1e-5)
    # Two tokens, one layer, A = [[0, 1], [0, 1]]: Ã = [[.5, .5], [0, 1]]; from a readout on token 0,
    # half of its unit flow reaches each input.
    a = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    flow = attention_flow([a], torch.tensor([[1.0, 0.0]]), [2])
    assert torch.allclose(flow, torch.tensor([[0.5, 0.5]]), atol=1e-5)
    # Padding never receives flow.
    padded = attention_flow([torch.softmax(torch.randn(1, 2, 5, 5), -1)], torch.tensor([[0.5, 0.5, 0, 0, 0]]), [2])
    assert (padded[0, 2:] == 0).all() and abs(float(padded.sum()) - 1) < 1e-5


def test_grad_rollout_with_zero_gradient_is_the_identity() -> None:
    maps = [torch.softmax(torch.randn(2, 3, 5, 5), -1) for _ in range(2)]
    assert torch.allclose(grad_rollout(maps, [torch.zeros_like(m) for m in maps]), torch.eye(5).expand(2, 5, 5))
    grads = [torch.ones_like(m) for m in maps]  # then relu(A * 1) = A and R = (I + A2)(I + A1)
    a1, a2 = (m.mean(1) for m in maps)
    expected = (torch.eye(5) + a2) @ (torch.eye(5) + a1)
    assert torch.allclose(grad_rollout(maps, grads), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["encoder_attention_pool", "bilstm_attention", "minilm"])
def test_integrated_gradients_are_complete(name: str) -> None:
    """Attributions sum to logit(x) - logit(baseline), the baseline being every text token as [PAD]."""
    predictor = untrained_predictor(name)
    texts = TEXTS[:2]
    exps = explain(predictor, texts, "integrated_gradients", ig_steps=64)
    batch = predictor.tokenizer.encode(texts)
    batch.pop("truncated")
    ids = batch["input_ids"]
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token in predictor.tokenizer.special_ids:
        special |= ids == token
    baseline = {**batch, "input_ids": torch.where(special, ids, torch.full_like(ids, predictor.tokenizer.pad_id))}
    with torch.no_grad():
        diff = predictor.model(batch).logits - predictor.model(baseline).logits
    for i, exp in enumerate(exps):
        target = predictor.labels.index(exp.target)
        assert math.isclose(sum(exp.importance), float(diff[i, target]), rel_tol=0.02, abs_tol=2e-3), name
        # The note gives this text's own error (before: the batch's worst, so a note moved with its batch).
        error = float(exp.note.rsplit("|completeness error| ", 1)[1])
        assert error == pytest.approx(abs(sum(exp.importance) - float(diff[i, target])), rel=0.05, abs=1e-5), name


def _planted_position(exp) -> int:
    words = set(POSITIVE + NEGATIVE)
    return next(i for i, t in enumerate(exp.tokens) if t in words)


@pytest.mark.parametrize("model", ["encoder", "encoder_cls", "bilstm_attention"])
def test_every_method_ranks_the_planted_word_first(planted_models: dict, model: str) -> None:
    """The label is decided by one planted word: each method must put it first for most texts.

    A random ranking would hit about 1 in 9 (texts have 5-13 words); every method must hit a majority,
    except raw last-layer attention, which is not asserted on: trained models may route the word's
    information through other positions, so one layer's map sees only part of it, or none (rollout,
    flow and gradient-weighted attention follow the routing). Over training seeds 0-2 of this
    fixture's encoder, raw attention hit 0.0, 0.67 and 0.53 of the texts (0.38, 0.55 and 0.48 with
    length-grouped batches) while rollout hit 0.87-1.0 in every case: how faithful the raw map is
    depends on the training run, not on the method's code, whose correctness the capture tests
    above check. Before the training-RNG change of 2026-12-04 (attend.attention.dropout) seed 0 gave 0.47.
    """
    predictor = planted_models[model]
    texts = [row["text"] for row in planted_rows(60, seed=99)]
    rates = {}
    for method in [name for name, registered in METHODS.items() if not registered.baseline] + ["random"]:
        if method == "pooling" and model == "encoder_cls":
            continue  # no attention pooling to read
        exps = explain(predictor, texts, method)
        rates[method] = sum(top_tokens(e, 1)[0][0] == e.tokens[_planted_position(e)] for e in exps) / len(exps)
    assert rates.pop("random") < 0.25, rates
    rates.pop("attention")
    assert min(rates.values()) > 0.5, rates
    assert rates["rollout"] >= 0.8 and rates["grad_attention"] >= 0.8, rates


def test_unknown_method_layer_head_and_target_are_clear_errors() -> None:
    predictor = untrained_predictor("encoder_cls")
    with pytest.raises(ValueError, match="method='nope'"):
        explain(predictor, ["a"], "nope")
    with pytest.raises(ValueError, match="layer=5; this model has 2 layers"):
        explain(predictor, ["a"], "attention", layer=5)
    with pytest.raises(ValueError, match="head=4; this model has 4 heads"):
        explain(predictor, ["a"], "attention", head=4)
    with pytest.raises(ValueError, match="target='maybe' is not a label"):
        explain(predictor, ["a"], target="maybe")
    with pytest.raises(ValueError, match="texts\\[1\\] is an empty text"):
        explain(predictor, ["a", " "])
    with pytest.raises(ValueError, match="has no attention pooling"):
        explain(predictor, ["a"], "pooling")
    # The label another label's explanation reads: the attention methods are the same whatever it is
    # (they said "explaining positive" over the predicted label's evidence).
    label = predictor.labels[0]
    for method in ("attention", "rollout", "flow"):
        with pytest.raises(ValueError, match=f"method '{method}' does not depend on the label"):
            explain(predictor, ["a"], method, target=label)
    assert explain(predictor, ["a"], "grad_attention", target=label)[0].target == label
    # Arguments of the wrong type are named (they were numpy, torch or Captum errors from inside).
    for bad, message in (({"head": 1.5}, "head=1.5 must be"), ({"head": True}, "head=True must be"),
                         ({"layer": True}, "layer=True must be"), ({"ig_steps": 2.5}, "ig_steps=2.5 must be"),
                         ({"seed": 2**70}, r"seed=\d+ must be"), ({"seed": -1}, "seed=-1 must be")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            explain(predictor, ["a"], "attention", **bad)
    with pytest.raises(ValueError, match="texts must be a list of strings, not NoneType"):
        explain(predictor, None)  # type: ignore[arg-type]
    from attend.explain import faithfulness

    with pytest.raises(ValueError, match=r"methods='rollout' must be a list of method names"):
        faithfulness(predictor, ["a b"], "rollout")  # type: ignore[arg-type]


def test_tokens_are_shown_as_the_text_spells_them_combining_marks_included() -> None:
    """The printed top tokens were the model's ("[UNK]", lower case) and "cafe" + U+0301 lost its accent."""
    predictor = untrained_predictor("encoder_cls")
    (exp,) = explain(predictor, ["Great cafe\u0301 KETTLE 😀"], "rollout")
    shown = {token for token, _ in top_tokens(exp, 20)}
    assert ("KETTLE" in shown or "##TLE" in " ".join(shown)) and "[UNK]" not in shown
    assert any("\u0301" in token for token in exp.display_tokens())
    # Marked where asked (the CLI's text output): the text's characters, then what the model read instead.
    (unread,) = explain(predictor, ["Great \u9f98 film"], "rollout")
    marked = [token for token, _ in top_tokens(unread, 20, mark_unknown=True)]
    assert "\u9f98[UNK]" in marked and "Great" in marked


def test_a_text_the_model_cannot_read_says_its_explanation_is_a_guess() -> None:
    """`predict` warned of it; `explain` credited [UNK] with the guess without a word."""
    predictor = untrained_predictor("encoder_cls")
    unreadable, readable = explain(predictor, ["😀😀", "a"], "rollout")
    assert unreadable.note.startswith("no piece of this text is in the model's vocabulary (all [UNK])")
    assert "[UNK]" not in readable.note


def test_a_runtime_that_records_no_attention_is_refused_for_every_method() -> None:
    """PyTorch int8 reports no maps, pooling or gradients (the service answers 400); explaining it from
    Python says so too, rather than computing what the runtime claims it cannot."""
    predictor = untrained_predictor("encoder_cls")
    int8 = TorchTextClassifier(model=quantize_torch_model(predictor.model), tokenizer=predictor.tokenizer,
                               labels=predictor.labels, config=predictor.config, precision="int8")  # fmt: skip
    assert available_methods(int8) == []
    for method in ("attention", "rollout"):
        with pytest.raises(ValueError, match=f"this torch-int8 model records no attention, so method '{method}'"):
            explain(int8, ["a"], method)
    with pytest.raises(ValueError, match=r"'grad_attention' needs gradients, .* use the PyTorch fp32 model"):
        explain(int8, ["a"], "grad_attention")
    with pytest.raises(ValueError, match="records no attention, so no explanation method can run on it"):
        faithfulness(int8, ["a"])  # before: an empty report, exit 0


def test_a_registered_method_is_offered_and_explains_from_the_shared_evidence() -> None:
    """A method is one function of a batch's evidence; every model and the service's list get it."""

    def last_token(evidence: Evidence) -> tuple[torch.Tensor, str]:
        lengths = evidence.mask.sum(1).long()
        importance = torch.zeros_like(evidence.mask)
        importance[torch.arange(len(lengths)), lengths - 2] = 1.0  # the last text token, before [SEP]
        return importance, "the last word"

    register_method("last_token")(last_token)
    try:
        predictor = untrained_predictor("bilstm_attention")
        assert "last_token" in available_methods(predictor)
        exp = explain(predictor, ["the film was great", "a dull plot"], "last_token")
        assert [top_tokens(e, 1)[0][0] for e in exp] == ["great", "plot"] and exp[0].note == "the last word"
        with pytest.raises(ValueError, match="already registered"):
            register_method("rollout")(last_token)
    finally:
        METHODS.pop("last_token")


def test_target_explains_another_label_and_long_texts_are_truncated() -> None:
    predictor = untrained_predictor("encoder_attention_pool")
    long_text = " ".join(["the music and the camera"] * 40)
    exp = explain(predictor, [long_text, "great"], "grad_attention", target="neg")
    assert exp[0].truncated and len(exp[0].tokens) == predictor.tokenizer.max_length
    assert exp[0].target == "neg" and exp[1].target == "neg"
    layer_head = explain(predictor, ["the film was great"], "attention", layer="mean", head=1)[0]
    assert abs(sum(layer_head.importance) - 1) < 1e-5


def test_focus_metrics_of_extreme_distributions() -> None:
    uniform = distribution_focus(torch.ones(8))
    assert uniform["entropy"] == pytest.approx(1.0) and uniform["effective_tokens"] == pytest.approx(8.0)
    assert uniform["top_k_mass"] == pytest.approx(3 / 8)
    peaked = distribution_focus(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert peaked["entropy"] == pytest.approx(0.0) and peaked["effective_tokens"] == pytest.approx(1.0)
    assert peaked["top_k_mass"] == pytest.approx(1.0)
    kept = distribution_focus(torch.tensor([5.0, 1.0, 1.0, 5.0]), [False, True, True, False])
    assert kept["tokens"] == 2 and kept["entropy"] == pytest.approx(1.0)
    # Maps: head 0 uniform over the 3 real keys, head 1 one-hot; padding neither counted nor attended.
    mask = torch.tensor([[1, 1, 1, 0]])
    weights = torch.zeros(1, 2, 4, 4)
    weights[0, 0, :, :3] = 1 / 3
    weights[0, 1, :, 1] = 1.0
    metrics = map_focus(weights, mask, k=1)
    assert torch.allclose(metrics["entropy"], torch.tensor([[1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(metrics["effective_tokens"], torch.tensor([[3.0, 1.0]]), atol=1e-5)
    assert torch.allclose(metrics["top_k_mass"], torch.tensor([[1 / 3, 1.0]]), atol=1e-6)


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_model_focus_in_one_call(name: str) -> None:
    predictor = untrained_predictor(name)
    report = focus(predictor, TEXTS)
    assert report["texts"] == len(TEXTS)
    if name == "bilstm_attention":
        assert report["layers"] == [] and 0 <= report["pooling"]["entropy"] <= 1
    else:
        config = predictor.model.config
        heads = config.num_heads if hasattr(config, "num_heads") else config.bert_config().num_heads
        assert len(report["layers"][0]["entropy"]) == heads
        assert 0 < report["overall"]["entropy"] <= 1 and report["overall"]["effective_tokens"] >= 1


def test_one_layer_attention_captures_only_that_layer_and_matches_the_full_capture() -> None:
    from attend.attention import recordable_names

    predictor = untrained_predictor("minilm")
    layers = recordable_names(predictor.model, "attention")
    assert len(layers) == 2 and recordable_names(predictor.model, "pooling") == []
    batch = predictor.tokenizer.encode(TEXTS)
    batch.pop("truncated")
    with capture_attention(predictor.model, names=[layers[0]]) as one, capture_attention(predictor.model) as every:
        predictor.model(batch)
    assert len(one.weights) == 1 and len(every.weights) == 2
    assert torch.equal(one.weights[0], every.weights[0])
    with pytest.raises(ValueError, match="no attention module named"):
        capture_attention(predictor.model, names=["nope"])
    for layer in (0, 1, -1):
        fast = explain(predictor, TEXTS, "attention", layer=layer)  # captures one layer
        full = explain(predictor, TEXTS, "attention", layer=layer, maps=True)  # captures every layer
        for a, b in zip(fast, full, strict=True):
            np.testing.assert_allclose(a.importance, b.importance, atol=1e-6)


def test_spans_show_the_users_characters() -> None:
    predictor = untrained_predictor("minilm")  # uncased, and without these CJK characters
    exp = explain(predictor, ["Great 服务"], "attention")[0]
    assert exp.tokens == ["[CLS]", "great", "[UNK]", "[UNK]", "[SEP]"]
    assert exp.display_tokens() == ["[CLS]", "Great", "服", "务", "[SEP]"]
    assert exp.to_dict()["spans"] == [None, [0, 5], [6, 7], [7, 8], None]
    # SentencePiece's word-start mark as a piece of its own, over the space before a word (e5 on
    # "股票 市场"): listed as the mark, as where it covers nothing; it had been a blank entry.
    from attend.explain.methods import Explanation, top_tokens

    pieces = Explanation(text="股票 市场", tokens=["[CLS]", "▁股票", "▁", "市场", "[SEP]"],
                         importance=[0.0, 0.2, 0.5, 0.3, 0.0], special=[True, False, False, False, True], label="a",
                         probability=1.0, target="a", method="attention", truncated=False, focus={},
                         spans=[None, (0, 2), (2, 3), (3, 5), None])  # fmt: skip
    assert pieces.display_tokens() == ["[CLS]", "股票", "▁", "市场", "[SEP]"]
    assert top_tokens(pieces, 1) == [("▁", 0.5)]
    # One unknown "word" of 100,000 letters is listed by its start (the monitor had stored it whole
    # as a highlighted word).
    giant = explain(predictor, ["x" * 100_000], "attention")[0]
    (shown,) = [t for t, s in zip(giant.display_tokens(), giant.special, strict=True) if not s]
    assert shown == "x" * 63 + "…"


def test_an_integrated_gradients_note_gives_its_own_texts_completeness_error() -> None:
    """Before: every text's note gave the batch's worst error, so a text's note moved with its batch."""
    predictor = untrained_predictor("encoder_attention_pool")
    texts = [TEXTS[0], " ".join(TEXTS) * 3]
    batched = explain(predictor, texts, "integrated_gradients", ig_steps=4)
    alone = [explain(predictor, [text], "integrated_gradients", ig_steps=4)[0] for text in texts]
    errors = [float(exp.note.rsplit("|completeness error| ", 1)[1]) for exp in batched]
    assert errors[0] != errors[1]
    assert errors == pytest.approx([float(exp.note.rsplit("| ", 1)[1]) for exp in alone], rel=0.02)


def test_layer_and_head_are_refused_for_methods_that_read_every_layer() -> None:
    """Before: explain(..., "rollout", layer=0, head=1) ignored both and said nothing (the CLI refuses them)."""
    predictor = untrained_predictor("encoder_attention_pool")
    with pytest.raises(ValueError, match=r"layer=0, head=1: for method 'attention' only \('rollout' does not read"):
        explain(predictor, TEXTS[:1], "rollout", layer=0, head=1)
    (read,) = explain(predictor, TEXTS[:1], "attention", layer=-1, head=1)
    assert read.method == "attention" and (read.layer, read.head) == (-1, 1)  # as given: the last
    from attend.explain import render_html

    (read,) = explain(predictor, TEXTS[:1], "attention", layer=-1, head=1, maps=True)
    assert read.layer == -1  # the same, whatever was captured
    assert f"Layer {len(read.maps or []) - 1}: attention per head" in render_html([read])  # drawn: that layer
    # What was read is recorded (JSON, HTML, PNG title), and the HTML shows that layer's heatmaps.
    (first,) = explain(predictor, TEXTS[:1], "attention", layer=0, head=1, maps=True)
    assert first.to_dict()["layer"] == 0 and first.to_dict()["head"] == 1
    page = render_html([first])
    assert ", layer 0, head 1</p>" in page and "Layer 0: attention per head" in page
    assert "layer" not in explain(predictor, TEXTS[:1], "rollout")[0].to_dict()
    # A model with no self-attention layers has no layer or head to choose: refused, not ignored.
    bilstm = untrained_predictor("bilstm_attention")
    with pytest.raises(ValueError, match=r"layer=5, head=9: bilstm_attention has no self-attention layers"):
        explain(bilstm, TEXTS[:1], "attention", layer=5, head=9)
    assert explain(bilstm, TEXTS[:1], "attention")[0].layer is None


def test_spans_cover_the_combining_marks_after_a_token() -> None:
    """Before: "cafe" + U+0301's span ended before the accent, so the spans left characters out."""
    predictor = untrained_predictor("encoder_cls")
    text = "cafe\u0301 re\u0301sume\u0301"
    (exp,) = explain(predictor, [text], "rollout")
    covered = {i for span in exp.spans or [] if span is not None for i in range(*span)}
    assert covered == {i for i, ch in enumerate(text) if not ch.isspace()}


def test_a_png_explaining_another_label_names_it() -> None:
    """Before: the chart with --target was titled with the predicted label over the target's bars."""
    from attend.explain.render import _heading

    predictor = untrained_predictor("encoder_cls")
    other = next(label for label in predictor.labels if label != explain(predictor, ["a"], "grad_attention")[0].label)
    (exp,) = explain(predictor, ["a"], "grad_attention", target=other)
    assert _heading(exp).startswith(f"grad_attention: explaining {other} ({exp.explained_probability:.2f}; predicted "
                                    f"{exp.label}, ")


def test_the_random_baseline_of_a_text_does_not_depend_on_the_texts_explained_with_it() -> None:
    """Its seeds were the texts' places in the call: `attend explain --input` (64 at a time) and
    POST /v1/explain (8 at a time) drew otherwise than one call over the whole list."""
    predictor = untrained_predictor("encoder_cls")
    texts = [f"the film number {i} was {'wonderful' if i % 2 else 'dull'}" for i in range(10)]
    whole = [exp.importance for exp in explain(predictor, texts, "random")]
    parts = [exp.importance for part in (texts[:3], texts[3:8], texts[8:])
             for exp in explain(predictor, part, "random")]  # fmt: skip
    assert parts == whole
    assert whole[0] != whole[2]  # texts of the same length draw apart
    assert [e.importance for e in explain(predictor, texts[:2], "random", seed=1)] != whole[:2]


@pytest.mark.parametrize("model", ["encoder", "bilstm_attention"])
def test_grad_attention_says_when_no_token_raises_the_explained_label(
    planted_models: dict[str, TorchTextClassifier], model: str
) -> None:
    # A label the text argues against: no pooling weight times its gradient is positive. The map had been
    # the pooling weights alone (label-independent: 'zebra drives neg') or, without self-attention, uniform
    # over every token, each given as that label's evidence without a word.
    predictor = planted_models[model]
    texts = [row["text"] for row in planted_rows(30, seed=7)]
    predicted = explain(predictor, texts, "grad_attention")
    others = [next(label for label in predictor.labels if label != e.label) for e in predicted]
    flagged = 0
    for text, other, mine in zip(texts, others, predicted, strict=True):
        (theirs,) = explain(predictor, [text], "grad_attention", target=other)
        if NO_POSITIVE_POOLING in theirs.note:
            flagged += 1
            assert "not evidence" in theirs.note or "do not depend on the label" in theirs.note
        assert NO_POSITIVE_POOLING not in mine.note  # the predicted label's own evidence is there
    assert flagged > 0  # the planted words argue against the other label in many of these texts
