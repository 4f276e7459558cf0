"""WeightMasks: which weights are prunable, magnitude and ERK masks at exact sparsity, applying
them, and their state."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from samlab.models import WeightMasks, prunable_weights, resnet20_cifar, resnet32_cifar
from samlab.models.sparsity import erk_densities


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 16, 3),
        nn.Conv2d(16, 16, 1),
        nn.Flatten(),
        nn.Linear(16, 12),
        nn.Linear(12, 10),
    )


def test_prunable_weights_are_s2sams_irregular_set() -> None:
    """S^2-SAM's ResNet-32 profile prunes the 30 block convs: not the stem, not the classifier."""
    names = [name for name, _ in prunable_weights(resnet32_cifar())]
    expected = [
        f"stages.{stage}.{block}.conv{conv}.weight"
        for stage in range(3)
        for block in range(5)
        for conv in (1, 2)
    ]
    assert names == expected
    everything = [name for name, _ in prunable_weights(resnet32_cifar(), dense_ends=False)]
    assert everything == ["conv1.weight", *expected, "fc.weight"]


def test_prunable_weights_skip_biases_and_norms_and_accept_names() -> None:
    model = small_net()
    names = [name for name, _ in prunable_weights(model, dense_ends=False)]
    assert names == ["0.weight", "2.weight", "3.weight", "5.weight", "6.weight"]
    chosen = prunable_weights(model, names=["2.weight", "5.weight"])
    assert [n for n, _ in chosen] == ["2.weight", "5.weight"]
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        prunable_weights(model, names=["nope"])
    with pytest.raises(ValueError, match="only weights are pruned"):
        prunable_weights(model, names=["1.weight"])  # BatchNorm's 1-D weight
    with pytest.raises(ValueError, match="no prunable weights"):
        prunable_weights(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.987])
def test_global_magnitude_keeps_exactly_the_largest(sparsity: float) -> None:
    model = resnet20_cifar()
    weights = prunable_weights(model)
    total = sum(w.numel() for _, w in weights)
    before = torch.cat([w.detach().abs().flatten() for _, w in weights])
    masks = WeightMasks.magnitude(model, sparsity)
    keep = math.floor(round((1 - sparsity) * total, 6))
    kept = torch.cat([masks.mask(n).flatten() for n, _ in weights])
    assert int(kept.sum()) == keep
    assert masks.density() == pytest.approx(keep / total, abs=0)
    if 0 < keep < total:
        assert before[kept].min() >= before[~kept].max()
    masks.apply(model)
    after = torch.cat([w.detach().flatten() for _, w in weights])
    assert torch.equal(after == 0, ~kept)
    assert torch.equal(after[kept], torch.cat([w.detach().flatten() for _, w in weights])[kept])


def test_layer_magnitude_prunes_each_layer_to_the_sparsity() -> None:
    model = small_net()
    masks = WeightMasks.magnitude(model, 0.75, scope="layer", dense_ends=False)
    for name, weight in prunable_weights(model, dense_ends=False):
        mask = masks.mask(name)
        assert int(mask.sum()) == math.floor(0.25 * weight.numel())
        scores = weight.detach().abs()
        assert scores[mask].min() >= scores[~mask].max()
    with pytest.raises(ValueError, match="scope must be one of global, layer"):
        WeightMasks.magnitude(model, 0.5, scope="tensor")


def test_magnitude_is_exact_with_ties() -> None:
    model = small_net()
    with torch.no_grad():
        for _, weight in prunable_weights(model, dense_ends=False):
            weight.fill_(0.5)
    masks = WeightMasks.magnitude(model, 0.3, dense_ends=False)
    total = sum(w.numel() for _, w in prunable_weights(model, dense_ends=False))
    assert sum(int(masks.mask(n).sum()) for n in masks) == math.floor(0.7 * total)


