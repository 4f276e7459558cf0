"""A checkpoint of ``python -m samlab.train.classify`` as the landscape command line's input.

``--model classifier --dataset samlab_images`` (samlab.train.classify.inputs) and the image
names (``--model digits_cnn``) read the run's config; the names are handed to
``landscape.cli.main(names=...)`` as pyproject.toml registers them (a table of its
``module:attr`` strings), so the real factories are loaded the way the entry points load them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import torch
import torch.nn.functional as F

h5py = pytest.importorskip("h5py")

from landscape.cli import main as landscape_main  # noqa: E402
from landscape.cli.named import DATA_GROUP, MODEL_GROUP, NamedFactories  # noqa: E402
from samlab.datasets import load_digits  # noqa: E402
from samlab.train.classify.cli import main as classify_main  # noqa: E402
from samlab.train.classify.inputs import classifier_model, classify_data  # noqa: E402
from samlab.train.landscape_names import digits_cnn, digits_data, digits_mlp  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def registered() -> NamedFactories:
    """pyproject.toml's entry points as a table (``module:attr`` strings, loaded on use)."""
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    return NamedFactories({g: dict(groups[g]) for g in (MODEL_GROUP, DATA_GROUP)})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One epoch of SAM on the digits, capped at 3 steps, seed 1 (not the default split)."""
    out = tmp_path_factory.mktemp("classify") / "run"
    status = classify_main(
        ["--dataset", "digits", "--model", "digits_cnn", "--opt", "sam-sgd", "--epochs", "1",
         "--steps-per-epoch", "3", "--seed", "1", "--device", "cpu", "--threads", "1",
         "--quiet", "--output", str(out)]
    )  # fmt: skip
    assert status == 0
    return out


def surface(run_dir: Path, tmp_path: Path, *flags: str) -> list[str]:
    return [
        "surface", "--model_file", str(run_dir / "last.pt"), "--x=-1:1:3", "--y=-1:1:3",
        "--subset", "64", "--surf_file", str(tmp_path / "surf.h5"), "--no_progress", *flags,
    ]  # fmt: skip


def centre_loss(run_dir: Path, indices) -> float:
    """The cross-entropy of the saved model at the evaluated training samples, by hand."""
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    model = classifier_model(config=checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    data = load_digits(seed=1)
    index = torch.as_tensor(indices, dtype=torch.long)
    with torch.no_grad():
        model.eval()
        return float(F.cross_entropy(model(data.x_train[index]), data.y_train[index]))


@pytest.mark.parametrize(
    "names", [("classifier", "samlab_images"), ("digits_cnn", "digits")], ids=["generic", "image"]
)
def test_surface_of_a_classify_checkpoint_needs_no_code(run_dir, tmp_path, names, capsys):
    model, dataset = names
    args = surface(run_dir, tmp_path, "--model", model, "--dataset", dataset)
    assert landscape_main(args, names=registered()) == 0, capsys.readouterr().err
    with h5py.File(tmp_path / "surf.h5") as f:
        loss = f["train_loss"][()]
        indices = f["train_indices"][()]
    assert loss.shape == (3, 3) and len(indices) == 64
    assert loss[1, 1] == pytest.approx(centre_loss(run_dir, indices), rel=1e-5, abs=1e-6)
    assert loss.min() < loss[0, 0]  # the corners of a trained model lie higher


def test_data_factory_gives_the_runs_split(run_dir) -> None:
    config = torch.load(run_dir / "last.pt", weights_only=True)["config"]
    data = load_digits(seed=1)
    x, y = classify_data(config=config, split="test", limit=7)
    assert torch.equal(x, data.x_test[:7]) and torch.equal(y, data.y_test[:7])
    x, y = classify_data(config=config)
    assert torch.equal(x, data.x_train) and torch.equal(y, data.y_train)
    assert torch.equal(digits_data(config=config)[0], data.x_train)  # the run's seed, too
    assert not torch.equal(classify_data(name="digits")[0], data.x_train)  # seed 0: another
    with pytest.raises(ValueError, match="trained on digits"):
        classify_data(name="CIFAR10", config=config)
    with pytest.raises(ValueError, match="--dataset_name"):
        classify_data()


def test_checkpoints_of_another_kind_name_the_right_model(run_dir, tmp_path, capsys) -> None:
    config = torch.load(run_dir / "last.pt", weights_only=True)["config"]
    with pytest.raises(ValueError, match="digits_cnn.*not a digits_mlp; use --model classifier"):
        digits_mlp(config=config)
    with pytest.raises(ValueError, match=r"use --model classifier \(or --model resnet20\)"):
        digits_cnn(config={**config, "model": "resnet20_cifar", "model_kwargs": {"shortcut": "B"}})
    with pytest.raises(ValueError, match="--model_kwargs"):
        classifier_model(config=config, width=3)
    with pytest.raises(ValueError, match="plain state_dict.*--model digits_cnn"):
        classifier_model(config=None)
    with pytest.raises(ValueError, match="trained on cifar10.*--dataset samlab_images"):
        digits_data(config={**config, "dataset": "cifar10"})
    forecast = {"model": "samformer", "dataset": "ETTh1", "horizon": 96, "seq_len": 512}
    with pytest.raises(ValueError, match="use --model samformer --dataset samformer_datasets"):
        classifier_model(config=forecast)
    with pytest.raises(ValueError, match="samformer_datasets"):
        classify_data(config=forecast)
    # through the command line: a classify checkpoint given to the forecaster, and the other way
    args = surface(run_dir, tmp_path, "--model", "samformer", "--dataset", "samlab_images")
    assert landscape_main(args, names=registered()) == 1
    err = capsys.readouterr().err
    assert "written by samlab.train.classify" in err and "use --model classifier" in err
    other = tmp_path / "forecast.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": forecast}, other)
    args = surface(run_dir, tmp_path, "--model", "classifier", "--dataset", "samlab_images")
    args[args.index("--model_file") + 1] = str(other)
    assert landscape_main(args, names=registered()) == 1
    assert "use --model samformer --dataset samformer_datasets" in capsys.readouterr().err
