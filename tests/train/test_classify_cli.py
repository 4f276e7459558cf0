"""``python -m samlab.train.classify``: the seed projects' commands, presets, errors, several
seeds, ``--resume``/``--extend``, a SIGKILL mid-epoch, ``--eval-only`` and ``--sharpness``."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from samlab.optim import get_optimizer_info
from samlab.train.classify import ClassifyConfig, lr_at, train_classifier
from samlab.train.classify.cli import PRESETS, build_run, main, parse
from samlab.train.classify.cli.main import load_data

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["--smoke", "--quiet"]


def config_of(argv: list[str]) -> ClassifyConfig:
    return build_run(parse(argv)).config


def image_fixtures():
    """tests/image_fixtures.py (CIFAR files in the real pickle format), loaded by path."""
    path = REPO / "tests" / "image_fixtures.py"
    if not path.is_file():
        pytest.skip("tests/image_fixtures.py (the CIFAR fixture writer) is not in this checkout")
    spec = importlib.util.spec_from_file_location("image_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- seed commands
SSAM = "--model resnet18 --dataset CIFAR100_cutout --datadir DATA --seed 1234 --wandb".split()
SEED_COMMANDS = {
    # SSAM README (Mi et al.): SGD, SAM, SSAM-F with three mask patterns
    "ssam-sgd": (
        "--model resnet18 --dataset CIFAR10_cutout --datadir DATA --opt sgd --lr 0.05 "
        "--weight_decay 5e-4 --seed 1234 --wandb",
        dict(model="resnet18_cifar", dataset="cifar10", augment="cutout", optimizer="sgd",
             rho=0.05, epochs=200, batch_size=128, lr=0.05, weight_decay=5e-4,
             lr_schedule="cosine", lr_step="epoch"),
    ),
    "ssam-sam": (
        " ".join(SSAM) + " --opt sam-sgd --lr 0.05 --weight_decay 1e-3 --rho 0.2",
        dict(model="resnet18_cifar", dataset="cifar100", optimizer="sam", rho=0.2, epochs=200,
             batch_size=128, lr=0.05, weight_decay=1e-3, lr_schedule="cosine", lr_step="epoch"),
    ),
    "ssam-unstructured": (
        " ".join(SSAM) + " --opt ssamf-sgd --lr 0.05 --weight_decay 1e-3 --rho 0.2 --pattern "
        "unstructured --sparsity 0.5 --num_samples 128 --update_freq 1",
        dict(optimizer="ssamf", rho=0.2, epochs=200, batch_size=128, lr=0.05,
             optimizer_kwargs=(("num_samples", 128), ("pattern", "unstructured"),
                               ("scope", "global"), ("sparsity", 0.5), ("update_freq", 1))),
    ),
    "ssam-structured": (
        " ".join(SSAM) + " --opt ssamf-sgd --lr 0.05 --weight_decay 1e-3 --rho 0.2 --pattern "
        "structured --sparsity 0.5 --num_samples 128 --update_freq 1",
        dict(optimizer="ssamf", optimizer_kwargs=(("num_samples", 128), ("pattern", "tensor"),
                                                  ("sparsity", 0.5), ("update_freq", 1))),
    ),
    "ssam-nm": (
        " ".join(SSAM) + " --opt ssamf-sgd --lr 0.05 --weight_decay 1e-3 --rho 0.2 --pattern nm "
        "--n_structured 2 --m_structured 4 --num_samples 128 --update_freq 1",
        dict(optimizer="ssamf", optimizer_kwargs=(("m", 4), ("n", 2), ("num_samples", 128),
                                                  ("pattern", "nm"), ("sparsity", 0.2),
                                                  ("update_freq", 1))),
    ),
    # SAM.v2 README
    "samv2": (
        "--arch resnet --depth 20 --dataset cifar10 --optmzr sgd-sam --sam-v2 --sam-rho 0.05 "
        "--lr 0.1 --epochs 160",
        dict(model="resnet20_cifar", dataset="cifar10", augment="base", optimizer="onestep-sam",
             rho=0.05, epochs=160, batch_size=64, lr=0.1, weight_decay=5e-4,
             lr_schedule="multistep", lr_milestone_epochs=(80, 120), lr_gamma=0.1,
             lr_step="iteration"),
    ),
    # sam.pytorch README
    "sampytorch": (
        "--optim.name sam --model resnet20 --optim.rho 0.05",
        dict(model="resnet20_cifar", dataset="cifar10", optimizer="sam", rho=0.05, epochs=200,
             batch_size=128, lr=0.1, weight_decay=5e-4, lr_schedule="cosine",
             warmup_epochs=5.0),
    ),
    # GSAM example/train.py (README table), with the seed's int-typed flags given floats
    "gsam": (
        "--rho_max 2.0 --rho_min 2.0 --alpha 0.4 --adaptive True",
        dict(model="wrn16_8", dataset="cifar10", augment="cutout", optimizer="gsam", rho=2.0,
             rho_min=2.0, epochs=200, batch_size=128, lr=0.1, label_smoothing=0.1,
             lr_schedule="cosine", optimizer_kwargs=(("adaptive", True), ("alpha", 0.4))),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SEED_COMMANDS))
def test_seed_readme_commands_give_the_seeds_config(name: str) -> None:
    command, expected = SEED_COMMANDS[name]
    config = config_of(command.split())
    for field, value in expected.items():
        got = getattr(config, field)
        if field == "optimizer":
            got = get_optimizer_info(got).name
        assert got == value, (field, got, value)


def test_presets_give_the_seed_experiments() -> None:
    assert set(PRESETS) == {
        "ssam-resnet18-cifar10", "ssam-resnet18-cifar100", "gsam-wrn16-8-cifar10",
        "sampytorch-resnet20-cifar10", "sampytorch-wrn28-2-cifar10",
        "sampytorch-resnext29-cifar10", "samv2-resnet32-sp90-sgd", "samv2-resnet32-sp90-sam",
        "vgg9-cifar10",
    }  # fmt: skip
    ssam = config_of(["--preset", "ssam-resnet18-cifar100"])
    assert (ssam.model, ssam.dataset, ssam.augment, ssam.optimizer) == (
        "resnet18_cifar", "cifar100", "cutout", "ssamf-sgd")  # fmt: skip
    assert ssam.model_kwargs == (("num_classes", 100),)
    sgd = config_of(["--preset", "samv2-resnet32-sp90-sgd"])
    sam = config_of(["--preset", "samv2-resnet32-sp90-sam"])
    assert (sgd.model, sgd.weight_sparsity, sgd.epochs, sgd.batch_size) == (
        "resnet32_cifar", 0.9, 160, 64)  # fmt: skip
    assert sgd.weight_decay == 1e-4 and sam.weight_decay == 5e-4  # the seed's hard-coded 1e-4
    assert get_optimizer_info(sam.optimizer).name == "onestep-sam" and sam.rho == 0.05
    assert dict(sam.optimizer_kwargs) == {"adaptive": True}
    assert sam.lr_schedule == "cosine" and sam.lr_min == 4e-8
    vgg = config_of(["--preset", "vgg9-cifar10"])
    assert (vgg.model, vgg.augment, vgg.optimizer, vgg.rho, vgg.lr, vgg.batch_size) == (
        "vgg9", "none", "sam-adam", 0.5, 1e-3, 256)  # fmt: skip
    no_sam = config_of(["--preset", "vgg9-cifar10", "--no_sam"])
    assert no_sam.optimizer == "adam"
    wrn = config_of(["--preset", "sampytorch-wrn28-2-cifar10", "--epochs", "3"])
    assert (wrn.model, wrn.epochs) == ("wrn28_2", 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--lr", "0.1", "--learning_rate", "0.2"], "contradictory flags"),
        (["--opt", "sgd", "--optmzr", "sgd"], "two seed projects"),
        (["--preset", "vgg9-cifar10", "--opt", "sgd"], "SSAM"),
        (["--preset", "nope"], "unknown preset"),
        (["--opt", "sam-sgd", "--implicit", "--samconv"], "implicit sparse backward"),
        (["--extend"], "together with --resume"),
        (["--optimizer", "nope"], "unknown optimizer"),
        (["--amp", "fp16", "--device", "cpu", *SMOKE], "needs a CUDA device"),
        (["--arch", "resnet", "--depth", "21"], "21"),
    ],
)
def test_bad_commands_fail_with_one_line(argv, message, capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main([*argv, "--output", str(tmp_path / "run")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err


def test_list_models(capsys) -> None:
    assert main(["--list-models"]) == 0
    names = capsys.readouterr().out.split("\n")
    assert {"digits_cnn", "resnet18_cifar", "wrn16_8"} <= set(names)


# --------------------------------------------------------------------------- CIFAR
def test_without_cifar_the_seed_command_stops_at_data_loading(tmp_path, capsys) -> None:
    argv = SEED_COMMANDS["ssam-sam"][0].replace("DATA", str(tmp_path / "data")).split()
    assert main([*argv, "--output", str(tmp_path / "run")]) == 1  # bad data: 1, not usage
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "train" in errors[0] and "--download" in errors[0] and "--data-dir" in errors[0]
    assert not (tmp_path / "run").exists()  # no folder left behind


def test_with_the_tiny_cifar_fixture_the_seed_command_trains_two_steps(tmp_path, capsys) -> None:
    image_fixtures().write_cifar100(tmp_path / "data", n_train=8, n_test=4)
    argv = SEED_COMMANDS["ssam-sam"][0].replace("DATA", str(tmp_path / "data")).split()
    argv += ["--epochs", "1", "--steps-per-epoch", "2", "--batch_size", "4", "--num_workers",
             "0", "--threads", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    argv += ["--optimizer-impl", "foreach"]  # no one-time compilation of the ascent (11M)
    argv += ["--output", str(tmp_path / "o")]
    assert main(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "o" / "metrics.csv").open()))
    assert len(rows) == 1 and int(rows[0]["steps"]) == 2 and int(rows[0]["passes"]) == 4
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "cifar100" and 0 <= metrics["test_acc"] <= 1


# --------------------------------------------------------------------------- seeds, resume
def test_seeds_write_one_folder_each_and_the_mean(tmp_path, capsys) -> None:
    assert main([*SMOKE, "--optimizer", "sam", "--seeds", "2", "--output", str(tmp_path)]) == 0
    per_seed = [json.loads((tmp_path / f"seed_{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert all((tmp_path / f"seed_{s}" / "last.pt").is_file() for s in (0, 1))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    accs = [m["test_acc"] for m in per_seed]
    assert metrics["seeds"] == [0, 1] and metrics["test_acc"] == pytest.approx(sum(accs) / 2)
    assert metrics["test_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    assert per_seed[0]["history"] != per_seed[1]["history"]
    assert "seeds [0, 1]" in capsys.readouterr().out and "±" in metrics_line(tmp_path)


def metrics_line(out: Path) -> str:
    metrics = json.loads((out / "metrics.json").read_text())
    return f"{metrics['test_acc']:.4f} ± {metrics['test_acc_std']:.4f}"


def test_extend_continues_to_more_epochs(tmp_path, capsys) -> None:
    argv = [*SMOKE, "--optimizer", "sam", "--steps-per-epoch", "3", "--output", str(tmp_path)]
    assert main([*argv, "--epochs", "2"]) == 0
    before = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert main([*argv, "--epochs", "4", "--resume"]) == 1
    assert "pass --extend" in capsys.readouterr().err
    assert main([*argv, "--epochs", "1", "--resume", "--extend"]) == 1
    assert "cannot be shortened" in capsys.readouterr().err
    assert main([*argv, "--epochs", "4", "--resume", "--extend"]) == 0
    assert "differs from a fresh run of 4 epochs" in capsys.readouterr().err
    after = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert after[:2] == before and len(after) == 4
    config = ClassifyConfig.smoke(optimizer="sam", steps_per_epoch=3, epochs=4)
    assert after[2]["lr"] == pytest.approx(lr_at(config, 3, 6))  # the 4-epoch curve at step 6
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["epochs"] == 4
    assert saved["extensions"] == [{"from_epochs": 2, "to_epochs": 4, "at_epoch": 2, "at_step": 6}]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 4


def test_sigkill_mid_epoch_resumes_and_loses_nothing_else(tmp_path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "samlab.train.classify", "--dataset", "digits", "--model",
            "digits_cnn", "--opt", "sam-sgd", "--epochs", "3", "--steps-per-epoch", "8",
            "--batch_size", "64", "--threads", "1", "--quiet", "--output", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:  # kill as soon as epoch 1 is saved: epoch 2 has begun
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.csv").is_file() and len(
                (out / "metrics.csv").read_text().splitlines()
            ) >= 2:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert 1 <= killed_at < 3
    resumed = subprocess.run([*argv, "--resume"], cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    config = ClassifyConfig.from_dict(json.loads((out / "config.json").read_text())["config"])
    straight = train_classifier(config, *load_data(config), progress=False)
    final = torch.load(out / "last.pt", weights_only=True)
    assert final["epoch"] == 3
    assert all(torch.equal(final["model"][k], v) for k, v in straight.model_state.items())
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [float(r["train_loss"]) for r in rows] == straight.column("train_loss")


# --------------------------------------------------------------------------- evaluation
def test_eval_only_and_sharpness(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = [*SMOKE, "--optimizer", "sam", "--sharpness", "--sharpness-samples", "64"]
    assert main([*argv, "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lambda_max"] > 0 and metrics["hessian_trace"] > 0
    assert metrics["sharpness_samples"] == 64
    assert "lambda_max" in capsys.readouterr().out
    assert (
        main(["--eval-only", "--checkpoint", str(out / "last.pt"), "--output", str(tmp_path)]) == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert shown["test_acc"] == pytest.approx(metrics["test_acc"])
    assert shown["test_loss"] == pytest.approx(metrics["test_loss"])


def test_seed_dialects_write_somewhere_and_map_their_own_meanings() -> None:
    run = build_run(parse(SEED_COMMANDS["sampytorch"][0].split()))
    assert run.output == "runs/sampytorch-resnet20_cifar-cifar10-sam-s1"
    assert any("no --output given" in note for note in run.notes)
    gsam = build_run(parse(["--rho_max", "0.1", "--rho_min", "0.1", "--threads", "2"]))
    assert gsam.config.num_workers == 2 and gsam.config.threads is None  # loader workers
    assert build_run(parse(["--smoke"])).output is None  # samlab's own: files only if asked


def test_the_device_rule_of_every_command_line(capsys) -> None:
    """``--cuda`` runs on the CPU with a note where there is no GPU; an explicit absent CUDA
    ``--device`` is an error naming the devices there are (landscape.devices' one rule)."""
    from landscape import resolve_device

    base = "--dataset digits --model digits_cnn --epochs 1".split()
    config = config_of([*base, "--cuda"])
    if torch.cuda.is_available():
        assert config.device.startswith("cuda")
    else:
        assert config.device == "cpu"
        assert "note: --cuda: no CUDA device, running on CPU" in capsys.readouterr().err
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
