"""The forecasting trainer and its command line under bad input and faults (issue: hardening).

Each test reproduces a failure a user met: other data read than asked, a finished run skipped on
other data, damaged checkpoints, an aggregate losing seeds, tracebacks instead of one line,
interrupts, two runs in one folder.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.cli.inputs import CLIError, read_checkpoint
from landscape.io import DIGEST_KEY, payload_sha256
from samlab.train.checkpoint import load_checkpoint, save_checkpoint
from samlab.train.forecast import ForecastConfig, train_forecaster
from samlab.train.forecast import __main__ as cli
from samlab.train.locks import FolderBusyError, run_folder_lock

REPO = Path(__file__).resolve().parents[2]
ROWS, CHANNELS = 400, 8


def _write_series(path: Path, rows: int = ROWS, seed: int = 0) -> Path:
    """An exchange_rate-shaped series (date + 8 channels, OT last), hourly dates."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    cols = [np.sin(2 * np.pi * t / (12 + 5 * c)) + 0.1 * rng.standard_normal(rows)
            for c in range(CHANNELS)]  # fmt: skip
    names = [str(c) for c in range(CHANNELS - 1)] + ["OT"]
    start = np.datetime64("2000-01-01T00:00")
    lines = ["date," + ",".join(names)]
    for i in range(rows):
        day = str(start + np.timedelta64(i, "h")).replace("T", " ")
        lines.append(day + "," + ",".join(f"{col[i]:.6f}" for col in cols))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return _write_series(tmp_path / "data" / "exchange_rate.csv").parent


def _config(data_dir, **kw) -> ForecastConfig:
    base = dict(dataset="exchange_rate", horizon=8, seq_len=32, batch_size=16, max_epochs=1,
                data_dir=str(data_dir), progress=False, threads=1, max_train_batches=4)  # fmt: skip
    return ForecastConfig(**{**base, **kw})


def _argv(data_dir, out, *extra, epochs: int = 1) -> list[str]:
    return ["--dataset", "exchange_rate", "--horizon", "8", "--seq-len", "32", "--data-dir",
            str(data_dir), "--output", str(out), "--epochs", str(epochs), "--quiet",
            "--batch-size", "16", "--threads", "1", *extra]  # fmt: skip


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def _flip_tensor_bytes(path: Path, tensor: torch.Tensor, count: int = 8) -> None:
    """Flip ``count`` bytes inside ``tensor``'s stored data in ``path`` (torch.save keeps
    storages uncompressed, so their bytes are found verbatim)."""
    raw = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    start = bytes(raw).find(needle)
    assert start >= 0
    for offset in range(len(needle) - count, len(needle)):  # near the end of the tensor
        raw[start + offset] ^= 0xFF
    path.write_bytes(bytes(raw))


# --- item 2: the data asked for, and runs tied to it ---------------------------------------


