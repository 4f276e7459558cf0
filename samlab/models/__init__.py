"""Models for samlab experiments: digits CNN/MLP, CIFAR ResNets, a small ViT, forecasters
(SAMformer, its Transformer baselines, TSMixer); a registry."""

from ._keras_init import INITS, check_init
from ._registry import (
    FORECASTERS,
    MODELS,
    TASKS,
    ModelInfo,
    create_model,
    get_model_info,
    list_models,
)
from .digits import DigitsCNN, DigitsMLP, digits_cnn, digits_mlp
from .resnet import BasicBlock, CifarResNet, resnet18_cifar, resnet20_cifar
from .samformer import RevIN, SAMformer, samformer, transformer, transformer_random
from .tsmixer import TSMixer, tsmixer
from .vit import ViT, vit_small

__all__ = [
    "FORECASTERS",
    "INITS",
    "MODELS",
    "TASKS",
    "BasicBlock",
    "CifarResNet",
    "DigitsCNN",
    "DigitsMLP",
    "ModelInfo",
    "RevIN",
    "SAMformer",
    "TSMixer",
    "ViT",
    "check_init",
    "create_model",
    "digits_cnn",
    "digits_mlp",
    "get_model_info",
    "list_models",
    "resnet18_cifar",
    "resnet20_cifar",
    "samformer",
    "transformer",
    "transformer_random",
    "tsmixer",
    "vit_small",
]
