"""Checkpoints: a dict loadable with ``torch.load(..., weights_only=True)`` (DESIGN.md §6).

Keys: ``model`` (state_dict), ``optimizer``, ``scheduler``, ``rng``, ``epoch``, ``config``.
Writes are atomic (temporary file + rename), so a kill mid-write never leaves a torn file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

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
    """Save a samlab checkpoint atomically and the resolved config as JSON beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves neither a torn file nor a .tmp
        raise
    if config is not None:
        path.with_suffix(".json").write_text(json.dumps(payload["config"], indent=2) + "\n")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a samlab checkpoint or a plain state_dict (returned as ``{"model": sd}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt or foreign file
        raise ValueError(
            f"could not read checkpoint {path}: {err}. It must be a file written by torch.save "
            "holding tensors and plain containers (loaded with weights_only=True)"
        ) from err
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        return data
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"model": data}
    raise ValueError(
        f"{path} is neither a samlab checkpoint (a dict with a 'model' state_dict) nor a plain "
        "state_dict of tensors"
    )
