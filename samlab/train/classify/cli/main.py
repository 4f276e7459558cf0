"""``python -m samlab.train.classify`` / ``samlab-classify``: train, resume, evaluate.

    python -m samlab.train.classify --dataset digits --model digits_cnn --opt sam-sgd \
        --epochs 5 --output runs/x [--resume [--extend]] [--seeds N] [--sharpness]
    python -m samlab.train.classify --preset ssam-resnet18-cifar10 --data-dir DATA --output OUT
    python -m samlab.train.classify --eval-only --checkpoint OUT/best.pt
    python -m samlab.train.classify --list-models | --list-presets

One seed writes ``OUT/{config.json, metrics.csv, metrics.json, last.pt, best.pt}``; ``--seeds
N`` runs seeds S..S+N-1 into ``OUT/seed_<S>/`` and writes ``OUT/metrics.json`` with the mean
and standard deviation (ddof=1; 0 for one seed) over seeds. A folder that holds a run is only
continued with ``--resume`` (``--extend`` for more epochs); the aggregate covers every finished
seed in ``OUT`` (written under ``OUT/.aggregate.lock``).

Exit status: 0; 2 for usage errors (malformed or contradictory flags, an invalid config,
``--threads 0``: checked before any folder is created); 1 for bad data or files (a missing
data folder, a damaged checkpoint or ``metrics.json``, a run on other data, a folder in use by
another run) with one ``error:`` line (``SAMLAB_DEBUG=1`` for the traceback); 130 on Ctrl-C
and 143 on SIGTERM, after "interrupted at epoch N; rerun the same command to resume" (the
epoch in progress is lost; ``last.pt`` holds the finished ones, whole).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from landscape.cli.exits import EXIT_INTERRUPTED, EXIT_USAGE, run_command
from samlab.train.classify.checkpointing import (
    CHECKPOINT_NAME,
    METRICS_JSON_NAME,
    RUNTIME_FIELDS,
    find_checkpoint,
    read_json,
    write_json,
)
from samlab.train.classify.cli.flags import Given, UsageError, build_parser, parse
from samlab.train.classify.cli.presets import preset_table
from samlab.train.classify.cli.translate import Run, build_run
from samlab.train.classify.config import ClassifyConfig, TrainResult
from samlab.train.classify.distributed import world_from_env

__all__ = ["AGGREGATE_LOCK", "aggregate", "finished_seeds", "load_data", "main"]

#: the lock file held while an output folder's aggregate is written
AGGREGATE_LOCK = ".aggregate.lock"

#: figures averaged over seeds in OUT/metrics.json
AVERAGED = ("test_acc", "test_loss", "best_test_acc", "train_loss", "train_acc",
            "lambda_max", "hessian_trace")  # fmt: skip


def load_data(config: ClassifyConfig, data_dir: str | None = None, download: bool = False):
    """(train, test) data of ``config.dataset``: tensors for the digits, Datasets otherwise."""
    if config.dataset == "digits":
        from samlab.datasets import load_digits

        data = load_digits(seed=config.seed)
        return (data.x_train, data.y_train), (data.x_test, data.y_test)
    from samlab.datasets.images import load_image_dataset

    where = dict(root=data_dir, download=download)
    train = load_image_dataset(config.dataset, "train", augment=config.augment, **where)
    test = load_image_dataset(config.dataset, "test", **where)
    return train, test


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """``OUT/metrics.json`` of several seeds: mean and ``_std`` of each figure, per seed."""
    out: dict[str, Any] = {"seeds": [m["seed"] for m in per_seed]}
    for name in AVERAGED:
        values = [m[name] for m in per_seed if m.get(name) is not None]
        if len(values) == len(per_seed):
            out[name] = statistics.fmean(values)
            out[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seconds"] = sum(m["seconds"] for m in per_seed)
    out["config"] = {k: v for k, v in per_seed[0]["config"].items() if k != "seed"}
    out["per_seed"] = [{k: v for k, v in m.items() if k not in ("history", "config")}
                       for m in per_seed]  # fmt: skip
    return out


def _same_run(saved: dict[str, Any], config: ClassifyConfig) -> bool:
    ignored = {"seed", *RUNTIME_FIELDS}
    mine = {k: v for k, v in config.to_dict().items() if k not in ignored}
    defaults = ClassifyConfig().to_dict()
    theirs = {k: v for k, v in {**defaults, **saved}.items() if k not in ignored}
    return mine == theirs


def finished_seeds(out: Path, config: ClassifyConfig) -> list[dict[str, Any]]:
    """The ``metrics.json`` of every finished seed in ``out`` (``seed_*/``) run with
    ``config`` but for the seed, by seed (``seed`` added). A damaged file is a ValueError
    naming it. Each seed folder is tied to its own data (``data_sha256`` in its ``last.pt``):
    seeds may differ in data, e.g. the digits' train/test split is drawn from the seed."""
    results: dict[int, dict[str, Any]] = {}
    for path in sorted(out.glob(f"seed_*/{METRICS_JSON_NAME}")):
        metrics = read_json(path)
        saved = metrics.get("config")
        if not isinstance(saved, dict) or not isinstance(saved.get("seed"), int):
            raise ValueError(f"{path} holds no run config with a seed; delete it to rerun the seed")
        if not _same_run(saved, config) or metrics.get("epochs") != config.epochs:
            continue  # another experiment's seed, or one not finished
        results[saved["seed"]] = {**metrics, "seed": saved["seed"]}
    return [results[seed] for seed in sorted(results)]


