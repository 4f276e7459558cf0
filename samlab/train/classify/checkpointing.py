"""The output folder of a classification run: file names, what may be resumed, the files.

``OUT/last.pt`` (after every epoch: model, optimizer with its base optimizer's state and any
sparse-SAM masks, LR scheduler, GradScaler, RNG, epoch, config, history and weight masks),
``OUT/best.pt`` (the same at the best test accuracy so far), ``OUT/metrics.csv`` (one row per
epoch), ``OUT/metrics.json`` (the summary and the per-epoch history) and ``OUT/config.json``.
A folder of samlab 0.2 holds ``checkpoint.pt`` instead of ``last.pt``; it is read for resuming.

:func:`resume_check` decides whether a checkpoint may be continued under a config: every field
but the runtime ones (device, threads, workers, evaluation batch, compile, deterministic) must
match; a larger ``epochs`` only with ``extend`` (the schedule is then recomputed over the new
total from the step reached, so the run differs from a fresh run of that length).
:func:`data_check` ties a checkpoint to its data (``data_sha256``,
:mod:`samlab.train.classify.digest`): other data are refused naming both digests; a checkpoint
written before the digest is accepted and stamped.

Every file is written atomically and durably (:func:`landscape.io.atomic_write`; checkpoints
through :func:`samlab.train.checkpoint.save_checkpoint`); the one exception is the row appended
to ``metrics.csv`` after each epoch, which a resumed run rewrites from ``last.pt``'s history.
:func:`read_json` names the file when a ``metrics.json`` is damaged.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

from landscape.io import atomic_write
from samlab.train.classify.config import ClassifyConfig, EpochMetrics, TrainResult

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LEGACY_CHECKPOINT_NAME",
    "METRICS_JSON_NAME",
    "METRICS_NAME",
    "RUNTIME_FIELDS",
    "data_check",
    "find_checkpoint",
    "read_json",
    "resume_check",
    "summary",
    "write_json",
    "write_metrics",
]

CHECKPOINT_NAME = "last.pt"  # the state after the latest epoch
BEST_NAME = "best.pt"  # the state at the best test accuracy
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"  # samlab 0.2's name, still read for resuming
METRICS_NAME = "metrics.csv"  # one row per epoch (EpochMetrics), flushed as it goes
METRICS_JSON_NAME = "metrics.json"  # final/best figures and the per-epoch history
CONFIG_NAME = "config.json"  # the config and what it resolved to (device, sizes, versions)
#: fields that change where or how fast a run goes, not what it computes
RUNTIME_FIELDS = (
    "device", "threads", "num_workers", "eval_batch_size", "compile", "deterministic",
)  # fmt: skip


def find_checkpoint(out: Path) -> Path | None:
    """``out/last.pt``, else a samlab 0.2 ``out/checkpoint.pt``, else None."""
    for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
        if (out / name).is_file():
            return out / name
    return None


def resume_check(
    path: Path, saved: dict[str, Any] | None, config: ClassifyConfig, *, extend: bool
) -> int | None:
    """None when ``config`` continues the checkpoint at ``path`` (config ``saved``) as it is;
    the saved ``epochs`` when it extends it. Raises ValueError naming the fields otherwise."""
    defaults = ClassifyConfig().to_dict()
    old = {**defaults, **(saved or {})}  # fields added since the checkpoint: their defaults
    current = config.to_dict()
    keys = (set(old) | set(current)) - set(RUNTIME_FIELDS)
    differing = sorted(k for k in keys if old.get(k) != current.get(k))
    other = [k for k in differing if k != "epochs"]
    if other:
        raise ValueError(
            f"{path} was written under another config (fields differ: {', '.join(other)}); "
            "use another output folder, delete it, or start afresh (resume=False)"
        )
    if "epochs" not in differing:
        return None
    before = int(old["epochs"])
    if config.epochs < before:
        raise ValueError(
            f"{path} is a run of {before} epochs; it cannot be shortened to {config.epochs} "
            "(use another output folder)"
        )
    if not extend:
        raise ValueError(
            f"{path} is a run of {before} epochs, asked for {config.epochs}: pass --extend "
            "(extend=True) to continue it to the new length (its learning-rate schedule is "
            "recomputed over the new total from the step reached), or use another output folder"
        )
    return before


def data_check(path: Path, recorded: Any, digest: str | None) -> bool:
    """Whether the checkpoint at ``path`` (recorded ``data_sha256``) needs stamping with
    ``digest``: True when it recorded none; ValueError naming both digests when they differ."""
    if digest is None:
        return False
    if recorded is None:
        return True
    if recorded != digest:
        raise ValueError(
            f"{path} was trained on other data (data_sha256 {recorded[:16]}..., the data given "
            f"now have {digest[:16]}...): the data files changed or other data were given; "
            f"use another output folder, or delete {path.parent} (or pass resume=False) to "
            "start fresh"
        )
    return False


def write_metrics(path: Path, history: list[EpochMetrics]) -> None:
    names = [f.name for f in dataclasses.fields(EpochMetrics)]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(names)
    for row in history:
        writer.writerow([getattr(row, n) for n in names])
    atomic_write(path, text.getvalue())


def append_metrics(path: Path, row: EpochMetrics) -> None:
    with path.open("a", newline="") as handle:
        csv.writer(handle).writerow([getattr(row, f.name) for f in dataclasses.fields(row)])
        handle.flush()


def _plain(value: Any) -> Any:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(path: Path, content: dict[str, Any]) -> None:
    """``content`` as JSON (NaN as null), atomically and durably."""
    atomic_write(path, json.dumps(_plain(content), indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming the file when it is damaged (truncated,
    not JSON) or holds something else than an object."""
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is damaged ({err}); delete it (or its run folder) and rerun"
        ) from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, not a JSON object; delete it")
    return content


def summary(result: TrainResult) -> dict[str, Any]:
    """``metrics.json``: final and best figures, cost, and the per-epoch history."""
    history = result.history
    best = max(range(len(history)), key=lambda i: history[i].test_acc)
    return {
        "epochs": len(history),
        "test_acc": result.final_test_acc,
        "test_loss": history[-1].test_loss,
        "train_acc": history[-1].train_acc,
        "train_loss": result.final_train_loss,
        "best_test_acc": history[best].test_acc,
        "best_epoch": best + 1,
        "seconds": result.seconds,
        "passes_per_step": result.passes_per_step,
        "sharpness_gap": result.mean_sharpness_gap,
        "data_sha256": result.data_sha256,
        "config": result.config.to_dict(),
        "history": [dataclasses.asdict(m) for m in history],
    }
