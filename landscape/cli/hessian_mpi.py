"""``hessian --mpi`` of :mod:`landscape.cli`: the top eigenvalues, trace and density on the ranks
of ``mpiexec -n N python -m mpi4py -m landscape hessian ... --mpi``.

Every rank builds the model and data from the flags (they must agree across ranks: a model
with an unseeded initialisation gets rank 0's weights, data that differ are refused), then all
run :func:`landscape.mpi.hessian_task.run_hessian_mpi`: the eigenvalues by Lanczos on the
batches split over the ranks (``--batch_size``; without it, the largest batch giving at least
N batches), ``--trace`` and ``--density`` with the probes split. Rank 0 writes the JSON (the
keys of one process's, plus ``nproc``) and the density figure. A rank that fails ends the job
(:func:`landscape.mpi.abort`, through ``run_hessian_mpi`` or :func:`landscape.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from landscape.cli.curvature import curvature_inputs, params_option
from landscape.cli.inputs import CLIError, Context, data_flag, data_source
from landscape.cli.ranks import agree_across_ranks
from landscape.io.atomic import atomic_write


def _selected_size(model: Any, params: Any) -> int:
    """The entries of the parameters the operator will select (its ``size``)."""
    from landscape.curvature.products import select_parameters

    every = dict(model.named_parameters())
    return sum(every[name].numel() for name in select_parameters(model, params))


def split_batch_size(args: argparse.Namespace, data: Any, subset: Any, ranks: int) -> int | None:
    """``--batch_size``, or under several ranks the largest batch giving at least one batch per
    rank; refuses a ``--batch_size`` leaving a rank without a batch."""
    if ranks == 1:
        return args.batch_size
    from landscape.evaluate import as_tensors

    try:
        inputs, _, _ = as_tensors(data, subset=subset, subset_seed=args.subset_seed)
    except TypeError as err:
        raise CLIError(f"--{data_flag(args)} {data_source(args)[0]}: {err}") from None
    samples = int(inputs.shape[0])
    del inputs
    if samples < ranks:
        raise CLIError(f"{samples} samples cannot be split over {ranks} ranks: use fewer ranks")
    if args.batch_size is None:
        return samples // ranks
    batches = math.ceil(samples / args.batch_size)
    if batches < ranks:
        raise CLIError(
            f"--batch_size {args.batch_size} cuts the {samples} samples into {batches} "
            f"batch{'es' if batches > 1 else ''}, fewer than the {ranks} ranks: give "
            f"--batch_size {samples // ranks} or less (or leave it out)"
        )
    return args.batch_size


def run_hessian_ranks(args: argparse.Namespace, ctx: Context, started: float) -> None:
    """``hessian --mpi``: the quantities of the flags over the ranks; rank 0 writes."""
    from landscape.curvature.analysis import check_k
    from landscape.mpi.hessian_task import run_hessian_mpi

    output = Path(args.output or "hessian.json")
    model, data, subset, loss, _ = curvature_inputs(args, ctx)
    params = params_option(args)
    size = _selected_size(model, params)
    check_k(SimpleNamespace(size=size), args.topk, "--topk")
    if ctx.size > 1:
        agree_across_ranks(ctx, model, args, data, None, subset)
    batch_size = split_batch_size(args, data, subset, ctx.size)
    if args.batch_size is None and batch_size is not None:
        ctx.log(f"hessian --mpi: --batch_size {batch_size} (at least one batch per rank)")
    inputs = {
        "model": model,
        "data": data,
        "loss": loss,
        "params": params,
        "subset": subset,
        "subset_seed": args.subset_seed,
        "batch_size": batch_size,
        "mode": args.mode,
        "ggn": args.ggn,
    }
    products = args.trace_products
    if args.trace and args.trace_method == "xtrace":
        products = min(products + products % 2, 2 * size)
    task = {
        "topk": args.topk,
        "tol": args.tol,
        "max_iter": args.max_iter,
        "seed": args.seed,
        "smallest": args.smallest,
        "trace": args.trace_method if args.trace else None,
        "trace_products": products,
        "density": args.density,
        "density_probes": args.density_probes,
        "density_steps": args.density_steps,
    }
    asked = ["eigenvalues", *(n for n in ("smallest", "trace", "density") if getattr(args, n))]
    ctx.log(
        f"hessian: {size} parameters on {ctx.size} rank{'s' if ctx.size > 1 else ''} "
        f"({', '.join(asked)}); batches split for the eigenvalues, probes for trace/density"
    )
    result = run_hessian_mpi(lambda: inputs, task, comm=ctx.comm)
    if result is None:  # not rank 0
        return
    if batch_size != args.batch_size:  # the digest one process reports without --batch_size
        result["data_sha256"] = _whole_data_sha256(args, inputs, result["provenance"]["dtype"])
    _write(args, ctx, result, output, started)


def _whole_data_sha256(args: argparse.Namespace, inputs: dict, dtype: str) -> str:
    """The data digest one process reports (all samples, read as one process reads them)."""
    import torch

    from landscape.curvature.batches import OperatorBatches

    whole = OperatorBatches.load(
        inputs["data"],
        loss=inputs["loss"],
        device=torch.device("cpu"),
        dtype=getattr(torch, dtype),
        subset=inputs["subset"],
        subset_seed=args.subset_seed,
    )
    return whole.sha256


def _write(
    args: argparse.Namespace, ctx: Context, result: dict, output: Path, started: float
) -> None:
    """Rank 0: the JSON in one process's layout (plus ``nproc``) and the density figure."""
    eigenvalues = result["eigenvalues"]
    out: dict[str, Any] = {
        key: result[key] for key in ("eigenvalues", "residuals", "converged", "eigen", "history")
    }
    out["lambda_max"] = eigenvalues[0]
    out["lambda_ratio"] = eigenvalues[0] / eigenvalues[-1] if eigenvalues[-1] else math.nan
    shown = ", ".join(f"{v:.6g}" for v in eigenvalues)
    ctx.log(f"eigenvalues: {shown} ({result['eigen']['hvp_count']} products)")
    if not result["converged"]:
        ctx.log(f"warning: eigenvalues not converged to --tol {args.tol}; raise --max_iter")
    if args.smallest:
        out["smallest"] = result["smallest"]
        ctx.log(f"smallest eigenvalue: {result['smallest_eigenvalue']:.6g}")
    if args.trace:
        for key in ("trace", "trace_stderr", "trace_method", "trace_hvp_count"):
            out[key] = result[key]
        ctx.log(f"trace: {result['trace']:.6g} +- {result['trace_stderr']:.2g}")
    if args.density:
        import numpy as np

        from landscape.curvature import DensityResult
        from landscape.plot import save_spectrum

        density = DensityResult(
            **{k: np.asarray(v) if isinstance(v, list) else v for k, v in result["density"].items()}
        )
        figure = save_spectrum(output.with_name(output.stem + "_density.png"), density, log=True)
        out["density"] = {**result["density"], "figure": str(figure)}
        ctx.log(f"density: {figure}")
    for key in ("hvp_count", "tol", "loss", "samples", "data_sha256", "model_sha256", "size"):
        out[key] = result[key]
    out.update(
        seconds=time.perf_counter() - started,
        command=" ".join(["landscape", *args.argv]),
        provenance=result["provenance"],
        nproc=result["nproc"],
    )
    atomic_write(output, json.dumps(out, indent=2, default=str) + "\n")
    ctx.log(
        f"wrote {output} ({out['hvp_count']} products, {out['seconds']:.2f} s on "
        f"{out['nproc']} ranks; {result['seconds']:.2f} s after the inputs were built)"
    )
