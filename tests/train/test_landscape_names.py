"""samlab's named inputs of the landscape command line (entry points in pyproject.toml).

The factories are called as the landscape CLI calls them; the entry points themselves are read
from a ``*.dist-info`` written from ``pyproject.toml`` into a temporary folder put first on
``sys.path`` / ``PYTHONPATH`` (the installed metadata may predate the current pyproject), so the
real ``importlib.metadata`` lookup is exercised. The seed-003 command runs end to end on a
forecasting checkpoint, on one process and on two MPI ranks.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape.cli import main as landscape_main
from landscape.cli.named import DATA_GROUP, MODEL_GROUP, NamedFactories
from landscape.mpi import find_mpiexec, launch_environment, launch_prefix, run_command
from samlab.datasets.timeseries import find_dataset_file
from samlab.train.forecast import ForecastConfig, train_forecaster
from samlab.train.forecast.inputs import forecast_windows, samformer_model
from samlab.train.landscape_names import digits_data, resnet20

REPO = Path(__file__).resolve().parents[2]

try:
    find_dataset_file("ETTh1")
    ETTH1 = ""
except FileNotFoundError as err:
    ETTH1 = f"ETTh1 not found ({err})"


def pyproject_entry_points() -> dict[str, dict[str, str]]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["entry-points"]


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory) -> Path:
    """A folder holding samlab-toolkit's dist-info with pyproject.toml's entry points."""
    root = tmp_path_factory.mktemp("metadata")
    info = root / "samlab_toolkit-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: samlab-toolkit\nVersion: 0.0.0\n")
    lines = []
    for group, entries in pyproject_entry_points().items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return root


@pytest.fixture
def on_path(metadata_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(metadata_dir))
    importlib.invalidate_caches()
    return metadata_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A smoke SAMformer run on ETTh1 (its best.pt is the landscape centre)."""
    if ETTH1:
        pytest.skip(ETTH1)
    out = tmp_path_factory.mktemp("forecast") / "seed_1"
    config = ForecastConfig.smoke(seed=1, progress=False, max_epochs=1, max_train_batches=2)
    train_forecaster(config, out)
    return out


def test_entry_points_are_registered_and_load(on_path) -> None:
    names = NamedFactories()
    models = names.names(MODEL_GROUP)
    expected = {"samformer", "transformer", "tsmixer", "digits_cnn"}
    expected |= {"resnet18", "resnet20", "resnet32", "resnet56", "vgg9"}  # loss-landscape's
    assert expected <= set(models)
    assert {"samformer_datasets", "digits"} <= set(names.names(DATA_GROUP))
    assert names.load(MODEL_GROUP, "samformer", "--model") is samformer_model
    assert names.load(DATA_GROUP, "digits", "--dataset") is digits_data
    resnet56 = names.load(MODEL_GROUP, "resnet56", "--model")()
    assert sum(p.numel() for p in resnet56.parameters()) == 855_770  # option-B shortcuts
    # the metadata lookup really is importlib.metadata's
    found = {ep.name for ep in importlib.metadata.entry_points(group=MODEL_GROUP)}
    assert set(models) == found


