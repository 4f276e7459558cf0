"""The common battery: every registry entry of ``samlab.optim`` under the same checks.

Parametrised over ``samlab.optim.list_optimizers()`` (the plain sgd/adam/adamw entries
included wherever a check applies to them) and built through ``create_optimizer``, so an
optimizer added to the registry is covered without editing this file. The checks follow
``docs/closure-protocol.md`` and DESIGN.md §4/§7: the closure contract, param groups and LR
schedulers, ``grad is None``, zero gradients, ``state_dict`` round trips, bit-exact resume
through ``torch.save``/``torch.load(weights_only=True)``, aliases, bad input, and
``StepRecorder``. The closed-form maths lives in ``test_math.py`` / ``test_paper_reference.py``.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from samlab.optim import (
    SAM,
    LinearRho,
    StepRecorder,
    create_optimizer,
    current_pass,
    get_optimizer_info,
    list_optimizers,
)

DT = torch.float64
EPS = 1e-12
NAMES = list_optimizers()
SAM_NAMES = [n for n in NAMES if get_optimizer_info(n).sam_family]
D_IN, HIDDEN, D_OUT, BATCH = 4, 6, 3, 8


# --------------------------------------------------------------------------- helpers
def info(name):
    return get_optimizer_info(name)


def required(name):
    """Keywords an optimizer cannot do without: bSAM's number of training examples."""
    return {"num_data": 64} if info(name).samples_weights else {}


def options(name, **overrides):
    """Keyword options for ``create_optimizer(name, ...)`` that exercise the optimizer's state:
    SGD momentum buffers, Adam moments, GSAM's rho schedule, LookSAM's refresh period."""
    entry = info(name)
    base = entry.base if entry.sam_family else name
    kw = {"lr": 0.05}
    if base == "sgd":
        kw.update(momentum=0.9, weight_decay=1e-3)
    elif base == "adamw":
        kw.update(weight_decay=1e-2)
    if entry.sam_family:
        kw["rho"] = 0.05
    if name == "gsam":
        kw.update(alpha=0.3, rho_schedule=LinearRho(rho_max=0.08, rho_min=0.02, total_steps=10))
    if name == "looksam":
        kw.update(k=3, alpha=0.7)
    kw.update(required(name))
    kw.update(overrides)
    return {k: v for k, v in kw.items() if v is not None}


def build(name, params, **overrides):
    return create_optimizer(name, params, **options(name, **overrides))


def mlp(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(D_IN, HIDDEN, dtype=DT), nn.Tanh(), nn.Linear(HIDDEN, D_OUT, dtype=DT)
        )


def batch(t, seed=123):
    gen = torch.Generator().manual_seed(seed + t)
    x = torch.randn(BATCH, D_IN, generator=gen, dtype=DT)
    y = torch.randn(BATCH, D_OUT, generator=gen, dtype=DT)
    return x, y


def make_closure(model, opt, x, y, log=None):
    """The PyTorch closure convention; ``log`` (a list) receives (pass, params, grads)."""

    def closure():
        opt.zero_grad()
        if log is not None:
            before = [p.detach().clone() for p in model.parameters()]
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        if log is not None:
            grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
            log.append((current_pass(), before, grads))
        return loss

    return closure


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_bitwise(a, b, what="parameters"):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        assert torch.equal(u, v), f"{what}[{i}] differ: max |diff| {(u - v).abs().max():.3e}"


