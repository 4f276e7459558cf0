"""The eigenvalue map over a grid: :func:`eigenvalue_map` and its frozen result :class:`EigenMap`.

:func:`eigenvalue_map` runs an :class:`~landscape.curvature.eigmap.evaluator.EigenvalueEvaluator`
through :func:`landscape.compute_surface`: on one process, point by point in flat-index order,
or under MPI with the surfaces' dynamic scheduler (rank 0 hands out single points and writes).
With ``out`` the values go to an HDF5 file in the surfaces' layout (:mod:`landscape.io`:
``xcoordinates``, ``ycoordinates``, ``max_eig``, ``min_eig``, ..., a ``done`` mask, provenance
attributes), written and flushed after every point: a killed run loses no finished point, and
running it again computes only the points not ``done``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape.compute import compute_surface
from landscape.curvature.eigmap.evaluator import METRICS, EigenvalueEvaluator
from landscape.grid import Surface, grid_axis

Log = Callable[[str], None]


def _frozen(values: Any) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class EigenMap:
    """Hessian eigenvalues over a 1-D or 2-D grid (arrays ``(nx,)`` or ``(ny, nx)`` with
    element ``[i, j]`` at ``(x[j], y[i])``, NaN where not ``done``).

    Attributes:
        x, y: the coordinates (``y`` is ``None`` in 1-D).
        max_eig, min_eig: the algebraically largest and smallest eigenvalues of the mean loss's
            Hessian at each point.
        max_eig_residual, min_eig_residual: their relative Ritz residuals (``<= tol`` when
            converged).
        hvp_count: Hessian-vector products spent at each point.
        train_loss: the mean loss at each point.
        done: which points are computed.
        provenance: directions, model, data, loss, ``eig_tol``, ... (the file's attributes).
        path: the HDF5 file, or ``None``.
    """

    x: np.ndarray = field(compare=False)
    y: np.ndarray | None = field(compare=False)
    max_eig: np.ndarray = field(compare=False)
    min_eig: np.ndarray = field(compare=False)
    max_eig_residual: np.ndarray = field(compare=False, repr=False)
    min_eig_residual: np.ndarray = field(compare=False, repr=False)
    hvp_count: np.ndarray = field(compare=False, repr=False)
    train_loss: np.ndarray = field(compare=False, repr=False)
    done: np.ndarray = field(compare=False)
    provenance: dict = field(default_factory=dict, repr=False)
    path: str | None = None

    def __post_init__(self) -> None:
        for name in (*METRICS, "x"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if self.y is not None:
            object.__setattr__(self, "y", _frozen(self.y))
        done = np.array(self.done, dtype=bool)
        done.setflags(write=False)
        object.__setattr__(self, "done", done)
        object.__setattr__(self, "provenance", dict(self.provenance))
        for name in METRICS:
            if getattr(self, name).shape != done.shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, done {done.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """``(nx,)`` or ``(ny, nx)``."""
        return self.done.shape

    @property
    def ratio(self) -> np.ndarray:
        """``|min_eig / max_eig|``, loss-landscape's measure of non-convexity (NaN where not
        done or ``max_eig == 0``)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(self.min_eig / self.max_eig)
        return np.where(np.isfinite(ratio), ratio, np.nan)

    def to_surface(self) -> Surface:
        """A :class:`~landscape.grid.Surface` with every array as a metric plus ``eig_ratio``
        (for :mod:`landscape.plot`)."""
        metrics = {name: np.array(getattr(self, name)) for name in METRICS}
        metrics["eig_ratio"] = self.ratio
        return Surface(
            x=np.array(self.x),
            y=None if self.y is None else np.array(self.y),
            metrics=metrics,
            done=np.array(self.done),
            provenance=dict(self.provenance),
        )

    @classmethod
    def from_surface(cls, surface: Surface, path: Any = None) -> EigenMap:
        """The map held by ``surface`` (``max_eig`` and ``min_eig`` needed; other arrays
        missing from it, e.g. in a loss-landscape file, are NaN)."""
        missing = [name for name in ("max_eig", "min_eig") if name not in surface.metrics]
        if missing:
            names = list(surface.metrics)
            raise ValueError(f"not an eigenvalue map: no {missing} (metrics {names})")
        nan = np.full(surface.done.shape, np.nan)
        arrays = {name: surface.metrics.get(name, nan) for name in METRICS}
        return cls(
            x=surface.x,
            y=surface.y,
            done=surface.done,
            provenance=dict(surface.provenance),
            path=None if path is None else os.fspath(path),
            **arrays,
        )


def load_eigenvalue_map(path: str | os.PathLike) -> EigenMap:
    """The :class:`EigenMap` stored in ``path`` (written by :func:`eigenvalue_map`)."""
    from landscape.io import load_surface

    return EigenMap.from_surface(load_surface(path), path)


class _Estimate:
    """``on_point`` of rank 0's evaluator: after its first point, the estimated total time."""

    def __init__(self, log: Log | None, todo: int, nproc: int) -> None:
        self.log, self.todo, self.nproc, self.first = log, todo, nproc, None

    def __call__(self, seconds: float, values: Mapping[str, float]) -> None:
        if self.first is not None:
            return
        self.first = seconds
        if self.log is not None and self.todo > 0:
            total = seconds * self.todo / self.nproc
            self.log(
                f"eigenvalue map: the first point took {seconds:.2f} s "
                f"({int(values['hvp_count'])} products); estimated total {total:.1f} s for "
                f"{self.todo} points on {self.nproc} process{'es' if self.nproc > 1 else ''}"
            )


