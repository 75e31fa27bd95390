"""The encoder-decoder translator: causality, the key/value cache, and greedy and beam search."""

from __future__ import annotations

import pytest
import torch

from attend.attention import KeyValueCache, MultiHeadAttention, multihead
from attend.models import build, config_from_dict
from attend.models.generation import GenerationOptions, beam_search
from attend.models.seq2seq import Seq2Seq
from tests.conftest import SMALL_SEQ2SEQ


def _model(seed: int = 0, **overrides: object) -> Seq2Seq:
    torch.manual_seed(seed)
    model = build({"model_type": "seq2seq", **SMALL_SEQ2SEQ["seq2seq"], **overrides}).eval()
    assert isinstance(model, Seq2Seq)
    return model


def _sources() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 40, (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate([9, 6, 3, 7]):
        ids[row, length:] = 0
        mask[row, length:] = 0
    return ids, mask


def _reference_greedy(model: Seq2Seq, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> list[list[int]]:
    """Greedy search written out plainly: one source at a time, the whole prefix re-run each step."""
    outputs = []
    for row in range(ids.shape[0]):
        length = int(mask[row].sum())
        source, source_mask = ids[row : row + 1, :length], mask[row : row + 1, :length]
        memory = model.encode(source, source_mask)
        prefix = [model.config.bos_id]
        for _ in range(steps):
            logits = model.decode(torch.tensor([prefix]), memory, source_mask == 0)[0, -1]
            logits[[model.config.pad_id, model.config.bos_id]] = float("-inf")
            token = int(logits.argmax())
            if token == model.config.eos_id:
                break
            prefix.append(token)
        outputs.append(prefix[1:])
    return outputs


def test_every_parameter_learns_and_the_config_round_trips() -> None:
    model = _model().train()
    ids, mask = _sources()
    decoder = torch.randint(4, 40, (4, 5))
    logits = model({"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder}).logits
    assert logits.shape == (4, 5, 40) and torch.isfinite(logits).all()
    logits.pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing
    rebuilt = build(config_from_dict(model.config.to_dict())).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    batch = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder}
    torch.testing.assert_close(rebuilt(batch).logits, model(batch).logits)


def test_a_shared_vocabulary_is_one_table_and_separate_ones_are_two() -> None:
    shared, separate = _model(), _model(target_vocab_size=30)
    assert shared.target_embed is shared.embed and "separate_target_embed.weight" not in shared.state_dict()
    assert separate.target_embed is not separate.embed and separate.target_embed.num_embeddings == 30


def test_future_target_tokens_cannot_change_earlier_outputs() -> None:
    model = _model()
    ids, mask = _sources()
    decoder = torch.randint(4, 40, (4, 8), generator=torch.Generator().manual_seed(2))
    changed = decoder.clone()
    changed[:, 5:] = torch.randint(4, 40, (4, 3), generator=torch.Generator().manual_seed(3))
    before = model({"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder}).logits
    after = model({"input_ids": ids, "attention_mask": mask, "decoder_input_ids": changed}).logits
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_source_padding_does_not_change_the_output() -> None:
    model = _model()
    ids, mask = _sources()
    decoder = torch.randint(4, 40, (1, 6))
    alone = model({"input_ids": ids[2:3, :3], "attention_mask": mask[2:3, :3], "decoder_input_ids": decoder}).logits
    padded = model({"input_ids": ids[2:3], "attention_mask": mask[2:3], "decoder_input_ids": decoder}).logits
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_the_encoder_skips_source_padding_with_the_padded_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from attend.attention.unpad import TokenLayout

    model = _model()
    ids, mask = _sources()
    assert (mask == 0).float().mean() >= 0.05, "too little padding to unpad: nothing tested"
    packed: list[torch.Size] = []
    original = TokenLayout.pack

    def pack(self: TokenLayout, x: torch.Tensor) -> torch.Tensor:
        out = original(self, x)
        packed.append(out.shape)
        return out

    monkeypatch.setattr(TokenLayout, "pack", pack)
    unpadded = model.encode(ids, mask)
    assert packed and packed[0] == (int(mask.sum()), 16)  # the blocks ran on the real tokens
    monkeypatch.setattr(TokenLayout, "when_worth_it", classmethod(lambda cls, *a, **k: None))
    padded = model.encode(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(unpadded[real], padded[real], atol=1e-5, rtol=1e-5)
    assert not unpadded[~real].any()  # zeros at padding, which cross-attention masks anyway


def test_cached_steps_equal_the_full_decoder_pass() -> None:
    model = _model()
    ids, mask = _sources()
    decoder = torch.randint(4, 40, (4, 7))
    memory = model.encode(ids, mask)
    full = torch.log_softmax(model.decode(decoder, memory, mask == 0), -1)
    cache = model.new_cache()
    steps = torch.stack([model.step(decoder[:, t : t + 1], memory, mask == 0, cache) for t in range(7)], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    assert cache.length == 7


@pytest.mark.parametrize("beam", [1, 3])
def test_decoding_with_and_without_the_cache_gives_the_same_outputs(beam: int) -> None:
    model = _model()
    ids, mask = _sources()
    cached = beam_search(model, ids, mask, GenerationOptions(beam=beam, use_cache=True))
    recomputed = beam_search(model, ids, mask, GenerationOptions(beam=beam, use_cache=False))
    assert [h.tokens for h in cached] == [h.tokens for h in recomputed]
    assert [h.score for h in cached] == pytest.approx([h.score for h in recomputed], abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_is_greedy(seed: int) -> None:
    model = _model(seed)
    ids, mask = _sources()
    options = GenerationOptions(beam=1, max_length_a=0.0, max_length_b=12)
    found = beam_search(model, ids, mask, options)
    expected = _reference_greedy(model, ids, mask, steps=12)
    assert [h.tokens for h in found] == expected


def test_a_wider_beam_finds_outputs_at_least_as_likely_as_greedy() -> None:
    model = _model(4)
    ids, mask = _sources()
    options = {"length_penalty": 0.0, "max_length_a": 0.0, "max_length_b": 6}
    greedy = beam_search(model, ids, mask, GenerationOptions(beam=1, **options))
    wide = beam_search(model, ids, mask, GenerationOptions(beam=8, **options))
    for g, w in zip(greedy, wide, strict=True):
        assert w.log_prob >= g.log_prob - 1e-5
    assert any(w.log_prob > g.log_prob + 1e-3 for g, w in zip(greedy, wide, strict=True))


def test_beam_search_keeps_going_while_an_open_prefix_beats_the_endings_it_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unlikely short beams that end at once had filled the K finished places, and the source was
    declared done before its likeliest output (already far ahead) could end: beam 4 translated a toy
    model's "dog cat dog cat" as "cat dog cat" (score -1.8) where greedy found "cat dog cat dog" (-0.004)."""
    from attend.models import generation

    model = _model()
    eos, junk = model.config.eos_id, 7
    good = {model.config.bos_id: 10, 10: 11, 11: 12, 12: 13, 13: eos}  # the likely output: 10 11 12 13
    vocab = model.config.output_vocab_size

    def scripted(self: generation._Stepper) -> torch.Tensor:  # the next token's log-probs from the last one
        logits = torch.full((self.prefix.shape[0], vocab), -20.0)
        for row, last in enumerate(self.prefix[:, -1].tolist()):
            if last == junk:
                logits[row, eos] = 0.0  # a junk token ends the output at once
            else:
                logits[row, good.get(last, eos)] = 5.0
                logits[row, junk] = 2.0
        return torch.log_softmax(logits, dim=-1)

    monkeypatch.setattr(generation._Stepper, "log_probs", scripted)
    ids, mask = torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.long)
    options = {"max_length_a": 0.0, "max_length_b": 12}
    greedy = beam_search(model, ids, mask, GenerationOptions(beam=1, **options))[0]
    assert greedy.tokens == [10, 11, 12, 13]
    for beam in (2, 3, 4):
        found = beam_search(model, ids, mask, GenerationOptions(beam=beam, **options))[0]
        assert found.tokens == greedy.tokens and found.score == pytest.approx(greedy.score), (beam, found)


def test_a_search_whose_every_token_is_banned_answers_an_empty_output() -> None:
    """no_repeat_ngram=1 on a vocabulary of 7 (3 words and <unk> beside the specials) runs out of
    tokens while min_length still forbids </s>: max() of no hypothesis had raised a ValueError."""
    model = _model(vocab_size=7)
    ids, mask = torch.tensor([[4, 5, 3]]), torch.ones(1, 3, dtype=torch.long)
    for beam in (1, 3):
        (found,) = beam_search(model, ids, mask, GenerationOptions(beam=beam, no_repeat_ngram=1, min_length=8))
        assert found.tokens == [] and found.score == float("-inf") and not found.finished


def test_an_output_may_take_every_position_of_the_decoder() -> None:
    """The limit had been one token under the model's max_length: such an output was cut a token early
    (training feeds targets of max_length tokens, </s> included)."""
    model = _model(max_length=8)
    ids, mask = torch.tensor([[4, 5, 6]]), torch.ones(1, 3, dtype=torch.long)
    (found,) = beam_search(model, ids, mask, GenerationOptions(beam=1, max_length_a=0.0, max_length_b=100,
                                                               min_length=100))  # never ends by itself
    assert len(found.tokens) == 8 and not found.finished


def test_no_repeat_ngram_forbids_repeated_bigrams() -> None:
    model = _model()
    ids, mask = _sources()
    found = beam_search(model, ids, mask, GenerationOptions(beam=2, no_repeat_ngram=2, max_length_b=20))
    for hyp in found:
        bigrams = list(zip(hyp.tokens, hyp.tokens[1:], strict=False))
        assert len(bigrams) == len(set(bigrams)), hyp.tokens
    plain = beam_search(model, ids, mask, GenerationOptions(beam=2, max_length_b=20))
    assert any(len(set(zip(h.tokens, h.tokens[1:], strict=False))) < len(h.tokens) - 1 for h in plain), \
        "the untrained model repeats nothing here, so the ban is not exercised"  # fmt: skip


def test_outputs_respect_the_length_limit() -> None:
    model = _model()
    ids, mask = _sources()
    found = beam_search(model, ids, mask, GenerationOptions(beam=2, max_length_a=0.5, max_length_b=2))
    for hyp, length in zip(found, mask.sum(1).tolist(), strict=True):
        assert len(hyp.tokens) <= int(0.5 * length + 2)


def test_bad_options_and_configs_name_the_field() -> None:
    with pytest.raises(ValueError, match="beam=0"):
        GenerationOptions(beam=0)
    with pytest.raises(ValueError, match=r"beam=101 must be from 1 to 100"):  # a beam of 100,000 ran for minutes
        GenerationOptions(beam=101)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        GenerationOptions(no_repeat_ngram=-1)
    with pytest.raises(ValueError, match="dim=30 is not divisible by num_heads=4"):
        build({"model_type": "seq2seq", "dim": 30, "num_heads": 4})
    with pytest.raises(ValueError, match="window"):
        build({"model_type": "seq2seq", "attention": {"window": 4}})
    with pytest.raises(ValueError, match="eos_id"):
        build({"model_type": "seq2seq", "vocab_size": 3, "eos_id": 3})


def test_multihead_attention_cache_matches_causal_attention_and_reorders() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 6, 16)
    full, _ = attention(x, is_causal=True)
    cache = KeyValueCache()
    first, _ = attention(x[:, :4], is_causal=True, cache=cache)  # a prompt of 4, then one token at a time
    rest = [attention(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 6)]
    torch.testing.assert_close(torch.cat([first, *rest], 1), full, atol=1e-5, rtol=1e-5)
    order = torch.tensor([2, 0])
    cache.reorder(order)
    assert cache.key is not None and cache.key.shape[0] == 2 and cache.length == 6
    memory = torch.randn(3, 5, 16)
    cross = KeyValueCache(static=True)
    once, _ = attention(x[:, :1], memory, cache=cross)
    again, _ = attention(x[:, :1], None, cache=cross)  # the memory is not needed again
    torch.testing.assert_close(once, again)
    torch.testing.assert_close(once, attention(x[:, :1], memory)[0])


@pytest.mark.parametrize("options", [{}, {"learn_temperature": True}, {"score": "bilinear"}, {"score": "cosine"}])
def test_one_cached_token_takes_the_fused_path_with_the_general_paths_result(
    options: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One new token without masks or maps skips the mask/backend plumbing (the decoder step at
    # batch 1); asking for the maps, or masking, takes the general path: both must agree.
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4, **options).eval()
    with torch.no_grad():
        if attention.score.log_temperature is not None:
            attention.score.log_temperature.uniform_(-0.5, 0.5)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    fused_cache, general_cache = KeyValueCache(), KeyValueCache()
    attention(x[:, :4], is_causal=True, cache=fused_cache)
    attention(x[:, :4], is_causal=True, cache=general_cache)
    with monkeypatch.context() as patch:  # the fused path builds no mask at all
        patch.setattr(multihead.MaskSpec, "validate", lambda **_: pytest.fail("the mask plumbing ran"))
        fused, none = attention(x[:, 4:], is_causal=True, cache=fused_cache)
    general, weights = attention(x[:, 4:], is_causal=True, cache=general_cache, need_weights=True)
    assert none is None and weights is not None and weights.shape == (2, 4, 1, 5)
    torch.testing.assert_close(fused, general, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused, attention(x, is_causal=True)[0][:, 4:], atol=1e-5, rtol=1e-5)
    cross = KeyValueCache(static=True)
    attention(x[:, :1], memory, cache=cross)
    no_padding = torch.zeros(2, 7, dtype=torch.bool)
    torch.testing.assert_close(
        attention(x[:, 1:2], None, cache=cross)[0],
        attention(x[:, 1:2], memory, key_padding_mask=no_padding)[0],
        atol=1e-6,
        rtol=1e-5,
    )


def test_a_cache_is_refused_where_it_cannot_be_exact() -> None:
    local = MultiHeadAttention(16, 4, attention="local", window=2)
    with pytest.raises(ValueError, match="full attention"):
        local(torch.randn(1, 3, 16), cache=KeyValueCache())
    # is_causal over a fixed memory: the fused step ignored it and the general path masked all but the
    # first memory key, so need_weights changed the answer (by 0.22).
    attention = MultiHeadAttention(16, 4).eval()
    cross = KeyValueCache(static=True)
    with pytest.raises(ValueError, match=r"is_causal with a static \(cross-attention\) cache"):
        attention(torch.randn(1, 1, 16), torch.randn(1, 5, 16), is_causal=True, cache=cross)
    assert not cross.filled  # refused before anything was cached
    # A self-attention cache of another batch: the module's own words (torch.cat's had come first).
    appended = KeyValueCache()
    attention(torch.randn(2, 3, 16), cache=appended, is_causal=True)
    with pytest.raises(ValueError, match="the cache holds 2 rows but the query has batch 1; reorder it first"):
        attention(torch.randn(1, 1, 16), cache=appended, is_causal=True)
    assert appended.length == 3  # nothing appended by the refused call


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_length_a": 0.0, "max_length_b": 0}, r"^max_length_b=0 must be >= 1$"),  # it had blamed max_length_a too
     ({"max_length_a": -1.0}, r"^max_length_a=-1.0 must be a number >= 0$"),
     ({"max_length_a": float("nan")}, r"^max_length_a=nan must be a number >= 0$")],
)
def test_generation_length_options_name_the_one_at_fault(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationOptions(**options)
