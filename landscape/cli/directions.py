"""The directions of a ``surface`` run of :mod:`landscape.cli`, and its default file names.

The direction flags resolved against samlab's defaults (:data:`FLAG_DEFAULTS`);
loss-landscape's direction and surface file names (:func:`default_dir_file`,
:func:`default_surf_file`, both resolved by :func:`grid_files`, shared with ``hessian
--eigmap``); the directions created from the flags, or loaded from a file and
checked against them.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from landscape.cli.inputs import CLIError, Context, load_state

FLAG_DEFAULTS = {
    "xnorm": "filter",
    "ynorm": "filter",
    "xignore": "biasbn",
    "yignore": "biasbn",
    "dir_type": "weights",
    "note": "samlab defaults; loss-landscape's are xnorm=ynorm='' (none) and "
    "xignore=yignore='' (1-D tensors moved by a copy of themselves)",
}


def format_range(spec: tuple[float, float, int]) -> str:
    """``(min, max, num)`` as loss-landscape writes it in file names: ``[min,max,num]``."""
    low, high, count = spec
    return f"[{float(low)},{float(high)},{int(count)}]"


def sanitize(text: str) -> str:
    """``text`` with everything but letters, digits and ``._=+-`` replaced, for a file name."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "model"


def resolved_direction_flags(args: argparse.Namespace) -> dict[str, str]:
    """Explicit flags, else samlab's defaults (an explicit '' means none)."""
    out = {}
    for key in ("xnorm", "ynorm", "xignore", "yignore", "dir_type"):
        value = getattr(args, key)
        out[key] = FLAG_DEFAULTS[key] if value is None else (value or "none")
    return out


def default_dir_file(args: argparse.Namespace, ndim: int, folder: Path) -> Path:
    """loss-landscape's naming: ``<model>_<dir_type>_xignore=.._xnorm=..[...].h5`` in folder."""
    flags = resolved_direction_flags(args)
    base = os.path.basename(args.model_file) if args.model_file else sanitize(args.model)
    name = f"{base}_{flags['dir_type']}"
    random_used = False
    if args.model_file2:
        name += f"_model2={sanitize(os.path.basename(args.model_file2))}"
    else:
        name += f"_xignore={flags['xignore']}_xnorm={flags['xnorm']}"
        random_used = True
    if ndim == 2:
        if args.model_file3:
            name += f"_model3={sanitize(os.path.basename(args.model_file3))}"
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
    name = f"{dir_file.name}_{format_range(args.x)}"
    if args.y is not None:
        name += f"x{format_range(args.y)}"
    if args.data_split > 1:
        name += f"_datasplit={args.data_split}_splitidx={args.split_idx}"
    if args.subset is not None:
        name += f"subset_option={args.subset}"
    return dir_file.parent / f"{name}.h5"


def grid_files(args: argparse.Namespace, ndim: int, suffix: str = "") -> tuple[Path, Path, bool]:
    """``(dir_file, surf_file, explicit dir_file)`` of a grid run, absolute: ``--dir_file`` or
    the default name next to ``--surf_file`` (else ``--model_file``, else here), and
    ``--surf_file`` or the default name made of the direction file and the grid (``suffix``
    before ``.h5``)."""
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
    if args.surf_file:
        surf_file = Path(args.surf_file)
    else:
        surf_file = default_surf_file(args, dir_file)
        surf_file = surf_file.with_name(surf_file.stem + suffix + surf_file.suffix)
    dir_file, surf_file = dir_file.absolute(), surf_file.absolute()
    if surf_file == dir_file:
        raise CLIError("--surf_file and --dir_file must be different files")
    return dir_file, surf_file, bool(args.dir_file)


def same_directions(a: Any, b: Any) -> bool:
    """Whether two :class:`~landscape.directions.Directions` hold equal tensors (and kind)."""
    import torch

    if a.dir_type != b.dir_type or a.names() != b.names() or (a.y is None) != (b.y is None):
        return False
    pairs = [(a.x, b.x)] + ([] if a.y is None else [(a.y, b.y)])
    return all(torch.equal(p[n], q[n]) for p, q in pairs for n in p)


def new_directions(args: argparse.Namespace, model: Any, ndim: int) -> Any:
    """The directions the flags ask for (``--seed`` + ``--idx``, norms, other models)."""
    from landscape.directions import create_directions

    flags = resolved_direction_flags(args)
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


def prepare_directions(
    args: argparse.Namespace, model: Any, ndim: int, dir_file: Path, explicit: bool, ctx: Context
) -> tuple[Any, str]:
    """Rank 0: load, check or create+save the directions. Returns (directions, what happened)."""
    from landscape.directions import load_directions, save_directions

    if dir_file.exists():
        directions = load_directions(dir_file, model, dir_type=args.dir_type)
        if explicit:
            return directions, f"loaded {dir_file}"
        fresh = new_directions(args, model, ndim)
        if same_directions(directions, fresh):
            return directions, f"reused {dir_file} (same directions)"
        if not args.overwrite:
            raise CLIError(
                f"direction file {dir_file} exists but holds other directions (another model, "
                "seed or settings); pass it as --dir_file to use it, or --overwrite to replace it"
            )
        save_directions(dir_file, fresh)
        return fresh, f"replaced {dir_file}"
    directions = new_directions(args, model, ndim)
    dir_file.parent.mkdir(parents=True, exist_ok=True)
    save_directions(dir_file, directions)
    return directions, f"created {dir_file}"


def fit_ndim(directions: Any, ndim: int, dir_file: Path) -> Any:
    """``directions`` for an ``ndim`` surface: the x direction alone of a 2D file for 1D."""
    from landscape.directions import Directions

    if ndim == 2 and directions.y is None:
        raise CLIError(f"--dir_file {dir_file} holds one direction but --y asks for a 2D surface")
    if ndim == 1 and directions.y is not None:
        meta = {**directions.meta, "used": "x direction of a 2D direction file"}
        return Directions(x=directions.x, y=None, dir_type=directions.dir_type, meta=meta)
    return directions


def shared_directions(
    args: argparse.Namespace, model: Any, ndim: int, dir_file: Path, explicit: bool, ctx: Context
) -> Any:
    """The directions of an ``ndim`` grid on every rank: rank 0 loads, checks or creates and
    saves them (:func:`prepare_directions`), the other ranks then read the same file."""
    from landscape.directions import load_directions

    note = ""
    if ctx.rank == 0:
        directions, note = prepare_directions(args, model, ndim, dir_file, explicit, ctx)
    if ctx.comm is not None and ctx.size > 1:
        ctx.comm.Barrier()
        if ctx.rank != 0:
            directions = load_directions(dir_file, model)
    directions = fit_ndim(directions, ndim, dir_file)
    if note:
        ctx.log(f"directions: {note}")
    return directions
