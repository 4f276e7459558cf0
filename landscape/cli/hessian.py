"""``hessian`` of :mod:`landscape.cli`: Hessian eigenvalues, trace and density to JSON.

``python -m landscape hessian --model M:F --model_file SD.pt --data M:F --topk 3 --trace
--output OUT.json`` builds one :class:`~landscape.curvature.HessianOperator` (the mean loss over
every sample the data factory returns, or ``--subset``; eval mode; float32 unless the model is
float64) and runs on it what the flags ask: the top-k eigenvalues (Lanczos or power, each with
relative Ritz residual <= ``--tol``), ``--smallest``, ``--trace`` (Hutch++ by default),
``--density`` (SLQ, with a PNG figure), ``--layers`` (per-block top eigenvalues) and
``--dir_out`` (the top / most negative eigenvectors as a direction file for ``surface
--dir_file``). The model/data flags and their building are the surface command's
(:func:`curvature_inputs`, shared with ``sharpness``).

MPI seam: :func:`operator_options` returns the operator's ``reducer`` / ``shard`` for this
process; serially nothing. ``--mpi`` is refused until the MPI layer provides them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from landscape.cli.inputs import CLIError, Context, build_data, build_model, subset_option
from landscape.cli.options import add_data_args, add_model_args, factory_type, positive_int
from landscape.cli.ranks import launched_ranks, run_device

#: Lanczos steps expected for k eigenvalues (for the time estimate only)
EXPECTED_STEPS = 12


def add_evaluation_args(p: argparse.ArgumentParser, products: bool) -> None:
    """Flags shared by ``hessian`` and ``sharpness``: loss callable, device, threads, MPI."""
    p.set_defaults(batch_size=None)
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--loss_fn",
        type=factory_type,
        default=None,
        metavar="MODULE:FUNCTION",
        help="a callable (outputs, targets) -> scalar mean loss, instead of --loss_name",
    )
    if products:
        g.add_argument(
            "--mode",
            choices=("auto", "reverse", "forward"),
            default="auto",
            help="Hessian-vector products: double backward, forward-over-reverse, "
            "or auto (the faster, timed on the first batch)",
        )
        g.add_argument("--ggn", action="store_true", help="Gauss-Newton matrix instead of H")
        g.add_argument(
            "--params",
            default="",
            help="comma-separated parameter or module names (default: all "
            "parameters requiring grad)",
        )
    g.add_argument("--seed", type=int, default=0, help="seed of the random vectors (0)")
    g.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    g.add_argument("--cuda", "-c", action="store_true", help="compute on the GPU")
    g.add_argument("--device", default=None, help="device (cpu, cuda, cuda:1, ...)")
    g.add_argument("--mpi", action="store_true", help="(not available yet for this command)")
    g.add_argument("--output", "-o", default="", help="JSON output file")


def add_hessian_parser(sub: Any) -> None:
    """The ``hessian`` subcommand and its flags."""
    h = sub.add_parser(
        "hessian",
        usage="%(prog)s --model MODULE:FACTORY --data MODULE:FACTORY [--topk K] [--trace] "
        "[--output OUT.json] [options]",
        help="Hessian eigenvalues, trace and spectral density of a model's loss, as JSON",
        description="Top eigenvalues (always), and with flags the smallest one, the trace, the "
        "spectral density, per-layer eigenvalues and an eigenvector direction file; the mean "
        "loss over all samples of --data (--subset restricts; --batch_size splits), eval mode.",
    )
    add_model_args(h, required=True)
    add_data_args(h)
    add_evaluation_args(h, products=True)
    g = h.add_argument_group("what to compute")
    g.add_argument("--topk", type=positive_int, default=1, help="top eigenvalues (1)")
    g.add_argument("--method", choices=("lanczos", "power"), default="lanczos")
    g.add_argument("--tol", type=float, default=1e-4, help="relative Ritz residual (1e-4)")
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
        help="top eigenvalues of each module's (or parameter's) block",
    )
    g.add_argument(
        "--dir_out",
        default="",
        help="direction file (HDF5): x = top eigenvector, y = most negative (with --smallest)",
    )


def operator_options(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The operator's ``reducer`` / ``shard`` on this process (the MPI seam; serial: none)."""
    if args.mpi or launched_ranks() > 1:
        raise CLIError(
            f"{args.command} under MPI is not available yet: run it on one process "
            "(without --mpi and mpiexec)"
        )
    return {}


def curvature_inputs(args: argparse.Namespace, ctx: Context) -> tuple[Any, Any, Any, Any, Any]:
    """``(model, data, subset, loss, device)`` from the surface command's model/data flags."""
    if args.data is None:
        raise CLIError(f"{args.command} needs --data MODULE:FACTORY (the evaluation data)")
    if args.test_data:
        ctx.log("note: --test_data is ignored; the curvature is of the --data loss")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = run_device(args, ctx)
    model = build_model(args, device)
    data = build_data(args.data, "--data", args.data_kwargs, 0)
    subset = subset_option(args, data)
    loss: Any = args.loss_name
    if args.loss_fn:
        from landscape.cli.inputs import resolve_factory

        loss = resolve_factory(args.loss_fn, "--loss_fn")
    return model, data, subset, loss, device


def _params(args: argparse.Namespace) -> Any:
    wanted = [n.strip() for n in args.params.split(",") if n.strip()]
    if not wanted:
        return None
    return lambda name, _: any(name == w or name.startswith(w + ".") for w in wanted)


def build_operator(args: argparse.Namespace, ctx: Context) -> Any:
    """The :class:`HessianOperator` the flags describe."""
    from landscape.curvature import HessianOperator

    model, data, subset, loss, _ = curvature_inputs(args, ctx)
    try:
        return HessianOperator(
            model,
            data,
            loss,
            params=_params(args),
            mode=args.mode,
            ggn=args.ggn,
            subset=subset,
            subset_seed=args.subset_seed,
            batch_size=args.batch_size,
            **operator_options(args, ctx),
        )
    except TypeError as err:
        raise CLIError(f"--data {args.data}: {err}") from None


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
    """``hessian``: the curvature quantities the flags ask for, written as JSON."""
    from landscape.curvature import eigenvalue_ratio, layer_eigenvalues
    from landscape.curvature.analysis import check_k

    started = time.perf_counter()
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
        out["layers"] = {name: _short(r) for name, r in layers.items()}
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
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2, default=str) + "\n")
    ctx.log(f"wrote {output} ({out['hvp_count']} products, {out['seconds']:.2f} s)")


def _short(result: Any) -> dict[str, Any]:
    return {
        "eigenvalues": list(result.eigenvalues),
        "residuals": list(result.residuals),
        "converged": result.converged,
        "hvp_count": result.hvp_count,
        "seconds": result.seconds,
    }


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
        eigen=_short(top),
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
        out["smallest"] = _short(bottom)
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
