"""``python -m samlab.demo --smoke``: eleven optimizers, a summary table, a readable figure, and the
SGD vs SAM loss landscapes (HDF5 surfaces on 2 MPI ranks, a figure, a sharpness table)."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from landscape.mpi import find_mpiexec
from samlab.demo import SUMMARY_COLUMNS, main
from samlab.demo.curvature import HESSIAN_COLUMNS
from samlab.demo.sharpness import SHARPNESS_COLUMNS

OPTIMIZERS = ["sgd", "sam", "asam", "gsam", "looksam", "onestep-sam", "ssamf", "ssamd"]
OPTIMIZERS += ["wsam", "friendlysam", "bsam"]
OWN_LR = {"bsam"}  # its own Adam-like optimizer: the paper's step size, not SGD's
SPARSE = {"ssamf", "ssamd"}  # the only rows with a mask density, a radius and refresh seconds
SPARSE_COLUMNS = ("mask_density", "effective_radius", "refresh_seconds")
NO_GAP = {"sgd", "onestep-sam"}  # one pass at one point: no loss(w + e) - loss(w) to record
LANDSCAPE_MODELS = ["sgd", "sam"]
SMOKE_GRID, SMOKE_SLICE = (5, 5), (7,)  # the smoke profile's 2D grid and 1D slice


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, float]:
    # about 5 s of training plus imports, and about 40 s for the landscapes (4 MPI launches of
    # 2 ranks, each importing torch); no time limit is asserted (DESIGN.md §7: timings belong
    # in benchmarks/, and the CI cores are shared)
    output = tmp_path_factory.mktemp("demo") / "results"  # created by the demo
    start = time.perf_counter()
    assert main(["--output", str(output), "--smoke", "--no-progress"]) == 0
    return output, time.perf_counter() - start


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV file the demo wrote, after checking its header is ``columns``."""
    with path.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == columns
        return list(reader)


def _figure_pixels(path: Path, min_height: int, min_width: int) -> np.ndarray:
    """The RGBA pixels of a PNG the demo wrote, after checking it is a large, not blank image."""
    import matplotlib.image

    assert path.is_file()
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > min_height and pixels.shape[1] > min_width
    assert pixels[..., :3].var() > 1e-3
    return pixels


def test_summary_has_a_finite_row_per_optimizer(smoke_run) -> None:
    output, _ = smoke_run
    rows = _csv_rows(output / "summary.csv", SUMMARY_COLUMNS)
    assert [r["optimizer"] for r in rows] == OPTIMIZERS
    for row in rows:
        for column in SUMMARY_COLUMNS[1:]:
            if column == "mean_sharpness_gap" and row["optimizer"] in NO_GAP:
                assert row[column] == ""
                continue
            if column in SPARSE_COLUMNS and row["optimizer"] not in SPARSE:
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
    for name in SPARSE:  # half the entries perturbed: the radius reached is below rho
        assert 0.45 < float(by_name[name]["mask_density"]) <= 0.5
        assert 0.0 < float(by_name[name]["effective_radius"]) < 1.0
        assert float(by_name[name]["refresh_seconds"]) > 0.0  # one refresh per epoch
    for row in rows:  # the smoke profile trains 2 epochs
        per_epoch = float(row["seconds"]) / 2
        assert float(row["seconds_per_epoch"]) == pytest.approx(per_epoch, rel=1e-6)


def test_learning_curves_png_is_not_blank(smoke_run) -> None:
    _figure_pixels(smoke_run[0] / "learning_curves.png", min_height=200, min_width=400)


def test_demo_config_and_runs(smoke_run) -> None:
    output, _ = smoke_run
    settings = json.loads((output / "demo_config.json").read_text())
    assert settings["smoke"] is True and list(settings["configs"]) == OPTIMIZERS
    shared = {"lr", "momentum", "weight_decay", "epochs", "batch_size", "seed", "lr_schedule"}
    for key in shared:  # the comparison is fair: only the optimizer settings differ
        configs = settings["configs"].items()
        values = {json.dumps(c[key]) for n, c in configs if not (key == "lr" and n in OWN_LR)}
        assert len(values) == 1, key
    assert dict(settings["configs"]["bsam"]["optimizer_kwargs"])["num_data"] == 512
    for name in OPTIMIZERS:
        run = output / settings["runs"] / name
        assert (run / "last.pt").is_file() and (run / "metrics.csv").is_file()


