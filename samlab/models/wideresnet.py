"""Wide residual networks for 32x32 images.

Zagoruyko and Komodakis, "Wide Residual Networks" (BMVC 2016, arXiv:1605.07146): WRN-d-k has a
3x3 conv to 16 channels, three groups of n = (d - 4) / 6 pre-activation blocks with 16k, 32k and
64k channels (the second and third group halve the resolution), a final BN-ReLU, global average
pool and a linear layer. A block is BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3 plus a
shortcut: the identity where the shape is kept, else a 1x1 conv (stride) applied to the block's
activated input, as in the paper's code and in the seed projects' copies (SSAM's
``wideresnet28x10``, GSAM's WRN-16-8 example, sam.pytorch's ``wrn28_2``).

Parameter counts for 10 classes: WRN-28-10 36,479,194 (the paper's 36.5M), WRN-16-8
10,961,370 (11.0M), WRN-28-2 1,467,610 (1.5M). Convolutions are initialised Kaiming-normal
(fan_out, ReLU), BatchNorm at identity, linear biases at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive
from .resnet import kaiming_init_

__all__ = ["WideBlock", "WideResNet", "wide_resnet", "wrn16_8", "wrn28_2", "wrn28_10"]


class WideBlock(nn.Module):
    """Pre-activation block: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(activated)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: (N, in_channels, H, W) -> (N, num_classes)."""

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(widen_factor=widen_factor, num_classes=num_classes, in_channels=in_channels)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"a WideResNet has depth 6n+4 (16, 22, 28, ...), got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        groups = []
        channels = 16
        for index, width in enumerate(widths):
            blocks = []
            for block_index in range(n):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(WideBlock(channels, width, stride, dropout=dropout))
                channels = width
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init_(self, zero_linear_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, in_channels, H, W) to logits (N, num_classes)."""
        out = self.groups(self.conv1(x))
        out = F.relu(self.bn(out))
        return self.fc(out.mean(dim=(2, 3)))


def wide_resnet(
    depth: int,
    widen_factor: int,
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-``depth``-``widen_factor`` (depth 6n+4) with optional dropout between the convs."""
    return WideResNet(
        depth, widen_factor, num_classes=num_classes, in_channels=in_channels, dropout=dropout
    )


def wrn28_10(num_classes: int = 10, *, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10 (SSAM's ``wideresnet28x10``); 36,479,194 parameters for 10 classes."""
    return wide_resnet(28, 10, num_classes, in_channels=in_channels, dropout=dropout)


def wrn16_8(num_classes: int = 10, *, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-16-8 (GSAM's CIFAR-10 example); 10,961,370 parameters for 10 classes."""
    return wide_resnet(16, 8, num_classes, in_channels=in_channels, dropout=dropout)


def wrn28_2(num_classes: int = 10, *, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-28-2 (sam.pytorch's ``wrn28_2``); 1,467,610 parameters for 10 classes."""
    return wide_resnet(28, 2, num_classes, in_channels=in_channels, dropout=dropout)
