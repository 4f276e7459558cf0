"""Command line: ``python -m landscape {surface,plot,project,vtk}`` (console script
``samlab-landscape``).

The flags are those of tomgoldstein/loss-landscape's ``plot_surface.py``, ``plot_2D.py``,
``plot_1D.py``, ``plot_trajectory.py`` and ``h52vtp.py``, with the same meaning, so an old
command runs with the script name changed and the model / data given as importable factories::

    python -m landscape surface --model mymodels:resnet --model_file ckpt.pt \\
        --data mydata:train --x -1:1:51 --y -1:1:51 --surf_file surf.h5 --plot
    mpiexec -n 2 python -m mpi4py -m landscape surface ... --mpi
    python -m landscape plot --surf_file surf.h5
    python -m landscape project --trajectory checkpoints/ --surf_file surf.h5
    python -m landscape vtk --surf_file surf.h5 --log

Models and data come from ``MODULE:FACTORY`` names resolved with importlib at run time (the
current directory is put on ``sys.path``), e.g. ``samlab.models:digits_cnn``; this package never
imports them itself. Checkpoints load with ``torch.load(weights_only=True)`` (a dict with a
``model`` entry, or a plain state_dict); direction and surface files are plain HDF5. Code runs
only from a factory the user names.

Deviations from loss-landscape (each recorded where it matters):

- ``--xnorm/--ynorm`` default to ``filter`` and ``--xignore/--yignore`` to ``biasbn`` (the
  paper's setting; loss-landscape's empty defaults give raw N(0, 1) directions and move every
  1-D tensor by a copy of itself). An explicit empty value (``--xnorm ""``) still means "none".
  The surface file records the values used (``directions``) and these defaults
  (``flag_defaults``).
- ``--seed`` is honoured (loss-landscape hard-codes 123) and ``--idx N`` draws another direction
  (seed + N; loss-landscape's ``--idx`` only changes the file name).
- ``--data_split S --split_idx I`` takes part I of a seeded random split into S parts
  (loss-landscape ignores ``--split_idx``).
- ``--x``/``--y`` need an integer count and accept ranges starting or ending at 0.
- ``--threads`` sets torch's intra-op threads (loss-landscape: DataLoader workers; here the
  data are materialised once). Under ``--mpi`` a rank uses 1 thread unless told otherwise.
- Direction and surface files are validated, never silently reused: an existing surface file is
  resumed only when its grid, directions, model and data match, and is otherwise refused
  unless ``--overwrite``. Figures, projections and ``.vtp`` files are regenerated freely.
- Beside the surface file, ``<surf_file>.json`` keeps the resolved command (DESIGN.md §6), one
  entry per run with the per-rank share of the points.

User mistakes (unknown module or factory, missing files, malformed flags, mismatching files,
empty data) end with a one-line ``error:`` message and exit status 1 (2 for flag syntax);
``LANDSCAPE_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLIError", "build_parser", "main", "parse_range"]

FLAG_DEFAULTS = {
    "xnorm": "filter",
    "ynorm": "filter",
    "xignore": "biasbn",
    "yignore": "biasbn",
    "dir_type": "weights",
    "note": "samlab defaults; loss-landscape's are xnorm=ynorm='' (none) and "
    "xignore=yignore='' (1-D tensors moved by a copy of themselves)",
}
NORM_CHOICES = ("filter", "layer", "weight", "dfilter", "dlayer", "none", "")
IGNORE_CHOICES = ("biasbn", "none", "")
_RANGE_HELP = "MIN:MAX:NUM with NUM an integer >= 1, e.g. -1:1:51"


class CLIError(Exception):
    """A user mistake: reported as one line, without a traceback."""


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


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog is None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "samlab-landscape"
        if prog in ("__main__.py", "-m", "-c", ""):
            prog = "python -m landscape"
    parser = build_parser(prog)
    try:
        args = parser.parse_args(_join_negative_values(argv))
    except SystemExit as exit_:  # argparse: usage errors (2) and --help (0)
        return int(exit_.code or 0)
    args.argv = argv
    context = _Context()
    commands: dict[str, Callable[[argparse.Namespace, _Context], None]] = {
        "surface": cmd_surface,
        "plot": cmd_plot,
        "project": cmd_project,
        "vtk": cmd_vtk,
    }
    try:
        commands[args.command](args, context)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("LANDSCAPE_TRACEBACK", "") not in ("", "0"):
            raise
        message = " ".join(str(err).split())
        where = f"[rank {context.rank}] " if context.size > 1 else ""
        sys.stdout.flush()
        sys.stderr.write(f"{prog} {args.command}: {where}error: {message}\n")
        sys.stderr.flush()
        if context.comm is not None and context.size > 1:
            try:
                context.comm.Abort(1)
            finally:
                os._exit(1)
        return 1
    except BaseException:
        if context.comm is not None and context.size > 1:
            from landscape.distributed import _abort

            _abort(context.comm)
        raise
    return 0


class _Context:
    """The MPI communicator (if any) and this process's rank."""

    def __init__(self) -> None:
        self.comm: Any = None
        self.rank = 0
        self.size = 1

    def log(self, message: str) -> None:
        if self.rank == 0:
            print(message, flush=True)


