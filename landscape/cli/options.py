"""The shared argument groups of :mod:`landscape.cli`'s parser and the argument types they use.

The groups model, directions, grid (``--x``/``--y``), data (with loss-landscape's unused data
flags, hidden) and plots, each added to a subcommand by one function; the argument types
(:func:`parse_range` / :func:`range_type` read ``MIN:MAX:NUM``) report a malformed value as an
argparse error (exit status 2). :func:`landscape.cli.parser.build_parser` builds the
subcommands from them.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from landscape.directions import DIR_TYPES
from landscape.evaluate import LOSSES

NORM_CHOICES = ("filter", "layer", "weight", "dfilter", "dlayer", "none", "")
IGNORE_CHOICES = ("biasbn", "none", "")


RANGE_HELP = "MIN:MAX:NUM with NUM an integer >= 1, e.g. -1:1:51"


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
        raise ValueError(f"expected {RANGE_HELP}, got {text!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"expected {RANGE_HELP}, got {text!r} (MIN and MAX are numbers)") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"expected {RANGE_HELP}, got {text!r} (MIN and MAX must be finite)")
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
                f"expected {RANGE_HELP}, got {text!r} (NUM must be an integer)"
            ) from None
        count = int(as_float)
    if count < 1:
        raise ValueError(f"expected {RANGE_HELP}, got {text!r} (NUM must be at least 1)")
    if count == 1 and low != high:
        raise ValueError(f"expected {RANGE_HELP}, got {text!r} (NUM = 1 needs MIN = MAX)")
    if count > 1 and low == high:
        raise ValueError(
            f"expected {RANGE_HELP}, got {text!r} (MIN = MAX: the {count} points would all be "
            f"the same point; give MAX > MIN, or NUM = 1 for that single point)"
        )
    return low, high, count


def range_type(text: str) -> tuple[float, float, int]:
    """An argparse type: :func:`parse_range`, its ``ValueError`` as an argparse error."""
    try:
        return parse_range(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def int_at_least(minimum: int, expected: str):
    """An argparse type: an integer >= ``minimum``, else "expected <expected>, got ..."."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
nonnegative_int = int_at_least(0, "an integer >= 0")


def factory_type(text: str) -> str:
    """An argparse type: ``MODULE:FACTORY`` (checked for the colon, resolved later)."""
    module, sep, attr = text.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise argparse.ArgumentTypeError(
            f"expected MODULE:FACTORY (e.g. samlab.models:digits_cnn), got {text!r}"
        )
    return text


def factory_or_name(text: str) -> str:
    """An argparse type: ``MODULE:FACTORY`` or a bare NAME registered as an entry point
    (:mod:`landscape.cli.named`; looked up when the command runs)."""
    if ":" in text:
        return factory_type(text)
    from landscape.cli.named import is_name

    if not is_name(text):
        raise argparse.ArgumentTypeError(
            f"expected MODULE:FACTORY (e.g. samlab.models:digits_cnn) or a registered NAME "
            f"(e.g. samformer), got {text!r}"
        )
    return text


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object (keyword arguments of a factory)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_grid_args(g: Any, x_default: Any, x_help: str) -> None:
    """``--x`` and ``--y`` (``MIN:MAX:NUM``; ``--y`` given: a 2D grid) in the group ``g``."""
    g.add_argument("--x", type=range_type, default=x_default, metavar="MIN:MAX:NUM", help=x_help)
    g.add_argument(
        "--y",
        type=range_type,
        default=None,
        metavar="MIN:MAX:NUM",
        help="y range; given, the grid is 2D",
    )


