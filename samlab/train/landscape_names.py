"""samlab's image models and embedded data as the landscape command line's named inputs.

Registered in ``pyproject.toml`` under the entry-point groups ``landscape.models`` and
``landscape.datasets`` (the forecasters and their windows are in
:mod:`samlab.train.forecast.inputs`). The landscape package looks the names up at run time and
never imports samlab. Call conventions::

    model factory:  factory(config=<checkpoint config or None>, **model_kwargs)
    data factory:   factory(name=..., config=..., split="train"|"test", **data_kwargs)

loss-landscape's own CIFAR names are registered where samlab has the network: ``resnet18``
(:func:`samlab.models.resnet18_cifar`), ``resnet20``, ``resnet32`` and ``resnet56`` (He et al.'s
CIFAR ResNets with loss-landscape's 1x1-convolution shortcuts, ``shortcut="B"``) and ``vgg9``
(:func:`samlab.models.vgg9`); their state_dict keys are samlab's, so a checkpoint of
loss-landscape's own code (a pickled whole model) does not load into them. ``digits_cnn`` /
``digits_mlp`` and the data ``digits`` (the embedded 8x8 digits, standardised as
:func:`samlab.datasets.load_digits`) run without any download.

A checkpoint of another kind is refused with a message naming the right ``--model``: a
forecasting checkpoint given to an image model, for example. A config these factories do not
know (another trainer's) is not read: the model is built from ``--model_kwargs``, and the
landscape command line then reports any architecture mismatch while loading the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from samlab import models
from samlab.datasets import load_digits
from samlab.train.forecast.inputs import is_forecast_config

__all__ = [
    "digits_cnn",
    "digits_data",
    "digits_mlp",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet56",
    "vgg9",
]

SPLITS = ("train", "test")


def refuse_forecast(config: Mapping[str, Any] | None, what: str) -> None:
    """``ValueError`` when ``config`` is a forecasting run's: it needs a forecaster."""
    if is_forecast_config(config):
        raise ValueError(
            f"{what}: the checkpoint was written by samlab.train.forecast (a {config['model']} "
            f"on {config['dataset']}); use --model {config['model']} --dataset samformer_datasets"
        )


def _image_model(
    name: str, build: Callable[..., nn.Module], **preset: Any
) -> Callable[..., nn.Module]:
    def factory(config: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
        refuse_forecast(config, f"--model {name}")
        return build(**{**preset, **kwargs})

    factory.__name__ = factory.__qualname__ = name
    fixed = "".join(f"{k}={v!r}, " for k, v in preset.items())
    factory.__doc__ = (
        f"``{build.__name__}({fixed}**kwargs)`` for ``--model {name}`` (``config`` is checked, not "
        "read: a forecasting checkpoint is refused)."
    )
    return factory


resnet18 = _image_model("resnet18", models.resnet18_cifar)
resnet20 = _image_model("resnet20", models.resnet20_cifar, shortcut="B")
resnet32 = _image_model("resnet32", models.resnet32_cifar, shortcut="B")
resnet56 = _image_model("resnet56", models.resnet56_cifar, shortcut="B")
vgg9 = _image_model("vgg9", models.vgg9)
digits_cnn = _image_model("digits_cnn", models.digits_cnn)
digits_mlp = _image_model("digits_mlp", models.digits_mlp)


def digits_data(
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    split: str = "train",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded 8x8 digits of :func:`samlab.datasets.load_digits` as ``(inputs (N, 1, 8, 8),
    labels (N,))``: the ``split`` part of the seeded split, standardised with the training
    statistics; ``limit`` keeps the first rows. ``name`` may be None or ``digits``."""
    refuse_forecast(config, "--dataset digits")
    if name not in (None, "digits"):
        raise ValueError(f"--dataset_name {name}: the digits data have no named parts")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data = load_digits(seed=seed, test_fraction=test_fraction)
    if split == "train":
        inputs, targets = data.x_train, data.y_train
    else:
        inputs, targets = data.x_test, data.y_test
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        inputs, targets = inputs[: int(limit)], targets[: int(limit)]
    return inputs, targets
