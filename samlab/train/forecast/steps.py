"""The forecasting trainer's step and epoch: eager or compiled, with a clean eager fallback.

:func:`compile_forecaster` gives the model to call (``torch.compile`` behind
:class:`EagerFallback`); :class:`TrainStep` is the training step (``optimizer.step`` with a
closure, or the whole step as one compiled graph, :class:`~samlab.train.fused_step.FusedStep`);
:func:`train_epoch` runs one shuffled epoch of it. Used by
:func:`~samlab.train.forecast.train_forecaster` and the forecasting benchmark.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from samlab.datasets.timeseries import ForecastData
from samlab.train.closures import make_closure
from samlab.train.forecast.config import ForecastConfig
from samlab.train.fused_step import try_fused_step, warn_unfused
from samlab.utils import epoch_generator


class EagerFallback(nn.Module):
    """``torch.compile(model)`` that falls back to the eager ``model`` (one RuntimeWarning)
    when compilation fails at its first call: ``torch.compile`` itself is lazy, so a missing
    or broken compiler only shows up there."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_compiled_fn", torch.compile(model))  # not a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled_fn is not None:
            try:
                return self._compiled_fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compiler failure falls back
                self.disable()
                _warn_eager(_reason(err))
        return self.model(*args, **kwargs)

    @property
    def compiled(self) -> bool:
        """Whether calls still go to the compiled model (False after a fallback)."""
        return self._compiled_fn is not None

    def disable(self) -> None:
        """Call the eager model from now on."""
        object.__setattr__(self, "_compiled_fn", None)


def _reason(err: Exception) -> str:
    """One line naming a compiler failure, for the fallback warnings."""
    return f"{type(err).__name__}: {err}".splitlines()[0][:300]


def _warn_eager(reason: str) -> None:
    warnings.warn(
        f"torch.compile is unavailable ({reason}); training the eager model instead",
        RuntimeWarning,
        stacklevel=4,
    )


def compile_forecaster(model: nn.Module, enabled: bool) -> nn.Module:
    """The model to call in training and evaluation: ``model`` itself, or with ``enabled`` its
    compiled twin with a clean eager fallback (no C++ compiler, or compilation failing)."""
    if not enabled:
        return model
    try:
        from kernels.compiled import compiler_available

        if not compiler_available():
            raise RuntimeError("no working C++ compiler for torch.compile")
        return EagerFallback(model)
    except Exception as err:  # noqa: BLE001 - any compile setup failure falls back
        _warn_eager(str(err))
        return model


class TrainStep:
    """``step(x, y) -> loss``: one training step of ``model`` on a batch.

    Eager: ``optimizer.step`` with a closure on ``fwd`` (the model, or its compiled twin).
    With ``fused`` (the whole step as one compiled graph, a
    :class:`~samlab.train.fused_step.FusedStep`) every batch goes through that graph instead;
    the first call of each new batch shape (the last, shorter batch of an epoch compiles a graph
    of its own) is guarded: if it fails, a warning says so and this step and ``fwd`` are eager
    from then on. :meth:`for_config` builds the step the trainer uses.
    """

    def __init__(
        self,
        model: nn.Module,
        fwd: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        fused: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.model, self.fwd, self.optimizer = model, fwd, optimizer
        self._fused = fused
        self._compiled_shapes: set[tuple[int, ...]] = set()  # batch shapes whose graph compiled

    @classmethod
    def for_config(
        cls,
        model: nn.Module,
        fwd: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: ForecastConfig,
    ) -> TrainStep:
        """The trainer's step: with ``config.compile`` the whole step as one compiled graph
        where it applies (SAMformer and the Transformer with SAM or Adam; not TSMixer, whose
        BatchNorm keeps running statistics), else the eager step."""
        fused = try_fused_step(model, optimizer) if config.compile and fwd is not model else None
        return cls(model, fwd, optimizer, fused=fused)

    def eager(self, x: Tensor, y: Tensor) -> Tensor:
        """``optimizer.step`` with a closure on ``fwd``."""
        closure = make_closure(self.fwd, nn.functional.mse_loss, x, y, self.optimizer)
        return self.optimizer.step(closure)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self._fused is None:  # eager, or compilation failed earlier
            return self.eager(x, y)
        if x.shape in self._compiled_shapes:
            return self._fused(x, y)
        try:
            loss = self._fused(x, y)
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back
            warn_unfused(_reason(err))
            if isinstance(self.fwd, EagerFallback):  # the same compiler would fail there too
                self.fwd.disable()
            self._fused = None
            return self.eager(x, y)
        self._compiled_shapes.add(tuple(x.shape))
        return loss


def steps_per_epoch(data: ForecastData, config: ForecastConfig) -> int:
    """The optimizer steps of one epoch: every batch of the training windows, at most
    ``max_train_batches``, less a trailing single-window batch (BatchNorm cannot train on it)."""
    windows = len(data.train)
    n_batches = math.ceil(windows / config.batch_size)
    if config.max_train_batches is not None:
        n_batches = min(n_batches, config.max_train_batches)
    if n_batches * config.batch_size >= windows and windows % config.batch_size == 1:
        n_batches -= 1
    return n_batches


def train_epoch(
    step: TrainStep, data: ForecastData, config: ForecastConfig, epoch: int, device: torch.device
) -> float:
    """One epoch (0-based ``epoch``) of ``step`` on the shuffled training windows, its model in
    training mode; returns the mean training loss. ``FloatingPointError`` on a non-finite loss."""
    step.model.train()
    total = torch.zeros((), dtype=torch.float64)
    steps = 0
    batches = data.train.batches(
        config.batch_size, shuffle=True, generator=epoch_generator(config.seed, epoch)
    )
    n_batches = steps_per_epoch(data, config)
    bar = tqdm(
        batches,
        total=n_batches,
        desc=f"epoch {epoch + 1}",
        leave=False,
        disable=not config.progress,
    )
    for x, y in bar:
        if steps == n_batches or len(x) == 1:
            break  # a trailing single-window batch is dropped: BatchNorm cannot train on it
        loss = step(x.to(device), y.to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {float(loss)} at epoch {epoch + 1}, step {steps + 1} "
                f"({config.model} on {config.dataset}, lr {config.resolved_lr}, rho "
                f"{config.resolved_rho}); lower the learning rate or rho. Finished epochs are "
                "kept in last.pt"
            )
        total += loss.detach().double().cpu()
        steps += 1
    bar.close()
    return float(total) / max(steps, 1)
