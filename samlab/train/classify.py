"""A small, generic image-classification trainer: the same loop for SGD and every SAM variant.

``train_classifier(config, train_data, test_data)`` builds the model and the optimizer by
registry name, and for every batch builds a closure with :func:`samlab.train.make_closure`
and calls ``optimizer.step(closure)``. It never asks which optimizer it holds: the number of
passes and the sharpness gap are read from ``optimizer.last_step`` when the optimizer keeps
one (the SAM family does, see docs/closure-protocol.md), and a plain optimizer counts as one
pass per step.

The learning-rate schedule steps once per iteration (``"cosine"`` decays to 0 over all steps,
``"step"`` multiplies by ``lr_gamma`` at the ``lr_milestones`` fractions of training).
Evaluation runs under ``torch.no_grad()`` with ``model.eval()``; the test loss is the plain
cross-entropy (no label smoothing), the train loss is the training criterion at the point the
optimizer evaluates (``w`` for SGD and SAM, ``w + e`` for one-step SAM).

With ``output_dir`` the run writes ``config.json`` (the resolved config), ``metrics.csv`` (one
row per epoch, flushed as it goes) and ``checkpoint.pt`` (+ ``checkpoint.json``) after every
epoch; calling it again with the same config resumes from the checkpoint, bit for bit (the
data order of epoch ``e`` is drawn from a generator seeded by ``(seed, e)``), and a finished
run is loaded, not retrained.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from samlab.optim import create_optimizer, get_optimizer_info
from samlab.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from samlab.train.closures import BN_POLICIES, make_closure

__all__ = ["ClassifyConfig", "EpochMetrics", "TrainResult", "train_classifier"]

LR_SCHEDULES = ("cosine", "step", "constant")
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
CONFIG_NAME = "config.json"
# fields that change where or how fast a run goes, not what it computes: a checkpoint written
# under other values of these is still "the same config" for resuming
_RUNTIME_FIELDS = ("device", "threads", "num_workers", "eval_batch_size")

Pairs = tuple[tuple[str, Any], ...]


def _as_pairs(name: str, value: Any) -> Pairs:
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = tuple((str(k), v) for k, v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a dict or (key, value) pairs, got {value!r}") from None
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class ClassifyConfig:
    """Everything that decides a classification run (JSON-able; saved beside its outputs)."""

    model: str = "digits_cnn"  # a samlab.models registry name (a label when model= is given)
    model_kwargs: Pairs = ()  # keywords for the model factory, a dict or (key, value) pairs
    optimizer: str = "sgd"  # a samlab.optim registry name: sgd, sam, asam, gsam, looksam, ...
    lr: float = 0.05  # peak learning rate
    momentum: float | None = 0.9  # SGD momentum; None: not passed (Adam/AdamW bases)
    weight_decay: float = 5e-4  # L2 penalty through the (base) optimizer
    rho: float | None = None  # SAM radius; None: the registry default (sgd/adam take none)
    optimizer_kwargs: Pairs = ()  # further keywords, e.g. {"alpha": 0.4} or {"k": 5}
    epochs: int = 20  # passes over the training data
    batch_size: int = 64  # training batch size
    eval_batch_size: int = 1024  # evaluation batch size (does not change results)
    drop_last: bool = False  # drop a last, smaller training batch
    steps_per_epoch: int | None = None  # cap on steps per epoch (smoke runs); None: all batches
    seed: int = 0  # model initialisation, data order, dropout
    bn_policy: str = "clean"  # BatchNorm running statistics: clean/perturbed/both/none
    lr_schedule: str = "cosine"  # cosine | step | constant, stepped per iteration
    lr_milestones: tuple[float, ...] = (0.5, 0.75)  # "step": fractions of training ...
    lr_gamma: float = 0.1  # ... at which the lr is multiplied by lr_gamma
    label_smoothing: float = 0.0  # cross-entropy label smoothing in training
    device: str = "auto"  # cpu | cuda | cuda:N | auto (cuda when available)
    threads: int | None = None  # torch.set_num_threads during the run; None: leave as is
    num_workers: int = 0  # DataLoader workers for Dataset inputs

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", _as_pairs("model_kwargs", self.model_kwargs))
        extra = _as_pairs("optimizer_kwargs", self.optimizer_kwargs)
        object.__setattr__(self, "optimizer_kwargs", extra)
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in self.lr_milestones))
        get_optimizer_info(self.optimizer)  # ValueError naming the known optimizers
        clash = {k for k, _ in extra} & {"lr", "momentum", "weight_decay", "rho"}
        if clash:
            raise ValueError(f"set {sorted(clash)} through the config fields, not optimizer_kwargs")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.bn_policy not in BN_POLICIES:
            raise ValueError(f"bn_policy must be one of {BN_POLICIES}, got {self.bn_policy!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads!r}")

    @classmethod
    def smoke(cls, **overrides: Any) -> ClassifyConfig:
        """A profile that runs in about a second on CPU: 2 epochs of at most 8 steps, one
        thread (tiny models run fastest on one, and many times slower on two busy cores)."""
        settings = dict(epochs=2, steps_per_epoch=8, device="cpu", threads=1)
        return cls(**{**settings, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def optimizer_options(self) -> dict[str, Any]:
        """The keywords handed to :func:`samlab.optim.create_optimizer`."""
        options: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.momentum is not None:
            options["momentum"] = self.momentum
        if self.rho is not None:
            options["rho"] = self.rho
        return {**options, **dict(self.optimizer_kwargs)}


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch of a run (one row of ``metrics.csv``)."""

    epoch: int  # 1-based
    lr: float  # learning rate of the epoch's first step
    train_loss: float  # mean over the epoch's training samples
    train_acc: float  # fraction in [0, 1]
    test_loss: float
    test_acc: float
    seconds: float  # wall time of the training steps (evaluation and I/O excluded)
    cpu_seconds: float  # CPU time of this process in those steps (steady on busy shared cores)
    steps: int
    passes: int  # forward+backward passes over all steps
    sharpness_gap: float  # mean loss(w + e) - loss(w) over the steps that recorded it; nan if none

    @property
    def passes_per_step(self) -> float:
        return self.passes / self.steps


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A finished run: its config, per-epoch history and the final model state (on CPU)."""

    config: ClassifyConfig
    history: tuple[EpochMetrics, ...]
    model_state: dict[str, Tensor] = field(repr=False)
    output_dir: Path | None = None
    resumed_from_epoch: int = 0  # epochs loaded from a checkpoint instead of trained now

    def column(self, name: str) -> list[float]:
        """One metric per epoch, e.g. ``result.column("test_acc")``."""
        return [getattr(m, name) for m in self.history]

    @property
    def final_test_acc(self) -> float:
        return self.history[-1].test_acc

    @property
    def best_test_acc(self) -> float:
        return max(self.column("test_acc"))

    @property
    def final_train_loss(self) -> float:
        return self.history[-1].train_loss

    @property
    def seconds(self) -> float:
        return sum(self.column("seconds"))

    @property
    def cpu_seconds(self) -> float:
        return sum(self.column("cpu_seconds"))

    @property
    def passes_per_step(self) -> float:
        return sum(self.column("passes")) / sum(self.column("steps"))

    @property
    def mean_sharpness_gap(self) -> float:
        """Mean over the epochs that recorded a gap (nan when none did, e.g. SGD)."""
        gaps = [g for g in self.column("sharpness_gap") if not math.isnan(g)]
        return sum(gaps) / len(gaps) if gaps else math.nan


# --------------------------------------------------------------------------- data
class _Batches:
    """Batches of (inputs, targets) on ``device`` from tensors, a Dataset or a DataLoader."""

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        train: bool,
        config: ClassifyConfig,
        device: torch.device,
    ) -> None:
        self.device, self.batch_size, self.train = device, batch_size, train
        self.drop_last = train and config.drop_last
        self.num_workers = config.num_workers
        self.tensors: tuple[Tensor, Tensor] | None = None
        self.loader: DataLoader | None = None
        self.dataset: Dataset | None = None
        if isinstance(data, TensorDataset) and len(data.tensors) == 2:
            data = data.tensors
        if isinstance(data, (tuple, list)) and len(data) == 2:
            inputs, targets = data
            if len(inputs) != len(targets):
                raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
            self.tensors = (torch.as_tensor(inputs).to(device), torch.as_tensor(targets).to(device))
            self.size = len(inputs)
        elif isinstance(data, DataLoader):
            self.loader = data
            self.size = len(data.dataset)
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.dataset = data
            self.size = len(data)
        else:
            raise TypeError(
                "data must be an (inputs, targets) pair of tensors, a Dataset or a DataLoader, "
                f"got {type(data).__name__}"
            )
        if self.size == 0:
            raise ValueError("the data set is empty")

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        full, rest = divmod(self.size, self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(None)

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass; training data in the order ``randperm(n, generator)`` for every input
        form but a DataLoader (tensors and Datasets give the same batches)."""
        if self.loader is not None:
            batches = iter(self.loader)
        else:
            shuffle = self.train and generator is not None
            order = torch.randperm(self.size, generator=generator) if shuffle else None
            if self.tensors is not None:
                batches = self._tensor_batches(order)
            else:
                batches = iter(
                    DataLoader(
                        self.dataset,
                        batch_size=self.batch_size,
                        sampler=None if order is None else order.tolist(),
                        generator=generator,  # seeds the workers
                        drop_last=self.drop_last,
                        num_workers=self.num_workers,
                        pin_memory=self.device.type == "cuda",
                    )
                )
        for inputs, targets in batches:
            yield inputs.to(self.device, non_blocking=True), targets.to(self.device)

    def _tensor_batches(self, order: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.tensors
        for i in range(len(self)):
            rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is not None:
                rows = order[rows].to(self.device)
            yield x[rows], y[rows]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


# --------------------------------------------------------------------------- helpers
def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return device


def _lr_factor(config: ClassifyConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        progress = min(step / total_steps, 1.0)
        if config.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.lr_schedule == "step":
            return config.lr_gamma ** sum(progress >= m for m in config.lr_milestones)
        return 1.0

    return factor


@torch.no_grad()
def _evaluate(model: nn.Module, batches: _Batches) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode; the training mode is restored."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=batches.device)
    correct = torch.zeros((), dtype=torch.int64, device=batches.device)
    count = 0
    try:
        for x, y in batches:
            out = model(x)
            total_loss += nn.functional.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(dim=1) == y).sum()
            count += len(y)
    finally:
        model.train(was_training)
    return total_loss.item() / count, correct.item() / count


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
            train_batches = _Batches(
                train_data, config.batch_size, train=True, config=config, device=device
            )
            test_batches = _Batches(
                test_data, config.eval_batch_size, train=False, config=config, device=device
            )
            steps = min(len(train_batches), config.steps_per_epoch or len(train_batches))
            optimizer = create_optimizer(
                config.optimizer, model.parameters(), **config.optimizer_options()
            )
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, _lr_factor(config, steps * config.epochs)
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
                        "optimizer_options": config.optimizer_options(),
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
            with runs:
                if start:
                    runs.set_postfix(test_acc=f"{history[-1].test_acc:.3f}")
                for epoch in range(start, config.epochs):
                    metrics = _train_epoch(
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


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    train_batches: _Batches,
    test_batches: _Batches,
    config: ClassifyConfig,
    epoch: int,
    steps: int,
    progress: bool,
) -> EpochMetrics:
    """One epoch of ``optimizer.step(closure)`` on every batch, then the evaluation."""
    from tqdm.auto import tqdm

    group = optimizer.param_groups[0]
    lr = group["lr"]
    loss_sum, correct, seen, passes = 0.0, 0, 0, 0
    gap_sum, gap_count = 0.0, 0
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)
    start, cpu_start = time.perf_counter(), time.process_time()
    with bar:
        batches = train_batches.epoch(_epoch_generator(config.seed, epoch))
        for step, (x, y) in zip(range(steps), batches):
            closure = make_closure(model, loss_fn, x, y, optimizer, bn_policy=config.bn_policy)
            loss = optimizer.step(closure)
            last = getattr(optimizer, "last_step", None) or {}
            if loss is None:  # the protocol allows it when gradients came from the caller
                loss = last.get("clean_loss", last.get("perturbed_loss"))
            checked = [loss, last.get("perturbed_loss")]
            values = torch.stack(
                [torch.as_tensor(v).detach().float().cpu() for v in checked if v is not None]
            )
            if not bool(torch.isfinite(values).all()):
                raise FloatingPointError(
                    f"non-finite training loss ({values.tolist()}) at epoch {epoch + 1}, step "
                    f"{step + 1} with optimizer {config.optimizer!r} (lr={group['lr']:.4g}, "
                    f"rho={group.get('rho', 'n/a')}); the run diverged: try a lower lr or rho"
                )
            scheduler.step()
            n = len(y)
            loss_sum += float(values[0]) * n
            correct += int((closure.last_outputs.argmax(dim=1) == y).sum())
            seen += n
            passes += int(last.get("passes", 1))
            if last.get("sharpness_gap") is not None:
                gap_sum += float(last["sharpness_gap"])
                gap_count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    test_loss, test_acc = _evaluate(model, test_batches)
    return EpochMetrics(
        epoch=epoch + 1,
        lr=float(lr),
        train_loss=loss_sum / seen,
        train_acc=correct / seen,
        test_loss=test_loss,
        test_acc=test_acc,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        steps=steps,
        passes=passes,
        sharpness_gap=gap_sum / gap_count if gap_count else math.nan,
    )