def test_landscape_surfaces_are_complete(smoke_run) -> None:
    from landscape.io import load_surface

    folder = smoke_run[0] / "landscape"
    mpi = find_mpiexec()[0] is not None
    for name in LANDSCAPE_MODELS:
        assert (folder / f"{name}_directions.h5").is_file()
        for kind, shape in (("2d", SMOKE_GRID), ("1d", SMOKE_SLICE)):
            surface = load_surface(folder / f"{name}_{kind}.h5")
            assert surface.shape == shape and surface.done.all(), (name, kind)
            assert np.isfinite(surface.metrics["train_loss"]).all()
            provenance = surface.provenance
            assert provenance["directions"]["xnorm"] == "filter"
            assert provenance["directions"]["xignore"] == "biasbn"
            assert provenance["dir_type"] == "weights" and provenance["bn_mode"] == "eval"
            assert provenance["train_size"] == 128
            assert provenance["nproc"] == (2 if mpi else 1)
        # the 1D slice runs along the 2D surface's x direction: same values where x coincides
        surf_1d = load_surface(folder / f"{name}_1d.h5")
        surf_2d = load_surface(folder / f"{name}_2d.h5")
        common = np.isin(surf_1d.x, surf_2d.x)
        assert common.sum() == 3  # -1, 0, 1
        np.testing.assert_allclose(
            surf_1d.metrics["train_loss"][common],
            surf_2d.metrics["train_loss"][2][np.isin(surf_2d.x, surf_1d.x)],
            rtol=1e-6,
        )


def test_landscape_figure_is_not_blank(smoke_run) -> None:
    pixels = _figure_pixels(
        smoke_run[0] / "landscape_sgd_vs_sam.png", min_height=800, min_width=800
    )
    third = pixels.shape[0] // 3  # every row of panels (contour, 3D, 1D) has drawn data
    for band in range(3):
        assert pixels[band * third : (band + 1) * third, :, :3].var() > 1e-3, band


def test_sharpness_rows_are_finite(smoke_run) -> None:
    rows = _csv_rows(smoke_run[0] / "sharpness.csv", SHARPNESS_COLUMNS)
    assert [r["optimizer"] for r in rows] == LANDSCAPE_MODELS
    for row in rows:  # both models get a 1D curvature (two estimates) and the rises at rho
        for column in SHARPNESS_COLUMNS[1:]:
            assert math.isfinite(float(row[column])), (row["optimizer"], column)
        assert float(row["rho"]) == 0.05 and int(row["samples"]) == 128
        assert float(row["loss_center"]) > 0 and 0 <= float(row["acc_center"]) <= 1
        assert float(row["loss_2d_max"]) > float(row["loss_center"])
        assert float(row["fd_step"]) == pytest.approx(1 / 3)  # 7 points on [-1, 1]


def test_hessian_rows_and_spectra(smoke_run) -> None:
    rows = _csv_rows(smoke_run[0] / "hessian.csv", HESSIAN_COLUMNS)
    assert [r["optimizer"] for r in rows] == LANDSCAPE_MODELS
    for row in rows:  # λ_max, Hutch++ trace and worst-case sharpness of both models
        for column in HESSIAN_COLUMNS[1:]:
            assert math.isfinite(float(row[column])), (row["optimizer"], column)
        assert int(row["samples"]) == 128 and float(row["rho"]) == 0.05
        assert float(row["lambda_max"]) > 0 and float(row["trace_se"]) >= 0
        assert float(row["sharp_l2"]) >= 0 and -1 <= float(row["sharp_err"]) <= 1
        assert int(row["hvp_count"]) > 12
    _figure_pixels(smoke_run[0] / "hessian_spectra.png", min_height=300, min_width=800)


