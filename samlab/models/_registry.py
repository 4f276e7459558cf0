"""The model registry: one :class:`ModelInfo` entry per model, one :func:`create_model`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from .digits import digits_cnn, digits_mlp
from .resnet import resnet18_cifar, resnet20_cifar
from .vit import vit_small

__all__ = ["ModelInfo", "MODELS", "create_model", "get_model_info", "list_models"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model is: its factory and the data it expects.

    ``input_shape`` is one sample's shape (without the batch dimension); ``has_batchnorm`` tells
    a trainer whether a BatchNorm policy applies, without looking inside the model.
    """

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    has_batchnorm: bool
    description: str


MODELS: Mapping[str, ModelInfo] = MappingProxyType(
    {
        info.name: info
        for info in [
            ModelInfo("digits_cnn", digits_cnn, (1, 8, 8), True, "small CNN with BatchNorm, ~24k"),
            ModelInfo("digits_mlp", digits_mlp, (1, 8, 8), False, "MLP 64-32-10, 2.4k"),
            ModelInfo("resnet18_cifar", resnet18_cifar, (3, 32, 32), True, "ResNet-18, 11.2M"),
            ModelInfo("resnet20_cifar", resnet20_cifar, (3, 32, 32), True, "ResNet-20, 0.27M"),
            ModelInfo("vit_small", vit_small, (3, 32, 32), False, "ViT 4x4 patches, 2.7M"),
        ]
    }
)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(MODELS)


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; ``ValueError`` naming the known models otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``, passing ``kwargs`` to its factory."""
    return get_model_info(name).factory(**kwargs)
