"""The ``landscape`` command lines of the demo's landscape section and the files they write.

For one model of the comparison: the arguments of ``python -m landscape surface`` for its 2D
surface and its 1D slice (:func:`surface_arguments`: the digits CNN of :data:`MODEL_FACTORY`
evaluated on the training digits of :data:`DATA_FACTORY`, filter-normalised directions drawn
from a fixed seed, BatchNorm in eval mode), the files under ``<output>/landscape/``
(:func:`surface_files`), and whether files already there may be reused (:func:`forget_stale`
deletes those made for another checkpoint or grid; :func:`is_complete` tells a finished surface
from one to resume). :class:`LandscapeSettings` holds the grids, the evaluation data and the
number of ranks: :data:`FULL_SETTINGS` for ``make demo``, :data:`SMOKE_SETTINGS` for
``--smoke``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape.io import atomic_write

MODEL_FACTORY = "samlab.models:digits_cnn"
DATA_FACTORY = "samlab.datasets:digits_eval_data"


@dataclass(frozen=True)
class LandscapeSettings:
    """Grids, evaluation data and launch of the landscape section."""

    grid: int  # 2D points per side on [-span, span]
    points_1d: int  # 1D points on [-span, span]
    samples: int  # seeded random subset of the training digits evaluated at every point
    span: float = 1.0
    rho: float = 0.05
    direction_seed: int = 0
    subset_seed: int = 0
    batch_size: int = 128
    ranks: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: ``make demo``: 441 + 41 points per model; 90 s wall, 102 CPU s for both models on 2 ranks
FULL_SETTINGS = LandscapeSettings(grid=21, points_1d=41, samples=1024)
#: ``--smoke``: 25 + 7 points per model on 128 digits
SMOKE_SETTINGS = LandscapeSettings(grid=5, points_1d=7, samples=128)


def surface_arguments(
    checkpoint: Path,
    dir_file: Path,
    surf_file: Path,
    settings: LandscapeSettings,
    *,
    ndim: int,
    data_kwargs: Mapping[str, Any],
    samples: int,
) -> list[str]:
    """The arguments after ``python -m landscape`` for the ``ndim``-D surface of ``checkpoint``
    (``ndim=1``: along the x direction of the 2D surface's direction file)."""
    span = f"{-settings.span:g}:{settings.span:g}"
    args = [
        "surface",
        "--model",
        MODEL_FACTORY,
        "--model_file",
        str(checkpoint),
        "--data",
        DATA_FACTORY,
        "--data_kwargs",
        json.dumps(dict(data_kwargs), sort_keys=True),
        "--subset",
        str(samples),
        "--subset_seed",
        str(settings.subset_seed),
        "--batch_size",
        str(settings.batch_size),
        "--loss_name",
        "crossentropy",
        "--bn_mode",
        "eval",
        "--dir_type",
        "weights",
        "--xnorm",
        "filter",
        "--xignore",
        "biasbn",
        "--seed",
        str(settings.direction_seed),
        "--dir_file",
        str(dir_file),
        "--surf_file",
        str(surf_file),
        "--no_progress",
    ]
    if ndim == 2:
        args += [f"--x={span}:{settings.grid}", f"--y={span}:{settings.grid}"]
        args += ["--ynorm", "filter", "--yignore", "biasbn"]
    else:  # the x direction of the 2D direction file
        args += [f"--x={span}:{settings.points_1d}"]
    return args


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes, in hex (the checkpoint a surface belongs to)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_when_unlocked(path: Path) -> Any:
    """``load_surface``, retrying briefly while a just-finished rank still holds the lock."""
    from landscape.io import load_surface

    deadline = time.monotonic() + 10.0
    while True:
        try:
            return load_surface(path)
        except ValueError as err:
            if "lock" not in str(err).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a surface file with every point computed."""
    if not path.is_file():
        return False
    try:
        return bool(load_when_unlocked(path).done.all())
    except (ValueError, OSError):
        return False


def surface_files(folder: Path, name: str) -> dict[str, Path]:
    """The direction file and the 2D and 1D surface files of optimizer ``name``."""
    return {
        "directions": folder / f"{name}_directions.h5",
        "2d": folder / f"{name}_2d.h5",
        "1d": folder / f"{name}_1d.h5",
    }


def forget_stale(files: Mapping[str, Path], stamp: Path, inputs: Mapping[str, Any]) -> bool:
    """Delete ``files`` (and sidecars) made for other inputs; ``True`` if they may be reused."""
    try:
        previous = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        previous = None
    if previous == json.loads(json.dumps(inputs)):
        return True
    for path in files.values():
        for stale in (path, path.with_name(path.name + ".json")):
            stale.unlink(missing_ok=True)
    atomic_write(stamp, json.dumps(inputs, indent=2, sort_keys=True) + "\n")
    return False
