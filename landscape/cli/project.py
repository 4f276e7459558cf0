"""``project`` of :mod:`landscape.cli`: a folder of checkpoints projected onto directions (the
trajectory's PCA by default), as loss-landscape's ``plot_trajectory.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from landscape.cli.figures import figure_formats, read_surface
from landscape.cli.inputs import CLIError, Context, build_model, load_state
from landscape.io.atomic import atomic_path
from landscape.plot import save_figure


def cmd_project(args: argparse.Namespace, ctx: Context) -> None:
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
        model = build_model(args, None, ctx.names)
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
        surface = read_surface(args.surf_file)
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
        for fmt in figure_formats(args.formats):
            out = Path(f"{proj_file}_{args.surf_name}_2dcontour_proj.{fmt}")
            save_figure(figure, out, format=fmt)
            ctx.log(f"figure: {out}")


def _write_projection(
    path: Path, coords: Any, dir_file: Path, args: argparse.Namespace, count: int
) -> None:
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("proj_xcoord", data=coords[:, 0])
            f.create_dataset("proj_ycoord", data=coords[:, 1])
            f.attrs["dir_file"] = str(Path(dir_file).absolute())
            f.attrs["method"] = args.method
            f.attrs["trajectory"] = str(Path(args.trajectory).absolute())
            f.attrs["n_states"] = count
