"""Sparse SAM (SSAM-F, SSAM-D) against its definitions.

The batched Fisher equals the per-sample loop and the definition in float64, in eval mode
with BatchNorm untouched; sparsity 0 is SAM and sparsity 1 the base optimizer, bit for bit, on
every path; the masks have the pattern's layout and count, live in the optimizer state and
survive a state_dict round trip and a resume; SSAM-D keeps its count and overlap; bad input
raises naming the parameter; the registry flags the mask refresh.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernels import compiled
from samlab.optim import SSAMD, SSAMF, StepRecorder, create_optimizer, get_optimizer_info
from samlab.optim.fisher import fisher_diagonal

DT = torch.float64


def cnn(seed=0, dtype=DT):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, dtype=dtype),  # reduction 9: no 2:4
            nn.BatchNorm2d(4, dtype=dtype),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, dtype=dtype),  # reduction 36
            nn.Flatten(),
            nn.Linear(4 * 2 * 2, 3, dtype=dtype),
        )


def data(seed=0, n=12, dtype=DT):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=gen, dtype=dtype), torch.randint(
        0, 3, (n,), generator=gen
    )


def batches(n=12, size=5, seed=0):
    x, y = data(seed, n)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, n, size)]


def steps(model, opt, count, start=0):
    for t in range(start, start + count):
        x, y = data(100 + t, 6)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------- Fisher
@pytest.mark.parametrize("true_fisher", [False, True])
def test_batched_fisher_equals_the_per_sample_loop_and_leaves_batchnorm_alone(true_fisher):
    model = cnn()
    model.train()
    model[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    results = {}
    for method in ("loop", "vmap", "measure", "auto"):
        gen = torch.Generator().manual_seed(5)
        results[method] = fisher_diagonal(
            model,
            F.cross_entropy,
            batches(),
            params,
            num_samples=9,
            true_fisher=true_fisher,
            generator=gen,
            method=method,
        )
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics untouched
    # the definition: squared single-sample gradients in eval mode, first 9 samples
    x, y = data(0, 12)
    if not true_fisher:  # (sampled labels: the methods are compared below)
        model.eval()
        expected = [torch.zeros_like(p) for p in params]
        for i in range(9):
            grads = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
            for e, g in zip(expected, grads):
                e.add_(g * g)
        model.train()
        for a, b in zip(results["loop"].fisher, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    for method in ("vmap", "measure", "auto"):
        assert results[method].samples == 9
        for a, b in zip(results[method].fisher, results["loop"].fisher):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-15)
    assert results["auto"].method == "loop"  # on CPU, as measured
    # "measure": the loop on the first chunk, vmap on the second, the faster for the rest
    assert results["measure"].method in ("loop", "vmap")
    assert set(results["measure"].seconds) == {"loop", "vmap"}


def test_measure_times_both_methods_when_the_samples_fit_one_chunk():
    """A small MLP and one batch (one vmap chunk would hold it all): "measure" still times the
    loop and vmap, decides, records both timings and the choice, and keeps it."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8, dtype=DT), nn.Tanh(), nn.Linear(8, 3, dtype=DT))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 5, generator=gen, dtype=DT), torch.randint(0, 3, (8,), generator=gen)
    opt = create_optimizer(
        "ssamf", model.parameters(), lr=0.1, fisher_method="measure", num_samples=8
    )
    opt.refresh_masks(model, F.cross_entropy, [(x, y)])
    info = opt.last_refresh
    assert info["samples"] == 8
    assert set(info["fisher_seconds"]) == {"loop", "vmap"}
    per_sample = info["fisher_seconds_per_sample"]
    assert set(per_sample) == {"loop", "vmap"} and all(s > 0 for s in per_sample.values())
    assert info["fisher_method"] == min(per_sample, key=per_sample.get)
    assert opt.fisher_choice == info["fisher_method"]  # kept for the next refresh
    loop = fisher_diagonal(
        model, F.cross_entropy, [(x, y)], list(model.parameters()), num_samples=8, method="loop"
    )
    measured = fisher_diagonal(
        model, F.cross_entropy, [(x, y)], list(model.parameters()), num_samples=8, method="measure"
    )
    for a, b in zip(measured.fisher, loop.fisher):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-15)
    opt.refresh_masks(model, F.cross_entropy, [(x, y)])
    assert set(opt.last_refresh["fisher_seconds"]) == {opt.fisher_choice}
    assert "fisher_seconds_per_sample" not in opt.last_refresh


