"""``python -m samlab.train.forecast`` / ``samlab-forecast``: the SAMformer protocol from a shell.

    python -m samlab.train.forecast --dataset ETTh1 --horizon 96 [--output runs/etth1-96] \
        [--data-dir DIR] [--model samformer|transformer|transformer_random|tsmixer] \
        [--seeds N | --seed S] [--no_sam | --rho R] [--compile] [--sharpness]
    python -m samlab.train.forecast --dataset ETTh1 --seed 1 [--no_sam] --seed-defaults
    python -m samlab.train.forecast --eval-only --checkpoint runs/etth1-96/seed_0/best.pt \
        --output runs/eval

Without ``--output`` the run goes to ``results/<model>/<dataset>/seq_len_<L>_pred_len_<H>_bs_<B>_
<rho_R | no_sam>`` (printed). dnsch/sam_experiments' flags are accepted as aliases (``--lrate``,
``--wdecay``, ``--max_epochs``, ``--hid_dim``); ``--seed-defaults`` takes that project's own
defaults (batch 256, rho 0.5, patience 30, at most 100 epochs, Adam lr 1e-3, weight decay 1e-5)
instead of the SAMformer paper's protocol; flags given explicitly win over either. Devices follow
the rule of every samlab command line: ``--device cuda[:N]`` that is absent is an error, ``--cuda``
without a GPU prints a note and runs on the CPU.

Writes ``OUT/metrics.json`` (means over seeds of ``test_mse``/``test_mae``, their standard
deviations over seeds (ddof=1; 0 for one seed), ``per_seed``) and ``OUT/results.csv`` (one row
per seed) over every finished seed in ``OUT`` (``--seeds 2`` then ``--seed 2`` aggregates three);
each seed trains in ``OUT/seed_<S>/`` (one process at a time: a lock file) and is resumed or
skipped when run again, provided the data read is the same (``data_sha256``). Files are written
atomically (:func:`landscape.io.atomic_write`).

Exit statuses (those of every samlab command line): 0 done; 1 bad data, files or any failure,
as one ``error:`` line (``SAMLAB_DEBUG=1`` shows the traceback); 2 malformed flags; 130 Ctrl-C
and 143 SIGTERM, after "interrupted at epoch N (seed S); rerun the same command to resume".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from landscape.cli.exits import EXIT_INTERRUPTED, run_command
from landscape.devices import resolve_device
from landscape.io import atomic_write
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
    DEFAULT_SAM_RHO,
    FORECAST_MODELS,
    ForecastConfig,
    ForecastResult,
    build_forecaster,
    evaluate_forecaster,
    train_forecaster,
)
from samlab.train.forecast.seeds import (
    AGGREGATE_LOCK,
    finished_seeds,
    summary_line,
    write_aggregate,
)
from samlab.train.locks import short_lock
from samlab.train.sharpness import run_top_eigenvalue

__all__ = [
    "PAPER_DEFAULTS",
    "SEED_DEFAULTS",
    "apply_presets",
    "build_parser",
    "default_output",
    "main",
    "run_seeds",
]

#: The SAMformer paper's protocol (the default; lr and rho None: per dataset / per model).
PAPER_DEFAULTS = {"batch_size": 32, "patience": 5, "epochs": 300, "weight_decay": 0.0,
                  "lr": None, "rho": None}  # fmt: skip

#: dnsch/sam_experiments' own defaults for SAMformer (``--seed-defaults``).
SEED_DEFAULTS = {"batch_size": 256, "patience": 30, "epochs": 100, "weight_decay": 1e-5,
                 "lr": 1e-3, "rho": 0.5}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m samlab.train.forecast",
        description="Train and evaluate SAMformer / Transformer / TSMixer forecasters with the "
        "SAMformer paper's protocol (L=512, batch 32, Adam, SAM rho 0.7 for SAMformer, cosine "
        "restarts every 5 epochs, early stopping with patience 5 on validation MSE).",
    )
    names = ", ".join(FORECAST_DATASETS)
    p.add_argument("--dataset", default=None, help=f"one of: {names} (default ETTh1 when "
                   "--output is given; without both the command stops)")  # fmt: skip
    p.add_argument("--horizon", type=int, default=96, help="H: 96, 192, 336 or 720 (any > 0)")
    p.add_argument("--seq-len", "--seq_len", dest="seq_len", type=int, default=512)
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="folder with NAME.csv or NAME.csv.gz (default: $SAMLAB_DATA, then the "
                   "embedded data/ folder, which ships ETTh1)")  # fmt: skip
    p.add_argument("--output", "-o", default=None, help="output folder (default: results/"
                   "<model>/<dataset>/seq_len_<L>_pred_len_<H>_bs_<B>_<rho_R|no_sam>, "
                   "printed)")  # fmt: skip
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
        help="SAM radius (default 0.7 for samformer, none for the baselines; 0.5 with "
        "--seed-defaults)",
    )
    p.add_argument("--lr", "--lrate", dest="lr", type=float, default=None,
                   help="Adam learning rate (default: the paper's rate per dataset; 1e-3 with "
                   "--seed-defaults)")  # fmt: skip
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
                   help="training batch (32; 256 with --seed-defaults)")  # fmt: skip
    p.add_argument("--epochs", "--max_epochs", dest="epochs", type=int, default=None,
                   help="maximum epochs (300; 100 with --seed-defaults)")  # fmt: skip
    p.add_argument("--patience", type=int, default=None, help="(5; 30 with --seed-defaults)")
    p.add_argument("--weight-decay", "--weight_decay", "--wdecay", dest="weight_decay",
                   type=float, default=None, help="Adam's L2 penalty (0; 1e-5 with "
                   "--seed-defaults)")  # fmt: skip
    p.add_argument("--d-model", "--d_model", "--hid_dim", dest="d_model", type=int, default=16,
                   help="attention key/query width of SAMformer and the Transformers "
                   "(16)")  # fmt: skip
    p.add_argument("--seed-defaults", "--seed_defaults", dest="seed_defaults",
                   action="store_true", help="dnsch/sam_experiments' defaults instead of the "
                   "paper's protocol: batch 256, rho 0.5, patience 30, 100 epochs, lr 1e-3, "
                   "weight decay 1e-5")  # fmt: skip
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
    p.add_argument("--device", default=None,
                   help="cpu (default), cuda or cuda:N; an absent CUDA device is an "
                   "error")  # fmt: skip
    p.add_argument("--cuda", "-c", action="store_true",
                   help="run on the GPU; without one, a note and the CPU")  # fmt: skip
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


def apply_presets(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags left unset from :data:`PAPER_DEFAULTS`, or :data:`SEED_DEFAULTS` with
    ``--seed-defaults``; explicit flags win (``--no_sam`` over the preset's rho)."""
    preset = SEED_DEFAULTS if args.seed_defaults else PAPER_DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None and not (key == "rho" and args.no_sam):
            setattr(args, key, value)
    return args


