"""ResNeXt-29 for 32x32 images.

Xie et al., "Aggregated Residual Transformations for Deep Neural Networks" (CVPR 2017,
arXiv:1611.05431), section 5.3: a 3x3 conv to 64 channels, three stages of three bottleneck
blocks whose 3x3 conv is split into ``cardinality`` groups of ``base_width`` channels in the
first stage (doubled per stage), stage outputs 256, 512 and 1024 channels, global average pool
and a linear layer; 9 x 3 + 2 = 29 layers. Shortcuts are 1x1 conv + BN where the shape changes.

ResNeXt-29 (32x4d) is the model of sam.pytorch's results table (``resnext29_32x4d``, built the
same way by its homura registry): 4,775,754 parameters for 10 classes. The paper's own CIFAR
models are :func:`resnext29` with (8, 64) and (16, 64): 34.4M and 68.1M parameters (its
table 7), which the tests check.
"""

from __future__ import annotations

from .resnet import Bottleneck, CifarResNet

__all__ = ["resnext29", "resnext29_32x4d"]


def resnext29(
    cardinality: int = 32, base_width: int = 4, num_classes: int = 10, *, in_channels: int = 3
) -> CifarResNet:
    """ResNeXt-29 (``cardinality`` x ``base_width``d): (N, in_channels, 32, 32) -> (N, classes).

    Stage ``i`` (i = 0, 1, 2) has grouped width ``cardinality * base_width * 2**i`` and output
    ``256 * 2**i`` channels.
    """
    return CifarResNet(
        [3, 3, 3],
        [64, 128, 256],
        num_classes=num_classes,
        in_channels=in_channels,
        block=Bottleneck,
        block_kwargs={"groups": cardinality, "base_width": base_width},
    )


def resnext29_32x4d(num_classes: int = 10, *, in_channels: int = 3) -> CifarResNet:
    """ResNeXt-29 (32x4d), sam.pytorch's table; 4,775,754 parameters for 10 classes."""
    return resnext29(32, 4, num_classes, in_channels=in_channels)
