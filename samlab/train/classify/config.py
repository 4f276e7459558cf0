"""What a classification run is and what it returns.

:class:`ClassifyConfig` is the frozen, JSON-able config of a run (validated on creation, with a
``smoke()`` profile and the keywords it hands to :func:`samlab.optim.create_optimizer`);
:class:`EpochMetrics` is one epoch (one row of ``metrics.csv``) and :class:`TrainResult` a finished
run (history and final model state, with summary properties).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from samlab.optim import get_optimizer_info
from samlab.train.closures import BN_POLICIES, PERTURBATION_MODES

LR_SCHEDULES = ("cosine", "step", "multistep", "linear", "constant")
LR_STEPS = ("iteration", "epoch")  # how often the learning rate changes
AMP_MODES = ("none", "bf16", "fp16")
WEIGHT_MASKS = ("magnitude", "erk")

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
    # ---- fields added in 0.3 (a checkpoint without them was written with these defaults)
    dataset: str = "digits"  # label of the data the caller passes (recorded, not loaded here)
    augment: str | None = None  # the data's training augmentation label (recorded)
    lr_min: float = 0.0  # the learning rate that "cosine" and "linear" decay to
    lr_milestone_epochs: tuple[int, ...] = ()  # "multistep": epochs at which lr *= lr_gamma
    lr_step: str = "iteration"  # iteration | epoch: the schedule's value changes per ...
    warmup_epochs: float = 0.0  # linear warm-up over this many epochs (fractions allowed) ...
    warmup_start: float = 0.0  # ... from lr * warmup_start to lr
    rho_min: float | None = None  # GSAM: rho goes from rho (at peak lr) to rho_min with the lr
    max_grad_norm: float | None = None  # clip the final gradient to this 2-norm
    amp: str = "none"  # none | bf16 (CPU and GPU) | fp16 (GPU, with a GradScaler)
    weight_sparsity: float = 0.0  # static sparse training: fraction of weights held at 0 ...
    weight_mask: str = "magnitude"  # ... chosen by global magnitude or ERK random masks
    perturbation: str = "global"  # DDP: global (all-reduced) or per_worker perturbation
    sync_bn: bool = False  # DDP: SyncBatchNorm
    compile: bool = False  # torch.compile the model (runtime: same results up to rounding)
    deterministic: bool = False  # deterministic kernels (exact GPU resumes; runtime field)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", _as_pairs("model_kwargs", self.model_kwargs))
        extra = _as_pairs("optimizer_kwargs", self.optimizer_kwargs)
        object.__setattr__(self, "optimizer_kwargs", extra)
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in self.lr_milestones))
        epochs_at = tuple(int(m) for m in self.lr_milestone_epochs)
        object.__setattr__(self, "lr_milestone_epochs", epochs_at)
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
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.amp == "fp16" and self.device == "cpu":
            raise ValueError(
                "amp='fp16' needs a CUDA device (fp16 training uses a GradScaler); on cpu use "
                "amp='bf16'"
            )
        self._check_added_fields()

    def _check_added_fields(self) -> None:
        choices = (
            ("lr_step", LR_STEPS), ("amp", AMP_MODES), ("weight_mask", WEIGHT_MASKS),
            ("perturbation", PERTURBATION_MODES),
        )  # fmt: skip
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.lr_schedule == "multistep" and not self.lr_milestone_epochs:
            raise ValueError("lr_schedule='multistep' needs lr_milestone_epochs, e.g. (60, 120)")
        if not 0.0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be in [0, lr={self.lr}], got {self.lr_min!r}")
        if not self.warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if not 0.0 <= self.warmup_start <= 1.0:
            raise ValueError(f"warmup_start must be in [0, 1], got {self.warmup_start!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")
        if not 0.0 <= self.weight_sparsity < 1.0:
            raise ValueError(f"weight_sparsity must be in [0, 1), got {self.weight_sparsity!r}")
        if self.rho_min is not None and (self.rho is None or not 0 <= self.rho_min <= self.rho):
            raise ValueError(
                f"rho_min (GSAM's rho at the lowest lr) needs rho (at the peak lr) and must be "
                f"in [0, rho], got rho={self.rho!r}, rho_min={self.rho_min!r}"
            )

    @classmethod
    def smoke(cls, **overrides: Any) -> ClassifyConfig:
        """A profile that runs in about a second on CPU: 2 epochs of at most 8 steps, one
        thread (tiny models run fastest on one, and many times slower on two busy cores)."""
        settings = dict(epochs=2, steps_per_epoch=8, device="cpu", threads=1)
        return cls(**{**settings, **overrides})

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> ClassifyConfig:
        """The config of a ``to_dict()`` (e.g. a checkpoint's); fields it lacks (written by an
        older samlab) take their defaults, and unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(saved) - names
        if unknown:
            raise ValueError(f"not ClassifyConfig fields: {sorted(unknown)}")
        return cls(**saved)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def optimizer_options(self) -> dict[str, Any]:
        """The keywords handed to :func:`samlab.optim.create_optimizer`."""
        options: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.max_grad_norm is not None and get_optimizer_info(self.optimizer).sam_family:
            options["max_grad_norm"] = self.max_grad_norm  # one-pass optimizers: the trainer
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
    mask_density: float = math.nan  # sparse SAM: mean fraction of perturbed entries; nan if none
    effective_radius: float = math.nan  # sparse SAM: mean radius reached / rho; nan if none
    # sparse SAM: wall seconds of the mask refresh before the epoch's steps (0 without one;
    # not in ``seconds``); nan for optimizers that refresh no masks
    refresh_seconds: float = math.nan

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
    data_sha256: str | None = None  # the training and test data (samlab.train.classify.digest)

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
    def seconds_per_epoch(self) -> float:
        """Mean wall seconds of an epoch's training steps (mask refreshes excluded)."""
        return self.seconds / len(self.history)

    @property
    def refresh_seconds(self) -> float:
        """Total wall seconds of sparse SAM's mask refreshes (nan when none were recorded)."""
        values = [v for v in self.column("refresh_seconds") if not math.isnan(v)]
        return sum(values) if values else math.nan

    def mean_of(self, name: str) -> float:
        """Mean of a metric over the epochs that recorded it (nan when none did)."""
        values = [g for g in self.column(name) if not math.isnan(g)]
        return sum(values) / len(values) if values else math.nan

    @property
    def mean_sharpness_gap(self) -> float:
        """Mean over the epochs that recorded a gap (nan when none did, e.g. SGD)."""
        return self.mean_of("sharpness_gap")


def is_classify_config(config: Any) -> bool:
    """Whether a checkpoint's ``config`` is one :class:`ClassifyConfig` wrote (its keys are
    fields, ``model``, ``optimizer`` and ``dataset`` among them)."""
    if not isinstance(config, Mapping):
        return False
    names = {f.name for f in dataclasses.fields(ClassifyConfig)}
    return {"model", "optimizer", "dataset"} <= set(config) <= names
