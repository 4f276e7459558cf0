"""Models for samlab experiments: digits CNN/MLP; the CIFAR ResNets, WideResNets, VGGs and
ResNeXt-29 of the seed projects; a small ViT; torchvision's ImageNet classifiers by name
(``torchvision:<name>``); forecasters (SAMformer, its Transformer baselines, TSMixer); a
registry with the seeds' spellings as aliases (:func:`resolve_model_name`); and static weight
masks for sparse training (:class:`WeightMasks`)."""

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
from .aliases import ARCH_FAMILIES, MODEL_ALIASES, resolve_model_name
from .digits import DigitsCNN, DigitsMLP, digits_cnn, digits_mlp
from .resnet import (
    BasicBlock,
    Bottleneck,
    CifarResNet,
    resnet18_cifar,
    resnet20_cifar,
    resnet32_cifar,
    resnet34_cifar,
    resnet50_cifar,
    resnet56_cifar,
)
from .resnext import resnext29, resnext29_32x4d
from .samformer import RevIN, SAMformer, samformer, transformer, transformer_random
from .sparsity import WeightMasks, prunable_weights
from .torchvision_models import (
    TORCHVISION_PREFIX,
    is_torchvision_name,
    torchvision_classifiers,
    torchvision_input_shape,
    torchvision_model,
)
from .tsmixer import TSMixer, tsmixer
from .vgg import VGG, vgg9, vgg16_bn_cifar, vgg_features
from .vit import ViT, vit_small
from .wideresnet import WideBlock, WideResNet, wide_resnet, wrn16_8, wrn28_2, wrn28_10

__all__ = [
    "ARCH_FAMILIES",
    "FORECASTERS",
    "INITS",
    "MODELS",
    "MODEL_ALIASES",
    "TASKS",
    "TORCHVISION_PREFIX",
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "DigitsCNN",
    "DigitsMLP",
    "ModelInfo",
    "RevIN",
    "SAMformer",
    "TSMixer",
    "ViT",
    "WeightMasks",
    "WideBlock",
    "WideResNet",
    "check_init",
    "create_model",
    "digits_cnn",
    "digits_mlp",
    "get_model_info",
    "is_torchvision_name",
    "list_models",
    "prunable_weights",
    "resnet18_cifar",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet34_cifar",
    "resnet50_cifar",
    "resnet56_cifar",
    "resnext29",
    "resnext29_32x4d",
    "resolve_model_name",
    "samformer",
    "torchvision_classifiers",
    "torchvision_input_shape",
    "torchvision_model",
    "transformer",
    "transformer_random",
    "tsmixer",
    "vgg16_bn_cifar",
    "vgg9",
    "vgg_features",
    "vit_small",
    "wide_resnet",
    "wrn16_8",
    "wrn28_10",
    "wrn28_2",
]
