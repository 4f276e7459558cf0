"""Directions for loss surfaces: normalisation, seeds, targets, PCA and direction files."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape.directions import (
    Directions,
    create_directions,
    direction_targets,
    load_directions,
    load_trajectory,
    pca_directions,
    project_trajectory,
    random_direction,
    save_directions,
)


class SmallNet(nn.Module):
    """Conv + BatchNorm + embedding + linear: every kind of tensor a direction meets."""

    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.embed = nn.Embedding(5, 6)
        self.fc = nn.Linear(width, classes)
        self.scale = nn.Parameter(torch.tensor(1.5))  # a 0-dim parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.scale * self.fc(h)


def make_net(seed: int = 0, **kwargs: int) -> SmallNet:
    torch.manual_seed(seed)
    net = SmallNet(**kwargs)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
        net.bn.num_batches_tracked.fill_(7)
    return net


def flat(direction: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in direction.values()])


# --------------------------------------------------------------------------------------------
# random_direction
# --------------------------------------------------------------------------------------------


def test_filter_normalisation_matches_every_filter_norm() -> None:
    net = make_net()
    d = random_direction(net, seed=3)
    assert list(d) == [n for n, _ in net.named_parameters()]
    for name, w in net.named_parameters():
        assert d[name].dtype == torch.float32 and d[name].device.type == "cpu"
        assert d[name].shape == w.shape
        if w.ndim <= 1:
            continue
        d_rows = d[name].reshape(w.shape[0], -1).norm(dim=1)
        w_rows = w.detach().reshape(w.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(d_rows, w_rows, rtol=1e-5, atol=0)
    # conv filters, linear rows and embedding rows were all covered
    assert {"conv.weight", "fc.weight", "embed.weight"} <= set(d)


def test_biasbn_entries_are_exactly_zero() -> None:
    net = make_net()
    d = random_direction(net, seed=1, ignore="biasbn")
    one_d = [n for n, w in net.named_parameters() if w.ndim <= 1]
    assert set(one_d) == {"conv.bias", "bn.weight", "bn.bias", "fc.bias", "scale"}
    for name in one_d:
        assert torch.count_nonzero(d[name]) == 0


@pytest.mark.parametrize("ignore", ["none", ""])
def test_ignore_none_copies_the_weights_for_1d_tensors(ignore: str) -> None:
    net = make_net()
    d = random_direction(net, seed=1, ignore=ignore)
    for name, w in net.named_parameters():
        if w.ndim <= 1:
            assert torch.equal(d[name], w.detach())
            assert d[name].data_ptr() != w.data_ptr()  # a copy, not the parameter itself


def test_layer_weight_and_none_normalisation_closed_forms() -> None:
    net = make_net()
    raw = random_direction(net, seed=5, norm="none")
    layer = random_direction(net, seed=5, norm="layer")
    weight = random_direction(net, seed=5, norm="weight")
    for name, w in net.named_parameters():
        if w.ndim <= 1:
            continue
        w = w.detach()
        torch.testing.assert_close(layer[name].norm(), w.norm(), rtol=1e-6, atol=0)
        expected = raw[name] * (w.norm() / (raw[name].norm() + 1e-10))
        torch.testing.assert_close(layer[name], expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(weight[name], raw[name] * w, rtol=0, atol=0)
    # raw N(0, 1): roughly unit variance over all weight matrices
    values = torch.cat([raw[n].reshape(-1) for n, w in net.named_parameters() if w.ndim > 1])
    assert 0.6 < float(values.std()) < 1.4


def test_seed_determines_the_direction() -> None:
    net = make_net()
    a = random_direction(net, seed=11)
    b = random_direction(net, seed=11)
    c = random_direction(net, seed=12)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["conv.weight"], c["conv.weight"])
    # the global RNG is neither used nor disturbed
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    random_direction(net, seed=11)
    assert torch.equal(torch.rand(3), before)


def test_direction_does_not_depend_on_model_dtype() -> None:
    net = make_net()
    net64 = make_net().double()
    for norm in ("filter", "layer", "weight"):
        a = random_direction(net, seed=2, norm=norm, ignore="none", dir_type="states")
        b = random_direction(net64, seed=2, norm=norm, ignore="none", dir_type="states")
        assert list(a) == list(b)
        for name in a:
            assert b[name].dtype == torch.float32
            assert torch.equal(a[name], b[name]), (norm, name)


def test_states_mode_covers_bn_statistics_and_skips_integer_buffers() -> None:
    net = make_net()
    targets = direction_targets(net, "states")
    assert "bn.running_mean" in targets and "bn.running_var" in targets
    assert "bn.num_batches_tracked" not in targets
    assert list(targets) == [k for k in net.state_dict() if k != "bn.num_batches_tracked"]
    assert list(direction_targets(net)) == [n for n, _ in net.named_parameters()]

    d = random_direction(net, seed=0, dir_type="states", ignore="none")
    assert "bn.num_batches_tracked" not in d
    assert torch.equal(d["bn.running_var"], net.bn.running_var)
    d0 = random_direction(net, seed=0, dir_type="states")
    assert torch.count_nonzero(d0["bn.running_mean"]) == 0


def test_tied_parameters_appear_once() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    net[1].weight = net[0].weight
    assert list(direction_targets(net, "weights")) == ["0.weight", "0.bias", "1.bias"]
    assert list(direction_targets(net, "states")) == ["0.weight", "0.bias", "1.bias"]


def test_invalid_options_raise() -> None:
    net = make_net()
    with pytest.raises(ValueError, match="norm"):
        random_direction(net, seed=0, norm="filtre")
    with pytest.raises(ValueError, match="ignore"):
        random_direction(net, seed=0, ignore="bias")
    with pytest.raises(ValueError, match="dir_type"):
        random_direction(net, seed=0, dir_type="buffers")
    with pytest.raises(ValueError, match="seed"):
        random_direction(net, seed=None)


# --------------------------------------------------------------------------------------------
# create_directions
# --------------------------------------------------------------------------------------------


def test_create_directions_random_2d_and_meta() -> None:
    net = make_net()
    dirs = create_directions(net, seed=4)
    assert dirs.ndim == 2 and dirs.names() == [n for n, _ in net.named_parameters()]
    assert dirs.meta["kind"] == "random" and dirs.meta["seed"] == 4
    assert (dirs.meta["xnorm"], dirs.meta["xignore"]) == ("filter", "biasbn")
    # x first, then y, from one generator
    g = torch.Generator().manual_seed(4)
    x = random_direction(net, seed=None, generator=g)
    y = random_direction(net, seed=None, generator=g)
    assert all(torch.equal(dirs.x[n], x[n]) and torch.equal(dirs.y[n], y[n]) for n in x)
    cos = float(flat(x) @ flat(y) / (flat(x).norm() * flat(y).norm()))
    assert dirs.meta["cosine"] == pytest.approx(cos, abs=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dirs.y = None  # type: ignore[misc]

    one = create_directions(net, seed=4, ndim=1)
    assert one.ndim == 1 and one.y is None and one.meta["cosine"] is None
    assert all(torch.equal(one.x[n], x[n]) for n in x)
    same = create_directions(net, seed=4, same_dir=True)
    assert all(torch.equal(same.x[n], same.y[n]) for n in x)


def test_orthogonalize_makes_y_orthogonal_and_keeps_its_norm() -> None:
    net = make_net(width=8)
    plain = create_directions(net, seed=9, ynorm="layer")
    ortho = create_directions(net, seed=9, ynorm="layer", orthogonalize=True)
    x, y, y0 = flat(ortho.x), flat(ortho.y), flat(plain.y)
    assert torch.equal(x, flat(plain.x))
    assert abs(float(x @ y / (x.norm() * y.norm()))) < 1e-6
    assert float(y.norm()) == pytest.approx(float(y0.norm()), rel=1e-6)
    assert ortho.meta["orthogonalized"] is True
    assert ortho.meta["cosine"] == pytest.approx(plain.meta["cosine"], abs=1e-12)
    assert abs(plain.meta["cosine"]) > 1e-6  # there was something to remove
    # biasbn zeros survive Gram-Schmidt
    assert torch.count_nonzero(ortho.y["fc.bias"]) == 0


def test_interpolation_direction_is_the_exact_difference() -> None:
    net, net2, net3 = make_net(0), make_net(1), make_net(2)
    for model2 in (net2, net2.state_dict(), {"model": net2.state_dict(), "epoch": 3}):
        dirs = create_directions(net, ndim=1, model2=model2)
        assert dirs.meta["kind"] == "interpolation" and dirs.meta["xnorm"] == "none"
        for name, p in net.named_parameters():
            expected = dict(net2.named_parameters())[name].detach() - p.detach()
            assert torch.equal(dirs.x[name], expected), name

    plane = create_directions(net, model2=net2, model3=net3, dir_type="states")
    assert plane.meta["kind"] == "plane" and plane.dir_type == "states"
    assert "bn.num_batches_tracked" not in plane.x
    assert torch.equal(plane.y["bn.running_var"], net3.bn.running_var - net.bn.running_var)
    assert torch.equal(plane.x["conv.weight"], net2.conv.weight - net.conv.weight)

    with pytest.raises(ValueError, match=r"model2\['conv\.weight'\] has shape \(5, 2, 3, 3\)"):
        create_directions(net, model2=make_net(width=5))
    with pytest.raises(ValueError, match="model3 has no entry 'scale'"):
        create_directions(net, model2=net2, model3={"epoch": 1, "model": {}})


# --------------------------------------------------------------------------------------------
# PCA and trajectories
# --------------------------------------------------------------------------------------------


def _plane_trajectory(net: nn.Module, n_states: int = 12) -> tuple[list, dict, dict, np.ndarray]:
    """States final + a_t e1 + b_t e2 (e1, e2 non-orthogonal; 1-D tensors fixed)."""
    g = torch.Generator().manual_seed(0)
    final = {k: v.clone() for k, v in net.state_dict().items()}
    params = dict(net.named_parameters())

    def rand_dir() -> dict[str, torch.Tensor]:
        return {
            n: (torch.randn(p.shape, generator=g) if p.ndim > 1 else torch.zeros(p.shape))
            for n, p in params.items()
        }

    e1, e2 = rand_dir(), rand_dir()
    e2 = {n: e2[n] + 0.5 * e1[n] for n in e2}
    t = np.linspace(0, 1, n_states)
    coords = np.stack([np.cos(3 * t) * (1 - t), np.sin(2 * t) * (1 - t) ** 2], axis=1)
    coords[-1] = 0.0
    states = []
    for a, b in coords:
        s = {k: v.clone() for k, v in final.items()}
        for n in params:
            s[n] = final[n] + float(a) * e1[n] + float(b) * e2[n]
        states.append(s)
    return states, e1, e2, coords


def test_pca_recovers_the_plane_of_a_planar_trajectory() -> None:
    net = make_net()
    states, e1, e2, _ = _plane_trajectory(net)
    dirs, path = pca_directions(states, model=net)
    assert dirs.meta["kind"] == "pca" and dirs.ndim == 2
    assert dirs.names() == [n for n, _ in net.named_parameters()]
    ratio = dirs.meta["explained_variance_ratio"]
    assert len(ratio) == 2 and sum(ratio) == pytest.approx(1.0, abs=1e-6)
    assert ratio[0] >= ratio[1] > 0
    d1, d2 = flat(dirs.x), flat(dirs.y)
    assert float(d1.norm()) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(d1 @ d2)) < 1e-6
    basis = torch.stack([d1, d2], dim=1)
    for e in (flat(e1), flat(e2)):  # e1 and e2 lie in span(d1, d2)
        residual = e - basis @ (basis.T @ e)
        assert float(residual.norm()) < 1e-5 * float(e.norm())
    # projected coordinates reproduce the path
    assert path.shape == (len(states), 2)
    centre = states[-1]
    for s, (a, b) in zip(states, path):
        diff = flat({n: s[n] - centre[n] for n in dirs.names()})
        assert float((diff - a * d1 - b * d2).norm()) < 1e-5 * max(1.0, float(diff.norm()))
    # biasbn: 1-D tensors have zero direction
    assert torch.count_nonzero(dirs.x["bn.weight"]) == 0
    # project_trajectory agrees with the PCA projection (orthonormal directions)
    for method in ("cos", "lstsq"):
        proj = project_trajectory(dirs, centre, states, method=method)
        np.testing.assert_allclose(proj, path, rtol=0, atol=1e-5)


def test_pca_without_model_skips_bn_statistics() -> None:
    net = make_net()
    states, *_ = _plane_trajectory(net, n_states=5)
    dirs, _ = pca_directions(states)
    assert dirs.names() == [n for n, _ in net.named_parameters()]
    states_dirs, _ = pca_directions(states, dir_type="states")
    assert "bn.running_mean" in states_dirs.x and "bn.num_batches_tracked" not in states_dirs.x
    with pytest.raises(ValueError, match="at least 3"):
        pca_directions(states[:2])


def test_load_trajectory_natural_order(tmp_path) -> None:
    net = make_net()
    states, *_ = _plane_trajectory(net, n_states=11)
    for i, s in enumerate(states):
        payload = {"model": s, "epoch": i} if i % 2 else s  # samlab checkpoint or state_dict
        torch.save(payload, tmp_path / f"model_{i}.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    loaded = load_trajectory(tmp_path)
    assert len(loaded) == 11
    for s, l in zip(states, loaded):  # model_10 after model_9
        assert torch.equal(s["conv.weight"], l["conv.weight"])
    with pytest.raises(ValueError, match="no checkpoint"):
        load_trajectory(tmp_path, pattern="*.t7")
    with pytest.raises(ValueError, match="does not exist"):
        load_trajectory(tmp_path / "missing")


def test_project_trajectory_lstsq_gives_grid_coordinates() -> None:
    net = make_net()
    dirs = create_directions(net, seed=1)
    centre = net.state_dict()
    coords = np.array([[0.3, -0.2], [-1.0, 0.5], [0.0, 0.0]])
    states = [
        {n: centre[n] + float(a) * dirs.x[n] + float(b) * dirs.y[n] for n in dirs.names()}
        for a, b in coords
    ]
    np.testing.assert_allclose(project_trajectory(dirs, net, states), coords, atol=1e-5)
    one = create_directions(net, seed=1, ndim=1)
    states1 = [{n: centre[n] + 0.7 * one.x[n] for n in one.names()}]
    np.testing.assert_allclose(project_trajectory(one, centre, states1), [[0.7]], atol=1e-5)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_bit_exact(tmp_path) -> None:
    net = make_net()
    for dirs in (
        create_directions(net, seed=3, orthogonalize=True),
        create_directions(net, seed=3, ndim=1, dir_type="states"),
    ):
        path = tmp_path / f"dirs_{dirs.ndim}.h5"
        save_directions(path, dirs)
        loaded = load_directions(path)
        assert loaded.names() == dirs.names() and loaded.dir_type == dirs.dir_type
        assert loaded.meta == dirs.meta
        pairs = [(dirs.x, loaded.x)] + ([(dirs.y, loaded.y)] if dirs.y is not None else [])
        for a, b in pairs:
            for n in a:
                assert b[n].dtype == torch.float32
                assert torch.equal(a[n], b[n]), n
        checked = load_directions(path, net)
        assert checked.names() == dirs.names()
    pca, _ = pca_directions(_plane_trajectory(net, n_states=4)[0], model=net)
    save_directions(tmp_path / "pca.h5", pca)
    with h5py.File(tmp_path / "pca.h5", "r") as f:  # loss-landscape's plot_2D reads these
        np.testing.assert_allclose(
            f["explained_variance_ratio_"][()], pca.meta["explained_variance_ratio"]
        )
    assert load_directions(tmp_path / "pca.h5").meta == pca.meta


def test_loss_landscape_positional_file_maps_to_parameter_order(tmp_path) -> None:
    net = make_net()
    params = list(net.named_parameters())
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(p.shape).astype(np.float32) for _, p in params]
    ys = [rng.standard_normal(p.shape).astype(np.float32) for _, p in params]
    path = tmp_path / "model_300.t7_weights_xignore=biasbn_xnorm=filter.h5"
    with h5py.File(path, "w") as f:
        for group, arrays in (("xdirection", xs), ("ydirection", ys)):
            grp = f.create_group(group)
            for i, a in enumerate(arrays):
                grp.create_dataset(str(i), data=a)
    dirs = load_directions(path, net)
    assert dirs.dir_type == "weights" and dirs.ndim == 2 and dirs.meta["kind"] == "file"
    assert dirs.names() == [n for n, _ in params]
    for (name, _), a, b in zip(params, xs, ys):
        assert np.array_equal(dirs.x[name].numpy(), a)
        assert np.array_equal(dirs.y[name].numpy(), b)
    with pytest.raises(ValueError, match="pass model="):
        load_directions(path)

    # states layout: every state_dict entry by position, num_batches_tracked dropped
    entries = list(net.state_dict().items())
    states_path = tmp_path / "states.h5"
    with h5py.File(states_path, "w") as f:
        grp = f.create_group("xdirection")
        for i, (_, v) in enumerate(entries):
            grp.create_dataset(str(i), data=np.full(v.shape, i, dtype=np.float32))
    sdirs = load_directions(states_path, net)
    assert sdirs.dir_type == "states" and sdirs.ndim == 1
    assert "bn.num_batches_tracked" not in sdirs.x
    for i, (name, _) in enumerate(entries):
        if name != "bn.num_batches_tracked":
            assert torch.all(sdirs.x[name] == i)


def test_direction_file_from_another_architecture_is_rejected(tmp_path) -> None:
    path = tmp_path / "dirs.h5"
    save_directions(path, create_directions(make_net(width=4), seed=0))
    with pytest.raises(ValueError, match=r"conv\.weight.*another architecture"):
        load_directions(path, make_net(width=5))
    other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="another architecture"):
        load_directions(path, other)
    with pytest.raises(ValueError, match="holds 'weights'"):
        load_directions(path, make_net(), dir_type="states")

    positional = tmp_path / "ll.h5"
    with h5py.File(positional, "w") as f:
        grp = f.create_group("xdirection")
        grp.create_dataset("0", data=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="another architecture"):
        load_directions(positional, make_net())


def test_corrupt_foreign_and_missing_files_raise_value_error(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="corrupt.h5"):
        load_directions(corrupt)
    foreign = tmp_path / "surface.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("xcoordinates", data=np.linspace(-1, 1, 5))
    with pytest.raises(ValueError, match="surface.h5.*not a direction file"):
        load_directions(foreign)
    with pytest.raises(ValueError, match="missing.h5"):
        load_directions(tmp_path / "missing.h5")


def test_directions_value_checks() -> None:
    x = {"w": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="dir_type"):
        Directions(x=x, y=None, dir_type="params", meta={})
    with pytest.raises(ValueError, match="same names"):
        Directions(x=x, y={"v": torch.zeros(2, 2)}, dir_type="weights", meta={})
    d = Directions(x=x, y=None, dir_type="weights", meta={"kind": "random"})
    assert d.ndim == 1 and d.names() == ["w"]


def test_public_names_of_landscape_directions() -> None:
    """``landscape.directions``'s public names (``__all__``, the constants included) are the
    objects its modules define."""
    import landscape.directions as directions
    import landscape.directions.create as create
    import landscape.directions.files as files
    import landscape.directions.pca as pca
    import landscape.directions.value as value

    for module, names in (
        (value, ("Directions", "direction_targets", "DIR_TYPES", "NORMS", "IGNORES", "KINDS")),
        (create, ("random_direction", "create_directions")),
        (pca, ("load_trajectory", "pca_directions", "project_trajectory")),
        (files, ("load_directions", "save_directions", "SCHEMA_VERSION")),
    ):
        for name in names:
            assert getattr(directions, name) is getattr(module, name), name
            assert name in directions.__all__, name
    for name in directions.__all__:
        assert not name.startswith("_") and hasattr(directions, name), name
