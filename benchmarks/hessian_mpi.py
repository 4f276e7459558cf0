"""The MPI part of ``benchmarks/hessian.py``: lambda_1 over several batches with
``HessianOperator(shard=(rank, world), reducer=<mpi4py Allreduce sum>)`` on 1 and 2 ranks under
the venv's mpiexec. Ranks run this file (``--mpi-worker``)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import format_markdown_table
from hessian_tools import cifar_batches, resnet20

#: the MPI runs' Lanczos residual tolerance (eigenvalue error ~ tol^2 lambda / gap: ~1e-4 here)
MPI_TOL = 1e-2


def mpi_worker(args) -> int:
    from mpi4py import MPI

    from landscape.curvature import HessianOperator, top_eigenvalues

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()

    def reducer(flat: torch.Tensor) -> torch.Tensor:
        buffer = np.ascontiguousarray(flat.detach().cpu().numpy())
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        return torch.from_numpy(buffer)

    model = resnet20()
    batches = cifar_batches(args.mpi_batches, args.batch)
    comm.Barrier()
    tic = time.perf_counter()
    op = HessianOperator(
        model, batches, reducer=reducer, shard=(rank, world), keep_graph_batches=len(batches)
    )
    result = top_eigenvalues(op, 1, tol=MPI_TOL, seed=0)
    comm.Barrier()
    elapsed = time.perf_counter() - tic
    if rank == 0:
        record = {"seconds": elapsed, "value": result.eigenvalues[0], "products": result.hvp_count}
        Path(args.mpi_json).write_text(json.dumps(record))
    return 0


def mpi_section(args, repeats, emit, log) -> list[str]:
    from landscape.mpi.launch import find_mpiexec

    mpiexec, why = find_mpiexec()
    if mpiexec is None:
        emit(f"## MPI\n\nskipped: {why}\n")
        return [f"MPI not run ({why})"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for ranks in (1, 2) if r % 2 == 0 else (2, 1):
                out = Path(tmp) / f"r{ranks}_{r}.json"
                command = [
                    str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py",
                    str(Path(__file__).resolve()), "--mpi-worker", "--mpi-json", str(out),
                    "--mpi-batches", str(args.mpi_batches), "--batch", str(args.batch),
                ]  # fmt: skip
                subprocess.run(command, check=True, env=env, timeout=1800)
                runs[ranks].append(json.loads(out.read_text()))
                seconds = runs[ranks][-1]["seconds"]
                log(f"MPI {ranks} rank(s) run {r + 1}/{repeats}: {seconds:.1f} s")
    one = statistics.median(run["seconds"] for run in runs[1])
    two = statistics.median(run["seconds"] for run in runs[2])
    speedup = one / two
    values = [run["value"] for run in runs[1] + runs[2]]
    spread = (max(values) - min(values)) / abs(values[0])
    emit(
        f"## MPI: lambda_1 over {args.mpi_batches} batches of {args.batch} (ResNet-20), Lanczos "
        f"residual tol {MPI_TOL:g}, one thread per rank, {repeats} run(s) each alternating; median"
    )
    emit()
    rows = [
        ["1 rank", f"{one:.1f} s", "1.00", str(runs[1][0]["products"]), "-"],
        ["2 ranks", f"{two:.1f} s", f"{speedup:.2f}", str(runs[2][0]["products"]), ">= 1.60"],
    ]
    emit(format_markdown_table(["ranks", "wall (median)", "speed-up", "products", "target"], rows))
    emit()
    emit(
        f"Runs (s): 1 rank {[round(r['seconds'], 1) for r in runs[1]]}, 2 ranks "
        f"{[round(r['seconds'], 1) for r in runs[2]]}; lambda_1 {values[0]:.4f}, relative spread "
        f"over all runs {spread:.1e}. HessianOperator(shard=(rank, world), reducer=mpi4py "
        f"Allreduce sum, keep_graph_batches={args.mpi_batches}); wall time from the operator's "
        f"construction to the result. Load average (1 min) {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs (other processes share them)."
    )
    emit()
    return [] if speedup >= 1.6 else [f"MPI 2 ranks speed-up {speedup:.2f} < 1.60"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mpi-worker", action="store_true")
    parser.add_argument("--mpi-json", required=True)
    parser.add_argument("--mpi-batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    raise SystemExit(mpi_worker(parser.parse_args()))
