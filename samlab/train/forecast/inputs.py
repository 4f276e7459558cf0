"""A forecasting run as the landscape command line's named inputs (entry points).

samlab registers these in its ``pyproject.toml`` (``landscape.models``: ``samformer``,
``transformer``, ``transformer_random``, ``tsmixer``; ``landscape.datasets``:
``samformer_datasets``), so that a checkpoint written by ``python -m samlab.train.forecast``
gives its loss surface with no code::

    python -m landscape surface --model samformer --model_file OUT/seed_0/best.pt \\
        --dataset samformer_datasets --dataset_name ETTh1 --loss_name mse --x=-1:1:20 --y=-1:1:20

The model factory rebuilds the network (channels, horizon, look-back, variant) from the
checkpoint's config alone; the data factory gives the run's training (or test) windows on the
standardised scale, read from the data location the run recorded. A plain state_dict (no
config) needs the shape through ``--model_kwargs`` / ``--data_kwargs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from samlab.datasets.timeseries import get_dataset_spec, load_forecast_data
from samlab.train.classify.config import is_classify_config
from samlab.train.forecast.config import FORECAST_MODELS, ForecastConfig
from samlab.train.forecast.model import build_forecaster

__all__ = [
    "forecast_config",
    "forecast_windows",
    "is_forecast_config",
    "samformer_model",
    "transformer_model",
    "transformer_random_model",
    "tsmixer_model",
]

SPLITS = ("train", "val", "test")
SHAPE_HINT = '{"n_channels": 7, "seq_len": 512, "horizon": 96}'


def is_forecast_config(config: Any) -> bool:
    """Whether a checkpoint's ``config`` is one :class:`ForecastConfig` wrote."""
    return (
        isinstance(config, Mapping)
        and config.get("model") in FORECAST_MODELS
        and all(key in config for key in ("dataset", "horizon", "seq_len"))
    )


def forecast_config(config: Mapping[str, Any], what: str) -> ForecastConfig:
    """The :class:`ForecastConfig` of a checkpoint's ``config``; ``ValueError`` for a
    checkpoint of another kind (``what`` names the asker in the message)."""
    if not is_forecast_config(config):
        if is_classify_config(config):
            raise ValueError(
                f"{what}: the checkpoint was written by samlab.train.classify (a "
                f"{config['model']} on {config['dataset']}); use --model classifier --dataset "
                "samlab_images"
            )
        keys = ", ".join(sorted(config)[:8]) if isinstance(config, Mapping) else type(config)
        raise ValueError(
            f"{what}: the checkpoint is not one written by samlab.train.forecast (its config "
            f"has {keys}); give the model of the run that wrote it (--model MODULE:FACTORY)"
        )
    return ForecastConfig.from_dict(dict(config))


def _forecaster(name: str) -> Callable[..., nn.Module]:
    def factory(config: Mapping[str, Any] | None = None, **kwargs: Any) -> nn.Module:
        if config is None:
            if "n_channels" not in kwargs:
                raise ValueError(
                    f"a plain state_dict (no config) needs the model's shape: give "
                    f"--model_kwargs '{SHAPE_HINT}' (n_channels required; seq_len and horizon "
                    "default to 512 and 96), or the run's best.pt / last.pt"
                )
            from samlab.models import create_model

            return create_model(name, **kwargs)
        run = forecast_config(config, f"--model {name}")
        if run.model != name:
            raise ValueError(
                f"the checkpoint holds a {run.model} (trained by samlab.train.forecast); "
                f"use --model {run.model}"
            )
        if kwargs:
            raise ValueError(
                f"the checkpoint's config sets the model; --model_kwargs {sorted(kwargs)} "
                "would change it (leave --model_kwargs out)"
            )
        return build_forecaster(run, get_dataset_spec(run.dataset).n_channels)

    factory.__name__ = factory.__qualname__ = f"{name}_model"
    factory.__doc__ = (
        f"The ``{name}`` forecaster of a samlab.train.forecast checkpoint's ``config`` (or, "
        "with ``config=None``, of ``n_channels``/``seq_len``/``horizon`` keywords)."
    )
    return factory


samformer_model = _forecaster("samformer")
transformer_model = _forecaster("transformer")
transformer_random_model = _forecaster("transformer_random")
tsmixer_model = _forecaster("tsmixer")


def forecast_windows(
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    split: str = "train",
    *,
    data_dir: str | None = None,
    path: str | None = None,
    seq_len: int | None = None,
    horizon: int | None = None,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows ``(X (N, L, D), Y (N, H, D))`` of a split, standardised with the train rows.

    With a forecast checkpoint's ``config``: the run's dataset, look-back and horizon, read
    from the folder or file the run recorded (``data_dir`` / ``path`` win). ``name`` (e.g.
    ``ETTh1``) picks the dataset when there is no config, and must agree with the config's
    otherwise. ``limit`` keeps the first windows.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    where: dict[str, Any] = {"data_dir": data_dir, "path": path}
    if config is not None:
        run = forecast_config(config, "--dataset samformer_datasets")
        if name is not None and get_dataset_spec(name).name != get_dataset_spec(run.dataset).name:
            raise ValueError(
                f"--dataset_name {name}: the checkpoint was trained on {run.dataset}; leave "
                "--dataset_name out or give a checkpoint of that dataset"
            )
        dataset = run.dataset
        seq_len = run.seq_len if seq_len is None else seq_len
        horizon = run.horizon if horizon is None else horizon
        if data_dir is None and path is None:
            where = {"data_dir": run.data_dir, "path": run.data_path}
    elif name is None:
        raise ValueError(
            "no dataset: give --dataset_name (e.g. ETTh1) or a --model_file checkpoint written "
            "by samlab.train.forecast"
        )
    else:
        dataset = name
    data = load_forecast_data(
        dataset, 96 if horizon is None else horizon, seq_len=512 if seq_len is None else seq_len,
        **where,
    )  # fmt: skip
    windows = getattr(data, split)
    count = len(windows) if limit is None else min(len(windows), int(limit))
    return windows.windows(torch.arange(count))
