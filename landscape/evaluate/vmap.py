"""``vmap`` over K stacked weight sets for :mod:`landscape.surface` (K points per forward).

``mode="vmap"``: ``torch.func.functional_call`` + ``vmap`` over K stacked sets of the moved
tensors (the others, buffers included, stay unbatched), eval mode only; ``mode="auto"`` on CUDA
measures it against the eager loop at construction (:meth:`_VmapPath._probe_auto_vmap`). K
comes from an activation budget (:meth:`_VmapPath._choose_points_per_call`), which the
compiled K-point path uses too. :class:`_VmapPath` holds these methods of
:class:`~landscape.surface.SurfaceEvaluator`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.evaluate.data import _flatten_tensors, _prefix_set
from landscape.evaluate.probe import _PROBE_MIN_GAIN, _launched_ranks

_MAX_POINTS_PER_CALL = 64  # K at most (vmap, and compiled K points per call)
# vmap on CPU: activations of all K points of one call (measured best: K = 4 for the digits
# CNN, 6.6 MB of activations per point at batch 128; K = 64 for the digits MLP, 38 kB).
_CPU_ACTIVATION_BUDGET = 32 << 20
# mode="auto" on CUDA: eager against vmap at the centre (SurfaceEvaluator._probe_auto_vmap),
# on at most this many training rows, the eager loop over this many points, best of rounds.
_AUTO_PROBE_ROWS = 1024
_AUTO_PROBE_EAGER_POINTS = 4
_AUTO_PROBE_ROUNDS = 3
# (rtol, atol) of vmap against eager for every metric (None: any dtype not listed); cuDNN
# convolutions may run in TF32, and vmap batches them differently from the eager loop.
_AUTO_PROBE_TOLERANCE = {torch.float64: (1e-9, 1e-12), None: (1e-3, 1e-5)}


class _VmapPath:
    """K points per forward of :class:`~landscape.surface.SurfaceEvaluator` (a base class of
    it): setup, the ``auto`` probe on CUDA, K from the activations, the stacked weights and the
    per-batch sums of K points."""

    def _setup_vmap(self, strict: bool) -> None:
        if self.bn_mode != "eval":
            raise ValueError("mode='vmap' needs bn_mode='eval' (use eager or compiled)")
        try:
            self.points_per_call = self._choose_points_per_call()
            probe = np.zeros((min(2, self.points_per_call), self.ndim))
            with self._prepared(), torch.no_grad():
                inputs, targets = self._sets[0].batches[0]
                stats = self._vmap_batch_stats(self._stacked(probe), inputs, targets)
                expected = self._batch_stats(self.model(inputs), targets)
            if not torch.allclose(stats[0], expected, rtol=1e-3, atol=1e-5):
                raise RuntimeError("vmap evaluation disagrees with the model's own forward")
        except Exception as error:
            if strict:
                raise RuntimeError(
                    f"mode='vmap' cannot evaluate this model ({type(error).__name__}: {error}); "
                    "use mode='eager'"
                ) from error
            warnings.warn(
                f"vmap evaluation is not available for this model ({error}); using eager mode",
                RuntimeWarning,
                stacklevel=3,
            )
            self.mode = "eager"
            self.points_per_call = 1
            self._notes["vmap_error"] = f"{type(error).__name__}: {error}"[:500]

    def _probe_auto_vmap(self) -> None:
        """``mode="auto"`` on CUDA: keep eager, or switch to ``vmap`` where it measures faster.

        At the centre, on a prefix of the training samples (at most ``_AUTO_PROBE_ROWS``
        rows, whole nominal batches), K points by one ``vmap`` call are checked against the
        eager loop (every metric of every point within ``_AUTO_PROBE_TOLERANCE``), then the
        eager loop over ``_AUTO_PROBE_EAGER_POINTS`` points and the K-point call are timed in
        ``_AUTO_PROBE_ROUNDS`` interleaved rounds (best of them, per point). ``vmap`` is kept
        only where it agrees and takes at most ``_PROBE_MIN_GAIN`` of the eager time per
        point. One of several MPI ranks does not probe (the ranks could choose differently,
        and could not agree without a collective): eager. Timings and choice are in
        ``provenance["execution"]["auto_vmap_probe"]``."""
        ranks = _launched_ranks()
        if ranks > 1:
            self._notes["auto_vmap_probe"] = {
                "choice": "eager",
                "reason": f"no probe: one of {ranks} MPI ranks (pass mode='vmap' to use it)",
            }
            return
        note: dict[str, Any] = {"choice": "eager"}
        self._notes["auto_vmap_probe"] = note
        full_sets = self._sets
        try:
            width = self._choose_points_per_call()
            train = full_sets[0]
            rows = min(
                len(train.inputs), max(1, _AUTO_PROBE_ROWS // self.batch_size) * self.batch_size
            )
            self._sets = [_prefix_set(train, rows)]
            coords = np.zeros((width, self.ndim))
            eager_points = min(width, _AUTO_PROBE_EAGER_POINTS)
            note.update(points_per_call=width, rows=rows, eager_points=eager_points)

            expected = self.evaluate_points(coords[:1])
            with self._prepared(), torch.no_grad():
                got = {name: np.full(width, np.nan) for name in self.metric_names}
                self._store(got, 0, self._vmap_point_stats(coords))
            rtol, atol = _AUTO_PROBE_TOLERANCE.get(self.dtype, _AUTO_PROBE_TOLERANCE[None])
            for name, values in expected.items():
                if not np.all(np.isclose(got[name], values[0], rtol, atol, equal_nan=True)):
                    note["reason"] = (
                        f"vmap disagrees with eager: {name} {float(np.max(got[name]))!r} "
                        f"vs {float(values[0])!r} (rtol={rtol}, atol={atol})"
                    )
                    return

            def eager_pass() -> None:
                self.evaluate_points(coords[:eager_points])

            def vmap_pass() -> None:
                self._vmap_point_stats(coords)

            with self._prepared(), torch.no_grad():
                timings = self._pass_seconds(
                    {"eager": eager_pass, "vmap": vmap_pass}, rounds=_AUTO_PROBE_ROUNDS
                )
            per_point = {"eager": timings["eager"] / eager_points, "vmap": timings["vmap"] / width}
            note["ms_per_point"] = {k: round(v * 1e3, 4) for k, v in per_point.items()}
            if not per_point["vmap"] <= _PROBE_MIN_GAIN * per_point["eager"]:
                note["reason"] = f"vmap is not at least {1 - _PROBE_MIN_GAIN:.0%} faster per point"
                return
        except Exception as error:  # noqa: BLE001 - an optimisation only
            note["reason"] = f"vmap not available: {type(error).__name__}: {error}"[:500]
            return
        finally:
            self._sets = full_sets
        note["choice"] = "vmap"
        note["reason"] = (
            f"vmap measured at least {1 - _PROBE_MIN_GAIN:.0%} faster per point and agrees "
            "with eager"
        )
        self.mode = "vmap"
        self.points_per_call = width

    def _choose_points_per_call(self) -> int:
        if self._requested_points_per_call is not None:
            return self._requested_points_per_call
        moved_bytes = sum(g.center.numel() * g.center.element_size() for g in self._groups)
        activation_bytes = self._activation_bytes()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget, per_point = free // 2, activation_bytes + 2 * moved_bytes
        else:  # by measurement: K points' activations should stay in cache
            budget, per_point = _CPU_ACTIVATION_BUDGET, activation_bytes
        self._notes["activation_bytes_per_point"] = int(activation_bytes)
        return int(max(1, min(_MAX_POINTS_PER_CALL, budget // max(1, per_point))))

    def _activation_bytes(self) -> int:
        total = 0

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            nonlocal total
            for tensor in _flatten_tensors(output):
                total += tensor.numel() * tensor.element_size()

        leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with self._prepared(), torch.no_grad():
                self.model(self._sets[0].batches[0][0])
        finally:
            for handle in handles:
                handle.remove()
        return total

    def _stacked(self, coords: np.ndarray) -> dict[str, Tensor]:
        stacked: dict[str, Tensor] = {}
        for group in self._groups:
            a = torch.as_tensor(coords[:, 0], dtype=group.center.dtype, device=self.device)
            flat = group.center + group.dx * a[:, None]
            if group.dy is not None:
                b = torch.as_tensor(coords[:, 1], dtype=group.center.dtype, device=self.device)
                flat = flat + group.dy * b[:, None]
            stacked.update(zip(group.names, group.views(flat)))
        return stacked

    def _vmap_batch_stats(self, stacked: dict[str, Tensor], inputs: Tensor, targets: Tensor):
        from torch.func import functional_call, vmap

        def one_point(tensors: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return self._batch_stats(functional_call(self.model, tensors, (x,)), y)

        return vmap(one_point, in_dims=(0, None, None))(stacked, inputs, targets)

    def _vmap_point_stats(self, coords: np.ndarray) -> np.ndarray:
        """Per-batch sums ``(K, n_batches, n_stats)`` at K points (one host sync)."""
        stacked = self._stacked(coords)
        sums = [
            self._vmap_batch_stats(stacked, inputs, targets)
            for evalset in self._sets
            for inputs, targets in evalset.batches
        ]
        stats = torch.stack(sums, dim=1)
        return stats.cpu().numpy().astype(np.float64, copy=False)
