"""``hessian`` of :mod:`landscape.cli`: Hessian eigenvalues, trace and density to JSON.

``python -m landscape hessian --model M:F --model_file SD.pt --data M:F --topk 3 --trace
--output OUT.json`` builds one :class:`~landscape.curvature.HessianOperator` (the mean loss over
every sample the data factory returns, or ``--subset``; eval mode; float32 unless the model is
float64) and runs on it what the flags ask: the top-k eigenvalues (Lanczos or power, each with
relative Ritz residual <= ``--tol``), ``--smallest``, ``--trace`` (Hutch++ by default),
``--density`` (SLQ, with a PNG figure), ``--layers`` (per-block top eigenvalues) and
``--dir_out`` (the top / most negative eigenvectors as a direction file for ``surface
--dir_file``). The model/data flags and their building are the surface command's
(:func:`~landscape.cli.curvature.curvature_inputs`, shared with ``sharpness``).

``--eigmap`` computes instead the max/min eigenvalue map over a grid of ``--x`` (``--y``) with
the surface command's direction flags (:mod:`landscape.cli.eigmap`). ``--mpi`` (under
``mpiexec``) runs the work on the ranks (:mod:`landscape.cli.hessian_mpi`, or the map's
``comm``); the flags that do not run under MPI are refused by :func:`check_flags`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from landscape.cli.curvature import (
    add_evaluation_args,
    curvature_inputs,
    operator_options,
    params_option,
)
from landscape.cli.inputs import CLIError, Context, data_flag, data_source
from landscape.cli.options import (
    add_data_args,
    add_direction_args,
    add_grid_args,
    add_model_args,
    positive_int,
)
from landscape.cli.ranks import join_mpi
from landscape.io.atomic import atomic_write

#: Lanczos steps expected for k eigenvalues (for the time estimate only)
EXPECTED_STEPS = 12


def add_hessian_parser(sub: Any) -> None:
    """The ``hessian`` subcommand and its flags."""
    h = sub.add_parser(
        "hessian",
        usage="%(prog)s --model MODULE:FACTORY --data MODULE:FACTORY [--topk K] [--trace] "
        "[--eigmap --x MIN:MAX:NUM [--y MIN:MAX:NUM]] [--mpi] [--output OUT.json] [options]",
        help="Hessian eigenvalues, trace and spectral density of a model's loss, as JSON; "
        "eigenvalue maps (--eigmap); MPI with --mpi",
        description="Top eigenvalues (always), and with flags the smallest one, the trace, the "
        "spectral density, per-layer eigenvalues and an eigenvector direction file; the mean "
        "loss over all samples of --data (--subset restricts; --batch_size splits), eval mode. "
        "--eigmap computes instead the max/min eigenvalue map over a grid (the surface "
        "command's direction and grid flags). Under mpiexec add --mpi.",
    )
    add_model_args(h, required=True)
    add_data_args(h, batch_size=None)
    add_evaluation_args(h, products=True)
    g = h.add_argument_group("what to compute")
    g.add_argument("--topk", type=positive_int, default=1, help="top eigenvalues (1)")
    g.add_argument(
        "--method",
        choices=("lanczos", "power"),
        default="lanczos",
        help="lanczos (default; the one under --mpi) or power",
    )
    g.add_argument(
        "--tol",
        type=float,
        default=None,
        help="relative Ritz residual (1e-4; 1e-3 for --eigmap)",
    )
    g.add_argument("--max_iter", type=positive_int, default=None, help="iteration cap")
    g.add_argument("--smallest", action="store_true", help="the smallest eigenvalue too")
    g.add_argument("--trace", action="store_true", help="the trace (Hutch++)")
    g.add_argument("--trace_method", choices=("hutch++", "hutchinson", "xtrace"), default="hutch++")
    g.add_argument("--trace_products", type=positive_int, default=99, help="products (99)")
    g.add_argument("--density", action="store_true", help="SLQ density (+ a PNG figure)")
    g.add_argument("--density_probes", type=positive_int, default=4, help="SLQ probes (4)")
    g.add_argument("--density_steps", type=positive_int, default=64, help="steps/probe (64)")
    g.add_argument(
        "--layers",
        nargs="?",
        const="module",
        default=None,
        choices=("module", "parameter"),
        help="top eigenvalues of each module's (or parameter's) block (one process only)",
    )
    g.add_argument(
        "--dir_out",
        default="",
        help="direction file (HDF5): x = top eigenvector, y = most negative (with --smallest; "
        "one process only)",
    )
    m = h.add_argument_group(
        "eigenvalue map (--eigmap)",
        "max_eig / min_eig of the Hessian at every point theta + a dx (+ b dy) of the grid, "
        "into an HDF5 file in the surfaces' layout (loss-landscape's plot_hessian_eigen.py), "
        "resumable, with <surf_file stem>_eig_ratio.png and _max_eig.png next to it; the "
        "directions come from --dir_file or are created by the surface command's direction "
        "flags (--seed, --xnorm, ...); --mpi splits the points over the ranks",
    )
    m.add_argument("--eigmap", action="store_true", help="compute the eigenvalue map")
    add_grid_args(m, x_default=None, x_help="x range of the map (needed with --eigmap)")
    m.add_argument(
        "--surf_file",
        default="",
        help="HDF5 map (default: named after the direction file and the grid, ending _eigmap.h5)",
    )
    m.add_argument(
        "--bn_mode",
        choices=("eval", "recompute"),
        default="eval",
        help="BatchNorm at each point: frozen statistics (eval) or re-estimated",
    )
    m.add_argument(
        "--overwrite",
        action="store_true",
        help="start the map file anew (and replace a stale default direction file)",
    )
    m.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_direction_args(h, seed=False)


#: flag -> what to do instead, for the flags that do not run under --mpi
NOT_UNDER_MPI = {
    "--layers": "run `hessian --layers` on one process (without --mpi and mpiexec)",
    "--dir_out": "run `hessian --dir_out` on one process (without --mpi and mpiexec)",
    "--method power": "drop --method power (under --mpi the eigenvalues are Lanczos's) or run "
    "on one process",
}
#: centre-only flags that --eigmap refuses (the map is its own run)
NOT_WITH_EIGMAP = ("--smallest", "--trace", "--density", "--layers", "--dir_out", "--topk")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flag combinations that would be ignored (before any MPI or model work);
    resolve ``--tol``'s default (1e-4, or 1e-3 for ``--eigmap``)."""
    given = {
        "--smallest": args.smallest,
        "--trace": args.trace,
        "--density": args.density,
        "--layers": args.layers is not None,
        "--dir_out": bool(args.dir_out),
        "--topk": args.topk != 1,
        "--method power": args.method == "power",
    }
    if args.mpi:
        for flag, alternative in NOT_UNDER_MPI.items():
            if given[flag]:
                raise CLIError(f"{flag} does not run under --mpi: {alternative}")
    if args.eigmap:
        refused = [flag for flag in (*NOT_WITH_EIGMAP, "--method power") if given[flag]]
        if refused:
            raise CLIError(
                f"--eigmap computes only the map: run {', '.join(refused)} in a separate "
                "`hessian` command (without --eigmap)"
            )
        if args.x is None:
            raise CLIError(
                "--eigmap needs its grid: --x MIN:MAX:NUM (and --y MIN:MAX:NUM for a 2D map), "
                "e.g. --x=-1:1:11"
            )
    else:
        grid = {
            "--x": args.x is not None,
            "--y": args.y is not None,
            "--dir_file": bool(args.dir_file),
            "--surf_file": bool(args.surf_file),
            "--bn_mode recompute": args.bn_mode != "eval",
        }
        used = [flag for flag, on in grid.items() if on]
        if used:
            raise CLIError(
                f"{', '.join(used)} belong to the eigenvalue map: add --eigmap (the "
                "eigenvector direction file of `hessian` is --dir_out)"
            )
    if args.tol is None:
        args.tol = 1e-3 if args.eigmap else 1e-4


