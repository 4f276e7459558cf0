"""The classification trainer's hardening: one run per folder, a run tied to its data (old
runs stamped once), damaged files and bad data in one line, exit statuses, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from landscape.io import DIGEST_KEY, payload_sha256
from samlab.datasets import load_digits
from samlab.train.classify import ClassifyConfig, train_classifier
from samlab.train.classify.cli import main
from samlab.train.classify.digest import data_digest
from samlab.train.locks import FolderBusyError, run_folder_lock

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["--smoke", "--quiet"]


def digits(seed: int = 0):
    data = load_digits(seed=seed)
    return (data.x_train, data.y_train), (data.x_test, data.y_test)


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    config = ClassifyConfig.smoke(epochs=1, steps_per_epoch=2)
    # another process holds the folder's lock (a bare flock: no samlab import, starts fast)
    out.mkdir()
    code = (
        "import fcntl, os, sys, time\n"
        f"handle = open({str(out / '.lock')!r}, 'a+')\n"
        "fcntl.flock(handle.fileno(), fcntl.LOCK_EX)\n"
        "handle.write(f'{os.getpid()}\\n'); handle.flush()\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(FolderBusyError, match=f"process {holder.pid}"):
            train_classifier(config, *digits(), progress=False, output_dir=out)
        assert main([*SMOKE, "--output", str(out)]) == 1
        assert "in use by another run" in one_error_line(capsys.readouterr().err)
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "last.pt").exists()
    with run_folder_lock(out):  # the kernel released the dead holder's lock
        pass


def test_resume_on_other_data_is_refused_naming_both_digests(tmp_path) -> None:
    config = ClassifyConfig.smoke(epochs=1, steps_per_epoch=2)
    train, test = digits(0)
    first = train_classifier(config, train, test, progress=False, output_dir=tmp_path)
    assert first.data_sha256 == data_digest(train, test) is not None
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["extra"]["data_sha256"] == first.data_sha256
    assert json.loads((tmp_path / "metrics.json").read_text())["data_sha256"] == first.data_sha256
    assert json.loads((tmp_path / "config.json").read_text())["data_sha256"] == first.data_sha256
    other = (train[0].clone(), train[1])
    other[0][0, 0] += 1.0  # one value changed
    other_digest = data_digest(other, test)
    with pytest.raises(ValueError, match="other data") as err:
        train_classifier(config, other, test, progress=False, output_dir=tmp_path)
    message = str(err.value)
    assert first.data_sha256[:16] in message and other_digest[:16] in message
    assert "start fresh" in message and "delete" in message
    # the same data: the finished run is loaded, not retrained
    again = train_classifier(config, train, test, progress=False, output_dir=tmp_path)
    assert again.resumed_from_epoch == 1


def test_a_run_without_a_digest_is_accepted_once_and_stamped(tmp_path, capsys) -> None:
    config = ClassifyConfig.smoke(epochs=1, steps_per_epoch=2)
    train, test = digits(0)
    train_classifier(config, train, test, progress=False, output_dir=tmp_path)
    last = tmp_path / "last.pt"
    old = torch.load(last, weights_only=True)  # as written before runs recorded their data
    del old["extra"]["data_sha256"], old[DIGEST_KEY]
    old[DIGEST_KEY] = payload_sha256(old)
    torch.save(old, last)
    loaded = train_classifier(config, train, test, progress=False, output_dir=tmp_path)
    assert "had no data digest; stamped" in capsys.readouterr().err
    stamped = torch.load(last, weights_only=True)
    assert stamped["extra"]["data_sha256"] == loaded.data_sha256 == data_digest(train, test)
    assert all(torch.equal(stamped["model"][k], v) for k, v in old["model"].items())
    other = (train[0] + 1.0, train[1])
    with pytest.raises(ValueError, match="other data"):  # stamped: now tied to its data
        train_classifier(config, other, test, progress=False, output_dir=tmp_path)


def test_aggregate_covers_the_folder_and_damaged_files_end_in_one_line(tmp_path, capsys) -> None:
    assert main([*SMOKE, "--seeds", "2", "--output", str(tmp_path)]) == 0
    later = [*SMOKE, "--seed", "2", "--seeds", "2", "--output", str(tmp_path)]
    assert main(later) == 0  # seeds 2 and 3 into the same folder: every finished seed counts
    assert json.loads((tmp_path / "metrics.json").read_text())["seeds"] == [0, 1, 2, 3]
    capsys.readouterr()
    (tmp_path / "seed_1" / "metrics.json").write_text('{"epochs": 2, "test_ac')  # truncated
    assert main([*later, "--resume"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "seed_1" / "metrics.json") in line and "damaged" in line
    (tmp_path / "seed_1" / "metrics.json").write_text("[1, 2]")
    assert main([*later, "--resume"]) == 1
    assert "holds a list" in one_error_line(capsys.readouterr().err)
    # a damaged config.json is rewritten by the next run (nothing reads it back)
    (tmp_path / "seed_1" / "metrics.json").unlink()
    (tmp_path / "seed_2" / "config.json").write_text('{"config": ')
    assert main([*later, "--resume"]) == 0
    assert json.loads((tmp_path / "seed_2" / "config.json").read_text())["config"]["seed"] == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["seeds"] == [0, 2, 3]
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "threads must be a positive integer"),
        (["--threads", "-1"], "threads must be a positive integer"),
        (["--device", "bogus"], "device must be"),
        (["--epochs", "0"], "epochs must be a positive integer"),
    ],
)
def test_usage_errors_exit_2_before_any_folder_is_made(argv, message, tmp_path, capsys) -> None:
    assert main([*SMOKE, *argv, "--output", str(tmp_path / "run")]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_bad_data_dir_exits_1_from_the_command(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "samlab.train.classify", "--quiet", "--dataset", "cifar10",
            "--model", "resnet20", "--data-dir", str(tmp_path / "x"), "--output",
            str(tmp_path / "run")]  # fmt: skip
    bad_data = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert bad_data.returncode == 1 and "--download" in one_error_line(bad_data.stderr)
    assert not (tmp_path / "run").exists()


def test_sigterm_exits_143_with_a_whole_last_pt_and_the_run_resumes(tmp_path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "samlab.train.classify", "--dataset", "digits", "--model",
            "digits_cnn", "--opt", "sgd", "--epochs", "20", "--steps-per-epoch", "2",
            "--batch_size", "32", "--threads", "1", "--quiet", "--output", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:  # terminate once an epoch is saved
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "last.pt").is_file():
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be terminated"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "terminated (SIGTERM) at epoch" in err and "rerun the same command with --resume" in err
    stopped = torch.load(out / "last.pt", weights_only=True)  # whole, checksum included
    assert 1 <= stopped["epoch"] < 20 and DIGEST_KEY in stopped
    assert not list(out.glob("*.tmp"))
    assert main([*argv[3:], "--resume"]) == 0  # in this process: no second start-up
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 20