def _train_one(run: Run, seed: int, out: Path | None, progress: _Progress) -> dict[str, Any]:
    from samlab.train.classify.run import train_classifier

    config = dataclasses.replace(run.config, seed=seed)
    if out is not None:
        found = find_checkpoint(out)
        if found is not None and not run.resume:
            raise UsageError(
                f"{out} holds a run ({found.name}); pass --resume to continue it, or choose "
                "another --output"
            )
        if found is None and run.resume:
            print(f"note: nothing to resume in {out}: starting the run", file=sys.stderr)
    train, test = load_data(config, run.data_dir, run.download)
    progress.start(seed, out)
    result = train_classifier(
        config, train, test, progress=not run.quiet, output_dir=out, extend=run.extend,
        callback=progress,
    )  # fmt: skip
    metrics = _metrics(result, seed)
    if run.sharpness and world_from_env().main:  # rank 0 alone under torchrun
        metrics.update(_sharpness(result, train, run))
        if out is not None:
            write_json(out / METRICS_JSON_NAME, metrics)
    return metrics


def _metrics(result: TrainResult, seed: int) -> dict[str, Any]:
    from samlab.train.classify.checkpointing import summary

    return {"seed": seed, **summary(result)}


def _sharpness(result: TrainResult, train: Any, run: Run) -> dict[str, Any]:
    from samlab.models import create_model
    from samlab.train.classify.sharpness import final_sharpness

    config = result.config
    model = create_model(config.model, **dict(config.model_kwargs))
    model.load_state_dict(result.model_state)
    return final_sharpness(model, train, samples=run.sharpness_samples)


def _summary(metrics: dict[str, Any], config: ClassifyConfig) -> str:
    seeds = metrics.get("seeds", [metrics.get("seed")])
    spread = f" ± {metrics['test_acc_std']:.4f}" if "test_acc_std" in metrics else ""
    text = (
        f"{config.model} on {config.dataset} with {config.optimizer}, seeds {seeds}: test "
        f"accuracy {metrics['test_acc']:.4f}{spread} (best {metrics['best_test_acc']:.4f}), "
        f"test loss {metrics['test_loss']:.4f}"
    )
    if metrics.get("lambda_max") is not None:
        text += f"; lambda_max {metrics['lambda_max']:.4g}, trace {metrics['hessian_trace']:.4g}"
    return text


def _eval_only(given: Given) -> int:
    from samlab.models import create_model
    from samlab.train.checkpoint import load_checkpoint
    from samlab.train.classify.batches import Batches
    from samlab.train.classify.loop import evaluate
    from samlab.train.classify.run import resolve_device

    path = given.values["checkpoint"]
    checkpoint = load_checkpoint(path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict) or "optimizer" not in saved:
        raise UsageError(f"{path} holds no classification config (not written by this trainer)")
    config = ClassifyConfig.from_dict(saved)
    if "device" in given.values:
        import dataclasses

        config = dataclasses.replace(config, device=given.values["device"])
    _, test = load_data(config, given.values.get("data_dir"), bool(given.values.get("download")))
    device = resolve_device(config.device)
    model = create_model(config.model, **dict(config.model_kwargs))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise ValueError(
            f"{path}: the weights do not fit the model of its own config ({config.model}): {detail}"
        ) from None
    model.to(device)
    loss, acc = evaluate(model, Batches(test, config.eval_batch_size, train=False, device=device))
    result = {"checkpoint": str(path), "epoch": checkpoint.get("epoch"), "model": config.model,
              "dataset": config.dataset, "test_loss": loss, "test_acc": acc}  # fmt: skip
    print(json.dumps(result, indent=2))
    if given.values.get("output"):
        write_json(Path(given.values["output"]) / "eval.json", result)
    return 0


