"""The forecasting trainer: protocol pieces, learning, resume, CLI, sharpness."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from samlab.train import forecast
from samlab.train.forecast import ForecastConfig, cosine_restart_lr, train_forecaster
from samlab.train.forecast import __main__ as cli
from samlab.train.forecast.steps import EagerFallback, TrainStep, train_epoch
from samlab.train.sharpness import hessian_top_eigenvalue

ROWS, CHANNELS = 400, 8


def _write_series(path, rows=ROWS, channels=CHANNELS, seed=0):
    """A learnable multichannel series in Autoformer CSV format (date + channels, last OT)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    cols = [
        np.sin(2 * np.pi * t / (12 + 5 * c)) + 0.1 * rng.standard_normal(rows)
        for c in range(channels)
    ]
    names = [str(c) for c in range(channels - 1)] + ["OT"]
    lines = ["date," + ",".join(names)]
    for i in range(rows):
        day = str(np.datetime64("2000-01-01T00:00") + np.timedelta64(i, "h")).replace("T", " ")
        lines.append(day + "," + ",".join(f"{col[i]:.6f}" for col in cols))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    _write_series(folder / "exchange_rate.csv")
    return folder


def _config(data_dir, **kw):
    base = dict(
        dataset="exchange_rate", horizon=8, seq_len=32, batch_size=16, max_epochs=3,
        patience=5, data_dir=str(data_dir), progress=False, model="samformer", threads=1,
    )  # fmt: skip
    base.update(kw)
    return ForecastConfig(**base)


def test_cosine_restart_schedule_matches_the_official_cycle():
    base = 1e-3
    assert cosine_restart_lr(0, base) == pytest.approx(base)
    # epoch 4 of a cycle ends at about 0.095 x base (notes/samformer.md §2)
    assert cosine_restart_lr(4, base) / base == pytest.approx(0.0955, abs=1e-3)
    assert cosine_restart_lr(5, base) == pytest.approx(base)
    lrs = [cosine_restart_lr(e, base) for e in range(5)]
    assert lrs == sorted(lrs, reverse=True)


def test_config_defaults_follow_the_paper():
    c = ForecastConfig()
    assert (c.resolved_rho, c.optimizer_name, c.resolved_lr) == (0.7, "sam", 1e-3)
    assert ForecastConfig(model="transformer").optimizer_name == "adam"
    assert ForecastConfig(model="transformer", rho=0.5).optimizer_name == "sam"
    assert ForecastConfig(rho=0.0).optimizer_name == "adam"
    assert ForecastConfig(dataset="weather").resolved_lr == 1e-4
    assert ForecastConfig().init == "keras"  # the TensorFlow reference code's init
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rho = 0.1
    smoke = ForecastConfig.smoke(model="tsmixer")  # what --smoke sets
    assert (smoke.max_epochs, smoke.max_train_batches, smoke.max_eval_windows) == (2, 8, 256)
    assert smoke.model == "tsmixer" and ForecastConfig.from_dict(smoke.to_dict()) == smoke


@pytest.mark.parametrize(
    "kw, match",
    [({"dataset": "nope"}, "nope"), ({"model": "lstm"}, "unknown model"),
     ({"rho": -1.0}, "rho"), ({"horizon": 0}, "horizon"), ({"lr": 0.0}, "lr"),
     ({"init": "xavier"}, "init must be one of")],
)  # fmt: skip
def test_bad_config_is_a_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        ForecastConfig(**kw)


@pytest.mark.parametrize("model, rho", [("samformer", 0.7), ("transformer", 0.0), ("tsmixer", 0.0)])
def test_training_lowers_the_validation_loss(data_dir, tmp_path, model, rho):
    result = train_forecaster(_config(data_dir, model=model, rho=rho), tmp_path / "run")
    history = result["history"]
    assert len(history) == 3 and result["epochs_run"] == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert math.isfinite(result["test_mse"]) and math.isfinite(result["test_mae"])
    assert result["optimizer"] == ("sam" if rho else "adam")
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "result.json").is_file()


@pytest.mark.parametrize("model, rho", [("samformer", 0.7), ("tsmixer", 0.7)])
def test_one_epoch_on_a_tiny_slice_lowers_the_training_loss(data_dir, model, rho):
    from samlab.datasets.timeseries import load_forecast_data
    from samlab.optim import create_optimizer

    config = _config(data_dir, model=model, rho=rho)
    data = load_forecast_data(config.dataset, config.horizon, seq_len=32, data_dir=data_dir)
    torch.manual_seed(0)
    net = forecast.build_forecaster(config, data.n_channels)
    before = forecast.evaluate_forecaster(net, data.train)["mse"]
    optimizer = create_optimizer("sam", list(net.parameters()), base="adam", rho=rho, lr=1e-3)
    step = TrainStep.for_config(net, net, optimizer, config)
    train_epoch(step, data, config, 0, torch.device("cpu"))
    after = forecast.evaluate_forecaster(net, data.train)["mse"]
    assert after < 0.9 * before, (before, after)