# --------------------------------------------------------------------------------------------
# helpers: factories, checkpoints, data
# --------------------------------------------------------------------------------------------


def resolve_factory(spec: str, flag: str) -> Callable[..., Any]:
    """The callable named ``MODULE:FACTORY`` (attribute paths with dots allowed)."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise CLIError(
                f"{flag} {spec}: no module named {module_name!r} (looked in the current "
                f"directory {cwd} and on sys.path)"
            ) from None
        raise CLIError(f"{flag} {spec}: importing {module_name!r} failed: {err}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise CLIError(f"{flag} {spec}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise CLIError(f"{flag} {spec}: {attr!r} is not callable")
    return target


def _call_factory(spec: str, flag: str, kwargs: Mapping[str, Any]) -> Any:
    factory = resolve_factory(spec, flag)
    try:
        return factory(**kwargs)
    except TypeError as err:
        if kwargs and "argument" in str(err):
            raise CLIError(
                f"{flag} {spec}: the factory rejects its keyword arguments: {err}"
            ) from None
        raise


def load_state(path: str, flag: str) -> dict[str, Any]:
    """A state_dict from a samlab checkpoint, a ``{'state_dict': ...}`` dict or a state_dict."""
    import torch

    if not os.path.isfile(path):
        raise CLIError(f"{flag} {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt, foreign or needs arbitrary unpickling
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CLIError(
            f"{flag} {path}: cannot be loaded with torch.load(weights_only=True): {first}"
        ) from None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = dict(obj)
            if all(k.startswith("module.") for k in state):  # saved from DataParallel
                state = {k[len("module.") :]: v for k, v in state.items()}
            return state
    raise CLIError(
        f"{flag} {path}: neither a state_dict nor a checkpoint dict with a 'model' entry"
    )


def build_model(args: argparse.Namespace, device: Any = None) -> Any:
    """The model from ``--model`` (+ ``--model_file``), in eval mode, on ``device``."""
    from torch import nn

    model = _call_factory(args.model, "--model", args.model_kwargs)
    if not isinstance(model, nn.Module):
        raise CLIError(
            f"--model {args.model}: the factory returned {type(model).__name__}, not an nn.Module"
        )
    if args.model_file:
        state = load_state(args.model_file, "--model_file")
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise CLIError(
                f"--model_file {args.model_file} does not fit --model {args.model} "
                f"(a checkpoint of another architecture?): {detail}"
            ) from None
        if missing or unexpected:
            raise CLIError(
                f"--model_file {args.model_file} does not fit --model {args.model} (a checkpoint "
                f"of another architecture?): missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}"
            )
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _split_pair(value: Any) -> tuple[Any, Any] | None:
    """``(train, test)`` when ``value`` is a pair of loaders/datasets (not of tensors)."""
    import numpy as np
    import torch

    if isinstance(value, Mapping) and "train" in value:
        return value["train"], value.get("test")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        if not any(isinstance(v, (torch.Tensor, np.ndarray)) for v in value):
            return value[0], value[1]
    return None


def build_data(spec: str | None, flag: str, kwargs: Mapping[str, Any], part: int) -> Any:
    """What a data factory returns, reduced to one data set (``part`` 0 train, 1 test)."""
    if spec is None:
        return None
    value = _call_factory(spec, flag, kwargs)
    pair = _split_pair(value)
    if pair is not None:
        value = pair[part]
        if value is None:
            raise CLIError(f"{flag} {spec}: the factory returned no test part")
    if value is None:
        raise CLIError(f"{flag} {spec}: the factory returned None")
    return value


def _data_length(data: Any, flag: str) -> int:
    from torch.utils.data import DataLoader

    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "__len__"):
        return len(data[0])
    try:
        return len(data)
    except TypeError:
        raise CLIError(f"{flag}: --data_split needs a data set with a length") from None


def _subset(args: argparse.Namespace, data: Any) -> Any:
    """``--subset`` (an int) or ``--data_split/--split_idx`` (explicit sorted indices)."""
    import numpy as np
    import torch

    if args.data_split > 1 and args.subset is not None:
        raise CLIError("give --subset or --data_split, not both")
    if args.split_idx and args.data_split <= 1:
        raise CLIError("--split_idx needs --data_split > 1")
    if args.data_split <= 1:
        return args.subset
    if args.split_idx >= args.data_split:
        raise CLIError(f"--split_idx must be below --data_split ({args.data_split})")
    size = _data_length(data, "--data")
    if size < args.data_split:
        raise CLIError(f"--data_split {args.data_split} is larger than the data ({size} samples)")
    generator = torch.Generator().manual_seed(int(args.subset_seed))
    order = torch.randperm(size, generator=generator).numpy()
    return np.sort(np.array_split(order, args.data_split)[args.split_idx]).astype(np.int64)


def _linspace(spec: tuple[float, float, int]) -> Any:
    import numpy as np

    low, high, count = spec
    return np.linspace(low, high, int(count))


def _format_range(spec: tuple[float, float, int]) -> str:
    low, high, count = spec
    return f"[{float(low)},{float(high)},{int(count)}]"


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "model"


def _resolved_direction_flags(args: argparse.Namespace) -> dict[str, str]:
    """Explicit flags, else samlab's defaults (an explicit '' means none)."""
    out = {}
    for key in ("xnorm", "ynorm", "xignore", "yignore", "dir_type"):
        value = getattr(args, key)
        out[key] = FLAG_DEFAULTS[key] if value is None else (value or "none")
    return out


