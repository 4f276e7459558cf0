"""``plot``, ``project`` and ``vtk`` of :mod:`landscape.cli`, and the figures of
``surface --plot``.

``plot`` draws the standard figures of a surface file next to it (or plot_1D.py's repeat plot
of ``PREFIX_IDX.h5``), ``project`` projects a folder of checkpoints onto directions (PCA by
default), ``vtk`` exports a 2D surface for ParaView.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from landscape._cli_inputs import CLIError, _Context, build_model, load_state

# --------------------------------------------------------------------------------------------
# helpers: projections and figures
# --------------------------------------------------------------------------------------------


def _read_projection(path: str) -> Any:
    import h5py
    import numpy as np

    if not os.path.isfile(path):
        raise CLIError(f"--proj_file {path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            columns = [
                np.asarray(f[k][()], dtype=np.float64) for k in ("proj_xcoord", "proj_ycoord")
            ]
    except (OSError, KeyError) as err:
        raise CLIError(f"--proj_file {path}: not a projection file ({err})") from None
    return np.stack(columns, axis=1)


def _formats(text: str) -> list[str]:
    formats = [f.strip().lstrip(".") for f in text.split(",") if f.strip()]
    if not formats:
        raise CLIError("--formats needs at least one format, e.g. png")
    return formats


def _draw(surface: Any, prefix: str, args: argparse.Namespace, trajectory: Any = None) -> list:
    from landscape.plot import plot_all

    if args.surf_name not in surface.metrics:
        raise CLIError(
            f"--surf_name {args.surf_name}: not in the surface (it has {sorted(surface.metrics)})"
        )
    if trajectory is not None and surface.y is None:
        raise CLIError("a projected trajectory needs a 2D surface")
    paths = plot_all(
        surface,
        prefix,
        formats=_formats(args.formats),
        metric=args.surf_name,
        vmin=args.vmin,
        vmax=args.vmax,
        vlevel=args.vlevel,
        log=args.log,
        loss_max=args.loss_max,
        zmax=args.zmax,
        zlim=args.zlim,
        **_x_limits(args),
        trajectory=trajectory,
    )
    if args.show:
        _show(surface, args, trajectory)
    return paths


def _x_limits(args: argparse.Namespace) -> dict[str, float | None]:
    """``--xmin``/``--xmax`` as plot_1D.py reads them: its defaults -1 and 1 mean "the data's
    own range"."""
    xmin = getattr(args, "xmin", -1.0)
    xmax = getattr(args, "xmax", 1.0)
    return {"xmin": None if xmin == -1.0 else xmin, "xmax": None if xmax == 1.0 else xmax}


def _show(surface: Any, args: argparse.Namespace, trajectory: Any = None) -> None:
    import matplotlib.pyplot as plt

    from landscape import plot

    if surface.y is None:
        plot.plot_1d(surface, log=args.log, loss_max=args.loss_max, **_x_limits(args))
    else:
        levels = dict(vmin=args.vmin, vmax=args.vmax, vlevel=args.vlevel)
        plot.plot_contour(surface, args.surf_name, **levels)
        fig = plt.figure()
        plot.plot_surface_3d(
            surface,
            args.surf_name,
            ax=fig.add_subplot(projection="3d"),
            zmax=args.zmax,
            zlim=args.zlim,
        )
        if trajectory is not None:
            plot.plot_trajectory(surface, trajectory, args.surf_name, **levels)
    plt.show()


# --------------------------------------------------------------------------------------------
# plot, project, vtk
# --------------------------------------------------------------------------------------------


def _load_surface(path: str) -> Any:
    if not os.path.isfile(path):
        raise CLIError(f"--surf_file {path}: no such file")
    from landscape.io import load_surface

    return load_surface(path)


