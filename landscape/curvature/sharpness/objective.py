"""The loss of a model at perturbed weights, shared by the parameter-space sharpness measures.

:func:`prepare` materialises the evaluation data once (the fixed-subset protocol of
:func:`landscape.evaluate.as_tensors`, in the model's dtype on its device) and builds an
:class:`Objective`: ``L(w + delta)`` with its 0-1 error and its gradient in ``delta``, for a
flat ``delta`` over the trainable parameters (in ``model.named_parameters()`` order). The
perturbed weights are passed with :func:`torch.func.functional_call`, so the model's own
parameters are never written; :func:`evaluation_mode` puts every module in eval mode
(BatchNorm uses its running statistics, which are not updated) and gives every module its own
mode back afterwards, also on an exception.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.curvature.sharpness.results import SharpnessResult, summarise
from landscape.evaluate.data import EvalSet
from landscape.evaluate.provenance import (
    data_sha256,
    describe_subset,
    hash_indices,
    hash_tensors,
    package_version,
)
from landscape.evaluate.spec import LOSSES

LossArg = str | Callable[[Tensor, Tensor], Tensor]
#: rows of "one chunk" (the whole evaluation set)
ONE_CHUNK = 1 << 62


def check_radius(name: str, value: float) -> float:
    """``value`` as a float, or ``ValueError`` unless it is finite and ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (a radius), got {value}; pass abs({name})")
    return float(value)


def check_count(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_norm(norm: str) -> str:
    """``norm`` if it is ``"l2"`` or ``"linf"``, else ``ValueError``."""
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    return norm


def loss_name(loss: LossArg) -> str:
    """The loss as provenance: its name, or a callable's qualified name."""
    return loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Every module of ``model`` in eval mode inside the block; each module's own ``training``
    flag restored afterwards (also when the block raises)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def normalise_logits(outputs: Tensor) -> Tensor:
    """Logits centred and divided by their L2 norm over the last dimension, per sample (the
    norm floored at 1e-10), as Andriushchenko et al.'s ``LogitNormalizationWrapper`` does."""
    centred = outputs - outputs.mean(dim=-1, keepdim=True)
    return centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-10)


@dataclass(frozen=True)
class Point:
    """``L(w + delta)`` on one chunk: the loss, the 0-1 error (None unless cross-entropy), the
    gradient in the perturbation's own coordinates (None when not asked for) and those
    coordinates (``gamma``; the flat perturbation itself for an identity map)."""

    loss: float
    error: float | None
    grad: Tensor | None
    gamma: Tensor


