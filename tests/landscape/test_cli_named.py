"""Bare ``--model`` / ``--dataset`` names (entry points) and the device rule of the CLI.

The registered names come from a table handed to ``main(names=...)`` (no installed package is
needed); the factories record how they were called, so the call conventions are checked.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("h5py")

from landscape.cli import main  # noqa: E402
from landscape.cli.named import NamedFactories  # noqa: E402
from landscape.devices import NO_CUDA_NOTE, resolve_device  # noqa: E402

HERE = Path(__file__).resolve().parent
CALLS: list[tuple[str, dict]] = []


def model_factory(config=None, **kwargs):
    import _factories

    CALLS.append(("model", {"config": config, **kwargs}))
    return _factories.cnn()


def data_factory(name=None, config=None, split="train", **kwargs):
    import _factories

    CALLS.append(("data", {"name": name, "config": config, "split": split, **kwargs}))
    return _factories.data() if split == "train" else _factories.test_data()


def picky_model(config=None, **kwargs):
    if config is None and "width" not in kwargs:
        raise ValueError("a plain state_dict needs --model_kwargs '{\"width\": 4}'")
    return model_factory(config, **kwargs)


NAMES = NamedFactories(
    {
        "landscape.models": {"cnn": model_factory, "picky": picky_model},
        "landscape.datasets": {"toy": data_factory, "alias": f"{__name__}:data_factory"},
    }
)


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    shutil.copy(HERE / "_factories.py", tmp_path / "_factories.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(key, raising=False)
    CALLS.clear()
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)


def checkpoint(path: Path, config=None) -> Path:
    import _factories

    state = _factories.cnn().state_dict()
    torch.save(state if config is None else {"model": state, "config": config}, path)
    return path


def run(*argv, names=NAMES):
    base = ["surface", "--x=-1:1:3", "--threads", "1", "--no_progress", "--batch_size", "64"]
    return main([*base, *map(str, argv)], prog="landscape", names=names)


def test_named_model_and_dataset_get_the_checkpoint_config_and_split(capsys) -> None:
    ckpt = checkpoint(Path("c.pt"), config={"kind": "toy", "width": 4})
    code = run("--model", "cnn", "--model_file", ckpt, "--dataset", "toy", "--dataset_name",
               "part1", "--test_data", "alias", "--data_kwargs", '{"extra": 1}',
               "--surf_file", "s.h5")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = {"kind": "toy", "width": 4}
    assert ("model", {"config": config}) in CALLS
    assert ("data", {"name": "part1", "config": config, "split": "train", "extra": 1}) in CALLS
    assert ("data", {"name": "part1", "config": config, "split": "test", "extra": 1}) in CALLS


def test_data_wins_over_dataset_and_dataset_name_alone_is_the_name(capsys) -> None:
    code = run("--model", "cnn", "--data", "_factories:data", "--dataset", "toy",
               "--surf_file", "a.h5")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "note: --dataset is ignored; the data come from --data" in out
    assert not [c for c in CALLS if c[0] == "data"]
    assert run("--model", "cnn", "--dataset_name", "toy", "--surf_file", "b.h5") == 0
    assert ("data", {"name": None, "config": None, "split": "train"}) in CALLS


def test_unknown_names_list_the_registered_ones(capsys) -> None:
    assert run("--model", "nosuch", "--dataset", "toy") == 1
    err = capsys.readouterr().err
    assert "--model nosuch: no such registered name" in err and "registered: cnn, picky" in err
    assert run("--model", "cnn", "--dataset", "nodata") == 1
    assert "registered: alias, toy" in capsys.readouterr().err
    assert run("--model", "cnn", "--dataset", "toy", names=NamedFactories({})) == 1
    assert "no installed package registers any" in capsys.readouterr().err
    assert run("--model", "cnn") == 1
    assert "--data MODULE:FACTORY or --dataset NAME" in capsys.readouterr().err


def test_factory_errors_are_one_line_and_name_the_flag(capsys) -> None:
    ckpt = checkpoint(Path("plain.pt"))
    assert run("--model", "picky", "--model_file", ckpt, "--dataset", "toy") == 1
    err = capsys.readouterr().err
    assert "--model picky: a plain state_dict needs --model_kwargs" in err
    assert "Traceback" not in err
    code = run("--model", "picky", "--model_kwargs", '{"width": 4}', "--model_file", ckpt,
               "--dataset", "toy", "--surf_file", "p.h5")  # fmt: skip
    assert code == 0


def test_device_rule(capsys) -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"--device cuda:{count}"):
        resolve_device(f"cuda:{count}")
    assert run("--model", "cnn", "--dataset", "toy", "--device", f"cuda:{count}") == 1
    assert f"--device cuda:{count}" in capsys.readouterr().err
    if count:
        pytest.skip("a CUDA device is present: --cuda uses it")
    notes: list[str] = []
    assert resolve_device(None, True, note=notes.append) == torch.device("cpu")
    assert notes == [NO_CUDA_NOTE]
    code = run("--model", "cnn", "--dataset", "toy", "--cuda", "--surf_file", "c.h5")
    assert code == 0 and NO_CUDA_NOTE in capsys.readouterr().out
