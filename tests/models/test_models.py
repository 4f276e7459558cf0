"""Shapes, sizes, determinism and the registry of samlab.models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samlab.datasets import load_digits
from samlab.models import (
    MODELS,
    create_model,
    digits_cnn,
    digits_mlp,
    list_models,
    resnet20_cifar,
)

# The original five; the seeds' CIFAR networks are tested in test_image_models.py.
EXPECTED_NAMES = ["digits_cnn", "digits_mlp", "resnet18_cifar", "resnet20_cifar", "vit_small"]

# Inclusive parameter-count ranges for num_classes=10.
PARAMETER_RANGES = {
    "digits_cnn": (20_000, 40_000),
    "digits_mlp": (2_300, 2_500),
    "resnet18_cifar": (11_100_000, 11_250_000),
    "resnet20_cifar": (260_000, 280_000),
    "vit_small": (2_600_000, 2_800_000),
}
SEED_NETWORKS = [
    "resnet32_cifar",
    "resnet34_cifar",
    "resnet50_cifar",
    "resnet56_cifar",
    "resnext29_32x4d",
    "vgg16_bn_cifar",
    "vgg9",
    "wrn16_8",
    "wrn28_10",
    "wrn28_2",
]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_model() -> None:
    assert list_models() == sorted(EXPECTED_NAMES + SEED_NETWORKS)
    assert set(MODELS) == set(EXPECTED_NAMES + SEED_NETWORKS)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
@pytest.mark.parametrize("num_classes", [10, 7])
def test_output_shape(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes).eval()
    x = torch.randn(2, *MODELS[name].input_shape)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_parameter_count(name: str) -> None:
    low, high = PARAMETER_RANGES[name]
    assert low <= count_parameters(create_model(name)) <= high


def test_exact_parameter_counts() -> None:
    assert count_parameters(digits_mlp()) == 64 * 32 + 32 + 32 * 10 + 10
    assert count_parameters(create_model("resnet18_cifar")) == 11_173_962


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_registry_batchnorm_flag_matches_model(name: str) -> None:
    model = create_model(name)
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_batchnorm == MODELS[name].has_batchnorm


def test_digits_cnn_has_batchnorm() -> None:
    assert any(isinstance(m, nn.BatchNorm2d) for m in digits_cnn().modules())


def test_digits_mlp_accepts_flat_and_image_input() -> None:
    model = digits_mlp()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model(x), model(x.reshape(3, 64)))
    with pytest.raises(ValueError, match="64 features"):
        model(torch.randn(3, 65))


def test_resnet20_uses_parameter_free_shortcuts() -> None:
    model = resnet20_cifar()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # stem + 9 blocks x 2; 19 convs + fc = 20 weighted layers


@pytest.mark.parametrize("name", ["digits_cnn", "resnet20_cifar", "vit_small"])
def test_init_is_deterministic_given_seed(name: str) -> None:
    torch.manual_seed(123)
    first = create_model(name).state_dict()
    torch.manual_seed(123)
    second = create_model(name).state_dict()
    torch.manual_seed(124)
    third = create_model(name).state_dict()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert any(
        not torch.equal(first[key], third[key]) for key in first if first[key].is_floating_point()
    )


def test_unknown_model_raises_with_known_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet9000'") as info:
        create_model("resnet9000")
    for name in EXPECTED_NAMES:
        assert name in str(info.value)


def test_bad_constructor_arguments_raise() -> None:
    with pytest.raises(ValueError):
        create_model("digits_mlp", hidden=0)
    with pytest.raises(ValueError, match="divisible"):
        create_model("vit_small", patch_size=5)
    with pytest.raises(ValueError, match="divisible"):
        create_model("vit_small", heads=5)


def test_digits_cnn_sgd_lowers_training_loss() -> None:
    torch.manual_seed(0)
    data = load_digits(seed=0)
    model = digits_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)  # plain SGD, no momentum
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            return loss_fn(model(data.x_train), data.y_train).item()

    initial = full_loss()
    for _ in range(30):
        batch = torch.randint(len(data.y_train), (64,), generator=generator)
        model.train()
        optimizer.zero_grad()
        loss_fn(model(data.x_train[batch]), data.y_train[batch]).backward()
        optimizer.step()
    final = full_loss()
    # Measured: 2.31 -> 1.35 (seeds 0-2 all end below 1.35).
    assert final < 0.8 * initial, (initial, final)
