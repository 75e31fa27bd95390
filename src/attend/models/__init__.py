"""Complete models built from :mod:`attend.attention`, behind a registry of JSON configs."""

from attend.models import bilstm, din, e5, encoder, m3e, minilm, sasrec, seq2seq  # noqa: F401  (registration)
from attend.models.base import (
    MODELS,
    MULTI_LABEL_THRESHOLD,
    ClassifierConfig,
    ModelConfig,
    ModelOutput,
    auxiliary_loss,
    build,
    config_from_dict,
    native_bf16,
    probabilities,
    register_model,
)

__all__ = [
    "MODELS",
    "MULTI_LABEL_THRESHOLD",
    "ClassifierConfig",
    "ModelConfig",
    "ModelOutput",
    "auxiliary_loss",
    "build",
    "config_from_dict",
    "native_bf16",
    "probabilities",
    "register_model",
]
