"""``python -m samlab.train.forecast`` / ``samlab-forecast``: the SAMformer protocol from a shell.

    python -m samlab.train.forecast --dataset ETTh1 --horizon 96 --output runs/etth1-96 \
        [--data-dir DIR] [--model samformer|transformer|transformer_random|tsmixer] \
        [--seeds N | --seed S] [--no_sam | --rho R] [--compile] [--sharpness]
    python -m samlab.train.forecast --eval-only --checkpoint runs/etth1-96/seed_0/best.pt \
        --output runs/eval

Writes ``OUT/metrics.json`` (means over seeds of ``test_mse``/``test_mae``, their standard
deviations over seeds (ddof=1; 0 for one seed), ``per_seed``) and ``OUT/results.csv`` (one row
per seed); each seed trains in ``OUT/seed_<S>/`` and is resumed or skipped when run again.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samlab.datasets.timeseries import (
    FORECAST_DATASETS,
    download,
    download_dir,
    find_dataset_file,
    load_forecast_data,
)
from samlab.models import INITS
from samlab.train.checkpoint import load_checkpoint
from samlab.train.forecast import (
    FORECAST_MODELS,
    ForecastConfig,
    ForecastResult,
    build_forecaster,
    evaluate_forecaster,
    train_forecaster,
)
from samlab.train.sharpness import run_top_eigenvalue

__all__ = ["aggregate", "build_parser", "main", "run_seeds"]

CSV_FIELDS = (
    "dataset", "horizon", "model", "optimizer", "rho", "lr", "seed", "test_mse", "test_mae",
    "val_mse", "best_epoch", "epochs_run", "seconds", "seconds_per_epoch", "lambda_max",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m samlab.train.forecast",
        description="Train and evaluate SAMformer / Transformer / TSMixer forecasters with the "
        "SAMformer paper's protocol (L=512, batch 32, Adam, SAM rho 0.7 for SAMformer, cosine "
        "restarts every 5 epochs, early stopping with patience 5 on validation MSE).",
    )
    names = ", ".join(FORECAST_DATASETS)
    p.add_argument("--dataset", default="ETTh1", help=f"one of: {names} (default ETTh1)")
    p.add_argument("--horizon", type=int, default=96, help="H: 96, 192, 336 or 720 (any > 0)")
    p.add_argument("--seq-len", "--seq_len", dest="seq_len", type=int, default=512)
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="folder with NAME.csv or NAME.csv.gz (default: $SAMLAB_DATA, then the "
                   "embedded data/ folder, which ships ETTh1)")  # fmt: skip
    p.add_argument("--output", "-o", default=None, help="output folder (required unless "
                   "--eval-only prints only)")  # fmt: skip
    p.add_argument("--model", choices=FORECAST_MODELS, default="samformer")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=None, help="run seeds 0..N-1")
    seeds.add_argument("--seed", type=int, default=None, help="run this one seed")
    sam = p.add_mutually_exclusive_group()
    sam.add_argument("--no_sam", "--no-sam", dest="no_sam", action="store_true",
                     help="plain Adam, one pass per step (same as --rho 0)")  # fmt: skip
    sam.add_argument(
        "--rho",
        type=float,
        default=None,
        help="SAM radius (default 0.7 for samformer, none for the baselines)",
    )
    p.add_argument("--lr", type=float, default=None, help="default: the paper's rate per dataset")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=300, help="maximum epochs (default 300)")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--weight-decay", "--weight_decay", dest="weight_decay", type=float,
                   default=0.0)  # fmt: skip
    p.add_argument(
        "--no-output-projection",
        dest="output_projection",
        action="store_false",
        help="SAMformer without W_O (the official PyTorch port's variant)",
    )
    p.add_argument("--init", choices=INITS, default="keras",
                   help="weight init: keras (Glorot-uniform, the TensorFlow reference code's; "
                   "default) or torch (nn.Linear's default)")  # fmt: skip
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile each training step into one graph (SAMformer/Transformer: both SAM passes "
        "and Adam; TSMixer: the model) and the evaluation model; eager fallback on failure",
    )
    p.add_argument("--sharpness", action="store_true",
                   help="also report the top Hessian eigenvalue of the best model (Lanczos "
                   "on the first --sharpness-windows training windows)")  # fmt: skip
    p.add_argument("--sharpness-windows", type=int, default=1024)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run for checks: 2 epochs of 8 batches, 256 evaluation windows, "
                   "sharpness on 128 windows")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint and exit")
    p.add_argument("--checkpoint", default=None, help="a best.pt / last.pt of this trainer")
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the dataset's standard public copy into --data-dir if missing",
    )
    return p


def _config(args: argparse.Namespace, seed: int) -> ForecastConfig:
    options = dict(
        dataset=args.dataset, horizon=args.horizon, seq_len=args.seq_len, model=args.model,
        rho=0.0 if args.no_sam else args.rho, lr=args.lr, batch_size=args.batch_size,
        max_epochs=args.epochs, patience=args.patience, weight_decay=args.weight_decay,
        seed=seed, output_projection=args.output_projection, init=args.init, compile=args.compile,
        device=args.device, data_dir=args.data_dir, threads=args.threads,
        progress=not args.quiet,
    )  # fmt: skip
    if args.smoke:
        del options["max_epochs"]  # the smoke profile's, whatever --epochs says
        return ForecastConfig.smoke(**options)
    return ForecastConfig(**options)


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``metrics.json`` content from per-seed results."""
    first = results[0]
    keys = ("seed", "test_mse", "test_mae", "val_mse", "best_epoch", "epochs_run", "seconds",
            "seconds_per_epoch", "lambda_max")  # fmt: skip
    per_seed = [{k: r[k] for k in keys if k in r} for r in results]
    out = {k: first[k] for k in ("dataset", "horizon", "model", "optimizer", "rho", "lr")}
    for name in ("test_mse", "test_mae", "val_mse"):
        values = [r[name] for r in results]
        out[name] = statistics.fmean(values)
        out[f"{name}_std"] = _std(values)
    if all("lambda_max" in r for r in results):
        out["lambda_max"] = statistics.fmean(r["lambda_max"] for r in results)
    out["seeds"] = [r["seed"] for r in results]
    out["seconds"] = sum(r["seconds"] for r in results)
    out["per_seed"] = per_seed
    out["n_parameters"] = first.get("n_parameters")
    return out