def test_refresh_with_no_samples_is_a_clear_error():
    model = cnn()
    opt = create_optimizer("ssamf", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no sample"):
        opt.refresh_masks(model, F.cross_entropy, [])
    assert opt.masks() is None
    d = create_optimizer("ssamd", model.parameters(), lr=0.1)  # gradient drop strategy
    d.refresh_masks(model, F.cross_entropy, [])  # first refresh: random growth score
    with pytest.raises(ValueError, match="gradient"):
        d.refresh_masks(model, F.cross_entropy, [])
    # batches=None: the same clear error where a strategy needs the gradient, none otherwise
    d = create_optimizer("ssamd", model.parameters(), lr=0.1)
    d.refresh_masks(model, F.cross_entropy, None)  # the growth score is random
    with pytest.raises(ValueError, match="needs batches"):
        d.refresh_masks(model, F.cross_entropy, None)
    by_weight = create_optimizer("ssamd", model.parameters(), lr=0.1, drop_strategy="weight")
    for _ in range(2):
        by_weight.refresh_masks(model, F.cross_entropy, None)
    assert by_weight.refreshes == 2


# --------------------------------------------------------------------------- limits
def run(name, impl, refresh=True, **kw):
    model = cnn()
    opt = create_optimizer(name, model.parameters(), lr=0.05, momentum=0.9, impl=impl, **kw)
    if refresh:
        with (
            pytest.warns(UserWarning, match="densely")
            if kw.get("pattern") == "nm"
            else nullcontext()
        ):
            opt.refresh_masks(model, F.cross_entropy, batches(), epoch=0, epochs=4)
    steps(model, opt, 3)
    return model, opt


class nullcontext:  # noqa: N801
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def impls():
    out = ["loop", "foreach"]
    if compiled.compiler_available():
        out.append("compiled")
    return out


@pytest.mark.parametrize("impl", impls())
def test_sparsity_zero_is_sam_and_one_is_the_base_optimizer_bit_for_bit(impl):
    sam, _ = run("sam", impl, refresh=False, rho=0.1)
    zero, opt = run("ssamf", impl, rho=0.1, sparsity=0.0, num_samples=4)
    assert opt.mask_density == 1.0 and all(m.all() for m in opt.masks())
    assert all(torch.equal(a, b) for a, b in zip(params_of(sam), params_of(zero)))
    sgd = cnn()
    base = torch.optim.SGD(sgd.parameters(), lr=0.05, momentum=0.9)
    steps(sgd, base, 3)
    one, opt = run("ssamd", impl, rho=0.1, sparsity=1.0, drop_strategy="weight")
    assert opt.mask_density == 0.0 and opt.last_step["passes"] == 1
    assert all(torch.equal(a, b) for a, b in zip(params_of(sgd), params_of(one)))


def test_before_the_first_refresh_it_is_sam():
    sam, _ = run("sam", "foreach", refresh=False, rho=0.1)
    ssam, opt = run("ssamf", "foreach", refresh=False, rho=0.1)
    assert opt.last_step["mask_density"] == 1.0 and opt.masks() is None
    assert all(torch.equal(a, b) for a, b in zip(params_of(sam), params_of(ssam)))


# --------------------------------------------------------------------------- the masked step
@pytest.mark.parametrize("renormalize", [False, True])
def test_the_step_perturbs_only_the_mask_with_the_documented_radius(renormalize):
    model = cnn()
    opt = create_optimizer(
        "ssamf",
        model.parameters(),
        lr=0.05,
        rho=0.1,
        sparsity=0.5,
        renormalize=renormalize,
        num_samples=6,
        impl="loop",
    )
    opt.refresh_masks(model, F.cross_entropy, batches())
    masks = [opt.state[p]["mask"] for p in model.parameters()]
    assert all(
        m.dtype == torch.bool and m.shape == p.shape for m, p in zip(masks, model.parameters())
    )
    assert [int(m.sum()) for m in masks] == [
        math.floor(0.5 * p.numel()) for p in model.parameters()
    ]
    calls = []  # (weights, gradients) of each pass
    x, y = data(1, 6)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        calls.append((params_of(model), [p.grad.clone() for p in model.parameters()]))
        return loss

    w0 = params_of(model)
    recorder = StepRecorder(opt)
    opt.step(closure)
    assert len(calls) == 2
    g = calls[0][1]
    full = torch.sqrt(sum((gi**2).sum() for gi in g))
    masked = torch.sqrt(sum(((gi * m) ** 2).sum() for gi, m in zip(g, masks)))
    divisor = masked if renormalize else full
    for wp, w, gi, m in zip(calls[1][0], w0, g, masks):
        torch.testing.assert_close(wp, w + 0.1 * gi * m / (divisor + 1e-12), rtol=1e-12, atol=1e-15)
    record = recorder.records[-1]
    assert record["mask_density"] == pytest.approx(0.5, abs=0.02)
    ratio = 1.0 if renormalize else float(masked / full)
    assert record["effective_radius"] == pytest.approx(ratio, rel=1e-9)
    assert record["perturbation_norm"] == pytest.approx(0.1 * ratio, rel=1e-9)
    assert record["mask_overlap"] == 1.0


def test_nm_layout_and_unfit_tensors():
    model = cnn()
    opt = create_optimizer(
        "ssamf", model.parameters(), lr=0.1, pattern="nm", n=2, m=4, num_samples=4
    )
    with pytest.warns(UserWarning, match="cannot take the pattern 2:4") as caught:
        opt.refresh_masks(model, F.cross_entropy, batches())
    assert len(caught) == 1 and "(4, 1, 3, 3)" in str(caught[0].message)
    conv2 = opt.state[model[3].weight]["mask"]
    assert (conv2.reshape(4, -1, 4).sum(-1) == 2).all()  # groups along in*kh*kw
    assert opt.state[model[0].weight]["mask"].all() and opt.state[model[0].bias]["mask"].all()
    # strict: refused at construction (every DDP rank, not rank 0 alone at its refresh)
    for pattern, unfit in (("nm", "(4, 1, 3, 3)"), ("structured", "(4,)")):
        with pytest.raises(ValueError, match="strict=False") as caught:
            create_optimizer("ssamf", model.parameters(), lr=0.1, pattern=pattern, strict=True)
        assert unfit in str(caught.value)
    # ... and at a refresh, for a parameter added since
    head = list(model[5].parameters())
    body = [p for p in model.parameters() if all(p is not q for q in head)]
    later = create_optimizer("ssamf", [model[3].weight], lr=0.1, pattern="nm", strict=True)
    later.add_param_group({"params": [model[0].weight]})
    with pytest.raises(ValueError, match="strict=False"):
        later.refresh_masks(model, F.cross_entropy, batches())
    # unstructured and tensor take 1-D tensors: strict accepts them, and masks them
    for pattern in ("unstructured", "tensor"):
        ok = create_optimizer("ssamf", body, lr=0.1, pattern=pattern, strict=True, num_samples=4)
        ok.refresh_masks(model, F.cross_entropy, batches())
    only = create_optimizer(
        "ssamf", model.parameters(), lr=0.1, pattern="structured", only_weights=True, num_samples=4
    )
    only.refresh_masks(model, F.cross_entropy, batches())  # no warning: 1-D tensors are left out
    assert not only.state[model[0].bias]["mask"].any()
    rows = only.state[model[3].weight]["mask"].reshape(4, -1)
    assert int(rows.all(1).sum()) == 2 and (rows.all(1) | ~rows.any(1)).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"pattern": "nm", "n": 5, "m": 4}, "n <= m"),
        ({"sparsity": 1.5}, "sparsity must be in"),
        ({"sparsity": -0.1}, "sparsity must be in"),
        ({"sparsity": True}, "sparsity must be in"),
        ({"num_samples": True}, "num_samples"),
        ({"pattern": "blocks"}, "pattern must be one of"),
        ({"pattern": "nm", "scope": "global"}, "scope='global'"),
        ({"update_freq": 0}, "update_freq"),
        ({"num_samples": 0}, "num_samples"),
        ({"fisher_method": "backpack"}, "fisher_method"),
    ],
)
def test_bad_input_names_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        create_optimizer("ssamf", cnn().parameters(), lr=0.1, **kw)


