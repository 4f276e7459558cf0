"""The generic classification trainer: smoke runs, bitwise resume, NaN handling, files."""

from __future__ import annotations

import ast
import csv
import inspect
import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import samlab.train.classify as classify
import samlab.train.classify.config as classify_config
import samlab.train.classify.loop as classify_loop
import samlab.train.classify.run as classify_run
from samlab.datasets import load_digits
from samlab.train.classify import ClassifyConfig, TrainResult, train_classifier


@pytest.fixture(scope="module")
def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    data = load_digits(seed=0)
    return (data.x_train[:512], data.y_train[:512]), (data.x_test, data.y_test)


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Interrupted(Exception):
    pass


# --------------------------------------------------------------------------- config
def test_config_validates_and_normalises() -> None:
    config = ClassifyConfig(optimizer="gsam", optimizer_kwargs={"alpha": 0.4, "adaptive": False})
    assert config.optimizer_kwargs == (("adaptive", False), ("alpha", 0.4))
    assert hash(config) == hash(
        ClassifyConfig(optimizer="gsam", optimizer_kwargs=[("adaptive", False), ("alpha", 0.4)])
    )
    json.dumps(config.to_dict())
    for bad in (
        dict(optimizer="nope"),
        dict(lr_schedule="linear"),
        dict(bn_policy="sometimes"),
        dict(epochs=0),
        dict(optimizer_kwargs={"lr": 0.1}),
        dict(device="tpu"),
    ):
        with pytest.raises(ValueError):
            ClassifyConfig(**bad)
    smoke = ClassifyConfig.smoke(optimizer="sam")
    assert smoke.epochs <= 2 and smoke.steps_per_epoch and smoke.optimizer == "sam"


def test_sgd_ignores_rho(digits) -> None:
    """``rho`` is a shared keyword of the registry: one-pass optimizers ignore it."""
    with_rho = train_classifier(ClassifyConfig.smoke(rho=0.05), *digits, progress=False)
    without = train_classifier(ClassifyConfig.smoke(rho=0.0), *digits, progress=False)
    assert with_rho.column("train_loss") == without.column("train_loss")


# --------------------------------------------------------------------------- smoke
@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_smoke_trains(digits, optimizer: str) -> None:
    result = train_classifier(ClassifyConfig.smoke(optimizer=optimizer), *digits, progress=False)
    assert isinstance(result, TrainResult) and len(result.history) == 2
    losses = result.column("train_loss")
    assert all(math.isfinite(v) for v in losses + result.column("test_loss"))
    assert losses[-1] < losses[0]
    assert 0.0 <= result.final_test_acc <= result.best_test_acc <= 1.0
    assert result.passes_per_step == (1.0 if optimizer == "sgd" else 2.0)
    assert math.isnan(result.mean_sharpness_gap) == (optimizer == "sgd")
    assert math.isnan(result.refresh_seconds)  # no masks to refresh
    assert result.seconds_per_epoch == pytest.approx(result.seconds / 2)
    assert all(v.device.type == "cpu" for v in result.model_state.values())


def test_bsam_gets_the_training_set_size(tmp_path, digits) -> None:
    """The registry flag ``samples_weights`` makes the trainer hand bSAM ``num_data`` (the
    number of training samples), recorded in ``config.json``."""
    config = ClassifyConfig.smoke(optimizer="bsam", lr=0.5)
    result = train_classifier(config, *digits, progress=False, output_dir=tmp_path)
    assert all(math.isfinite(v) for v in result.column("train_loss"))
    resolved = json.loads((tmp_path / "config.json").read_text())["resolved"]
    assert resolved["optimizer_options"]["num_data"] == resolved["train_samples"] > 0


@pytest.mark.parametrize("optimizer", ["ssamf", "ssamd"])
def test_masks_are_refreshed_on_their_cadence(tmp_path, digits, optimizer: str) -> None:
    """The registry flag ``refreshes_masks`` makes the trainer call ``refresh_masks`` at the
    start of every epoch where ``masks_due(epoch)``: epochs 0, 2 and 4 of 5 with
    ``update_freq=2``."""
    options = {"num_samples": 8, "update_freq": 2, "sparsity": 0.5}
    config = ClassifyConfig.smoke(
        optimizer=optimizer, epochs=5, steps_per_epoch=2, optimizer_kwargs=options
    )
    result = train_classifier(config, *digits, progress=False, output_dir=tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]
    assert saved["samlab"]["refreshes"] == 3
    # each refresh timed on its epoch (outside the steps' seconds), 0 on the other epochs
    timed = result.column("refresh_seconds")
    assert [t > 0 for t in timed] == [True, False, True, False, True]
    assert result.refresh_seconds == pytest.approx(sum(timed))
    masks = [s["mask"] for s in saved["state"].values()]
    assert masks and all(m.dtype == torch.bool for m in masks)
    density = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert 0.45 < density <= 0.5