def test_second_run_loads_finished_runs(smoke_run, capsys) -> None:
    output, _ = smoke_run
    before = (output / "summary.csv").read_text()
    surfaces = sorted((output / "landscape").glob("*.h5"))
    stamps = [p.stat().st_mtime_ns for p in surfaces]
    assert main(["--output", str(output), "--smoke", "--no-progress"]) == 0
    assert (output / "summary.csv").read_text() == before  # nothing retrained
    assert [p.stat().st_mtime_ns for p in surfaces] == stamps  # no surface recomputed
    out = capsys.readouterr().out
    assert "sgd" in out and out.count("already computed") == 4


def test_no_landscape_flag(smoke_run, capsys) -> None:
    output, _ = smoke_run
    csv_before = (output / "sharpness.csv").stat().st_mtime_ns
    assert main(["--output", str(output), "--smoke", "--no-progress", "--no-landscape"]) == 0
    out = capsys.readouterr().out
    assert "loss landscapes" not in out and "sharpness" not in out
    assert (output / "sharpness.csv").stat().st_mtime_ns == csv_before


def test_forecast_rows_and_figure(smoke_run) -> None:
    import matplotlib.image

    from samlab.demo.forecast import FORECAST_COLUMNS

    output, _ = smoke_run
    rows = _csv_rows(output / "forecast_summary.csv", FORECAST_COLUMNS)
    assert [(r["model"], r["optimizer"]) for r in rows] == [
        ("samformer+sam", "sam"),
        ("samformer (no SAM)", "adam"),
    ]
    for row in rows:
        for column in ("test_mse", "test_mae", "val_mse", "lambda_max", "seconds"):
            assert math.isfinite(float(row[column])), (row["model"], column)
        assert float(row["test_mse"]) > 0
    pixels = matplotlib.image.imread(output / "forecast_etth1.png")
    assert pixels.shape[1] > 800 and pixels[..., :3].var() > 1e-3


def test_no_forecast_flag(smoke_run, capsys) -> None:
    output, _ = smoke_run
    stamp = (output / "forecast_summary.csv").stat().st_mtime_ns
    argv = ["--output", str(output), "--smoke", "--no-progress", "--no-landscape", "--no-forecast"]
    assert main(argv) == 0
    assert "SAMformer" not in capsys.readouterr().out
    assert (output / "forecast_summary.csv").stat().st_mtime_ns == stamp


def test_forecast_runs_are_reused_and_fresh_retrains(smoke_run) -> None:
    from samlab.demo.forecast import run_demo_forecast

    output, _ = smoke_run
    result = output / "runs" / "forecast" / "smoke" / "samformer+sam" / "result.json"
    stamp = result.stat().st_mtime_ns
    run_demo_forecast(output, smoke=True, progress=False)
    assert result.stat().st_mtime_ns == stamp  # finished runs are reused
    run_demo_forecast(output, smoke=True, progress=False, fresh=True)
    assert result.stat().st_mtime_ns != stamp  # --fresh trains again


def test_demo_errors_and_interrupts_end_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    """``python -m samlab.demo``: malformed flags exit 2, a failure prints one ``error:`` line
    (exit 1), Ctrl-C one line (exit 130)."""
    import samlab.demo.cli as demo_cli

    with pytest.raises(SystemExit) as usage:
        demo_cli.main(["--threads", "0", "--output", str(tmp_path)])
    assert usage.value.code == 2
    capsys.readouterr()
    monkeypatch.delenv("SAMLAB_DEBUG", raising=False)
    for raised, status, text in (
        (RuntimeError("boom"), 1, "error: RuntimeError: boom (run with SAMLAB_DEBUG=1"),
        (PermissionError(13, "Permission denied", str(tmp_path)), 1, "error: "),
        (KeyboardInterrupt(), 130, "interrupted; the finished runs are kept: rerun"),
    ):

        def fail(*args, exc=raised, **kwargs):
            raise exc

        monkeypatch.setattr(demo_cli, "run_optimizer_comparison", fail)
        assert demo_cli.main(["--output", str(tmp_path / "o"), "--smoke"]) == status
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(text), err
