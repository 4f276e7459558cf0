"""``mode="compiled"``: ``torch.compile`` with BatchNorm folded (:class:`CompiledPath`), and K
points per compiled call (:class:`CompiledPointsPath`).

:class:`CompiledPath` is the eager loop with the forward under ``torch.compile`` at the chunk
shape (the last chunk padded) and eval-mode BatchNorm folded into the preceding conv/linear
layer (:mod:`landscape.evaluate.paths.fold`), the folded weights recomputed from the perturbed
ones at every point, so the graph is built once (a recompile raises).
:class:`CompiledPointsPath` evaluates K grid points per compiled call: ``vmap`` over K stacked
sets of the moved tensors inside ``torch.compile``, with loss, accuracy and per-batch sums in
the same graph. Which of them (or eager) evaluates is measured at construction
(:mod:`landscape.evaluate.paths.choose`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.evaluate.data import EvalSet
from landscape.evaluate.paths.base import PointsPath
from landscape.evaluate.paths.eager import EagerPath
from landscape.evaluate.paths.fold import fold_batchnorm
from landscape.evaluate.stats import Metrics, class_indices, fast_cross_entropy_stats
from landscape.evaluate.weights import MovedWeights


def cxx_available() -> bool:
    """Whether ``torch.compile`` can build CPU code here: a C++ compiler (``$CXX``, g++ or
    clang++) and no ``SAMLAB_NO_COMPILE`` set."""
    if os.environ.get("SAMLAB_NO_COMPILE", "") not in ("", "0"):
        return False
    cxx = os.environ.get("CXX", "")
    return bool((cxx and shutil.which(cxx)) or shutil.which("g++") or shutil.which("clang++"))


def fail_on_recompile() -> contextlib.AbstractContextManager:
    """Context in which a recompile of a compiled function raises (where torch supports it)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("fail_on_recompile") if set_stance else contextlib.nullcontext()


def pad_rows(inputs: Tensor, rows: int) -> Tensor:
    """``inputs`` padded to ``rows`` rows with copies of its first row."""
    missing = rows - len(inputs)
    if missing <= 0:
        return inputs
    filler = inputs[:1].expand((missing,) + tuple(inputs.shape[1:]))
    return torch.cat([inputs, filler])


def outputs_close(got: Any, expected: Any) -> bool:
    """Whether two forward outputs are tensors of one shape equal to the dtype's rounding."""
    if not (isinstance(got, Tensor) and isinstance(expected, Tensor)):
        return False
    if got.shape != expected.shape:
        return False
    tol = 1e-10 if got.dtype == torch.float64 else 1e-4 if got.dtype == torch.float32 else 1e-2
    scale = 1.0 + float(expected.abs().max()) if expected.numel() else 1.0
    return float((got - expected).abs().max()) <= tol * scale


class CompiledPath(EagerPath):
    """The eager loop with the folded forward compiled (see the module docstring). Raises
    on construction where it cannot run: no C++ compiler on CPU, a failing compilation, or
    a compiled forward that disagrees with the model."""

    mode = "compiled"

    def __init__(
        self, weights: MovedWeights, sets: Sequence[EvalSet], metrics: Metrics, output_budget: int
    ) -> None:
        super().__init__(weights, sets, metrics, output_budget)
        first = self.sets[0]
        compiled_batch = min(first.chunk_size, max(len(s.inputs) for s in self.sets))
        if weights.device.type == "cpu" and not cxx_available():
            raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
        model = weights.model
        with weights.prepared(), torch.no_grad():
            self.folded = fold_batchnorm(model, first.inputs[:compiled_batch])
            self.compiled = torch.compile(self.folded.module, dynamic=False)
            self.padded = [
                [pad_rows(inputs, compiled_batch) for inputs in evalset.chunk_inputs]
                for evalset in self.sets
            ]
            probe = self.padded[0][0]
            expected = model(probe)
            got = self.compiled(probe)
            if not outputs_close(got, expected):
                raise RuntimeError("the compiled forward disagrees with the model")

    def outputs(self, coord: np.ndarray) -> list[list[Any]]:
        self.weights.set_point(coord)
        self.folded.refresh()
        compiled = self.compiled
        with fail_on_recompile():
            return [
                [
                    out if len(out) == stop - start else out[: stop - start]
                    for out, (start, stop) in zip((compiled(x) for x in padded), evalset.chunks)
                ]
                for evalset, padded in zip(self.sets, self.padded)
            ]

    def forward_train(self) -> None:
        """One compiled pass over the training samples at the current weights (what the
        probe against eager times)."""
        self.folded.refresh()
        with fail_on_recompile():
            for padded in self.padded[0]:
                self.compiled(padded)


class CompiledPointsPath(PointsPath):
    """K grid points per compiled call, one compiled function per evaluation set (see the
    module docstring). The first call compiles; after it a recompile raises."""

    mode = "compiled"

    def __init__(
        self, weights: MovedWeights, sets: Sequence[EvalSet], metrics: Metrics, width: int
    ) -> None:
        super().__init__(weights, sets, metrics, width)
        self.functions = [
            torch.compile(self._points_function(evalset), dynamic=False) for evalset in self.sets
        ]
        self.compiled_once = False

    def _points_function(self, evalset: EvalSet) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """``f(points, inputs, targets)`` -> per-batch sums ``(K, n_batches, n_stats)`` at
        the K points ``theta0 + a[k] dx (+ b[k] dy)`` (``points`` float64 ``(K, ndim)``)."""
        from torch.func import functional_call, vmap

        model, groups, metrics = self.weights.model, self.weights.groups, self.metrics
        batch, size = metrics.batch_size, len(evalset.inputs)
        full = size // batch
        stat_dtype = metrics.stat_dtype
        fast_ce = metrics.loss == "crossentropy" and class_indices(evalset.targets, None)
        if fast_ce:
            with self.weights.prepared(), torch.no_grad():
                classes = model(evalset.inputs[:1]).shape
            fast_ce = len(classes) == 2 and class_indices(evalset.targets, classes[1])
        per_sample = fast_cross_entropy_stats if fast_ce else metrics.per_sample

        def sums(values: Tensor) -> Tensor:  # (S, N) -> (n_batches, S)
            head = values[:, : full * batch].reshape(values.shape[0], full, batch)
            head = head.sum(-1, dtype=stat_dtype)
            if full * batch != size:
                tail = values[:, full * batch :].sum(-1, dtype=stat_dtype, keepdim=True)
                head = torch.cat([head, tail], dim=1) if full else tail
            return head.t()

        def function(points: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
            tensors: dict[str, Tensor] = {}
            for group in groups:
                coords = points.to(group.center.dtype)
                flat = group.center + coords[:, :1] * group.dx
                if group.dy is not None:
                    flat = flat + coords[:, 1:2] * group.dy
                tensors.update(zip(group.names, group.views(flat)))

            def one(moved: dict[str, Tensor]) -> Tensor:
                outputs = functional_call(model, moved, (inputs,))
                return sums(per_sample(outputs, targets))

            return vmap(one)(tensors)

        return function

    def point_stats(self, coords: np.ndarray) -> np.ndarray:
        # one fresh (K, ndim) tensor: views of one array as separate inputs would alias
        points = torch.tensor(coords, dtype=torch.float64, device=self.weights.device)
        with fail_on_recompile() if self.compiled_once else contextlib.nullcontext():
            parts = [
                function(points, evalset.inputs, evalset.targets)
                for function, evalset in zip(self.functions, self.sets)
            ]
        self.compiled_once = True
        stats = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return stats.cpu().numpy().astype(np.float64, copy=False)
