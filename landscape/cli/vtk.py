"""``vtk`` of :mod:`landscape.cli`: a 2D surface as VTK PolyData (``.vtp``) for ParaView, named
as loss-landscape's ``h52vtp.py``.
"""

from __future__ import annotations

import argparse

from landscape.cli.figures import read_surface
from landscape.cli.inputs import CLIError, Context


def cmd_vtk(args: argparse.Namespace, ctx: Context) -> None:
    """``vtk``: VTK PolyData of a 2D surface, named as loss-landscape's ``h52vtp.py``."""
    surface = read_surface(args.surf_file)
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