def default_dir_file(args: argparse.Namespace, ndim: int, folder: Path) -> Path:
    """loss-landscape's naming: ``<model>_<dir_type>_xignore=.._xnorm=..[...].h5`` in folder."""
    flags = _resolved_direction_flags(args)
    base = os.path.basename(args.model_file) if args.model_file else _sanitize(args.model)
    name = f"{base}_{flags['dir_type']}"
    random_used = False
    if args.model_file2:
        name += f"_model2={_sanitize(os.path.basename(args.model_file2))}"
    else:
        name += f"_xignore={flags['xignore']}_xnorm={flags['xnorm']}"
        random_used = True
    if ndim == 2:
        if args.model_file3:
            name += f"_model3={_sanitize(os.path.basename(args.model_file3))}"
        elif args.same_dir:
            name += "_same_dir"
        else:
            name += f"_yignore={flags['yignore']}_ynorm={flags['ynorm']}"
            random_used = True
        if args.orthogonalize:
            name += "_orth"
    if random_used:
        name += f"_seed={args.seed}"
    if args.idx:
        name += f"_idx={args.idx}"
    return folder / f"{name}.h5"


def default_surf_file(args: argparse.Namespace, dir_file: Path) -> Path:
    """loss-landscape's naming: ``<dir_file>_[xmin,xmax,xnum]x[ymin,ymax,ynum].h5``."""
    name = f"{dir_file.name}_{_format_range(args.x)}"
    if args.y is not None:
        name += f"x{_format_range(args.y)}"
    if args.data_split > 1:
        name += f"_datasplit={args.data_split}_splitidx={args.split_idx}"
    if args.subset is not None:
        name += f"_subset={args.subset}"
    return dir_file.parent / f"{name}.h5"


def _same_directions(a: Any, b: Any) -> bool:
    import torch

    if a.dir_type != b.dir_type or a.names() != b.names() or (a.y is None) != (b.y is None):
        return False
    pairs = [(a.x, b.x)] + ([] if a.y is None else [(a.y, b.y)])
    return all(torch.equal(p[n], q[n]) for p, q in pairs for n in p)


def _create_directions(args: argparse.Namespace, model: Any, ndim: int) -> Any:
    from landscape.directions import create_directions

    flags = _resolved_direction_flags(args)
    model2 = load_state(args.model_file2, "--model_file2") if args.model_file2 else None
    model3 = load_state(args.model_file3, "--model_file3") if args.model_file3 else None
    if model3 is not None and ndim == 1:
        raise CLIError("--model_file3 needs a 2D surface (--y)")
    if (args.same_dir or args.orthogonalize) and ndim == 1:
        raise CLIError("--same_dir and --orthogonalize need a 2D surface (--y)")
    if (model2 is not None or model3 is not None) and not args.model_file:
        raise CLIError("--model_file2/--model_file3 need --model_file (the first model)")
    try:
        return create_directions(
            model,
            seed=int(args.seed) + int(args.idx),
            xnorm=flags["xnorm"],
            ynorm=flags["ynorm"],
            xignore=flags["xignore"],
            yignore=flags["yignore"],
            dir_type=flags["dir_type"],
            ndim=ndim,
            same_dir=args.same_dir,
            orthogonalize=args.orthogonalize,
            model2=model2,
            model3=model3,
        )
    except ValueError as err:
        raise CLIError(f"cannot create the directions: {err}") from None


