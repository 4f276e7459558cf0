"""Files written by samlab 0.1.0 still load and resume.

``tests/fixtures/v0_1_0/`` was written by version 0.1.0 (before the 0.2.0 restructure): a
classification checkpoint of a digits MLP trained with SAM, stopped after epoch 1 of 2
(``checkpoint.pt`` with its ``config.json`` and ``metrics.csv``), and a 5 x 5 loss surface of
that checkpoint on 128 training digits (``surface.h5``, its direction file ``directions.h5``),
made with::

    python -m landscape surface --model samlab.models:digits_mlp --model_file checkpoint.pt \\
        --data samlab._demo_landscape:digits_eval_data --subset 128 --batch_size 64 \\
        --x=-1:1:5 --y=-1:1:5 --dir_file directions.h5 --surf_file surface.h5 --threads 1
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1_0"
METRICS = ("train_loss", "train_acc", "train_loss_se", "train_acc_se")


@pytest.fixture()
def copy(tmp_path: Path, monkeypatch) -> Path:
    for path in FIXTURES.iterdir():
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _surface(surf_file: str, data: str, capsys) -> str:
    """``python -m landscape surface`` with the fixture's settings, in this process (the
    current folder holds a copy of the fixtures); returns its output."""
    from landscape.cli import main

    code = main([
        "surface", "--model", "samlab.models:digits_mlp", "--model_file", "checkpoint.pt",
        "--data", data, "--subset", "128", "--batch_size", "64", "--x=-1:1:5", "--y=-1:1:5",
        "--dir_file", "directions.h5", "--surf_file", surf_file, "--no_progress",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.out[-2000:] + captured.err[-2000:]
    return captured.out


def test_surface_file_loads():
    import landscape

    surface = landscape.load_surface(FIXTURES / "surface.h5")
    assert surface.shape == (5, 5) and surface.done.all()
    assert set(METRICS) <= set(surface.metrics)
    assert np.all(np.isfinite(surface.metrics["train_loss"]))
    assert surface.train_indices is not None and surface.train_indices.size == 128
    directions = landscape.load_directions(FIXTURES / "directions.h5")
    assert directions.y is not None and set(directions.x) == set(directions.y)


def test_surface_is_computed_again_from_the_old_checkpoint_and_directions(copy: Path, capsys):
    import landscape

    _surface("again.h5", "samlab.datasets:digits_eval_data", capsys)
    old = landscape.load_surface(FIXTURES / "surface.h5")
    new = landscape.load_surface(copy / "again.h5")
    np.testing.assert_array_equal(new.done, old.done)
    np.testing.assert_array_equal(new.train_indices, old.train_indices)
    for name in METRICS:  # bitwise on the machine that wrote them; other CPUs round otherwise
        np.testing.assert_allclose(new.metrics[name], old.metrics[name], rtol=1e-5, atol=1e-7)


def test_partial_old_surface_resumes(copy: Path, capsys):
    import h5py

    import landscape

    with h5py.File(copy / "surface.h5", "r+") as handle:  # as if killed after 10 points
        done = handle["done"][()]
        done.reshape(-1)[10:] = False
        handle["done"][...] = done
        for name in METRICS:
            values = handle[name][()]
            values.reshape(-1)[10:] = np.nan
            handle[name][...] = values
    sys.modules.pop("samlab._demo_landscape", None)  # the name 0.1.0's file records
    with pytest.warns(FutureWarning, match="samlab._demo_landscape is deprecated"):
        output = _surface("surface.h5", "samlab._demo_landscape:digits_eval_data", capsys)
    assert "computed 15" in output, output
    old = landscape.load_surface(FIXTURES / "surface.h5")
    resumed = landscape.load_surface(copy / "surface.h5")
    assert resumed.done.all()
    for name in METRICS:
        np.testing.assert_array_equal(
            resumed.metrics[name].reshape(-1)[:10], old.metrics[name].reshape(-1)[:10]
        )
        np.testing.assert_allclose(resumed.metrics[name], old.metrics[name], rtol=1e-5, atol=1e-7)


def test_checkpoint_loads_into_model_and_optimizer():
    from samlab.models import create_model
    from samlab.optim import create_optimizer
    from samlab.train import load_checkpoint

    checkpoint = load_checkpoint(FIXTURES / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    model = create_model("digits_mlp")
    model.load_state_dict(checkpoint["model"])
    optimizer = create_optimizer("sam", model.parameters(), lr=0.05, momentum=0.9, rho=0.05)
    optimizer.load_state_dict(checkpoint["optimizer"])
    momenta = [optimizer.base_optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(
        m.shape == p.shape and m.abs().sum() > 0 for m, p in zip(momenta, model.parameters())
    )
    loaded = torch.load(FIXTURES / "checkpoint.pt", weights_only=True)  # plain torch reads it too
    assert set(loaded) >= {"model", "optimizer", "epoch", "config"}


def test_interrupted_run_resumes_from_the_old_checkpoint(copy: Path):
    from samlab.datasets import load_digits
    from samlab.train import ClassifyConfig, train_classifier

    config = ClassifyConfig.smoke(model="digits_mlp", optimizer="sam", rho=0.05, lr=0.05)
    digits = load_digits(seed=0)
    train, test = (digits.x_train, digits.y_train), (digits.x_test, digits.y_test)
    run = copy / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "config.json", "metrics.csv"):
        shutil.move(copy / name, run / name)
    resumed = train_classifier(config, train, test, output_dir=run, progress=False)
    assert [m.epoch for m in resumed.history] == [1, 2]
    fresh = train_classifier(config, train, test, progress=False)
    assert resumed.history[0].train_loss == pytest.approx(fresh.history[0].train_loss, rel=1e-5)
    assert resumed.history[1].train_loss == pytest.approx(fresh.history[1].train_loss, rel=1e-5)
    assert resumed.history[1].test_acc == pytest.approx(fresh.history[1].test_acc, abs=1e-3)


def test_old_data_factory_module_warns_and_is_the_new_function():
    import importlib

    from samlab.datasets import digits_eval_data

    sys.modules.pop("samlab._demo_landscape", None)
    with pytest.warns(FutureWarning, match="samlab.datasets:digits_eval_data"):
        old = importlib.import_module("samlab._demo_landscape")
    assert old.digits_eval_data is digits_eval_data and old.__all__ == ["digits_eval_data"]