def assert_same_tree(a, b, path="state_dict"):
    """Recursive equality of (nested) state dicts: tensors bitwise, everything else ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{path}: tensor vs {type(b).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: dtype/shape differ"
        assert torch.equal(a, b), f"{path}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict), f"{path}: dict vs {type(b).__name__}"
        assert set(a) == set(b), f"{path}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for key in a:
            assert_same_tree(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: lengths differ"
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same_tree(u, v, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def all_finite_tensors(tree):
    if isinstance(tree, torch.Tensor):
        return not tree.is_floating_point() or bool(torch.isfinite(tree).all())
    if isinstance(tree, dict):
        return all(all_finite_tensors(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(all_finite_tensors(v) for v in tree)
    return True


def run_steps(model, opt, steps, start=0, scheduler=None):
    for t in range(start, start + steps):
        x, y = batch(t)
        opt.step(make_closure(model, opt, x, y))
        if scheduler is not None:
            scheduler.step()


# --------------------------------------------------------------------------- closure contract
@pytest.mark.parametrize("name", NAMES)
def test_closure_contract(name):
    """``step(closure)`` returns the loss; ``closure(); step(closure)`` takes the same steps
    (SAM family: the caller's clean gradients are reused and ``step`` returns None; one-step
    SAM always evaluates at ``w + e`` and returns that loss)."""
    finals, returns = [], []
    for precompute in (False, True):
        model, got = mlp(), []
        opt = build(name, model.parameters())
        for t in range(5):
            x, y = batch(t)
            closure = make_closure(model, opt, x, y)
            if precompute:
                closure()
            got.append(opt.step(closure))
        finals.append(params_of(model))
        returns.append(got)
    assert_bitwise(finals[0], finals[1])

    x0, y0 = batch(0)
    with torch.no_grad():
        loss0 = ((mlp()(x0) - y0) ** 2).mean()
    for loss in returns[0]:
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss)
    entry = info(name)
    if entry.samples_weights:  # bSAM: step 0's loss is at a posterior sample w_0 + sigma z
        assert not torch.equal(returns[0][0].detach(), loss0)
    else:  # step 0 runs at w_0 (one-step: e_0 = 0)
        assert torch.equal(returns[0][0].detach(), loss0)

    caller_grads_reused = entry.sam_family and entry.passes != 1 and not entry.samples_weights
    for loss in returns[1]:
        if caller_grads_reused:
            assert loss is None
        else:
            assert isinstance(loss, torch.Tensor) and torch.isfinite(loss)


@pytest.mark.parametrize("name", SAM_NAMES)
def test_sam_family_closure_calls_per_step(name):
    model = mlp()
    opt = build(name, model.parameters())
    calls = []
    for t in range(6):
        x, y = batch(t)
        inner = make_closure(model, opt, x, y)

        def closure(inner=inner, t=t):
            calls.append(t)
            return inner()

        opt.step(closure)
    per_step = [calls.count(t) for t in range(6)]
    passes = info(name).passes
    if passes == "1-2":
        k = opt.k
        assert per_step == [2 if t % k == 0 else 1 for t in range(6)]
    else:
        assert per_step == [passes] * 6


# --------------------------------------------------------------------------- param groups
def two_groups(model, lrs, rhos=None):
    groups = []
    for i, layer in enumerate((model[0], model[2])):
        group = {"params": list(layer.parameters()), "lr": lrs[i]}
        if rhos is not None:
            group["rho"] = rhos[i]
        groups.append(group)
    return groups


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_use_their_own_lr(name):
    """One step: doubling the second group's lr doubles its update and leaves the first's."""
    deltas = []
    for lrs in ((0.05, 0.02), (0.05, 0.04)):
        model = mlp()
        w0 = params_of(model)
        opt = build(name, two_groups(model, lrs))
        if info(name).sam_family:
            assert opt.base_optimizer.param_groups is opt.param_groups
        assert [g["lr"] for g in opt.param_groups] == list(lrs)
        run_steps(model, opt, 1)
        deltas.append([w1 - w for w1, w in zip(params_of(model), w0)])
    for a, b in zip(deltas[0][:2], deltas[1][:2]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-15)
    for a, b in zip(deltas[0][2:], deltas[1][2:]):
        assert a.abs().max() > 0
        torch.testing.assert_close(b, 2 * a, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", SAM_NAMES)
def test_param_groups_use_their_own_rho_with_a_global_norm(name):
    """``e_group = rho_group * d_group / (||d|| + eps)`` with the norm over all groups
    (``d = g``, ASAM ``T^2 g`` with the norm of ``T g``; one-step SAM: last step's gradient)."""
    if info(name).base is None:
        pytest.skip(f"{name}'s ascent rho * g / s has no global norm (test_variants.py)")
    rhos = (0.03, 0.2)
    model = mlp()
    opt = build(name, two_groups(model, (0.05, 0.05), rhos), rho_schedule=None)
    log, starts = [], []
    for t in range(2):
        x, y = batch(t)
        starts.append(params_of(model))
        opt.step(make_closure(model, opt, x, y, log))
    if name == "onestep-sam":
        # step 0: one pass at w_0 (e_0 = 0); step 1: one pass at w_1 + e_1 along step 0's grads
        assert len(log) == 2
        w, direction, perturbed = starts[1], log[0][2], log[1][1]
    else:
        assert [entry[0] for entry in log[:2]] == ["clean", "perturbed"]
        w, direction, perturbed = log[0][1], log[0][2], log[1][1]
        assert_bitwise(w, starts[0])
    group_of = [0, 0, 1, 1]
    adaptive = opt.param_groups[0].get("adaptive", False)
    eta = opt.param_groups[0].get("eta", 0.0)
    if adaptive:
        scaled = [(wi.abs() + eta) * g for wi, g in zip(w, direction)]
        dirs = [(wi.abs() + eta) ** 2 * g for wi, g in zip(w, direction)]
    else:
        scaled, dirs = direction, direction
    norm = torch.sqrt(sum((s**2).sum() for s in scaled))
    for i, (wi, pi, di) in enumerate(zip(w, perturbed, dirs)):
        expected = wi + rhos[group_of[i]] * di / (norm + EPS)
        torch.testing.assert_close(pi, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_drives_the_base_optimizer(name):
    """StepLR(gamma=0) sets lr to 0 after one step: the next step must not move anything,
    and no 'scheduler.step() before optimizer.step()' warning is raised."""
    model = mlp()
    opt = build(name, two_groups(model, (0.05, 0.02)))
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.0)
    w0 = params_of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run_steps(model, opt, 1, scheduler=scheduler)
    w1 = params_of(model)
    assert any(not torch.equal(a, b) for a, b in zip(w0, w1))
    groups = opt.base_optimizer.param_groups if info(name).sam_family else opt.param_groups
    assert [g["lr"] for g in groups] == [0.0, 0.0]
    run_steps(model, opt, 2, start=1)
    assert_bitwise(params_of(model), w1)


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_reaches_the_base_optimizer(name):
    model = mlp()
    opt = build(name, model[0].parameters())
    run_steps(model, opt, 1)
    frozen_head = params_of(model)[2:]
    assert all(torch.equal(a, b) for a, b in zip(params_of(model)[2:], frozen_head))
    opt.add_param_group({"params": list(model[2].parameters()), "lr": 0.02})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == 0.02
    if info(name).sam_family:
        assert opt.base_optimizer.param_groups is opt.param_groups
        assert opt.param_groups[1]["rho"] == opt.param_groups[0]["rho"]
    run_steps(model, opt, 3, start=1)
    assert all(not torch.equal(a, b) for a, b in zip(params_of(model)[2:], frozen_head))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", SAM_NAMES)
def test_base_optimizer_keeps_its_own_options(name):
    """The wrapper's knobs never shadow a base optimizer option of the same name (Adam's
    ``eps``, RMSprop's ``alpha``): the base keeps its defaults, and ``eps`` goes to it. An
    optimizer of its own (bSAM) refuses a base."""
    model = mlp()
    if info(name).base is None:
        with pytest.raises(ValueError, match="base"):
            create_optimizer(name, model.parameters(), lr=0.01, base="adam", **required(name))
        return
    adam = create_optimizer(name, model.parameters(), lr=0.01, base="adam")
    assert all(g["eps"] == 1e-8 for g in adam.base_optimizer.param_groups)
    adam = create_optimizer(name, model.parameters(), lr=0.01, base="adam", eps=1e-6)
    assert all(g["eps"] == 1e-6 for g in adam.base_optimizer.param_groups)
    rmsprop = info(name).factory(model.parameters(), torch.optim.RMSprop, lr=0.01)
    assert all(g["alpha"] == 0.99 for g in rmsprop.base_optimizer.param_groups)
    run_steps(model, rmsprop, 2)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --------------------------------------------------------------------------- None / zero grads
class PartlyFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()
        with torch.random.fork_rng():
            torch.manual_seed(5)
            self.unused = nn.Linear(3, 3, dtype=DT)
        self.net[0].weight.requires_grad_(False)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name", NAMES)
def test_params_without_grad_are_never_moved(name):
    model = PartlyFrozen()
    opt = build(name, model.parameters())
    frozen = {
        "net.0.weight": model.net[0].weight.detach().clone(),
        "unused.weight": model.unused.weight.detach().clone(),
        "unused.bias": model.unused.bias.detach().clone(),
    }
    trained = model.net[2].weight.detach().clone()
    for t in range(4):  # LookSAM k=3: refresh, reuse, reuse, refresh
        x, y = batch(t)
        loss = opt.step(make_closure(model, opt, x, y))
        assert loss is None or torch.isfinite(loss)
        assert model.net[0].weight.grad is None and model.unused.weight.grad is None
    params = dict(model.named_parameters())
    for key, value in frozen.items():
        assert torch.equal(params[key], value), key
    assert not torch.equal(model.net[2].weight, trained)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradients_give_no_nan(name):
    model = mlp()
    opt = build(name, model.parameters())
    for t in range(4):
        x, _ = batch(t)

        def closure(x=x):
            opt.zero_grad()
            loss = (model(x) * 0.0).sum()
            loss.backward()
            return loss

        opt.step(closure)
        assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all_finite_tensors(opt.state_dict())
    last = getattr(opt, "last_step", {})
    for key in ("grad_norm", "perturbation_norm"):
        if last.get(key) is not None:
            assert torch.isfinite(torch.as_tensor(last[key]))


# --------------------------------------------------------------------------- state_dict
def expected_state_keys(name):
    """Where each optimizer's own state must appear in ``state_dict()``."""
    base = info(name).base if info(name).sam_family else name
    if base is None:  # bSAM's own update: the gradient average and the posterior precision
        return {"exp_avg", "precision"}
    return {"sgd": {"momentum_buffer"}, "adam": {"exp_avg", "exp_avg_sq"}}.get(
        base, {"exp_avg", "exp_avg_sq"}
    )


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    model = mlp()
    opt = build(name, model.parameters())
    run_steps(model, opt, 4)  # LookSAM k=3: g_v stored at steps 0 and 3
    # state_dict() returns the live state tensors (as torch does): copy before stepping on
    saved = copy.deepcopy(opt.state_dict())

    base_sd = saved["base_optimizer"] if info(name).sam_family else saved
    assert len(base_sd["state"]) == 4
    for per_param in base_sd["state"].values():
        assert expected_state_keys(name) <= set(per_param)
    if info(name).sam_family:
        assert saved["samlab"]["step"] == 4
        assert saved["samlab"]["method"] == type(opt).method
    if name == "gsam":
        assert saved["samlab"]["rho_schedule"]["step_count"] == 4
    if name == "looksam":
        assert len(saved["state"]) == 4
        assert all("g_v" in s for s in saved["state"].values())
    if name == "onestep-sam":
        assert len(saved["state"]) == 4
        assert all("kept_grad" in s for s in saved["state"].values())
    if name == "friendlysam":
        assert len(saved["state"]) == 4
        assert all("grad_ema" in s for s in saved["state"].values())
    if info(name).samples_weights:
        assert set(saved["samlab"]["rng"]) == {"cpu"}

    model2 = mlp(seed=7)
    model2.load_state_dict(model.state_dict())
    opt2 = build(name, model2.parameters())
    opt2.load_state_dict(saved)
    assert_same_tree(opt2.state_dict(), saved)
    if info(name).sam_family:
        assert opt2.base_optimizer.param_groups is opt2.param_groups
        assert opt2._step_index == 4
    if name == "gsam":
        assert opt2.rho_schedule.step_count == 4
        assert opt2.rho_schedule is not opt.rho_schedule
    # the loaded optimizer continues exactly like the original
    run_steps(model, opt, 2, start=4)
    run_steps(model2, opt2, 2, start=4)
    assert_bitwise(params_of(model), params_of(model2))


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_exact(name):
    """8 steps straight == 4 steps, torch.save / torch.load(weights_only=True) of model,
    optimizer and LR scheduler into fresh objects, 4 more steps."""

    def fresh(seed=0):
        model = mlp(seed)
        opt = build(name, model.parameters())
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return model, opt, sched

    model, opt, sched = fresh()
    run_steps(model, opt, 8, scheduler=sched)
    straight = params_of(model)

    model, opt, sched = fresh()
    run_steps(model, opt, 4, scheduler=sched)
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "sched": sched.state_dict()},
        buffer,
    )
    del model, opt, sched
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model, opt, sched = fresh(seed=99)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["sched"])
    run_steps(model, opt, 4, start=4, scheduler=sched)
    assert_bitwise(params_of(model), straight)


