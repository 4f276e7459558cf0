"""VGG networks with BatchNorm for 32x32 images.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015, arXiv:1409.1556), with a BatchNorm after every conv (Ioffe and Szegedy 2015), as the
seed projects build them for CIFAR:

* :func:`vgg16_bn_cifar` -- configuration D (13 convs of 64..512 channels, 5 max-pools) and the
  paper's classifier 512-4096-4096-classes with ReLU and dropout 0.5, as in SSAM's ``vgg16_bn``;
  the conv part is exactly torchvision's ``vgg16_bn().features``. 33,646,666 parameters for 10
  classes (34.0M for 100).
* :func:`vgg9` -- the VGG-9 of Li et al., "Visualizing the Loss Landscape of Neural Nets"
  (NeurIPS 2018; tomgoldstein/loss-landscape's ``vgg9``, used by seed 003): 7 convs
  (64, 64, M, 128, 128, M, 256, 256, 256, M), then a 256-unit linear layer with BatchNorm1d and
  ReLU, then the classifier; 2,789,706 parameters for 10 classes at 32x32.

Max-pools use ``ceil_mode=True`` (as loss-landscape's VGG does), which changes nothing on 32x32
inputs and lets small images such as the 8x8 digits pass all five pools of VGG-16. Before the
linear layers the last feature map is average-pooled to the size the linear layers were built
for (1x1 for VGG-16, 4x4 for VGG-9 at ``image_size=32``): a no-op on the native size that lets
other sizes through. Weights keep PyTorch's default initialisation, as in both seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._checks import check_positive

__all__ = ["VGG16_CONFIG", "VGG9_CONFIG", "VGG", "vgg16_bn_cifar", "vgg9", "vgg_features"]

#: Configuration D of the paper: conv widths, "M" for a 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    *(64, 64, "M", 128, 128, "M", 256, 256, 256, "M"),
    *(512, 512, 512, "M", 512, 512, 512, "M"),
)
#: Li et al.'s VGG-9 convolutional part.
VGG9_CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")


def vgg_features(config: Sequence[int | str], in_channels: int = 3) -> nn.Sequential:
    """conv3x3(+bias)-BN-ReLU for every width in ``config``, a 2x2 max-pool for every ``"M"``."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        if not isinstance(item, int) or item < 1:
            raise ValueError(f"a VGG config holds positive widths and 'M', got {item!r}")
        layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
        channels = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """``features`` (conv stack), adaptive average pool to ``pool_size`` x ``pool_size``,
    flatten, ``fc`` (hidden layers, or the identity), ``classifier``:
    (N, in_channels, H, W) -> (N, num_classes).

    The parameter names match the seeds' models (``features.*`` and ``classifier.{0,3,6}`` for
    SSAM's VGG-16; ``features.*``, ``fc.{0,1}`` and ``classifier`` for loss-landscape's VGG-9),
    so their state_dicts load.
    """

    def __init__(
        self,
        features: nn.Module,
        classifier: nn.Module,
        *,
        fc: nn.Module | None = None,
        pool_size: int = 1,
    ) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc: nn.Module = nn.Identity() if fc is None else fc
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, in_channels, H, W) to logits (N, num_classes)."""
        return self.classifier(self.fc(self.pool(self.features(x)).flatten(1)))


def vgg16_bn_cifar(num_classes: int = 10, *, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 with BatchNorm and the 4096-4096 classifier (SSAM's ``vgg16_bn`` on CIFAR).

    (N, in_channels, H, W) -> (N, num_classes); 33,646,666 parameters for 10 classes.
    """
    check_positive(num_classes=num_classes, in_channels=in_channels)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    classifier = nn.Sequential(
        nn.Linear(512, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, num_classes),
    )
    return VGG(vgg_features(VGG16_CONFIG, in_channels), classifier, pool_size=1)


def vgg9(num_classes: int = 10, *, in_channels: int = 3, image_size: int = 32) -> VGG:
    """Li et al.'s VGG-9 for ``image_size`` x ``image_size`` inputs (loss-landscape's ``vgg9``).

    The hidden linear layer reads the flattened 256 x s x s map, s = ceil(image_size / 8);
    other input sizes are average-pooled to s x s. (N, in_channels, image_size, image_size) ->
    (N, num_classes); 2,789,706 parameters for 10 classes at 32x32.
    """
    check_positive(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    side = math.ceil(image_size / 8)
    fc = nn.Sequential(nn.Linear(256 * side * side, 256), nn.BatchNorm1d(256), nn.ReLU())
    classifier = nn.Linear(256, num_classes)
    return VGG(vgg_features(VGG9_CONFIG, in_channels), classifier, fc=fc, pool_size=side)
