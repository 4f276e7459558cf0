"""What ``hessian`` and ``sharpness`` of :mod:`landscape.cli` share: the evaluation flags, the
model / data / loss built from the surface command's flags, the parameter selection, and the
seam of the serial operator (:func:`operator_options`).

``hessian --mpi`` runs through :mod:`landscape.cli.hessian_mpi` (top eigenvalues, trace,
density) and :mod:`landscape.cli.eigmap` (the eigenvalue map); ``sharpness`` runs on one
process only and refuses ``--mpi`` and an ``mpiexec`` launch here.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from landscape.cli.inputs import (
    CLIError,
    Context,
    build_data,
    build_model,
    checkpoint_config,
    data_flag,
    data_source,
    subset_option,
)
from landscape.cli.options import factory_type, positive_int
from landscape.cli.ranks import launched_ranks, run_device


def add_evaluation_args(p: argparse.ArgumentParser, products: bool) -> None:
    """Flags shared by ``hessian`` and ``sharpness``: loss callable, device, threads, MPI
    (``products``: the Hessian-vector product flags of ``hessian`` and its ``--mpi`` help)."""
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
            "or auto (the faster, timed on the first batch; under --mpi with split batches: "
            "reverse)",
        )
        g.add_argument("--ggn", action="store_true", help="Gauss-Newton matrix instead of H")
        g.add_argument(
            "--params",
            default="",
            help="comma-separated parameter or module names (default: all "
            "parameters requiring grad)",
        )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random vectors (0)"
        + ("; with --eigmap also of the random directions, as for surface" if products else ""),
    )
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads per process (default: torch's; 1 per rank under --mpi)",
    )
    g.add_argument("--cuda", "-c", action="store_true", help="compute on the GPU (one per rank)")
    g.add_argument("--device", default=None, help="device (cpu, cuda, cuda:1, ...)")
    if products:
        help_mpi = (
            "run on the ranks of mpiexec -n N python -m mpi4py -m landscape hessian ... --mpi: "
            "batches split for the eigenvalues (--batch_size, default: N batches), probes "
            "split for --trace and --density, grid points split for --eigmap; rank 0 writes"
        )
    else:
        help_mpi = (
            "run on the ranks of mpiexec -n N python -m mpi4py -m landscape sharpness ... "
            "--mpi: the (measure, radius) pairs split over the ranks; rank 0 writes"
        )
    g.add_argument("--mpi", "-m", action="store_true", help=help_mpi)
    g.add_argument("--output", "-o", default="", help="JSON output file")


def operator_options(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The serial operator's extra keywords (none); refuses ``--mpi`` and an ``mpiexec`` launch.
    ``hessian --mpi`` never reaches it (it runs through
    :func:`landscape.mpi.hessian_task.run_hessian_mpi` or the eigenvalue map's ``comm``)."""
    if args.mpi or launched_ranks() > 1:
        raise CLIError(
            f"{args.command} does not run under MPI: run it on one process (without --mpi and "
            "mpiexec); `hessian --mpi` splits Hessian work over ranks"
        )
    return {}


def curvature_inputs(args: argparse.Namespace, ctx: Context) -> tuple[Any, Any, Any, Any, Any]:
    """``(model, data, subset, loss, device)`` from the surface command's model/data flags; a
    model that is neither all float64 nor all float32 is cast to float32."""
    data_spec, dataset_name = data_source(args)
    if data_spec is None:
        raise CLIError(
            f"{args.command} needs --data MODULE:FACTORY or --dataset NAME (the evaluation data)"
        )
    if args.test_data:
        ctx.log("note: --test_data is ignored; the curvature is of the --data loss")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif ctx.size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    device = run_device(args, ctx)
    model = build_model(args, device, ctx.names)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes and dtypes != {torch.float64} and dtypes != {torch.float32}:
        # The protocol: float32 unless the model is float64 (half-precision products are too
        # coarse for a relative Ritz residual of 1e-4); floating inputs follow the model.
        shown = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        ctx.log(f"note: the model's parameters are {shown}: computing in float32")
        model = model.float()
    named = {"names": ctx.names, "config": checkpoint_config(args), "dataset_name": dataset_name}
    data = build_data(data_spec, f"--{data_flag(args)}", args.data_kwargs, 0, **named)
    subset = subset_option(args, data)
    loss: Any = args.loss_name
    if args.loss_fn:
        from landscape.cli.inputs import resolve_factory

        loss = resolve_factory(args.loss_fn, "--loss_fn")
    return model, data, subset, loss, device


def params_option(args: argparse.Namespace) -> Any:
    """``--params`` as the operator's predicate (``None``: every parameter requiring grad)."""
    wanted = [n.strip() for n in args.params.split(",") if n.strip()]
    if not wanted:
        return None
    return lambda name, _: any(name == w or name.startswith(w + ".") for w in wanted)
