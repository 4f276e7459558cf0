"""State_dicts for :mod:`landscape.directions`: from modules, checkpoint dicts or checkpoint
paths, looked up by name and checked by shape, and the difference of two models."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def as_state(obj: Any, what: str) -> Mapping[str, Tensor]:
    """A state_dict from a module, a state_dict, a checkpoint dict or a checkpoint path."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, (str, os.PathLike)):
        return load_checkpoint_state(Path(obj))
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
        return obj
    raise TypeError(
        f"{what} must be an nn.Module, a state_dict, a checkpoint dict with a 'model' entry or "
        f"a checkpoint path, got {type(obj).__name__}"
    )


def load_checkpoint_state(path: Path) -> Mapping[str, Tensor]:
    """The state_dict in a checkpoint file (``weights_only=True``; a ``model`` entry or plain)."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, foreign, or needs unpickling arbitrary objects
        raise ValueError(f"cannot load checkpoint {path} with weights_only=True: {err}") from err
    if isinstance(data, Mapping):
        for key in ("model", "state_dict"):
            inner = data.get(key)
            if isinstance(inner, Mapping):
                return inner
        if all(isinstance(v, Tensor) for v in data.values()):
            return data
    raise ValueError(
        f"{path} is neither a state_dict nor a checkpoint dict with a 'model' (or 'state_dict') "
        "entry"
    )


def lookup(state: Mapping[str, Any], name: str, shape: torch.Size, what: str) -> Tensor:
    """``state[name]``, checked to be a tensor of ``shape`` (else a ``ValueError`` naming it)."""
    if name not in state:
        raise ValueError(f"{what} has no entry {name!r} (a checkpoint of another architecture?)")
    value = state[name]
    if not isinstance(value, Tensor):
        raise ValueError(f"{what}[{name!r}] is not a tensor")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"{what}[{name!r}] has shape {tuple(value.shape)}, the model {tuple(shape)} "
            "(a checkpoint of another architecture?)"
        )
    return value


def difference(targets: Mapping[str, Tensor], other: Any, what: str) -> dict[str, Tensor]:
    """``other - targets``, name by name, as float32 CPU tensors (computed in >= float32)."""
    state = as_state(other, what)
    out = {}
    for name, w in targets.items():
        w2 = lookup(state, name, w.shape, what)
        dtype = torch.promote_types(w.dtype, torch.float32)
        w_cpu = w.detach().to(device="cpu", dtype=dtype)
        out[name] = (w2.detach().to(device="cpu", dtype=dtype) - w_cpu).to(torch.float32)
    return out
