"""The argparse parser of :mod:`landscape.cli`: subcommands, flags and help texts.

:func:`build_parser` builds the subcommands from shared argument groups (model,
directions, grid, data, plots) and argument types that report a malformed value as an argparse
error (exit status 2), both defined in :mod:`landscape.cli.options` (:func:`parse_range`, which
reads ``MIN:MAX:NUM``, is re-exported here). :func:`join_negative_values` rewrites ``--x
-1:1:51`` as ``--x=-1:1:51`` before parsing, since argparse would take ``-1:1:51`` for an
option.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from landscape.cli.hessian import add_hessian_parser
from landscape.cli.options import (
    IGNORE_CHOICES,
    RANGE_HELP,
    add_data_args,
    add_direction_args,
    add_grid_args,
    add_model_args,
    add_plot_args,
    factory_or_name,
    json_object,
    parse_range,
    positive_int,
    range_type,
)
from landscape.cli.sharpness import add_sharpness_parser
from landscape.directions import DIR_TYPES
from landscape.evaluate import BN_MODES, MODES

__all__ = ["RANGE_HELP", "build_parser", "join_negative_values", "parse_range", "range_type"]

NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf)")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--x -1:1:51`` -> ``--x=-1:1:51`` (argparse takes ``-1:1:51`` for an option)."""
    out: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        token = argv[i]
        if (
            token.startswith("--")
            and "=" not in token
            and i + 1 < len(argv)
            and NEGATIVE_VALUE.match(argv[i + 1])
        ):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser with subcommands ``surface``, ``plot``, ``project``, ``vtk``,
    ``hessian`` and ``sharpness``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Filter-normalised loss surfaces of any PyTorch model "
        "(loss-landscape's flags; see `python -m landscape SUBCOMMAND -h`).",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="{surface,plot,project,vtk,hessian,sharpness}"
    )
    sub.required = True

    s = sub.add_parser(
        "surface",
        usage="%(prog)s --model MODULE:FACTORY|NAME (--data MODULE:FACTORY|NAME | --dataset NAME) "
        "[--x MIN:MAX:NUM] "
        "[--y MIN:MAX:NUM] [--surf_file FILE] [--mpi] [options]",
        help="compute a 1D or 2D loss surface into an HDF5 file (resumable, MPI with --mpi)",
        description="Compute the loss on a grid around a model; resumes an existing matching "
        "file, refuses a different one unless --overwrite.",
    )
    add_model_args(s, required=True)
    add_direction_args(s)
    add_data_args(s)
    g = s.add_argument_group("grid and output")
    add_grid_args(g, x_default=(-1.0, 1.0, 51), x_help="(-1:1:51)")
    g.add_argument(
        "--surf_file",
        default="",
        help="HDF5 output (default: named after the direction file and the grid)",
    )
    g.add_argument("--proj_file", default="", help="projected trajectory to overlay (--plot)")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing surface file (and a stale default direction file)",
    )
    g.add_argument("--plot", action="store_true", help="draw the figures after computing")
    e = s.add_argument_group("evaluation")
    e.add_argument("--mpi", "-m", action="store_true", help="split the grid over MPI ranks")
    e.add_argument(
        "--mode",
        choices=MODES,
        default="auto",
        help="evaluation path (auto: eager on CPU; on CUDA vmap where it measures >= 10%% faster)",
    )
    e.add_argument(
        "--bn_mode",
        choices=BN_MODES,
        default="eval",
        help="BatchNorm: frozen statistics (eval) or re-estimated at every point",
    )
    e.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads per process (default: torch's; 1 per rank under --mpi)",
    )
    e.add_argument("--cuda", "-c", action="store_true", help="evaluate on the GPU")
    e.add_argument("--device", default=None, help="evaluation device (cpu, cuda, cuda:1, ...)")
    e.add_argument("--ngpu", type=positive_int, default=1, help=argparse.SUPPRESS)
    e.add_argument("--chunk_size", type=positive_int, default=None, help="points per chunk written")
    e.add_argument(
        "--no_check_center",
        action="store_true",
        help="skip checking the centre point against the model's own loss",
    )
    e.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_plot_args(s)

    p = sub.add_parser(
        "plot",
        help="draw the standard figures of a surface file next to it",
        description="Contour, filled contour, heat map and 3D surface (2D) or loss/accuracy "
        "curves (1D), written as <surf_file>_<metric>_<kind>.<format>.",
    )
    p.add_argument("--surf_file", "-f", default="", help="surface file (samlab or loss-landscape)")
    p.add_argument("--dir_file", default="", help="(accepted for loss-landscape; not needed)")
    p.add_argument("--proj_file", default="", help="projected trajectory to overlay")
    p.add_argument(
        "--output", default="", help="figure path prefix (default: the surf_file or --prefix)"
    )
    r = p.add_argument_group(
        "repeat plot (plot_1D.py)",
        "with --prefix: the 1D curves of PREFIX_IDX.h5 for IDX = idx_min..idx_max in one "
        "figure, PREFIX_1d_loss_err_repeat.<format> (--surf_file is then not needed)",
    )
    r.add_argument("--prefix", default="", help="common prefix of the 1D surface files")
    r.add_argument("--idx_min", type=int, default=1, help="first index (1)")
    r.add_argument("--idx_max", type=int, default=10, help="last index (10)")
    add_plot_args(p)

    j = sub.add_parser(
        "project",
        help="project a training trajectory (a folder of checkpoints) onto directions",
        description="Without --dir_file the two PCA directions of the trajectory are computed "
        "(and saved in the folder), as loss-landscape's plot_trajectory.py.",
    )
    j.add_argument(
        "--trajectory",
        "--model_folder",
        dest="trajectory",
        required=True,
        help="folder of checkpoints (a 'model' entry or plain state_dicts)",
    )
    j.add_argument("--pattern", default=None, help="checkpoint glob in the folder (*.pt)")
    j.add_argument("--prefix", default="", help="loss-landscape: checkpoint name prefix")
    j.add_argument("--suffix", default="", help="loss-landscape: checkpoint name suffix")
    j.add_argument("--dir_file", default="", help="directions to project on (default: PCA)")
    j.add_argument(
        "--model",
        type=factory_or_name,
        default=None,
        metavar="MODULE:FACTORY|NAME",
        help="the model (needed for loss-landscape's position-indexed direction files)",
    )
    j.add_argument("--model_kwargs", type=json_object, default={}, metavar="JSON")
    j.add_argument("--model_file", default="", help="the centre (default: the last checkpoint)")
    j.add_argument("--dir_type", choices=DIR_TYPES, default="weights")
    j.add_argument(
        "--ignore", choices=IGNORE_CHOICES, default="biasbn", help="PCA: 1-D tensors (biasbn)"
    )
    j.add_argument(
        "--method",
        choices=("lstsq", "cos"),
        default="lstsq",
        help="lstsq: grid coordinates; cos: loss-landscape's <d, dx>/|dx| (equal for PCA)",
    )
    j.add_argument("--proj_file", default="", help="output (default <dir_file>_proj_<method>.h5)")
    j.add_argument("--surf_file", default="", help="surface to draw the path on (2D)")
    j.add_argument("--overwrite", action="store_true", help="recompute an existing PCA file")
    add_plot_args(j)

    v = sub.add_parser(
        "vtk",
        help="export a 2D surface as VTK PolyData (.vtp) for ParaView (as h52vtp.py)",
    )
    v.add_argument("--surf_file", "-f", required=True)
    v.add_argument("--surf_name", default="train_loss", help="metric (train_loss)")
    v.add_argument("--zmax", type=float, default=-1.0, help="clip at this value (-1: none)")
    v.add_argument("--log", action="store_true", help="z -> log(z + 0.1)")
    v.add_argument(
        "--interp", type=int, default=-1, help="cubic upsampling to this many points per side"
    )
    v.add_argument("--output", default="", help="output .vtp (default named as h52vtp.py)")

    add_hessian_parser(sub)
    add_sharpness_parser(sub)
    return parser
