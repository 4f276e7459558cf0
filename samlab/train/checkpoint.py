"""Checkpoints: a dict loadable with ``torch.load(..., weights_only=True)`` (DESIGN.md §6).

Keys: ``model`` (state_dict), ``optimizer``, ``scheduler``, ``rng``, ``epoch``, ``config`` and
``sha256``, a checksum of the rest (:func:`landscape.io.payload_sha256`) that
:func:`load_checkpoint` verifies: a file whose bytes changed is an error naming it, not NaN
metrics. A plain state_dict or a checkpoint written before the checksum loads with a one-line
note on stderr; non-finite weights are an error naming the file.

Writes go through :func:`landscape.io.atomic_path` (a uniquely named temporary file, fsync,
rename), so a kill, SIGTERM or full disk mid-write leaves the previous file intact and two
runs never share a temporary name; the JSON config beside it is written with
:func:`landscape.io.atomic_write`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from landscape.io import (
    DIGEST_KEY,
    atomic_path,
    atomic_write,
    check_checkpoint,
    check_finite_weights,
    payload_sha256,
)

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_dict(config: Any) -> Any:
    if config is None:
        return None
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=str))


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int = 0,
    config: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a samlab checkpoint atomically, with its checksum, and the resolved config as JSON
    beside it (``path`` with ``.json``)."""
    path = Path(path)
    payload = {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(),
        "epoch": int(epoch),
        "config": _config_dict(config),
    }
    if extra:
        payload["extra"] = extra
    payload[DIGEST_KEY] = payload_sha256(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    if config is not None:
        atomic_write(path.with_suffix(".json"), json.dumps(payload["config"], indent=2) + "\n")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a samlab checkpoint or a plain state_dict (returned as ``{"model": sd}``).

    ``ValueError`` naming the file when it cannot be read, its checksum does not match its
    contents, or its weights hold NaN or inf; a file without a checksum loads with a note.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt or foreign file
        first = " ".join(str(err).split())[:300] or type(err).__name__
        raise ValueError(
            f"could not read checkpoint {path}: {first}. It must be a file written by torch.save "
            "holding tensors and plain containers (loaded with weights_only=True)"
        ) from None
    note = check_checkpoint(data, path)
    if note is not None:
        print(note, file=sys.stderr)
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        check_finite_weights(data["model"], path)
        return data
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        check_finite_weights(data, path)
        return {"model": data}
    raise ValueError(
        f"{path} is neither a samlab checkpoint (a dict with a 'model' state_dict) nor a plain "
        "state_dict of tensors"
    )
