"""``samlab.train.save_checkpoint`` / ``load_checkpoint`` (DESIGN.md §6).

A checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``rng``, ``epoch`` and
``config`` that ``torch.load(..., weights_only=True)`` reads; writes are atomic; the resolved
config is saved as JSON beside it; a plain state_dict is accepted; bad files fail clearly.
"""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samlab.optim import LinearRho, create_optimizer
from samlab.train import load_checkpoint, make_closure, rng_state, save_checkpoint, set_rng_state


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    optimizer: str = "gsam"
    lr: float = 0.05
    rho: float = 0.05
    epochs: int = 3
    widths: tuple[int, ...] = (4, 6, 3)


def model_with_bn(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))


def trained(seed=0, steps=3):
    model = model_with_bn(seed)
    opt = create_optimizer(
        "gsam",
        model.parameters(),
        lr=0.05,
        momentum=0.9,
        rho_schedule=LinearRho(rho_max=0.1, total_steps=10),
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=gen), torch.randn(8, 3, generator=gen)
        opt.step(make_closure(model, F.mse_loss, x, y, opt))
        sched.step()
    return model, opt, sched


def assert_tree_equal(a, b, path="ckpt"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_tree_equal(u, v, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_round_trip_with_weights_only(tmp_path):
    model, opt, sched = trained()
    config = TinyConfig()
    path = save_checkpoint(
        tmp_path / "run" / "ckpt.pt",
        model=model,
        optimizer=opt,
        scheduler=sched,
        epoch=3,
        config=config,
    )
    assert path == tmp_path / "run" / "ckpt.pt" and path.is_file()

    raw = torch.load(path, weights_only=True)  # what any tool would do
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "config"} <= set(raw)
    loaded = load_checkpoint(path)
    assert_tree_equal(loaded, raw)
    assert loaded["epoch"] == 3
    assert loaded["config"] == json.loads(json.dumps(dataclasses.asdict(config)))
    assert_tree_equal(loaded["model"], model.state_dict())
    assert_tree_equal(loaded["optimizer"], opt.state_dict())
    assert_tree_equal(loaded["scheduler"], sched.state_dict())
    assert "num_batches_tracked" in "".join(loaded["model"])  # BN buffers travel too

    # restore into fresh objects and continue identically
    model2, opt2, sched2 = trained(seed=5, steps=0)
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    assert opt2.rho_schedule.step_count == opt.rho_schedule.step_count == 3
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    for m, o in ((model, opt), (model2, opt2)):
        o.step(make_closure(m, F.mse_loss, x, y, o))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_rng_state_round_trip(tmp_path):
    model = model_with_bn()
    torch.manual_seed(123)
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model)
    expected = torch.rand(5)
    torch.manual_seed(999)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(5), expected)
    assert set(rng_state()) >= {"torch"}


def test_write_is_atomic_and_leaves_no_tmp(tmp_path):
    path = tmp_path / "ckpt.pt"
    model = model_with_bn()
    save_checkpoint(path, model=model, epoch=1)
    first = path.read_bytes()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    save_checkpoint(path, model=model, epoch=2)  # overwrite in place
    assert path.read_bytes() != first
    assert load_checkpoint(path)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no .tmp, no .json
    assert not list(tmp_path.glob("*.tmp"))


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model_with_bn(), epoch=1)
    before = path.read_bytes()
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        # an extra entry that torch.save cannot pickle makes the write fail midway
        save_checkpoint(path, model=model_with_bn(), epoch=2, extra={"bad": lambda: None})
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no torn .tmp left


def test_json_config_beside_the_checkpoint(tmp_path):
    config = TinyConfig(lr=0.125, widths=(4, 8, 3))
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model_with_bn(), config=config)
    side = tmp_path / "ckpt.json"
    assert side.is_file()
    on_disk = json.loads(side.read_text())
    assert on_disk == {
        "optimizer": "gsam",
        "lr": 0.125,
        "rho": 0.05,
        "epochs": 3,
        "widths": [4, 8, 3],
    }
    assert load_checkpoint(path)["config"] == on_disk
    # a plain dict config works the same way
    save_checkpoint(tmp_path / "b.pt", model=model_with_bn(), config={"seed": 7, "name": "x"})
    assert json.loads((tmp_path / "b.json").read_text()) == {"seed": 7, "name": "x"}


def test_plain_state_dict_is_accepted(tmp_path):
    model = model_with_bn()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(path)
    assert set(loaded) == {"model"}
    assert_tree_equal(loaded["model"], model.state_dict())
    fresh = model_with_bn(seed=3)
    fresh.load_state_dict(loaded["model"])
    for p, q in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_corrupt_file_is_a_value_error_naming_the_path(tmp_path):
    path = tmp_path / "broken.pt"
    save_checkpoint(path, model=model_with_bn())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated, as by a kill mid-copy
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_checkpoint(garbage)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "hook": TinyConfig()}, path)
    with pytest.raises(ValueError, match="unsafe.pt"):
        load_checkpoint(path)


def test_foreign_content_is_a_value_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2), torch.ones(2)], path)
    with pytest.raises(ValueError, match="list.pt"):
        load_checkpoint(path)


def test_missing_file_is_file_not_found(tmp_path):
    path = tmp_path / "nope" / "ckpt.pt"
    with pytest.raises(FileNotFoundError, match="ckpt.pt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path)  # a directory is not a checkpoint file