def test_sam_runs_two_passes_and_adam_one(data_dir, tmp_path, monkeypatch):
    # through the trainer: optimizer.step(closure) evaluates each step's closure twice for SAM,
    # once for Adam
    from samlab.train.forecast import steps

    calls = []
    real = steps.make_closure

    def counting(*args, **kw):
        closure = real(*args, **kw)
        calls.append(closure)
        return closure

    monkeypatch.setattr(steps, "make_closure", counting)
    for rho, passes in ((0.5, 2), (0.0, 1)):
        calls.clear()
        train_forecaster(
            _config(data_dir, rho=rho, max_epochs=1, max_train_batches=3), tmp_path / f"r{rho}"
        )
        assert [c.calls for c in calls] == [passes] * 3


def test_early_stopping_keeps_the_best_validation_epoch(data_dir, tmp_path):
    result = train_forecaster(
        _config(data_dir, max_epochs=40, patience=2, lr=3e-2), tmp_path / "run"
    )
    vals = [h["val_mse"] for h in result["history"]]
    best = int(np.argmin(vals))
    assert result["best_epoch"] == best + 1
    if result["epochs_run"] < 40:
        assert result["epochs_run"] == best + 1 + 2  # stopped after `patience` worse epochs
    assert result["val_mse"] == pytest.approx(vals[best], rel=1e-6)


def test_killed_run_resumes_bit_exact(data_dir, tmp_path):
    config = _config(data_dir, model="tsmixer", rho=0.3, max_epochs=4)  # dropout + BN + SAM
    whole = train_forecaster(config, tmp_path / "whole")

    def dies_before_epoch_3(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_forecaster(config, tmp_path / "split", callback=dies_before_epoch_3)
    assert not (tmp_path / "split" / "result.json").exists()
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = train_forecaster(config, tmp_path / "split")
    for key in ("test_mse", "test_mae", "val_mse", "best_epoch", "epochs_run"):
        assert resumed[key] == whole[key], key
    assert [h["train_loss"] for h in resumed["history"]] == [
        h["train_loss"] for h in whole["history"]
    ]
    a = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_skipped_and_a_different_run_refused(data_dir, tmp_path):
    config = _config(data_dir, max_epochs=1)
    first = train_forecaster(config, tmp_path / "run")
    stamp = (tmp_path / "run" / "result.json").stat().st_mtime_ns
    again = train_forecaster(config, tmp_path / "run")
    assert again["test_mse"] == first["test_mse"]
    assert (tmp_path / "run" / "result.json").stat().st_mtime_ns == stamp
    # the result is a frozen value and a read-only mapping over the keys of result.json
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert isinstance(first, forecast.ForecastResult) and list(first) == list(saved)
    assert again == first == saved and first == {**saved, "history": tuple(saved["history"])}
    assert first.to_dict() == saved and first.test_mse == first["test_mse"]
    assert json.loads(json.dumps(first.to_dict())) == first
    marked_copy = first.with_items(lambda_max=2.0)
    for copied in (pickle.loads(pickle.dumps(marked_copy)), copy.deepcopy(marked_copy)):
        assert isinstance(copied, forecast.ForecastResult) and copied == marked_copy
        assert copied["lambda_max"] == 2.0 and copied.history == first.history
    with pytest.raises(TypeError):
        first["test_mse"] = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.test_mse = 0.0
    marked = first.with_items(lambda_max=1.5, seed=7)
    assert (marked["lambda_max"], marked.seed, list(marked)[-1]) == (1.5, 7, "lambda_max")
    assert "lambda_max" not in first and first.seed == 0
    with pytest.raises(ValueError, match="different"):
        train_forecaster(_config(data_dir, max_epochs=1, rho=0.2), tmp_path / "run")


def test_nan_loss_is_a_clear_error_and_keeps_finished_epochs(data_dir, tmp_path):
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train_forecaster(_config(data_dir, lr=1e30, rho=0.0, max_epochs=3), tmp_path / "run")


def test_compile_unavailable_falls_back_with_one_warning(data_dir, tmp_path, monkeypatch):
    import kernels.compiled

    monkeypatch.setattr(kernels.compiled, "compiler_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="eager"):
        result = train_forecaster(
            _config(data_dir, compile=True, max_epochs=1, max_train_batches=2), tmp_path / "r"
        )
    assert math.isfinite(result["test_mse"])


def test_cli_writes_metrics_over_seeds_and_eval_only_agrees(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--dataset", "exchange_rate", "--horizon", "8", "--seq-len", "32", "--data-dir",
            str(data_dir), "--output", str(out), "--seeds", "2", "--epochs", "2", "--quiet",
            "--batch-size", "16", "--no_sam"]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["optimizer"] == "adam" and metrics["seeds"] == [0, 1]
    per_seed = metrics["per_seed"]
    assert [p["seed"] for p in per_seed] == [0, 1]
    for key in ("test_mse", "test_mae", "best_epoch", "epochs_run"):
        assert all(key in p for p in per_seed)
    mses = [p["test_mse"] for p in per_seed]
    assert metrics["test_mse"] == pytest.approx(np.mean(mses))
    assert metrics["test_mse_std"] == pytest.approx(np.std(mses, ddof=1))
    assert "test_mae_std" in metrics
    assert (out / "results.csv").read_text().count("\n") == 3
    capsys.readouterr()
    ckpt = out / "seed_1" / "best.pt"
    argv = ["--eval-only", "--checkpoint", str(ckpt), "--data-dir", str(data_dir)]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test_mse"] == pytest.approx(per_seed[1]["test_mse"], rel=1e-9)


def test_cli_no_sam_and_rho_zero_are_the_same_run(data_dir, tmp_path):
    common = ["--dataset", "exchange_rate", "--horizon", "8", "--seq-len", "32", "--data-dir",
              str(data_dir), "--epochs", "1", "--quiet", "--batch-size", "16"]  # fmt: skip
    assert cli.main([*common, "--output", str(tmp_path / "a"), "--no-sam"]) == 0
    assert cli.main([*common, "--output", str(tmp_path / "b"), "--rho", "0"]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["test_mse"] == b["test_mse"] and a["optimizer"] == b["optimizer"] == "adam"


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["--dataset", "ETTm1", "--data-dir", str(tmp_path), "--output",
                     str(tmp_path / "o"), "--quiet"]) == 1  # fmt: skip
    assert "ETTm1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the data is read
    with pytest.raises(SystemExit) as usage:
        cli.main(["--eval-only"])
    assert usage.value.code == 2 and "--checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--no_sam", "--rho", "0.5", "--output", str(tmp_path)])