def _default_log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message)


def eigenvalue_map(
    model: nn.Module,
    directions: Any,
    data: Any,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray | None = None,
    *,
    loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
    params: Sequence[str] | Callable[[str, Tensor], bool] | None = None,
    subset: int | Sequence[int] | np.ndarray | None = None,
    subset_seed: int = 0,
    batch_size: int | None = None,
    bn_mode: str = "eval",
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    mode: str = "auto",
    ggn: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    comm: Any = None,
    log: Log | None = _default_log,
) -> EigenMap:
    """The largest and smallest Hessian eigenvalues of the mean loss at every grid point
    (loss-landscape's ``plot_hessian_eigen.py``, corrected: see
    :mod:`~landscape.curvature.eigmap.evaluator`).

    Args:
        model, directions, data: the model, its 1-D or 2-D
            :class:`~landscape.directions.Directions` and the data (an ``(inputs, targets)``
            pair, or a sequence / ``DataLoader`` of them), as for the surfaces.
        x, y: the grid coordinates (``y`` for 2-D directions only).
        loss, params, subset, subset_seed, batch_size, mode, ggn: of
            :class:`~landscape.curvature.HessianOperator` (``batch_size=None``: one batch).
        bn_mode: ``"eval"`` or ``"recompute"`` (BatchNorm statistics re-estimated per point).
        tol, max_iter, seed: each point's Lanczos process stops when both extremes have
            relative residual ``<= tol`` (or after ``max_iter`` steps, default 100); ``seed``
            fixes its start vector.
        out: an HDF5 file (loss-landscape's key names; see :mod:`landscape.io`), or ``None``
            to keep the map in memory.
        resume: re-open an existing ``out`` and compute only the points not ``done`` (its
            grid and identity provenance must match); ``False`` starts a new file over it.
        progress: a tqdm bar (rank 0).
        comm: an mpi4py communicator: the points are split over its ranks by the surfaces'
            dynamic scheduler, rank 0 writes ``out``; every rank calls this function with the
            same arguments. A failure on any rank ends the whole job (``comm.Abort``).
        log: where the plan and the time estimate (the first point's time times the points,
            over the ranks) go, on rank 0 (default ``tqdm.write``; ``None``: silent).

    Returns:
        The :class:`EigenMap` (on every rank under MPI).
    """
    if comm is not None and comm.Get_size() > 1:
        try:
            return _eigenvalue_map(**locals())
        except BaseException:  # noqa: BLE001 - any failure must end the whole job
            from landscape.mpi.driver import abort

            abort(comm)
            raise  # pragma: no cover - abort never returns
    return _eigenvalue_map(**locals())


def _eigenvalue_map(
    model, directions, data, x, y, *, out, resume, progress, comm, log, **options
) -> EigenMap:
    rank = 0 if comm is None else comm.Get_rank()
    nproc = 1 if comm is None else comm.Get_size()
    x = grid_axis("x", x)
    y = None if y is None else grid_axis("y", y)
    ndim = getattr(directions, "ndim", None)
    if ndim not in (1, 2):
        raise TypeError("directions must be a landscape.directions.Directions")
    if ndim == 2 and y is None:
        raise ValueError("2-D directions need the y coordinates too")
    if ndim == 1 and y is not None:
        raise ValueError("1-D directions (directions.y is None) take no y coordinates")
    estimate = _Estimate(log if rank == 0 else None, x.size * (1 if y is None else y.size), nproc)
    evaluator = None
    if nproc > 1 and options.get("mode", "auto") == "auto":
        # Rank 0 times the product modes; every rank then uses its choice (same products).
        if rank == 0:
            evaluator = EigenvalueEvaluator(model, directions, data, on_point=estimate, **options)
        options["mode"] = comm.bcast(evaluator.mode if rank == 0 else None, root=0)
    if evaluator is None:
        evaluator = EigenvalueEvaluator(model, directions, data, on_point=estimate, **options)
    writer = None
    if out is not None and rank == 0:
        from landscape.io import SurfaceWriter

        writer = SurfaceWriter.open(
            out,
            x=x,
            y=y,
            metric_names=METRICS,
            provenance=evaluator.provenance,
            overwrite=not resume,
            sample_indices=evaluator.sample_indices,
        )
    try:
        if writer is not None:
            estimate.todo = len(writer.todo())
            if writer.stamped and log is not None:
                log(f"note: {out} predates data digests; recorded this run's {writer.stamped}")
        if rank == 0 and log is not None:
            log(
                f"eigenvalue map: {estimate.todo} of {x.size * (1 if y is None else y.size)} "
                f"points to compute ({evaluator.size} parameters, {evaluator.data.samples} "
                f"samples, mode {evaluator.mode}, tol {evaluator.tol:g})"
            )
        surface = compute_surface(
            evaluator, writer, x=x, y=y, comm=comm, chunk_size=1, progress=progress and rank == 0
        )
    finally:
        if writer is not None:
            writer.close()
    return EigenMap.from_surface(surface, out)
