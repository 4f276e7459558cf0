"""TSMixer with reversible instance normalisation, the all-MLP baseline of SAMformer.

Chen, Li, Yoder, Arik, Pfister, "TSMixer: An All-MLP Architecture for Time Series Forecasting"
(TMLR 2023, arXiv:2303.06053); this follows google-research ``tsmixer_basic`` (model
``tsmixer_rev_in``). Input x (B, L, D), output (B, H, D):

    z = RevIN(x)
    n_block times, each a residual block:
        time mixing:     z = z + Dropout(act(Norm(z)^T W_time + b)^T)        (Linear L -> L)
        feature mixing:  z = z + Dropout(Dropout(act(Norm(z) W_1 + b_1)) W_2 + b_2)
                                                        (Linear D -> ff_dim -> D)
    y = (z^T W + b)^T                                   (Linear L -> H on (B, D, L))
    return RevIN^-1(y)

``Norm`` acts on the whole (L, D) window of one sample, as Keras ``axis=[-2, -1]``: ``"batch"``
is ``BatchNorm1d`` over the L*D flattened features (statistics over the batch, one scale and
shift per (time, channel) cell), ``"layer"`` is ``LayerNorm((L, D))``. Both use Keras' defaults
eps=1e-3 and, for BatchNorm, running-average momentum 0.99 (``momentum=0.01`` in PyTorch terms).

.. note:: ``share_weights=True`` reproduces the SAMformer repository's TensorFlow TSMixer
   (``models/tsmixer_rev_in.py``), which builds its dense and norm layers once and reuses them in
   every block, with one norm serving both halves of each block; the paper's TSMixer and TSMixer
   + SAM baselines come from that variant. The default (``share_weights=False``) gives every
   block its own layers and a separate norm per half, as google-research's ``res_block`` does.
   ``init="keras"`` (the default) initialises as the TensorFlow code does (Glorot-uniform
   weights, zero biases); ``init="torch"`` keeps PyTorch's ``nn.Linear`` default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._checks import check_forecast_input, check_positive
from ._keras_init import check_init, keras_init_
from .samformer import RevIN

__all__ = ["TSMixer", "tsmixer"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
_NORMS = ("batch", "layer")


class _WindowNorm(nn.Module):
    """Normalise each sample's whole (L, D) window, like Keras ``axis=[-2, -1]`` norms."""

    def __init__(self, kind: str, seq_len: int, n_channels: int) -> None:
        super().__init__()
        if kind == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(seq_len * n_channels, eps=1e-3, momentum=0.01)
        else:
            self.norm = nn.LayerNorm((seq_len, n_channels), eps=1e-3)
        self.flatten = kind == "batch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten:  # (B, L, D) -> (B, L*D) for BatchNorm1d, and back
            return self.norm(x.flatten(1)).view_as(x)
        return self.norm(x)


class _MixingLayers(nn.Module):
    """The layers of one TSMixer block: norms, time Linear(L, L), feature MLP D -> ff -> D."""

    def __init__(
        self, n_channels: int, seq_len: int, ff_dim: int, norm: str, separate_norms: bool
    ) -> None:
        super().__init__()
        self.time_norm = _WindowNorm(norm, seq_len, n_channels)
        self.feature_norm = (
            _WindowNorm(norm, seq_len, n_channels) if separate_norms else self.time_norm
        )
        self.time_linear = nn.Linear(seq_len, seq_len)
        self.feature_in = nn.Linear(n_channels, ff_dim)
        self.feature_out = nn.Linear(ff_dim, n_channels)


class _ResBlock(nn.Module):
    """One residual block (time mixing, then feature mixing) on (B, L, D) using ``layers``."""

    def __init__(self, layers: _MixingLayers, activation: str, dropout: float) -> None:
        super().__init__()
        self.layers = layers
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.layers
        mixed = layers.time_linear(layers.time_norm(x).transpose(1, 2))  # (B, D, L)
        x = x + self.dropout(self.activation(mixed).transpose(1, 2))
        mixed = self.dropout(self.activation(layers.feature_in(layers.feature_norm(x))))
        return x + self.dropout(layers.feature_out(mixed))


class TSMixer(nn.Module):
    """TSMixer with RevIN: (B, seq_len, D) -> (B, horizon, D).

    ``n_block`` residual blocks of time mixing (Linear over the L time steps, shared by the
    channels) and feature mixing (an MLP over the D channels, shared by the time steps), then a
    temporal projection Linear(L, H) shared by the channels. Defaults are the official scripts'
    ETT settings (2 blocks, dropout 0.9, ff_dim 64, BatchNorm, ReLU). ``share_weights=True``
    makes all blocks use one set of layers and one norm for both halves (the SAMformer
    repository's variant; see the module note).
    """

    def __init__(
        self,
        n_channels: int,
        seq_len: int = 512,
        horizon: int = 96,
        *,
        n_block: int = 2,
        dropout: float = 0.9,
        ff_dim: int = 64,
        norm: str = "batch",
        activation: str = "relu",
        use_revin: bool = True,
        share_weights: bool = False,
        init: str = "keras",
    ) -> None:
        super().__init__()
        check_init(init)
        check_positive(
            n_channels=n_channels, seq_len=seq_len, horizon=horizon, n_block=n_block, ff_dim=ff_dim
        )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.n_channels = n_channels
        self.seq_len = seq_len
        self.horizon = horizon
        self.share_weights = share_weights
        self.revin = RevIN(n_channels) if use_revin else None
        if share_weights:
            shared = _MixingLayers(n_channels, seq_len, ff_dim, norm, separate_norms=False)
            layers = [shared] * n_block
        else:
            layers = [
                _MixingLayers(n_channels, seq_len, ff_dim, norm, separate_norms=True)
                for _ in range(n_block)
            ]
        self.blocks = nn.ModuleList(_ResBlock(layer, activation, dropout) for layer in layers)
        self.head = nn.Linear(seq_len, horizon)
        if init == "keras":
            keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast (B, horizon, D) from the window x shaped (B, seq_len, D)."""
        check_forecast_input(x, self.seq_len, self.n_channels)
        if self.revin is not None:
            x, stats = self.revin.normalize_with_stats(x)
        for block in self.blocks:
            x = block(x)
        out = self.head(x.transpose(1, 2)).transpose(1, 2)  # (B, H, D)
        if self.revin is not None:
            out = self.revin.denormalize_with(out, stats)
        return out

    def extra_repr(self) -> str:
        return (
            f"n_channels={self.n_channels}, seq_len={self.seq_len}, horizon={self.horizon}, "
            f"share_weights={self.share_weights}"
        )


def tsmixer(n_channels: int, seq_len: int = 512, horizon: int = 96, **kwargs: Any) -> TSMixer:
    """TSMixer with RevIN, ETT defaults (2 blocks, dropout 0.9, ff_dim 64, BatchNorm).

    (B, seq_len, n_channels) -> (B, horizon, n_channels); ``kwargs`` go to :class:`TSMixer`.
    """
    return TSMixer(n_channels, seq_len, horizon, **kwargs)
