"""The metrics of a :class:`~landscape.evaluate.SurfaceEvaluator`: :class:`Metrics`.

Loss and accuracy (cross-entropy) or MSE and MAE per sample, or a loss callable per batch; sums
per nominal batch, each over one contiguous row, so a point's values never depend on the other
points evaluated with it; sample-weighted means and their standard errors from those sums.
Every evaluation path returns per-batch sums ``(K, n_batches, n_stats)`` of K points (the
batches of all evaluation sets in order); :meth:`Metrics.store` turns them into the metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from landscape.evaluate.data import EvalSet

#: the second metric of a built-in loss (besides ``loss``)
SECOND_METRIC = {"crossentropy": "acc", "mse": "mae"}


def standard_error(batch_sums: np.ndarray, batch_sizes: np.ndarray) -> float:
    """Standard error of a sample-weighted mean from per-batch sums and sizes.

    With batch means ``m_b = s_b / n_b``, weights ``w_b = n_b / N`` and the mean
    ``M = sum_b s_b / N``: ``SE^2 = B / (B - 1) * sum_b w_b^2 (m_b - M)^2`` over ``B`` batches,
    which for equal batches is ``std(m, ddof=1) / sqrt(B)``. NaN for a single batch.
    """
    sums = np.asarray(batch_sums, dtype=np.float64)
    return float(standard_errors(sums.reshape(1, -1), batch_sizes)[0])


def standard_errors(batch_sums: np.ndarray, batch_sizes: np.ndarray) -> np.ndarray:
    """:func:`standard_error` of every row of ``batch_sums`` ``(..., B)`` (one reduction per
    row over the contiguous last axis, so a row's value does not depend on the other rows)."""
    sums = np.ascontiguousarray(batch_sums, dtype=np.float64)
    sizes = np.asarray(batch_sizes, dtype=np.float64)
    count = sizes.size
    if count < 2:
        return np.full(sums.shape[:-1], math.nan)
    total = sizes.sum()
    means = sums / sizes
    mean = sums.sum(axis=-1, keepdims=True) / total
    weights = sizes / total
    return np.sqrt(count / (count - 1) * np.sum(weights**2 * (means - mean) ** 2, axis=-1))


def class_indices(targets: Tensor, n_classes: int | None) -> bool:
    """Whether ``targets`` is a 1-D integer tensor of class indices (in ``[0, n_classes)``
    when ``n_classes`` is given): the targets the cross-entropy fast paths take."""
    if targets.is_floating_point() or targets.ndim != 1:
        return False
    return n_classes is None or bool(((targets >= 0) & (targets < n_classes)).all())


def fast_cross_entropy_stats(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-sample ``[cross-entropy, top-1 correct]`` ``(2, N)`` of logits ``(N, C)`` and class
    indices in ``[0, C)``, written for a compiler: the log-sum-exp and the first index of the
    row maximum from row maxima and comparisons (vectorised reductions; an ``argmax`` is a
    scalar loop in inductor's CPU code). Correct means what ``argmax`` gives: the target is
    the first index holding the row's maximum (NaN counting as the maximum)."""
    if outputs.dtype in (torch.float16, torch.bfloat16):
        outputs = outputs.float()
    classes = outputs.shape[1]
    top = outputs.amax(1, keepdim=True)
    lse = (outputs - top).exp().sum(1).log() + top.squeeze(1)
    picked = outputs.gather(1, targets[:, None]).squeeze(1)
    hit = (outputs == top) | (outputs != outputs)
    index = torch.arange(classes, device=outputs.device)
    first = torch.where(hit, index, classes).amin(1)
    return torch.stack([lse - picked, (first == targets).to(outputs.dtype)])


class Metrics:
    """Per-sample statistics of ``loss``, their sums per nominal batch of ``batch_size`` (in
    ``stat_dtype``: float64, float32 on MPS) over the evaluation sets ``sets``, and the means
    and standard errors computed from those sums.

    ``loss`` is ``"crossentropy"`` (metrics ``loss`` and ``acc``), ``"mse"`` (``loss`` and
    ``mae``) or a callable ``loss(outputs, targets)`` (``loss`` only); every metric of a set
    ``train`` or ``test`` comes with its standard error ``<set>_<metric>_se``.
    """

    def __init__(
        self,
        loss: str | Callable[[Tensor, Tensor], Tensor],
        batch_size: int,
        sets: Sequence[EvalSet],
        stat_dtype: torch.dtype = torch.float64,
    ) -> None:
        self.loss = loss
        self.batch_size = batch_size
        self.sets = list(sets)
        self.stat_dtype = stat_dtype
        self.second = SECOND_METRIC.get(loss) if isinstance(loss, str) else None

    def on(self, sets: Sequence[EvalSet]) -> Metrics:
        """The same metrics over other evaluation sets."""
        return Metrics(self.loss, self.batch_size, sets, self.stat_dtype)

    @property
    def names(self) -> tuple[str, ...]:
        """The metrics returned, e.g. ``("train_loss", "train_acc", "train_loss_se", ...)``."""
        names = []
        stats = ["loss"] + ([self.second] if self.second else [])
        for evalset in self.sets:
            names += [f"{evalset.name}_{s}" for s in stats]
            names += [f"{evalset.name}_{s}_se" for s in stats]
        return tuple(names)

    def empty(self, count: int) -> dict[str, np.ndarray]:
        """Every metric as NaN for ``count`` points (what :meth:`store` fills in)."""
        return {name: np.full(count, np.nan) for name in self.names}

    def outputs_stats(self, pending: list[list[list[Any]]]) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` from the outputs of K points."""
        count = len(pending)
        parts = []
        for index, evalset in enumerate(self.sets):
            if isinstance(self.loss, str):
                chunks = [out for point in pending for out in point[index]]
                outputs = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
                per_sample = self.per_sample(outputs, evalset.targets_times(count), eager=True)
                parts.append(self.batch_sums(per_sample, evalset, count))
                continue
            sums = []
            for point in pending:  # a callable loss: applied to each nominal batch
                outputs = point[index]
                if len(evalset.chunks) != len(evalset.bounds):
                    whole = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
                    outputs = [whole[start:stop] for start, stop in evalset.bounds]
                for out, (_, targets) in zip(outputs, evalset.batches):
                    sums.append(self.callable_sum(out, targets))
            parts.append(torch.stack(sums).reshape(1, count, len(evalset.bounds)))
        stats = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        return stats.permute(1, 2, 0).cpu().numpy().astype(np.float64, copy=False)

    def batch_sums(self, values: Tensor, evalset: EvalSet, count: int) -> Tensor:
        """``values`` ``(S, count * N)`` (per-sample statistics of ``count`` points) summed
        per nominal batch: ``(S, count, n_batches)``. Each sum runs over a contiguous row, so a
        point's sums do not depend on ``count`` or on its position."""
        stats, size = values.shape[0], len(evalset.inputs)
        values = values.reshape(stats, count, size)
        full = size // self.batch_size
        dtype = self.stat_dtype
        head = values[:, :, : full * self.batch_size].reshape(stats, count, full, self.batch_size)
        head = head.sum(-1, dtype=dtype)
        if full * self.batch_size == size:
            return head
        tail = values[:, :, full * self.batch_size :].sum(-1, dtype=dtype, keepdim=True)
        return torch.cat([head, tail], dim=2) if full else tail

    def batch_stats(self, outputs: Any, targets: Tensor) -> Tensor:
        """Sums ``(n_stats,)`` of one batch: ``[loss_sum, second_sum]`` or ``[loss_sum]``."""
        if isinstance(self.loss, str):
            return self.per_sample(outputs, targets).sum(-1, dtype=self.stat_dtype)
        return self.callable_sum(outputs, targets).reshape(1)

    def per_sample(self, outputs: Any, targets: Tensor, eager: bool = False) -> Tensor:
        """Per-sample ``[loss, second]`` ``(2, N)`` of a built-in loss (crossentropy: top-1
        correctness; mse: mean absolute error), averaged over any further output dims.

        ``eager`` (not under ``vmap``): class-index cross-entropy as ``logsumexp(z) - z[y]``
        and correctness from ``max(1)``'s first maximal index, the same values as
        ``F.cross_entropy`` (to rounding) and ``argmax``, about 4x cheaper on CPU for 10
        classes (``log_softmax`` over short rows and ``argmax`` are slow there)."""
        if not isinstance(outputs, Tensor):
            raise TypeError(
                f"loss={self.loss!r} needs the model to return a tensor, got "
                f"{type(outputs).__name__}; pass a callable loss"
            )
        if outputs.dtype in (torch.float16, torch.bfloat16):
            outputs = outputs.float()
        if self.loss == "crossentropy":
            if eager and outputs.ndim == 2 and class_indices(targets, outputs.shape[1]):
                picked = outputs.gather(1, targets[:, None]).squeeze(1)
                losses = torch.logsumexp(outputs, 1) - picked
                correct = (outputs.max(1).indices == targets).to(losses.dtype)
                return torch.stack([losses, correct])
            losses = F.cross_entropy(outputs, targets, reduction="none")
            labels = targets.argmax(1) if targets.is_floating_point() else targets
            correct = (outputs.argmax(1) == labels).to(losses.dtype)
            if losses.ndim > 1:
                losses = losses.flatten(1).mean(1)
                correct = correct.flatten(1).mean(1)
            return torch.stack([losses, correct])
        count = targets.shape[0]
        if targets.shape != outputs.shape:
            if targets.numel() != outputs.numel():
                raise ValueError(
                    f"mse: targets {tuple(targets.shape)} do not match outputs "
                    f"{tuple(outputs.shape)}"
                )
            targets = targets.reshape(outputs.shape)
        difference = (outputs - targets.to(outputs.dtype)).reshape(count, -1)
        return torch.stack([difference.square().mean(1), difference.abs().mean(1)])

    def callable_sum(self, outputs: Any, targets: Tensor) -> Tensor:
        """The loss sum of one batch from a loss callable (0-dim)."""
        count = targets.shape[0]
        value = self.loss(outputs, targets)
        if value.ndim == 0:
            return value.to(self.stat_dtype) * count
        if value.shape == (count,):
            return value.sum(dtype=self.stat_dtype)
        raise ValueError(
            f"a loss callable must return per-sample losses ({count},) or a scalar "
            f"batch mean, got shape {tuple(value.shape)}"
        )

    def store(self, results: dict[str, np.ndarray], first: int, stats: np.ndarray) -> None:
        """Write the metrics of K points (per-batch sums ``(K, n_batches, n_stats)``) into
        ``results[name][first : first + K]``, with numpy ops over all K points at once."""
        names = ["loss"] + ([self.second] if self.second else [])
        stop = first + len(stats)
        row = 0
        for evalset in self.sets:
            count = len(evalset.bounds)
            part = np.ascontiguousarray(stats[:, row : row + count].transpose(0, 2, 1))
            row += count
            means = part.sum(axis=-1) / evalset.sizes.sum()
            errors = standard_errors(part, evalset.sizes)
            for column, name in enumerate(names):
                results[f"{evalset.name}_{name}"][first:stop] = means[:, column]
                results[f"{evalset.name}_{name}_se"][first:stop] = errors[:, column]