def add_model_args(p: argparse.ArgumentParser, required: bool) -> None:
    """The group ``model``: ``--model``, ``--model_kwargs``, ``--model_file``."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        type=factory_or_name,
        required=required,
        metavar="MODULE:FACTORY|NAME",
        help="importable factory returning the nn.Module (e.g. samlab.models:digits_cnn; "
        "resolved from the current directory and sys.path), or a NAME an installed package "
        "registers (entry-point group landscape.models, e.g. samformer: called with "
        "config=<the --model_file checkpoint's config or None> and --model_kwargs)",
    )
    g.add_argument(
        "--model_kwargs",
        type=json_object,
        default={},
        metavar="JSON",
        help="keyword arguments for the model factory, as a JSON object (a NAME with a plain "
        "state_dict needs the model's shape here)",
    )
    g.add_argument(
        "--model_file",
        default="",
        help="weights of the centre: a samlab checkpoint (dict with a 'model' entry) or a plain "
        "state_dict, loaded with torch.load(weights_only=True)",
    )


def add_direction_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """The group ``directions``: direction file, type, norms, ignore rules, seed, models
    (``seed=False``: the subcommand defines ``--seed`` itself)."""
    g = p.add_argument_group("directions")
    g.add_argument(
        "--dir_file",
        default="",
        help="direction file to use (created there if missing); default: created from --seed "
        "and saved next to the surface file under a name made of the settings",
    )
    g.add_argument(
        "--dir_type",
        choices=DIR_TYPES,
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
    if seed:
        g.add_argument("--seed", type=int, default=0, help="seed of the random directions (0)")
    g.add_argument(
        "--idx",
        type=nonnegative_int,
        default=0,
        help="repeat index: draws another direction (seed + idx) and tags the file names",
    )
    g.add_argument("--model_file2", default="", help="x direction = model_file2 - model_file")
    g.add_argument("--model_file3", default="", help="y direction = model_file3 - model_file")


def add_data_args(p: argparse.ArgumentParser, batch_size: int | None = 128) -> None:
    """The group ``data`` (and loss-landscape's unused data flags, hidden); ``batch_size``: the
    default of ``--batch_size`` (``None``: all samples in one batch)."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        type=factory_or_name,
        metavar="MODULE:FACTORY|NAME",
        help="factory returning the evaluation data: a DataLoader, a Dataset, an "
        "(inputs, targets) pair of tensors, or a (train, test) pair of loaders/datasets; or a "
        "NAME registered in the entry-point group landscape.datasets (split='train'). "
        "Wins over --dataset",
    )
    g.add_argument(
        "--test_data",
        type=factory_or_name,
        metavar="MODULE:FACTORY|NAME",
        help="factory for a test set evaluated at the same points (test_* metrics); for a "
        "(train, test) pair its second element; a registered NAME gets split='test'",
    )
    g.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="without --data: a data NAME registered in the entry-point group "
        "landscape.datasets (e.g. samformer_datasets, digits), called with name=--dataset_name, "
        "config=<the --model_file checkpoint's config or None>, split='train' and --data_kwargs",
    )
    g.add_argument(
        "--dataset_name",
        default=None,
        metavar="NAME",
        help="the data set inside the --dataset family (e.g. ETTh1); alone, the registered name",
    )
    g.add_argument(
        "--data_kwargs",
        type=json_object,
        default={},
        metavar="JSON",
        help="keyword arguments for the data factories, as a JSON object",
    )
    g.add_argument(
        "--batch_size",
        type=positive_int,
        default=batch_size,
        help=f"evaluation batch ({batch_size or 'all samples in one batch'})",
    )
    g.add_argument(
        "--loss_name",
        "-l",
        choices=LOSSES,
        default="crossentropy",
        help="crossentropy (loss and accuracy) or mse (MSE and MAE)",
    )
    g.add_argument(
        "--data_split",
        type=positive_int,
        default=1,
        help="S > 1: evaluate on part --split_idx of a seeded random split into S parts",
    )
    g.add_argument(
        "--split_idx", type=nonnegative_int, default=0, help="which part of --data_split (0)"
    )
    g.add_argument(
        "--subset", type=positive_int, default=None, help="evaluate on N seeded random samples"
    )
    g.add_argument("--subset_seed", type=int, default=0, help="seed of --subset / --data_split (0)")
    g.add_argument("--test_subset", type=positive_int, default=None, help="N random test samples")
    legacy = p.add_argument_group("loss-landscape data flags (not used: give --data)")
    legacy.add_argument("--datapath", default=None, help=argparse.SUPPRESS)
    legacy.add_argument("--raw_data", action="store_true", help=argparse.SUPPRESS)
    legacy.add_argument("--trainloader", default="", help=argparse.SUPPRESS)
    legacy.add_argument("--testloader", default="", help=argparse.SUPPRESS)


def add_plot_args(p: argparse.ArgumentParser) -> None:
    """The group ``plots``: the metric, levels, limits, scales and formats of the figures."""
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