def test_lr_schedules_step_per_iteration(digits) -> None:
    config = ClassifyConfig.smoke(epochs=4, steps_per_epoch=2)
    cosine = train_classifier(config, *digits, progress=False).column("lr")
    assert cosine[0] == pytest.approx(0.05)
    assert cosine[1] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))
    step = train_classifier(
        ClassifyConfig.smoke(epochs=4, steps_per_epoch=2, lr_schedule="step"),
        *digits,
        progress=False,
    ).column("lr")
    assert step == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    constant = ClassifyConfig.smoke(epochs=2, lr_schedule="constant")
    assert train_classifier(constant, *digits, progress=False).column("lr") == [0.05, 0.05]


def test_dataset_and_loader_inputs_match_tensors(digits) -> None:
    (x, y), test = digits
    config = ClassifyConfig.smoke(optimizer="sam")
    reference = train_classifier(config, (x, y), test, progress=False)

    class Plain(torch.utils.data.Dataset):  # a Dataset that is not a TensorDataset
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int):
            return x[i], y[i]

    generic = train_classifier(config, Plain(), TensorDataset(*test), progress=False)
    assert _states_equal(reference.model_state, generic.model_state)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)  # used as is: no shuffling
    result = train_classifier(config, loader, test, progress=False)
    assert len(result.history) == 2 and math.isfinite(result.final_train_loss)


# --------------------------------------------------------------------------- files, resume
def test_output_files(tmp_path, digits) -> None:
    config = ClassifyConfig.smoke(optimizer="looksam", epochs=3, steps_per_epoch=5)
    result = train_classifier(config, *digits, progress=False, output_dir=tmp_path / "run")
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) == pytest.approx(result.final_train_loss)
    assert [int(r["passes"]) for r in rows] == [6, 6, 6]  # LookSAM k=5: 2 passes every 5th step
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"] == config.to_dict() and saved["resolved"]["device"] == "cpu"
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and set(checkpoint) >= {
        "model",
        "optimizer",
        "scheduler",
        "rng",
    }
    assert _states_equal(checkpoint["model"], result.model_state)


