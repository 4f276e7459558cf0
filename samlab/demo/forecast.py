"""The demo's forecasting part: SAMformer with and without SAM on the embedded ETTh1.

Both runs use the paper's protocol (:mod:`samlab.train.forecast`: L=512, H=96, batch 32, Adam
lr 1e-3, cosine restarts, early stopping) cut to a few epochs; the only difference is the
optimizer (SAM rho 0.7 around Adam, or plain Adam, which is the paper's "Transformer"
baseline). Writes ``forecast_summary.csv`` (test MSE/MAE, epochs, seconds and the top Hessian
eigenvalue of each trained model) and ``forecast_etth1.png`` (forecasts of the oil-temperature
channel on test windows, and the validation curves).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape.plot import save_figure
from samlab.datasets import load_forecast_data
from samlab.demo.tables import heading, write_csv
from samlab.train import load_checkpoint
from samlab.train.forecast import ForecastConfig, build_forecaster, train_forecaster
from samlab.train.sharpness import run_top_eigenvalue

FORECAST_COLUMNS = ("model", "optimizer", "rho", "epochs_run", "best_epoch", "test_mse",
                    "test_mae", "val_mse", "lambda_max", "seconds")  # fmt: skip
#: the printed table's column titles and their widths
FORECAST_HEADINGS = (("model", "<20"), ("epochs", ">6"), ("test MSE", ">9"), ("test MAE", ">9"),
                     ("lambda_max", ">11"), ("seconds", ">8"))  # fmt: skip
RUNS = {"samformer+sam": 0.7, "samformer (no SAM)": 0.0}
HORIZON = 96


@dataclass
class ForecastDemo:
    """What the forecasting part wrote: the summary rows, their CSV, the figure, wall time."""

    rows: list[dict[str, Any]]
    summary_csv: Path
    figure: Path
    seconds: float


def _configs(
    smoke: bool, seed: int, progress: bool, threads: int | None = 1
) -> dict[str, ForecastConfig]:
    limits = (
        {"max_epochs": 1, "max_train_batches": 8, "max_eval_windows": 256}
        if smoke
        else {"max_epochs": 8}
    )
    return {
        name: ForecastConfig(
            horizon=HORIZON, rho=rho, seed=seed, threads=threads, progress=progress, **limits
        )  # fmt: skip
        for name, rho in RUNS.items()
    }


def plot_forecasts(models: dict[str, torch.nn.Module], data, results, path: Path) -> Path:
    """OT-channel forecasts on three test windows plus the validation curves, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    picks = [0, len(data.test) // 2, len(data.test) - 1]
    x, y = data.test.windows(torch.tensor(picks))
    channel = len(data.columns) - 1  # OT, the target the ETT papers forecast
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    history = 192
    with torch.no_grad():
        preds = {name: m.eval()(x) for name, m in models.items()}
    for ax, i in zip(axes[:3], range(len(picks)), strict=True):
        past = range(-history, 0)
        ax.plot(past, x[i, -history:, channel], color="0.5", lw=1, label="input (last 192)")
        ahead = range(0, HORIZON)
        ax.plot(ahead, y[i, :, channel], color="k", lw=1.5, label="truth")
        for name, pred in preds.items():
            ax.plot(ahead, pred[i, :, channel], lw=1.5, label=name)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_title(f"test window {picks[i]}: {data.columns[channel]} (standardised)")
        ax.set_xlabel("hours from forecast start")
    axes[0].legend(fontsize=8, loc="best")
    for name, result in results.items():
        epochs = [h["epoch"] for h in result["history"]]
        axes[3].plot(epochs, [h["val_mse"] for h in result["history"]], marker="o", label=name)
    axes[3].set_title("validation MSE per epoch")
    axes[3].set_xlabel("epoch")
    axes[3].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[3].legend(fontsize=8)
    fig.suptitle(f"ETTh1, H={HORIZON}: SAMformer with and without SAM")
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches=None)
    plt.close(fig)
    return path


def run_demo_forecast(
    output: Path,
    *,
    smoke: bool = False,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = 1,
    fresh: bool = False,
) -> ForecastDemo:
    """Train both runs (finished runs under ``output/runs/forecast`` are reused unless
    ``fresh``), compute their sharpness, write the CSV and the figure, print the table."""
    start = time.perf_counter()
    output = Path(output)
    configs = _configs(smoke, seed, progress, threads)
    data = load_forecast_data("ETTh1", HORIZON)
    rows, models, results = [], {}, {}
    for name, config in configs.items():
        run_dir = (
            output / "runs" / "forecast" / ("smoke" if smoke else f"{config.max_epochs}ep") / name
        )
        if fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        result = train_forecaster(config, run_dir, data=data)
        model = build_forecaster(config, data.n_channels)
        model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
        models[name], results[name] = model, result
        lam = run_top_eigenvalue(run_dir, windows=64 if smoke else 128, iters=20, data=data)
        rows.append({
            "model": name, "optimizer": result["optimizer"], "rho": result["rho"],
            "epochs_run": result["epochs_run"], "best_epoch": result["best_epoch"],
            "test_mse": result["test_mse"], "test_mae": result["test_mae"],
            "val_mse": result["val_mse"], "lambda_max": lam, "seconds": result["seconds"],
        })  # fmt: skip
    summary = write_csv(output / "forecast_summary.csv", FORECAST_COLUMNS, rows)
    figure = plot_forecasts(models, data, results, output / "forecast_etth1.png")
    print(format_forecast(rows))
    return ForecastDemo(rows, summary, figure, time.perf_counter() - start)


def format_forecast(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"\nSAMformer on ETTh1 (H={HORIZON}, standardised scale; lambda_max = top Hessian "
        "eigenvalue of the train MSE)",
        heading(FORECAST_HEADINGS),
    ]
    for r in rows:
        lines.append(
            f"{r['model']:<20} {r['epochs_run']:>6} {r['test_mse']:>9.4f} {r['test_mae']:>9.4f} "
            f"{r['lambda_max']:>11.4g} {r['seconds']:>8.1f}"
        )
    return "\n".join(lines)