# --------------------------------------------------------------------------- aliases
@pytest.mark.parametrize(
    "name, kwargs, base_cls",
    [
        ("sam-adam", {}, torch.optim.Adam),
        ("sgd-sam", {}, torch.optim.SGD),
        ("sam", {"base": "adamw"}, torch.optim.AdamW),
        ("sam", {}, torch.optim.SGD),
        ("gsam", {"base": "adam"}, torch.optim.Adam),
    ],
)
def test_aliases_and_base_names(name, kwargs, base_cls):
    model = mlp()
    opt = create_optimizer(name, model.parameters(), lr=0.01, **kwargs)
    assert isinstance(opt, SAM)
    assert type(opt.base_optimizer) is base_cls
    w0 = params_of(model)
    run_steps(model, opt, 2)
    assert any(not torch.equal(a, b) for a, b in zip(w0, params_of(model)))


def test_alias_and_canonical_name_take_identical_steps():
    runs = []
    for name, kw in (("sam-adam", {}), ("sam", {"base": "adam"})):
        model = mlp()
        opt = create_optimizer(name, model.parameters(), lr=0.01, rho=0.1, **kw)
        run_steps(model, opt, 3)
        runs.append(params_of(model))
    assert_bitwise(*runs)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", NAMES)
def test_negative_rho_is_rejected(name):
    with pytest.raises(ValueError, match="rho"):
        create_optimizer(name, mlp().parameters(), lr=0.1, rho=-0.05, **required(name))


