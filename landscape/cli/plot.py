"""``plot`` of :mod:`landscape.cli`: the standard figures of a surface file, or plot_1D.py's
repeat plot of ``PREFIX_IDX.h5``, written next to them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from landscape.cli.figures import draw, figure_formats, read_projection, read_surface, x_limits
from landscape.cli.inputs import CLIError, Context
from landscape.plot import save_figure


def cmd_plot(args: argparse.Namespace, ctx: Context) -> None:
    """``plot``: the standard figures of ``--surf_file``, written next to it; with
    ``--prefix``, plot_1D.py's repeat plot of ``PREFIX_IDX.h5`` instead."""
    if args.prefix:
        _plot_repeat(args, ctx)
        return
    if not args.surf_file:
        raise CLIError("give --surf_file (or --prefix for the repeat plot of 1D surfaces)")
    surface = read_surface(args.surf_file)
    if not surface.done.any():
        raise CLIError(f"--surf_file {args.surf_file}: no point is computed yet")
    trajectory = read_projection(args.proj_file) if args.proj_file else None
    prefix = args.output or args.surf_file
    for path in draw(surface, prefix, args, trajectory):
        ctx.log(f"figure: {path}")


def _plot_repeat(args: argparse.Namespace, ctx: Context) -> None:
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
        surface = read_surface(path)
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
        **x_limits(args),
    )
    out = args.output or args.prefix
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    for fmt in figure_formats(args.formats):
        path = Path(f"{out}_1d_loss_err_repeat.{fmt}")
        save_figure(fig, path, format=fmt)
        ctx.log(f"figure: {path}")
    if args.show:
        import matplotlib.pyplot as plt

        plot_1d_repeat(
            surfaces,
            labels=[str(i) for i in indices],
            log=args.log,
            loss_max=args.loss_max,
            **x_limits(args),
        )
        plt.show()