def default_output(args: argparse.Namespace) -> Path:
    """``results/<model>/<dataset>/seq_len_<L>_pred_len_<H>_bs_<B>_<rho_R|no_sam>`` (the
    seed project's naming; every seed trains in its ``seed_<S>`` subfolder)."""
    if args.no_sam or args.rho == 0:
        arm = "no_sam"
    else:
        rho = args.rho if args.rho is not None else (DEFAULT_SAM_RHO if args.model == "samformer"
                                                     else 0.0)  # fmt: skip
        arm = f"rho_{rho:g}" if rho else "no_sam"
    name = f"seq_len_{args.seq_len}_pred_len_{args.horizon}_bs_{args.batch_size}_{arm}"
    return Path("results") / args.model / args.dataset / name


def _config(args: argparse.Namespace, seed: int) -> ForecastConfig:
    options = dict(
        dataset=args.dataset, horizon=args.horizon, seq_len=args.seq_len, model=args.model,
        rho=0.0 if args.no_sam else args.rho, lr=args.lr, batch_size=args.batch_size,
        max_epochs=args.epochs, patience=args.patience, weight_decay=args.weight_decay,
        seed=seed, output_projection=args.output_projection, d_model=args.d_model,
        init=args.init, compile=args.compile, device=args.device_name, data_dir=args.data_dir,
        threads=args.threads, progress=not args.quiet,
    )  # fmt: skip
    if args.smoke:
        del options["max_epochs"]  # the smoke profile's, whatever --epochs says
        return ForecastConfig.smoke(**options)
    return ForecastConfig(**options)


def _sharpness(result: ForecastResult, run_dir: Path, args) -> ForecastResult:
    windows, iters = (128, 10) if args.smoke else (args.sharpness_windows, 30)
    return result.with_items(lambda_max=run_top_eigenvalue(run_dir, windows=windows, iters=iters))


def _configs(args: argparse.Namespace, seeds: list[int]) -> dict[int, ForecastConfig]:
    """Every seed's config, built (and so validated) before anything is written."""
    return {seed: _config(args, seed) for seed in seeds}