class _Progress:
    """Where training is, for the line printed on Ctrl-C / SIGTERM: the seed and the epoch from
    the epoch callbacks, or, before the first one, from the running seed's ``last.pt``."""

    def __init__(self, run: Run | None) -> None:
        self.resume = run is not None and run.resume
        self.several = run is not None and len(run.seeds) > 1
        self.out: Path | None = None
        self.seed: int | None = None
        self.epoch: int | None = None  # finished epochs of self.seed

    def start(self, seed: int, out: Path | None) -> None:
        self.seed, self.out, self.epoch = seed, out, None

    def __call__(self, metrics: Any) -> None:
        self.epoch = int(metrics.epoch)

    def line(self, status: int) -> str:
        what = "interrupted" if status == EXIT_INTERRUPTED else "terminated (SIGTERM)"
        if self.epoch is None and self.out is not None:
            self.epoch = 0
            with contextlib.suppress(Exception):  # absent or unreadable: epoch 1
                last = self.out / CHECKPOINT_NAME
                saved = torch.load(last, map_location="cpu", weights_only=True)
                self.epoch = int(saved["epoch"])
        where = "" if self.epoch is None else f" at epoch {self.epoch + 1}"
        if self.several and self.seed is not None:
            where += f" (seed {self.seed})"
        if self.out is None:
            return f"{what}{where}; nothing was saved (no --output): rerun to start again"
        again = "the same command" if self.resume else "the same command with --resume"
        return f"{what}{where}; rerun {again} to resume"


def _train(run: Run, progress: _Progress) -> dict[str, Any]:
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    out = Path(run.output) if run.output else None
    if len(run.seeds) == 1:
        return _train_one(run, run.seeds[0], out, progress)
    per_seed = [
        _train_one(run, seed, None if out is None else out / f"seed_{seed}", progress)
        for seed in run.seeds
    ]
    if out is None or not world_from_env().main:
        return aggregate(per_seed)
    from samlab.train.locks import short_lock

    with short_lock(out / AGGREGATE_LOCK):
        done = {m["seed"]: m for m in finished_seeds(out, run.config)}
        done.update({m["seed"]: m for m in per_seed})  # this command's, with any sharpness
        metrics = aggregate([done[seed] for seed in sorted(done)])
        write_json(out / METRICS_JSON_NAME, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 for usage errors; 1 for bad data or files (one ``error:`` line);
    130 on Ctrl-C and 143 on SIGTERM (see the module's documentation)."""
    parser = build_parser()
    try:
        given = parse(argv)  # SystemExit(2) from argparse for unknown flags and bad values
        if given.values.get("eval_only") and not given.values.get("checkpoint"):
            raise UsageError("--eval-only needs --checkpoint FILE (a last.pt or best.pt)")
        run = None if given.values.get("eval_only") or _listing(given) else build_run(given)
    except ValueError as err:  # UsageError, or a config value build_run refused
        return _usage(parser.prog, err)
    progress = _Progress(run)

    def body() -> int:
        if _listing(given):
            return _list(given)
        if run is None:
            return _eval_only(given)
        try:
            metrics = _train(run, progress)
        except UsageError as err:  # e.g. a folder holding a run without --resume
            return _usage(parser.prog, err)
        if world_from_env().main:
            print(_summary(metrics, run.config))
        return 0

    return run_command(body, progress.line)


def _usage(prog: str, err: BaseException) -> int:
    """argparse's one line for a usage error (as ``parser.error``), returning status 2."""
    print(f"{prog}: error: {' '.join(str(err).split())} (see --help)", file=sys.stderr)
    return EXIT_USAGE


def _listing(given: Given) -> bool:
    return bool(given.values.get("list_models") or given.values.get("list_presets"))


def _list(given: Given) -> int:
    if given.values.get("list_models"):
        from samlab.models import list_models

        print("\n".join(list_models()))
        return 0
    print(preset_table())
    return 0
