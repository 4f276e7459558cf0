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

A checkpoint written by ``python -m samlab.train.classify`` is read: its config must hold the
name's network (``--model digits_cnn`` for a ``digits_cnn`` run, ``--model resnet20`` for a
``resnet20_cifar`` with ``shortcut="B"``), which is then built as the trainer built it, and
``--dataset digits`` takes the split of the run's seed; ``--model classifier`` /
``--dataset samlab_images`` (:mod:`samlab.train.classify.inputs`) take any classify checkpoint.
A checkpoint of another kind is refused with a message naming the right ``--model``: a
forecasting checkpoint given to an image model, or a classify run of another network. A config
these factories do not know (another trainer's) is not read: the model is built from
``--model_kwargs``, and the landscape command line then reports any architecture mismatch
while loading the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from samlab import models
from samlab.datasets import load_digits
from samlab.train.classify.config import is_classify_config
from samlab.train.classify.inputs import classify_config, refuse_forecast

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


def _image_model(name: str, registry: str, **preset: Any) -> Callable[..., nn.Module]:
    def factory(config: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
        refuse_forecast(config, f"--model {name}")
        if not is_classify_config(config):  # None or another trainer's: not read
            return models.create_model(registry, **{**preset, **kwargs})
        run = classify_config(config, f"--model {name}")
        saved = dict(run.model_kwargs)
        if run.model != registry or any(saved.get(k) != v for k, v in preset.items()):
            fits = [
                n
                for n, (r, p) in IMAGE_NAMES.items()
                if r == run.model and all(saved.get(k) == v for k, v in p.items())
            ]
            also = f" (or --model {fits[0]})" if fits else ""
            shape = "".join(f", {k}={v!r}" for k, v in sorted(saved.items()))
            raise ValueError(
                f"the checkpoint holds a {run.model}{shape} (trained by samlab.train.classify), "
                f"not a {name}; use --model classifier{also}"
            )
        if kwargs:
            raise ValueError(
                f"the checkpoint's config sets the model; --model_kwargs {sorted(kwargs)} "
                "would change it (leave --model_kwargs out)"
            )
        return models.create_model(run.model, **saved)

    factory.__name__ = factory.__qualname__ = name
    fixed = "".join(f"{k}={v!r}, " for k, v in preset.items())
    factory.__doc__ = (
        f"``create_model({registry!r}, {fixed}**kwargs)`` for ``--model {name}``; a "
        "samlab.train.classify checkpoint's config must hold that model and is then built as "
        "the trainer built it; a forecasting checkpoint is refused."
    )
    return factory


#: landscape name -> (samlab.models registry name, fixed keywords)
IMAGE_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet18": ("resnet18_cifar", {}),
    "resnet20": ("resnet20_cifar", {"shortcut": "B"}),
    "resnet32": ("resnet32_cifar", {"shortcut": "B"}),
    "resnet56": ("resnet56_cifar", {"shortcut": "B"}),
    "vgg9": ("vgg9", {}),
    "digits_cnn": ("digits_cnn", {}),
    "digits_mlp": ("digits_mlp", {}),
}


def _named(name: str) -> Callable[..., nn.Module]:
    registry, preset = IMAGE_NAMES[name]
    return _image_model(name, registry, **preset)


resnet18 = _named("resnet18")
resnet20 = _named("resnet20")
resnet32 = _named("resnet32")
resnet56 = _named("resnet56")
vgg9 = _named("vgg9")
digits_cnn = _named("digits_cnn")
digits_mlp = _named("digits_mlp")


def digits_data(
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    split: str = "train",
    *,
    seed: int | None = None,
    test_fraction: float = 0.2,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded 8x8 digits of :func:`samlab.datasets.load_digits` as ``(inputs (N, 1, 8, 8),
    labels (N,))``: the ``split`` part of the seeded split, standardised with the training
    statistics; ``limit`` keeps the first rows. ``name`` may be None or ``digits``. A
    samlab.train.classify checkpoint's config must be a digits run; ``seed`` (the split's)
    defaults to its seed, else 0."""
    refuse_forecast(config, "--dataset digits")
    if is_classify_config(config):
        run = classify_config(config, "--dataset digits")
        if run.dataset != "digits":
            raise ValueError(
                f"the checkpoint was trained on {run.dataset} (by samlab.train.classify); use "
                "--dataset samlab_images"
            )
        seed = run.seed if seed is None else seed
    if name not in (None, "digits"):
        raise ValueError(f"--dataset_name {name}: the digits data have no named parts")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data = load_digits(seed=0 if seed is None else int(seed), test_fraction=test_fraction)
    if split == "train":
        inputs, targets = data.x_train, data.y_train
    else:
        inputs, targets = data.x_test, data.y_test
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        inputs, targets = inputs[: int(limit)], targets[: int(limit)]
    return inputs, targets
