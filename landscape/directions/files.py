"""Direction files of :mod:`landscape.directions`: HDF5 by tensor name, and loss-landscape's.

:func:`save_directions` writes groups ``xdirection/`` and ``ydirection/`` with one dataset per
tensor name; :func:`load_directions` reads them back (checked against a model) and reads
loss-landscape's position-indexed files given the model. ``h5py`` is imported inside the
functions that need it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.directions.normalise import cosine
from landscape.directions.value import DIR_TYPES, Directions, check_dir_type, direction_targets
from landscape.optional import import_optional

SCHEMA_VERSION = 1
_ARCH_HINT = "direction file from another architecture?"
_NEEDS_H5PY = "landscape direction files need h5py: pip install h5py (or conda install h5py)"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _encode_attr(value: Any) -> tuple[Any, bool]:
    """(attribute value, JSON-encoded?) for one meta entry."""
    if isinstance(value, (bool, int, float, str)) and not (
        isinstance(value, float) and not math.isfinite(value)
    ):
        return value, False
    return json.dumps(value), True


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def save_directions(path: str | os.PathLike, directions: Directions) -> Path:
    """Write ``directions`` to an HDF5 file (overwriting it), atomically.

    Layout: groups ``xdirection/`` and (2D) ``ydirection/`` with one float32 dataset per
    tensor **name**, in model order (the groups track creation order); file attributes: every
    ``meta`` entry (non-scalars and ``None`` JSON-encoded, their keys listed in the JSON
    attribute ``json_keys``), ``dir_type``, ``names`` (JSON list) and ``schema_version``. For
    PCA directions the datasets ``explained_variance_ratio_``, ``explained_variance_`` and
    ``singular_values_`` are written too, as loss-landscape's plotting reads them.

    .. note::
       loss-landscape stores datasets ``"0"``, ``"1"``, ... by position, so a file written for
       one architecture is silently applied to another; samlab stores names and checks them.
    """
    # landscape.io imports landscape.evaluate, which imports this package: import it here.
    from landscape.io.atomic import atomic_path

    h5py = import_optional("h5py", _NEEDS_H5PY)
    path = Path(path)
    for name in directions.names():
        if "/" in name:
            raise ValueError(f"tensor name {name!r} contains '/', which HDF5 cannot store")
    with atomic_path(path, make_parents=False) as tmp:
        with h5py.File(tmp, "w") as f:
            groups = [("xdirection", directions.x)]
            if directions.y is not None:
                groups.append(("ydirection", directions.y))
            for group_name, direction in groups:
                group = f.create_group(group_name, track_order=True)
                for name, tensor in direction.items():
                    data = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
                    group.create_dataset(name, data=data)
            json_keys = []
            for key, value in directions.meta.items():
                encoded, is_json = _encode_attr(value)
                f.attrs[key] = encoded
                if is_json:
                    json_keys.append(key)
            f.attrs["json_keys"] = json.dumps(json_keys)
            f.attrs["names"] = json.dumps(directions.names())
            f.attrs["dir_type"] = directions.dir_type
            f.attrs["schema_version"] = SCHEMA_VERSION
            for key in ("explained_variance_ratio", "explained_variance", "singular_values"):
                if key in directions.meta:
                    f.create_dataset(key + "_", data=np.asarray(directions.meta[key], np.float64))
    return path


def _read_group(group: Any, names: Sequence[str]) -> dict[str, Tensor]:
    return {
        name: torch.from_numpy(np.array(group[name][()], dtype=np.float32, copy=True))
        for name in names
    }


def _check_against(
    direction_names: Sequence[str],
    shapes: Mapping[str, tuple[int, ...]],
    targets: Mapping[str, Tensor],
    path: Path,
) -> None:
    for name, target in targets.items():
        if name not in shapes:
            raise ValueError(f"{path}: the model's tensor {name!r} has no direction ({_ARCH_HINT})")
        if tuple(shapes[name]) != tuple(target.shape):
            raise ValueError(
                f"{path}: direction {name!r} has shape {tuple(shapes[name])}, the model's tensor "
                f"{tuple(target.shape)} ({_ARCH_HINT})"
            )
    for name in direction_names:
        if name not in targets:
            raise ValueError(f"{path}: direction {name!r} is not in the model ({_ARCH_HINT})")


def _positional_targets(
    model: nn.Module, n: int, shapes: Sequence[tuple[int, ...]], dir_type: str | None, path: Path
) -> tuple[str, list[str | None]]:
    """(dir_type, name per position or None for positions samlab drops) for a loss-landscape
    file with ``n`` positional datasets."""
    candidates = {
        "weights": [(name, tuple(p.shape)) for name, p in model.named_parameters()],
        "states": [
            (name, tuple(v.shape))
            for name, v in model.state_dict(keep_vars=True).items()
            if isinstance(v, Tensor)
        ],
    }
    order = [dir_type] if dir_type is not None else ["weights", "states"]
    first_error = None
    for kind in order:
        entries = candidates[kind]
        if len(entries) != n:
            first_error = first_error or (
                f"{path}: {n} directions by position, the model has {len(entries)} "
                f"{'parameters' if kind == 'weights' else 'state_dict entries'} ({_ARCH_HINT})"
            )
            continue
        mismatch = next(
            (i for i, (_, shape) in enumerate(entries) if tuple(shapes[i]) != shape), None
        )
        if mismatch is not None:
            first_error = first_error or (
                f"{path}: direction {mismatch} has shape {tuple(shapes[mismatch])}, the model's "
                f"{kind} entry {mismatch} ({entries[mismatch][0]!r}) {entries[mismatch][1]} "
                f"({_ARCH_HINT})"
            )
            continue
        keep = set(direction_targets(model, kind))
        return kind, [name if name in keep else None for name, _ in entries]
    raise ValueError(first_error)


def load_directions(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    dir_type: str | None = None,
) -> Directions:
    """Read a direction file written by :func:`save_directions` or by loss-landscape.

    samlab files are read by name; with ``model`` given, their names and shapes must be
    exactly those of ``direction_targets(model, dir_type)``. loss-landscape files (datasets
    ``"0"``, ``"1"``, ... by position) need ``model``: positions are mapped to its
    ``named_parameters()`` order (``weights``) or its ``state_dict()`` order (``states``),
    chosen by the count and shapes unless ``dir_type`` says which; integer buffers and tied
    duplicates are dropped (samlab never moves them). Their ``meta`` has ``kind="file"`` and
    ``source="loss-landscape"`` (plus ``explained_variance_ratio`` for PCA files).

    Args:
        path: the HDF5 file.
        model: the model the directions belong to (checked against; required for
            loss-landscape files).
        dir_type: expected ``"weights"`` or ``"states"`` (``None``: as stored / inferred).

    Raises:
        ValueError: the file is missing, not HDF5 (corrupt or foreign), not a direction file,
            or does not match ``model`` (naming the first mismatch).
    """
    h5py = import_optional("h5py", _NEEDS_H5PY)
    path = Path(path)
    if dir_type is not None:
        check_dir_type(dir_type)
    if not path.is_file():
        raise ValueError(f"direction file {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, RuntimeError, ...
        raise ValueError(
            f"{path} is not a readable HDF5 file (corrupt or foreign?): {err}"
        ) from err
    try:
        return _load_open(path, handle, model, dir_type)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a damaged file makes h5py raise
        detail = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{path} is a damaged direction file: {detail}") from err


def _load_open(
    path: Path, handle: Any, model: nn.Module | None, dir_type: str | None
) -> Directions:
    h5py = import_optional("h5py", _NEEDS_H5PY)
    with handle as f:
        if "xdirection" not in f or not isinstance(f["xdirection"], h5py.Group):
            raise ValueError(f"{path} is not a direction file (no 'xdirection' group)")
        x_group = f["xdirection"]
        y_group = f.get("ydirection")
        if y_group is not None and not isinstance(y_group, h5py.Group):
            raise ValueError(f"{path}: 'ydirection' is not a group")
        attrs = {key: _decode_attr(value) for key, value in f.attrs.items()}
        try:
            if "schema_version" in attrs:
                return _load_named(path, x_group, y_group, attrs, model, dir_type)
            return _load_positional(path, f, x_group, y_group, model, dir_type)
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: malformed direction file ({err})") from err


def _load_named(
    path: Path,
    x_group: Any,
    y_group: Any,
    attrs: dict[str, Any],
    model: nn.Module | None,
    dir_type: str | None,
) -> Directions:
    if int(attrs["schema_version"]) > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema_version {attrs['schema_version']}, newer than this landscape "
            f"({SCHEMA_VERSION})"
        )
    stored_type = attrs.get("dir_type")
    if stored_type not in DIR_TYPES:
        raise ValueError(f"{path}: dir_type attribute {stored_type!r} is not one of {DIR_TYPES}")
    if dir_type is not None and dir_type != stored_type:
        raise ValueError(f"{path} holds {stored_type!r} directions, {dir_type!r} was asked for")
    names = json.loads(attrs["names"]) if "names" in attrs else list(x_group.keys())
    if set(names) != set(x_group.keys()):
        raise ValueError(f"{path}: the 'names' attribute does not match the xdirection datasets")
    if y_group is not None and set(y_group.keys()) != set(names):
        raise ValueError(f"{path}: xdirection and ydirection hold different names")
    if model is not None:
        targets = direction_targets(model, stored_type)
        shapes = {name: tuple(x_group[name].shape) for name in names}
        _check_against(names, shapes, targets, path)
        names = list(targets)  # model order
    x = _read_group(x_group, names)
    y = None if y_group is None else _read_group(y_group, names)
    json_keys = set(json.loads(attrs.get("json_keys", "[]")))
    reserved = {"json_keys", "names", "dir_type", "schema_version"}
    meta = {
        key: json.loads(value) if key in json_keys else value
        for key, value in attrs.items()
        if key not in reserved
    }
    return Directions(x=x, y=y, dir_type=stored_type, meta=meta)


def _load_positional(
    path: Path,
    f: Any,
    x_group: Any,
    y_group: Any,
    model: nn.Module | None,
    dir_type: str | None,
) -> Directions:
    keys = list(x_group.keys())
    if not keys or not all(k.isdigit() for k in keys):
        raise ValueError(
            f"{path} has no schema_version and its xdirection datasets are not positional "
            "('0', '1', ...): not a direction file"
        )
    if model is None:
        raise ValueError(
            f"{path} is a loss-landscape direction file (datasets by position); pass model= "
            "to map positions to tensor names"
        )
    positions = sorted(keys, key=int)
    if positions != [str(i) for i in range(len(positions))]:
        raise ValueError(f"{path}: positional datasets are not 0..{len(positions) - 1}")
    if y_group is not None and sorted(y_group.keys(), key=int) != positions:
        raise ValueError(f"{path}: xdirection and ydirection hold different positions")
    shapes = [tuple(x_group[p].shape) for p in positions]
    kind, names = _positional_targets(model, len(positions), shapes, dir_type, path)

    def read(group: Any) -> dict[str, Tensor]:
        return {
            name: torch.from_numpy(np.array(group[p][()], dtype=np.float32, copy=True))
            for p, name in zip(positions, names)
            if name is not None
        }

    x = read(x_group)
    y = None if y_group is None else read(y_group)
    meta: dict[str, Any] = {
        "kind": "file",
        "source": "loss-landscape",
        "seed": None,
        "xnorm": None,
        "ynorm": None,
        "xignore": None,
        "yignore": None,
        "same_dir": False,
        "orthogonalized": False,
        "cosine": None if y is None else cosine(x, y),
    }
    for key in ("explained_variance_ratio", "explained_variance", "singular_values"):
        if key + "_" in f:
            meta[key] = [float(v) for v in np.asarray(f[key + "_"][()]).reshape(-1)]
    return Directions(x=x, y=y, dir_type=kind, meta=meta)
