"""Hessian work over MPI ranks: products over split batches, split probes, split grid points.

- :func:`mpi_reducer` / :func:`mpi_hessian_operator`: a
  :class:`~landscape.curvature.HessianOperator` whose batches are shared out (``shard=(rank,
  world)``: batches ``rank, rank + world, ...``) and whose every product, loss and gradient is
  summed over the ranks (``Allreduce``), so every rank holds the product of the whole data and
  any algorithm (Lanczos, power iteration, traces) runs on all ranks in step, giving one
  process's result within float rounding (the sum's order differs).
- :class:`ProbeSplitOperator` / :func:`trace_mpi`: Hutchinson, Hutch++ and XTrace on an
  operator over all the data with the columns of each ``matmat`` (the test vectors, drawn on
  every rank from the same seeded generator) shared out round-robin and gathered: the same
  probes, products and estimate as one process.
- :func:`spectral_density_mpi`: stochastic Lanczos quadrature with the probes shared out
  (:func:`~landscape.curvature.density.slq_quadrature`), the nodes gathered.
- the eigenvalue map splits grid points: :func:`landscape.curvature.eigmap.eigenvalue_map` with
  ``comm`` (the surfaces' dynamic scheduler, rank 0 writes).
- :func:`run_hessian_mpi` (:mod:`landscape.mpi.hessian_task`): the command line's seam.

Every function is collective: all ranks call it with the same arguments. mpi4py is imported
inside the functions (``comm`` defaults to ``MPI.COMM_WORLD``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.curvature.batches import Reducer
from landscape.curvature.density import DensitySettings, density_result, slq_quadrature
from landscape.curvature.operator import HessianOperator
from landscape.curvature.results import DensityResult, TraceResult
from landscape.curvature.trace import trace

__all__ = [
    "ProbeSplitOperator",
    "mpi_hessian_operator",
    "mpi_reducer",
    "spectral_density_mpi",
    "trace_mpi",
    "world",
]


def world(comm: Any = None) -> Any:
    """``comm``, or mpi4py's ``COMM_WORLD`` (a clear error without mpi4py)."""
    if comm is not None:
        return comm
    from landscape.optional import import_optional

    mpi = import_optional("mpi4py.MPI", "MPI needs mpi4py: pip install mpi4py mpich")
    return mpi.COMM_WORLD


def mpi_reducer(comm: Any = None, *, consistent: bool = True) -> Reducer:
    """``reducer(flat) -> flat``: the sum of ``flat`` over the ranks (``Allreduce`` of a CPU
    copy, back on ``flat``'s device and dtype).

    ``consistent``: rank 0's sum is then broadcast, so that every rank holds the same bits even
    where an MPI library sums in a rank-dependent order (the algorithms take the same branches
    on every rank only if their numbers agree; a rank that stopped a Lanczos process one step
    early would leave the others waiting). It costs one broadcast of the vector per product.
    """
    from mpi4py import MPI

    comm = world(comm)

    def reduce(flat: Tensor) -> Tensor:
        local = np.ascontiguousarray(flat.detach().to("cpu").numpy())
        total = np.empty_like(local)
        comm.Allreduce(local, total, op=MPI.SUM)
        if consistent:
            comm.Bcast(total, root=0)
        return torch.from_numpy(total).to(device=flat.device, dtype=flat.dtype)

    return reduce


def mpi_hessian_operator(
    model: nn.Module,
    data: Any,
    loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
    *,
    comm: Any = None,
    **options: Any,
) -> HessianOperator:
    """A :class:`~landscape.curvature.HessianOperator` over ``data`` with the batches shared out
    over the ranks of ``comm`` and the products summed (:func:`mpi_reducer`). ``options`` are
    the operator's (``params``, ``subset``, ``batch_size``, ``ggn``, ...): with several ranks,
    cut the data into at least as many batches (``batch_size``) or some ranks hold none."""
    comm = world(comm)
    reducer = mpi_reducer(comm)
    shard = (comm.Get_rank(), comm.Get_size())
    return HessianOperator(model, data, loss, reducer=reducer, shard=shard, **options)


class ProbeSplitOperator:
    """``op`` (over all the data, on every rank) with the columns of each :meth:`matmat` shared
    out: rank ``r`` computes columns ``r, r + world, ...`` and every rank gets all of them
    (``allgather``). :meth:`matvec` is ``op``'s own (every rank computes it). ``hvp_count``
    counts the products of all ranks, as one process would."""

    def __init__(self, op: Any, comm: Any = None) -> None:
        self.op = op
        self.comm = world(comm)
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        self.size, self.dtype, self.device = op.size, op.dtype, op.device
        self.hvp_count = 0

    def matvec(self, v: Tensor) -> Tensor:
        self.hvp_count += 1
        return self.op.matvec(v)

    def matmat(self, V: Tensor) -> Tensor:  # noqa: N803 - the protocol's name
        if V.ndim != 2 or V.shape[0] != self.size:
            raise ValueError(f"V must have shape ({self.size}, k), got {tuple(V.shape)}")
        mine = list(range(self.rank, V.shape[1], self.world))
        local = self.op.matmat(V[:, mine]) if mine else V[:, :0]
        parts = self.comm.allgather(local.detach().to("cpu").numpy())
        out = torch.empty(V.shape, dtype=self.dtype)
        for rank, part in enumerate(parts):
            out[:, rank :: self.world] = torch.from_numpy(part)
        self.hvp_count += V.shape[1]
        return out.to(self.device)

    def provenance(self) -> dict[str, Any]:
        facts = dict(self.op.provenance())
        facts.update(nproc=self.world, probes_split="round-robin", hvp_count=self.hvp_count)
        return facts


def trace_mpi(
    op: Any, method: str = "hutch++", products: int = 99, *, comm: Any = None, **options: Any
) -> TraceResult:
    """:func:`landscape.curvature.trace.trace` with the test vectors' products shared out over
    the ranks (:class:`ProbeSplitOperator`); ``op`` holds all the data on every rank. The
    result (on every rank) is one process's, with ``nproc`` in its provenance."""
    return trace(ProbeSplitOperator(op, comm), method, products, **options)


def spectral_density_mpi(op: Any, *, comm: Any = None, **options: Any) -> DensityResult:
    """:func:`landscape.curvature.spectral_density` (``options``: its keywords, the fields of
    :class:`~landscape.curvature.density.DensitySettings`) with probe ``j`` run on rank
    ``j % world``; ``op`` holds all the data on every rank. The nodes and weights are gathered
    in probe order, so the result (on every rank) is one process's."""
    settings = DensitySettings(**options)
    probes = settings.probes
    comm = world(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    start, count0 = time.perf_counter(), op.hvp_count
    mine = list(range(rank, probes, size))
    nodes, weights = slq_quadrature(
        op, probes=probes, steps=settings.steps, seed=settings.seed, indices=mine
    )
    gathered = comm.allgather((mine, nodes, weights, op.hvp_count - count0))
    steps = nodes.shape[1]
    all_nodes, all_weights = np.empty((probes, steps)), np.empty((probes, steps))
    for indices, part_nodes, part_weights, _ in gathered:
        all_nodes[indices], all_weights[indices] = part_nodes, part_weights
    result = density_result(
        op,
        all_nodes,
        all_weights,
        settings,
        hvp_count=sum(count for *_, count in gathered),
        seconds=time.perf_counter() - start,
    )
    provenance = {**result.provenance, "nproc": size, "probes_split": "round-robin"}
    return replace(result, provenance=provenance)
