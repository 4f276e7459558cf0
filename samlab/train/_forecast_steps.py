"""The forecasting trainer's step and epoch: eager or compiled, with a clean eager fallback.

:func:`_compiled` gives the model to call (``torch.compile`` behind :class:`_EagerFallback`);
:func:`_step_fn` the training step (``optimizer.step`` with a closure, or the whole step as one
compiled graph, :class:`~samlab.train.fused_step.FusedStep`); :func:`_train_epoch` one shuffled
epoch. Used by :mod:`samlab.train.forecast` (which re-exports them) and its benchmark.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from samlab.train.closures import make_closure
from samlab.train.fused_step import try_fused_step, warn_unfused

if TYPE_CHECKING:
    from samlab.datasets.timeseries import ForecastData
    from samlab.train.forecast import ForecastConfig


class _EagerFallback(nn.Module):
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


def _compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """The model to call in training and evaluation: ``model`` itself, or with ``enabled`` its
    compiled twin with a clean eager fallback (no C++ compiler, or compilation failing)."""
    if not enabled:
        return model
    try:
        from kernels.compiled import compiler_available

        if not compiler_available():
            raise RuntimeError("no working C++ compiler for torch.compile")
        return _EagerFallback(model)
    except Exception as err:  # noqa: BLE001 - any compile setup failure falls back
        _warn_eager(str(err))
        return model


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _step_fn(model: nn.Module, fwd: nn.Module, optimizer, config: ForecastConfig):
    """``step(x, y) -> loss``: ``optimizer.step`` with a closure on ``fwd``, or with
    ``config.compile`` the whole step as one compiled graph (:class:`FusedStep`) where it
    applies (SAMformer and the Transformer with SAM or Adam; not TSMixer, whose BatchNorm keeps
    running statistics), reverting to the eager step with a warning if that fails to compile."""

    def eager(x: Tensor, y: Tensor) -> Tensor:
        return optimizer.step(make_closure(fwd, nn.functional.mse_loss, x, y, optimizer))

    fused = try_fused_step(model, optimizer) if config.compile and fwd is not model else None
    if fused is None:
        return eager
    compiled_shapes: set[tuple[int, ...]] = set()  # batch shapes whose graph compiled

    def step(x: Tensor, y: Tensor) -> Tensor:
        nonlocal fused
        if fused is None:  # compilation failed earlier
            return eager(x, y)
        if x.shape in compiled_shapes:
            return fused(x, y)
        # every new batch shape (the last, shorter batch of an epoch) compiles its own graph:
        # its first call is guarded like the very first one
        try:
            loss = fused(x, y)
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back
            warn_unfused(_reason(err))
            if isinstance(fwd, _EagerFallback):  # the same compiler would fail there too
                fwd.disable()
            fused = None
            return eager(x, y)
        compiled_shapes.add(tuple(x.shape))
        return loss

    return step


def _train_epoch(model, step_fn, data: ForecastData, config, epoch, device) -> float:
    model.train()
    total = torch.zeros((), dtype=torch.float64)
    steps = 0
    batches = data.train.batches(
        config.batch_size, shuffle=True, generator=_epoch_generator(config.seed, epoch)
    )
    n_batches = math.ceil(len(data.train) / config.batch_size)
    if config.max_train_batches is not None:
        n_batches = min(n_batches, config.max_train_batches)
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
        loss = step_fn(x.to(device), y.to(device))
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
