"""Residual networks for 32x32 images (CIFAR-10/100).

Two families, both built from the same :class:`BasicBlock` (two 3x3 convs with BatchNorm):

* :func:`resnet18_cifar` -- ResNet-18 from He et al., "Deep Residual Learning for Image
  Recognition" (CVPR 2016, arXiv:1512.03385), ImageNet widths 64/128/256/512 with the CIFAR
  stem used throughout the SAM literature (Foret et al., ICLR 2021): one 3x3 stride-1 conv and
  no max-pool, so the stages see 32, 16, 8 and 4 pixels. 11.17M parameters for 10 classes.
* :func:`resnet20_cifar` -- the paper's own CIFAR network (its section 4.2): a 3x3 conv to 16
  channels, three stages of n=3 blocks with 16/32/64 channels, global average pool and a linear
  layer; 6n+2 = 20 layers, 0.27M parameters. Shortcuts are option A (identity, with stride-2
  subsampling and zero-padded channels where the shape changes), as in the paper, so the
  shortcuts add no parameters.

All models map (N, 3, 32, 32) to logits (N, num_classes). Convolutions are initialised with
Kaiming-normal (fan_out, ReLU) as in torchvision, BatchNorm with weight 1 and bias 0; the result
is deterministic given ``torch.manual_seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "CifarResNet", "resnet18_cifar", "resnet20_cifar"]

ShortcutKind = Literal["A", "B"]


class _ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and append zero channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W_left, W_right, H_top, H_bottom, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (He et al. 2016, figure 2).

    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride). Where the shape changes
    the shortcut is a 1x1 conv + BN (``shortcut="B"``) or the parameter-free option A.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, *, shortcut: ShortcutKind = "B"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _ZeroPadShortcut(in_channels, out_channels, stride)
        elif shortcut == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stride-1 stem, stages of :class:`BasicBlock`, global average pool, linear head.

    Stage ``i`` has ``blocks_per_stage[i]`` blocks of ``widths[i]`` channels; every stage after
    the first halves the resolution in its first block. (N, 3, 32, 32) -> (N, num_classes).
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        *,
        num_classes: int = 10,
        shortcut: ShortcutKind = "B",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != len(widths) or not widths:
            raise ValueError("blocks_per_stage and widths must be non-empty and of equal length")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, shortcut=shortcut))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, 3, H, W) to logits (N, num_classes)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        return self.fc(out.mean(dim=(2, 3)))


def resnet18_cifar(num_classes: int = 10) -> CifarResNet:
    """ResNet-18, CIFAR stem, blocks [2, 2, 2, 2], widths 64..512, 1x1-conv shortcuts.

    (N, 3, 32, 32) -> (N, num_classes); 11,173,962 parameters for 10 classes.
    """
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes=num_classes, shortcut="B")


def resnet20_cifar(num_classes: int = 10) -> CifarResNet:
    """He et al. 2016 CIFAR ResNet-20: 3 stages x 3 blocks, widths 16/32/64, option-A shortcuts.

    (N, 3, 32, 32) -> (N, num_classes); 0.27M parameters for 10 classes.
    """
    return CifarResNet([3, 3, 3], [16, 32, 64], num_classes=num_classes, shortcut="A")
