"""Prediction batching: the padding-aware batch plan, and that batching never changes an answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attend.data.batching import CALL_COST_TOKENS, length_batches
from attend.runtime import classifier
from tests.explain.conftest import untrained_predictor


def _cost(lengths: list[int], batches: list[list[int]], call_cost: float) -> float:
    return sum(call_cost + len(b) * max(lengths[i] for i in b) for b in batches)


def _partitions(items: list[int]):
    """Every way to split ``items`` into non-empty groups (not only runs of sorted lengths)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        yield [[first], *partition]
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1 :]]


@settings(max_examples=120, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=6),
    batch_size=st.integers(1, 6),
    call_cost=st.sampled_from([0.0, 3.0, 32.0, 500.0]),
)
def test_plan_is_a_partition_and_as_cheap_as_any_partition(
    lengths: list[int], batch_size: int, call_cost: float
) -> None:
    plan = length_batches(lengths, batch_size, call_cost=call_cost)
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in plan)
    best = min(
        _cost(lengths, p, call_cost)
        for p in _partitions(list(range(len(lengths))))
        if all(len(b) <= batch_size for b in p)
    )
    assert _cost(lengths, plan, call_cost) == pytest.approx(best)


def test_plan_splits_off_outliers_only_when_worth_a_call() -> None:
    lengths = [10] * 15 + [60]
    assert length_batches(lengths, 32, call_cost=32) == [list(range(15)), [15]]  # saves 15 * 50 padded tokens
    assert length_batches(lengths, 32, call_cost=10_000) == [list(range(16))]  # a call costs more than padding
    assert sorted(map(len, length_batches([5, 5, 5], 2))) == [1, 2]  # batch_size bounds a batch
    assert length_batches([], 8) == []
    with pytest.raises(ValueError, match="batch_size=0"):
        length_batches([3], 0)


@pytest.mark.parametrize("name", ["encoder_cls", "bilstm_attention", "minilm"])
def test_batched_predictions_equal_one_text_at_a_time(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = untrained_predictor(name)
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "the", "a", "music", "camera", "story", "long"]
    texts = [" ".join(rng.choice(words, size=n)) for n in [1, 2, 40, 3, 5, 70, 4, 9, 2, 30, 6, 1]]
    alone = np.stack([predictor.predict_proba([t])[0] for t in texts])
    for batch_size in (1, 4, 64):
        batched, truncated = predictor.predict_proba_truncated(texts, batch_size=batch_size)
        assert np.abs(batched - alone).max() < 1e-5, batch_size
        full = [e.ids for e in predictor.tokenizer.tokenizer.encode_batch(texts)]
        assert truncated.tolist() == [len(ids) > predictor.tokenizer.max_length for ids in full]
    assert truncated.any() and not truncated.all()  # the 70-word text is cut to max_length=64
    monkeypatch.setattr(classifier, "PLAN_WINDOW", 5)  # planned in windows: same answers, same order
    windowed, windowed_cut = predictor.predict_proba_truncated(texts, batch_size=4)
    assert np.abs(windowed - alone).max() < 1e-5 and windowed_cut.tolist() == truncated.tolist()


def test_bf16_predictions_stay_close_and_explanations_work() -> None:
    predictor = untrained_predictor("minilm")
    texts = ["the film was wonderful", "a dreadful plot", "great"]
    reference = predictor.predict_proba(texts)
    predictor.model = predictor.model.to(torch.bfloat16)
    half = predictor.predict_proba(texts)
    assert half.dtype == np.float32 and np.abs(half - reference).max() < 0.02
    explained = predictor.explain(texts[:1], "grad_attention")[0]
    assert len(explained["importance"]) == len(explained["tokens"]) and np.isfinite(explained["importance"]).all()


def test_a_model_that_skips_padding_is_planned_into_fewer_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = untrained_predictor("minilm")
    lengths = [4] * 15 + [9]  # one longer text among short ones
    padded_plan = length_batches(lengths, 32, call_cost=CALL_COST_TOKENS)
    assert len(padded_plan) == 2  # a padded model splits off the long text (saves 15 * 5 positions, more than a call)
    calls: list[int] = []
    original = predictor.probabilities
    monkeypatch.setattr(predictor, "probabilities", lambda enc: calls.append(1) or original(enc))
    texts = [" ".join(["word"] * (n - 2)) for n in lengths]  # [CLS] + words + [SEP]
    assert sorted(len(ids) for ids in predictor.tokenizer.ids(texts)) == sorted(lengths)
    predictor.predict_proba(texts, batch_size=32)
    assert len(calls) == 1  # MiniLM unpads: padding costs it a quarter, so one call is cheaper
    predictor.model.encoder.unpad = False
    calls.clear()
    predictor.predict_proba(texts, batch_size=32)
    assert len(calls) == 2