def build_operator(args: argparse.Namespace, ctx: Context) -> Any:
    """The :class:`HessianOperator` the flags describe."""
    from landscape.curvature import HessianOperator

    model, data, subset, loss, _ = curvature_inputs(args, ctx)
    try:
        return HessianOperator(
            model,
            data,
            loss,
            params=params_option(args),
            mode=args.mode,
            ggn=args.ggn,
            subset=subset,
            subset_seed=args.subset_seed,
            batch_size=args.batch_size,
            **operator_options(args, ctx),
        )
    except TypeError as err:
        raise CLIError(f"--{data_flag(args)} {data_source(args)[0]}: {err}") from None


def _estimate(args: argparse.Namespace, op: Any) -> tuple[int, float]:
    """Products the flags will use (roughly) and the seconds of one product."""
    import torch

    started = time.perf_counter()
    op.matvec(torch.ones(op.size, dtype=op.dtype, device=op.device))
    per_product = time.perf_counter() - started
    count = min(op.size, EXPECTED_STEPS + 4 * args.topk)
    if args.method == "power":
        count = 30 * args.topk
    count += min(op.size, 60) if args.smallest else 0
    count += args.trace_products if args.trace else 0
    count += args.density_probes * min(args.density_steps, op.size) if args.density else 0
    if args.layers:
        count += len(op.blocks(args.layers)) * (EXPECTED_STEPS + 4 * args.topk)
    return count, per_product


def cmd_hessian(args: argparse.Namespace, ctx: Context) -> None:
    """``hessian``: the curvature quantities the flags ask for, written as JSON; or the
    eigenvalue map (``--eigmap``); on one process or the ranks of ``mpiexec`` (``--mpi``)."""
    started = time.perf_counter()
    check_flags(args)
    join_mpi(args, ctx, "compute the same Hessian quantities into the same files")
    if args.eigmap:
        from landscape.cli.eigmap import run_eigmap

        run_eigmap(args, ctx, started)
    elif args.mpi:
        from landscape.cli.hessian_mpi import run_hessian_ranks

        run_hessian_ranks(args, ctx, started)
    else:
        run_hessian(args, ctx, started)


