"""The forecaster of a config, its errors on a split, and fixed batches of a split."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from samlab.datasets.timeseries import WindowDataset, get_dataset_spec
from samlab.models import create_model
from samlab.train.forecast.config import ATTENTION_MODELS, ForecastConfig


def build_forecaster(config: ForecastConfig, n_channels: int) -> nn.Module:
    """The model of ``config`` for ``n_channels`` channels (TSMixer gets the paper's
    per-dataset n_block / dropout / ff_dim)."""
    kwargs: dict[str, Any] = {"init": config.init}
    if config.model in ("samformer", "transformer"):
        kwargs["output_projection"] = config.output_projection
    if config.model in ATTENTION_MODELS:
        kwargs["d_model"] = config.d_model
    if config.model == "tsmixer":
        kwargs.update(get_dataset_spec(config.dataset).tsmixer)
    return create_model(
        config.model,
        n_channels=n_channels,
        seq_len=config.seq_len,
        horizon=config.horizon,
        **kwargs,
    )


@torch.no_grad()
def evaluate_forecaster(
    model: nn.Module,
    split: WindowDataset,
    *,
    batch_size: int = 512,
    max_windows: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """MSE and MAE over every element (window x horizon x channel) of a ``WindowDataset``."""
    was_training = model.training
    model.eval()
    n = len(split) if max_windows is None else min(len(split), max_windows)
    sq = torch.zeros((), dtype=torch.float64)
    ab = torch.zeros((), dtype=torch.float64)
    count = 0
    try:
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            x, y = split.windows(index)
            err = model(x.to(device)).float() - y.to(device)
            sq += err.double().square().sum().cpu()
            ab += err.double().abs().sum().cpu()
            count += err.numel()
    finally:
        model.train(was_training)
    return {"mse": float(sq) / count, "mae": float(ab) / count}


def forecast_batches(
    split: WindowDataset, n_windows: int, batch_size: int = 256
) -> list[tuple[Tensor, Tensor]]:
    """The first ``n_windows`` windows of a split as a fixed list of batches (for sharpness)."""
    n = min(len(split), n_windows)
    return [split.windows(torch.arange(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
