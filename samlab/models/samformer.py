"""SAMformer: a one-layer transformer with channel-wise attention, for multivariate forecasting.

Ilbert et al., "SAMformer: Unlocking the Potential of Transformers in Time Series Forecasting with
Sharpness-Aware Minimization and Channel-Wise Attention" (ICML 2024, arXiv:2402.10198). One window
X (D channels, each with its L past values) is mapped to the next H values of every channel by

    f(X) = [Z + A(Z) Z W_V W_O] W,   A(Z) = softmax(Z W_Q (Z W_K)^T / sqrt(d_model)),

with Z = RevIN(X) arranged D x L, and RevIN undone on the output. The tokens are the D channels
(each token is its channel's whole history), so the attention map is D x D, channel to channel;
there is one head, one layer, no positional encoding, no LayerNorm and no feed-forward block.

Every forecaster in samlab takes x shaped (B, L, D), time-major with channels last (the layout of
the official TensorFlow code), and returns (B, H, D).

.. note:: ``output_projection=True`` (the default) is the paper's model and the TensorFlow code's
   Keras ``MultiHeadAttention`` (W_V: L -> d_model, then W_O: d_model -> L, all with bias):
   82,590 parameters at D=7, L=512, H=96. ``output_projection=False`` is the official PyTorch
   port (``samformer_pytorch``): a single value map L -> L and no W_O, 328,334 parameters.
   ``init="keras"`` (the default) initialises as the TensorFlow code does (Glorot-uniform,
   zero biases, Keras' fans for the attention kernels; :mod:`samlab.models._keras_init`);
   ``init="torch"`` keeps PyTorch's ``nn.Linear`` default, with which SAM runs on ETTh1 stop
   after a few epochs at a worse test MSE.

The paper's "Transformer" baseline is this very architecture trained without SAM; which optimizer
is used is the trainer's choice, so :func:`transformer` builds the same model as :func:`samformer`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_forecast_input, check_positive
from ._keras_init import check_init, keras_init_

__all__ = ["RevIN", "SAMformer", "samformer", "transformer", "transformer_random"]


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., ICLR 2022) over time, channels last.

    ``normalize(x)`` takes x shaped (B, T, D), computes per (sample, channel) statistics over
    time, mu = mean_t x and sigma = sqrt(var_t x + eps) (biased variance), stores them and returns
    (x - mu) / sigma * gamma + beta with learnable per-channel gamma (init 1) and beta (init 0).
    ``denormalize(y)`` takes y shaped (B, H, D) and returns ((y - beta) / gamma) * sigma + mu
    with the statistics of the last ``normalize`` call, so it inverts it exactly.

    mu and sigma are detached (stop-gradient), as in the reference code: gradients flow through
    the affine maps and the scaling by 1/sigma but not into the statistics themselves.

    .. note:: ``denormalize`` divides by gamma exactly, as the TensorFlow code (``RevNorm``) does;
       the official PyTorch port divides by (gamma + eps^2) instead, which is not an exact inverse.
    """

    def __init__(self, n_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        check_positive(n_channels=n_channels)
        if not eps >= 0.0:
            raise ValueError(f"eps must be non-negative, got {eps!r}")
        self.n_channels = n_channels
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(n_channels))
            self.bias = nn.Parameter(torch.zeros(n_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def statistics(
        self, x: torch.Tensor, *, time_dim: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached (mean, std), each (B, 1, D), of x (B, T, D) over time (``time_dim=2``: x is
        channel-major (B, D, T) and the statistics are (B, D, 1))."""
        x = x.detach()
        # Two passes (mean, then mean squared deviation): as accurate as torch.var_mean's
        # Welford update and, on CPU, about 8x faster for a (32, 512, 7) window.
        mean = x.mean(dim=time_dim, keepdim=True)
        var = (x - mean).square().mean(dim=time_dim, keepdim=True)
        return mean, torch.sqrt(var + self.eps)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D): standardise each series over time, then the affine map.

        Stores the statistics for :meth:`denormalize`."""
        x, (self.mean, self.std) = self.normalize_with_stats(x)
        return x

    def normalize_with_stats(
        self, x: torch.Tensor, *, time_dim: int = 1
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`normalize` without side effects: returns (normalised x, (mean, std)) for
        :meth:`denormalize_with`. The models' forward passes use this pair, so that they store
        nothing and can run under ``torch.func`` transforms (the fused training step).
        ``time_dim=2`` takes channel-major x (B, D, T)."""
        mean, std = self.statistics(x, time_dim=time_dim)
        x = (x - mean) / std
        if self.affine:
            weight, bias = self._affine(x.shape[0], time_dim)
            x = x * weight + bias
        return x, (mean, std)

    def _affine(self, batch: int, time_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma and beta, broadcast over (B, T, D) (or (B, D, T) with ``time_dim=2``). Under
        ``torch.compile`` they are expanded to one copy per window first, so that their
        gradients are summed over time, then over the batch: inductor's CPU code sums a float32
        reduction longer than 4,096 elements (here B * L = 16,384 per channel) with a cascade
        helper that made this one kernel a third of SAMformer's compiled backward. Eager mode
        keeps the single reduction (same values, and the bits of the runs in the README)."""
        weight, bias = self.weight, self.bias
        if time_dim == 2:
            weight, bias = weight.unsqueeze(-1), bias.unsqueeze(-1)
        if torch.compiler.is_compiling():
            shape = (batch, 1, -1) if time_dim == 1 else (batch, -1, 1)
            return weight.expand(*shape), bias.expand(*shape)
        return weight, bias

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, D) -> (B, H, D): undo the affine map, then the last ``normalize``'s scaling."""
        if self.mean is None or self.std is None:
            raise RuntimeError("RevIN.denormalize called before normalize")
        return self.denormalize_with(y, (self.mean, self.std))

    def denormalize_with(
        self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor], *, time_dim: int = 1
    ) -> torch.Tensor:
        """:meth:`denormalize` with the (mean, std) that :meth:`normalize_with_stats` returned
        (the same ``time_dim``)."""
        mean, std = stats
        if self.affine:
            weight, bias = self._affine(y.shape[0], time_dim)
            y = (y - bias) / weight
        return y * std + mean

    def extra_repr(self) -> str:
        return f"{self.n_channels}, eps={self.eps}, affine={self.affine}"


class SAMformer(nn.Module):
    """Channel-wise one-layer attention + linear head: (B, seq_len, D) -> (B, horizon, D).

    Forward pass, with Z = RevIN(x) transposed to tokens (B, D, L):

        q = Z W_Q + b_Q,  k = Z W_K + b_K               (B, D, d_model)
        v = Z W_V + b_V                                 (B, D, d_model), or (B, D, L) without W_O
        A = softmax(q k^T / sqrt(d_model)) over keys    (B, D, D)
        Z' = Z + (A v) W_O + b_O                        (B, D, L), the only residual
        y = Z' W + b                                    (B, D, H), head shared by all channels

    then y is transposed to (B, H, D) and RevIN is undone. Attention goes through
    ``torch.nn.functional.scaled_dot_product_attention``; :meth:`attention_map` recomputes A
    explicitly for analysis. ``freeze_attention=True`` turns off ``requires_grad`` on W_Q, W_K,
    W_V (and W_O), as the official code's ``transformer_random`` ablation does. ``use_revin=False``
    removes RevIN (and its 2D parameters) altogether.
    """

    def __init__(
        self,
        n_channels: int,
        seq_len: int = 512,
        horizon: int = 96,
        *,
        d_model: int = 16,
        output_projection: bool = True,
        use_revin: bool = True,
        freeze_attention: bool = False,
        init: str = "keras",
    ) -> None:
        super().__init__()
        check_init(init)
        check_positive(n_channels=n_channels, seq_len=seq_len, horizon=horizon, d_model=d_model)
        self.n_channels = n_channels
        self.seq_len = seq_len
        self.horizon = horizon
        self.d_model = d_model
        self.revin = RevIN(n_channels) if use_revin else None
        self.query = nn.Linear(seq_len, d_model)
        self.key = nn.Linear(seq_len, d_model)
        if output_projection:
            self.value = nn.Linear(seq_len, d_model)
            self.out_proj: nn.Linear | None = nn.Linear(d_model, seq_len)
        else:
            self.value = nn.Linear(seq_len, seq_len)
            self.out_proj = None
        self.head = nn.Linear(seq_len, horizon)
        if init == "keras":
            # the value map is a Keras kernel only with W_O (without it: the PyTorch port's Linear)
            qkv = (self.query, self.key) + ((self.value,) if output_projection else ())
            keras_init_(self, einsum_qkv=qkv)
        if freeze_attention:
            for parameter in self.attention_parameters():
                parameter.requires_grad_(False)

    def attention_parameters(self) -> list[nn.Parameter]:
        """The parameters of W_Q, W_K, W_V and (if present) W_O, with their biases."""
        layers = [self.query, self.key, self.value]
        if self.out_proj is not None:
            layers.append(self.out_proj)
        return [p for layer in layers for p in layer.parameters()]

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """(B, L, D) -> (RevIN-normalised channel tokens (B, D, L), RevIN's statistics)."""
        check_forecast_input(x, self.seq_len, self.n_channels)
        # One copy of the raw window into channel-major memory (each token's history contiguous),
        # outside the graph of the parameters. RevIN's elementwise ops keep that memory layout,
        # so the (B, D, L) tokens are a free view and no copy is needed in the backward pass.
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
        stats = None
        if self.revin is not None:
            if torch.compiler.is_compiling():
                # Under torch.compile RevIN runs on the (B, D, L) tokens themselves: inductor
                # lays its intermediate buffers out row-major in their logical shape, so this
                # keeps each token's history contiguous (a (B, L, D) intermediate would be
                # read transposed by the matrix products and reduced 7 lanes at a time).
                tokens, stats = self.revin.normalize_with_stats(x.transpose(1, 2), time_dim=2)
                return tokens, stats
            x, stats = self.revin.normalize_with_stats(x)
        return x.transpose(1, 2), stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast (B, horizon, D) from the window x shaped (B, seq_len, D)."""
        tokens, stats = self._tokens(x)
        mixed = F.scaled_dot_product_attention(
            self.query(tokens), self.key(tokens), self.value(tokens)
        )
        if self.out_proj is not None:
            mixed = self.out_proj(mixed)
        out = self.head(tokens + mixed)  # (B, D, H)
        if self.revin is not None and torch.compiler.is_compiling():
            return self.revin.denormalize_with(out, stats, time_dim=2).transpose(1, 2)
        out = out.transpose(1, 2)  # (B, H, D)
        if self.revin is not None:
            out = self.revin.denormalize_with(out, stats)
        return out

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The channel-to-channel attention A = softmax(q k^T / sqrt(d_model)), (B, D, D).

        Row i holds the weights channel i gives to every channel (rows sum to 1). Computed
        explicitly from x (B, seq_len, D); nothing is stored by :meth:`forward`.
        """
        tokens, _ = self._tokens(x)
        scores = self.query(tokens) @ self.key(tokens).transpose(1, 2)
        return torch.softmax(scores / self.d_model**0.5, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"n_channels={self.n_channels}, seq_len={self.seq_len}, horizon={self.horizon}, "
            f"d_model={self.d_model}"
        )


def samformer(n_channels: int, seq_len: int = 512, horizon: int = 96, **kwargs: Any) -> SAMformer:
    """SAMformer as in the paper (with W_O); ~82.6k parameters at D=7, L=512, H=96.

    (B, seq_len, n_channels) -> (B, horizon, n_channels). Train it with SAM (Adam base) to get
    the paper's SAMformer; ``kwargs`` go to :class:`SAMformer`.
    """
    return SAMformer(n_channels, seq_len, horizon, **kwargs)


def transformer(n_channels: int, seq_len: int = 512, horizon: int = 96, **kwargs: Any) -> SAMformer:
    """The paper's "Transformer" baseline: SAMformer's architecture, to be trained without SAM.

    The model is identical to :func:`samformer`; the difference lies only in the optimizer,
    which the trainer chooses (the official code runs ``--model transformer`` without
    ``--use_sam``).
    """
    return SAMformer(n_channels, seq_len, horizon, **kwargs)


def transformer_random(
    n_channels: int, seq_len: int = 512, horizon: int = 96, **kwargs: Any
) -> SAMformer:
    """The official code's ablation: attention frozen at its random init, and no RevIN.

    Same as ``SAMformer(..., use_revin=False, freeze_attention=True)``; only the head (and
    nothing else) trains.
    """
    kwargs.setdefault("use_revin", False)
    kwargs.setdefault("freeze_attention", True)
    return SAMformer(n_channels, seq_len, horizon, **kwargs)
