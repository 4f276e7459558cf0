"""Defaults per dialect (the settings a seed project uses for the flags its command leaves out)
and the presets: the seed projects' reference experiments by name.

A command's values are, in order of precedence: its flags, then the preset's, then its
dialect's defaults (a preset brings its dialect). Each dialect also lists the notes printed
where samlab reproduces a seed's semantics that differ from its own (per-epoch learning-rate
steps, hard-coded weight decay) or cannot reproduce them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULTS", "PRESETS", "Preset", "preset_table"]

#: per dialect: values of the options a command leaves out
DEFAULTS: dict[str, dict[str, Any]] = {
    "samlab": dict(
        dataset="digits", model="digits_cnn", optimizer="sgd", lr=0.05, momentum=0.9,
        weight_decay=5e-4, epochs=20, batch_size=64, lr_schedule="cosine", seed=0,
    ),
    # configs/defaulf_cfg.py of Mi et al.'s SSAM
    "ssam": dict(
        dataset="CIFAR10_base", model="resnet18", optimizer="sgd", lr=0.05, momentum=0.9,
        weight_decay=5e-4, rho=0.05, epochs=200, batch_size=128, seed=1234,
        lr_schedule="CosineLRscheduler", lr_min=0.0, warmup_epochs=0.0, warmup_lr=0.0,
        milestones=[60, 120, 160], gamma=0.2, sparsity=0.2, num_samples=1024, update_freq=5,
        pattern="unstructured", drop_rate=0.5, drop_strategy="gradient",
        growth_strategy="random", num_workers=8,
    ),
    # example/train.py of GSAM (WRN-16-8 on CIFAR-10 with Cutout)
    "gsam": dict(
        dataset="CIFAR10_cutout", depth=16, width=8, optimizer="gsam", adaptive=True, lr=0.1,
        momentum=0.9, weight_decay=5e-4, label_smoothing=0.1, rho=2.0, rho_min=2.0, alpha=0.4,
        epochs=200, batch_size=128, lr_schedule="cosine", num_workers=8, seed=0,
    ),
    # main_prune_train.py of SAM.v2
    "samv2": dict(
        dataset="cifar10", optimizer="adam", rho=0.5, lr=0.1, momentum=0.9, weight_decay=5e-4,
        epochs=160, batch_size=64, eval_batch_size=256, lr_schedule="default", seed=1,
        warmup_lr=0.001, warmup_epochs=0.0, label_smoothing=0.0,
    ),
    # cifar10.py of sam.pytorch
    "sampytorch": dict(
        dataset="cifar10", model="resnet20", optimizer="sam", lr=0.1, momentum=0.9,
        weight_decay=5e-4, rho=0.05, epochs=200, batch_size=128, lr_schedule="cosine",
        warmup_epochs=5.0, seed=1, num_workers=4,
    ),
    # code/experiments/vgg/main.py of sam_experiments
    "vgg9": dict(
        dataset="CIFAR10", augment="none", model="vgg9", optimizer="adam", lr=1e-3,
        weight_decay=1e-5, rho=0.5, epochs=100, batch_size=256, lr_schedule="constant",
        seed=2023,
    ),
}  # fmt: skip

#: per dialect: what samlab reproduces or changes, printed when the dialect is used
NOTES: dict[str, tuple[str, ...]] = {
    "ssam": (
        "SSAM steps its learning-rate schedule once per epoch: reproduced (lr_step=epoch)",
        "SSAM's --pattern structured is per tensor: samlab's pattern 'tensor'; unstructured "
        "is one global top-k over all parameters: scope 'global'",
    ),
    "gsam": (
        "GSAM declares --rho_max/--rho_min/--alpha as int: samlab reads floats",
        "GSAM's --threads is the number of data-loading workers (samlab's --num-workers)",
        "rho follows the learning rate from --rho_max to --rho_min (GSAM's proportional "
        "schedule), the lr steps per iteration as in GSAM's example",
    ),
    "samv2": ("SAM.v2's learning-rate schedules step per iteration: reproduced",),
    "sampytorch": (
        "sam.pytorch's warm-up (homura's cosine with warm-up, whose arguments changed meaning "
        "across homura releases) is taken as 5 epochs of linear warm-up from 0, then cosine",
    ),
    "vgg9": (
        "sam_experiments stops early on validation loss (patience 30): samlab trains all "
        "--epochs and reports the final and the best test accuracy",
        "sam_experiments reads CIFAR-10 without shuffling: samlab shuffles the training data",
    ),
}


@dataclass(frozen=True)
class Preset:
    """A seed experiment: its dialect, its flags and where it comes from."""

    name: str
    dialect: str
    values: dict[str, Any]
    source: str
    notes: tuple[str, ...] = field(default=())


_SSAM = dict(
    model="resnet18", optimizer="ssamf-sgd", lr=0.05, weight_decay=1e-3, rho=0.2,
    pattern="unstructured", sparsity=0.5, num_samples=128, update_freq=1,
)  # fmt: skip
_SAMPYTORCH = "sam.pytorch README table (CIFAR-10, 200 epochs, batch 128, lr 0.1, rho 0.05)"
_SAMV2 = dict(
    model="resnet", depth=32, dataset="cifar10", lr=0.1, lr_schedule="cosine", epochs=160,
    batch_size=64, weight_sparsity=0.9, weight_mask="magnitude",
)  # fmt: skip
_SAMV2_NOTE = (
    "the seed prunes with its prune-and-grow framework (mask updates in epochs 100-130); samlab "
    "holds a static global-magnitude mask of the initial weights at 90% sparsity",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("ssam-resnet18-cifar10", "ssam", {**_SSAM, "dataset": "CIFAR10_cutout"},
               "SSAM README: ResNet-18, SSAM-F, unstructured 50%, 128 Fisher samples"),
        Preset("ssam-resnet18-cifar100", "ssam", {**_SSAM, "dataset": "CIFAR100_cutout"},
               "SSAM README: ResNet-18, SSAM-F, unstructured 50%, 128 Fisher samples"),
        Preset("gsam-wrn16-8-cifar10", "gsam", {}, "GSAM example/train.py defaults and "
               "README table (WRN-16-8, CIFAR-10, 200 epochs)"),
        Preset("sampytorch-resnet20-cifar10", "sampytorch", {"model": "resnet20"}, _SAMPYTORCH),
        Preset("sampytorch-wrn28-2-cifar10", "sampytorch", {"model": "wrn28_2"}, _SAMPYTORCH),
        Preset("sampytorch-resnext29-cifar10", "sampytorch",
               {"model": "resnext29_32x4d"}, _SAMPYTORCH),
        Preset("samv2-resnet32-sp90-sgd", "samv2", {**_SAMV2, "optimizer": "sgd", "seed": 914},
               "SAM.v2 scripts/run_mag_prune_irregular_sp_0.9.sh (SGD arm)", _SAMV2_NOTE),
        Preset("samv2-resnet32-sp90-sam", "samv2",
               {**_SAMV2, "optimizer": "sgd-sam", "sam_v2": True, "adaptive": True,
                "rho": 0.05, "seed": 444},
               "SAM.v2 scripts/run_mag_prune_irregular_sp_0.9_sam.sh (one-step SAM arm)",
               _SAMV2_NOTE),
        Preset("vgg9-cifar10", "vgg9", {}, "sam_experiments VGG-9 on CIFAR-10 (SAM, rho 0.5, "
               "Adam 1e-3)"),
    )
}  # fmt: skip


def preset_table() -> str:
    """One line per preset: name, dialect, source."""
    width = max(len(n) for n in PRESETS)
    return "\n".join(f"{p.name:<{width}}  {p.source}" for p in PRESETS.values())
