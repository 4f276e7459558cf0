"""What the commands of :mod:`landscape.cli` build from their flags.

:class:`CLIError` (a user mistake, reported in one line) and :class:`_Context` (the MPI
communicator and this process's rank); the model and the data from ``MODULE:FACTORY`` names
(:func:`resolve_factory`), checkpoints (:func:`load_state`), subsets and splits of the data,
loss-landscape's direction and surface file names (:func:`default_dir_file`,
:func:`default_surf_file`) and the directions of a ``surface`` run: created, or loaded and
checked against the flags.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

FLAG_DEFAULTS = {
    "xnorm": "filter",
    "ynorm": "filter",
    "xignore": "biasbn",
    "yignore": "biasbn",
    "dir_type": "weights",
    "note": "samlab defaults; loss-landscape's are xnorm=ynorm='' (none) and "
    "xignore=yignore='' (1-D tensors moved by a copy of themselves)",
}


class CLIError(Exception):
    """A user mistake: reported as one line, without a traceback."""


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
