"""Residual networks for 32x32 images (CIFAR-10/100), from He et al., "Deep Residual Learning
for Image Recognition" (CVPR 2016, arXiv:1512.03385).

Two families, built from :class:`BasicBlock` (two 3x3 convs) or :class:`Bottleneck` (1x1, 3x3,
1x1 convs, 4x expansion), all with BatchNorm:

* :func:`resnet18_cifar`, :func:`resnet34_cifar`, :func:`resnet50_cifar` -- the ImageNet
  networks (widths 64/128/256/512, blocks [2,2,2,2], [3,4,6,3], [3,4,6,3] with bottlenecks)
  with the CIFAR stem used throughout the SAM literature and by the seed projects (Foret et
  al., ICLR 2021; SSAM's and loss-landscape's ``ResNet``): one 3x3 stride-1 conv and no
  max-pool, so the stages see 32, 16, 8 and 4 pixels. Shortcuts are 1x1 conv + BN where the
  shape changes (option B). 11.17M, 21.28M and 23.52M parameters for 10 classes: torchvision's
  ``resnet18/34/50`` with the 7x7 stem replaced by a 3x3 one.
* :func:`resnet20_cifar`, :func:`resnet32_cifar`, :func:`resnet56_cifar` -- the paper's own
  CIFAR networks (its section 4.2): a 3x3 conv to 16 channels, three stages of n blocks with
  16/32/64 channels, global average pool and a linear layer; 6n+2 layers, 0.27M, 0.46M and
  0.85M parameters. Shortcuts are option A (identity, with stride-2 subsampling and zero-padded
  channels where the shape changes), as in the paper, so the shortcuts add no parameters.

.. note:: tomgoldstein/loss-landscape's ``resnet56`` (and the checkpoints it ships) uses
   option-B shortcuts (855,770 parameters instead of 853,018); build it with
   ``resnet56_cifar(shortcut="B")``.

All models map (N, in_channels, H, W) to logits (N, num_classes); the head averages over the
remaining pixels, so other sizes (the 8x8 digits) work too. Convolutions are initialised with
Kaiming-normal (fan_out, ReLU) as in torchvision, BatchNorm with weight 1 and bias 0; the result
is deterministic given ``torch.manual_seed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "kaiming_init_",
    "resnet18_cifar",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet34_cifar",
    "resnet50_cifar",
    "resnet56_cifar",
]

ShortcutKind = Literal["A", "B"]


def kaiming_init_(model: nn.Module, *, zero_linear_bias: bool = False) -> None:
    """Conv weights Kaiming-normal (fan_out, ReLU), BatchNorm2d at identity (weight 1, bias 0)
    and, with ``zero_linear_bias``, linear biases 0; other tensors keep PyTorch's defaults."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif zero_linear_bias and isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


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