def test_erk_densities_by_hand() -> None:
    """Two linear layers 10x10 and 100x100: raw densities 0.2 and 0.02."""
    eps = 0.1 * 10_100 / (0.2 * 100 + 0.02 * 10_000)
    assert erk_densities([(10, 10), (100, 100)], 0.9) == pytest.approx([0.2 * eps, 0.02 * eps])
    # at 50% the small layer would exceed density 1: it goes dense, eps is recomputed
    assert erk_densities([(10, 10), (100, 100)], 0.5) == pytest.approx([1.0, 0.02 * 4950 / 200])


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.95])
def test_erk_is_exact_and_follows_the_formula(sparsity: float) -> None:
    model = resnet20_cifar()
    for dense_ends in (True, False):
        weights = prunable_weights(model, dense_ends=dense_ends)
        masks = WeightMasks.erk(
            model, sparsity, generator=torch.Generator().manual_seed(0), dense_ends=dense_ends
        )
        assert masks.names == [n for n, _ in weights]
        total = sum(w.numel() for _, w in weights)
        kept = sum(int(masks.mask(n).sum()) for n, _ in weights)
        assert kept == math.floor(round((1 - sparsity) * total, 6))
    # per layer: density = min(1, eps * sum(shape) / numel), one eps for the non-dense layers
    raw = {n: sum(w.shape) / w.numel() for n, w in weights}
    sparse = {n: w.numel() for n, w in weights if masks.density(n) < 1}
    eps_values = [masks.density(n) / raw[n] for n in sparse]
    eps = sum(eps_values) / len(eps_values)
    for name, weight in weights:
        expected = min(1.0, eps * raw[name])
        assert abs(masks.density(name) - expected) <= 1.5 / weight.numel() + 1e-3 * expected
    dense = [n for n, _ in weights if n not in sparse]
    if dense:  # dense layers are those of largest raw density
        assert min(raw[n] for n in dense) >= max(raw[n] for n in sparse)


def test_erk_is_seeded_and_random() -> None:
    model = resnet20_cifar()

    def draw(seed: int) -> WeightMasks:
        return WeightMasks.erk(model, 0.9, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(1), draw(1), draw(2)
    assert all(torch.equal(first.mask(n), again.mask(n)) for n in first)
    assert any(not torch.equal(first.mask(n), other.mask(n)) for n in first)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.5"])
def test_sparsity_is_validated(bad) -> None:
    with pytest.raises(ValueError, match="sparsity"):
        WeightMasks.magnitude(small_net(), bad)
    with pytest.raises(ValueError, match="sparsity"):
        WeightMasks.erk(small_net(), bad)


def test_state_dict_round_trip_through_torch_save() -> None:
    model = resnet20_cifar()
    masks = WeightMasks.erk(model, 0.8, generator=torch.Generator().manual_seed(3))
    buffer = io.BytesIO()
    torch.save({"weight_mask": masks.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["weight_mask"]
    restored = WeightMasks.magnitude(resnet20_cifar(), 0.5)  # same layers, other masks
    restored.load_state_dict(state)
    assert restored.method == "erk" and restored.sparsity == 0.8
    assert restored.names == masks.names
    assert all(torch.equal(restored.mask(n), masks.mask(n)) for n in masks)
    empty = WeightMasks({})
    empty.load_state_dict(state)
    assert empty.density() == pytest.approx(masks.density())
    with pytest.raises(ValueError, match="missing"):
        WeightMasks.magnitude(small_net(), 0.5).load_state_dict(state)


def test_apply_to_grads_and_wrong_models() -> None:
    model = small_net()
    masks = WeightMasks.magnitude(model, 0.5, dense_ends=False)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    masks.apply_to_grads(model)
    for name, weight in prunable_weights(model, dense_ends=False):
        assert torch.all(weight.grad[~masks.mask(name)] == 0)
    with pytest.raises(ValueError, match="no parameter"):
        masks.apply(resnet20_cifar())
    assert "density=0.5" in repr(masks)
