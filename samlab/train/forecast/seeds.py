"""The seeds of one output folder: their aggregate (``metrics.json``, ``results.csv``).

:func:`finished_seeds` reads every ``seed_*/result.json`` of a folder (all of one configuration
and one data digest), :func:`aggregate` gives the means and standard deviations over them and
:func:`write_aggregate` writes both files atomically; the command line holds
``OUT/.aggregate.lock`` (:data:`AGGREGATE_LOCK`) around the read and the write, so runs of other
seeds into the same folder never lose each other's rows.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from landscape.io import atomic_write
from samlab.train.forecast.config import ForecastConfig
from samlab.train.forecast.loop import read_result

__all__ = [
    "AGGREGATE_LOCK",
    "CSV_FIELDS",
    "aggregate",
    "finished_seeds",
    "summary_line",
    "write_aggregate",
]

CSV_FIELDS = (
    "dataset", "horizon", "model", "optimizer", "rho", "lr", "seed", "test_mse", "test_mae",
    "val_mse", "best_epoch", "epochs_run", "seconds", "seconds_per_epoch", "lambda_max",
)  # fmt: skip

#: the lock file held while an output folder's aggregate is written
AGGREGATE_LOCK = ".aggregate.lock"


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


def finished_seeds(out: Path, config_of: Callable[[int], ForecastConfig]) -> list[dict[str, Any]]:
    """The results of every finished seed in ``out`` (``seed_*/result.json``), by seed;
    ``config_of(seed)`` is the config the folder's runs must have. A seed folder holding another
    configuration, or seeds on different data, are an error (the aggregate would mix runs)."""
    results: list[dict[str, Any]] = []
    for path in sorted(out.glob("seed_*/result.json")):
        result = read_result(path)
        seed = result.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{path} has no integer 'seed'; delete it to run the seed again")
        diff = config_of(seed).differences(result.get("config", {}))
        if diff is not None:
            raise ValueError(
                f"{path.parent} holds a run with another configuration (differs in {diff}); "
                f"the aggregate of {out} would mix them: use another --output"
            )
        results.append(result)
    digests = {r["data_sha256"] for r in results if "data_sha256" in r}
    if len(digests) > 1:
        raise ValueError(
            f"the seeds in {out} were computed on different data (data_sha256 "
            f"{sorted(d[:12] for d in digests)}); use another --output"
        )
    return sorted(results, key=lambda r: r["seed"])


def write_aggregate(out: Path, results: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Write ``metrics.json`` (:func:`aggregate` and the first seed's config) and
    ``results.csv`` (a row per seed) atomically; returns the metrics."""
    metrics = aggregate(results)
    metrics["config"] = results[0]["config"]
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    atomic_write(out / "results.csv", text.getvalue())
    return metrics


def summary_line(metrics: dict[str, Any]) -> str:
    return (
        f"{metrics['model']} ({metrics['optimizer']}, rho {metrics['rho']}) on "
        f"{metrics['dataset']} H={metrics['horizon']}, seeds {metrics['seeds']}: test MSE "
        f"{metrics['test_mse']:.4f} ± {metrics['test_mse_std']:.4f}, MAE "
        f"{metrics['test_mae']:.4f} ± {metrics['test_mae_std']:.4f}"
    )
