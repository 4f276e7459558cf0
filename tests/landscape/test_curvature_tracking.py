"""λ_max during training: :class:`landscape.curvature.TopEigenvalueTracker` on an optimizer and
inside both samlab trainers."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from landscape.curvature import TopEigenvalueTracker


def _tiny(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(24, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (24,))
    return model, x, y


def _exact_top(dense_hessian, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(dense_hessian(model, x, y))[-1])


def test_records_every_n_steps_and_matches_the_exact_top_eigenvalue(dense_hessian):
    model, x, y = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = TopEigenvalueTracker((x, y), every=2, tol=1e-8)
    tracker.attach(model, opt)
    for _ in range(6):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    tracker.detach()
    assert [r["step"] for r in tracker.records] == [2, 4, 6]
    last = tracker.records[-1]
    assert last["lambda_max"] == pytest.approx(_exact_top(dense_hessian, model, x, y), rel=1e-6)
    assert last["eos_threshold"] == pytest.approx(2 / 0.5)
    assert model.training  # the training mode is restored after each measurement
    # detached: further steps record nothing
    opt.step()
    assert len(tracker.records) == 3


def test_start_step_continues_the_cadence_and_csv_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model, x, y = _tiny(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    tracker = TopEigenvalueTracker((x, y), every=3, on_record=seen.append)
    tracker.attach(model, opt, start_step=2)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert [r["step"] for r in tracker.records] == [3, 6]
    assert seen == tracker.records
    path = tracker.save_csv(tmp_path / "lambda.csv")
    rows = list(csv.DictReader(path.open()))
    assert [int(r["step"]) for r in rows] == [3, 6]
    ax = tracker.plot()
    assert len(ax.lines) == 2  # λ_max and 2 / lr


def test_bad_settings_are_named():
    model, x, y = _tiny()
    with pytest.raises(ValueError, match="every"):
        TopEigenvalueTracker((x, y), every=0)
    tracker = TopEigenvalueTracker((x, y), every=1)
    with pytest.raises(RuntimeError, match="attach"):
        tracker.measure_now()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker.attach(model, opt)
    with pytest.raises(RuntimeError, match="detach"):
        tracker.attach(model, opt)


def test_classify_trainer_runs_step_hooks():
    from samlab.datasets import digits_eval_data
    from samlab.train.classify import ClassifyConfig, train_classifier

    x, y = digits_eval_data(limit=256)
    config = ClassifyConfig.smoke(model="digits_mlp", optimizer="sam", batch_size=32)
    tracker = TopEigenvalueTracker((x[:64], y[:64]), every=4)
    train_classifier(config, (x, y), (x, y), progress=False, step_hooks=[tracker])
    assert [r["step"] for r in tracker.records] == [4, 8, 12, 16]
    assert all(r["lambda_max"] > 0 for r in tracker.records)
    assert tracker.handle is None  # detached when the run ended


def test_forecast_trainer_runs_step_hooks(tmp_path):
    from samlab.datasets.timeseries import load_forecast_data
    from samlab.train.forecast import ForecastConfig, forecast_batches, train_forecaster

    config = ForecastConfig.smoke(
        max_epochs=1, max_train_batches=4, progress=False, threads=1, seq_len=32, horizon=8
    )
    data = load_forecast_data(config.dataset, config.horizon, seq_len=config.seq_len)
    (x, y), *_ = forecast_batches(data.train, 64)
    tracker = TopEigenvalueTracker((x, y), every=2, loss="mse")
    train_forecaster(config, tmp_path / "run", data=data, step_hooks=[tracker])
    assert [r["step"] for r in tracker.records] == [2, 4]
    assert all(r["lambda_max"] > 0 for r in tracker.records)