@pytest.mark.parametrize("name", SAM_NAMES)
def test_negative_rho_in_a_param_group_is_rejected(name):
    model = mlp()
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "rho": -0.1}]
    with pytest.raises(ValueError, match="rho"):
        create_optimizer(name, groups, lr=0.1, **required(name))


def test_unknown_optimizer_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        create_optimizer("sharpness-magic", mlp().parameters(), lr=0.1)
    message = str(err.value)
    assert "sharpness-magic" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("name", NAMES)
def test_unknown_keyword_is_named(name):
    with pytest.raises(ValueError, match="not_an_option"):
        create_optimizer(name, mlp().parameters(), lr=0.1, not_an_option=3)


@pytest.mark.parametrize("name", SAM_NAMES)
def test_step_without_closure_is_a_type_error(name):
    model = mlp()
    opt = build(name, model.parameters())
    x, y = batch(0)
    ((model(x) - y) ** 2).mean().backward()
    w0 = params_of(model)
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    assert_bitwise(params_of(model), w0)


@pytest.mark.parametrize("name", SAM_NAMES)
def test_base_optimizer_instance_is_a_type_error(name):
    model = mlp()
    instance = torch.optim.SGD(model.parameters(), lr=0.1)
    if info(name).base is None:  # bSAM takes no base optimizer, instance or class
        with pytest.raises(TypeError):
            info(name).factory(model.parameters(), instance, lr=0.1, **required(name))
        with pytest.raises(TypeError):
            create_optimizer(name, model.parameters(), lr=0.1, base=instance, **required(name))
        return
    with pytest.raises(TypeError, match="instance"):
        info(name).factory(model.parameters(), instance, lr=0.1)
    with pytest.raises(TypeError):
        create_optimizer(name, model.parameters(), lr=0.1, base=instance)


