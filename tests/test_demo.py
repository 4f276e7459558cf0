"""``python -m samlab.demo --smoke``: six optimizers, a summary table, a readable figure."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest

from samlab.demo import SUMMARY_COLUMNS, main

OPTIMIZERS = ["sgd", "sam", "asam", "gsam", "looksam", "onestep-sam"]
NO_GAP = {"sgd", "onestep-sam"}  # one pass at one point: no loss(w + e) - loss(w) to record


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, float]:
    # about 5 s of training plus imports; no time limit is asserted (DESIGN.md §7: timings
    # belong in benchmarks/, and the CI cores are shared)
    output = tmp_path_factory.mktemp("demo") / "results"  # created by the demo
    start = time.perf_counter()
    assert main(["--output", str(output), "--smoke", "--no-progress"]) == 0
    return output, time.perf_counter() - start


def test_summary_has_six_finite_rows(smoke_run) -> None:
    output, _ = smoke_run
    with (output / "summary.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        rows = list(reader)
    assert [r["optimizer"] for r in rows] == OPTIMIZERS
    for row in rows:
        for column in SUMMARY_COLUMNS[1:]:
            if column == "mean_sharpness_gap" and row["optimizer"] in NO_GAP:
                assert row[column] == ""
                continue
            value = float(row[column])
            assert math.isfinite(value), (row["optimizer"], column)
        assert 0.0 <= float(row["final_test_acc"]) <= float(row["best_test_acc"]) <= 1.0
    by_name = {r["optimizer"]: r for r in rows}
    assert float(by_name["sgd"]["seconds_vs_sgd"]) == pytest.approx(1.0)
    assert float(by_name["sgd"]["passes_per_step"]) == 1.0
    assert float(by_name["sam"]["passes_per_step"]) == 2.0
    assert 1.0 < float(by_name["looksam"]["passes_per_step"]) < 2.0


def test_learning_curves_png_is_not_blank(smoke_run) -> None:
    import matplotlib.image

    path = smoke_run[0] / "learning_curves.png"
    assert path.is_file()
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert pixels[..., :3].var() > 1e-3


def test_demo_config_and_runs(smoke_run) -> None:
    output, _ = smoke_run
    settings = json.loads((output / "demo_config.json").read_text())
    assert settings["smoke"] is True and list(settings["configs"]) == OPTIMIZERS
    shared = {"lr", "momentum", "weight_decay", "epochs", "batch_size", "seed", "lr_schedule"}
    for key in shared:  # the comparison is fair: only the optimizer settings differ
        assert len({json.dumps(c[key]) for c in settings["configs"].values()}) == 1, key
    for name in OPTIMIZERS:
        run = output / settings["runs"] / name
        assert (run / "checkpoint.pt").is_file() and (run / "metrics.csv").is_file()


def test_second_run_loads_finished_runs(smoke_run, capsys) -> None:
    output, _ = smoke_run
    before = (output / "summary.csv").read_text()
    assert main(["--output", str(output), "--smoke", "--no-progress"]) == 0
    assert (output / "summary.csv").read_text() == before  # nothing retrained
    assert "sgd" in capsys.readouterr().out