def test_ssamd_bad_input():
    for kw, match in (
        ({"drop_rate": 2.0}, "drop_rate"),
        ({"drop_strategy": "fisher"}, "drop_strategy"),
        ({"pattern": "nm"}, "unstructured"),
        ({"T_end": 0}, "T_end"),
        ({"drop_rate": True}, "drop_rate"),
    ):
        with pytest.raises(ValueError, match=match):
            create_optimizer("ssamd", cnn().parameters(), lr=0.1, **kw)


# --------------------------------------------------------------------------- state
@pytest.mark.parametrize("name", ["ssamf-sgd", "ssamd-adam"])
def test_masks_survive_a_state_dict_round_trip_and_a_resume(name):
    def fresh(seed=0):
        model = cnn(seed)
        opt = create_optimizer(
            name, model.parameters(), lr=0.01, rho=0.1, num_samples=4, update_freq=2
        )
        return model, opt

    def epoch(model, opt, e):
        if opt.masks_due(e):
            opt.refresh_masks(model, F.cross_entropy, batches(seed=e), epoch=e, epochs=4)
        steps(model, opt, 2, start=2 * e)

    model, opt = fresh()
    for e in range(4):
        epoch(model, opt, e)
    straight = params_of(model)
    model, opt = fresh()
    for e in range(3):
        epoch(model, opt, e)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    saved_masks = [m.clone() for m in opt.masks()]
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model, opt = fresh(seed=9)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    assert opt.refreshes == 2
    assert all(
        torch.equal(a, b) and a.dtype == torch.bool for a, b in zip(opt.masks(), saved_masks)
    )
    epoch(model, opt, 3)
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), straight))