@pytest.mark.parametrize("name", SAM_NAMES)
def test_loading_a_foreign_state_dict_is_a_value_error(name):
    model = mlp()
    opt = build(name, model.parameters())
    run_steps(model, opt, 1)
    before = opt.state_dict()
    others = [n for n in SAM_NAMES if info(n).factory is not info(name).factory]
    for other in others:
        model2 = mlp()
        foreign = build(other, model2.parameters())
        run_steps(model2, foreign, 1)
        with pytest.raises(ValueError):
            opt.load_state_dict(foreign.state_dict())
    plain = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run_steps(model, plain, 1)
    with pytest.raises(ValueError):
        opt.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError):
        opt.load_state_dict(opt.base_optimizer.state_dict())
    assert_same_tree(opt.state_dict(), before)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_parameter_count_is_a_value_error(name):
    model = mlp()
    opt = build(name, model.parameters())
    run_steps(model, opt, 1)
    saved = opt.state_dict()
    other = build(name, list(mlp().parameters())[:3])
    with pytest.raises(ValueError):
        other.load_state_dict(saved)


# --------------------------------------------------------------------------- StepRecorder
def test_step_recorder_for_sam():
    rho = 0.05
    model = mlp()
    opt = create_optimizer("sam", model.parameters(), lr=0.05, rho=rho)
    recorder = StepRecorder(opt)
    for t in range(3):
        x, y = batch(t)
        w = params_of(model)
        with torch.enable_grad():
            probe = mlp()
            with torch.no_grad():
                for p, q in zip(probe.parameters(), w):
                    p.copy_(q)
            clean = ((probe(x) - y) ** 2).mean()
            grads = torch.autograd.grad(clean, list(probe.parameters()))
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        with torch.no_grad():
            for p, g in zip(probe.parameters(), grads):
                p.add_(rho * g / (norm + EPS))
            perturbed = ((probe(x) - y) ** 2).mean()
        opt.step(make_closure(model, opt, x, y))
        record = recorder.records[-1]
        assert len(recorder.records) == t + 1
        assert record["passes"] == 2 and record["skipped"] is False
        assert record["grad_norm"] == pytest.approx(float(norm), rel=1e-12)
        assert record["perturbation_norm"] == pytest.approx(rho, rel=1e-9)
        assert record["clean_loss"] == pytest.approx(float(clean.detach()), rel=1e-12)
        assert record["perturbed_loss"] == pytest.approx(float(perturbed), rel=1e-12)
        assert record["sharpness_gap"] == pytest.approx(
            record["perturbed_loss"] - record["clean_loss"], rel=1e-9, abs=1e-15
        )
        assert record["sharpness_gap"] > 0
    recorder.remove()
    run_steps(model, opt, 1, start=3)
    assert len(recorder.records) == 3