def _shortcut(in_channels: int, out_channels: int, stride: int, kind: ShortcutKind) -> nn.Module:
    """Identity where the shape is kept; else 1x1 conv + BN (``"B"``) or zero padding (``"A"``)."""
    if kind not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B', got {kind!r}")
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return _ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (He et al. 2016, figure 2).

    (N, in_channels, H, W) -> (N, width, H / stride, W / stride). Where the shape changes
    the shortcut is a 1x1 conv + BN (``shortcut="B"``) or the parameter-free option A.
    """

    expansion = 1

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, shortcut: ShortcutKind = "B"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _shortcut(in_channels, width, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride, groups)-BN-ReLU-conv1x1-BN plus shortcut, then ReLU (He
    et al. 2016, figure 5; the stride on the 3x3 conv as in torchvision's "ResNet v1.5").

    The inner width is ``int(width * base_width / 64) * groups`` as in torchvision; ``groups``
    above 1 makes it the aggregated block of ResNeXt (Xie et al. 2017, figure 3c).
    (N, in_channels, H, W) -> (N, 4 * width, H / stride, W / stride).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        shortcut: ShortcutKind = "B",
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        check_positive(groups=groups, base_width=base_width)
        inner = int(width * base_width / 64) * groups
        out_channels = self.expansion * width
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stride-1 stem, stages of ``block`` (:class:`BasicBlock` or :class:`Bottleneck`),
    global average pool, linear head.

    Stage ``i`` has ``blocks_per_stage[i]`` blocks of width ``widths[i]`` (output channels
    ``widths[i] * block.expansion``); every stage after the first halves the resolution in its
    first block; the stem has ``widths[0]`` channels. ``block_kwargs`` go to every block
    (``groups`` and ``base_width`` of a ResNeXt bottleneck).
    (N, in_channels, 32, 32) -> (N, num_classes).
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        *,
        num_classes: int = 10,
        shortcut: ShortcutKind = "B",
        in_channels: int = 3,
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
        block_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != len(widths) or not widths:
            raise ValueError("blocks_per_stage and widths must be non-empty and of equal length")
        check_positive(num_classes=num_classes, in_channels=in_channels)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(
                    block(channels, width, stride, shortcut=shortcut, **(block_kwargs or {}))
                )
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, in_channels, H, W) to logits (N, num_classes)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        return self.fc(out.mean(dim=(2, 3)))


def resnet18_cifar(num_classes: int = 10, *, in_channels: int = 3) -> CifarResNet:
    """ResNet-18, CIFAR stem, blocks [2, 2, 2, 2], widths 64..512, 1x1-conv shortcuts.

    (N, 3, 32, 32) -> (N, num_classes); 11,173,962 parameters for 10 classes.
    """
    return CifarResNet(
        [2, 2, 2, 2], [64, 128, 256, 512], num_classes=num_classes, in_channels=in_channels
    )


def resnet34_cifar(num_classes: int = 10, *, in_channels: int = 3) -> CifarResNet:
    """ResNet-34, CIFAR stem, blocks [3, 4, 6, 3], widths 64..512, 1x1-conv shortcuts.

    (N, 3, 32, 32) -> (N, num_classes); 21,282,122 parameters for 10 classes.
    """
    return CifarResNet(
        [3, 4, 6, 3], [64, 128, 256, 512], num_classes=num_classes, in_channels=in_channels
    )


def resnet50_cifar(num_classes: int = 10, *, in_channels: int = 3) -> CifarResNet:
    """ResNet-50, CIFAR stem, bottleneck blocks [3, 4, 6, 3], widths 64..512 (x4 out).

    (N, 3, 32, 32) -> (N, num_classes); 23,520,842 parameters for 10 classes.
    """
    return CifarResNet(
        [3, 4, 6, 3],
        [64, 128, 256, 512],
        num_classes=num_classes,
        in_channels=in_channels,
        block=Bottleneck,
    )


def _he_cifar(
    depth: int, num_classes: int, in_channels: int, shortcut: ShortcutKind
) -> CifarResNet:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a He et al. CIFAR ResNet has depth 6n+2 (20, 32, 56, ...), got {depth}")
    n = (depth - 2) // 6
    return CifarResNet(
        [n, n, n],
        [16, 32, 64],
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
    )


def resnet20_cifar(
    num_classes: int = 10, *, in_channels: int = 3, shortcut: ShortcutKind = "A"
) -> CifarResNet:
    """He et al. 2016 CIFAR ResNet-20: 3 stages x 3 blocks, widths 16/32/64, option-A shortcuts.

    (N, 3, 32, 32) -> (N, num_classes); 269,722 parameters for 10 classes.
    """
    return _he_cifar(20, num_classes, in_channels, shortcut)


def resnet32_cifar(
    num_classes: int = 10, *, in_channels: int = 3, shortcut: ShortcutKind = "A"
) -> CifarResNet:
    """He et al. 2016 CIFAR ResNet-32: 3 stages x 5 blocks, widths 16/32/64, option A.

    (N, 3, 32, 32) -> (N, num_classes); 464,154 parameters for 10 classes.
    """
    return _he_cifar(32, num_classes, in_channels, shortcut)


def resnet56_cifar(
    num_classes: int = 10, *, in_channels: int = 3, shortcut: ShortcutKind = "A"
) -> CifarResNet:
    """He et al. 2016 CIFAR ResNet-56: 3 stages x 9 blocks, widths 16/32/64, option A.

    (N, 3, 32, 32) -> (N, num_classes); 853,018 parameters for 10 classes (855,770 with
    ``shortcut="B"``, the loss-landscape variant).
    """
    return _he_cifar(56, num_classes, in_channels, shortcut)
