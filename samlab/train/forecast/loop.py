"""The forecasting run: :func:`train_forecaster`, its epochs, early stopping and run folder.

Each epoch sets the cosine-restart learning rate (:func:`cosine_restart_lr`), trains
(:func:`~samlab.train.forecast.steps.train_epoch`), evaluates on the validation split, saves
``best.pt`` when the validation MSE improved and ``last.pt`` (model, optimizer, RNG,
early-stopping state, history) always, so a killed run resumes bit for bit. A finished run
leaves ``result.json`` and is read back instead of trained again.

A run is tied to its data: ``result.json`` and ``last.pt`` record ``data_sha256``
(:attr:`~samlab.datasets.timeseries.ForecastData.data_sha256`, the values read), and a run
folder whose record names other data is refused, whatever the data's location; a run written
before the digest is accepted once and stamped. One run at a time per folder
(:func:`~samlab.train.locks.run_folder_lock`); every file is written atomically.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from landscape.io import atomic_write
from samlab.datasets.timeseries import ForecastData, load_forecast_data
from samlab.optim import create_optimizer
from samlab.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from samlab.train.forecast.config import ForecastConfig
from samlab.train.forecast.model import build_forecaster, evaluate_forecaster
from samlab.train.forecast.result import ForecastResult
from samlab.train.forecast.steps import (
    TrainStep,
    compile_forecaster,
    steps_per_epoch,
    train_epoch,
)
from samlab.train.locks import run_folder_lock
from samlab.utils import seed_everything


def cosine_restart_lr(
    epoch: int, base_lr: float, *, period: int = 5, min_lr: float = 1e-6
) -> float:
    """Learning rate of ``epoch`` (0-based): cosine from ``base_lr`` toward ``min_lr`` within
    each cycle of ``period`` epochs, then back to ``base_lr`` (the official code's schedule)."""
    phase = (epoch % period) / period
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * phase))


