"""The seeds' image classifiers: every registry entry trains a step, parameter counts against
published counts and torchvision's own models, torchvision models by name, and the seeds'
spellings resolved with the dataset."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torchvision
from torch import nn

from samlab.models import (
    MODEL_ALIASES,
    MODELS,
    create_model,
    get_model_info,
    list_models,
    resnet56_cifar,
    resnext29,
    resolve_model_name,
    torchvision_classifiers,
    vgg9,
    vgg16_bn_cifar,
)

CLASSIFIERS = list_models()
# Models built for 32x32 RGB images, which the aliases also use on the 8x8 digits.
SMALL_IMAGE = [name for name in CLASSIFIERS if MODELS[name].input_shape == (3, 32, 32)]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_count(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return count(create_model(name, **kwargs))


def forward_backward(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    model.train()
    logits = model(x)
    assert logits.shape == (x.shape[0], num_classes)
    loss = nn.functional.cross_entropy(logits, torch.arange(x.shape[0]) % num_classes)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_trains_at_batch_two(name: str) -> None:
    torch.manual_seed(0)
    info = get_model_info(name)
    model = create_model(name, num_classes=7, in_channels=info.input_shape[0])
    forward_backward(model, torch.randn(2, *info.input_shape), 7)
    has_bn = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
    assert has_bn == info.has_batchnorm
    assert info.description


# The four largest are left out for time: their blocks are covered by resnet18/resnext29/vgg9.
LARGE = ("resnet34_cifar", "resnet50_cifar", "vgg16_bn_cifar", "wrn28_10")


@pytest.mark.parametrize("name", [n for n in SMALL_IMAGE if n not in LARGE])
def test_cifar_models_take_one_channel_8x8_digits(name: str) -> None:
    torch.manual_seed(0)
    # the ViT's position embeddings are sized by image_size
    extra = {"image_size": 8} if name == "vit_small" else {}
    model = create_model(name, num_classes=10, in_channels=1, **extra)
    forward_backward(model, torch.randn(2, 1, 8, 8), 10)


def test_torchvision_model_by_name_trains_at_64x64() -> None:
    torch.manual_seed(0)
    info = get_model_info("torchvision:resnet18")
    assert info.input_shape == (3, 224, 224) and info.has_batchnorm
    assert info.task == "classification"
    model = create_model("torchvision:resnet18", num_classes=5)
    forward_backward(model, torch.randn(2, 3, 64, 64), 5)
    with torch.device("meta"):
        reference = torchvision.models.resnet18(num_classes=5)
    assert count(model) == count(reference)


def test_torchvision_info_and_errors() -> None:
    assert not get_model_info("torchvision:vit_b_16").has_batchnorm
    assert get_model_info("torchvision:inception_v3").input_shape == (3, 299, 299)
    assert "resnet50" in torchvision_classifiers()
    with pytest.raises(ValueError, match="no ImageNet classifier 'resnet9'"):
        get_model_info("torchvision:resnet9")
    with pytest.raises(ValueError, match="in_channels=1"):
        create_model("torchvision:resnet18", in_channels=1)
    with pytest.raises(ValueError, match="without weights"):
        create_model("torchvision:resnet18", weights="DEFAULT")


# -- parameter counts -----------------------------------------------------------------------

EXACT_COUNTS = {  # num_classes=10; each is checked against a reference below
    "resnet18_cifar": 11_173_962,
    "resnet34_cifar": 21_282_122,
    "resnet50_cifar": 23_520_842,
    "resnet20_cifar": 269_722,
    "resnet32_cifar": 464_154,
    "resnet56_cifar": 853_018,
    "wrn28_10": 36_479_194,
    "wrn16_8": 10_961_370,
    "wrn28_2": 1_467_610,
    "vgg16_bn_cifar": 33_646_666,
    "vgg9": 2_789_706,
    "resnext29_32x4d": 4_775_754,
}


@pytest.mark.parametrize("name", sorted(EXACT_COUNTS))
def test_exact_parameter_counts(name: str) -> None:
    assert meta_count(name) == EXACT_COUNTS[name]


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_cifar_resnets_are_torchvisions_with_a_3x3_stem(depth: int) -> None:
    """Same tensors as torchvision's ResNet except the stem conv (7x7 -> 3x3)."""
    with torch.device("meta"):
        ours = create_model(f"resnet{depth}_cifar")
        theirs = torchvision.models.get_model(f"resnet{depth}", num_classes=10)
    stem_7x7, stem_3x3 = (64, 3, 7, 7), (64, 3, 3, 3)
    expected = Counter(tuple(p.shape) for p in theirs.parameters())
    expected[stem_7x7] -= 1
    expected[stem_3x3] += 1
    assert Counter(tuple(p.shape) for p in ours.parameters()) == +expected
    assert count(ours) == count(theirs) - math.prod(stem_7x7) + math.prod(stem_3x3)