class Objective:
    """``L(w + delta)`` of ``model`` with ``loss`` for flat perturbations ``delta`` of its
    trainable parameters.

    ``loss``: ``"crossentropy"`` (mean cross-entropy; the 0-1 error is the fraction of samples
    whose arg-max logit is not the target class, or the arg-max of probability targets),
    ``"mse"`` (mean squared error; no 0-1 error) or a callable ``loss(outputs, targets)``
    returning the *mean* loss of a batch (no 0-1 error). ``batch_size``: rows per forward
    pass (None: a chunk at once); the losses of the passes are combined weighted by their
    sizes, which is exact for mean losses. ``logit_normalise``: :func:`normalise_logits` is
    applied to the outputs before the loss.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossArg,
        *,
        logit_normalise: bool = False,
        batch_size: int | None = None,
    ) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters; set requires_grad on some")
        dtypes = {p.dtype for _, p in named}
        if len(dtypes) != 1 or not named[0][1].is_floating_point():
            raise ValueError(
                f"the trainable parameters need one floating dtype, got {sorted(map(str, dtypes))}"
                "; convert the model with model.to(dtype)"
            )
        self.model = model
        self.loss = loss
        self.logit_normalise = bool(logit_normalise)
        self.batch_size = batch_size
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.weights = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.size = int(self.weights.numel())
        self.passes = 0  # forward passes over a chunk (with or without backward)

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.dtype

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def _outputs(self, flat: Tensor, inputs: Tensor) -> Tensor:
        tensors = {
            name: piece.view(shape)
            for name, piece, shape in zip(
                self.names, flat.split(self.numels), self.shapes, strict=True
            )
        }
        outputs = torch.func.functional_call(self.model, tensors, (inputs,), strict=False)
        return normalise_logits(outputs) if self.logit_normalise else outputs

    def _sums(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor | None]:
        """(summed loss, number of misclassified samples or None) of one forward pass."""
        rows = len(outputs)
        if self.loss == "crossentropy":
            total = F.cross_entropy(outputs, targets, reduction="sum")
            labels = targets.argmax(1) if targets.is_floating_point() else targets
            return total, (outputs.detach().argmax(1) != labels).sum()
        if self.loss == "mse":
            return F.mse_loss(outputs, targets, reduction="mean") * rows, None
        return self.loss(outputs, targets) * rows, None

    def evaluate(
        self, inputs: Tensor, targets: Tensor, delta: Tensor | None, grad: bool
    ) -> tuple[float, float | None, Tensor | None]:
        """``(loss, error, gradient)`` of the chunk ``(inputs, targets)`` at ``w + delta``
        (``delta`` flat; None: at ``w``); the gradient in ``delta`` when ``grad``, else None."""
        base = self.weights if delta is None else self.weights + delta
        rows = len(inputs)
        step = rows if self.batch_size is None else self.batch_size
        loss_sum, wrong, gradient = 0.0, None, None
        for start in range(0, rows, step):
            x, y = inputs[start : start + step], targets[start : start + step]
            if grad:
                flat = base.detach().requires_grad_(True)
                total, misses = self._sums(self._outputs(flat, x), y)
                (piece,) = torch.autograd.grad(total / rows, flat)
                gradient = piece if gradient is None else gradient.add_(piece)
            else:
                with torch.no_grad():
                    total, misses = self._sums(self._outputs(base, x), y)
            loss_sum += float(total.detach())
            if misses is not None:
                wrong = (0 if wrong is None else wrong) + int(misses)
        self.passes += 1
        error = None if wrong is None else wrong / rows
        return loss_sum / rows, error, gradient


class Diagonal:
    """The perturbation map ``delta = scale * gamma`` (elementwise; ``scale`` None: identity)."""

    def __init__(self, scale: Tensor | None, dim: int) -> None:
        self.scale = scale
        self.dim = dim

    def forward(self, gamma: Tensor) -> Tensor:
        return gamma if self.scale is None else gamma * self.scale

    def adjoint(self, grad: Tensor) -> Tensor:
        return grad if self.scale is None else grad * self.scale


def point(
    objective: Objective, chunk: tuple[Tensor, Tensor], gamma: Tensor, grad: bool, mapping: Any
) -> Point:
    """``f(gamma) = L_chunk(w + T gamma)`` with ``T`` = ``mapping`` (an object with
    ``forward(gamma) -> delta`` and ``adjoint(grad_delta) -> grad_gamma``), as a :class:`Point`
    (``gamma = 0`` evaluates at ``w`` itself)."""
    delta = mapping.forward(gamma) if bool(gamma.any()) else None
    loss, error, gradient = objective.evaluate(chunk[0], chunk[1], delta, grad)
    return Point(loss, error, None if gradient is None else mapping.adjoint(gradient), gamma)


@dataclass
class Problem:
    """What every measure starts from: the evaluation set, the objective, the provenance and
    the clock (``began``, :func:`time.perf_counter` when :func:`prepare` was called)."""

    evalset: EvalSet
    objective: Objective
    provenance: dict[str, Any]
    began: float

    def result(
        self,
        measure: str,
        *,
        references: Any,
        perturbed: Any,
        weights: Any,
        settings: dict[str, Any],
        **fields: Any,
    ) -> SharpnessResult:
        """The measure's :class:`SharpnessResult` (:func:`summarise`), with the seconds since
        :func:`prepare`, the objective's forward passes, the provenance, and the objective's
        ``logit_normalise`` and ``batch_size`` after the measure's own ``settings``."""
        objective = self.objective
        return summarise(
            measure,
            references=references,
            perturbed=perturbed,
            weights=weights,
            seconds=time.perf_counter() - self.began,
            evaluations=objective.passes,
            settings={
                **settings,
                "logit_normalise": objective.logit_normalise,
                "batch_size": objective.batch_size,
            },
            provenance=self.provenance,
            **fields,
        )


def prepare(
    model: nn.Module,
    data: Any,
    *,
    loss: LossArg,
    chunk: int | None,
    subset: Any,
    subset_seed: int,
    logit_normalise: bool,
    batch_size: int | None,
) -> Problem:
    """The evaluation data on the model's device in its dtype, split into contiguous chunks of
    ``chunk`` rows (None: one chunk; the last may be shorter), the objective and the
    provenance (sha256 of the model's state, of the data and of the sample indices)."""
    began = time.perf_counter()
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or a callable, got {loss!r}")
    elif not callable(loss):
        raise TypeError("loss must be 'crossentropy', 'mse' or a callable")
    if chunk is not None:
        chunk = check_count("m", chunk, 1)
    if batch_size is not None:
        batch_size = check_count("batch_size", batch_size, 1)
    objective = Objective(model, loss, logit_normalise=logit_normalise, batch_size=batch_size)
    try:
        evalset = EvalSet.load(
            "sharpness",
            data,
            subset=subset,
            subset_seed=subset_seed,
            device=objective.device,
            dtype=objective.dtype,
            loss=loss,
            batch_size=chunk or ONE_CHUNK,
        )
    except ValueError as error:
        if "empty" not in str(error):
            raise
        raise ValueError(
            "the evaluation data are empty; pass at least one (input, target) sample "
            "(check the dataset and the subset)"
        ) from error
    rows = len(evalset.inputs)
    if chunk is not None and chunk > rows:
        raise ValueError(
            f"m = {chunk} is larger than the {rows} evaluation samples; pass m <= {rows}, "
            "or m=None for the whole set"
        )
    provenance = {
        "model_class": type(model).__qualname__,
        "model_sha256": hash_tensors(list(model.state_dict().items())),
        "data_sha256": data_sha256([(evalset.inputs, evalset.targets)]),
        "indices_sha256": hash_indices(evalset.indices),
        "size": rows,
        "subset": describe_subset(subset),
        "subset_seed": int(subset_seed),
        "loss_name": loss_name(loss),
        "parameters": objective.size,
        "perturbed_tensors": len(objective.names),
        "dtype": str(objective.dtype).replace("torch.", ""),
        "device": objective.device.type,
        "bn_mode": "eval",
        "torch_version": str(torch.__version__),
        "numpy_version": str(np.__version__),
        "landscape_version": package_version(),
    }
    return Problem(evalset, objective, provenance, began)