@pytest.mark.parametrize("name", NAMES)
def test_step_recorder_passes(name):
    model = mlp()
    opt = build(name, model.parameters())
    recorder = StepRecorder(opt)
    run_steps(model, opt, 6)
    passes = [r["passes"] for r in recorder.records]
    expected = info(name).passes
    if expected == "1-2":
        assert passes == [2 if t % opt.k == 0 else 1 for t in range(6)]
    else:
        assert passes == [expected] * 6
    for r in recorder.records:
        assert r["skipped"] is False
        if r["passes"] == 2:
            assert r["sharpness_gap"] == pytest.approx(
                r["perturbed_loss"] - r["clean_loss"], rel=1e-9, abs=1e-15
            )
            assert r["perturbation_norm"] is not None and r["grad_norm"] is not None
        if name == "onestep-sam":
            assert r["clean_loss"] is None and r["sharpness_gap"] is None


# --------------------------------------------------------------------------- module layout
@pytest.mark.parametrize("name", SAM_NAMES)
def test_sambase_is_composed_and_current_pass_imports_from_samlab_optim(name) -> None:
    """``SAMBase`` inherits only ``torch.optim.Optimizer``: its machinery are objects with
    their own state (the dispatch, the perturbation, the base step), shared by every method;
    the public names are the objects of ``samlab.optim.base`` and ``samlab.optim.passes``."""
    import kernels
    import samlab.optim
    import samlab.optim.base as base
    import samlab.optim.passes as passes
    from samlab.optim.base_step import BaseStep
    from samlab.optim.perturbation import Perturbation

    assert base.__all__ == ["SAMBase", "current_pass"]
    assert samlab.optim.SAMBase is base.SAMBase
    assert samlab.optim.current_pass is base.current_pass is passes.current_pass
    assert base.SAMBase.__bases__ == (torch.optim.Optimizer,)
    opt = build(name, mlp().parameters())
    assert isinstance(opt.dispatch, kernels.Dispatch) and opt.dispatch.owner == type(opt).method
    assert isinstance(opt.perturbation, Perturbation) and opt.perturbation.dispatch is opt.dispatch
    assert isinstance(opt.base_step, BaseStep) and opt.base_step.dispatch is opt.dispatch
    assert opt.base_step.base_optimizer is opt.base_optimizer


