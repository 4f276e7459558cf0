"""The largest and smallest Hessian eigenvalues at grid points: :class:`EigenvalueEvaluator`.

At a point ``(a, b)`` the model's weights are moved to ``theta0 + a dx + b dy`` as the surfaces
move them (:class:`~landscape.evaluate.weights.MovedWeights`), a
:class:`~landscape.curvature.HessianOperator` of the mean loss is built there on the same
batches, and one Lanczos process (:class:`~landscape.curvature.eigen.Lanczos`) runs until its
largest *and* its smallest Ritz value both have relative residual ``<= tol``
(:func:`extreme_eigenvalues`): the Krylov space holds both ends of the spectrum, so this costs
the products of the slower end, not their sum, and each value is what
:func:`~landscape.curvature.top_eigenvalues` / :func:`~landscape.curvature.smallest_eigenvalue`
with the same ``seed`` give.

The evaluator follows :func:`landscape.compute_surface`'s protocol (``metric_names``,
``evaluate_points``, ``provenance``, ``ndim``, ``sample_indices``, ``default_chunk_size``), so
the surfaces' one-process loop, resumable writer and MPI scheduler run it unchanged.

.. note:: tomgoldstein/loss-landscape's ``plot_hessian_eigen.py`` sums the products over the
   batches (its ``max_eig`` is the number of batches times that of the mean loss), asks scipy's
   ``eigsh`` for the largest *magnitude* and gets the other end by a shift. Here the operator is
   the Hessian of the sample-weighted mean loss and the values are the algebraically largest
   and smallest eigenvalues.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.curvature.analysis import hessian_operator
from landscape.curvature.eigen import LANCZOS_MAX_ITER, Lanczos
from landscape.curvature.operator import HessianOperator
from landscape.evaluate.provenance import (
    DATA_DIGEST_SCHEME,
    hash_tensors,
    jsonable,
    package_version,
)
from landscape.evaluate.spec import check_coords
from landscape.evaluate.weights import MovedWeights

#: the values stored per point (loss-landscape's ``max_eig`` / ``min_eig`` first)
METRICS = (
    "max_eig",
    "min_eig",
    "max_eig_residual",
    "min_eig_residual",
    "hvp_count",
    "train_loss",
)
BN_MODES = ("eval", "recompute")


def _relative(residual: float, theta: float) -> float:
    if residual == 0.0:
        return 0.0
    return residual / abs(theta) if theta != 0.0 else math.inf


def extreme_eigenvalues(
    op, *, tol: float = 1e-3, max_iter: int | None = None, seed: int = 0
) -> dict[str, float]:
    """The algebraically largest and smallest eigenvalues of a symmetric operator from one
    Lanczos process (full reorthogonalisation), started from the unit Gaussian vector of
    :func:`~landscape.curvature.top_eigenvalues` with ``seed``; it stops when both extreme Ritz
    values have relative residual ``<= tol``, the Krylov space is exhausted, or after
    ``max_iter`` steps (default ``min(n, 100)``).

    Returns ``max_eig``, ``min_eig``, their relative residuals ``max_eig_residual`` /
    ``min_eig_residual``, ``hvp_count`` (products used) and ``converged`` (1.0 or 0.0).
    """
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iter is not None and (isinstance(max_iter, bool) or max_iter < 1):
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    cap = min(op.size, max_iter if max_iter is not None else LANCZOS_MAX_ITER)
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(op.size, generator=generator, dtype=torch.float64)
    start = (start / start.norm()).to(device=op.device, dtype=op.dtype)
    lanczos = Lanczos(op, start, generator, capacity=cap)
    count0 = op.hvp_count
    while True:
        lanczos.step()
        theta, eigvecs = lanczos.ritz()
        residuals = lanczos.residuals(eigvecs[:, [-1, 0]])
        top = _relative(float(residuals[0]), float(theta[-1]))
        bottom = _relative(float(residuals[1]), float(theta[0]))
        converged = top <= tol and bottom <= tol
        if converged or lanczos.exhausted or lanczos.steps >= cap:
            break
    return {
        "max_eig": float(theta[-1]),
        "min_eig": float(theta[0]),
        "max_eig_residual": top,
        "min_eig_residual": bottom,
        "hvp_count": float(op.hvp_count - count0),
        "converged": float(converged),
    }


class EigenvalueEvaluator:
    """``max_eig`` and ``min_eig`` (plus residuals, products, the loss) at grid points.

    Args:
        model: any ``nn.Module``; its weights are moved during :meth:`evaluate_points` and the
            centre written back (bitwise) before it returns.
        directions: a :class:`~landscape.directions.Directions` (1-D or 2-D).
        data: the :class:`~landscape.curvature.HessianOperator`'s, with the options of
            :func:`~landscape.curvature.hessian_operator` in ``operator`` (``loss``,
            ``params``, ``subset``, ``subset_seed``, ``batch_size``, ``mode``, ``ggn``): one
            set of batches, loaded once and shared by every point; ``mode`` is resolved once,
            at the centre.
        bn_mode: ``"eval"`` (the centre's running statistics) or ``"recompute"`` (re-estimated
            at each point over the batches' inputs, as the surfaces do).
        tol, max_iter, seed: of :func:`extreme_eigenvalues`.
        on_point: ``on_point(seconds, values)`` after each point (e.g. the time estimate).
    """

    default_chunk_size = 1
    points_per_call = 1
    metric_names = METRICS

    def __init__(
        self,
        model: nn.Module,
        directions: Any,
        data: Any,
        *,
        bn_mode: str = "eval",
        tol: float = 1e-3,
        max_iter: int | None = None,
        seed: int = 0,
        on_point: Callable[[float, dict], None] | None = None,
        **operator: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not hasattr(directions, "x") or not hasattr(directions, "dir_type"):
            raise TypeError("directions must be a landscape.directions.Directions")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if max_iter is not None and (isinstance(max_iter, bool) or max_iter < 1):
            raise ValueError(f"max_iter must be >= 1 or None, got {max_iter}")
        self.model = model
        self.directions = directions
        self.ndim = 1 if directions.y is None else 2
        self.tol, self.max_iter, self.seed = float(tol), max_iter, int(seed)
        self.bn_mode = bn_mode
        self.on_point = on_point
        center = hessian_operator(model, data, **operator)
        self.names, self.mode, self.data = list(center.names), center.resolve_mode(), center.data
        self.size = center.size
        self.loss, self.ggn = center.loss_spec, center.ggn
        self.model_sha256 = center.model_sha256
        inputs = [x for x, _ in self.data.batches]
        self._weights = MovedWeights(
            model,
            directions,
            self.ndim,
            center.device,
            recompute=inputs if bn_mode == "recompute" else None,
        )
        items = [(f"x.{k}", v) for k, v in directions.x.items()]
        items += [(f"y.{k}", v) for k, v in (directions.y or {}).items()]
        self.directions_sha256 = hash_tensors(items)
        self._center_facts = center.provenance()
        self.subset = operator.get("subset")

    @property
    def sample_indices(self) -> dict[str, np.ndarray]:
        """``{"train": indices}`` of the samples used when ``subset`` was given."""
        if self.subset is None or self.data.indices is None:
            return {}
        return {"train": np.asarray(self.data.indices, dtype=np.int64)}

    @property
    def provenance(self) -> dict[str, Any]:
        """What the map computes (identity) and how (mode, versions), JSON-able."""
        facts = self._center_facts
        result = {
            "kind": "hessian_eigenvalue_map",
            "directions": jsonable(dict(self.directions.meta)),
            "directions_sha256": self.directions_sha256,
            "dir_type": self.directions.dir_type,
            "loss_name": facts["loss_name"],
            "matrix": facts["matrix"],
            "bn_mode": self.bn_mode,
            "model_sha256": self.model_sha256,
            "model_class": facts["model_class"],
            "dtype": facts["dtype"],
            "param_count": facts["param_count"],
            "size": facts["size"],
            "param_names_sha256": hashlib.sha256("\n".join(self.names).encode()).hexdigest(),
            "data_sha256": facts["data_sha256"],
            "data_digest": DATA_DIGEST_SCHEME,
            "samples": facts["samples"],
            "batches": facts["batches"],
            "subset": facts["subset"],
            "subset_seed": facts["subset_seed"],
            "eig_algorithm": "lanczos (one process for both ends)",
            "eig_tol": self.tol,
            "eig_max_iter": self.max_iter if self.max_iter is not None else LANCZOS_MAX_ITER,
            "eig_seed": self.seed,
            "mode": self.mode,
            "device": facts["device"],
            "torch_version": str(torch.__version__),
            "numpy_version": str(np.__version__),
            "landscape_version": package_version(),
        }
        if "indices_sha256" in facts:
            result["train_indices_sha256"] = facts["indices_sha256"]
        return jsonable(result)

    def evaluate_points(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """The metrics at ``coords`` ``(K, ndim)``, each a float64 array ``(K,)``."""
        coords = check_coords(coords, self.ndim)
        out = {name: np.empty(len(coords)) for name in METRICS}
        for k, coord in enumerate(coords):
            tic = time.perf_counter()
            values = self._point(coord)
            for name in METRICS:
                out[name][k] = values[name]
            if self.on_point is not None:
                self.on_point(time.perf_counter() - tic, values)
        return out

    def _point(self, coord: np.ndarray) -> dict[str, float]:
        with self._weights.prepared():
            with torch.no_grad():
                self._weights.set_point(coord)
            op = HessianOperator(
                self.model, self.data, self.loss, params=self.names, mode=self.mode, ggn=self.ggn
            )
            values = extreme_eigenvalues(op, tol=self.tol, max_iter=self.max_iter, seed=self.seed)
            values["train_loss"] = op.loss()
            del op  # its kept graph holds the moved weights: drop it before they are restored
        return values