def _sharpness(result: ForecastResult, run_dir: Path, args) -> ForecastResult:
    windows, iters = (128, 10) if args.smoke else (args.sharpness_windows, 30)
    return result.with_items(lambda_max=run_top_eigenvalue(run_dir, windows=windows, iters=iters))


def run_seeds(args: argparse.Namespace, seeds: list[int], out: Path) -> dict[str, Any]:
    results = []
    for seed in seeds:
        config = _config(args, seed)
        run_dir = out / f"seed_{seed}"
        result = train_forecaster(config, run_dir)
        if args.sharpness:
            result = _sharpness(result, run_dir, args)
        results.append(result)
    metrics = aggregate(results)
    metrics["config"] = results[0]["config"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    return metrics


def _eval_only(args: argparse.Namespace) -> int:
    if not args.checkpoint:
        raise ValueError("--eval-only needs --checkpoint FILE (a best.pt or last.pt)")
    ckpt = load_checkpoint(args.checkpoint)
    saved = ckpt.get("config")
    if not isinstance(saved, dict) or "model" not in saved:
        raise ValueError(
            f"{args.checkpoint} has no forecaster config; --eval-only needs a checkpoint "
            "written by samlab.train.forecast"
        )
    config = ForecastConfig.from_dict(saved)
    # --data-dir wins; else the data the run was trained on (its saved folder or file)
    where = {"data_dir": args.data_dir} if args.data_dir else {
        "data_dir": config.data_dir, "path": config.data_path}  # fmt: skip
    data = load_forecast_data(config.dataset, config.horizon, seq_len=config.seq_len, **where)
    model = build_forecaster(config, data.n_channels)
    model.load_state_dict(ckpt["model"])
    test = evaluate_forecaster(model, data.test)
    val = evaluate_forecaster(model, data.val)
    result = {"checkpoint": str(args.checkpoint), "dataset": config.dataset,
              "horizon": config.horizon, "model": config.model, "test_mse": test["mse"],
              "test_mae": test["mae"], "val_mse": val["mse"], "val_mae": val["mae"]}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _summary(metrics: dict[str, Any]) -> str:
    return (
        f"{metrics['model']} ({metrics['optimizer']}, rho {metrics['rho']}) on "
        f"{metrics['dataset']} H={metrics['horizon']}, seeds {metrics['seeds']}: test MSE "
        f"{metrics['test_mse']:.4f} ± {metrics['test_mse_std']:.4f}, MAE "
        f"{metrics['test_mae']:.4f} ± {metrics['test_mae_std']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.eval_only:
            return _eval_only(args)
        if args.output is None:
            raise ValueError("--output DIR is required for training")
        if args.download:
            try:
                find_dataset_file(args.dataset, args.data_dir)
            except FileNotFoundError:
                folder = download_dir(args.data_dir)
                download(args.dataset, folder)
                args.data_dir = str(folder)
        if args.seeds is not None and args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        seeds = list(range(args.seeds)) if args.seeds else [args.seed or 0]
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        metrics = run_seeds(args, seeds, out)
    except (ValueError, OSError, FloatingPointError) as err:  # OSError: files, network
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(_summary(metrics))
    if math.isfinite(metrics.get("lambda_max", math.nan)):
        print(f"top Hessian eigenvalue (mean over seeds): {metrics['lambda_max']:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
