"""What the commands of :mod:`landscape.cli` build from their flags: models and data.

:class:`CLIError` (a user mistake, reported in one line) and :class:`Context` (the MPI
communicator and this process's rank); the model and the data from ``MODULE:FACTORY`` names
(:func:`resolve_factory`), checkpoints (:func:`load_state`), subsets and splits of the data and
the grid axes. ``--model``, ``--data`` and ``--dataset`` also take names that installed
packages register as entry points (:mod:`landscape.cli.named`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from landscape.cli.named import (
    DATA_GROUP,
    MODEL_GROUP,
    NamedFactories,
    call_named,
    is_factory_spec,
    is_name,
)


class CLIError(Exception):
    """A user mistake: reported as one line, without a traceback."""


class Context:
    """The MPI communicator (if any), this process's rank, and where bare ``--model`` /
    ``--dataset`` names are looked up (``names``: a
    :class:`~landscape.cli.named.NamedFactories`; ``None``: the installed entry points)."""

    def __init__(self, names: Any = None) -> None:
        self.names = names
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


def read_checkpoint(path: str, flag: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(state_dict, config)`` of a samlab checkpoint (its ``model`` and ``config`` entries), a
    ``{'state_dict': ...}`` dict or a plain state_dict (config ``None``).

    A checkpoint's checksum is verified (:func:`landscape.io.check_checkpoint`; a file without
    one loads with a note on stderr) and non-finite weights are refused, naming the file."""
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
    from landscape.io.checkpoints import check_checkpoint, check_finite_weights

    try:
        note = check_checkpoint(obj, path)
    except ValueError as err:
        raise CLIError(f"{flag} {err}") from None
    if note is not None:
        print(note, file=sys.stderr)
    config = None
    if isinstance(obj, Mapping):
        saved = obj.get("config")
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                config = dict(saved) if isinstance(saved, Mapping) else None
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = dict(obj)
            if all(k.startswith("module.") for k in state):  # saved from DataParallel
                state = {k[len("module.") :]: v for k, v in state.items()}
            try:
                check_finite_weights(state, path)
            except ValueError as err:
                raise CLIError(f"{flag} {err}") from None
            return state, config
    raise CLIError(
        f"{flag} {path}: neither a state_dict nor a checkpoint dict with a 'model' entry"
    )


def load_state(path: str, flag: str) -> dict[str, Any]:
    """A state_dict from a samlab checkpoint, a ``{'state_dict': ...}`` dict or a state_dict."""
    return read_checkpoint(path, flag)[0]


def checkpoint_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``config`` entry of ``--model_file`` (a samlab checkpoint's), else ``None``."""
    if not getattr(args, "model_file", ""):
        return None
    return read_checkpoint(args.model_file, "--model_file")[1]


def build_model(args: argparse.Namespace, device: Any = None, names: Any = None) -> Any:
    """The model from ``--model`` (+ ``--model_file``), in eval mode, on ``device``.

    ``--model MODULE:FACTORY`` is called with ``--model_kwargs``; a bare ``--model NAME`` is
    the factory registered under that name (:mod:`landscape.cli.named`; ``names`` is a
    :class:`~landscape.cli.named.NamedFactories`, default the installed entry points), called
    with ``config=`` the checkpoint's config (or ``None``) and ``--model_kwargs``.
    """
    from torch import nn

    state, config = (None, None)
    if args.model_file:
        state, config = read_checkpoint(args.model_file, "--model_file")
    if is_factory_spec(args.model):
        model = call_factory(args.model, "--model", args.model_kwargs)
    else:
        factory = (names or NamedFactories()).load(MODEL_GROUP, args.model, "--model")
        model = call_named(factory, "--model", args.model, {"config": config, **args.model_kwargs})
    if not isinstance(model, nn.Module):
        raise CLIError(
            f"--model {args.model}: the factory returned {type(model).__name__}, not an nn.Module"
        )
    if state is not None:
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


def data_source(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(spec, dataset_name)`` of the evaluation data: ``--data`` where given, else
    ``--dataset`` (a registered family such as ``samformer_datasets``) with ``--dataset_name``
    (the data set inside it), else ``--dataset_name`` alone as the registered name."""
    dataset = getattr(args, "dataset", None)
    dataset_name = getattr(args, "dataset_name", None)
    if args.data is not None:
        return args.data, None
    if dataset:
        if is_spec_or_name(dataset):
            return dataset, dataset_name
        raise CLIError(f"--dataset {dataset!r}: expected a registered NAME or MODULE:FACTORY")
    if dataset_name:
        return dataset_name, None
    return None, None


def data_flag(args: argparse.Namespace) -> str:
    """The flag the evaluation data come from (for messages): ``data``, ``dataset`` or
    ``dataset_name``."""
    if args.data is not None:
        return "data"
    return "dataset" if getattr(args, "dataset", None) else "dataset_name"


def is_spec_or_name(text: str) -> bool:
    """``MODULE:FACTORY`` or a bare registered NAME."""
    return is_factory_spec(text) or is_name(text)


def build_data(
    spec: str | None,
    flag: str,
    kwargs: Mapping[str, Any],
    part: int,
    *,
    names: Any = None,
    config: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
) -> Any:
    """What a data factory returns, reduced to one data set (``part`` 0 train, 1 test).

    ``spec`` ``MODULE:FACTORY`` is called with ``kwargs``; a bare registered name (group
    ``landscape.datasets``) with ``name=dataset_name, config=config, split="train"|"test"``
    and ``kwargs``.
    """
    if spec is None:
        return None
    if is_factory_spec(spec):
        value = call_factory(spec, flag, kwargs)
    else:
        factory = (names or NamedFactories()).load(DATA_GROUP, spec, flag)
        split = "train" if part == 0 else "test"
        options = {"name": dataset_name, "config": config, "split": split, **kwargs}
        value = call_named(factory, flag, spec, options)
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
