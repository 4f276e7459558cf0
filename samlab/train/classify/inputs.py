"""A classification run as the landscape command line's named inputs (entry points).

samlab registers these in its ``pyproject.toml`` (``landscape.models``: ``classifier``;
``landscape.datasets``: ``samlab_images``), so that a checkpoint written by
``python -m samlab.train.classify`` gives its loss surface with no code::

    python -m landscape surface --model classifier --model_file OUT/last.pt \\
        --dataset samlab_images --x=-1:1:21 --y=-1:1:21 --subset 512

The model factory rebuilds the network as the trainer built it, from the checkpoint's config
alone (``create_model(config.model, **config.model_kwargs)``; the trainer's command line puts
the dataset's ``num_classes`` into ``model_kwargs``). The data factory gives the run's training
(or test) split without augmentation: the digits split with the run's seed, or the image files
under ``data_dir`` (default ``$SAMLAB_DATA``, else ``./data``; the trainer does not record its
``--data-dir``, so give ``--data_kwargs '{"data_dir": "DIR"}'`` when the files lie elsewhere).
A forecasting checkpoint is refused with a message naming its ``--model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from samlab.train.classify.config import ClassifyConfig, is_classify_config
from samlab.train.forecast.inputs import is_forecast_config

__all__ = [
    "classifier_model",
    "classify_config",
    "classify_data",
    "refuse_forecast",
]

SPLITS = ("train", "test")


def refuse_forecast(config: Any, what: str) -> None:
    """``ValueError`` naming the forecaster's ``--model`` when ``config`` is a forecasting
    run's (``what`` names the asker, e.g. ``--model classifier``)."""
    if is_forecast_config(config):
        raise ValueError(
            f"{what}: the checkpoint was written by samlab.train.forecast (a {config['model']} "
            f"on {config['dataset']}); use --model {config['model']} --dataset samformer_datasets"
        )


def classify_config(config: Any, what: str) -> ClassifyConfig:
    """The :class:`ClassifyConfig` of a checkpoint's ``config``; ``ValueError`` for a
    checkpoint of another kind (``what`` names the asker in the message)."""
    refuse_forecast(config, what)
    if not is_classify_config(config):
        keys = ", ".join(sorted(config)[:8]) if isinstance(config, Mapping) else type(config)
        raise ValueError(
            f"{what}: the checkpoint is not one written by samlab.train.classify (its config "
            f"has {keys}); give the model of the run that wrote it (--model NAME with "
            "--model_kwargs, or --model MODULE:FACTORY)"
        )
    return ClassifyConfig.from_dict(dict(config))


def classifier_model(config: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """The network of a samlab.train.classify checkpoint's ``config``, built as the trainer
    built it (``create_model(config.model, **config.model_kwargs)``)."""
    from samlab.models import create_model

    if config is None:
        raise ValueError(
            "a plain state_dict has no config to rebuild the network from: give the run's "
            "last.pt / best.pt, or name the architecture (e.g. --model digits_cnn, --model "
            "resnet18 with --model_kwargs '{\"num_classes\": 10}')"
        )
    run = classify_config(config, "--model classifier")
    if kwargs:
        raise ValueError(
            f"the checkpoint's config sets the model; --model_kwargs {sorted(kwargs)} would "
            "change it (leave --model_kwargs out)"
        )
    return create_model(run.model, **dict(run.model_kwargs))


def classify_data(
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    split: str = "train",
    *,
    data_dir: str | None = None,
    seed: int | None = None,
    limit: int | None = None,
) -> Any:
    """The ``split`` of a classification run's data, without augmentation.

    With a classify checkpoint's ``config``: its dataset (``name``, any spelling such as
    ``CIFAR10``, must agree when given) and, for the digits, the split of its seed. Without a
    config, ``name`` picks the dataset (``seed`` the digits split, default 0). The digits come
    as ``(inputs (N, 1, 8, 8), labels (N,))`` tensors standardised as the trainer's; other
    datasets as a ``Dataset`` of the files under ``data_dir`` (see
    :func:`samlab.datasets.images.data_root`). ``limit`` keeps the first samples.
    """
    from samlab.datasets.images import resolve_image_dataset

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if config is not None:
        run = classify_config(config, "--dataset samlab_images")
        dataset = resolve_image_dataset(run.dataset)[0]
        if name is not None and resolve_image_dataset(name)[0] != dataset:
            raise ValueError(
                f"--dataset_name {name}: the checkpoint was trained on {run.dataset}; leave "
                "--dataset_name out or give a checkpoint of that dataset"
            )
        seed = run.seed if seed is None else seed
    elif name is None:
        raise ValueError(
            "no dataset: give --dataset_name (e.g. digits, CIFAR10) or a --model_file "
            "checkpoint written by samlab.train.classify"
        )
    else:
        dataset = resolve_image_dataset(name)[0]
    if dataset == "digits":
        from samlab.datasets import load_digits

        data = load_digits(seed=0 if seed is None else int(seed))
        inputs, targets = (data.x_train, data.y_train) if split == "train" else (
            data.x_test, data.y_test)  # fmt: skip
        if limit is not None:
            inputs, targets = inputs[: int(limit)], targets[: int(limit)]
        return inputs, targets
    from samlab.datasets.images import load_image_dataset

    images = load_image_dataset(dataset, split, augment="none", root=data_dir)
    if limit is not None and int(limit) < len(images):
        images = torch.utils.data.Subset(images, range(int(limit)))
    return images
