"""The model registry: one :class:`ModelInfo` entry per model, one :func:`create_model`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from .digits import digits_cnn, digits_mlp
from .resnet import resnet18_cifar, resnet20_cifar
from .samformer import samformer, transformer, transformer_random
from .tsmixer import tsmixer
from .vit import vit_small

__all__ = [
    "FORECASTERS",
    "MODELS",
    "TASKS",
    "ModelInfo",
    "create_model",
    "get_model_info",
    "list_models",
]

TASKS = ("classification", "forecasting")


@dataclass(frozen=True)
class ModelInfo:
    """What a model is: its factory and the data it expects.

    ``input_shape`` is one sample's shape (without the batch dimension); ``has_batchnorm`` tells
    a trainer whether a BatchNorm policy applies, without looking inside the model.

    ``task`` is ``"classification"`` (images in, (N, num_classes) logits out) or
    ``"forecasting"``: a window (N, seq_len, n_channels) in, (N, horizon, n_channels) out, built
    by ``factory(n_channels=..., seq_len=..., horizon=...)`` (``n_channels`` has no default). A
    forecaster's ``input_shape`` is (512, 7): its default ``seq_len`` with the ETT datasets' 7
    channels, as an example.
    """

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    has_batchnorm: bool
    description: str
    task: str = "classification"


# The image classifiers (the registry as it was before forecasters joined; its keys are stable).
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


_ETT = (512, 7)  # example forecaster input: seq_len 512, the 7 channels of ETTh1/ETTh2


def _forecaster(
    name: str, factory: Callable[..., nn.Module], has_batchnorm: bool, description: str
) -> ModelInfo:
    return ModelInfo(name, factory, _ETT, has_batchnorm, description, task="forecasting")


# Multivariate forecasters: (N, seq_len, n_channels) -> (N, horizon, n_channels).
FORECASTERS: Mapping[str, ModelInfo] = MappingProxyType(
    {
        info.name: info
        for info in [
            _forecaster("samformer", samformer, False, "SAMformer with W_O, 82.6k at D=7, H=96"),
            _forecaster("transformer", transformer, False, "SAMformer's net, to train without SAM"),
            _forecaster(
                "transformer_random", transformer_random, False, "frozen attention, no RevIN"
            ),
            _forecaster("tsmixer", tsmixer, True, "TSMixer + RevIN, 2 blocks, BatchNorm"),
        ]
    }
)

_ALL: Mapping[str, ModelInfo] = MappingProxyType({**MODELS, **FORECASTERS})


def list_models(task: str | None = "classification") -> list[str]:
    """Names accepted by :func:`create_model` for ``task`` (``None``: every task), sorted.

    The default lists the image classifiers only, as before forecasters were registered;
    ``list_models("forecasting")`` lists the forecasters.
    """
    if task is None:
        return sorted(_ALL)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return sorted(name for name, info in _ALL.items() if info.task == task)


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; ``ValueError`` naming the known models otherwise."""
    try:
        return _ALL[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(list_models(None))}"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``, passing ``kwargs`` to its factory."""
    return get_model_info(name).factory(**kwargs)
