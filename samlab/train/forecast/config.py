"""What a forecasting run is: :class:`ForecastConfig`, frozen and saved in every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from samlab.datasets.timeseries import get_dataset_spec
from samlab.models import check_init

FORECAST_MODELS = ("samformer", "transformer", "transformer_random", "tsmixer")
"""Model names the trainer accepts (``samlab.models`` registry names)."""

DEFAULT_SAM_RHO = 0.7
"""SAMformer's default rho (the official script's single value for every dataset)."""

#: Config fields that do not change the numbers a run produces; a resumed run may differ in them.
NON_SEMANTIC = ("data_dir", "data_path", "threads", "progress", "eval_batch_size")

#: Fields added after checkpoints were first written, with the value those checkpoints used.
ADDED_FIELDS = {"d_model": 16}

#: The models with SAMformer's attention (``d_model`` is their key/query width).
ATTENTION_MODELS = ("samformer", "transformer", "transformer_random")


@dataclass(frozen=True)
class ForecastConfig:
    """Everything that defines one forecasting run (JSON-able; saved in every checkpoint)."""

    dataset: str = "ETTh1"  # a benchmark of samlab.datasets.timeseries (any case)
    horizon: int = 96  # H: steps forecast (the papers: 96, 192, 336, 720)
    seq_len: int = 512  # L: look-back steps of a window
    model: str = "samformer"  # one of FORECAST_MODELS
    rho: float | None = None  # SAM radius; None: 0.7 for samformer, 0 (plain Adam) otherwise
    lr: float | None = None  # Adam learning rate; None: the paper's rate for the dataset
    batch_size: int = 32  # training windows per step
    max_epochs: int = 300  # epochs at most; early stopping usually ends the run sooner
    patience: int = 5  # epochs without a lower validation MSE before stopping
    restart_epochs: int = 5  # period of the cosine warm restarts, in epochs
    min_lr: float = 1e-6  # the learning rate the cosine decays toward
    weight_decay: float = 0.0  # Adam's L2 penalty
    seed: int = 0  # initialisation, data order, dropout
    output_projection: bool = True  # SAMformer's W_O (the paper's); False: the PyTorch port's
    d_model: int = 16  # attention key/query width of SAMformer / the Transformers (seed: hid_dim)
    init: str = "keras"  # weight init: keras (the TF code's Glorot-uniform) or torch (nn.Linear)
    compile: bool = False  # compiled training step and evaluation, eager fallback on failure
    max_train_batches: int | None = None  # cap on the steps of an epoch; None: every batch
    max_eval_windows: int | None = None  # cap on the windows evaluated per split; None: all
    device: str = "cpu"  # torch device of the model and the batches
    data_dir: str | None = None  # folder searched first for the CSV (find_dataset_file)
    data_path: str | None = None  # the CSV itself, instead of the search
    threads: int | None = None  # torch.set_num_threads during the run; None: leave as is
    progress: bool = True  # tqdm bars per run and per epoch
    eval_batch_size: int = 512  # evaluation batch size (does not change results)

    def __post_init__(self) -> None:
        get_dataset_spec(self.dataset)  # unknown names fail here, listing the known ones
        if self.model not in FORECAST_MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {FORECAST_MODELS}")
        if self.model not in ATTENTION_MODELS and self.d_model != ADDED_FIELDS["d_model"]:
            raise ValueError(f"d_model applies to {ATTENTION_MODELS} only, not {self.model}")
        for name in ("horizon", "seq_len", "batch_size", "max_epochs", "patience", "d_model"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_init(self.init)
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(
                f"threads must be a positive integer (torch threads), got {self.threads!r}; "
                "leave it unset (None) to keep torch's default"
            )
        for name in ("max_train_batches", "max_eval_windows"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):  # fmt: skip
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.restart_epochs < 1:
            raise ValueError(f"restart_epochs must be >= 1, got {self.restart_epochs}")
        if self.rho is not None and not (self.rho >= 0 and math.isfinite(self.rho)):
            raise ValueError(f"rho must be a finite number >= 0, got {self.rho}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite positive number, got {self.lr}")

    @classmethod
    def smoke(cls, **overrides: Any) -> ForecastConfig:
        """A profile that runs in seconds on CPU (``--smoke``): 2 epochs of at most 8 steps,
        each split evaluated on its first 256 windows."""
        settings = dict(max_epochs=2, max_train_batches=8, max_eval_windows=256)
        return cls(**{**settings, **overrides})

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> ForecastConfig:
        """The config saved in a checkpoint or ``result.json`` (:meth:`to_dict`'s extra keys,
        such as ``resolved_rho``, are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in fields})

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
        return {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC}

    def differences(self, saved: dict[str, Any]) -> list[str] | None:
        """None when the config dict ``saved`` (from a checkpoint or ``result.json``) decides
        the same numbers as this config; else the names of the fields that differ (sorted)."""
        saved = {k: v for k, v in {**ADDED_FIELDS, **saved}.items() if k not in NON_SEMANTIC}
        wanted = json.loads(json.dumps(self.semantic_dict(), default=str))
        if saved == wanted:
            return None
        return sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
