"""The generic classification trainer: smoke runs, bitwise resume, NaN handling, files."""

from __future__ import annotations

import ast
import csv
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import samlab.train.classify as classify
import samlab.train.classify.config as classify_config
import samlab.train.classify.loop as classify_loop
import samlab.train.classify.run as classify_run
from samlab.datasets import load_digits
from samlab.models import create_model
from samlab.optim import get_optimizer_info, list_optimizers
from samlab.train.classify import (
    ClassifyConfig,
    TrainResult,
    lr_at,
    lr_factor,
    train_classifier,
)


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
        dict(lr_schedule="exponential"),
        dict(lr_schedule="multistep"),
        dict(amp="fp8"),
        dict(weight_sparsity=1.0),
        dict(rho_min=0.1),
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
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]
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
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
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
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
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


def test_command_line_trains_the_digits_and_resumes_only_when_asked(tmp_path, capsys) -> None:
    from samlab.train.classify.cli import main

    argv = ["--smoke", "--quiet", "--optimizer", "sam", "--model", "digits_mlp"]
    argv += ["--output", str(tmp_path)]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "digits_mlp on digits with sam, seeds [0]" in shown
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert saved == ClassifyConfig.smoke(optimizer="sam", model="digits_mlp").to_dict()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test_acc"] <= 1 and metrics["test_loss"] > 0
    assert main(argv) == 2  # a run is there: only --resume continues it
    assert "pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0 and capsys.readouterr().out == shown  # loaded
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
    folder = Path(classify.__file__).parent
    sources = [path.read_text() for path in sorted(folder.rglob("*.py"))]
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
                "ProportionalRho",
                "list_optimizers",
            }
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("__class__", "method"), ast.unparse(node)
        if isinstance(node, ast.Name):
            assert node.id not in names, node.id
    assert "optimizer.step(closure)" in inspect.getsource(classify_loop.Stepper.__call__)


def test_the_package_exports_its_modules_public_names() -> None:
    """``samlab.train.classify`` is a package; its public names are the objects defined in its
    modules, and ``samlab.train`` exports the same objects."""
    import samlab.train
    import samlab.train.classify.checkpointing as checkpointing
    import samlab.train.classify.schedules as schedules

    for module, names in (
        (classify_config, ("LR_SCHEDULES", "ClassifyConfig", "EpochMetrics", "TrainResult")),
        (classify_run, ("train_classifier",)),
        (schedules, ("lr_factor", "lr_at")),
        (checkpointing, ("CHECKPOINT_NAME", "BEST_NAME", "METRICS_NAME", "CONFIG_NAME")),
    ):
        for name in names:
            assert getattr(classify, name) is getattr(module, name), name
    for name in ("ClassifyConfig", "EpochMetrics", "TrainResult", "train_classifier"):
        assert getattr(samlab.train, name) is getattr(classify, name), name
    names = (classify.CHECKPOINT_NAME, classify.BEST_NAME, classify.LEGACY_CHECKPOINT_NAME)
    assert names == ("last.pt", "best.pt", "checkpoint.pt")
    assert (classify.METRICS_NAME, classify.METRICS_JSON_NAME, classify.CONFIG_NAME) == (
        "metrics.csv",
        "metrics.json",
        "config.json",
    )
    assert classify_config.LR_SCHEDULES == ("cosine", "step", "multistep", "linear", "constant")


# --------------------------------------------------------------------------- 0.3: the loop
@pytest.mark.parametrize("optimizer", list_optimizers())
def test_every_optimizer_takes_two_steps_on_digits_cnn(digits, optimizer: str) -> None:
    extra = {"num_samples": 8} if get_optimizer_info(optimizer).refreshes_masks else {}
    config = ClassifyConfig.smoke(
        optimizer=optimizer, epochs=1, steps_per_epoch=2, batch_size=16, optimizer_kwargs=extra
    )
    start = ClassifyConfig.smoke()  # the same seed: the same initial weights
    torch.manual_seed(start.seed)
    initial = create_model("digits_cnn").state_dict()
    result = train_classifier(config, *digits, progress=False)
    assert result.history[0].steps == 2 and math.isfinite(result.final_train_loss)
    passes = get_optimizer_info(optimizer).passes
    assert result.history[0].passes == {1: 2, 2: 4, "1-2": 3}[passes]  # LookSAM: 2, then 1
    assert not _states_equal(initial, result.model_state)


def test_schedules_warmup_and_per_epoch_steps() -> None:
    steps = 4
    warm = ClassifyConfig(epochs=4, warmup_epochs=1, warmup_start=0.1, lr_min=0.005)
    factor = lr_factor(warm, steps)
    assert [factor(s) for s in range(4)] == pytest.approx([0.1, 0.325, 0.55, 0.775])
    assert factor(4) == 1.0 and factor(16) == pytest.approx(0.1)  # cosine to lr_min / lr
    multi = ClassifyConfig(epochs=4, lr_schedule="multistep", lr_milestone_epochs=(1, 3))
    assert [lr_at(multi, steps, s) for s in (3, 4, 11, 12)] == pytest.approx(
        [0.05, 0.005, 0.005, 0.0005]
    )
    per_epoch = ClassifyConfig(epochs=4, lr_step="epoch")
    values = [lr_factor(per_epoch, steps)(s) for s in range(16)]
    assert values[:4] == [1.0] * 4 and values[4:8] == [values[4]] * 4 and values[4] < 1
    linear = ClassifyConfig(epochs=2, lr_schedule="linear")
    assert lr_factor(linear, 2)(2) == pytest.approx(0.5)


