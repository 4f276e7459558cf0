"""Small models for scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes).

Both take images shaped (N, 1, 8, 8) (as returned by :func:`samlab.datasets.load_digits`) and
return logits shaped (N, num_classes). They are meant for CPU demos, notebooks and tests: one
epoch over the 1,437 training images takes a fraction of a second on one core.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "DigitsMLP", "digits_cnn", "digits_mlp"]


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class DigitsCNN(nn.Module):
    """Three 3x3 conv + BatchNorm + ReLU layers, one 2x2 max-pool, global average pool, linear.

    Shapes: (N, 1, 8, 8) -> conv16 (N, 16, 8, 8) -> conv32 (N, 32, 8, 8) -> max-pool
    (N, 32, 4, 4) -> conv64 (N, 64, 4, 4) -> mean over space (N, 64) -> linear (N, num_classes).
    About 24k parameters. The BatchNorm layers are there on purpose: the demo uses this model to
    show the trainer's BatchNorm policy (running statistics updated in the clean pass of SAM only).
    """

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1) -> None:
        super().__init__()
        _check_positive("num_classes", num_classes)
        _check_positive("in_channels", in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, in_channels, 8, 8) to logits (N, num_classes)."""
        features = self.features(x)
        return self.classifier(features.mean(dim=(2, 3)))


class DigitsMLP(nn.Module):
    """One-hidden-layer perceptron 64 -> hidden -> num_classes with a tanh in between.

    Accepts (N, 1, 8, 8) or (N, 64) and returns (N, num_classes) (``in_channels`` images of
    8x8 pixels: 64 * in_channels input features). With the defaults it has
    64*32 + 32 + 32*10 + 10 = 2,410 parameters, small enough for exact Hessians and dense loss
    landscapes. tanh (not ReLU) keeps the loss twice differentiable everywhere, which the
    curvature tools rely on.
    """

    def __init__(self, num_classes: int = 10, hidden: int = 32, *, in_channels: int = 1) -> None:
        super().__init__()
        _check_positive("num_classes", num_classes)
        _check_positive("hidden", hidden)
        _check_positive("in_channels", in_channels)
        self.in_features = 64 * in_channels
        self.hidden = nn.Linear(self.in_features, hidden)
        self.activation = nn.Tanh()
        self.output = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, 1, 8, 8) or flat rows (N, 64) to logits (N, num_classes)."""
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"DigitsMLP expects {self.in_features} features per sample, got {x.shape[1]}"
            )
        return self.output(self.activation(self.hidden(x)))


def digits_cnn(num_classes: int = 10, *, in_channels: int = 1) -> DigitsCNN:
    """Small CNN with BatchNorm for 8x8 digits, (N, 1, 8, 8) -> (N, num_classes); ~24k params."""
    return DigitsCNN(num_classes=num_classes, in_channels=in_channels)


def digits_mlp(num_classes: int = 10, hidden: int = 32, *, in_channels: int = 1) -> DigitsMLP:
    """MLP 64 -> hidden -> num_classes for 8x8 digits; 2,410 params with the defaults."""
    return DigitsMLP(num_classes=num_classes, hidden=hidden, in_channels=in_channels)
