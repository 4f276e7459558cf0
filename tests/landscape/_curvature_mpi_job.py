"""The MPI side of ``test_curvature_mpi.py``: run as ``mpiexec -n N python -m mpi4py
_curvature_mpi_job.py OUT_DIR`` next to ``_factories.py``; rank 0 writes ``OUT_DIR/mpi.json``
(and the eigenvalue map ``OUT_DIR/eigmap.h5``). :func:`compute` is also what the test runs on
one process for the reference values (``comm=None``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import _factories as factories
import numpy as np
import torch

import landscape
from landscape.curvature import HessianOperator, eigenvalue_map, top_eigenvalues
from landscape.curvature.trace import hutchinson
from landscape.mpi import mpi_hessian_operator, spectral_density_mpi, trace_mpi
from landscape.mpi.hessian_task import run_hessian_mpi

GRID = np.linspace(-0.5, 0.5, 3)
BATCH = 32  # 256 samples: 8 batches


def vector(size: int) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(3))


def inputs() -> dict:
    model = factories.cnn()
    return {"model": model, "data": factories.data(), "batch_size": BATCH, "mode": "reverse"}


def compute(out_dir: Path, comm=None) -> dict:
    """Product, Lanczos lambda_1, Hutchinson, SLQ, a 3 x 3 eigenvalue map and the CLI seam."""
    model, data = factories.cnn(), factories.data()
    if comm is None:
        op = HessianOperator(model, data, batch_size=BATCH, mode="reverse")
    else:
        op = mpi_hessian_operator(model, data, comm=comm, batch_size=BATCH)
    result = {"product": op.matvec(vector(op.size)).tolist(), "loss": op.loss()}
    eig = top_eigenvalues(op, 1, tol=1e-6)
    result["lambda1"], result["lambda1_products"] = eig.eigenvalues[0], eig.hvp_count
    full = HessianOperator(model, data, mode="reverse")
    if comm is None:
        traced = hutchinson(full, 20)
        density = landscape.curvature.spectral_density(full, probes=3, steps=12)
    else:
        traced = trace_mpi(full, "hutchinson", 20, comm=comm)
        density = spectral_density_mpi(full, probes=3, steps=12, comm=comm)
    result["trace"], result["trace_products"] = traced.trace, traced.hvp_count
    result["density_nodes"] = density.nodes.tolist()
    directions = landscape.create_directions(model, seed=0)
    emap = eigenvalue_map(
        model,
        directions,
        data,
        GRID,
        GRID,
        out=out_dir / "eigmap.h5",
        mode="reverse",
        progress=False,
        comm=comm,
        log=None,
    )
    result["max_eig"], result["min_eig"] = emap.max_eig.tolist(), emap.min_eig.tolist()
    result["eigmap_ranks"] = emap.provenance["ranks"]
    task = {"topk": 2, "tol": 1e-6, "trace": "hutch++", "trace_products": 12}
    if comm is not None:
        result["task"] = run_hessian_mpi(inputs, task, comm=comm)
    return result


def main() -> None:
    from mpi4py import MPI

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    out_dir = Path(sys.argv[1])
    if sys.argv[2:] == ["fail"]:  # rank 1's forwards raise (LANDSCAPE_TEST_RAISE_AFTER)
        result = run_hessian_mpi(inputs, {"topk": 3, "tol": 1e-8}, comm=comm)
    else:
        result = compute(out_dir, comm)
    if comm.Get_rank() == 0:
        (out_dir / "mpi.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
