"""Model architectures and the registry of pretrained models."""

from mpqbench.models.zoo import MODELS, build_model, pretrained_model

__all__ = ["MODELS", "build_model", "pretrained_model"]