def he_cifar_count(n: int, classes: int = 10) -> int:
    """Closed form for He et al.'s option-A CIFAR ResNet (6n + 2 layers)."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    channels = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += channels * width * 9 + width * width * 9 + 4 * width  # 2 convs + 2 BNs
            channels = width
    return total + 64 * classes + classes


@pytest.mark.parametrize(("depth", "published"), [(20, 0.27), (32, 0.46), (56, 0.85)])
def test_he_cifar_resnets_match_the_paper(depth: int, published: float) -> None:
    """He et al. 2016, table 6: 0.27M, 0.46M, 0.85M parameters."""
    n = (depth - 2) // 6
    assert meta_count(f"resnet{depth}_cifar") == he_cifar_count(n)
    assert round(meta_count(f"resnet{depth}_cifar") / 1e6, 2) == published


def test_loss_landscape_resnet56_uses_projection_shortcuts() -> None:
    with torch.device("meta"):
        model = resnet56_cifar(shortcut="B")
    # two 1x1 conv + BN projections: 16->32 and 32->64
    assert count(model) == 853_018 + (16 * 32 + 64) + (32 * 64 + 128)


@pytest.mark.parametrize(
    ("name", "published"), [("wrn28_10", 36.5), ("wrn16_8", 11.0), ("wrn28_2", 1.5)]
)
def test_wide_resnets_match_the_paper(name: str, published: float) -> None:
    """Zagoruyko and Komodakis 2016: WRN-28-10 36.5M, WRN-16-8 11.0M, WRN-28-2 1.5M."""
    assert round(meta_count(name) / 1e6, 1) == published


def test_vgg16_features_are_torchvisions_vgg16_bn() -> None:
    with torch.device("meta"):
        ours = vgg16_bn_cifar(100)
        theirs = torchvision.models.vgg16_bn().features
    shapes = [tuple(p.shape) for p in ours.features.parameters()]
    assert shapes == [tuple(p.shape) for p in theirs.parameters()]
    classifier = 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 100 + 100
    assert count(ours) == count(theirs) + classifier
    assert round(count(ours) / 1e6, 1) == 34.0  # SSAM's vgg16_bn on CIFAR-100


def test_vgg9_closed_form_and_seed_names() -> None:
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    expected = sum(i * o * 9 + o + 2 * o for i, o in convs)  # conv + bias + BN
    expected += 4096 * 256 + 256 + 2 * 256 + 256 * 10 + 10  # fc + BN1d + classifier
    model = vgg9()
    assert count(model) == expected
    # loss-landscape's parameter names, so its VGG-9 checkpoints load
    keys = set(model.state_dict())
    assert {"features.0.weight", "features.1.running_mean", "fc.0.weight"} <= keys
    assert {"fc.1.running_var", "classifier.weight", "classifier.bias"} <= keys
    ssam_keys = set(vgg16_bn_cifar().state_dict())
    assert {"classifier.0.weight", "classifier.3.weight", "classifier.6.weight"} <= ssam_keys


@pytest.mark.parametrize(("cardinality", "width", "published"), [(8, 64, 34.4), (16, 64, 68.1)])
def test_resnext29_matches_the_paper(cardinality: int, width: int, published: float) -> None:
    """Xie et al. 2017, table 7: ResNeXt-29 8x64d 34.4M, 16x64d 68.1M (truncated to 0.1M)."""
    with torch.device("meta"):
        total = count(resnext29(cardinality, width))
    assert math.floor(total / 1e5) / 10 == published


def test_resnext29_32x4d_closed_form() -> None:
    total = 3 * 64 * 9 + 2 * 64
    channels = 64
    for stage, out in enumerate((256, 512, 1024)):
        inner = 32 * 4 * 2**stage
        for block in range(3):
            total += channels * inner + 2 * inner  # 1x1 + BN
            total += inner * (inner // 32) * 9 + 2 * inner  # grouped 3x3 + BN
            total += inner * out + 2 * out  # 1x1 + BN
            if block == 0:
                total += channels * out + 2 * out  # projection + BN
            channels = out
    assert meta_count("resnext29_32x4d") == total + 1024 * 10 + 10


# -- seed spellings ---------------------------------------------------------------------------

ALIAS_TABLE = [
    # (spelling, dataset, depth, registry name)
    ("resnet18", "CIFAR10_cutout", None, "resnet18_cifar"),
    ("resnet18", "cifar100", None, "resnet18_cifar"),
    ("resnet18", "digits", None, "resnet18_cifar"),
    ("resnet18", None, None, "resnet18_cifar"),
    ("resnet18", "ImageNet_base", None, "torchvision:resnet18"),
    ("resnet34", "CIFAR100_base", None, "resnet34_cifar"),
    ("resnet34", "imagenet", None, "torchvision:resnet34"),
    ("resnet50", "CIFAR10_base", None, "resnet50_cifar"),
    ("resnet50", "ImageNet_base", None, "torchvision:resnet50"),
    ("resnet101", "ImageNet_base", None, "torchvision:resnet101"),
    ("wideresnet28x10", "CIFAR10_cutout", None, "wrn28_10"),
    ("wideresnet16x8", "cifar10", None, "wrn16_8"),
    ("vgg16_bn", "CIFAR10_base", None, "vgg16_bn_cifar"),
    ("vgg16_bn", "ImageNet_base", None, "torchvision:vgg16_bn"),
    ("resnet", "cifar10", 20, "resnet20_cifar"),  # SAM.v2 --arch resnet --depth 20
    ("resnet", "cifar10", 32, "resnet32_cifar"),
    ("resnet", "cifar100", 18, "resnet18_cifar"),
    ("resnet", "cifar10", 50, "resnet50_cifar"),
    ("vgg", "cifar10", 16, "vgg16_bn_cifar"),
    ("resnet20", "cifar10", None, "resnet20_cifar"),  # sam.pytorch
    ("resnet56", "cifar10", None, "resnet56_cifar"),  # sam.pytorch, loss-landscape
    ("wrn28_2", "cifar10", None, "wrn28_2"),
    ("resnext29_32x4d", "cifar10", None, "resnext29_32x4d"),
    ("vgg9", "cifar10", None, "vgg9"),  # loss-landscape, seed 003
    ("VGG9", "cifar10", None, "vgg9"),
    ("vit_tiny", "cifar10", None, "vit_small"),
    ("resnet18_cifar", "ImageNet_base", None, "resnet18_cifar"),  # registry names stay
    ("torchvision:resnet50", "cifar10", None, "torchvision:resnet50"),
    ("densenet121", "imagenet", None, "torchvision:densenet121"),
]


@pytest.mark.parametrize(("spelling", "dataset", "depth", "expected"), ALIAS_TABLE)
def test_seed_spellings_resolve_with_the_dataset(spelling, dataset, depth, expected) -> None:
    resolved = resolve_model_name(spelling, dataset, depth=depth)
    assert resolved == expected
    get_model_info(resolved)  # a name create_model accepts


def test_every_alias_resolves_to_a_model() -> None:
    for alias, (small, large) in MODEL_ALIASES.items():
        for name in (small, large):
            if name is not None:
                get_model_info(name)
        if small is None:
            with pytest.raises(ValueError, match="only available for ImageNet"):
                resolve_model_name(alias, "cifar10")


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'se_resnet56'") as info:
        resolve_model_name("se_resnet56", "cifar10")
    for name in ("resnet18_cifar", "wrn28_10", "wideresnet28x10", "vgg16_bn", "torchvision:"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown model 'densenet121'"):
        resolve_model_name("densenet121", "cifar10")  # torchvision only on ImageNet
    with pytest.raises(ValueError, match="give its depth"):
        resolve_model_name("resnet", "cifar10")
    with pytest.raises(ValueError, match="depth 18, 20, 32"):
        resolve_model_name("resnet", "cifar10", depth=110)
    with pytest.raises(ValueError, match="architecture family"):
        resolve_model_name("resnet18", "cifar10", depth=18)
    with pytest.raises(ValueError, match="no ImageNet classifier"):
        resolve_model_name("torchvision:resnet9", "imagenet")