# --------------------------------------------------------------------------- mask refreshes
REFRESHING = [n for n in NAMES if info(n).refreshes_masks]


@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("name", REFRESHING)
def test_ssam_with_refreshed_masks_trains_and_perturbs_only_the_masks(name, base):
    """The battery's steps with the masks refreshed first (and again midway), as a trainer
    does on the ``refreshes_masks`` flag: every loss finite and decreasing on a fixed batch,
    every perturbed pass at a point that differs from ``w`` only where the mask is True."""
    model = mlp()
    knobs = {"momentum": 0.9} if base == "sgd" else {}
    opt = create_optimizer(
        f"{name}-{base}", model.parameters(), lr=0.05, rho=0.05, sparsity=0.5, **knobs
    )
    assert type(opt.base_optimizer).__name__.lower() == base

    def loss_fn(out, y):
        return ((out - y) ** 2).mean()

    x, y = batch(0)
    losses = []
    for epoch in range(2):
        opt.refresh_masks(model, loss_fn, [batch(10 + epoch)], epoch=epoch, epochs=2)
        masks = opt.masks()
        assert 0 < opt.mask_density < 1 and all(m.any() for m in masks)
        for _ in range(3):
            log = []
            losses.append(float(opt.step(make_closure(model, opt, x, y, log)).detach()))
            assert [entry[0] for entry in log] == ["clean", "perturbed"]
            (_, clean, _), (_, shifted, _) = log
            for w, w_e, m in zip(clean, shifted, masks):
                moved = w_e != w
                assert moved.any() and not (moved & ~m).any()
            assert 0 < float(opt.last_step["effective_radius"]) < 1
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