def test_ssamd_keeps_the_count_and_the_overlap_with_cosine_decay():
    model = cnn()
    opt = SSAMD(
        model.parameters(), lr=0.1, sparsity=0.5, drop_rate=0.5, num_samples=6, scope="global"
    )
    opt.refresh_masks(model, F.cross_entropy, batches(), epoch=0, epochs=4)
    count = sum(int(m.sum()) for m in opt.masks())
    assert count == math.floor(0.5 * sum(p.numel() for p in model.parameters()))
    for e in (1, 2, 3):
        steps(model, opt, 1, start=e)
        old = [m.clone() for m in opt.masks()]
        opt.refresh_masks(model, F.cross_entropy, batches(seed=e), epoch=e, epochs=4)
        rate = 0.5 * (1 + math.cos(math.pi * e / 4)) / 2
        assert opt.last_refresh["drop_rate"] == pytest.approx(rate)
        assert sum(int(m.sum()) for m in opt.masks()) == count
        assert opt.mask_overlap >= 1 - rate - 1e-12
        assert opt.mask_overlap < 1 or rate * count < 1
        assert opt.last_step["mask_overlap"] <= 1.0
        assert any(not torch.equal(a, b) for a, b in zip(old, opt.masks())) or rate * count < 1


def test_a_parameter_group_added_after_a_refresh_is_perturbed_densely():
    model = cnn()
    head = list(model[5].parameters())
    body = [p for p in model.parameters() if all(p is not q for q in head)]
    opt = create_optimizer("ssamf", body, lr=0.05, rho=0.1, num_samples=4, impl="loop")
    opt.refresh_masks(model, F.cross_entropy, batches())
    opt.add_param_group({"params": head})
    steps(model, opt, 1)
    masks = opt.masks()
    assert len(masks) == len(list(model.parameters())) and masks[-1].all()


@pytest.mark.parametrize("name", ["ssamf", "ssamd"])
def test_a_group_with_perturb_false_is_never_perturbed(name):
    """A param group with ``"perturb": False`` gets an all-False mask at every refresh and does
    not move in the ascent; the other group is masked as usual."""
    model = cnn()
    head = list(model[5].parameters())
    body = [p for p in model.parameters() if all(p is not q for q in head)]
    groups = [{"params": body}, {"params": head, "perturb": False}]
    opt = create_optimizer(name, groups, lr=0.05, rho=0.1, num_samples=6, impl="loop")
    for epoch in range(2):
        opt.refresh_masks(model, F.cross_entropy, batches(seed=epoch), epoch=epoch, epochs=2)
        assert not any(opt.state[p]["mask"].any() for p in head)
        assert all(opt.state[p]["mask"].any() for p in body)
        x, y = data(50 + epoch, 6)
        opt.begin_step()
        F.cross_entropy(model(x), y).backward()
        before = params_of(model)
        assert opt.first_step(zero_grad=True)
        moved = [p.detach() != b for p, b in zip(model.parameters(), before)]
        for p, m in zip(model.parameters(), moved):
            assert not (m & ~opt.state[p]["mask"]).any()  # only masked entries move
        assert not any(moved[i].any() for i in (-2, -1))  # the head: not at all
        F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
    assert 0 < opt.mask_density < 0.5


# --------------------------------------------------------------------------- registry
def test_registry_flags_the_refresh_and_the_aliases_pick_the_base():
    for name, base in (
        ("ssamf-sgd", torch.optim.SGD),
        ("ssamf-adam", torch.optim.Adam),
        ("ssamd-adamw", torch.optim.AdamW),
        ("ssamd", torch.optim.SGD),
    ):
        opt = create_optimizer(name, cnn().parameters(), lr=0.1)
        assert type(opt.base_optimizer) is base
        assert get_optimizer_info(name).refreshes_masks
    assert not get_optimizer_info("sam").refreshes_masks
    opt = create_optimizer(
        "ssamf",
        cnn().parameters(),
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        rho=0.1,
        sparsity=0.5,
        pattern="nm",
        n=2,
        m=4,
        num_samples=16,
        update_freq=3,
    )
    assert isinstance(opt, SSAMF) and opt.pattern == "nm"
    assert [opt.masks_due(e) for e in range(7)] == [True, False, False, True, False, False, True]