def cmd_plot(args: argparse.Namespace, ctx: _Context) -> None:
    """``plot``: the standard figures of ``--surf_file``, written next to it; with
    ``--prefix``, plot_1D.py's repeat plot of ``PREFIX_IDX.h5`` instead."""
    if args.prefix:
        _plot_repeat(args, ctx)
        return
    if not args.surf_file:
        raise CLIError("give --surf_file (or --prefix for the repeat plot of 1D surfaces)")
    surface = _load_surface(args.surf_file)
    if not surface.done.any():
        raise CLIError(f"--surf_file {args.surf_file}: no point is computed yet")
    trajectory = _read_projection(args.proj_file) if args.proj_file else None
    prefix = args.output or args.surf_file
    for path in _draw(surface, prefix, args, trajectory):
        ctx.log(f"figure: {path}")


def _plot_repeat(args: argparse.Namespace, ctx: _Context) -> None:
    """plot_1D.py's ``plot_1d_loss_err_repeat``: the 1D curves of ``PREFIX_IDX.h5`` for IDX in
    ``idx_min..idx_max`` in one figure, ``<output or prefix>_1d_loss_err_repeat.<format>``."""
    from matplotlib.figure import Figure

    from landscape.plot import plot_1d_repeat

    if args.idx_min > args.idx_max:
        raise CLIError(f"--idx_min {args.idx_min} is larger than --idx_max {args.idx_max}")
    indices = range(args.idx_min, args.idx_max + 1)
    surfaces = []
    for idx in indices:
        path = f"{args.prefix}_{idx}.h5"
        if not os.path.isfile(path):
            raise CLIError(
                f"--prefix {args.prefix}: {path} does not exist (the repeat plot reads "
                f"PREFIX_IDX.h5 for IDX = {args.idx_min}..{args.idx_max}; see --idx_min/--idx_max)"
            )
        surface = _load_surface(path)
        if surface.y is not None:
            raise CLIError(f"--prefix {args.prefix}: {path} is a 2D surface; the repeat plot is 1D")
        surfaces.append(surface)
    fig = Figure(figsize=(6.4, 4.8))
    plot_1d_repeat(
        surfaces,
        labels=[str(i) for i in indices],
        ax=fig.add_subplot(),
        log=args.log,
        loss_max=args.loss_max,
        **_x_limits(args),
    )
    out = args.output or args.prefix
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    for fmt in _formats(args.formats):
        path = Path(f"{out}_1d_loss_err_repeat.{fmt}")
        fig.savefig(path, dpi=150, bbox_inches="tight", format=fmt)
        ctx.log(f"figure: {path}")
    if args.show:
        import matplotlib.pyplot as plt

        plot_1d_repeat(
            surfaces,
            labels=[str(i) for i in indices],
            log=args.log,
            loss_max=args.loss_max,
            **_x_limits(args),
        )
        plt.show()


