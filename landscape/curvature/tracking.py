"""λ_max during training: the top Hessian eigenvalue every N optimizer steps.

:class:`TopEigenvalueTracker` is a step hook for any ``torch.optim.Optimizer`` (it registers
with ``register_step_post_hook``, so SGD, Adam and every samlab SAM variant work alike). Every
``every`` steps it builds a :class:`~landscape.curvature.operator.HessianOperator` on a fixed
evaluation set (eval mode, the model's current weights) and records the top eigenvalue by
Lanczos, with the optimizer's learning rate and the edge-of-stability threshold ``2 / lr``
(Cohen et al., ICLR 2021: full-batch gradient descent with step size ``lr`` is unstable along
directions of curvature above ``2 / lr``; plain GD's λ_max rises to that line and hovers there).

The evaluation set is fixed once at construction (``subset`` and ``subset_seed`` as for
surfaces), so successive values are comparable; the model's training mode is restored after
each measurement.

Example::

    tracker = TopEigenvalueTracker(eval_data, every=50)
    tracker.attach(model, optimizer)
    ...  # train
    tracker.detach()
    tracker.plot()            # λ_max against the step, with the 2 / lr line
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.optim import Optimizer

from landscape.curvature.eigen import top_eigenvalues
from landscape.curvature.operator import HessianOperator
from landscape.evaluate import as_tensors

__all__ = ["TopEigenvalueTracker"]

#: the columns of :attr:`TopEigenvalueTracker.records` (and of the CSV it writes)
FIELDS = ("step", "lambda_max", "lr", "eos_threshold", "residual", "hvp_count", "seconds")


class TopEigenvalueTracker:
    """Records λ_max (and ``2 / lr``) every ``every`` optimizer steps.

    Args:
        data: the fixed evaluation set, anything :func:`landscape.as_tensors` takes (a pair of
            tensors, a ``Dataset``, a ``DataLoader``); materialised once.
        every: measure after steps ``every, 2 every, ...`` (and at step 0 with
            :meth:`measure_now`).
        loss: ``"crossentropy"``, ``"mse"`` or a callable ``(outputs, targets) -> mean loss``.
        subset, subset_seed: a fixed random subset of ``data`` (as for surfaces).
        tol: relative Ritz residual of the top eigenvalue (1e-3 keeps it cheap; the value is
            then within about ``1e-6`` relative once the eigengap is resolved).
        batch_size: products go over the evaluation set in batches of this size (the loss is
            the sample-weighted mean either way).
        mode: the product mode of :class:`HessianOperator` (``"auto"`` probes once per model).
        seed: seeds Lanczos' start vector (the same at every measurement).
        on_record: called with each new record (a dict with :data:`FIELDS`).
    """

    def __init__(
        self,
        data: Any,
        *,
        every: int = 100,
        loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
        subset: int | Sequence[int] | np.ndarray | None = None,
        subset_seed: int = 0,
        tol: float = 1e-3,
        batch_size: int | None = None,
        mode: str = "auto",
        seed: int = 0,
        on_record: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every!r}")
        inputs, targets, _ = as_tensors(data, subset=subset, subset_seed=subset_seed)
        self.inputs, self.targets = inputs, targets
        self.every = every
        self.loss = loss
        self.tol = tol
        self.batch_size = batch_size
        self.mode = mode
        self.seed = seed
        self.on_record = on_record
        self.records: list[dict[str, float]] = []
        self.model: nn.Module | None = None
        self.optimizer: Optimizer | None = None
        self.steps = 0
        self.handle: Any = None

    # ------------------------------------------------------------------ binding
    def attach(
        self, model: nn.Module, optimizer: Optimizer, *, start_step: int = 0
    ) -> TopEigenvalueTracker:
        """Measure ``model`` every ``every`` steps of ``optimizer`` from now on.

        ``start_step``: the steps already taken (a resumed run), so the step numbers and the
        measuring cadence continue where they were.
        """
        if self.handle is not None:
            raise RuntimeError("the tracker is attached already: call detach() first")
        self.model, self.optimizer = model, optimizer
        self.steps = int(start_step)
        self.handle = optimizer.register_step_post_hook(self.after_step)
        return self

    def detach(self) -> None:
        """Stop measuring (the records stay)."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def after_step(self, optimizer: Optimizer, args: Any = (), kwargs: Any = None) -> None:
        """The step post-hook: counts steps and measures every ``every`` of them."""
        self.steps += 1
        if self.steps % self.every == 0:
            self.measure_now()

    # ------------------------------------------------------------------ measuring
    def measure_now(self) -> dict[str, float]:
        """Measure λ_max of the attached model now and append the record."""
        if self.model is None:
            raise RuntimeError("attach(model, optimizer) before measuring")
        model = self.model
        device = next(model.parameters()).device
        start = time.perf_counter()
        op = HessianOperator(
            model,
            self.batches(device),
            self.loss,
            mode=self.mode,
        )
        result = top_eigenvalues(op, 1, tol=self.tol, seed=self.seed)
        lr = float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0
        record = {
            "step": self.steps,
            "lambda_max": result.eigenvalues[0],
            "lr": lr,
            "eos_threshold": 2.0 / lr if lr > 0 else float("inf"),
            "residual": result.residuals[0],
            "hvp_count": result.hvp_count,
            "seconds": time.perf_counter() - start,
        }
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(dict(record))
        return record

    def batches(self, device) -> list[tuple[Tensor, Tensor]]:
        """The evaluation set on ``device`` in batches of ``batch_size``."""
        inputs, targets = self.inputs.to(device), self.targets.to(device)
        size = self.batch_size or len(inputs)
        return [(inputs[i : i + size], targets[i : i + size]) for i in range(0, len(inputs), size)]

    # ------------------------------------------------------------------ output
    def save_csv(self, path: str | Path) -> Path:
        """Write the records as CSV (columns :data:`FIELDS`), atomically
        (:func:`landscape.io.atomic_write`)."""
        from landscape.io.atomic import atomic_write

        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(self.records)
        return atomic_write(path, text.getvalue())

    def plot(self, ax=None, *, label: str | None = None):
        """λ_max against the step, with the ``2 / lr`` edge-of-stability line; returns the axes."""
        from landscape.optional import import_optional

        plt = import_optional(
            "matplotlib.pyplot", "plotting λ_max needs matplotlib: pip install matplotlib"
        )
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        steps = [r["step"] for r in self.records]
        line = ax.plot(steps, [r["lambda_max"] for r in self.records], marker="o", label=label)
        thresholds = [r["eos_threshold"] for r in self.records]
        if steps and np.isfinite(thresholds).all():
            ax.plot(steps, thresholds, ls="--", color=line[0].get_color(), alpha=0.6,
                    label="2 / lr" if label is None else f"2 / lr ({label})")  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel(r"$\lambda_{max}$")
        ax.legend()
        return ax
