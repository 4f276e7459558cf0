"""Time-series forecasting trainer: SAMformer's protocol (Ilbert et al., ICML 2024).

One run = one (dataset, horizon, model, optimizer, seed). The protocol (notes/samformer.md §2-4):
look-back L=512, batch 32, Adam at the paper's per-dataset learning rate, SAM around it with
``rho`` (0.7 by default for SAMformer; ``rho=0`` / ``--no_sam`` is plain Adam, one pass per
step), up to 300 epochs, cosine warm restarts every 5 epochs down to 1e-6, early stopping on the
validation MSE with patience 5, the best-validation weights reloaded for the test, MSE and MAE
on the standardised scale.

Like every samlab trainer it builds a closure per batch and calls ``optimizer.step(closure)``;
Adam calls it once, SAM twice. With ``compile=True`` a model without buffers (SAMformer, the
Transformer) instead runs each step as one compiled graph (:class:`FusedStep`: the same update
in about half the time of the eager SAM step on CPU). Each epoch ends with an atomic
``last.pt`` (model, optimizer, RNG, early-stopping state, history), so a killed run resumes
where it stopped and finishes bit for bit as an uninterrupted one; a finished run leaves
``result.json`` and is skipped.

Command line: ``python -m samlab.train.forecast`` (see :mod:`samlab.train._forecast_cli`). The
training step and epoch loop, eager or compiled, are in :mod:`samlab.train._forecast_steps`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from samlab.datasets.timeseries import ForecastData, get_dataset_spec, load_forecast_data
from samlab.models import create_model
from samlab.models._keras_init import check_init
from samlab.optim import create_optimizer
from samlab.train._forecast_steps import (  # noqa: F401 - the benchmark and tests use them
    _compiled,
    _EagerFallback,
    _epoch_generator,
    _step_fn,
    _train_epoch,
)
from samlab.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from samlab.utils import seed_everything

__all__ = [
    "FORECAST_MODELS",
    "ForecastConfig",
    "build_forecaster",
    "cosine_restart_lr",
    "evaluate_forecaster",
    "train_forecaster",
]

FORECAST_MODELS = ("samformer", "transformer", "transformer_random", "tsmixer")
"""Model names the trainer accepts (``samlab.models`` registry names)."""

DEFAULT_SAM_RHO = 0.7
"""SAMformer's default rho (the official script's single value for every dataset)."""

# Config fields that do not change the numbers a run produces; a resumed run may differ in them.
_NON_SEMANTIC = ("data_dir", "data_path", "threads", "progress", "eval_batch_size")


@dataclass
class ForecastConfig:
    """Everything that defines one forecasting run (saved in every checkpoint)."""

    dataset: str = "ETTh1"
    horizon: int = 96
    seq_len: int = 512
    model: str = "samformer"
    rho: float | None = None
    """SAM radius; None means 0.7 for ``samformer`` and 0 (plain Adam) for the baselines."""
    lr: float | None = None
    """Adam learning rate; None means the paper's rate for the dataset."""
    batch_size: int = 32
    max_epochs: int = 300
    patience: int = 5
    restart_epochs: int = 5
    min_lr: float = 1e-6
    weight_decay: float = 0.0
    seed: int = 0
    output_projection: bool = True
    """SAMformer's W_O (the paper's architecture); False gives the official PyTorch port."""
    init: str = "keras"
    """Weight init: ``keras`` (the TensorFlow reference code's Glorot-uniform) or ``torch``."""
    compile: bool = False
    max_train_batches: int | None = None
    max_eval_windows: int | None = None
    device: str = "cpu"
    data_dir: str | None = None
    data_path: str | None = None
    threads: int | None = None
    progress: bool = True
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        get_dataset_spec(self.dataset)  # unknown names fail here, listing the known ones
        if self.model not in FORECAST_MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {FORECAST_MODELS}")
        for name in ("horizon", "seq_len", "batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_init(self.init)
        if self.restart_epochs < 1:
            raise ValueError(f"restart_epochs must be >= 1, got {self.restart_epochs}")
        if self.rho is not None and not (self.rho >= 0 and math.isfinite(self.rho)):
            raise ValueError(f"rho must be a finite number >= 0, got {self.rho}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite positive number, got {self.lr}")

    @property
    def resolved_rho(self) -> float:
        if self.rho is not None:
            return float(self.rho)
        return DEFAULT_SAM_RHO if self.model == "samformer" else 0.0

    @property
    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else get_dataset_spec(self.dataset).lr

    @property
    def optimizer_name(self) -> str:
        """``sam`` (Adam inside SAM) when rho > 0, else ``adam``."""
        return "sam" if self.resolved_rho > 0 else "adam"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(
            resolved_rho=self.resolved_rho,
            resolved_lr=self.resolved_lr,
            optimizer=self.optimizer_name,
        )
        return out

    def semantic_dict(self) -> dict[str, Any]:
        """The fields that decide the numbers (compared when a run resumes)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NON_SEMANTIC}


def cosine_restart_lr(epoch: int, base_lr: float, *, period: int = 5, min_lr: float = 1e-6):
    """Learning rate of ``epoch`` (0-based): cosine from ``base_lr`` toward ``min_lr`` within
    each cycle of ``period`` epochs, then back to ``base_lr`` (the official code's schedule)."""
    phase = (epoch % period) / period
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * phase))


