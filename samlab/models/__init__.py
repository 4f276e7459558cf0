"""Models for samlab experiments: digits CNN/MLP, CIFAR ResNets, a small ViT; a registry."""

from ._registry import MODELS, ModelInfo, create_model, get_model_info, list_models
from .digits import DigitsCNN, DigitsMLP, digits_cnn, digits_mlp
from .resnet import BasicBlock, CifarResNet, resnet18_cifar, resnet20_cifar
from .vit import ViT, vit_small

__all__ = [
    "MODELS",
    "BasicBlock",
    "CifarResNet",
    "DigitsCNN",
    "DigitsMLP",
    "ModelInfo",
    "ViT",
    "create_model",
    "digits_cnn",
    "digits_mlp",
    "get_model_info",
    "list_models",
    "resnet18_cifar",
    "resnet20_cifar",
    "vit_small",
]