def run_seeds(
    args: argparse.Namespace,
    seeds: list[int],
    out: Path,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train ``seeds`` into ``out/seed_<S>/`` and write the aggregate of every finished seed in
    ``out`` (``metrics.json``, ``results.csv``, under ``out/.aggregate.lock``). ``callback``:
    called with the seed and each epoch's history row."""
    configs = _configs(args, seeds)
    for seed, config in configs.items():
        run_dir = out / f"seed_{seed}"
        hook = None if callback is None else functools.partial(callback, seed)
        result = train_forecaster(config, run_dir, callback=hook)
        if args.sharpness:
            _sharpness(result, run_dir, args)
    with short_lock(out / AGGREGATE_LOCK):
        return write_aggregate(out, finished_seeds(out, functools.partial(_config, args)))


def _eval_only(args: argparse.Namespace) -> int:
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
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise ValueError(
            f"{args.checkpoint}: the weights do not fit the model of its own config "
            f"({config.model}, {data.n_channels} channels): {detail}"
        ) from None
    model.to(args.device_name)
    # the evaluation of the run that wrote it: a --smoke run's window limit included
    options = {"batch_size": config.eval_batch_size, "max_windows": config.max_eval_windows,
               "device": args.device_name}  # fmt: skip
    test = evaluate_forecaster(model, data.test, **options)
    val = evaluate_forecaster(model, data.val, **options)
    result = {"checkpoint": str(args.checkpoint), "dataset": config.dataset,
              "horizon": config.horizon, "model": config.model, "test_mse": test["mse"],
              "test_mae": test["mae"], "val_mse": val["mse"], "val_mae": val["mae"],
              "max_eval_windows": config.max_eval_windows,
              "data_sha256": data.data_sha256}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.output:
        atomic_write(Path(args.output) / "eval.json", json.dumps(result, indent=2) + "\n")
    return 0


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag values that are wrong whatever the data: exit status 2 with argparse's message."""
    for flag, value in (("--threads", args.threads), ("--seeds", args.seeds),
                        ("--epochs", args.epochs), ("--sharpness-windows",
                                                    args.sharpness_windows)):  # fmt: skip
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.eval_only and not args.checkpoint:
        parser.error("--eval-only needs --checkpoint FILE (a best.pt or last.pt)")
    if not args.eval_only and args.dataset is None and args.output is None:
        parser.error(
            "nothing to train: give --dataset NAME (e.g. ETTh1); --output DIR is optional "
            "(default results/<model>/<dataset>/seq_len_<L>_pred_len_<H>_bs_<B>_<rho>)"
        )


class _Progress:
    """Where training is, for the line printed on Ctrl-C / SIGTERM: the seed and epoch from the
    epoch callbacks, or, before the first one, from the running seed's ``last.pt``."""

    def __init__(self) -> None:
        self.out: Path | None = None
        self.seeds: list[int] = []
        self.seed: int | None = None
        self.epoch: int | None = None  # finished epochs of self.seed

    def __call__(self, seed: int, row: dict[str, float]) -> None:
        self.seed, self.epoch = seed, int(row["epoch"])

    def _from_files(self) -> None:
        if self.out is None:
            return
        for seed in self.seeds:  # the first seed without a result is the one running
            run = self.out / f"seed_{seed}"
            if not (run / "result.json").is_file():
                self.seed, self.epoch = seed, 0
                with contextlib.suppress(Exception):  # absent or unreadable: epoch 1
                    saved = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
                    self.epoch = int(saved["epoch"])
                return

    def line(self, status: int) -> str:
        what = "interrupted" if status == EXIT_INTERRUPTED else "terminated (SIGTERM)"
        if self.epoch is None:
            self._from_files()
        if self.epoch is None:
            return f"{what}; rerun the same command to resume"
        return (
            f"{what} at epoch {self.epoch + 1} (seed {self.seed}); rerun the same command to resume"
        )


def _train(args: argparse.Namespace, progress: _Progress) -> int:
    args.dataset = args.dataset or "ETTh1"
    if args.output is None:
        args.output = str(default_output(args))
        print(f"output: {args.output} (no --output given)")
    seeds = list(range(args.seeds)) if args.seeds else [args.seed or 0]
    _configs(args, seeds)  # validate before downloading or writing anything
    if args.smoke and args.epochs_given is not None:
        print(f"note: --smoke runs {ForecastConfig.smoke().max_epochs} epochs; --epochs "
              f"{args.epochs} is ignored")  # fmt: skip
    if args.download:
        try:
            find_dataset_file(args.dataset, args.data_dir)
        except FileNotFoundError:
            folder = download_dir(args.data_dir)
            download(args.dataset, folder)
            args.data_dir = str(folder)
    progress.out, progress.seeds = Path(args.output), seeds
    metrics = run_seeds(args, seeds, Path(args.output), callback=progress)
    print(summary_line(metrics))
    if math.isfinite(metrics.get("lambda_max", math.nan)):
        print(f"top Hessian eigenvalue (mean over seeds): {metrics['lambda_max']:.4g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 for malformed flags; 1 for bad data, files or any failure (one
    ``error:`` line, ``SAMLAB_DEBUG=1`` for the traceback); 130 on Ctrl-C and 143 on SIGTERM,
    each with "interrupted at epoch N; rerun the same command to resume" (the epoch in
    progress is lost, the checkpoints of finished epochs are whole)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit_epochs = args.epochs
    args = apply_presets(args)
    args.epochs_given = explicit_epochs
    _check_usage(parser, args)
    progress = _Progress()

    def body() -> int:
        args.device_name = str(resolve_device(args.device, args.cuda))
        if args.eval_only:
            return _eval_only(args)
        return _train(args, progress)

    return run_command(body, progress.line)


if __name__ == "__main__":
    raise SystemExit(main())