def forecast_optimizer(
    config: ForecastConfig, params: list[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """The run's optimizer over ``params``: Adam at the resolved learning rate, inside SAM with
    the resolved rho when it is positive."""
    kwargs: dict[str, Any] = {"lr": config.resolved_lr, "weight_decay": config.weight_decay}
    if config.optimizer_name == "sam":
        kwargs.update(base="adam", rho=config.resolved_rho)
    return create_optimizer(config.optimizer_name, params, **kwargs)


@dataclass
class _State:
    """Early-stopping state carried across epochs (and checkpoints)."""

    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)


def _other_data(path: Path, recorded: str, data: ForecastData) -> ValueError:
    return ValueError(
        f"{path} was computed on other data (data_sha256 {recorded[:12]}..., the data read now "
        f"from {data.path} has {data.data_sha256[:12]}...): the file changed or another file "
        f"was given; use another output folder, or delete {path.parent} to start fresh"
    )


def _resume(run_dir: Path, config: ForecastConfig, model, optimizer, data: ForecastData) -> _State:
    last = run_dir / "last.pt"
    if not last.is_file():
        return _State()
    ckpt = load_checkpoint(last)
    diff = config.differences(ckpt.get("config") or {})
    if diff is not None:
        raise ValueError(
            f"{last} was written by a different run (differs in {diff}); use another output "
            "directory or delete it to start over"
        )
    extra = ckpt.get("extra", {})
    recorded = extra.get("data_sha256")
    if recorded is not None and recorded != data.data_sha256:
        raise _other_data(last, recorded, data)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ValueError(f"{last}: the weights do not fit the run's model: {_first(err)}") from None
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    return _State(
        epoch=int(ckpt["epoch"]),
        best_val=float(extra["best_val"]),
        best_epoch=int(extra["best_epoch"]),
        wait=int(extra["wait"]),
        seconds=float(extra["seconds"]),
        history=json.loads(extra["history"]),
    )


def _first(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def read_result(path: Path) -> dict[str, Any]:
    """The dict of a ``result.json``; ``ValueError`` naming the file when it is not a JSON
    object (truncated, damaged, a list)."""
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged ({err}); delete it to run the seed again") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path} holds a {type(result).__name__}, not a run's result; delete it")
    return result


def _finished(run_dir: Path, config: ForecastConfig, data: ForecastData) -> ForecastResult | None:
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    result = read_result(path)
    diff = config.differences(result.get("config", {}))
    if diff is not None:
        raise ValueError(
            f"{path} holds a finished run with a different configuration (differs in {diff}); "
            "use another output directory or delete it"
        )
    recorded = result.get("data_sha256")
    if recorded is None:  # written before runs recorded their data: accepted once, stamped
        result["data_sha256"] = data.data_sha256
        atomic_write(path, json.dumps(result, indent=2) + "\n")
        print(f"note: {path} had no data digest; stamped with that of {data.path}")
    elif recorded != data.data_sha256:
        raise _other_data(path, recorded, data)
    return ForecastResult.from_dict(result)


def train_forecaster(
    config: ForecastConfig,
    run_dir: str | Path,
    *,
    data: ForecastData | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
    step_hooks: Sequence[Any] = (),
) -> ForecastResult:
    """Train one seed into ``run_dir`` (resuming or skipping finished work); return its result.

    The :class:`~samlab.train.forecast.ForecastResult` holds ``seed``, ``test_mse``,
    ``test_mae``, ``val_mse``, ``val_mae``, ``best_epoch`` (1-based), ``epochs_run``,
    ``seconds``, ``seconds_per_epoch``, ``history`` and ``config`` (also as keys:
    ``result["test_mse"]``); it is also written to ``run_dir/result.json``.

    ``data``: the dataset of ``config`` if already loaded. ``callback``: called with a copy of
    each epoch's history row (``epoch`` (1-based), ``lr``, ``train_loss``, ``val_mse``,
    ``val_mae``, ``seconds``) after ``last.pt`` is saved; an exception it raises stops the run
    there, to be resumed by the next call. ``step_hooks``: objects with ``attach(model,
    optimizer, start_step=...)`` and ``detach()`` attached for the run, e.g.
    :class:`landscape.curvature.TopEigenvalueTracker` to record λ_max every N steps.
    """
    run_dir = Path(run_dir)
    if data is None:
        data = load_forecast_data(
            config.dataset,
            config.horizon,
            seq_len=config.seq_len,
            data_dir=config.data_dir,
            path=config.data_path,
        )
    with run_folder_lock(run_dir):
        done = _finished(run_dir, config, data)
        if done is not None:
            return done
        threads = torch.get_num_threads()
        if config.threads:
            torch.set_num_threads(config.threads)
        try:
            return _train(config, run_dir, data, callback, step_hooks)
        finally:
            torch.set_num_threads(threads)


def _train(config: ForecastConfig, run_dir: Path, data: ForecastData, callback, hooks=()):
    device = torch.device(config.device)
    seed_everything(config.seed)
    model = build_forecaster(config, data.n_channels).to(device)
    optimizer = forecast_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    state = _resume(run_dir, config, model, optimizer, data)
    for hook in hooks:
        hook.attach(model, optimizer, start_step=state.epoch * steps_per_epoch(data, config))
    try:
        _epochs(config, run_dir, data, callback, model, optimizer, state, device)
    finally:
        for hook in hooks:
            hook.detach()
    return _finish(run_dir, config, model, data, state, device)


def _epochs(config, run_dir, data, callback, model, optimizer, state: _State, device) -> None:
    """The epochs still to run, each saved to ``last.pt`` (and ``best.pt`` when it improves)."""
    fwd = compile_forecaster(model, config.compile)
    step = TrainStep.for_config(model, fwd, optimizer, config)
    best_path = run_dir / "best.pt"
    bar = tqdm(
        total=config.max_epochs,
        initial=state.epoch,
        desc=f"{config.model} {config.dataset} H={config.horizon} seed {config.seed}",
        disable=not config.progress,
    )
    while state.epoch < config.max_epochs and state.wait < config.patience:
        epoch = state.epoch
        epoch_lr = cosine_restart_lr(
            epoch, config.resolved_lr, period=config.restart_epochs, min_lr=config.min_lr
        )
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        start = time.perf_counter()
        train_loss = train_epoch(step, data, config, epoch, device)
        val = evaluate_forecaster(
            fwd,
            data.val,
            batch_size=config.eval_batch_size,
            max_windows=config.max_eval_windows,
            device=device,
        )
        seconds = time.perf_counter() - start
        state.seconds += seconds
        state.history.append(
            {"epoch": epoch + 1, "lr": epoch_lr, "train_loss": train_loss, "val_mse": val["mse"],
             "val_mae": val["mae"], "seconds": seconds}
        )  # fmt: skip
        state.epoch += 1
        if val["mse"] < state.best_val:
            state.best_val, state.best_epoch, state.wait = val["mse"], epoch + 1, 0
            save_checkpoint(best_path, model=model, epoch=epoch + 1, config=config.to_dict())
        else:
            state.wait += 1
        save_checkpoint(
            run_dir / "last.pt",
            model=model,
            optimizer=optimizer,
            epoch=state.epoch,
            config=config.to_dict(),
            extra={
                "best_val": state.best_val,
                "best_epoch": state.best_epoch,
                "wait": state.wait,
                "seconds": state.seconds,
                "history": json.dumps(state.history),
                "data_sha256": data.data_sha256,
            },
        )
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val['mse']:.4f}",
                        best=f"{state.best_val:.4f}")  # fmt: skip
        if callback is not None:
            callback(dict(state.history[-1]))
    bar.close()


def _finish(run_dir, config, model, data, state: _State, device) -> ForecastResult:
    best = load_checkpoint(run_dir / "best.pt")
    best_model = copy.deepcopy(model)
    best_model.load_state_dict(best["model"])
    options = {
        "batch_size": config.eval_batch_size,
        "max_windows": config.max_eval_windows,
        "device": device,
    }
    test = evaluate_forecaster(best_model, data.test, **options)
    val = evaluate_forecaster(best_model, data.val, **options)
    result = {
        "seed": config.seed,
        "dataset": config.dataset,
        "horizon": config.horizon,
        "model": config.model,
        "optimizer": config.optimizer_name,
        "rho": config.resolved_rho,
        "lr": config.resolved_lr,
        "test_mse": test["mse"],
        "test_mae": test["mae"],
        "val_mse": val["mse"],
        "val_mae": val["mae"],
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "seconds": state.seconds,
        "seconds_per_epoch": state.seconds / max(len(state.history), 1),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "history": state.history,
        "config": config.to_dict(),
        "data_sha256": data.data_sha256,
    }
    atomic_write(run_dir / "result.json", json.dumps(result, indent=2) + "\n")
    return ForecastResult.from_dict(result)
