"""What the commands of :mod:`landscape.cli` build from their flags: models and data.

:class:`CLIError` (a user mistake, reported in one line) and :class:`Context` (the MPI
communicator and this process's rank); the model and the data from ``MODULE:FACTORY`` names
(:func:`resolve_factory`), checkpoints (:func:`load_state`), subsets and splits of the data and
the grid axes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any


class CLIError(Exception):
    """A user mistake: reported as one line, without a traceback."""


class Context:
    """The MPI communicator (if any) and this process's rank."""

    def __init__(self) -> None:
        self.comm: Any = None
        self.rank = 0
        self.size = 1

    def log(self, message: str) -> None:
        """Print ``message`` on rank 0 only."""
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


def call_factory(spec: str, flag: str, kwargs: Mapping[str, Any]) -> Any:
    """What the factory ``spec`` returns when called with ``kwargs``."""
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

    model = call_factory(args.model, "--model", args.model_kwargs)
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


def split_pair(value: Any) -> tuple[Any, Any] | None:
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
    value = call_factory(spec, flag, kwargs)
    pair = split_pair(value)
    if pair is not None:
        value = pair[part]
        if value is None:
            raise CLIError(f"{flag} {spec}: the factory returned no test part")
    if value is None:
        raise CLIError(f"{flag} {spec}: the factory returned None")
    return value


def data_length(data: Any, flag: str) -> int:
    """The number of samples of a data set (a DataLoader's, a pair's or a Dataset's)."""
    from torch.utils.data import DataLoader

    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "__len__"):
        return len(data[0])
    try:
        return len(data)
    except TypeError:
        raise CLIError(f"{flag}: --data_split needs a data set with a length") from None


def subset_option(args: argparse.Namespace, data: Any) -> Any:
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
    size = data_length(data, "--data")
    if size < args.data_split:
        raise CLIError(f"--data_split {args.data_split} is larger than the data ({size} samples)")
    generator = torch.Generator().manual_seed(int(args.subset_seed))
    order = torch.randperm(size, generator=generator).numpy()
    return np.sort(np.array_split(order, args.data_split)[args.split_idx]).astype(np.int64)


def linspace(spec: tuple[float, float, int]) -> Any:
    """The coordinates of a ``MIN:MAX:NUM`` range."""
    import numpy as np

    low, high, count = spec
    return np.linspace(low, high, int(count))