def _prepare_directions(
    args: argparse.Namespace, model: Any, ndim: int, dir_file: Path, explicit: bool, ctx: _Context
) -> tuple[Any, str]:
    """Rank 0: load, check or create+save the directions. Returns (directions, what happened)."""
    from landscape.directions import load_directions, save_directions

    if dir_file.exists():
        directions = load_directions(dir_file, model, dir_type=args.dir_type)
        if explicit:
            return directions, f"loaded {dir_file}"
        fresh = _create_directions(args, model, ndim)
        if _same_directions(directions, fresh):
            return directions, f"reused {dir_file} (same directions)"
        if not args.overwrite:
            raise CLIError(
                f"direction file {dir_file} exists but holds other directions (another model, "
                "seed or settings); pass it as --dir_file to use it, or --overwrite to replace it"
            )
        save_directions(dir_file, fresh)
        return fresh, f"replaced {dir_file}"
    directions = _create_directions(args, model, ndim)
    dir_file.parent.mkdir(parents=True, exist_ok=True)
    save_directions(dir_file, directions)
    return directions, f"created {dir_file}"


def _fit_ndim(directions: Any, ndim: int, dir_file: Path) -> Any:
    from landscape.directions import Directions

    if ndim == 2 and directions.y is None:
        raise CLIError(f"--dir_file {dir_file} holds one direction but --y asks for a 2D surface")
    if ndim == 1 and directions.y is not None:
        meta = {**directions.meta, "used": "x direction of a 2D direction file"}
        return Directions(x=directions.x, y=None, dir_type=directions.dir_type, meta=meta)
    return directions


def _launched_ranks() -> int:
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        value = os.environ.get(key)
        if value and value.isdigit():
            return int(value)
    return 1


def _device(args: argparse.Namespace, ctx: _Context) -> Any:
    import torch

    if args.device:
        try:
            return torch.device(args.device)
        except RuntimeError as err:
            raise CLIError(f"--device {args.device}: {err}") from None
    if args.cuda:
        if not torch.cuda.is_available():
            raise CLIError("--cuda: no CUDA device is available")
        local = 0
        if ctx.comm is not None:
            from mpi4py import MPI

            local = ctx.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def _fingerprint(tensors: Sequence[tuple[str, Any]]) -> str:
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in tensors:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _agree_across_ranks(
    ctx: _Context, model: Any, args: argparse.Namespace, train: Any, test: Any, subset: Any
) -> None:
    """Every rank must evaluate the same model on the same data.

    A factory with an unseeded random initialisation builds different weights on every rank
    (torch seeds each process differently): rank 0's weights are then sent to all ranks. Data
    that differ across ranks (an unseeded random data factory) cannot be repaired: error.
    """
    from landscape.surface import as_tensors

    comm = ctx.comm
    state = model.state_dict()
    if len(set(comm.allgather(_fingerprint(list(state.items()))))) > 1:
        ctx.log(
            f"note: --model {args.model} builds different weights on different ranks (unseeded "
            "initialisation?); every rank uses rank 0's weights"
        )
        weights = comm.bcast(
            {k: v.detach().cpu() for k, v in state.items()} if ctx.rank == 0 else None, root=0
        )
        model.load_state_dict(weights)
    parts = []
    for name, data, part_subset in (("train", train, subset), ("test", test, args.test_subset)):
        if data is None:
            continue
        try:
            inputs, targets, _ = as_tensors(data, subset=part_subset, subset_seed=args.subset_seed)
        except (ValueError, TypeError):
            return  # the evaluator reports it, with context
        parts += [(f"{name}.inputs", inputs), (f"{name}.targets", targets)]
        del inputs, targets
    if len(set(comm.allgather(_fingerprint(parts)))) > 1:
        raise CLIError(
            "the data factories give different data on different MPI ranks (unseeded "
            "randomness?); make them deterministic"
        )


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