def build_forecaster(config: ForecastConfig, n_channels: int) -> nn.Module:
    """The model of ``config`` for ``n_channels`` channels (TSMixer gets the paper's
    per-dataset n_block / dropout / ff_dim)."""
    kwargs: dict[str, Any] = {"init": config.init}
    if config.model in ("samformer", "transformer"):
        kwargs["output_projection"] = config.output_projection
    if config.model == "tsmixer":
        kwargs.update(get_dataset_spec(config.dataset).tsmixer)
    return create_model(
        config.model,
        n_channels=n_channels,
        seq_len=config.seq_len,
        horizon=config.horizon,
        **kwargs,
    )


@torch.no_grad()
def evaluate_forecaster(
    model: nn.Module,
    split,
    *,
    batch_size: int = 512,
    max_windows: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """MSE and MAE over every element (window x horizon x channel) of a ``WindowDataset``."""
    was_training = model.training
    model.eval()
    n = len(split) if max_windows is None else min(len(split), max_windows)
    sq = torch.zeros((), dtype=torch.float64)
    ab = torch.zeros((), dtype=torch.float64)
    count = 0
    try:
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            x, y = split.windows(index)
            err = model(x.to(device)).float() - y.to(device)
            sq += err.double().square().sum().cpu()
            ab += err.double().abs().sum().cpu()
            count += err.numel()
    finally:
        model.train(was_training)
    return {"mse": float(sq) / count, "mae": float(ab) / count}


@dataclass
class _State:
    """Early-stopping state carried across epochs (and checkpoints)."""

    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)


def _resume(run_dir: Path, config: ForecastConfig, model, optimizer) -> _State:
    last = run_dir / "last.pt"
    if not last.is_file():
        return _State()
    ckpt = load_checkpoint(last)
    saved = {k: v for k, v in (ckpt.get("config") or {}).items() if k not in _NON_SEMANTIC}
    wanted = json.loads(json.dumps(config.semantic_dict(), default=str))
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise ValueError(
            f"{last} was written by a different run (differs in {diff}); use another output "
            "directory or delete it to start over"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    extra = ckpt.get("extra", {})
    return _State(
        epoch=int(ckpt["epoch"]),
        best_val=float(extra["best_val"]),
        best_epoch=int(extra["best_epoch"]),
        wait=int(extra["wait"]),
        seconds=float(extra["seconds"]),
        history=json.loads(extra["history"]),
    )


def _finished(run_dir: Path, config: ForecastConfig) -> dict[str, Any] | None:
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    saved = {k: v for k, v in result.get("config", {}).items() if k not in _NON_SEMANTIC}
    if saved != json.loads(json.dumps(config.semantic_dict(), default=str)):
        raise ValueError(
            f"{path} holds a finished run with a different configuration; use another output "
            "directory or delete it"
        )
    return result


def train_forecaster(
    config: ForecastConfig, run_dir: str | Path, *, data: ForecastData | None = None
) -> dict[str, Any]:
    """Train one seed into ``run_dir`` (resuming or skipping finished work); return its result.

    The result dict holds ``seed``, ``test_mse``, ``test_mae``, ``val_mse``, ``val_mae``,
    ``best_epoch`` (1-based), ``epochs_run``, ``seconds``, ``seconds_per_epoch``, ``history``
    and ``config``; it is also written to ``run_dir/result.json``.
    """
    run_dir = Path(run_dir)
    done = _finished(run_dir, config)
    if done is not None:
        return done
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, run_dir, data)
    finally:
        torch.set_num_threads(threads)


def _train(config: ForecastConfig, run_dir: Path, data: ForecastData | None) -> dict[str, Any]:
    device = torch.device(config.device)
    if data is None:
        data = load_forecast_data(
            config.dataset,
            config.horizon,
            seq_len=config.seq_len,
            data_dir=config.data_dir,
            path=config.data_path,
        )
    seed_everything(config.seed)
    model = build_forecaster(config, data.n_channels).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = config.resolved_lr
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": config.weight_decay}
    if config.optimizer_name == "sam":
        kwargs.update(base="adam", rho=config.resolved_rho)
    optimizer = create_optimizer(config.optimizer_name, params, **kwargs)
    state = _resume(run_dir, config, model, optimizer)
    fwd = _compiled(model, config.compile)
    step_fn = _step_fn(model, fwd, optimizer, config)
    best_path = run_dir / "best.pt"
    bar = tqdm(
        total=config.max_epochs,
        initial=state.epoch,
        desc=f"{config.model} {config.dataset} H={config.horizon} seed {config.seed}",
        disable=not config.progress,
    )
    while state.epoch < config.max_epochs and state.wait < config.patience:
        epoch = state.epoch
        epoch_lr = cosine_restart_lr(epoch, lr, period=config.restart_epochs, min_lr=config.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        start = time.perf_counter()
        train_loss = _train_epoch(model, step_fn, data, config, epoch, device)
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
            },
        )
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val['mse']:.4f}",
                        best=f"{state.best_val:.4f}")  # fmt: skip
    bar.close()
    return _finish(run_dir, config, model, fwd, data, state, device)


def _finish(run_dir, config, model, fwd, data, state: _State, device) -> dict[str, Any]:
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
    }
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(run_dir / "result.json")
    return result


def forecast_batches(split, n_windows: int, batch_size: int = 256) -> list[tuple[Tensor, Tensor]]:
    """The first ``n_windows`` windows of a split as a fixed list of batches (for sharpness)."""
    n = min(len(split), n_windows)
    return [split.windows(torch.arange(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


if __name__ == "__main__":  # python -m samlab.train.forecast
    from samlab.train._forecast_cli import main

    raise SystemExit(main())