@pytest.mark.parametrize("optimizer", ["sgd", "sam", "gsam", "looksam", "onestep-sam", "ssamf"])
def test_interrupted_run_resumes_bitwise(tmp_path, digits, optimizer: str) -> None:
    extra = {"optimizer_kwargs": {"num_samples": 8}} if optimizer == "ssamf" else {}
    config = ClassifyConfig.smoke(optimizer=optimizer, epochs=3, steps_per_epoch=4, **extra)
    straight = train_classifier(config, *digits, progress=False)

    def kill_after_first_epoch(metrics) -> None:
        if metrics.epoch == 1:
            raise _Interrupted

    run = tmp_path / "run"
    with pytest.raises(_Interrupted):
        train_classifier(
            config, *digits, progress=False, output_dir=run, callback=kill_after_first_epoch
        )
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train_classifier(config, *digits, progress=False, output_dir=run)
    assert resumed.resumed_from_epoch == 1
    assert _states_equal(straight.model_state, resumed.model_state)
    for a, b in zip(straight.history, resumed.history):
        assert (a.train_loss, a.test_acc, a.lr, a.passes) == (
            b.train_loss,
            b.test_acc,
            b.lr,
            b.passes,
        )
    with (run / "metrics.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3

    calls = []  # a finished run is loaded, not retrained
    again = train_classifier(config, *digits, progress=False, output_dir=run, callback=calls.append)
    assert calls == [] and again.resumed_from_epoch == 3
    assert _states_equal(again.model_state, straight.model_state)


def test_other_config_in_output_dir_is_refused(tmp_path, digits) -> None:
    train_classifier(ClassifyConfig.smoke(epochs=1), *digits, progress=False, output_dir=tmp_path)
    with pytest.raises(ValueError, match="lr"):
        train_classifier(
            ClassifyConfig.smoke(epochs=1, lr=0.1), *digits, progress=False, output_dir=tmp_path
        )
    # runtime-only fields (threads, device) do not make it another config
    result = train_classifier(
        ClassifyConfig.smoke(epochs=1, threads=2, eval_batch_size=100),
        *digits,
        progress=False,
        output_dir=tmp_path,
    )
    assert result.resumed_from_epoch == 1
    fresh = ClassifyConfig.smoke(epochs=1, lr=0.1)
    assert (
        train_classifier(
            fresh, *digits, progress=False, output_dir=tmp_path, resume=False
        ).resumed_from_epoch
        == 0
    )


def test_command_line_trains_the_digits_and_skips_a_finished_run(tmp_path, capsys) -> None:
    from samlab.train.classify.__main__ import main

    argv = ["--smoke", "--quiet", "--optimizer", "sam", "--model", "digits_mlp"]
    argv += ["--output", str(tmp_path)]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "digits_mlp with sam, 2 epochs" in shown and "2.00 passes per step" in shown
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert saved == ClassifyConfig.smoke(optimizer="sam", model="digits_mlp").to_dict()
    assert main(argv) == 0 and capsys.readouterr().out == shown  # loaded, not trained again
    assert main([*argv, "--lr", "-1"]) == 2
    assert "lr must be positive" in capsys.readouterr().err


# --------------------------------------------------------------------------- failures
def test_nan_inputs_raise_floating_point_error(digits) -> None:
    (x, y), test = digits
    x = x.clone()
    x[:, 0, 3, 3] = math.nan
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1.*lower lr or rho"):
        train_classifier(ClassifyConfig.smoke(), (x, y), test, progress=False)


def test_divergence_raises_floating_point_error(digits) -> None:
    config = ClassifyConfig.smoke(
        model="digits_mlp", optimizer="sam", lr=1e12, epochs=2, lr_schedule="constant"
    )
    with pytest.raises(FloatingPointError, match=r"epoch \d+, step \d+"):
        train_classifier(config, *digits, progress=False)


# --------------------------------------------------------------------------- boundaries
def test_trainer_never_asks_which_optimizer_it_holds() -> None:
    # the trainer's code: the modules of the samlab.train.classify package
    modules = (classify, classify_config, classify_loop, classify_run)
    sources = [inspect.getsource(m) for m in modules]
    tree = ast.Module(body=[n for s in sources for n in ast.parse(s).body], type_ignores=[])
    names = {"SAM", "ASAM", "GSAM", "LookSAM", "OneStepSAM", "SAMBase", "SGD", "Adam", "AdamW"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
            "isinstance",
            "issubclass",
            "type",
        ):
            text = ast.unparse(node)
            assert "optim" not in text and not names & set(
                text.replace("(", " ").replace(",", " ").replace(".", " ").split()
            ), text
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("samlab.optim")
        ):
            assert {a.name for a in node.names} <= {
                "create_optimizer",
                "get_optimizer_info",
                "current_pass",
            }
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("__class__", "method"), ast.unparse(node)
        if isinstance(node, ast.Name):
            assert node.id not in names, node.id
    assert "optimizer.step(closure)" in inspect.getsource(classify_loop.train_epoch)


def test_the_package_exports_its_modules_public_names() -> None:
    """``samlab.train.classify`` is a package (``config``, ``loop``, ``run`` and the command line
    in ``__main__``); its public names are the objects defined there, and ``samlab.train``
    exports the same objects."""
    import samlab.train

    for module, names in (
        (classify_config, ("LR_SCHEDULES", "ClassifyConfig", "EpochMetrics", "TrainResult")),
        (classify_run, ("train_classifier", "CHECKPOINT_NAME", "METRICS_NAME", "CONFIG_NAME")),
    ):
        for name in names:
            assert getattr(classify, name) is getattr(module, name), name
    for name in ("ClassifyConfig", "EpochMetrics", "TrainResult", "train_classifier"):
        assert getattr(samlab.train, name) is getattr(classify, name), name
    assert (classify.CHECKPOINT_NAME, classify.METRICS_NAME, classify.CONFIG_NAME) == (
        "checkpoint.pt",
        "metrics.csv",
        "config.json",
    )
    assert classify.__all__ == [
        "CHECKPOINT_NAME", "CONFIG_NAME", "LR_SCHEDULES", "METRICS_NAME", "ClassifyConfig",
        "EpochMetrics", "TrainResult", "train_classifier",
    ]  # fmt: skip
    assert classify_config.LR_SCHEDULES == ("cosine", "step", "constant")
