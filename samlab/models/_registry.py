"""The model registry: one :class:`ModelInfo` entry per model, one :func:`create_model`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from .digits import digits_cnn, digits_mlp
from .resnet import (
    resnet18_cifar,
    resnet20_cifar,
    resnet32_cifar,
    resnet34_cifar,
    resnet50_cifar,
    resnet56_cifar,
)
from .resnext import resnext29_32x4d
from .samformer import samformer, transformer, transformer_random
from .torchvision_models import (
    TORCHVISION_PREFIX,
    is_torchvision_name,
    torchvision_input_shape,
    torchvision_model,
)
from .tsmixer import tsmixer
from .vgg import vgg9, vgg16_bn_cifar
from .vit import vit_small
from .wideresnet import wrn16_8, wrn28_2, wrn28_10

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

    ``task`` is ``"classification"`` (images in, (N, num_classes) logits out; every factory
    takes ``num_classes`` and ``in_channels``) or
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


_CIFAR = (3, 32, 32)

# The image classifiers (registry names are stable; seed spellings such as SSAM's ``resnet18``
# are aliases, see samlab.models.aliases). Parameter counts for 10 classes.
MODELS: Mapping[str, ModelInfo] = MappingProxyType(
    {
        info.name: info
        for info in [
            ModelInfo("digits_cnn", digits_cnn, (1, 8, 8), True, "small CNN with BatchNorm, ~24k"),
            ModelInfo("digits_mlp", digits_mlp, (1, 8, 8), False, "MLP 64-32-10, 2.4k"),
            ModelInfo("resnet18_cifar", resnet18_cifar, _CIFAR, True, "ResNet-18, 11.2M"),
            ModelInfo("resnet20_cifar", resnet20_cifar, _CIFAR, True, "ResNet-20, 0.27M"),
            ModelInfo("resnet32_cifar", resnet32_cifar, _CIFAR, True, "ResNet-32, 0.46M"),
            ModelInfo("resnet34_cifar", resnet34_cifar, _CIFAR, True, "ResNet-34, 21.3M"),
            ModelInfo("resnet50_cifar", resnet50_cifar, _CIFAR, True, "ResNet-50, 23.5M"),
            ModelInfo("resnet56_cifar", resnet56_cifar, _CIFAR, True, "ResNet-56, 0.85M"),
            ModelInfo("resnext29_32x4d", resnext29_32x4d, _CIFAR, True, "ResNeXt-29 32x4d, 4.8M"),
            ModelInfo("vgg16_bn_cifar", vgg16_bn_cifar, _CIFAR, True, "VGG-16-BN, 33.6M"),
            ModelInfo("vgg9", vgg9, _CIFAR, True, "Li et al.'s VGG-9 (loss-landscape), 2.8M"),
            ModelInfo("vit_small", vit_small, _CIFAR, False, "ViT 4x4 patches, 2.7M"),
            ModelInfo("wrn16_8", wrn16_8, _CIFAR, True, "WideResNet-16-8, 11.0M"),
            ModelInfo("wrn28_10", wrn28_10, _CIFAR, True, "WideResNet-28-10, 36.5M"),
            ModelInfo("wrn28_2", wrn28_2, _CIFAR, True, "WideResNet-28-2, 1.5M"),
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
    ``list_models("forecasting")`` lists the forecasters. torchvision's ImageNet classifiers
    (``torchvision:resnet50``, ...) are accepted too but not listed: see
    :func:`~samlab.models.torchvision_classifiers`.
    """
    if task is None:
        return sorted(_ALL)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return sorted(name for name, info in _ALL.items() if info.task == task)


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@functools.cache
def _torchvision_info(name: str) -> ModelInfo:
    """The entry of ``torchvision:<bare>``; BatchNorm is looked up on a meta-device build."""
    import torch

    bare = name[len(TORCHVISION_PREFIX) :]
    shape = torchvision_input_shape(bare)  # ValueError naming torchvision's models
    with torch.device("meta"):
        probe = torchvision_model(bare)
    has_batchnorm = any(isinstance(m, _BATCHNORMS) for m in probe.modules())
    factory = functools.partial(torchvision_model, bare)
    return ModelInfo(name, factory, shape, has_batchnorm, f"torchvision's {bare}, no weights")


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for ``name`` (or ``torchvision:<name>``); ``ValueError`` naming the
    known models otherwise."""
    if is_torchvision_name(name):
        return _torchvision_info(name)
    try:
        return _ALL[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(list_models(None))} (and "
            f"{TORCHVISION_PREFIX}<name> for torchvision's ImageNet classifiers)"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``, passing ``kwargs`` to its factory."""
    return get_model_info(name).factory(**kwargs)
