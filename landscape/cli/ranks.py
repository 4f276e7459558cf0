"""The processes of a ``surface`` or ``hessian`` run of :mod:`landscape.cli`: ranks, devices,
agreement.

How many ranks ``mpiexec`` launched (:func:`launched_ranks`), joining them with ``--mpi``
(:func:`join_mpi`), the device of this rank (:func:`run_device`), and the check that every rank
evaluates the same model on the same data (:func:`agree_across_ranks`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from landscape.cli.inputs import CLIError, Context


def launched_ranks() -> int:
    """How many ranks ``mpiexec`` launched (1 without ``mpiexec``), from its environment."""
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        value = os.environ.get(key)
        if value and value.isdigit():
            return int(value)
    return 1


def join_mpi(args: argparse.Namespace, ctx: Context, work: str) -> None:
    """With ``--mpi``: ``ctx`` gets ``COMM_WORLD``, this rank and the world size. Without it, a
    launch by ``mpiexec`` on several ranks is refused (every rank would do ``work`` whole)."""
    ranks = launched_ranks()
    if args.mpi:
        try:
            from mpi4py import MPI
        except ImportError:
            raise CLIError("--mpi needs mpi4py (pip install mpi4py mpich)") from None
        ctx.comm = MPI.COMM_WORLD
        ctx.rank, ctx.size = ctx.comm.Get_rank(), ctx.comm.Get_size()
    elif ranks > 1:
        raise CLIError(
            f"launched by mpiexec with {ranks} ranks but without --mpi: every rank would "
            f"{work}; add --mpi"
        )


def run_device(args: argparse.Namespace, ctx: Context) -> Any:
    """The evaluation device: ``--device`` (an absent CUDA device is an error), or with
    ``--cuda`` one GPU per rank of a node (no GPU: a note on rank 0, then the CPU); see
    :func:`landscape.devices.resolve_device`."""
    from landscape.devices import resolve_device

    local = 0
    if args.cuda and not args.device and ctx.comm is not None:
        import torch

        if torch.cuda.is_available():
            from mpi4py import MPI

            local = ctx.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    try:
        return resolve_device(args.device, args.cuda, local_index=local, note=ctx.log)
    except ValueError as err:
        raise CLIError(str(err)) from None


def agree_across_ranks(
    ctx: Context, model: Any, args: argparse.Namespace, train: Any, test: Any, subset: Any
) -> None:
    """Every rank must evaluate the same model on the same data.

    A factory with an unseeded random initialisation builds different weights on every rank
    (torch seeds each process differently): rank 0's weights are then sent to all ranks. Data
    that differ across ranks (an unseeded random data factory) cannot be repaired: error.
    """
    from landscape.evaluate import as_tensors, hash_tensors

    comm = ctx.comm
    state = model.state_dict()
    if len(set(comm.allgather(hash_tensors(list(state.items()))))) > 1:
        ctx.log(
            f"note: --model {args.model} builds different weights on different ranks (unseeded "
            "initialisation?); every rank uses rank 0's weights"
        )
        weights = comm.bcast(
            {k: v.detach().cpu() for k, v in state.items()} if ctx.rank == 0 else None, root=0
        )
        model.load_state_dict(weights)
    parts = []
    for name, data, part_subset in (("train", train, subset), ("test", test, args.test_subset)):
        if data is None:
            continue
        try:
            inputs, targets, _ = as_tensors(data, subset=part_subset, subset_seed=args.subset_seed)
        except (ValueError, TypeError):
            return  # the evaluator reports it, with context
        parts += [(f"{name}.inputs", inputs), (f"{name}.targets", targets)]
        del inputs, targets
    if len(set(comm.allgather(hash_tensors(parts)))) > 1:
        raise CLIError(
            "the data factories give different data on different MPI ranks (unseeded "
            "randomness?); make them deterministic"
        )