def test_cli_never_reads_other_data_than_asked(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    etth1 = ["--dataset", "ETTh1", "--smoke", "--quiet"]
    for where in (tmp_path / "empty", tmp_path / "absent", data_dir / "exchange_rate.csv"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        out = tmp_path / "out"
        assert cli.main([*etth1, "--data-dir", str(where), "--output", str(out)]) == 1
        line = _one_error_line(capsys)
        assert str(where) in line and not out.exists()
    monkeypatch.setenv("SAMLAB_DATA", str(tmp_path / "gone"))
    assert cli.main([*etth1, "--output", str(tmp_path / "out")]) == 1
    assert "SAMLAB_DATA" in _one_error_line(capsys)


def test_a_finished_run_on_other_data_is_refused_and_an_old_one_stamped(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    first = train_forecaster(_config(data_dir), run)
    assert len(first["data_sha256"]) == 64
    other = _write_series(tmp_path / "other" / "exchange_rate.csv", seed=1).parent
    with pytest.raises(ValueError, match=r"result.json was computed on other data .*start fresh"):
        train_forecaster(_config(other), run)  # data_dir is not semantic: the digest decides
    # the same file changed in place (train_forecaster reads it again: the cache sees the mtime)
    _write_series(data_dir / "exchange_rate.csv", seed=2)
    with pytest.raises(ValueError, match="other data"):
        train_forecaster(_config(data_dir), run)
    _write_series(data_dir / "exchange_rate.csv", seed=0)
    # a run written before the digest: accepted once, stamped
    saved = json.loads((run / "result.json").read_text())
    digest = saved.pop("data_sha256")
    (run / "result.json").write_text(json.dumps(saved))
    capsys.readouterr()
    again = train_forecaster(_config(data_dir), run)
    assert again["test_mse"] == first["test_mse"]
    assert "no data digest; stamped" in capsys.readouterr().out
    assert json.loads((run / "result.json").read_text())["data_sha256"] == digest
    with pytest.raises(ValueError, match="other data"):
        train_forecaster(_config(other), run)


def test_resuming_last_pt_on_other_data_is_refused(data_dir, tmp_path):
    run = tmp_path / "run"

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_forecaster(_config(data_dir, max_epochs=3), run, callback=stop)
    other = _write_series(tmp_path / "other" / "exchange_rate.csv", seed=1).parent
    with pytest.raises(ValueError, match=r"last.pt was computed on other data"):
        train_forecaster(_config(other, max_epochs=3), run)


def test_finished_run_with_another_configuration_names_the_keys(data_dir, tmp_path):
    train_forecaster(_config(data_dir), tmp_path / "run")
    with pytest.raises(ValueError, match=r"different configuration \(differs in \['lr'"):
        train_forecaster(_config(data_dir, lr=5e-3, patience=7), tmp_path / "run")


# --- item 4: checkpoints --------------------------------------------------------------------


def test_checkpoint_checksum_catches_flipped_bytes(tmp_path, capsys):
    model = torch.nn.Linear(64, 32)
    path = save_checkpoint(tmp_path / "best.pt", model=model, epoch=1, config={"a": 1})
    saved = torch.load(path, weights_only=True)
    assert saved[DIGEST_KEY] == payload_sha256(saved)
    assert load_checkpoint(path)["epoch"] == 1 and capsys.readouterr().err == ""
    _flip_tensor_bytes(path, model.weight)
    assert torch.load(path, weights_only=True)["epoch"] == 1  # torch reads it without complaint
    with pytest.raises(ValueError, match=r"best.pt is damaged: .* checksum"):
        load_checkpoint(path)
    with pytest.raises(CLIError, match=r"--model_file .*best.pt is damaged"):
        read_checkpoint(str(path), "--model_file")
    # a plain state_dict and an older checkpoint (no checksum) load, with one note each
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    old = {"model": model.state_dict(), "epoch": 3, "config": None}
    torch.save(old, tmp_path / "old.pt")
    assert set(load_checkpoint(tmp_path / "plain.pt")["model"]) == {"weight", "bias"}
    assert load_checkpoint(tmp_path / "old.pt")["epoch"] == 3
    assert read_checkpoint(str(tmp_path / "old.pt"), "--model_file")[0].keys() == {"weight", "bias"}
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 3 and all("carries no checksum" in n for n in notes)
    # non-finite weights: an error naming the file, from both loaders
    with torch.no_grad():
        model.bias[3] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", model=model)
    with pytest.raises(ValueError, match=r"nan.pt: the weights 'bias' hold NaN"):
        load_checkpoint(tmp_path / "nan.pt")
    with pytest.raises(CLIError, match=r"nan.pt: the weights 'bias' hold NaN"):
        read_checkpoint(str(tmp_path / "nan.pt"), "--model_file")


def test_checkpoints_use_unique_temporary_names(tmp_path, monkeypatch):
    seen = []
    real = torch.save

    def spy(obj, target):
        seen.append(Path(target))
        return real(obj, target)

    monkeypatch.setattr(torch, "save", spy)
    model = torch.nn.Linear(2, 2)
    for _ in range(2):
        save_checkpoint(tmp_path / "last.pt", model=model, config={"a": 1})
    assert len(set(seen)) == 2 and all(str(os.getpid()) in p.name for p in seen)
    assert all(p.parent == tmp_path and p.name != "last.pt.tmp" for p in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.pt"]


def test_eval_only_on_a_damaged_or_unfitting_checkpoint_is_one_line(data_dir, tmp_path, capsys):
    train_forecaster(_config(data_dir), tmp_path / "run")
    best = tmp_path / "run" / "best.pt"
    capsys.readouterr()
    damaged = tmp_path / "damaged.pt"
    shutil.copy(best, damaged)
    ckpt = torch.load(best, weights_only=True)
    _flip_tensor_bytes(damaged, max(ckpt["model"].values(), key=torch.Tensor.numel))
    assert cli.main(["--eval-only", "--checkpoint", str(damaged)]) == 1
    assert "damaged.pt is damaged" in _one_error_line(capsys)
    # weights that do not fit the checkpoint's own config (d_model 16 saved as 8)
    ckpt["config"]["d_model"] = 8
    ckpt[DIGEST_KEY] = payload_sha256(ckpt)
    torch.save(ckpt, tmp_path / "unfit.pt")
    assert cli.main(["--eval-only", "--checkpoint", str(tmp_path / "unfit.pt")]) == 1
    assert "do not fit the model of its own config" in _one_error_line(capsys)


def test_eval_only_on_a_smoke_checkpoint_keeps_its_evaluation_limit(tmp_path, capsys):
    data = _write_series(tmp_path / "data" / "exchange_rate.csv", rows=2000).parent
    out = tmp_path / "out"
    assert cli.main([*_argv(data, out, "--smoke", "--no_sam")]) == 0
    assert "--smoke runs 2 epochs; --epochs 1 is ignored" in capsys.readouterr().out
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["per_seed"][0]["epochs_run"] == 2
    assert cli.main(["--eval-only", "--checkpoint", str(out / "seed_0" / "best.pt")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["max_eval_windows"] == 256  # the test split has 393 windows
    assert shown["test_mse"] == pytest.approx(trained["test_mse"], rel=1e-9)


# --- item 5: the aggregate covers every finished seed ---------------------------------------


def test_aggregate_covers_every_finished_seed_in_the_folder(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_argv(data_dir, out, "--seeds", "2", "--no_sam")) == 0
    two = json.loads((out / "metrics.json").read_text())
    assert cli.main(_argv(data_dir, out, "--seed", "1", "--no_sam")) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["seeds"] == [0, 1] and again["test_mse"] == two["test_mse"]
    assert (out / "results.csv").read_text().count("\n") == 3
    assert cli.main(_argv(data_dir, out, "--seed", "2", "--no_sam")) == 0
    assert json.loads((out / "metrics.json").read_text())["seeds"] == [0, 1, 2]
    capsys.readouterr()
    # a seed of another configuration in the folder: the aggregate would mix them
    assert cli.main(_argv(data_dir, out, "--seed", "3", "--rho", "0.3")) == 1
    assert "seed_0 holds a run with another configuration" in _one_error_line(capsys)


# --- one run per folder ---------------------------------------------------------------------


def test_a_second_run_into_the_same_folder_is_refused(data_dir, tmp_path, capsys):
    run = tmp_path / "out" / "seed_0"
    with run_folder_lock(run):
        with pytest.raises(FolderBusyError, match=rf"{os.getpid()}"):
            train_forecaster(_config(data_dir), run)
        assert cli.main(_argv(data_dir, tmp_path / "out")) == 1
        assert "is in use by another run" in _one_error_line(capsys)
    assert train_forecaster(_config(data_dir), run)["epochs_run"] == 1  # released


# --- items 9 and 13, the one-line rule, interrupts -------------------------------------------


def test_bad_flags_and_files_end_in_one_line(data_dir, tmp_path, capsys):
    for flags in (["--threads", "-1"], ["--threads", "0"], ["--seeds", "0"]):
        with pytest.raises(SystemExit) as usage:
            cli.main(_argv(data_dir, tmp_path / "o")[:-2] + flags)
        assert usage.value.code == 2
    capsys.readouterr()
    assert cli.main([*_argv(data_dir, tmp_path / "o"), "--device", "bogus"]) == 1
    assert "--device bogus" in _one_error_line(capsys)
    assert cli.main([*_argv(data_dir, tmp_path / "o"), "--rho", "-1"]) == 1
    assert "rho must be" in _one_error_line(capsys) and not (tmp_path / "o").exists()
    # a truncated .csv.gz
    packed = tmp_path / "gz" / "exchange_rate.csv.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress((data_dir / "exchange_rate.csv").read_bytes())[:5000])
    assert cli.main(_argv(packed.parent, tmp_path / "o")) == 1
    assert "damaged or truncated gzip file" in _one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_an_unexpected_failure_is_one_line_with_the_debug_hint(
    data_dir, tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "train_forecaster", broken)
    monkeypatch.delenv("SAMLAB_DEBUG", raising=False)
    assert cli.main(_argv(data_dir, tmp_path / "o")) == 1
    line = _one_error_line(capsys)
    assert (
        line
        == "error: RuntimeError: something unexpected (run with SAMLAB_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("SAMLAB_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(_argv(data_dir, tmp_path / "o"))


@pytest.mark.parametrize("how, status", [("ctrl-c", 130), ("sigterm", 143)])
def test_interrupts_name_the_epoch_and_resume(data_dir, tmp_path, monkeypatch, capsys, how, status):
    real = cli.train_forecaster

    def interrupted_after_one_epoch(config, run_dir, callback=None, **kw):
        def stop(row):
            callback(row)
            if how == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in this (main) thread

        return real(config, run_dir, callback=stop, **kw)

    argv = _argv(data_dir, tmp_path / "o", epochs=3)
    monkeypatch.setattr(cli, "train_forecaster", interrupted_after_one_epoch)
    assert cli.main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("at epoch 2 (seed 0); rerun the same command to resume"), err
    assert load_checkpoint(tmp_path / "o" / "seed_0" / "last.pt")["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def before_any_epoch(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_forecaster", before_any_epoch)  # the epoch from last.pt
    assert cli.main(argv) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted at epoch 2 (seed 0); rerun the "
                                                    "same command to resume")  # fmt: skip
    monkeypatch.setattr(cli, "train_forecaster", real)
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "o" / "seed_0" / "result.json").read_text())
    assert result["epochs_run"] == 3


def test_sharpness_result_json_damaged_is_named(data_dir, tmp_path):
    from samlab.train.sharpness import run_top_eigenvalue

    train_forecaster(_config(data_dir), tmp_path / "run")
    path = tmp_path / "run" / "result.json"
    path.write_text(path.read_text()[:300])  # what an in-place rewrite killed midway leaves
    with pytest.raises(ValueError, match=r"result.json is damaged .*delete it"):
        run_top_eigenvalue(tmp_path / "run", windows=16, iters=3)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a list"):
        run_top_eigenvalue(tmp_path / "run", windows=16, iters=3)


def test_make_lab_listens_on_localhost_and_allows_root_only_as_root():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shown = subprocess.run(
        ["make", "-n", "lab", "STAMP=", "-C", str(REPO)], capture_output=True, text=True
    )
    line = next(x for x in shown.stdout.splitlines() if "jupyter lab" in x)
    assert "--ip 127.0.0.1" in line
    assert ("--allow-root" in line) == (os.geteuid() == 0)