def test_resume_is_bitwise_with_masks_amp_warmup_and_clipping(tmp_path, digits) -> None:
    """Every piece of state a 0.3 run adds (weight masks, per-epoch multistep with warm-up,
    bf16 autocast, the trainer's clipping of a one-pass optimizer, GSAM's rho schedule)
    survives an interruption bit for bit."""
    for name, options in (
        ("sgd", dict(weight_sparsity=0.5, weight_mask="erk", amp="bf16", max_grad_norm=0.5,
                     label_smoothing=0.1)),
        ("gsam", dict(rho=0.1, rho_min=0.02, lr_schedule="multistep", lr_milestone_epochs=(2,),
                      lr_step="epoch", warmup_epochs=1, weight_sparsity=0.3,
                      max_grad_norm=1.0)),
    ):  # fmt: skip
        config = ClassifyConfig.smoke(optimizer=name, epochs=3, steps_per_epoch=3, **options)
        straight = train_classifier(config, *digits, progress=False)

        def stop(metrics) -> None:
            if metrics.epoch == 1:
                raise _Interrupted

        run = tmp_path / name
        with pytest.raises(_Interrupted):
            train_classifier(config, *digits, progress=False, output_dir=run, callback=stop)
        resumed = train_classifier(config, *digits, progress=False, output_dir=run)
        assert resumed.resumed_from_epoch == 1
        assert _states_equal(straight.model_state, resumed.model_state), name
        assert straight.column("train_loss") == resumed.column("train_loss")
        saved = torch.load(run / "last.pt", weights_only=True)
        masks = saved["extra"]["weight_masks"]
        assert masks  # the weight masks travel with the checkpoint ...
        weights = resumed.model_state
        zeros = sum(int((weights[k] == 0).sum()) for k in masks["masks"])
        kept = sum(int(m.sum()) for m in masks["masks"].values())
        total = sum(m.numel() for m in masks["masks"].values())
        assert zeros >= total - kept > 0  # ... and the masked weights stay at zero


def test_best_and_last_checkpoints(tmp_path, digits) -> None:
    config = ClassifyConfig.smoke(optimizer="sam", epochs=3, steps_per_epoch=4, lr=0.2)
    result = train_classifier(config, *digits, progress=False, output_dir=tmp_path)
    best_epoch = max(range(3), key=lambda i: result.history[i].test_acc) + 1
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == best_epoch
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 3
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_epoch"] == best_epoch and metrics["test_acc"] == result.final_test_acc
    assert metrics["passes_per_step"] == 2.0 and len(metrics["history"]) == 3


def test_fp16_and_sync_bn_need_cuda(digits) -> None:
    if torch.cuda.is_available():
        result = train_classifier(
            ClassifyConfig.smoke(optimizer="sam", amp="fp16", device="cuda"), *digits,
            progress=False,
        )  # fmt: skip
        assert math.isfinite(result.final_train_loss)
        return
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device.*bf16"):
        train_classifier(ClassifyConfig.smoke(amp="fp16"), *digits, progress=False)
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        train_classifier(ClassifyConfig.smoke(sync_bn=True), *digits, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs CUDA")
def test_fp16_resume_is_bitwise_on_cuda(tmp_path, digits) -> None:
    config = ClassifyConfig.smoke(
        optimizer="sam", amp="fp16", device="cuda", epochs=2, deterministic=True
    )
    straight = train_classifier(config, *digits, progress=False)

    def stop(metrics) -> None:
        raise _Interrupted

    with pytest.raises(_Interrupted):
        train_classifier(config, *digits, progress=False, output_dir=tmp_path, callback=stop)
    resumed = train_classifier(config, *digits, progress=False, output_dir=tmp_path)
    assert _states_equal(straight.model_state, resumed.model_state)


def test_sam_is_not_worse_than_sgd_on_digits_over_three_seeds() -> None:
    """Mean test accuracy of 3 seeds: SAM >= SGD - 1 point (5 epochs of the digits MLP)."""
    means = {}
    for optimizer in ("sgd", "sam"):
        accs = []
        for seed in range(3):
            data = load_digits(seed=seed)
            config = ClassifyConfig(
                model="digits_mlp", optimizer=optimizer, epochs=5, seed=seed, device="cpu",
                threads=1, lr=0.1,
            )  # fmt: skip
            train = (data.x_train, data.y_train)
            accs.append(
                train_classifier(config, train, (data.x_test, data.y_test), progress=False)
                .final_test_acc
            )  # fmt: skip
        means[optimizer] = sum(accs) / 3
    assert means["sgd"] > 0.9, means  # both trained
    assert means["sam"] >= means["sgd"] - 0.01, means
