"""What every model shares: the batch it reads, the output it returns, and the registry.

A model is fully described by a JSON-serialisable config (a dataclass registered under a
name), so a saved model directory can rebuild it without executing any code from the file.

Batch contract: a mapping with ``input_ids`` (long ``(B, L)``) and ``attention_mask``
(``(B, L)``, 1/True = real token, the Hugging Face convention), plus model-specific extras. A
text model also takes ``inputs_embeds`` (``(B, L, E)``): the vectors to use instead of the output
of its ``input_embeddings()`` table, so gradient attributions can interpolate them without hooks.

Auxiliary losses: a module anywhere in a model that defines ``auxiliary_loss() -> Tensor`` adds
that term to the training loss (:func:`auxiliary_loss` sums them; the Trainer applies it to
every task), e.g. :class:`~attend.attention.MultiHeadAttention`'s adaptive-span penalty.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from attend.attention import capture_attention
from attend.config import load_plugins, redefines, strict_from_dict

__all__ = [
    "MODELS",
    "ClassifierConfig",
    "ModelConfig",
    "ModelOutput",
    "auxiliary_loss",
    "build",
    "config_from_dict",
    "forward_with_attentions",
    "kept_heads",
    "native_bf16",
    "normalise_pruned_heads",
    "probabilities",
    "register_model",
]


@dataclass
class ModelOutput:
    """What a model returns.

    Attributes:
        logits: The model's scores: for a classifier ``(B, num_labels)`` (pre-softmax;
            pre-sigmoid for multi-label).
        attentions: On request, one ``(B, H, L, L)`` post-softmax map per attention layer.
        pooling_weights: On request, ``(B, L)`` weights of the attention pooling, if the model has one.
        hidden_states: On request, the final token representations ``(B, L, E)`` (zeros at
            padding positions when the model skipped them, see :mod:`attend.attention.unpad`).
    """

    logits: Tensor
    attentions: list[Tensor] | None = None
    pooling_weights: Tensor | None = None
    hidden_states: Tensor | None = None


@dataclass
class ModelConfig:
    """Base of every model config. Subclasses add their own fields, each with a docstring."""

    #: Registry name; set by :func:`register_model`.
    model_type: ClassVar[str] = ""
    #: Terms that restrict who may use the model's pretrained weights (e.g. non-commercial
    #: research only), in a sentence; None for none. ``--model auto`` never picks such a model
    #: unless the user names it among its candidates.
    use_terms: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        pass

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_type"] = self.model_type
        return data

    def tokenizer_file(self) -> Path | None:
        """The tokenizer a pretrained model must read its text with; None: train one on the data."""
        return None

    @property
    def fine_tunes(self) -> bool:
        """Whether training starts from pretrained weights (which want a far smaller learning rate)."""
        return False


@dataclass
class ClassifierConfig(ModelConfig):
    """Base of the text classifiers' configs.

    Attributes:
        num_labels: Number of output classes.
        multi_label: Independent sigmoid per label instead of one softmax.
    """

    num_labels: int = 2
    multi_label: bool = False

    def __post_init__(self) -> None:
        if self.num_labels < 1:
            raise ValueError(f"num_labels={self.num_labels} must be >= 1")
        if self.num_labels == 1 and not self.multi_label:  # a softmax over one label answers it always
            raise ValueError("num_labels=1: a single-label classifier needs at least two labels (one label alone is "
                             "multi_label=True, a yes/no of that label)")  # fmt: skip


ConfigT = TypeVar("ConfigT", bound=ModelConfig)
ModelBuilder = Callable[[Any], nn.Module]

#: Registered models: name -> (config class, builder).
MODELS: dict[str, tuple[type[ModelConfig], ModelBuilder]] = {}


def register_model(
    name: str, config_cls: type[ConfigT]
) -> Callable[[Callable[[ConfigT], nn.Module]], Callable[[ConfigT], nn.Module]]:
    """Class/function decorator registering a builder for ``config_cls`` under ``name``."""
    _check_registration(name, config_cls)

    def decorator(builder: Callable[[ConfigT], nn.Module]) -> Callable[[ConfigT], nn.Module]:
        if not callable(builder):  # register_model(...)(5) had been taken, and failed when a model was built
            raise TypeError(f"register_model({name!r}, ...) decorates the function that builds the model from its "
                            f"config, not {builder!r}")  # fmt: skip
        if name in MODELS and not redefines(MODELS[name][1], builder):
            raise ValueError(f"model {name!r} is already registered")
        # One config class names one model: a second name had taken the class's model_type, so the
        # first name's saved directories built the second builder's network without a word.
        other = next((known for known, (cls, _) in MODELS.items() if cls is config_cls and known != name), None)
        if other is not None:
            raise ValueError(f"model {name!r}: its config class {config_cls.__name__} is model {other!r}'s already; "
                             "give each model a config class of its own (a subclass will do)")  # fmt: skip
        config_cls.model_type = name  # type: ignore[misc]
        MODELS[name] = (config_cls, builder)
        return builder

    return decorator


def _check_registration(name: object, config_cls: object) -> None:
    """Refuse a model registration that would fail only when a model is built, naming what is wrong
    (a config class without ``@dataclass`` had been "unknown model field(s) ['dim']; known: []")."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_model({name!r}, ...): name the model, a non-empty string")
    if not (isinstance(config_cls, type) and issubclass(config_cls, ModelConfig)):
        raise TypeError(f"register_model({name!r}, {config_cls!r}): the config must be a subclass of "
                        "attend.models.ModelConfig")  # fmt: skip
    fields = {field.name for field in dataclasses.fields(config_cls)}
    own = [key for key, kind in inspect.get_annotations(config_cls).items() if key not in fields
           and not any(marker in str(kind) for marker in ("ClassVar", "InitVar", "KW_ONLY"))]  # fmt: skip
    if own:
        raise TypeError(f"register_model({name!r}, {config_cls.__name__}): its fields {own} are no dataclass fields: "
                        "decorate the config class with @dataclass")  # fmt: skip


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Rebuild a config from its ``to_dict()``; unknown models or fields raise ``ValueError``."""
    data = dict(data)
    name = data.pop("model_type", None)
    if name not in MODELS:
        load_plugins()
    if name not in MODELS:
        raise ValueError(f"unknown model_type {name!r}; choose one of {sorted(MODELS)}")
    config_cls, _ = MODELS[name]
    return strict_from_dict(config_cls, data, what=f"{name!r} model")


def build(config: ModelConfig | Mapping[str, Any]) -> nn.Module:
    """Build the model a config describes (a config object or its dict form)."""
    if not isinstance(config, ModelConfig):
        config = config_from_dict(config)
    if config.model_type not in MODELS:
        load_plugins()
    if config.model_type not in MODELS:
        raise ValueError(f"unknown model_type {config.model_type!r}; choose one of {sorted(MODELS)}")
    _, builder = MODELS[config.model_type]
    return builder(config)


def forward_with_attentions(model: nn.Module, run: Callable[[], ModelOutput], output_attentions: bool,
                            names: Iterable[str] | None = None) -> ModelOutput:  # fmt: skip
    """Run ``run()``; on request, fill ``attentions``/``pooling_weights`` from a capture (of the
    attention modules ``names``, default all).

    Models call this rather than threading flags through their layers: the capture API
    records weights while every layer stays on its fast path.
    """
    if not output_attentions:
        return run()
    with capture_attention(model, names=names) as cap:
        output = run()
    output.attentions = cap.weights
    if cap.pooling_weights and output.pooling_weights is None:
        output.pooling_weights = cap.pooling_weights[-1]
    return output


def normalise_pruned_heads(pruned: Any, *, num_layers: int, num_heads: int) -> dict[str, list[int]]:
    """Validate a ``pruned_heads`` config field: ``{"layer index": [original head indices removed]}``.

    Pruned models record which of the *original* heads each layer lost (as Hugging Face's
    ``config.pruned_heads`` does), so the config alone rebuilds the smaller model and an
    explanation can still say which original head a map comes from. Keys are strings because
    JSON object keys are; integer keys are accepted and converted.

    Raises:
        ValueError: naming the layer or head that is out of range, or a layer left with no head.
    """
    if pruned is None:
        return {}
    if not isinstance(pruned, Mapping):
        raise ValueError(f"pruned_heads={pruned!r} must be a dict {{layer index: [head indices]}}")
    result: dict[str, list[int]] = {}
    for key, heads in pruned.items():
        try:
            layer = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"pruned_heads key {key!r} is not a layer index") from None
        if not 0 <= layer < num_layers:
            raise ValueError(f"pruned_heads names layer {layer}, but the model has {num_layers} layers")
        if isinstance(heads, str) or not all(isinstance(h, int) and not isinstance(h, bool) for h in heads):
            raise ValueError(f"pruned_heads[{key!r}]={heads!r} must be a list of head indices")
        unique = sorted(set(heads))
        bad = [h for h in unique if not 0 <= h < num_heads]
        if bad:
            raise ValueError(f"pruned_heads[{key!r}] has heads {bad} out of range for num_heads={num_heads}")
        if len(unique) == num_heads:
            raise ValueError(f"pruned_heads[{key!r}] removes all {num_heads} heads of layer {layer}; keep at least one")
        if unique:
            result[str(layer)] = unique
    return dict(sorted(result.items(), key=lambda item: int(item[0])))


def kept_heads(pruned: Mapping[str, list[int]], layer: int, num_heads: int) -> list[int]:
    """Original indices of the heads layer ``layer`` still has, in order."""
    removed = set(pruned.get(str(layer), ()))
    return [h for h in range(num_heads) if h not in removed]


#: A multi-label model predicts every label of at least this probability (training scores it so).
MULTI_LABEL_THRESHOLD = 0.5


def probabilities(logits: Tensor, multi_label: bool = False) -> Tensor:
    """Class probabilities from a classifier's logits, in float32: softmax over labels, or an
    independent sigmoid per label when ``multi_label``."""
    logits = logits.detach().float()
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)


def auxiliary_loss(model: nn.Module) -> Tensor | None:
    """The sum of ``auxiliary_loss()`` over the model's modules that define one; None if none does."""
    terms = [module.auxiliary_loss() for module in model.modules() if callable(getattr(module, "auxiliary_loss", None))]
    terms = [term for term in terms if term is not None]
    return torch.stack([term.float() for term in terms]).sum() if terms else None


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 fast enough to beat float32: whether it has AMX tiles.

    AVX512-BF16 alone is not enough: on such a CPU (no AMX) MiniLM in bfloat16 ran at 0.84x
    float32 one text at a time and 0.62x in batches of 32 (``benchmarks/serve.py``), while on an
    AMX CPU it ran 1.6x and 2.2x faster.
    """
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers: if a torch release drops them, do not guess
        return True
