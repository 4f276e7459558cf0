"""``mode="compiled"`` of :mod:`landscape.surface`: ``torch.compile`` with BatchNorm folded.

The forward runs under ``torch.compile`` at the chunk shape (the last chunk padded) with
eval-mode BatchNorm folded into the preceding conv/linear layer
(:mod:`landscape.evaluate.fold`), the folded weights recomputed from the perturbed ones at every
point, so the graph is built once (a recompile raises). On models cheap enough to time whole
passes it is kept only where it measures faster than eager, and K points per compiled call
(``vmap`` inside the graph) are tried as well (see the module docstring of
:mod:`landscape.surface`). :class:`_CompiledPath` holds these methods of
:class:`~landscape.surface.SurfaceEvaluator`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.evaluate.data import _EvalSet, _unaliased
from landscape.evaluate.probe import _PROBE_MIN_GAIN
from landscape.evaluate.stats import _class_indices, _fast_cross_entropy_stats
from landscape.evaluate.vmap import _CPU_ACTIVATION_BUDGET, _MAX_POINTS_PER_CALL

# compiled mode: K points per compiled call only where at least this many fit the budget
_MIN_COMPILED_POINTS = 4


class _CompiledPath:
    """Compiled evaluation of :class:`~landscape.surface.SurfaceEvaluator` (a base class of
    it): the folded compiled forward, its probe against eager, and K points per compiled call.
    """

    def _setup_compiled(self) -> None:
        from landscape.evaluate.fold import fold_batchnorm

        first = self._sets[0]
        chunk = first.chunks[0][1] - first.chunks[0][0]
        compiled_batch = min(chunk, max(len(s.inputs) for s in self._sets))
        try:
            if self.device.type == "cpu" and not _cxx_available():
                raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
            with self._prepared(), torch.no_grad():
                folded = fold_batchnorm(self.model, first.inputs[:compiled_batch])
                compiled = torch.compile(folded.module, dynamic=False)
                for evalset in self._sets:
                    evalset.padded = [
                        _pad_rows(inputs, compiled_batch) for inputs in evalset.chunk_inputs
                    ]
                probe = first.padded[0]
                expected = self.model(probe)
                got = compiled(probe)
                if not _outputs_close(got, expected):
                    raise RuntimeError("the compiled forward disagrees with the model")
        except Exception as error:  # noqa: BLE001 - any failure falls back to eager
            warnings.warn(
                f"mode='compiled' is not available here ({type(error).__name__}: {error}); "
                "evaluating in eager mode instead",
                RuntimeWarning,
                stacklevel=3,
            )
            for evalset in self._sets:
                evalset.padded = []
            self.mode = "eager"
            self._notes["compile_error"] = f"{type(error).__name__}: {error}"[:500]
            return
        self._folded = folded
        self._compiled = compiled
        self._notes["batchnorm_folded"] = folded.num_folded
        if folded.reason:
            self._notes["batchnorm_fold_note"] = folded.reason[:500]
        self._probe_compiled()

    def _probe_compiled(self) -> None:
        """On a model cheap enough for the chunk probe, keep ``compiled`` only where one pass
        over the training samples measures faster than the eager one (tiny models lose to
        the compiled call's own overhead); otherwise fall back to eager, noted in provenance."""
        if not self._probe_cheap:
            return
        first = self._sets[0]
        model, compiled, folded = self.model, self._compiled, self._folded

        def eager_pass() -> None:
            for inputs in first.chunk_inputs:
                model(inputs)

        def compiled_pass() -> None:
            folded.refresh()
            with _fail_on_recompile():
                for padded in first.padded:
                    compiled(padded)

        with self._prepared(), torch.no_grad():
            timings = self._pass_seconds({"eager": eager_pass, "compiled": compiled_pass})
        self._notes["compiled_probe_ms"] = {k: round(v * 1e3, 3) for k, v in timings.items()}
        if timings["compiled"] > _PROBE_MIN_GAIN * timings["eager"]:
            self._notes["compiled_fallback"] = (
                f"eager: the compiled pass measured {timings['compiled'] * 1e3:.3g} ms, the "
                f"eager pass {timings['eager'] * 1e3:.3g} ms"
            )
            self.mode = "eager"
            self._compiled = self._folded = None
            for evalset in self._sets:
                evalset.padded = []

    def _setup_compiled_points(self) -> None:
        """Compiled mode on a cheap model: also try K grid points per compiled call (``vmap``
        over K stacked sets of the moved tensors inside ``torch.compile``, loss, accuracy and
        per-batch sums in the same graph), and keep it where it measures faster per point
        than the path chosen so far (eager or the compiled forward). Small models are
        overhead- and launch-bound on CPU: one call for K points amortises the per-call cost,
        and the statistics are fused instead of a few kernels per point."""
        if not self._probe_cheap or self.bn_mode != "eval" or not isinstance(self.loss, str):
            return
        if self.device.type == "cpu" and not _cxx_available():
            return
        rows = sum(len(s.inputs) for s in self._sets)
        per_point = self._activation_bytes() * rows / max(1, self.batch_size)
        budget = _CPU_ACTIVATION_BUDGET if self.device.type == "cpu" else _CPU_ACTIVATION_BUDGET * 8
        width = int(min(_MAX_POINTS_PER_CALL, budget // max(1.0, per_point)))
        if width < _MIN_COMPILED_POINTS:
            self._notes["compiled_points"] = f"not tried: {width} point(s) per call fit"
            return
        try:
            functions = [
                torch.compile(self._points_function(evalset), dynamic=False)
                for evalset in self._sets
            ]
            coords = np.zeros((width, self.ndim))
            coords[:, 0] = np.linspace(-0.5, 0.5, width)
            if self.ndim == 2:
                coords[:, 1] = np.linspace(0.25, -0.25, width)
            with self._prepared(), torch.no_grad():
                got = self._compiled_point_stats(coords, functions, first=True)
                # position independence: the same points in another order, same bits
                order = np.roll(np.arange(width), width // 2)
                rolled = self._compiled_point_stats(coords[order], functions)
            if not np.array_equal(rolled, got[order], equal_nan=True):
                self._notes["compiled_points"] = (
                    "not used: a point's values depended on its position in the call"
                )
                return
            expected = self._eager_point_stats(coords[:2])
            scale = 1.0 + np.abs(expected)
            tol = 1e-9 if self.dtype == torch.float64 else 1e-4
            if not np.all(np.abs(got[:2] - expected) <= tol * scale):
                raise RuntimeError("the compiled K-point evaluation disagrees with the model")
        except Exception as error:  # noqa: BLE001 - an optimisation only
            self._notes["compiled_points"] = f"not used: {type(error).__name__}: {error}"[:500]
            return
        current = self.mode
        one = coords[:1]

        def per_point_current() -> None:
            self.evaluate_points(np.repeat(one, width, axis=0))

        def per_call_points() -> None:
            self._compiled_point_stats(coords, functions)

        with self._prepared(), torch.no_grad():
            timings = self._pass_seconds(
                {current: per_point_current, "points": per_call_points}, rounds=3
            )
        self._notes["compiled_points_probe_ms_per_point"] = {
            key: round(value * 1e3 / width, 4) for key, value in timings.items()
        }
        if timings["points"] > _PROBE_MIN_GAIN * timings[current]:
            self._notes["compiled_points"] = f"not used: {current} measured faster"
            return
        self._points_compiled = functions
        self.points_per_call = width
        self.mode = "compiled"
        self._notes["compiled_points"] = f"{width} points per compiled call"
        self._notes.pop("compiled_fallback", None)
        self._compiled = self._folded = None
        for evalset in self._sets:
            evalset.padded = []

    def _points_function(self, evalset: _EvalSet) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """``f(points, inputs, targets)`` -> per-batch sums ``(K, n_batches, n_stats)`` at
        the K points ``theta0 + a[k] dx (+ b[k] dy)`` (``points`` float64 ``(K, ndim)``)."""
        from torch.func import functional_call, vmap

        model, groups = self.model, self._groups
        batch, size = self.batch_size, len(evalset.inputs)
        full = size // batch
        stat_dtype = self._stat_dtype
        fast_ce = self.loss == "crossentropy" and _class_indices(evalset.targets, None)
        if fast_ce:
            with self._prepared(), torch.no_grad():
                classes = self.model(evalset.inputs[:1]).shape
            fast_ce = len(classes) == 2 and _class_indices(evalset.targets, classes[1])
        per_sample = _fast_cross_entropy_stats if fast_ce else self._per_sample

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

    def _compiled_point_stats(
        self,
        coords: np.ndarray,
        functions: list[Callable[..., Tensor]] | None = None,
        first: bool = False,
    ) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` of K points in one compiled call per
        evaluation set (K = the compiled width; one host sync). A recompile raises, except on
        the ``first`` call (which compiles)."""
        import contextlib

        functions = self._points_compiled if functions is None else functions
        # one fresh (K, ndim) tensor: views of one array as separate inputs would alias
        points = torch.tensor(coords, dtype=torch.float64, device=self.device)
        with contextlib.nullcontext() if first else _fail_on_recompile():
            parts = [
                function(points, evalset.inputs, evalset.targets)
                for function, evalset in zip(functions, self._sets)
            ]
        stats = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return stats.cpu().numpy().astype(np.float64, copy=False)

    def _eager_point_stats(self, coords: np.ndarray) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` by the eager loop (the reference)."""
        with self._prepared(), torch.no_grad():
            rows = []
            for coord in coords:
                self._set_point(coord)
                pending = [
                    [
                        [_unaliased(self.model(x), self._storages) for x in s.chunk_inputs]
                        for s in self._sets
                    ]
                ]
                rows.append(self._outputs_stats(pending)[0])
        return np.stack(rows)


def _cxx_available() -> bool:
    import shutil

    if os.environ.get("SAMLAB_NO_COMPILE", "") not in ("", "0"):
        return False
    cxx = os.environ.get("CXX", "")
    return bool((cxx and shutil.which(cxx)) or shutil.which("g++") or shutil.which("clang++"))


def _fail_on_recompile():
    import contextlib

    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("fail_on_recompile") if set_stance else contextlib.nullcontext()


def _pad_rows(inputs: Tensor, rows: int) -> Tensor:
    missing = rows - len(inputs)
    if missing <= 0:
        return inputs
    filler = inputs[:1].expand((missing,) + tuple(inputs.shape[1:]))
    return torch.cat([inputs, filler])


def _outputs_close(got: Any, expected: Any) -> bool:
    if not (isinstance(got, Tensor) and isinstance(expected, Tensor)):
        return False
    if got.shape != expected.shape:
        return False
    tol = 1e-10 if got.dtype == torch.float64 else 1e-4 if got.dtype == torch.float32 else 1e-2
    scale = 1.0 + float(expected.abs().max()) if expected.numel() else 1.0
    return float((got - expected).abs().max()) <= tol * scale
