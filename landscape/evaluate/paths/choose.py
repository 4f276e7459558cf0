"""Choosing the evaluation path once, at construction: :class:`PathChooser`.

- ``mode="eager"``: :class:`~landscape.evaluate.paths.eager.EagerPath` after the forward-chunk
  probe (:class:`~landscape.evaluate.paths.chunks.ForwardChunks`).
- ``mode="compiled"``: :class:`~landscape.evaluate.paths.compiled.CompiledPath`, falling back to
  eager with one warning when it cannot run, and without a warning (noted as
  ``compiled_fallback``) where, on a model cheap enough to time whole passes, the compiled pass
  does not measure faster than the eager one. On such models K points per compiled call
  (:class:`~landscape.evaluate.paths.compiled.CompiledPointsPath`) are tried as well, from
  :data:`MIN_COMPILED_POINTS` points, and kept where they are position-independent bitwise,
  agree with the eager loop and measure faster per point than the path chosen so far.
- ``mode="vmap"``: :class:`~landscape.evaluate.paths.vmap.VmapPath` (an error where it cannot run).
- ``mode="auto"``: eager; on CUDA (or with ``probe_vmap=True``) ``vmap`` where a probe at the
  centre finds it agreeing with eager and faster per point (:meth:`PathChooser.auto_vmap`).

Every probe's timings and choice go into the notes (``provenance["execution"]``); a fast path
is kept only where it takes at most ``ProbeSettings.min_gain`` of the time of the other.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from landscape.evaluate.data import EvalSet
from landscape.evaluate.paths.base import EvaluationPath
from landscape.evaluate.paths.chunks import PROBE_ROUNDS, ForwardChunks, PassTimer, launched_ranks
from landscape.evaluate.paths.compiled import CompiledPath, CompiledPointsPath, cxx_available
from landscape.evaluate.paths.eager import EagerPath
from landscape.evaluate.paths.vmap import (
    CPU_ACTIVATION_BUDGET,
    MAX_POINTS_PER_CALL,
    VmapPath,
    activation_bytes,
    choose_points_per_call,
)
from landscape.evaluate.spec import EvaluationSpec
from landscape.evaluate.stats import Metrics
from landscape.evaluate.weights import MovedWeights

# compiled mode: K points per compiled call only where at least this many fit the budget;
# timed against the path chosen so far in this many interleaved rounds
MIN_COMPILED_POINTS = 4
POINTS_PROBE_ROUNDS = 3
# mode="auto": eager against vmap at the centre (PathChooser.auto_vmap), on at most this many
# training rows, the eager loop over this many points, best of rounds.
AUTO_PROBE_ROWS = 1024
AUTO_PROBE_EAGER_POINTS = 4
AUTO_PROBE_ROUNDS = 3
# (rtol, atol) of vmap against eager for every metric (None: any dtype not listed); cuDNN
# convolutions may run in TF32, and vmap batches them differently from the eager loop.
AUTO_PROBE_TOLERANCE = {torch.float64: (1e-9, 1e-12), None: (1e-3, 1e-5)}


class PathChooser:
    """Chooses how the points of one evaluator are evaluated, from its ``spec``: the moved
    ``weights`` (model in ``dtype``), the evaluation ``sets`` and their ``metrics``.
    :meth:`choose` returns the path; :attr:`notes` hold what the probes measured and chose."""

    def __init__(
        self,
        spec: EvaluationSpec,
        weights: MovedWeights,
        sets: Sequence[EvalSet],
        metrics: Metrics,
        dtype: torch.dtype,
    ) -> None:
        self.spec = spec
        self.weights = weights
        self.sets = list(sets)
        self.metrics = metrics
        self.dtype = dtype
        self.settings = spec.probes
        self.timer = spec.probes.timer or PassTimer(weights.device)
        self.notes: dict[str, Any] = {}
        self.cheap = False  # the chunk probe timed whole passes (then compiled is probed too)

    def choose(self) -> EvaluationPath:
        """The evaluation path of ``spec.mode`` (see the module docstring)."""
        spec = self.spec
        if spec.mode == "vmap":
            return self.vmap()
        chunks = ForwardChunks(
            self.weights, self.sets, spec.batch_size, self.settings, self.timer, self.notes
        )
        chunks.choose(spec.forward_chunk)
        self.cheap = chunks.cheap
        eager = EagerPath(self.weights, self.sets, self.metrics, spec.output_budget)
        if spec.mode == "compiled":
            return self.compiled_points(self.compiled(eager))
        if spec.probes_vmap(self.weights.device):
            return self.auto_vmap(eager)
        return eager

    def vmap(self) -> VmapPath:
        """``mode="vmap"``: K points per forward, checked against the model's own forward on
        the first batch; a ``ValueError``/``RuntimeError`` where it cannot run."""
        if self.spec.bn_mode != "eval":
            raise ValueError("mode='vmap' needs bn_mode='eval' (use eager or compiled)")
        try:
            width = choose_points_per_call(
                self.weights, self.sets[0], self.spec.points_per_call, self.notes
            )
            path = VmapPath(self.weights, self.sets, self.metrics, width)
            path.check()
        except Exception as error:
            raise RuntimeError(
                f"mode='vmap' cannot evaluate this model ({type(error).__name__}: {error}); "
                "use mode='eager'"
            ) from error
        return path

    def compiled(self, eager: EagerPath) -> EvaluationPath:
        """The compiled forward, or ``eager`` where it cannot run (one warning) or where, on
        a cheap model, one pass over the training samples does not measure faster than the
        eager one (tiny models lose to the compiled call's own overhead)."""
        try:
            path = CompiledPath(self.weights, self.sets, self.metrics, self.spec.output_budget)
        except Exception as error:  # noqa: BLE001 - any failure falls back to eager
            warnings.warn(
                f"mode='compiled' is not available here ({type(error).__name__}: {error}); "
                "evaluating in eager mode instead",
                RuntimeWarning,
                stacklevel=4,
            )
            self.notes["compile_error"] = f"{type(error).__name__}: {error}"[:500]
            return eager
        self.notes["batchnorm_folded"] = path.folded.num_folded
        if path.folded.reason:
            self.notes["batchnorm_fold_note"] = path.folded.reason[:500]
        if not self.cheap:
            return path
        model, first = self.weights.model, self.sets[0]

        def eager_pass() -> None:
            for inputs in first.chunk_inputs:
                model(inputs)

        with self.weights.prepared(), torch.no_grad():
            passes = {"eager": eager_pass, "compiled": path.forward_train}
            timings = self.timer(passes, PROBE_ROUNDS)
        self.notes["compiled_probe_ms"] = {k: round(v * 1e3, 3) for k, v in timings.items()}
        if timings["compiled"] > self.settings.min_gain * timings["eager"]:
            self.notes["compiled_fallback"] = (
                f"eager: the compiled pass measured {timings['compiled'] * 1e3:.3g} ms, the "
                f"eager pass {timings['eager'] * 1e3:.3g} ms"
            )
            return eager
        return path

    def compiled_points(self, current: EvaluationPath) -> EvaluationPath:
        """K grid points per compiled call instead of ``current`` (eager or the compiled
        forward) where it measures faster per point: tried on cheap models only. Small models
        are overhead- and launch-bound on CPU: one call for K points amortises the per-call
        cost, and the statistics are fused instead of a few kernels per point."""
        spec, weights = self.spec, self.weights
        if not self.cheap or spec.bn_mode != "eval" or not isinstance(spec.loss, str):
            return current
        if weights.device.type == "cpu" and not cxx_available():
            return current
        rows = sum(len(s.inputs) for s in self.sets)
        per_point = activation_bytes(weights, self.sets[0]) * rows / max(1, spec.batch_size)
        on_cpu = weights.device.type == "cpu"
        budget = CPU_ACTIVATION_BUDGET if on_cpu else CPU_ACTIVATION_BUDGET * 8
        width = int(min(MAX_POINTS_PER_CALL, budget // max(1.0, per_point)))
        if width < MIN_COMPILED_POINTS:
            self.notes["compiled_points"] = f"not tried: {width} point(s) per call fit"
            return current
        try:
            points = CompiledPointsPath(weights, self.sets, self.metrics, width)
            coords = np.zeros((width, weights.ndim))
            coords[:, 0] = np.linspace(-0.5, 0.5, width)
            if weights.ndim == 2:
                coords[:, 1] = np.linspace(0.25, -0.25, width)
            with weights.prepared(), torch.no_grad():
                got = points.point_stats(coords)  # compiles
                # position independence: the same points in another order, same bits
                order = np.roll(np.arange(width), width // 2)
                rolled = points.point_stats(coords[order])
            if not np.array_equal(rolled, got[order], equal_nan=True):
                self.notes["compiled_points"] = (
                    "not used: a point's values depended on its position in the call"
                )
                return current
            expected = self.eager_reference(coords[:2])
            scale = 1.0 + np.abs(expected)
            tol = 1e-9 if self.dtype == torch.float64 else 1e-4
            if not np.all(np.abs(got[:2] - expected) <= tol * scale):
                raise RuntimeError("the compiled K-point evaluation disagrees with the model")
        except Exception as error:  # noqa: BLE001 - an optimisation only
            self.notes["compiled_points"] = f"not used: {type(error).__name__}: {error}"[:500]
            return current
        one = coords[:1]

        def per_point_current() -> None:
            current.evaluate(np.repeat(one, width, axis=0))

        def per_call_points() -> None:
            points.point_stats(coords)

        with weights.prepared(), torch.no_grad():
            passes = {current.mode: per_point_current, "points": per_call_points}
            timings = self.timer(passes, POINTS_PROBE_ROUNDS)
        self.notes["compiled_points_probe_ms_per_point"] = {
            key: round(value * 1e3 / width, 4) for key, value in timings.items()
        }
        if timings["points"] > self.settings.min_gain * timings[current.mode]:
            self.notes["compiled_points"] = f"not used: {current.mode} measured faster"
            return current
        self.notes["compiled_points"] = f"{width} points per compiled call"
        self.notes.pop("compiled_fallback", None)
        return points

    def eager_reference(self, coords: np.ndarray) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` of ``coords`` by the eager loop, point
        by point (the reference twin)."""
        eager = EagerPath(self.weights, self.sets, self.metrics, output_budget=0)
        with self.weights.prepared(), torch.no_grad():
            return np.concatenate([sums for _, sums in eager.batch_sums(coords)])

    def auto_vmap(self, eager: EagerPath) -> EvaluationPath:
        """``mode="auto"`` where vmap may win: keep ``eager``, or switch to ``vmap`` where it
        measures faster.

        At the centre, on a prefix of the training samples (at most :data:`AUTO_PROBE_ROWS`
        rows, whole nominal batches), K points by one ``vmap`` call are checked against the
        eager loop (every metric of every point within :data:`AUTO_PROBE_TOLERANCE`), then
        the eager loop over :data:`AUTO_PROBE_EAGER_POINTS` points and the K-point call are
        timed in :data:`AUTO_PROBE_ROUNDS` interleaved rounds (best of them, per point).
        ``vmap`` is kept only where it agrees and takes at most ``min_gain`` of the eager
        time per point. One of several MPI ranks does not probe (the ranks could choose
        differently, and could not agree without a collective): eager. Timings and choice
        are noted as ``auto_vmap_probe``."""
        ranks = launched_ranks()
        if ranks > 1:
            self.notes["auto_vmap_probe"] = {
                "choice": "eager",
                "reason": f"no probe: one of {ranks} MPI ranks (pass mode='vmap' to use it)",
            }
            return eager
        note: dict[str, Any] = {"choice": "eager"}
        self.notes["auto_vmap_probe"] = note
        weights, min_gain = self.weights, self.settings.min_gain
        try:
            width = choose_points_per_call(
                weights, self.sets[0], self.spec.points_per_call, self.notes
            )
            train = self.sets[0]
            batch = self.spec.batch_size
            rows = min(len(train.inputs), max(1, AUTO_PROBE_ROWS // batch) * batch)
            prefix = [train.prefix(rows)]
            metrics = self.metrics.on(prefix)
            coords = np.zeros((width, weights.ndim))
            eager_points = min(width, AUTO_PROBE_EAGER_POINTS)
            note.update(points_per_call=width, rows=rows, eager_points=eager_points)
            eager_prefix = EagerPath(weights, prefix, metrics, self.spec.output_budget)
            vmap_prefix = VmapPath(weights, prefix, metrics, width)

            expected = eager_prefix.evaluate(coords[:1])
            got = vmap_prefix.evaluate(coords)
            rtol, atol = AUTO_PROBE_TOLERANCE.get(self.dtype, AUTO_PROBE_TOLERANCE[None])
            for name, values in expected.items():
                if not np.all(np.isclose(got[name], values[0], rtol, atol, equal_nan=True)):
                    note["reason"] = (
                        f"vmap disagrees with eager: {name} {float(np.max(got[name]))!r} "
                        f"vs {float(values[0])!r} (rtol={rtol}, atol={atol})"
                    )
                    return eager

            def eager_pass() -> None:
                eager_prefix.evaluate(coords[:eager_points])

            def vmap_pass() -> None:
                vmap_prefix.point_stats(coords)

            with weights.prepared(), torch.no_grad():
                timings = self.timer({"eager": eager_pass, "vmap": vmap_pass}, AUTO_PROBE_ROUNDS)
            per_point = {"eager": timings["eager"] / eager_points, "vmap": timings["vmap"] / width}
            note["ms_per_point"] = {k: round(v * 1e3, 4) for k, v in per_point.items()}
            if not per_point["vmap"] <= min_gain * per_point["eager"]:
                note["reason"] = f"vmap is not at least {1 - min_gain:.0%} faster per point"
                return eager
        except Exception as error:  # noqa: BLE001 - an optimisation only
            note["reason"] = f"vmap not available: {type(error).__name__}: {error}"[:500]
            return eager
        note["choice"] = "vmap"
        note["reason"] = (
            f"vmap measured at least {1 - min_gain:.0%} faster per point and agrees with eager"
        )
        return VmapPath(weights, self.sets, self.metrics, width)