def run_hessian(args: argparse.Namespace, ctx: Context, started: float) -> None:
    """The quantities on one process, from one :class:`HessianOperator`."""
    from landscape.curvature import eigenvalue_ratio, layer_eigenvalues
    from landscape.curvature.analysis import check_k

    output = Path(args.output or "hessian.json")
    op = build_operator(args, ctx)
    check_k(op, args.topk, "--topk")
    facts = op.provenance()
    count, per_product = _estimate(args, op)
    ctx.log(
        f"hessian: {op.size} parameters, {facts['samples']} samples, {op.dtype}, mode "
        f"{op.mode}; one product {per_product:.3g} s, estimated ~{count} products, "
        f"~{count * per_product:.3g} s"
    )
    out: dict[str, Any] = {}
    block_products = 0
    top, bottom = _eigen(args, op, out, ctx)
    out["lambda_max"] = top.eigenvalues[0]
    out["lambda_ratio"] = eigenvalue_ratio(top)
    if args.trace:
        _trace(args, op, out, ctx)
    if args.density:
        _density(args, op, out, output, ctx)
    if args.layers:
        layers = layer_eigenvalues(op, by=args.layers, k=args.topk, tol=args.tol, seed=args.seed)
        out["layers"] = {name: r.summary() for name, r in layers.items()}
        block_products = sum(r.hvp_count for r in layers.values())
        sharpest = max(layers, key=lambda name: layers[name].eigenvalues[0])
        ctx.log(f"layers: {len(layers)} blocks, the sharpest {sharpest!r}")
    if args.dir_out:
        from landscape.curvature import eigenvector_directions
        from landscape.directions import save_directions

        path = save_directions(args.dir_out, eigenvector_directions(op, top, bottom=bottom))
        out["dir_out"] = str(path)
        ctx.log(f"directions: {path}")
    out.update(
        hvp_count=op.hvp_count + block_products,
        seconds=time.perf_counter() - started,
        tol=args.tol,
        loss=op.loss(),
        samples=facts["samples"],
        data_sha256=facts["data_sha256"],
        model_sha256=facts["model_sha256"],
        size=op.size,
        command=" ".join(["landscape", *args.argv]),
        provenance=op.provenance(),
        nproc=1,
    )
    atomic_write(output, json.dumps(out, indent=2, default=str) + "\n")
    ctx.log(f"wrote {output} ({out['hvp_count']} products, {out['seconds']:.2f} s)")


def _eigen(args: argparse.Namespace, op: Any, out: dict, ctx: Context) -> tuple[Any, Any]:
    from landscape.curvature import smallest_eigenvalue, top_eigenvalues

    vectors = bool(args.dir_out)
    top = top_eigenvalues(
        op,
        args.topk,
        method=args.method,
        tol=args.tol,
        max_iter=args.max_iter,
        seed=args.seed,
        return_vectors=vectors,
    )
    out.update(
        eigenvalues=list(top.eigenvalues),
        residuals=list(top.residuals),
        converged=top.converged,
        eigen=top.summary(),
        history=[list(h) for h in top.history],
    )
    shown = ", ".join(f"{v:.6g}" for v in top.eigenvalues)
    ctx.log(f"eigenvalues: {shown} ({top.hvp_count} products, {top.seconds:.2f} s)")
    if not top.converged:
        sys.stderr.write(
            f"warning: eigenvalues not converged to --tol {args.tol} (residuals "
            f"{[f'{r:.2g}' for r in top.residuals]}); raise --max_iter\n"
        )
    bottom = None
    if args.smallest:
        bottom = smallest_eigenvalue(
            op, tol=args.tol, max_iter=args.max_iter, seed=args.seed, return_vectors=vectors
        )
        out["smallest"] = bottom.summary()
        ctx.log(f"smallest eigenvalue: {bottom.eigenvalues[0]:.6g} ({bottom.hvp_count} products)")
    return top, bottom


def _trace(args: argparse.Namespace, op: Any, out: dict, ctx: Context) -> None:
    from landscape.curvature.trace import trace

    products = args.trace_products
    if args.trace_method == "xtrace":
        products = min(products + products % 2, 2 * op.size)
    result = trace(op, args.trace_method, products, seed=args.seed)
    out.update(
        trace=result.trace,
        trace_stderr=result.stderr,
        trace_method=result.method,
        trace_hvp_count=result.hvp_count,
    )
    ctx.log(
        f"trace: {result.trace:.6g} +- {result.stderr:.2g} ({result.method}, "
        f"{result.hvp_count} products)"
    )


def _density(args: argparse.Namespace, op: Any, out: dict, output: Path, ctx: Context) -> None:
    from landscape.curvature import spectral_density
    from landscape.plot import save_spectrum

    result = spectral_density(
        op, probes=args.density_probes, steps=args.density_steps, seed=args.seed
    )
    figure = save_spectrum(output.with_name(output.stem + "_density.png"), result, log=True)
    out["density"] = {**result.to_dict(), "figure": str(figure)}
    ctx.log(f"density: {figure} ({result.hvp_count} products)")
