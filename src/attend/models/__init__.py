"""Complete models built from :mod:`attend.attention`, behind a registry of JSON configs."""

from attend.models import bilstm, encoder, minilm  # noqa: F401  (registration)
from attend.models.base import MODELS, ModelConfig, ModelOutput, build, config_from_dict, register_model

__all__ = ["MODELS", "ModelConfig", "ModelOutput", "build", "config_from_dict", "register_model"]
