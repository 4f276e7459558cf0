"""The optimizer comparison of ``make demo``: SGD and ten SAM variants on the 8x8 digits.

Every optimizer of :data:`COMPARISON` trains the digits CNN (:func:`samlab.models.digits_cnn`,
BatchNorm statistics updated in the clean pass) from the same initial weights, on the same
batches, with the same learning-rate schedule, momentum, weight decay and epochs
(:func:`comparison_configs`); only the optimizer differs. bSAM is its own Adam-like optimizer:
it takes its paper's step size (0.5, about what SGD's 0.05 with momentum 0.9 moves) and the
number of training digits ``N`` (its posterior variance is ``1 / (N s)``); its train loss is
measured at posterior samples. :func:`run_optimizer_comparison`
writes ``summary.csv`` (:data:`SUMMARY_COLUMNS`), ``learning_curves.png``,
``demo_config.json`` and each run under ``runs/<profile>/<optimizer>/``, and prints the
summary table.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape.io import atomic_write
from landscape.plot import save_figure
from samlab.datasets import load_digits
from samlab.demo.tables import text_table, write_csv
from samlab.optim import get_optimizer_info
from samlab.train.classify import ClassifyConfig, TrainResult, train_classifier

#: registry name -> optimizer settings; everything else is shared (see comparison_configs)
COMPARISON: dict[str, dict[str, Any]] = {
    "sgd": {},
    "sam": {"rho": 0.05},
    "asam": {"rho": 0.5},
    "gsam": {"rho": 0.05, "optimizer_kwargs": {"alpha": 0.4}},
    "looksam": {"rho": 0.05, "optimizer_kwargs": {"k": 5}},
    "onestep-sam": {"rho": 0.05},
    # sparse SAM: half the entries perturbed, masks refreshed every epoch (the seed's README)
    "ssamf": {"rho": 0.05, "optimizer_kwargs": {"sparsity": 0.5, "num_samples": 128}},
    "ssamd": {"rho": 0.05, "optimizer_kwargs": {"sparsity": 0.5}},
    # WSAM (paper's gamma range 0.8-0.95), FriendlySAM (authors' defaults), bSAM
    "wsam": {"rho": 0.05, "optimizer_kwargs": {"gamma": 0.9}},
    "friendlysam": {"rho": 0.05, "optimizer_kwargs": {"sigma": 1.0, "lmbda": 0.9}},
    "bsam": {"rho": 0.05, "lr": 0.5},  # + num_data: the training set's size
}
DEFAULT_EPOCHS = 15  # test accuracy plateaus after about 10 (see learning_curves.png)
SMOKE_EPOCHS = 2
SMOKE_TRAIN_SAMPLES = 512  # the smoke profile trains on this many digits (8 steps per epoch)
SUMMARY_COLUMNS = (
    "optimizer",
    "final_test_acc",
    "best_test_acc",
    "final_train_loss",
    "mean_sharpness_gap",
    "passes_per_step",
    "seconds",
    "seconds_per_epoch",
    "seconds_vs_sgd",
    "cpu_seconds",
    "mask_density",
    "effective_radius",
    "refresh_seconds",
)


@dataclass(frozen=True)
class Comparison:
    """The optimizer comparison: one :class:`TrainResult` per optimizer and the summary rows."""

    results: dict[str, TrainResult]
    rows: tuple[dict[str, Any], ...]
    output: Path
    seconds: float  # wall time of the whole comparison, loading/plotting included


def comparison_configs(
    epochs: int = DEFAULT_EPOCHS,
    *,
    threads: int | None = 1,
    seed: int = 0,
    train_samples: int | None = None,
) -> dict[str, ClassifyConfig]:
    """One :class:`ClassifyConfig` per optimizer of :data:`COMPARISON`, sharing all else.

    ``train_samples`` is handed to the optimizers that sample weights from a posterior (bSAM's
    ``num_data``, the registry flag ``samples_weights``); they are left out without it."""
    shared = dict(
        model="digits_cnn",
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        epochs=epochs,
        batch_size=64,
        seed=seed,
        bn_policy="clean",
        lr_schedule="cosine",
        device="cpu",
        threads=threads,
    )
    configs = {}
    for name, knobs in COMPARISON.items():
        knobs = dict(knobs)
        if get_optimizer_info(name).samples_weights:
            if train_samples is None:
                continue
            knobs["optimizer_kwargs"] = {
                **knobs.get("optimizer_kwargs", {}),
                "num_data": train_samples,
            }
        configs[name] = ClassifyConfig(optimizer=name, **{**shared, **knobs})
    return configs


def _summary_row(name: str, result: TrainResult, sgd_seconds: float | None) -> dict[str, Any]:
    return {
        "optimizer": name,
        "final_test_acc": result.final_test_acc,
        "best_test_acc": result.best_test_acc,
        "final_train_loss": result.final_train_loss,
        "mean_sharpness_gap": result.mean_sharpness_gap,
        "passes_per_step": result.passes_per_step,
        "seconds": result.seconds,
        "seconds_per_epoch": result.seconds_per_epoch,
        "seconds_vs_sgd": result.seconds / sgd_seconds if sgd_seconds else math.nan,
        "cpu_seconds": result.cpu_seconds,
        "mask_density": result.mean_of("mask_density"),
        "effective_radius": result.mean_of("effective_radius"),
        "refresh_seconds": result.refresh_seconds,
    }


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``summary.csv`` with :data:`SUMMARY_COLUMNS`; a gap that was not recorded is empty."""
    write_csv(path, SUMMARY_COLUMNS, rows, _blank_nan)


