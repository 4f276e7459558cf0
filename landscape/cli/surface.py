"""``surface`` of :mod:`landscape.cli`: compute (or resume) a loss surface into an HDF5 file.

One process, or the ranks of ``mpiexec`` with ``--mpi`` (every rank checks that it holds the
same model and data; rank 0 creates the directions and writes the file); the resolved command
and one entry per run go to ``<surf_file>.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from landscape.cli.budget import check_grid_size
from landscape.cli.directions import (
    FLAG_DEFAULTS,
    grid_files,
    resolved_direction_flags,
    shared_directions,
)
from landscape.cli.figures import draw, read_projection
from landscape.cli.inputs import (
    CLIError,
    Context,
    build_data,
    build_model,
    checkpoint_config,
    data_flag,
    data_source,
    linspace,
    subset_option,
)
from landscape.cli.ranks import agree_across_ranks, join_mpi, run_device
from landscape.cli.sidecar import read_runs, write_sidecar

# --------------------------------------------------------------------------------------------
# surface
# --------------------------------------------------------------------------------------------


def cmd_surface(args: argparse.Namespace, ctx: Context) -> None:
    """``surface``: compute (or resume) a loss surface into ``--surf_file``."""
    join_mpi(args, ctx, "compute the whole surface into the same file")
    data_spec, dataset_name = data_source(args)
    if data_spec is None:
        raise CLIError(
            "surface needs --data MODULE:FACTORY or --dataset NAME (the evaluation data)"
        )
    if args.trainloader or args.testloader:
        raise CLIError(
            "--trainloader/--testloader (pickled DataLoaders) are not supported: give --data "
            "and --test_data MODULE:FACTORY"
        )
    ignored = ("dataset", "dataset_name", "datapath") if args.data else ("datapath",)
    for legacy in ignored:
        if getattr(args, legacy):
            source = f"--{data_flag(args)} {data_spec}"
            ctx.log(f"note: --{legacy} is ignored; the data come from {source}")
    if args.ngpu > 1:
        ctx.log("note: --ngpu is ignored; run one MPI rank per GPU with --mpi --cuda")

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif ctx.size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)

    ndim = 1 if args.y is None else 2
    sets = 1 if args.test_data is None else 2  # 4 metrics each: two statistics, their errors
    output = Path(args.surf_file) if args.surf_file else Path.cwd() / "surface.h5"
    check_grid_size(args.x, args.y, metrics=4 * sets, output=output)
    if (args.plot or args.show) and args.y is not None and min(args.x[2], args.y[2]) < 2:
        raise CLIError(
            f"--plot/--show draw contours, which need at least 2 points along x and y (NUM "
            f"{args.x[2]} and {args.y[2]}): give NUM >= 2, or drop --plot/--show"
        )
    x = linspace(args.x)
    y = None if args.y is None else linspace(args.y)
    dir_file, surf_file, explicit_dir = grid_files(args, ndim)
    if ctx.rank == 0:
        read_runs(surf_file, replace_bad=args.overwrite)  # refuse a broken record up front

    device = run_device(args, ctx)
    model = build_model(args, device, ctx.names)
    config = checkpoint_config(args)
    named = {"names": ctx.names, "config": config}
    train = build_data(
        data_spec, f"--{data_flag(args)}", args.data_kwargs, 0, dataset_name=dataset_name, **named
    )
    test = build_data(
        args.test_data, "--test_data", args.data_kwargs, 1, dataset_name=dataset_name, **named
    )
    subset = subset_option(args, train)

    if ctx.comm is not None and ctx.size > 1:
        agree_across_ranks(ctx, model, args, train, test, subset)

    directions = shared_directions(args, model, ndim, dir_file, explicit_dir, ctx)

    from landscape.evaluate import SurfaceEvaluator

    try:
        evaluator = SurfaceEvaluator(
            model,
            directions,
            train,
            loss=args.loss_name,
            test_data=test,
            bn_mode=args.bn_mode,
            batch_size=args.batch_size,
            subset=subset,
            subset_seed=args.subset_seed,
            test_subset=args.test_subset,
            mode=args.mode,
            device=device,
        )
    except (ValueError, TypeError) as err:
        raise CLIError(
            f"cannot evaluate --model {args.model} on --{data_flag(args)} {data_spec}: {err}"
        ) from None

    writer = None
    started = time.perf_counter()
    try:
        if ctx.rank == 0:
            if not args.no_check_center:
                try:
                    centre = evaluator.check_center()
                except RuntimeError as err:
                    raise CLIError(f"{err} (--no_check_center skips this check)") from None
                shown = ", ".join(
                    f"{k}={v:.6g}" for k, v in centre.items() if not k.endswith("_se")
                )
                ctx.log(f"centre: {shown}")
            # JSON round trip: plain str/int/float/list/dict (e.g. torch.__version__ is a str
            # subclass that h5py cannot store as an attribute).
            provenance = {
                **json.loads(json.dumps(evaluator.provenance, default=str)),
                "dir_file": str(dir_file),
                "command": " ".join(["landscape", *args.argv]),
                "nproc": ctx.size,
                "chunk_size": args.chunk_size,
                "model_factory": args.model,
                "model_kwargs": args.model_kwargs,
                "data_factory": data_spec,
                # only when given: files written before the flag existed still resume
                **({"dataset_name": dataset_name} if dataset_name else {}),
                "test_data_factory": args.test_data,
                "data_kwargs": args.data_kwargs,
                "flag_defaults": FLAG_DEFAULTS,
            }
            from landscape.io import SurfaceWriter

            writer = SurfaceWriter.open(
                surf_file,
                x=x,
                y=y,
                metric_names=evaluator.metric_names,
                provenance=provenance,
                overwrite=args.overwrite,
                sample_indices=evaluator.sample_indices,
            )
            already = int(writer.done.sum())
            if writer.stamped:
                ctx.log(
                    f"note: {surf_file} was written before data digests were recorded: "
                    f"stamped with this run's ({', '.join(writer.stamped)}); a later resume "
                    "must evaluate the same data"
                )
            ctx.log(
                f"surface: {surf_file} ({'x'.join(str(n) for n in reversed(writer.shape))} "
                f"points, {already} already done, {writer.size - already} to compute on "
                f"{ctx.size} rank{'s' if ctx.size > 1 else ''}; mode {evaluator.mode})"
            )
        from landscape.compute import compute_surface, format_rank_report

        surface = compute_surface(
            evaluator,
            writer,
            x=x,
            y=y,
            comm=ctx.comm,
            chunk_size=args.chunk_size,
            progress=not args.no_progress,
        )
    finally:
        if writer is not None:
            writer.close()
    if ctx.rank != 0:
        return

    elapsed = time.perf_counter() - started
    rank_stats = surface.provenance.get("ranks", [])
    computed = sum(int(r["points"]) for r in rank_stats)
    rate = computed / elapsed if elapsed > 0 else float("nan")
    ctx.log(
        f"computed {computed} points in {elapsed:.2f} s ({rate:.1f} points/s) on {ctx.size} "
        f"rank{'s' if ctx.size > 1 else ''}"
    )
    for line in format_rank_report(rank_stats):
        ctx.log(f"  {line}")
    config = {
        key: value
        for key, value in vars(args).items()
        if key not in ("argv",) and not callable(value)
    }
    config.update(
        {
            "surf_file": str(surf_file),
            "dir_file": str(dir_file),
            "resolved_directions": resolved_direction_flags(args),
        }
    )
    run = {
        "command": args.argv,
        "computed_points": computed,
        "done_points": int(surface.done.sum()),
        "total_points": int(surface.done.size),
        "elapsed_s": elapsed,
        "points_per_s": rate,
        "nproc": ctx.size,
        "mode": evaluator.mode,
        "ranks": rank_stats,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    sidecar = write_sidecar(surf_file, config, run, replace_bad=args.overwrite)
    ctx.log(f"wrote {surf_file} (and {sidecar.name})")
    if args.plot or args.show:
        trajectory = read_projection(args.proj_file) if args.proj_file else None
        paths = draw(surface, str(surf_file), args, trajectory)
        for path in paths:
            ctx.log(f"figure: {path}")