def test_installed_metadata_matches_pyproject() -> None:
    """After `make test` reinstalls (the stamp depends on pyproject.toml) the installed entry
    points are pyproject's; a stale editable install is reported, not failed."""
    try:
        dist = importlib.metadata.distribution("samlab-toolkit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("samlab-toolkit is not installed (run `make venv`)")
    installed = {(ep.group, ep.name, ep.value) for ep in dist.entry_points}
    wanted = {(g, k, v) for g, e in pyproject_entry_points().items() for k, v in e.items()}
    if not wanted <= installed:
        pytest.skip("the installed metadata predates pyproject.toml: run `make venv`")
    assert wanted <= installed


def test_model_factory_rebuilds_from_config_and_demands_shape_without(run_dir) -> None:
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    model = samformer_model(config=ckpt["config"])
    model.load_state_dict(ckpt["model"])  # strict: the shapes came from the config alone
    with pytest.raises(ValueError, match=r"--model_kwargs .*n_channels"):
        samformer_model(config=None)
    plain = samformer_model(config=None, n_channels=7, seq_len=512, horizon=96)
    plain.load_state_dict(ckpt["model"])
    with pytest.raises(ValueError, match="use --model transformer"):
        samformer_model(config={**ckpt["config"], "model": "transformer"})
    with pytest.raises(ValueError, match="not one written by samlab.train.forecast"):
        samformer_model(config={"model": "digits_cnn", "optimizer": "sgd"})
    with pytest.raises(ValueError, match="written by samlab.train.forecast.*--model samformer"):
        resnet20(config=ckpt["config"])


def test_data_factory_gives_the_runs_standardised_windows(run_dir) -> None:
    from samlab.datasets.timeseries import load_forecast_data

    config = torch.load(run_dir / "best.pt", weights_only=True)["config"]
    data = load_forecast_data("ETTh1", 96, seq_len=512)
    for split in ("train", "test"):
        x, y = forecast_windows(config=config, split=split, limit=40)
        want_x, want_y = getattr(data, split).windows(torch.arange(40))
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
    x, _ = forecast_windows(config=config)
    assert x.shape == (len(data.train), 512, 7)
    assert abs(float(data.train.series.mean())) < 1e-3  # the standardised scale
    with pytest.raises(ValueError, match="trained on ETTh1"):
        forecast_windows(name="ETTh2", config=config)
    with pytest.raises(ValueError, match="--dataset_name"):
        forecast_windows()


def test_digits_data_splits() -> None:
    from samlab.datasets import load_digits

    data = load_digits()
    x, y = digits_data(split="test")
    assert torch.equal(x, data.x_test) and torch.equal(y, data.y_test)
    assert digits_data(limit=5)[0].shape == (5, 1, 8, 8)


def surface_args(run_dir: Path, surf: Path, *extra: str) -> list[str]:
    """Seed 003's landscape command (script name changed), on a 5x5 grid and 64 windows."""
    return [
        "surface", "--mpi", "--cuda", "--x=-1:1:5", "--y=-1:1:5", "--vmax=0.5", "--vlevel=0.01",
        "--model_file", str(run_dir / "best.pt"), "--dir_type", "weights", "--xnorm", "filter",
        "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn", "--plot",
        "--dataset", "samformer_datasets", "--model", "samformer", "--loss_name", "mse",
        "--dataset_name", "ETTh1", "--subset", "64", "--surf_file", str(surf), "--no_progress",
        *extra,
    ]  # fmt: skip


def test_unknown_name_and_foreign_checkpoint_are_clear_errors(on_path, run_dir, tmp_path, capsys):
    args = surface_args(run_dir, tmp_path / "s.h5")
    args = [a for a in args if a not in ("--mpi", "--plot")]
    assert landscape_main(_swap(args, "--model", "nosuch")) == 1
    err = capsys.readouterr().err
    assert "--model nosuch: no such registered name" in err and "samformer" in err
    assert "resnet20" in err
    assert landscape_main(_swap(args, "--dataset", "nodata")) == 1
    assert "samformer_datasets" in capsys.readouterr().err
    # a checkpoint of another kind: a digits model's plain weights are not a forecaster's
    other = tmp_path / "digits.pt"
    torch.save({"model": resnet20().state_dict(), "config": {"model": "resnet20_cifar"}}, other)
    assert landscape_main(_swap(args, "--model_file", str(other))) == 1
    assert "not one written by samlab.train.forecast" in capsys.readouterr().err
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(run_dir / "best.pt", weights_only=True)["model"], plain)
    assert landscape_main(_swap(args, "--model_file", str(plain))) == 1
    err = capsys.readouterr().err
    assert "--model_kwargs" in err and "n_channels" in err


def _swap(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


@pytest.mark.mpi
@pytest.mark.slow
def test_seed_003_command_one_process_and_two_ranks(metadata_dir, run_dir, tmp_path) -> None:
    """The README command of dnsch/sam_experiments with `python -m landscape` as the script
    draws the surface from the checkpoint alone; 2 MPI ranks give the identical surface."""
    mpiexec, why = find_mpiexec()
    if mpiexec is None:
        pytest.skip(why)
    surfaces = []
    for ranks in (1, 2):
        surf = tmp_path / f"surface_{ranks}.h5"
        prefix, processes, _ = launch_prefix(ranks)
        env = launch_environment(processes)
        env["PYTHONPATH"] = os.pathsep.join([str(metadata_dir), str(REPO)])
        env["OMP_NUM_THREADS"] = "1"
        args = surface_args(run_dir, surf)
        if ranks == 1:
            prefix = [sys.executable, "-m", "landscape"]
        out = run_command([*prefix, *args], env, f"seed 003 command on {ranks} rank(s)")
        if not torch.cuda.is_available():
            assert "note: --cuda: no CUDA device, running on CPU" in out
        assert (tmp_path / f"surface_{ranks}.h5_train_loss_2dcontour.png").is_file()
        with h5py.File(surf) as f:
            surfaces.append((f["train_loss"][()], f["train_mae"][()]))
    (loss1, mae1), (loss2, mae2) = surfaces
    assert loss1.shape == (5, 5) and np.isfinite(loss1).all()
    assert np.array_equal(loss1, loss2) and np.array_equal(mae1, mae2)
    assert loss1.min() < loss1[0, 0]  # a bowl: the corner is higher than the lowest point
