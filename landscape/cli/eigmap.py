"""``hessian --eigmap`` of :mod:`landscape.cli`: the max/min Hessian eigenvalue map over a grid.

``python -m landscape hessian --model M:F --data M:F --eigmap [--dir_file DIRS.h5 | direction
flags] --x=-1:1:11 [--y=-1:1:11] [--surf_file MAP.h5]`` computes, with
:func:`landscape.curvature.eigmap.eigenvalue_map`, ``max_eig`` and ``min_eig`` of the mean
loss's Hessian at every grid point, into an HDF5 file in the surfaces' layout (resumable: a
rerun computes only the points not ``done``; ``--overwrite`` starts anew). The directions and
the default file names are the surface command's (:func:`~landscape.cli.directions.grid_files`,
:func:`~landscape.cli.directions.shared_directions`); the map's default name ends
``_eigmap.h5``. Under ``--mpi`` the points are split over the ranks (the map's ``comm``; rank 0
writes). Rank 0 then draws ``<map stem>_eig_ratio.png`` and ``<map stem>_max_eig.png`` next
to the map and appends the run to ``<map>.json`` (as ``surface`` does; also ``--output`` when
given).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from landscape.cli.budget import check_grid_size
from landscape.cli.curvature import curvature_inputs, params_option
from landscape.cli.directions import grid_files, resolved_direction_flags, shared_directions
from landscape.cli.inputs import CLIError, Context, data_flag, data_source, linspace
from landscape.cli.ranks import agree_across_ranks
from landscape.cli.sidecar import read_runs, write_sidecar
from landscape.io.atomic import atomic_write


def save_eigmap_figures(eigmap: Any, path: Path) -> list[Path]:
    """``plot_eig_ratio`` and ``plot_max_eig`` of ``eigmap`` as PNGs next to ``path``."""
    from landscape.optional import import_optional
    from landscape.plot import plot_eig_ratio, plot_max_eig, save_figure

    plt = import_optional("matplotlib.pyplot", "the figures need matplotlib")
    paths = []
    for name, draw in (("eig_ratio", plot_eig_ratio), ("max_eig", plot_max_eig)):
        figure = draw(eigmap).figure
        target = path.with_name(f"{path.stem}_{name}.png")
        save_figure(figure, target)
        plt.close(figure)
        paths.append(target)
    return paths


def _span(values: Any) -> list[float]:
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return [float(finite.min()), float(finite.max())] if finite.size else []


def run_eigmap(args: argparse.Namespace, ctx: Context, started: float) -> None:
    """``hessian --eigmap``: compute (or resume) the map, then figures and JSON on rank 0."""
    from landscape.curvature.eigmap import METRICS, eigenvalue_map

    ndim = 1 if args.y is None else 2
    output = Path(args.surf_file) if args.surf_file else Path.cwd() / "eigmap.h5"
    check_grid_size(args.x, args.y, metrics=len(METRICS), output=output)
    x = linspace(args.x)
    y = None if args.y is None else linspace(args.y)
    dir_file, surf_file, explicit_dir = grid_files(args, ndim, suffix="_eigmap")
    if ctx.rank == 0:
        read_runs(surf_file, replace_bad=args.overwrite)  # refuse a broken record up front
    model, data, subset, loss, _ = curvature_inputs(args, ctx)
    if ctx.size > 1:
        agree_across_ranks(ctx, model, args, data, None, subset)
    directions = shared_directions(args, model, ndim, dir_file, explicit_dir, ctx)
    if ctx.rank == 0:
        surf_file.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        emap = eigenvalue_map(
            model,
            directions,
            data,
            x,
            y,
            loss=loss,
            params=params_option(args),
            subset=subset,
            subset_seed=args.subset_seed,
            batch_size=args.batch_size,
            bn_mode=args.bn_mode,
            tol=args.tol,
            max_iter=args.max_iter,
            seed=args.seed,
            mode=args.mode,
            ggn=args.ggn,
            out=surf_file,
            resume=not args.overwrite,
            progress=not args.no_progress,
            comm=ctx.comm if ctx.size > 1 else None,
            log=ctx.log,
        )
    except TypeError as err:
        raise CLIError(f"--{data_flag(args)} {data_source(args)[0]}: {err}") from None
    if ctx.rank != 0:
        return
    import numpy as np

    map_seconds = time.perf_counter() - began
    computed = sum(int(r["points"]) for r in emap.provenance.get("ranks", []))
    figures = save_eigmap_figures(emap, surf_file)
    facts = emap.provenance
    elapsed = time.perf_counter() - started
    summary = {
        "eigmap": str(surf_file),
        "dir_file": str(dir_file),
        "shape": list(emap.shape),
        "points": int(emap.done.sum()),
        "computed_points": computed,
        "max_eig": _span(emap.max_eig),
        "min_eig": _span(emap.min_eig),
        "eig_ratio": _span(emap.ratio),
        "hvp_count": int(np.nansum(emap.hvp_count)),
        "tol": args.tol,
        "samples": facts.get("samples"),
        "data_sha256": facts.get("data_sha256"),
        "model_sha256": facts.get("model_sha256"),
        "mode": facts.get("mode"),
        "figures": [str(p) for p in figures],
        "seconds": elapsed,
        "map_seconds": map_seconds,
        "nproc": ctx.size,
        "command": " ".join(["landscape", *args.argv]),
    }
    config = {k: v for k, v in vars(args).items() if k != "argv" and not callable(v)}
    config.update(
        surf_file=str(surf_file),
        dir_file=str(dir_file),
        resolved_directions=resolved_direction_flags(args),
    )
    run = {**summary, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    sidecar = write_sidecar(surf_file, config, run, replace_bad=args.overwrite)
    if args.output:
        output = Path(args.output)
        atomic_write(output, json.dumps(summary, indent=2, default=str) + "\n")
    ctx.log(
        f"eigenvalue map: computed {computed} points in {map_seconds:.2f} s on {ctx.size} "
        f"rank{'s' if ctx.size > 1 else ''}; max_eig {summary['max_eig']}, min_eig "
        f"{summary['min_eig']}; wrote {surf_file} (and {sidecar.name})"
    )
    for path in figures:
        ctx.log(f"figure: {path}")
