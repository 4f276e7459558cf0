"""The argparse parser of :mod:`landscape.cli`: subcommands, flags and help texts.

:func:`build_parser` builds the four subcommands from shared argument groups (model,
directions, data, plots) and argument types that report a malformed value as an argparse error
(exit status 2); :func:`parse_range` reads ``MIN:MAX:NUM``. :func:`_join_negative_values`
rewrites ``--x -1:1:51`` as ``--x=-1:1:51`` before parsing, since argparse would take
``-1:1:51`` for an option.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from typing import Any

NORM_CHOICES = ("filter", "layer", "weight", "dfilter", "dlayer", "none", "")
IGNORE_CHOICES = ("biasbn", "none", "")
_RANGE_HELP = "MIN:MAX:NUM with NUM an integer >= 1, e.g. -1:1:51"


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


def parse_range(text: str) -> tuple[float, float, int]:
    """``"MIN:MAX:NUM"`` -> ``(min, max, num)``; raises ``ValueError`` when malformed.

    ``NUM`` must be an integer (``"51"``, or an integral ``"51.0"``) of at least 1; the bounds
    are finite numbers, 0 included (loss-landscape rejects a range starting at 0).
    """
    parts = str(text).strip().split(":")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ValueError(f"expected {_RANGE_HELP}, got {text!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(
            f"expected {_RANGE_HELP}, got {text!r} (MIN and MAX are numbers)"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"expected {_RANGE_HELP}, got {text!r} (MIN and MAX must be finite)")
    count_text = parts[2].strip()
    try:
        count = int(count_text)
    except ValueError:
        try:
            as_float = float(count_text)
        except ValueError:
            as_float = math.nan
        if not (math.isfinite(as_float) and as_float == int(as_float)):
            raise ValueError(
                f"expected {_RANGE_HELP}, got {text!r} (NUM must be an integer)"
            ) from None
        count = int(as_float)
    if count < 1:
        raise ValueError(f"expected {_RANGE_HELP}, got {text!r} (NUM must be at least 1)")
    if count == 1 and low != high:
        raise ValueError(f"expected {_RANGE_HELP}, got {text!r} (NUM = 1 needs MIN = MAX)")
    return low, high, count


def _range_type(text: str) -> tuple[float, float, int]:
    try:
        return parse_range(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _factory_type(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise argparse.ArgumentTypeError(
            f"expected MODULE:FACTORY (e.g. samlab.models:digits_cnn), got {text!r}"
        )
    return text


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf)")


def _join_negative_values(argv: Sequence[str]) -> list[str]:
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
            and _NEGATIVE_VALUE.match(argv[i + 1])
        ):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _add_model_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        type=_factory_type,
        required=required,
        metavar="MODULE:FACTORY",
        help="importable factory returning the nn.Module (e.g. samlab.models:digits_cnn); "
        "resolved from the current directory and sys.path",
    )
    g.add_argument(
        "--model_kwargs",
        type=_json_object,
        default={},
        metavar="JSON",
        help="keyword arguments for the model factory, as a JSON object",
    )
    g.add_argument(
        "--model_file",
        default="",
        help="weights of the centre: a samlab checkpoint (dict with a 'model' entry) or a plain "
        "state_dict, loaded with torch.load(weights_only=True)",
    )


def _add_direction_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("directions")
    g.add_argument(
        "--dir_file",
        default="",
        help="direction file to use (created there if missing); default: created from --seed "
        "and saved next to the surface file under a name made of the settings",
    )
    g.add_argument(
        "--dir_type",
        choices=("weights", "states"),
        default=None,
        help="weights: parameters only (default); states: BatchNorm running statistics too",
    )
    for axis in ("x", "y"):
        g.add_argument(
            f"--{axis}norm",
            choices=NORM_CHOICES,
            default=None,
            help=f"normalisation of the {axis} direction (default filter; '' = none)",
        )
        g.add_argument(
            f"--{axis}ignore",
            choices=IGNORE_CHOICES,
            default=None,
            help=f"biasbn: the {axis} direction is 0 on 1-D tensors (default); "
            "'' / none: loss-landscape's rule (a copy of the tensor)",
        )
    g.add_argument("--same_dir", action="store_true", help="y direction = x direction")
    g.add_argument(
        "--orthogonalize", action="store_true", help="make y orthogonal to x (Gram-Schmidt)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the random directions (0)")
    g.add_argument(
        "--idx",
        type=_nonnegative_int,
        default=0,
        help="repeat index: draws another direction (seed + idx) and tags the file names",
    )
    g.add_argument("--model_file2", default="", help="x direction = model_file2 - model_file")
    g.add_argument("--model_file3", default="", help="y direction = model_file3 - model_file")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        type=_factory_type,
        metavar="MODULE:FACTORY",
        help="factory returning the evaluation data: a DataLoader, a Dataset, an "
        "(inputs, targets) pair of tensors, or a (train, test) pair of loaders/datasets",
    )
    g.add_argument(
        "--test_data",
        type=_factory_type,
        metavar="MODULE:FACTORY",
        help="factory for a test set evaluated at the same points (test_* metrics); for a "
        "(train, test) pair its second element",
    )
    g.add_argument(
        "--data_kwargs",
        type=_json_object,
        default={},
        metavar="JSON",
        help="keyword arguments for the data factories, as a JSON object",
    )
    g.add_argument("--batch_size", type=_positive_int, default=128, help="evaluation batch (128)")
    g.add_argument(
        "--loss_name",
        "-l",
        choices=("crossentropy", "mse"),
        default="crossentropy",
        help="crossentropy (loss and accuracy) or mse (MSE and MAE)",
    )
    g.add_argument(
        "--data_split",
        type=_positive_int,
        default=1,
        help="S > 1: evaluate on part --split_idx of a seeded random split into S parts",
    )
    g.add_argument(
        "--split_idx", type=_nonnegative_int, default=0, help="which part of --data_split (0)"
    )
    g.add_argument(
        "--subset", type=_positive_int, default=None, help="evaluate on N seeded random samples"
    )
    g.add_argument("--subset_seed", type=int, default=0, help="seed of --subset / --data_split (0)")
    g.add_argument("--test_subset", type=_positive_int, default=None, help="N random test samples")
    legacy = p.add_argument_group("loss-landscape data flags (not used: give --data)")
    legacy.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    legacy.add_argument("--datapath", default=None, help=argparse.SUPPRESS)
    legacy.add_argument("--raw_data", action="store_true", help=argparse.SUPPRESS)
    legacy.add_argument("--trainloader", default="", help=argparse.SUPPRESS)
    legacy.add_argument("--testloader", default="", help=argparse.SUPPRESS)


def _add_plot_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plots")
    g.add_argument("--surf_name", default="train_loss", help="metric to draw (train_loss)")
    g.add_argument("--vmin", type=float, default=None, help="lowest contour level (from data)")
    g.add_argument("--vmax", type=float, default=None, help="highest contour level (from data)")
    g.add_argument("--vlevel", type=float, default=None, help="contour spacing (from data)")
    g.add_argument("--zmax", type=float, default=None, help="clip the 3D surface at this loss")
    g.add_argument("--log", action="store_true", help="logarithmic loss axis / colours")
    g.add_argument("--loss_max", type=float, default=None, help="upper limit of 1D loss axes")
    g.add_argument(
        "--xmin", type=float, default=-1.0, help="x-axis lower limit of 1D plots (-1: the data's)"
    )
    g.add_argument(
        "--xmax", type=float, default=1.0, help="x-axis upper limit of 1D plots (1: the data's)"
    )
    g.add_argument(
        "--zlim",
        type=float,
        default=None,
        help="upper z limit of the 3D surface (default: the data's; loss-landscape's plot_2D.py "
        "parses --zlim but ignores it)",
    )
    g.add_argument("--show", action="store_true", help="also show the figures (plt.show)")
    g.add_argument(
        "--formats", default="png", help="comma-separated figure formats (png; e.g. png,pdf)"
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser with subcommands ``surface``, ``plot``, ``project`` and ``vtk``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Filter-normalised loss surfaces of any PyTorch model "
        "(loss-landscape's flags; see `python -m landscape SUBCOMMAND -h`).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{surface,plot,project,vtk}")
    sub.required = True

    s = sub.add_parser(
        "surface",
        usage="%(prog)s --model MODULE:FACTORY --data MODULE:FACTORY [--x MIN:MAX:NUM] "
        "[--y MIN:MAX:NUM] [--surf_file FILE] [--mpi] [options]",
        help="compute a 1D or 2D loss surface into an HDF5 file (resumable, MPI with --mpi)",
        description="Compute the loss on a grid around a model; resumes an existing matching "
        "file, refuses a different one unless --overwrite.",
    )
    _add_model_args(s, required=True)
    _add_direction_args(s)
    _add_data_args(s)
    g = s.add_argument_group("grid and output")
    g.add_argument(
        "--x", type=_range_type, default=(-1.0, 1.0, 51), metavar="MIN:MAX:NUM", help="(-1:1:51)"
    )
    g.add_argument(
        "--y",
        type=_range_type,
        default=None,
        metavar="MIN:MAX:NUM",
        help="y range; given, the surface is 2D",
    )
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
        choices=("auto", "eager", "compiled", "vmap"),
        default="auto",
        help="evaluation path (auto: eager on CPU; on CUDA vmap where it measures >= 10%% faster)",
    )
    e.add_argument(
        "--bn_mode",
        choices=("eval", "recompute"),
        default="eval",
        help="BatchNorm: frozen statistics (eval) or re-estimated at every point",
    )
    e.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads per process (default: torch's; 1 per rank under --mpi)",
    )
    e.add_argument("--cuda", "-c", action="store_true", help="evaluate on the GPU")
    e.add_argument("--device", default=None, help="evaluation device (cpu, cuda, cuda:1, ...)")
    e.add_argument("--ngpu", type=_positive_int, default=1, help=argparse.SUPPRESS)
    e.add_argument(
        "--chunk_size", type=_positive_int, default=None, help="points per chunk written"
    )
    e.add_argument(
        "--no_check_center",
        action="store_true",
        help="skip checking the centre point against the model's own loss",
    )
    e.add_argument("--no_progress", action="store_true", help="no progress bar")
    _add_plot_args(s)

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
    _add_plot_args(p)

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
        type=_factory_type,
        default=None,
        metavar="MODULE:FACTORY",
        help="the model (needed for loss-landscape's position-indexed direction files)",
    )
    j.add_argument("--model_kwargs", type=_json_object, default={}, metavar="JSON")
    j.add_argument("--model_file", default="", help="the centre (default: the last checkpoint)")
    j.add_argument("--dir_type", choices=("weights", "states"), default="weights")
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
    _add_plot_args(j)

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
    return parser
