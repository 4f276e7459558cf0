"""The classification run: :func:`train_classifier` and its output folder (file names, the
config check before resuming, ``metrics.csv``)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samlab.optim import create_optimizer, get_optimizer_info
from samlab.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from samlab.train.classify.config import ClassifyConfig, EpochMetrics, TrainResult
from samlab.train.classify.loop import Batches, lr_factor, train_epoch

CHECKPOINT_NAME = "checkpoint.pt"  # model, optimizer, scheduler, RNG and history after each epoch
METRICS_NAME = "metrics.csv"  # one row per epoch (EpochMetrics), flushed as it goes
CONFIG_NAME = "config.json"  # the config and what it resolved to (device, sizes, versions)
# fields that change where or how fast a run goes, not what it computes: a checkpoint written
# under other values of these is still "the same config" for resuming
_RUNTIME_FIELDS = ("device", "threads", "num_workers", "eval_batch_size")


# --------------------------------------------------------------------------- helpers
def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return device


def _config_differences(saved: dict[str, Any] | None, config: ClassifyConfig) -> list[str]:
    """Names of the fields (other than runtime ones) where the saved config differs."""
    saved = saved or {}
    current = config.to_dict()
    keys = (set(saved) | set(current)) - set(_RUNTIME_FIELDS)
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def _write_metrics(path: Path, history: list[EpochMetrics]) -> None:
    names = [f.name for f in dataclasses.fields(EpochMetrics)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in history:
            writer.writerow([getattr(row, n) for n in names])


def _append_metrics(path: Path, row: EpochMetrics) -> None:
    with path.open("a", newline="") as handle:
        csv.writer(handle).writerow([getattr(row, f.name) for f in dataclasses.fields(row)])
        handle.flush()


# --------------------------------------------------------------------------- trainer
@contextlib.contextmanager
def _detaching(hooks: Sequence[Any]) -> Iterator[None]:
    """Detach the step hooks when the run ends, however it ends."""
    try:
        yield
    finally:
        for hook in hooks:
            hook.detach()


def train_classifier(
    config: ClassifyConfig,
    train_data: Any,
    test_data: Any,
    *,
    model: nn.Module | None = None,
    progress: bool = True,
    output_dir: str | Path | None = None,
    callback: Callable[[EpochMetrics], None] | None = None,
    resume: bool = True,
    step_hooks: Sequence[Any] = (),
) -> TrainResult:
    """Train a classifier with ``config`` and return its per-epoch history and final state.

    Args:
        config: the run (see :class:`ClassifyConfig`).
        train_data, test_data: an ``(inputs, targets)`` pair of tensors (moved to the device
            once; fastest for small data), a ``Dataset`` of such pairs, or a ``DataLoader``
            (used as it is: its own batch size, order and workers).
        model: train this module in place instead of ``create_model(config.model)``.
        progress: tqdm bars (per run and per epoch) showing loss and accuracy.
        output_dir: where ``config.json``, ``metrics.csv`` and ``checkpoint.pt`` go; the run
            resumes from a checkpoint there written under the same config.
        callback: called with each epoch's :class:`EpochMetrics` after its checkpoint is saved.
        resume: False starts afresh even if ``output_dir`` holds a checkpoint.
        step_hooks: objects with ``attach(model, optimizer, start_step=...)`` and ``detach()``,
            attached for the run (``start_step``: the steps already done by a resumed run), e.g.
            :class:`landscape.curvature.TopEigenvalueTracker` to record λ_max every N steps.

    Raises:
        FloatingPointError: a non-finite training loss (names the epoch and step).
        ValueError: ``output_dir`` holds a checkpoint of a different config.
    """
    from tqdm.auto import tqdm

    from samlab.models import create_model

    device = _resolve_device(config.device)
    out = Path(output_dir) if output_dir is not None else None
    checkpoint = None
    if out is not None and resume and (out / CHECKPOINT_NAME).is_file():
        checkpoint = load_checkpoint(out / CHECKPOINT_NAME, map_location=device)
        differing = _config_differences(checkpoint.get("config"), config)
        if differing:
            raise ValueError(
                f"{out / CHECKPOINT_NAME} was written under another config (fields differ: "
                f"{', '.join(differing)}); use another output_dir, delete it, or pass "
                "resume=False to overwrite it"
            )
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(config.seed)
            if model is None:
                model = create_model(config.model, **dict(config.model_kwargs))
            model.to(device).train()
            train_batches = Batches(
                train_data, config.batch_size, train=True, config=config, device=device
            )
            test_batches = Batches(
                test_data, config.eval_batch_size, train=False, config=config, device=device
            )
            steps = min(len(train_batches), config.steps_per_epoch or len(train_batches))
            options = config.optimizer_options()
            if get_optimizer_info(config.optimizer).samples_weights:  # bSAM's N
                options.setdefault("num_data", train_batches.size)
            optimizer = create_optimizer(config.optimizer, model.parameters(), **options)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lr_factor(config, steps * config.epochs)
            )
            history: list[EpochMetrics] = []
            if checkpoint is not None:
                model.load_state_dict(checkpoint["model"])
                optimizer.load_state_dict(checkpoint["optimizer"])
                scheduler.load_state_dict(checkpoint["scheduler"])
                set_rng_state(checkpoint["rng"])
                saved = checkpoint.get("extra", {}).get("history", [])
                names = [f.name for f in dataclasses.fields(EpochMetrics)]
                history = [
                    EpochMetrics(**{n: row.get(n, math.nan) for n in names}) for row in saved
                ]
            start = len(history)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                resolved = {
                    "config": config.to_dict(),
                    "resolved": {
                        "device": str(device),
                        "optimizer": get_optimizer_info(config.optimizer).name,
                        "optimizer_options": options,
                        "model_class": type(model).__name__,
                        "parameters": sum(p.numel() for p in model.parameters()),
                        "train_samples": train_batches.size,
                        "test_samples": test_batches.size,
                        "steps_per_epoch": steps,
                        "lr_schedule_steps": "per iteration",
                        "torch": torch.__version__,
                    },
                }
                (out / CONFIG_NAME).write_text(json.dumps(resolved, indent=2, default=str) + "\n")
                _write_metrics(out / METRICS_NAME, history)
            loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
            label = get_optimizer_info(config.optimizer).name
            runs = tqdm(
                total=config.epochs, initial=start, desc=label, disable=not progress, unit="ep"
            )
            for hook in step_hooks:
                hook.attach(model, optimizer, start_step=start * steps)
            with runs, _detaching(step_hooks):
                if start:
                    runs.set_postfix(test_acc=f"{history[-1].test_acc:.3f}")
                refreshes_masks = get_optimizer_info(config.optimizer).refreshes_masks
                for epoch in range(start, config.epochs):
                    refresh_seconds = math.nan
                    if refreshes_masks:
                        refresh_seconds = _refresh_masks(
                            optimizer, model, loss_fn, train_batches, config, epoch
                        )
                    metrics = train_epoch(
                        model,
                        optimizer,
                        scheduler,
                        loss_fn,
                        train_batches,
                        test_batches,
                        config,
                        epoch,
                        steps,
                        progress,
                    )
                    metrics = dataclasses.replace(metrics, refresh_seconds=refresh_seconds)
                    history.append(metrics)
                    if out is not None:
                        _append_metrics(out / METRICS_NAME, metrics)
                        save_checkpoint(
                            out / CHECKPOINT_NAME,
                            model=model,
                            optimizer=optimizer,
                            scheduler=scheduler,
                            epoch=epoch + 1,
                            config=config,
                            extra={"history": [dataclasses.asdict(m) for m in history]},
                        )
                    runs.update(1)
                    runs.set_postfix(
                        loss=f"{metrics.train_loss:.4f}", test_acc=f"{metrics.test_acc:.3f}"
                    )
                    if callback is not None:
                        callback(metrics)
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return TrainResult(config, tuple(history), state, out, start)


def _refresh_masks(optimizer, model, loss_fn, train_batches, config, epoch: int) -> float:
    """The capability ``refreshes_masks`` (sparse SAM): new masks at the start of a due epoch,
    from the training data in an order seeded by the run's seed and the epoch (resumable);
    returns the refresh's wall seconds (0 when the epoch is not due)."""
    if not optimizer.masks_due(epoch):
        return 0.0
    began = time.perf_counter()
    order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    optimizer.refresh_masks(
        model, loss_fn, train_batches.epoch(order), epoch=epoch, epochs=config.epochs
    )
    return time.perf_counter() - began
