"""Argument checks shared by the models (the forecasters :mod:`~samlab.models.samformer`, RevIN
and :mod:`~samlab.models.tsmixer`, and the image classifiers)."""

from __future__ import annotations

import torch


def check_positive(**values: int) -> None:
    """``ValueError`` naming the first of ``values`` (in the order given) that is not a positive
    integer; ``bool`` is refused."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_forecast_input(x: torch.Tensor, seq_len: int, n_channels: int) -> None:
    """``ValueError`` unless ``x`` is a window batch shaped (batch, seq_len, n_channels)."""
    if x.ndim != 3 or x.shape[1] != seq_len or x.shape[2] != n_channels:
        raise ValueError(
            f"expected input (batch, seq_len={seq_len}, n_channels={n_channels}), "
            f"got {tuple(x.shape)}"
        )
