"""``run_hessian_mpi``: Hessian work under MPI for the command line (one call on every rank).

The command line's ``hessian --mpi`` runs as ``mpiexec -n N python -m mpi4py -m landscape
hessian ... --mpi``; on every rank it calls::

    result = run_hessian_mpi(build_inputs, task)   # a dict on rank 0, None elsewhere

``build_inputs()`` (called once on every rank, so every rank builds the same, seeded inputs)
returns a mapping with ``model`` and ``data`` and optionally ``loss`` (default
``"crossentropy"``), ``params``, ``subset``, ``subset_seed``, ``batch_size``, ``mode``,
``ggn`` and, for an eigenvalue map, ``directions``. ``task`` says what to compute (every key
optional; see :data:`TASK_DEFAULTS`):

- ``topk`` (1; 0 for none), ``tol`` (1e-4), ``max_iter``, ``seed``: the top eigenvalues by
  Lanczos on the operator with the batches shared out (``batch_size`` cuts the data into
  batches; give at least as many as ranks);
- ``smallest``: also the algebraically smallest eigenvalue (same operator);
- ``trace`` (``"hutch++"``, ``"hutchinson"``, ``"xtrace"`` or None) with
  ``trace_products``: the test vectors shared out over the ranks;
- ``density`` with ``density_probes`` / ``density_steps``: SLQ with the probes shared out;
- ``eigmap``: ``{"x": ..., "y": ..., "out": PATH, "resume": True, "tol": 1e-3,
  "max_iter": None, "bn_mode": "eval"}``: the eigenvalue map, grid points shared out, rank 0
  writes ``out``.

The result (JSON-able) has ``eigenvalues`` (largest first), ``residuals``, ``converged``,
``eigen`` / ``smallest`` (eigenvalues, residuals, converged, products, seconds) and ``history``
(Lanczos's), ``smallest_eigenvalue``, ``trace``, ``trace_stderr``, ``trace_hvp_count``,
``density`` (the :class:`~landscape.curvature.DensityResult` as a dict), ``eigmap`` (path,
shape, ranges), ``hvp_count`` (all products of all ranks), ``seconds`` (after the inputs are
built), ``tol``, ``loss``, ``samples``, ``data_sha256`` and ``model_sha256`` (of all the data,
as one process reports them), ``size`` (the selected parameters' entries), ``provenance`` (the
split operator's, with ``nproc``) and ``nproc``. An exception on any rank ends the whole job
(:func:`abort`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from landscape.curvature.batches import OperatorBatches
from landscape.curvature.eigen import smallest_eigenvalue, top_eigenvalues
from landscape.curvature.operator import HessianOperator
from landscape.mpi.curvature import (
    mpi_hessian_operator,
    spectral_density_mpi,
    trace_mpi,
    world,
)
from landscape.mpi.driver import abort

__all__ = ["TASK_DEFAULTS", "run_hessian_mpi"]

TASK_DEFAULTS: dict[str, Any] = {
    "topk": 1,
    "tol": 1e-4,
    "max_iter": None,
    "seed": 0,
    "smallest": False,
    "trace": None,
    "trace_products": 99,
    "density": False,
    "density_probes": 4,
    "density_steps": 64,
    "eigmap": None,
    "progress": False,
}
OPERATOR_KEYS = ("params", "subset", "subset_seed", "batch_size", "ggn")


def run_hessian_mpi(
    build_inputs: Callable[[], Mapping[str, Any]], task: Mapping[str, Any], *, comm: Any = None
) -> dict[str, Any] | None:
    """Run ``task`` on the inputs of ``build_inputs`` over the ranks of ``comm`` (default
    ``COMM_WORLD``); see the module docstring. The result on rank 0, ``None`` elsewhere."""
    comm = world(comm)
    try:
        unknown = set(task) - set(TASK_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown task keys {sorted(unknown)}; known: {sorted(TASK_DEFAULTS)}")
        settings = {**TASK_DEFAULTS, **task}
        inputs = dict(build_inputs())
        missing = {"model", "data"} - set(inputs)
        if missing:
            raise ValueError(f"build_inputs() must return model and data; missing {missing}")
        comm.Barrier()
        start = time.perf_counter()
        result = _run(comm, inputs, settings)
        result["seconds"] = time.perf_counter() - start
        result["nproc"] = comm.Get_size()
        return result if comm.Get_rank() == 0 else None
    except BaseException:  # noqa: BLE001 - any failure must end the whole job
        abort(comm)
        raise  # pragma: no cover - abort never returns


def _full_operator(comm: Any, model, data, loss, mode: str, options: dict) -> HessianOperator:
    """The operator over all the data on every rank, in the mode rank 0 chose."""
    op = None
    if comm.Get_rank() == 0:
        op = HessianOperator(model, data, loss, mode=mode, **options)
    mode = comm.bcast(op.mode if op is not None else None, root=0)
    if op is None:
        op = HessianOperator(model, data, loss, mode=mode, **options)
    return op


def _run(comm: Any, inputs: dict, settings: dict) -> dict[str, Any]:
    model, data = inputs["model"], inputs["data"]
    loss = inputs.get("loss", "crossentropy")
    mode = inputs.get("mode", "auto")
    options = {key: inputs[key] for key in OPERATOR_KEYS if key in inputs}
    tol, seed, max_iter = settings["tol"], settings["seed"], settings["max_iter"]
    result: dict[str, Any] = {"tol": tol, "hvp_count": 0}
    sharded = mpi_hessian_operator(
        model, data, loss, comm=comm, mode="reverse" if mode == "auto" else mode, **options
    )
    result["loss"] = sharded.loss()
    result["samples"] = sharded.data.samples
    result["model_sha256"] = sharded.model_sha256
    result["data_sha256"] = _data_sha256(comm, data, loss, sharded, options)
    result["size"] = sharded.size
    if settings["topk"]:
        eig = top_eigenvalues(sharded, settings["topk"], tol=tol, max_iter=max_iter, seed=seed)
        result.update(
            eigenvalues=list(eig.eigenvalues),
            residuals=list(eig.residuals),
            converged=eig.converged,
            eigen=eig.summary(),
            history=[list(h) for h in eig.history],
        )
        result["hvp_count"] += eig.hvp_count
    if settings["smallest"]:
        low = smallest_eigenvalue(sharded, tol=tol, max_iter=max_iter, seed=seed)
        result["smallest_eigenvalue"] = low.eigenvalues[0]
        result["smallest_converged"] = low.converged
        result["smallest"] = low.summary()
        result["hvp_count"] += low.hvp_count
    if settings["trace"] or settings["density"]:
        full = _full_operator(comm, model, data, loss, mode, options)
        if settings["trace"]:
            traced = trace_mpi(
                full, settings["trace"], settings["trace_products"], comm=comm, seed=seed
            )
            result.update(trace=traced.trace, trace_stderr=traced.stderr)
            result["trace_method"] = traced.method
            result["trace_hvp_count"] = traced.hvp_count
            result["hvp_count"] += traced.hvp_count
        if settings["density"]:
            density = spectral_density_mpi(
                full,
                comm=comm,
                probes=settings["density_probes"],
                steps=settings["density_steps"],
                seed=seed,
            )
            result["density"] = density.to_dict()
            result["hvp_count"] += density.hvp_count
    if settings["eigmap"] is not None:
        result["eigmap"] = _eigmap(comm, inputs, loss, mode, options, settings)
        result["hvp_count"] += int(result["eigmap"]["hvp_count"])
    result["provenance"] = {**sharded.provenance(), "nproc": comm.Get_size()}
    return result


def _data_sha256(comm: Any, data: Any, loss: Any, sharded: HessianOperator, options: dict):
    """The digest one process reports for the same data (rank 0 hashes all batches on the
    CPU)."""
    if comm.Get_size() == 1 or comm.Get_rank() != 0:
        return sharded.data.sha256
    whole = OperatorBatches.load(
        data,
        loss=loss,
        device=torch.device("cpu"),
        dtype=sharded.dtype,
        subset=options.get("subset"),
        subset_seed=options.get("subset_seed", 0),
        batch_size=options.get("batch_size"),
    )
    return whole.sha256


def _eigmap(comm, inputs: dict, loss, mode: str, options: dict, settings: dict) -> dict:
    from landscape.curvature.eigmap import eigenvalue_map

    spec = dict(settings["eigmap"])
    if "directions" not in inputs:
        raise ValueError("an eigenvalue map needs build_inputs() to return directions")
    known = {"x", "y", "out", "resume", "tol", "max_iter", "bn_mode", "seed"}
    if set(spec) - known:
        raise ValueError(f"unknown eigmap keys {sorted(set(spec) - known)}; known {sorted(known)}")
    if "x" not in spec:
        raise ValueError("the eigmap task needs its x coordinates")
    emap = eigenvalue_map(
        inputs["model"],
        inputs["directions"],
        inputs["data"],
        spec["x"],
        spec.get("y"),
        loss=loss,
        mode=mode,
        tol=spec.get("tol", 1e-3),
        max_iter=spec.get("max_iter"),
        seed=spec.get("seed", settings["seed"]),
        bn_mode=spec.get("bn_mode", "eval"),
        out=spec.get("out"),
        resume=spec.get("resume", True),
        progress=settings["progress"],
        comm=comm,
        **options,
    )
    return {
        "path": emap.path,
        "shape": list(emap.shape),
        "points": int(emap.done.sum()),
        "max_eig": [float(np.nanmin(emap.max_eig)), float(np.nanmax(emap.max_eig))],
        "min_eig": [float(np.nanmin(emap.min_eig)), float(np.nanmax(emap.min_eig))],
        "hvp_count": int(np.nansum(emap.hvp_count)),
    }
