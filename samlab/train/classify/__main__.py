"""``python -m samlab.train.classify``: train a classifier on the 8x8 digits from a shell.

    python -m samlab.train.classify --optimizer sam --output runs/digits-sam \
        [--model digits_cnn|digits_mlp] [--epochs 20] [--lr 0.05] [--rho R] [--seed 0] [--smoke]

Builds a :class:`~samlab.train.classify.ClassifyConfig` from the flags and runs
:func:`~samlab.train.classify.train_classifier` on scikit-learn's digits (no download), split by
:func:`~samlab.datasets.load_digits` with the same seed. With ``--output`` the run writes
``config.json``, ``metrics.csv`` and ``checkpoint.pt`` there and resumes or skips when run again.
"""

from __future__ import annotations

import argparse
import sys

from samlab.datasets import load_digits
from samlab.optim import list_optimizers
from samlab.train.classify.config import ClassifyConfig, TrainResult
from samlab.train.classify.run import train_classifier
from samlab.train.closures import BN_POLICIES

__all__ = ["build_parser", "main"]

#: the registry models that take the digits' (1, 8, 8) images
DIGITS_MODELS = ("digits_cnn", "digits_mlp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m samlab.train.classify",
        description="Train a classifier on the 8x8 digits with SGD or any SAM variant of the "
        "samlab.optim registry (the same loop for all: optimizer.step(closure)).",
    )
    p.add_argument("--optimizer", choices=list_optimizers(), default="sgd")
    p.add_argument("--model", choices=DIGITS_MODELS, default="digits_cnn")
    p.add_argument("--output", "-o", default=None, help="folder for config, metrics, checkpoint")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    p.add_argument("--rho", type=float, default=None, help="SAM radius (default: the registry's)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64)
    p.add_argument("--bn-policy", dest="bn_policy", choices=BN_POLICIES, default="clean")
    p.add_argument("--seed", type=int, default=0, help="data split, initialisation, data order")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads during the run")
    p.add_argument("--smoke", action="store_true", help="2 epochs of 8 steps on one CPU thread")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _summary(result: TrainResult) -> str:
    config = result.config
    return (
        f"{config.model} with {config.optimizer}, {len(result.history)} epochs: test accuracy "
        f"{result.final_test_acc:.4f} (best {result.best_test_acc:.4f}), train loss "
        f"{result.final_train_loss:.4f}, {result.passes_per_step:.2f} passes per step"
    )


def _config(args: argparse.Namespace) -> ClassifyConfig:
    options = dict(
        model=args.model, optimizer=args.optimizer, lr=args.lr, rho=args.rho, seed=args.seed,
        batch_size=args.batch_size, bn_policy=args.bn_policy,
    )  # fmt: skip
    # given: they override the smoke profile's (cpu, one thread) too
    given = {"device": args.device, "threads": args.threads}
    options.update({k: v for k, v in given.items() if v is not None})
    if args.smoke:
        return ClassifyConfig.smoke(**options)
    return ClassifyConfig(epochs=args.epochs, **options)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
        data = load_digits(seed=config.seed)
        result = train_classifier(
            config,
            (data.x_train, data.y_train),
            (data.x_test, data.y_test),
            progress=not args.quiet,
            output_dir=args.output,
        )
    except (ValueError, RuntimeError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(_summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
