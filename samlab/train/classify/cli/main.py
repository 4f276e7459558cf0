"""``python -m samlab.train.classify`` / ``samlab-classify``: train, resume, evaluate.

    python -m samlab.train.classify --dataset digits --model digits_cnn --opt sam-sgd \
        --epochs 5 --output runs/x [--resume [--extend]] [--seeds N] [--sharpness]
    python -m samlab.train.classify --preset ssam-resnet18-cifar10 --data-dir DATA --output OUT
    python -m samlab.train.classify --eval-only --checkpoint OUT/best.pt
    python -m samlab.train.classify --list-models | --list-presets

One seed writes ``OUT/{config.json, metrics.csv, metrics.json, last.pt, best.pt}``; ``--seeds
N`` runs seeds S..S+N-1 into ``OUT/seed_<S>/`` and writes ``OUT/metrics.json`` with the mean
and standard deviation (ddof=1; 0 for one seed) over seeds. A folder that holds a run is only
continued with ``--resume`` (``--extend`` for more epochs). Errors print one line and exit 2.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from samlab.train.classify.checkpointing import METRICS_JSON_NAME, find_checkpoint, write_json
from samlab.train.classify.cli.flags import Given, UsageError, parse
from samlab.train.classify.cli.presets import preset_table
from samlab.train.classify.cli.translate import Run, build_run
from samlab.train.classify.config import ClassifyConfig, TrainResult
from samlab.train.classify.distributed import world_from_env

__all__ = ["aggregate", "load_data", "main"]

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


def _train_one(run: Run, seed: int, out: Path | None) -> dict[str, Any]:
    import dataclasses

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
    result = train_classifier(
        config, train, test, progress=not run.quiet, output_dir=out, extend=run.extend
    )
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

    path = given.values.get("checkpoint")
    if not path:
        raise UsageError("--eval-only needs --checkpoint FILE (a last.pt or best.pt)")
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
    model.load_state_dict(checkpoint["model"])
    model.to(device)
    loss, acc = evaluate(model, Batches(test, config.eval_batch_size, train=False, device=device))
    result = {"checkpoint": str(path), "epoch": checkpoint.get("epoch"), "model": config.model,
              "dataset": config.dataset, "test_loss": loss, "test_acc": acc}  # fmt: skip
    print(json.dumps(result, indent=2))
    if given.values.get("output"):
        out = Path(given.values["output"])
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "eval.json", result)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        given = parse(argv)
        if given.values.get("list_models"):
            from samlab.models import list_models

            print("\n".join(list_models()))
            return 0
        if given.values.get("list_presets"):
            print(preset_table())
            return 0
        if given.values.get("eval_only"):
            return _eval_only(given)
        run = build_run(given)
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
        out = Path(run.output) if run.output else None
        if len(run.seeds) == 1:
            metrics = _train_one(run, run.seeds[0], out)
        else:
            per_seed = [
                _train_one(run, seed, None if out is None else out / f"seed_{seed}")
                for seed in run.seeds
            ]
            metrics = aggregate(per_seed)
            if out is not None and world_from_env().main:
                write_json(out / METRICS_JSON_NAME, metrics)
    except (ValueError, RuntimeError, FloatingPointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if world_from_env().main:
        print(_summary(metrics, run.config))
    return 0