def _write_sidecar(path: Path, config: dict[str, Any], run: dict[str, Any]) -> Path:
    """``<surf_file>.json``: the resolved command and one entry per run (appended)."""
    sidecar = path.with_name(path.name + ".json")
    runs: list[Any] = []
    if sidecar.is_file():
        try:
            previous = json.loads(sidecar.read_text())
            if isinstance(previous, dict) and isinstance(previous.get("runs"), list):
                runs = previous["runs"]
        except (OSError, json.JSONDecodeError):
            runs = []
    runs.append(run)
    text = json.dumps({"config": config, "runs": runs}, indent=2, default=str)
    sidecar.write_text(text + "\n")
    return sidecar


# --------------------------------------------------------------------------------------------
# surface
# --------------------------------------------------------------------------------------------


def cmd_surface(args: argparse.Namespace, ctx: _Context) -> None:
    """``surface``: compute (or resume) a loss surface into ``--surf_file``."""
    ranks = _launched_ranks()
    if args.mpi:
        try:
            from mpi4py import MPI
        except ImportError:
            raise CLIError("--mpi needs mpi4py (pip install mpi4py mpich)") from None
        ctx.comm = MPI.COMM_WORLD
        ctx.rank, ctx.size = ctx.comm.Get_rank(), ctx.comm.Get_size()
    elif ranks > 1:
        raise CLIError(
            f"launched by mpiexec with {ranks} ranks but without --mpi: every rank would compute "
            "the whole surface into the same file; add --mpi"
        )
    if args.data is None:
        raise CLIError("surface needs --data MODULE:FACTORY (the evaluation data)")
    if args.trainloader or args.testloader:
        raise CLIError(
            "--trainloader/--testloader (pickled DataLoaders) are not supported: give --data "
            "and --test_data MODULE:FACTORY"
        )
    for legacy in ("dataset", "datapath"):
        if getattr(args, legacy):
            ctx.log(f"note: --{legacy} is ignored; the data come from --data {args.data}")
    if args.ngpu > 1:
        ctx.log("note: --ngpu is ignored; run one MPI rank per GPU with --mpi --cuda")

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif ctx.size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)

    ndim = 1 if args.y is None else 2
    x = _linspace(args.x)
    y = None if args.y is None else _linspace(args.y)
    explicit_dir = bool(args.dir_file)
    if args.dir_file:
        dir_file = Path(args.dir_file)
    else:
        folder = (
            Path(args.surf_file).parent
            if args.surf_file
            else Path(args.model_file).parent
            if args.model_file
            else Path.cwd()
        )
        dir_file = default_dir_file(args, ndim, folder)
    surf_file = Path(args.surf_file) if args.surf_file else default_surf_file(args, dir_file)
    dir_file, surf_file = dir_file.absolute(), surf_file.absolute()
    if surf_file == dir_file:
        raise CLIError("--surf_file and --dir_file must be different files")

    device = _device(args, ctx)
    model = build_model(args, device)
    train = build_data(args.data, "--data", args.data_kwargs, 0)
    test = build_data(args.test_data, "--test_data", args.data_kwargs, 1)
    subset = _subset(args, train)

    if ctx.comm is not None and ctx.size > 1:
        _agree_across_ranks(ctx, model, args, train, test, subset)

    # Directions: rank 0 creates / checks / saves them; the other ranks read the same file.
    from landscape.directions import load_directions

    note = ""
    if ctx.rank == 0:
        directions, note = _prepare_directions(args, model, ndim, dir_file, explicit_dir, ctx)
    if ctx.comm is not None and ctx.size > 1:
        ctx.comm.Barrier()
        if ctx.rank != 0:
            directions = load_directions(dir_file, model)
    directions = _fit_ndim(directions, ndim, dir_file)
    if note:
        ctx.log(f"directions: {note}")

    from landscape.surface import SurfaceEvaluator

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
            f"cannot evaluate --model {args.model} on --data {args.data}: {err}"
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
                "data_factory": args.data,
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
            ctx.log(
                f"surface: {surf_file} ({'x'.join(str(n) for n in reversed(writer.shape))} "
                f"points, {already} already done, {writer.size - already} to compute on "
                f"{ctx.size} rank{'s' if ctx.size > 1 else ''}; mode {evaluator.mode})"
            )
        from landscape.distributed import compute_surface, format_rank_report

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
            "resolved_directions": _resolved_direction_flags(args),
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
    sidecar = _write_sidecar(surf_file, config, run)
    ctx.log(f"wrote {surf_file} (and {sidecar.name})")
    if args.plot or args.show:
        trajectory = _read_projection(args.proj_file) if args.proj_file else None
        paths = _draw(surface, str(surf_file), args, trajectory)
        for path in paths:
            ctx.log(f"figure: {path}")


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