def _blank_nan(value: Any) -> Any:
    return "" if isinstance(value, float) and math.isnan(value) else value


#: the printed summary's column titles and their widths
SUMMARY_HEADINGS = (
    ("optimizer", "<12"), ("final acc", ">9"), ("best acc", ">9"), ("train loss", ">10"),
    ("sharp. gap", ">10"), ("passes", ">6"), ("seconds", ">8"), ("s/epoch", ">7"),
    ("vs SGD", ">7"), ("CPU s", ">7"), ("density", ">7"), ("radius", ">6"), ("refresh s", ">9"),
)  # fmt: skip


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table."""
    lines = []
    for r in rows:
        gap = "-" if math.isnan(r["mean_sharpness_gap"]) else f"{r['mean_sharpness_gap']:.4f}"
        density, radius = (
            "-" if math.isnan(r[k]) else f"{r[k]:.3f}" for k in ("mask_density", "effective_radius")
        )
        refresh = "-" if math.isnan(r["refresh_seconds"]) else f"{r['refresh_seconds']:.2f}"
        lines.append(
            f"{r['optimizer']:<12} {r['final_test_acc']:>9.4f} {r['best_test_acc']:>9.4f} "
            f"{r['final_train_loss']:>10.4f} {gap:>10} {r['passes_per_step']:>6.2f} "
            f"{r['seconds']:>8.2f} {r['seconds_per_epoch']:>7.3f} {r['seconds_vs_sgd']:>6.2f}x "
            f"{r['cpu_seconds']:>7.2f} {density:>7} {radius:>6} {refresh:>9}"
        )
    return text_table(SUMMARY_HEADINGS, lines)


def plot_learning_curves(results: dict[str, TrainResult], path: Path) -> Path:
    """Two panels, train loss (log scale) and test accuracy per epoch, one line per optimizer."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency
        raise ImportError(
            "plotting the learning curves needs matplotlib: pip install matplotlib"
        ) from err

    figure = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")  # Agg; pyplot untouched
    FigureCanvasAgg(figure)
    loss_ax, acc_ax = figure.subplots(1, 2)
    for i, (name, result) in enumerate(results.items()):
        epochs = result.column("epoch")
        style = dict(marker="o", ms=3, label=name, ls="-" if i < 10 else "--")  # 10 colours
        loss_ax.plot(epochs, result.column("train_loss"), **style)
        acc_ax.plot(epochs, [100 * a for a in result.column("test_acc")], **style)
    loss_ax.set(xlabel="epoch", ylabel="train loss", yscale="log", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    finals = [100 * r.final_test_acc for r in results.values()]
    acc_ax.set_ylim(max(0.0, min(finals) - 8.0), 100.5)
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("digits CNN: SGD vs SAM variants (same seed, schedule and epochs)")
    save_figure(figure, path, dpi=None, bbox_inches=None)
    return path


def run_optimizer_comparison(
    output: str | Path,
    epochs: int | None = None,
    *,
    smoke: bool = False,
    threads: int | None = 1,
    seed: int = 0,
    progress: bool = True,
    fresh: bool = False,
) -> Comparison:
    """Train the digits CNN with every optimizer of :data:`COMPARISON` and write the results.

    Writes ``summary.csv``, ``learning_curves.png``, ``demo_config.json`` and the runs under
    ``output``; prints the summary table. ``smoke`` trains 2 epochs on 512 digits.
    """
    start = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    epochs = epochs or (SMOKE_EPOCHS if smoke else DEFAULT_EPOCHS)
    data = load_digits(seed=seed)
    train = (data.x_train, data.y_train)
    if smoke:
        train = (data.x_train[:SMOKE_TRAIN_SAMPLES], data.y_train[:SMOKE_TRAIN_SAMPLES])
    configs = comparison_configs(epochs, threads=threads, seed=seed, train_samples=len(train[1]))
    test = (data.x_test, data.y_test)
    profile = f"smoke-{epochs}ep" if smoke else f"{epochs}ep"
    settings = {
        "data": {
            "name": "scikit-learn digits (8x8, 10 classes)",
            "seed": seed,
            "test_fraction": data.test_fraction,
            "train_samples": len(train[1]),
            "test_samples": len(test[1]),
        },
        "epochs": epochs,
        "smoke": smoke,
        "threads": threads,
        "runs": str(Path("runs") / profile),
        "configs": {name: config.to_dict() for name, config in configs.items()},
        "torch": torch.__version__,
    }
    atomic_write(output / "demo_config.json", json.dumps(settings, indent=2) + "\n")
    results: dict[str, TrainResult] = {}
    for name, config in configs.items():
        results[name] = train_classifier(
            config,
            train,
            test,
            progress=progress,
            output_dir=output / "runs" / profile / name,
            resume=not fresh,
        )
    sgd_seconds = results["sgd"].seconds if "sgd" in results else None
    rows = tuple(_summary_row(name, r, sgd_seconds) for name, r in results.items())
    write_summary(rows, output / "summary.csv")
    plot_learning_curves(results, output / "learning_curves.png")
    print(format_summary(rows))
    return Comparison(results, rows, output, time.perf_counter() - start)
