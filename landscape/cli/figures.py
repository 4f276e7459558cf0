"""What the commands of :mod:`landscape.cli` share to read surfaces and draw figures.

A surface file named by ``--surf_file`` (:func:`read_surface`), a projected trajectory
(:func:`read_projection`), the figure formats of ``--formats``, ``--xmin``/``--xmax`` as
plot_1D.py reads them, and the standard figures of a surface (:func:`draw`, also shown with
``--show``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from landscape.cli.inputs import CLIError


def read_surface(path: str) -> Any:
    """The surface file ``--surf_file`` (a one-line error when it is missing)."""
    if not os.path.isfile(path):
        raise CLIError(f"--surf_file {path}: no such file")
    from landscape.io import load_surface

    return load_surface(path)


def read_projection(path: str) -> Any:
    """The ``(T, 2)`` projected path stored by ``project`` in ``--proj_file``."""
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


def figure_formats(text: str) -> list[str]:
    """The figure formats of ``--formats`` (``"png,pdf"`` -> ``["png", "pdf"]``)."""
    formats = [f.strip().lstrip(".") for f in text.split(",") if f.strip()]
    if not formats:
        raise CLIError("--formats needs at least one format, e.g. png")
    return formats


def draw(surface: Any, prefix: str, args: argparse.Namespace, trajectory: Any = None) -> list:
    """The standard figures of ``surface`` named after ``prefix`` (and shown with ``--show``)."""
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
        formats=figure_formats(args.formats),
        metric=args.surf_name,
        vmin=args.vmin,
        vmax=args.vmax,
        vlevel=args.vlevel,
        log=args.log,
        loss_max=args.loss_max,
        zmax=args.zmax,
        zlim=args.zlim,
        **x_limits(args),
        trajectory=trajectory,
    )
    if args.show:
        show(surface, args, trajectory)
    return paths


def x_limits(args: argparse.Namespace) -> dict[str, float | None]:
    """``--xmin``/``--xmax`` as plot_1D.py reads them: its defaults -1 and 1 mean "the data's
    own range"."""
    xmin = getattr(args, "xmin", -1.0)
    xmax = getattr(args, "xmax", 1.0)
    return {"xmin": None if xmin == -1.0 else xmin, "xmax": None if xmax == 1.0 else xmax}


def show(surface: Any, args: argparse.Namespace, trajectory: Any = None) -> None:
    """The figures of ``surface`` in pyplot windows (``--show``)."""
    import matplotlib.pyplot as plt

    from landscape import plot

    if surface.y is None:
        plot.plot_1d(surface, log=args.log, loss_max=args.loss_max, **x_limits(args))
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