def cmd_project(args: argparse.Namespace, ctx: _Context) -> None:
    """``project``: a trajectory's coordinates in a direction plane (PCA by default)."""
    import numpy as np

    from landscape.directions import (
        load_directions,
        load_trajectory,
        pca_directions,
        project_trajectory,
        save_directions,
    )

    folder = Path(args.trajectory)
    if not folder.is_dir():
        raise CLIError(f"--trajectory {folder}: no such folder")
    pattern = args.pattern or (
        f"{args.prefix}*{args.suffix}" if args.prefix or args.suffix else "*.pt"
    )
    states = load_trajectory(folder, pattern)
    model = None
    if args.model:
        model = build_model(args)
    centre = load_state(args.model_file, "--model_file") if args.model_file else states[-1]

    if args.dir_file and Path(args.dir_file).exists():
        dir_file = Path(args.dir_file)
        directions = load_directions(dir_file, model)
        path = project_trajectory(directions, centre, states, method=args.method)
        how = f"projected onto {dir_file}"
    else:
        ignore = args.ignore or "none"
        dir_file = (
            Path(args.dir_file)
            if args.dir_file
            else folder / f"PCA_{args.dir_type}_ignore={ignore}" / "directions.h5"
        )
        if dir_file.exists() and not args.overwrite:
            directions = load_directions(dir_file, model)
            stored = directions.meta.get("n_states")
            if directions.meta.get("kind") != "pca" or stored != len(states):
                raise CLIError(
                    f"{dir_file} exists but is not the PCA of these {len(states)} checkpoints "
                    f"(kind {directions.meta.get('kind')}, {stored} states); use --overwrite"
                )
            path = project_trajectory(directions, centre, states, method=args.method)
            how = f"projected onto the PCA directions in {dir_file}"
        else:
            if len(states) < 3:
                raise CLIError(f"PCA needs at least 3 checkpoints, {folder} has {len(states)}")
            directions, _ = pca_directions(
                states, final=centre, ignore=ignore, dir_type=args.dir_type, model=model
            )
            dir_file.parent.mkdir(parents=True, exist_ok=True)
            save_directions(dir_file, directions)
            path = project_trajectory(directions, centre, states, method=args.method)
            ratio = directions.meta.get("explained_variance_ratio", [])
            shown = ", ".join(f"{r:.3f}" for r in ratio)
            how = f"PCA directions (explained variance {shown}) saved to {dir_file}"
    if path.shape[1] != 2:
        path = np.concatenate([path, np.zeros((len(path), 1))], axis=1)

    proj_file = Path(args.proj_file or f"{dir_file}_proj_{args.method}.h5")
    _write_projection(proj_file, path, dir_file, args, len(states))
    ctx.log(f"{how}; {len(states)} checkpoints -> {proj_file}")
    if args.surf_file:
        surface = _load_surface(args.surf_file)
        if surface.y is None:
            raise CLIError(f"--surf_file {args.surf_file} is 1D; the path needs a 2D surface")
        if args.surf_name not in surface.metrics:
            raise CLIError(f"--surf_name {args.surf_name}: not in {args.surf_file}")
        from matplotlib.figure import Figure

        from landscape.plot import plot_trajectory

        figure = Figure(figsize=(6.4, 4.8))
        plot_trajectory(
            surface,
            path,
            args.surf_name,
            ax=figure.add_subplot(),
            explained_variance_ratio=directions.meta.get("explained_variance_ratio"),
            vmin=args.vmin,
            vmax=args.vmax,
            vlevel=args.vlevel,
        )
        for fmt in _formats(args.formats):
            out = Path(f"{proj_file}_{args.surf_name}_2dcontour_proj.{fmt}")
            figure.savefig(out, dpi=150, bbox_inches="tight", format=fmt)
            ctx.log(f"figure: {out}")


def _write_projection(
    path: Path, coords: Any, dir_file: Path, args: argparse.Namespace, count: int
) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("proj_xcoord", data=coords[:, 0])
            f.create_dataset("proj_ycoord", data=coords[:, 1])
            f.attrs["dir_file"] = str(Path(dir_file).absolute())
            f.attrs["method"] = args.method
            f.attrs["trajectory"] = str(Path(args.trajectory).absolute())
            f.attrs["n_states"] = count
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def cmd_vtk(args: argparse.Namespace, ctx: _Context) -> None:
    """``vtk``: VTK PolyData of a 2D surface, named as loss-landscape's ``h52vtp.py``."""
    surface = _load_surface(args.surf_file)
    from landscape.io import export_vtp

    if surface.y is None:
        raise CLIError(f"--surf_file {args.surf_file} is 1D; vtk needs a 2D surface")
    if args.surf_name not in surface.metrics:
        raise CLIError(
            f"--surf_name {args.surf_name}: not in the surface (it has {sorted(surface.metrics)})"
        )
    zmax = args.zmax if args.zmax is not None and args.zmax > 0 else None
    interp = args.interp if args.interp is not None and args.interp > 0 else None
    output = args.output or (
        f"{args.surf_file}_{args.surf_name}"
        + (f"_zmax={args.zmax:g}" if zmax is not None else "")
        + ("_log" if args.log else "")
        + ".vtp"
    )
    path = export_vtp(
        surface, output, metric=args.surf_name, zmax=zmax, log=args.log, interp=interp
    )
    ctx.log(f"wrote {path}")
