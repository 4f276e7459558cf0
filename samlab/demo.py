"""``make demo``: SGD and five SAM variants on scikit-learn's 8x8 digits, side by side.

    python -m samlab.demo --output results [--epochs N] [--smoke] [--threads T] [--fresh]
                                           [--no-landscape] [--no-forecast]

Every optimizer trains the digits CNN (:func:`samlab.models.digits_cnn`, BatchNorm statistics
updated in the clean pass) from the same initial weights, on the same batches, with the same
learning-rate schedule, momentum, weight decay and epochs; only the optimizer differs. The
run writes, under ``--output``:

* ``summary.csv``: one row per optimizer (final/best test accuracy, final train loss, mean
  sharpness gap, passes per step, training seconds, seconds relative to SGD, and CPU seconds,
  which stay meaningful when other jobs share the cores), also printed as a table;
* ``learning_curves.png``: train loss and test accuracy per epoch, all six optimizers;
* ``demo_config.json``: the shared settings and each optimizer's config;
* ``runs/<profile>/<optimizer>/``: each run's ``metrics.csv``, ``config.json`` and
  ``checkpoint.pt``. Running the demo again with the same settings loads the finished runs
  instead of retraining them (``--fresh`` retrains).

Then the loss landscapes (:mod:`samlab._demo_landscape`; ``--no-landscape`` skips them): for the
final SGD and SAM models, a filter-normalised 2D surface (21 x 21 on [-1, 1]^2) and a 1D slice
(41 points) of the train loss on 1,024 training digits, computed on 2 MPI ranks by the
``landscape`` command line (one process when there is no ``mpiexec``), written to
``landscape/*.h5``; ``landscape_sgd_vs_sam.png`` (contours, 3D surfaces and 1D slices side by
side) and ``sharpness.csv`` (curvature of the 1D slice at the centre and the loss rise at radius
rho = 0.05, also printed). ``--smoke`` uses a 5 x 5 grid, a 7-point slice and 128 digits.

Time (printed at the end, with CPU seconds, which stay meaningful on shared cores): measured on
this repository's 2-core machine while other jobs kept its load average at 3-4, the default demo
took 155 s (149 CPU s): training 47 CPU s on one core, the landscapes 90 s wall and 102 CPU s on
2 ranks, about a third of it the start-up of the 4 MPI launches (torch imported by every rank).
Last, SAMformer (:mod:`samlab._demo_forecast`; ``--no-forecast`` skips it): trained on the
embedded ETTh1 (H=96, the paper's protocol cut to 8 epochs) with SAM (rho 0.7) and without
(plain Adam: the paper's Transformer baseline); ``forecast_summary.csv`` (test MSE/MAE and the
top Hessian eigenvalue of each model) and ``forecast_etth1.png`` (forecasts and validation
curves).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from samlab.datasets import load_digits
from samlab.train.classify import ClassifyConfig, TrainResult, train_classifier

__all__ = [
    "COMPARISON",
    "SUMMARY_COLUMNS",
    "Comparison",
    "comparison_configs",
    "main",
    "plot_learning_curves",
    "run_optimizer_comparison",
    "write_summary",
]

#: registry name -> optimizer settings; everything else is shared (see comparison_configs)
COMPARISON: dict[str, dict[str, Any]] = {
    "sgd": {},
    "sam": {"rho": 0.05},
    "asam": {"rho": 0.5},
    "gsam": {"rho": 0.05, "optimizer_kwargs": {"alpha": 0.4}},
    "looksam": {"rho": 0.05, "optimizer_kwargs": {"k": 5}},
    "onestep-sam": {"rho": 0.05},
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
    "seconds_vs_sgd",
    "cpu_seconds",
)


@dataclass(frozen=True)
class Comparison:
    """The optimizer comparison: one :class:`TrainResult` per optimizer and the summary rows."""

    results: dict[str, TrainResult]
    rows: tuple[dict[str, Any], ...]
    output: Path
    seconds: float  # wall time of the whole comparison, loading/plotting included


def comparison_configs(
    epochs: int = DEFAULT_EPOCHS, *, threads: int | None = 1, seed: int = 0
) -> dict[str, ClassifyConfig]:
    """One :class:`ClassifyConfig` per optimizer of :data:`COMPARISON`, sharing all else."""
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
    return {
        name: ClassifyConfig(optimizer=name, **shared, **knobs)
        for name, knobs in COMPARISON.items()
    }


def _summary_row(name: str, result: TrainResult, sgd_seconds: float | None) -> dict[str, Any]:
    return {
        "optimizer": name,
        "final_test_acc": result.final_test_acc,
        "best_test_acc": result.best_test_acc,
        "final_train_loss": result.final_train_loss,
        "mean_sharpness_gap": result.mean_sharpness_gap,
        "passes_per_step": result.passes_per_step,
        "seconds": result.seconds,
        "seconds_vs_sgd": result.seconds / sgd_seconds if sgd_seconds else math.nan,
        "cpu_seconds": result.cpu_seconds,
    }


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``summary.csv`` with :data:`SUMMARY_COLUMNS`; a gap that was not recorded is empty."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            )


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table."""
    header = (
        f"{'optimizer':<12} {'final acc':>9} {'best acc':>9} {'train loss':>10} "
        f"{'sharp. gap':>10} {'passes':>6} {'seconds':>8} {'vs SGD':>7} {'CPU s':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        gap = "-" if math.isnan(r["mean_sharpness_gap"]) else f"{r['mean_sharpness_gap']:.4f}"
        lines.append(
            f"{r['optimizer']:<12} {r['final_test_acc']:>9.4f} {r['best_test_acc']:>9.4f} "
            f"{r['final_train_loss']:>10.4f} {gap:>10} {r['passes_per_step']:>6.2f} "
            f"{r['seconds']:>8.2f} {r['seconds_vs_sgd']:>6.2f}x {r['cpu_seconds']:>7.2f}"
        )
    return "\n".join(lines)


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
    for name, result in results.items():
        epochs = result.column("epoch")
        loss_ax.plot(epochs, result.column("train_loss"), marker="o", ms=3, label=name)
        acc_ax.plot(
            epochs, [100 * a for a in result.column("test_acc")], marker="o", ms=3, label=name
        )
    loss_ax.set(xlabel="epoch", ylabel="train loss", yscale="log", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    finals = [100 * r.final_test_acc for r in results.values()]
    acc_ax.set_ylim(max(0.0, min(finals) - 8.0), 100.5)
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("digits CNN: SGD vs SAM variants (same seed, schedule and epochs)")
    figure.savefig(path)
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
    configs = comparison_configs(epochs, threads=threads, seed=seed)
    data = load_digits(seed=seed)
    train = (data.x_train, data.y_train)
    if smoke:
        train = (data.x_train[:SMOKE_TRAIN_SAMPLES], data.y_train[:SMOKE_TRAIN_SAMPLES])
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
    (output / "demo_config.json").write_text(json.dumps(settings, indent=2) + "\n")
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m samlab.demo",
        description="Compare SGD, SAM, ASAM, GSAM, LookSAM and one-step SAM on the digits CNN.",
    )
    parser.add_argument("--output", type=Path, default=Path("results"), help="output folder")
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"epochs (default {DEFAULT_EPOCHS}; smoke 2)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 2 epochs, 512 digits")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (default 1: fastest here)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split, initialisation, data order")
    parser.add_argument("--fresh", action="store_true", help="retrain runs found under --output")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--no-landscape", action="store_true", help="skip the SGD vs SAM loss landscapes"
    )
    parser.add_argument(
        "--no-forecast", action="store_true", help="skip SAMformer with and without SAM on ETTh1"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m samlab.demo`` and ``make demo``."""
    args = _parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        _parser().error("--epochs must be at least 1")
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    comparison = run_optimizer_comparison(
        args.output,
        args.epochs,
        smoke=args.smoke,
        threads=args.threads,
        seed=args.seed,
        progress=not args.no_progress,
        fresh=args.fresh,
    )
    print(f"\nwrote {comparison.output / 'summary.csv'}, learning_curves.png, demo_config.json")
    if not args.no_landscape:
        from samlab._demo_landscape import run_demo_landscapes

        landscape = run_demo_landscapes(comparison, smoke=args.smoke, seed=args.seed)
        print(f"wrote {landscape.figure}, {landscape.sharpness_csv.name}, landscape/*.h5")
        print(
            f"landscapes took {landscape.seconds:.1f} s (CPU {landscape.cpu_seconds:.1f} s on "
            f"{landscape.processes} process{'es' if landscape.processes > 1 else ''})"
        )
    if not args.no_forecast:
        from samlab._demo_forecast import run_demo_forecast

        forecast = run_demo_forecast(
            args.output,
            smoke=args.smoke,
            seed=args.seed,
            progress=not args.no_progress,
            threads=args.threads,
            fresh=args.fresh,
        )
        print(f"wrote {forecast.summary_csv}, {forecast.figure.name}")
        print(f"SAMformer runs took {forecast.seconds:.1f} s")
    print(
        f"demo took {time.perf_counter() - start:.1f} s "
        f"(CPU {_cpu_seconds() - cpu_start:.1f} s, subprocesses included)"
    )
    return 0


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished subprocesses (the MPI ranks)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