def test_embedded_etth1_smoke_run(tmp_path):
    out = tmp_path / "etth1"
    assert cli.main(["--smoke", "--quiet", "--output", str(out), "--sharpness"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "ETTh1" and metrics["optimizer"] == "sam"
    assert metrics["rho"] == 0.7 and metrics["lambda_max"] > 0


def test_hessian_through_samformer_is_finite_and_restores_mode():
    from samlab.models import create_model

    model = create_model("samformer", n_channels=3, seq_len=16, horizon=4).double()
    model.train()
    x, y = torch.randn(8, 16, 3, dtype=torch.float64), torch.randn(8, 4, 3, dtype=torch.float64)
    eig = hessian_top_eigenvalue(model, [(x, y)], iters=5)
    assert math.isfinite(eig.eigenvalue) and model.training


def test_run_top_eigenvalue_measures_the_best_checkpoint_once(data_dir, tmp_path):
    from samlab.datasets.timeseries import load_forecast_data
    from samlab.train.checkpoint import load_checkpoint
    from samlab.train.forecast import build_forecaster, forecast_batches
    from samlab.train.sharpness import run_top_eigenvalue

    with pytest.raises(FileNotFoundError, match="not finished"):
        run_top_eigenvalue(tmp_path / "nothing")
    config = _config(data_dir, max_epochs=2)
    run = tmp_path / "run"
    train_forecaster(config, run)
    value = run_top_eigenvalue(run, windows=32, iters=8)
    data = load_forecast_data(config.dataset, config.horizon, seq_len=config.seq_len,
                              data_dir=config.data_dir)  # fmt: skip
    model = build_forecaster(config, data.n_channels)
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    direct = hessian_top_eigenvalue(model, forecast_batches(data.train, 32), iters=8, tol=1e-3)
    assert value == direct.eigenvalue > 0
    stored = json.loads((run / "result.json").read_text())
    assert stored["lambda_max"] == value and stored["lambda_max_windows"] == 32
    stored["lambda_max"] = -1.0  # a second call reads the stored value instead of recomputing
    (run / "result.json").write_text(json.dumps(stored))
    assert run_top_eigenvalue(run, windows=32, iters=8) == -1.0


def test_compile_failing_at_the_first_call_falls_back_to_eager(data_dir, tmp_path, monkeypatch):
    # a broken compiler: torch.compile itself, which the fused step calls too
    calls = []

    def broken_compile(model, **kwargs):
        def fn(*args, **kw):
            calls.append(1)
            raise RuntimeError("inductor: C++ compile error\nlong log")

        return fn

    monkeypatch.setattr(torch, "compile", broken_compile)
    config = _config(data_dir, compile=True, max_epochs=1, max_train_batches=2)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ compile error.*eager") as record:
        result = train_forecaster(config, tmp_path / "compiled")
    assert len(calls) == 1 and len(record) == 1  # tried once, warned once
    eager = train_forecaster(dataclasses.replace(config, compile=False), tmp_path / "eager")
    assert result["test_mse"] == eager["test_mse"]


def test_eval_only_finds_the_run_data_and_download_goes_where_runs_look(
    data_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    common = ["--dataset", "exchange_rate", "--horizon", "8", "--seq-len", "32", "--epochs", "1",
              "--quiet", "--no_sam"]  # fmt: skip
    assert cli.main([*common, "--data-dir", str(data_dir), "--output", str(out)]) == 0
    capsys.readouterr()
    # no --data-dir: the checkpoint's own data folder is used
    assert cli.main(["--eval-only", "--checkpoint", str(out / "seed_0" / "best.pt")]) == 0
    shown = json.loads(capsys.readouterr().out)
    trained = json.loads((out / "metrics.json").read_text())
    assert shown["test_mse"] == pytest.approx(trained["test_mse"], rel=1e-12)
    # --download without --data-dir saves into $SAMLAB_DATA, which the run then reads
    import samlab.datasets.timeseries.files as ts_files

    target = tmp_path / "env_data"
    monkeypatch.setenv("SAMLAB_DATA", str(target))
    # where the file search reads it (samlab/datasets/timeseries/files.py)
    monkeypatch.setattr(ts_files, "EMBEDDED_DATA_DIR", tmp_path / "no_embedded")
    fetched = []

    def fake_download(name, folder, **kw):
        fetched.append(Path(folder))
        Path(folder).mkdir(parents=True, exist_ok=True)
        _write_series(Path(folder) / "exchange_rate.csv")

    monkeypatch.setattr(cli, "download", fake_download)  # the network fetch
    assert cli.main([*common, "--output", str(tmp_path / "dl"), "--download"]) == 0
    assert fetched == [target]


def test_compiled_training_runs_the_fused_step_and_matches_eager(data_dir, tmp_path, monkeypatch):
    import kernels.compiled
    from samlab.train import fused_step

    if not kernels.compiled.compiler_available():
        pytest.skip("no C++ compiler for torch.compile")
    calls = []
    real_call = fused_step.FusedStep.__call__

    def counting(self, x, y):
        calls.append(len(x))
        return real_call(self, x, y)

    monkeypatch.setattr(fused_step.FusedStep, "__call__", counting)
    config = _config(data_dir, compile=True, max_epochs=2, max_train_batches=3)
    compiled = train_forecaster(config, tmp_path / "compiled")
    assert len(calls) == 6  # every training step of both epochs went through the fused graph
    eager = train_forecaster(dataclasses.replace(config, compile=False), tmp_path / "eager")
    for key in ("val_mse", "test_mse", "test_mae"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4)
    assert [h["train_loss"] for h in compiled["history"]] == pytest.approx(
        [h["train_loss"] for h in eager["history"]], rel=1e-5
    )


def test_a_batch_shape_that_fails_to_compile_later_falls_back_to_eager():
    # the last, shorter batch of an epoch compiles a graph of its own mid-epoch: its first call
    # is guarded like the very first one
    from samlab.models.samformer import samformer
    from samlab.optim import create_optimizer

    model = samformer(3, seq_len=32, horizon=8)
    optimizer = create_optimizer("sam", list(model.parameters()), base="adam", rho=0.5)
    calls = []

    def fake_fused(x, y):
        calls.append(len(x))
        if len(x) != 4:
            raise RuntimeError("inductor: the second graph failed\nlong log")
        return torch.tensor(1.0)

    fwd = EagerFallback(model)
    step = TrainStep(model, fwd, optimizer, fused=fake_fused)
    x4, y4 = torch.randn(4, 32, 3), torch.randn(4, 8, 3)
    assert float(step(x4, y4)) == float(step(x4, y4)) == 1.0
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(RuntimeWarning, match="second graph failed.*eager step"):
        loss = step(torch.randn(3, 32, 3), torch.randn(3, 8, 3))
    assert float(loss) != 1.0 and any(
        not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True)
    )  # the eager SAM step ran and updated the weights
    step(x4, y4)
    assert calls == [4, 4, 3]  # nothing goes to the fused step after the fallback
    assert not fwd.compiled  # evaluation is eager too
