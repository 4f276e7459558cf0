"""Closed-form checks of the SAM-family update rules of ``docs/closure-protocol.md``.

Everything runs in float64 with tensors created explicitly in that dtype (the global default
dtype is never touched). References are written out here by hand from the spec's table; no
samlab or kernels code is used to compute an expected value.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samlab.optim import ASAM, GSAM, SAM, LookSAM, OneStepSAM

DT = torch.float64
EPS = 1e-12
METHOD_NAMES = ["SAM", "ASAM", "GSAM", "LookSAM", "OneStepSAM"]


# --------------------------------------------------------------------------- helpers
def make_opt(name, params, base=torch.optim.SGD, *, rho=0.05, **kw):
    """Build a samlab optimizer by name; variant knobs get non-trivial values."""
    if name == "SAM":
        return SAM(params, base, rho=rho, **kw)
    if name == "ASAM":
        return ASAM(params, base, rho=rho, **kw)
    if name == "GSAM":
        kw.setdefault("alpha", 0.4)
        return GSAM(params, base, rho=rho, **kw)
    if name == "LookSAM":
        kw.setdefault("k", 3)
        kw.setdefault("alpha", 0.7)
        return LookSAM(params, base, rho=rho, **kw)
    if name == "OneStepSAM":
        return OneStepSAM(params, base, rho=rho, **kw)
    raise ValueError(name)


def mlp(seed=0, d_in=3, hidden=5, d_out=2):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(d_in, hidden, dtype=DT), nn.Tanh(), nn.Linear(hidden, d_out, dtype=DT)
        )


def batches(n, seed=1, batch=8, d_in=3, d_out=2):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, d_in, generator=gen, dtype=DT),
            torch.randn(batch, d_out, generator=gen, dtype=DT),
        )
        for _ in range(n)
    ]


def mse(model, x, y):
    return ((model(x) - y) ** 2).mean()


def flat(params):
    return torch.cat([p.detach().reshape(-1) for p in params])


def run_closure(opt, model, data, loss_fn=mse):
    """Drive ``opt.step(closure)`` over ``data``; returns the step return values."""
    out = []
    for x, y in data:

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = loss_fn(model, x, y)
            loss.backward()
            return loss

        out.append(opt.step(closure))
    return out


def run_manual(opt, model, data, loss_fn=mse):
    """Drive the manual two-call API; returns first_step()'s answers."""
    answers = []
    for x, y in data:
        opt.begin_step()
        loss_fn(model, x, y).backward()
        need = opt.first_step(zero_grad=True)
        answers.append(need)
        if need:
            loss_fn(model, x, y).backward()
        opt.second_step(zero_grad=True)
    return answers


def run_base(opt, model, data, loss_fn=mse):
    for x, y in data:
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()


RUNNERS = {"closure": run_closure, "manual": run_manual}


def quadratic(n=6, seed=3):
    """A, b, w0 for L(w) = 1/2 w^T A w - b^T w with A symmetric positive definite."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen, dtype=DT)
    a = m @ m.T / n + torch.eye(n, dtype=DT)
    b = torch.randn(n, generator=gen, dtype=DT)
    w0 = torch.randn(n, generator=gen, dtype=DT)
    return a, b, w0


def quad_loss(a, b):
    def loss_fn(w):
        return 0.5 * (w @ (a @ w)) - b @ w

    return loss_fn


def closure_for(opt, w, loss_fn, counter=None):
    def closure():
        if counter is not None:
            counter.append(1)
        opt.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss

    return closure


def recording(base, log):
    """A subclass of ``base`` that records the flat gradient it is asked to follow."""

    class Recording(base):
        def step(self, closure=None):
            grads = [
                p.grad.detach().reshape(-1).clone()
                for g in self.param_groups
                for p in g["params"]
                if p.grad is not None
            ]
            log.append(torch.cat(grads))
            return super().step(closure)

    return Recording


def flat_grad_at(model, w_flat, x, y):
    """Gradient of mse at the flat parameter vector ``w_flat`` (functional, no samlab)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    w = w_flat.detach().clone().requires_grad_(True)
    views, i = {}, 0
    for n, s in zip(names, shapes):
        k = s.numel()
        views[n] = w[i : i + k].view(s)
        i += k
    out = torch.func.functional_call(model, views, (x,))
    (g,) = torch.autograd.grad(((out - y) ** 2).mean(), w)
    return g


# --------------------------------------------------------------------------- rho = 0
BASES = {
    "sgd": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}),
    "adam": (torch.optim.Adam, {"lr": 1e-2}),
}


@pytest.mark.parametrize("api", ["closure", "manual"])
@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_rho_zero_is_exactly_the_base_optimizer(name, base, api):
    cls, kw = BASES[base]
    data = batches(10)
    ref_model, model = mlp(), mlp()
    run_base(cls(ref_model.parameters(), **kw), ref_model, data)
    opt = make_opt(name, model.parameters(), cls, rho=0.0, **kw)
    RUNNERS[api](opt, model, data)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q), f"{name} rho=0 drifted from {base}: {(p - q).abs().max()}"


# --------------------------------------------------------------------------- SAM
def test_sam_one_step_on_quadratic_matches_closed_form():
    a, b, w0 = quadratic()
    lr, rho = 0.1, 0.05
    w = nn.Parameter(w0.clone())
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)
    loss = opt.step(closure_for(opt, w, quad_loss(a, b)))
    g = a @ w0 - b
    e = rho * g / (torch.linalg.vector_norm(g) + EPS)
    expected = w0 - lr * (a @ (w0 + e) - b)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-14, atol=1e-14)
    # step(closure) returns the loss of the clean pass it ran (at w0, not at w0 + e)
    assert loss is not None
    torch.testing.assert_close(loss.detach(), quad_loss(a, b)(w0), rtol=1e-14, atol=1e-14)


def test_sam_first_step_perturbs_by_rho_g_over_norm():
    a, b, w0 = quadratic()
    rho = 0.2
    w = nn.Parameter(w0.clone())
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=0.1)
    opt.begin_step()
    quad_loss(a, b)(w).backward()
    assert opt.first_step(zero_grad=True) is True
    assert w.grad is None or not w.grad.any()  # zero_grad=True: grads cleared for pass 2
    g = a @ w0 - b
    e = w.detach() - w0
    torch.testing.assert_close(e, rho * g / (g.norm() + EPS), rtol=1e-13, atol=1e-15)
    # ||e|| = rho * ||g|| / (||g|| + eps): rho up to the eps placement
    gn = g.norm()
    torch.testing.assert_close(e.norm(), rho * gn / (gn + EPS), rtol=1e-14, atol=0)
    assert abs(e.norm().item() - rho) <= rho * (1e-14 + EPS / gn.item())
    quad_loss(a, b)(w).backward()
    opt.second_step(zero_grad=True)
    torch.testing.assert_close(
        w.detach(), w0 - 0.1 * (a @ (w0 + rho * g / (g.norm() + EPS)) - b), rtol=1e-14, atol=1e-14
    )


# --------------------------------------------------------------------------- ASAM
@pytest.mark.parametrize("eta", [0.01, 0.0])
@pytest.mark.parametrize("how", ["ASAM", "SAM(adaptive=True)"])
def test_asam_perturbation_on_diagonal_quadratic(eta, how):
    gen = torch.Generator().manual_seed(5)
    n = 7
    diag = torch.rand(n, generator=gen, dtype=DT) + 0.5
    b = torch.randn(n, generator=gen, dtype=DT)
    w0 = torch.randn(n, generator=gen, dtype=DT)
    w0[2] = 0.0  # a weight exactly 0 (its gradient -b[2] is not 0)
    assert b[2] != 0

    def loss_fn(w):
        return 0.5 * (diag * w * w).sum() - b @ w

    rho, lr = 0.5, 0.1
    w = nn.Parameter(w0.clone())
    if how == "ASAM":
        opt = ASAM([w], torch.optim.SGD, rho=rho, eta=eta, lr=lr)
    else:
        opt = SAM([w], torch.optim.SGD, rho=rho, adaptive=True, eta=eta, lr=lr)
    opt.begin_step()
    loss_fn(w).backward()
    assert opt.first_step(zero_grad=True) is True
    w_pert = w.detach().clone()
    g = diag * w0 - b
    t = w0.abs() + eta
    e_expected = rho * t * t * g / (torch.linalg.vector_norm(t * g) + EPS)
    torch.testing.assert_close(w_pert - w0, e_expected, rtol=1e-13, atol=1e-15)
    if eta > 0:
        assert w_pert[2] != 0.0, "with eta > 0 a zero weight must be perturbed"
    else:
        assert w_pert[2] == 0.0, "with eta = 0 a zero weight must not be perturbed"
    loss_fn(w).backward()
    opt.second_step(zero_grad=True)
    expected = w0 - lr * (diag * (w0 + e_expected) - b)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("eta", [0.01, 0.0])
def test_asam_is_sam_adaptive_bitwise(eta):
    data = batches(5)
    m1, m2 = mlp(), mlp()
    kw = {"lr": 0.1, "momentum": 0.9}
    run_closure(ASAM(m1.parameters(), rho=0.5, eta=eta, **kw), m1, data)
    run_closure(SAM(m2.parameters(), rho=0.5, adaptive=True, eta=eta, **kw), m2, data)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- GSAM
def test_gsam_final_gradient_is_gp_minus_alpha_gperp():
    model = mlp(seed=7)
    ((x, y),) = batches(1, seed=8)
    rho, alpha = 0.3, 0.4
    w0 = flat(model.parameters())
    log = []
    opt = GSAM(model.parameters(), recording(torch.optim.SGD, log), rho=rho, alpha=alpha, lr=0.1)
    run_closure(opt, model, [(x, y)])
    assert len(log) == 1
    g_final = log[0]

    g = flat_grad_at(model, w0, x, y)
    e = rho * g / (g.norm() + EPS)
    gp = flat_grad_at(model, w0 + e, x, y)
    cos = (g @ gp) / (g.norm() * gp.norm() + EPS)
    g_perp = g - cos * g.norm() * gp / (gp.norm() + EPS)
    assert g_perp.norm() > 1e-3 * g.norm(), "test problem too degenerate: g nearly parallel to gp"
    torch.testing.assert_close(g_final, gp - alpha * g_perp, rtol=1e-13, atol=1e-15)

    # the component the implementation removed is orthogonal to g_p (official code's sign).
    # Exactly orthogonal without eps; the spec's two "+ eps" leave a residual of about
    # eps * (1/(|g| |g_p|) + 1/|g_p|) * |<g, g_p>| / (|g_perp| |g_p|) (~1e-11 here), allowed for.
    g_perp_impl = (gp - g_final) / alpha
    rel = (g_perp_impl @ gp).abs() / (g_perp_impl.norm() * gp.norm())
    gn, gpn = g.norm(), gp.norm()
    eps_residual = EPS * (1 / (gn * gpn) + 1 / gpn) * (g @ gp).abs() / (g_perp.norm() * gpn)
    assert rel < 1e-12 + 1.01 * eps_residual, f"<g_perp, g_p> relative {rel.item():.3e}"
    # and it has the sign of g's orthogonal part (g_final = g_p - alpha*g_perp, not +)
    assert (g_perp_impl @ g_perp) > 0

    # restore + base step: w1 = w0 - lr * g_final
    torch.testing.assert_close(flat(model.parameters()), w0 - 0.1 * g_final, rtol=0, atol=1e-15)


@pytest.mark.parametrize("api", ["closure", "manual"])
def test_gsam_alpha_zero_is_sam_bitwise(api):
    data = batches(10)
    m1, m2 = mlp(), mlp()
    kw = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
    RUNNERS[api](GSAM(m1.parameters(), rho=0.05, alpha=0.0, **kw), m1, data)
    RUNNERS[api](SAM(m2.parameters(), rho=0.05, **kw), m2, data)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q), f"GSAM(alpha=0) != SAM: {(p - q).abs().max()}"


@pytest.mark.parametrize("name", ["GSAM", "LookSAM"])
def test_alpha_is_not_clobbered_by_base_optimizer_alpha(name):
    """RMSprop (and ASGD) have their own ``alpha`` option: GSAM/LookSAM's alpha=0 must stay 0.

    GSAM(alpha=0) is SAM; LookSAM(alpha=0, k=100) is SAM on step 0 and the plain base step
    afterwards (= SAM with its group rho set to 0, which the rho=0 test shows is exact)."""
    data = batches(4)
    m1, m2 = mlp(), mlp()
    kw = {"lr": 1e-2}
    extra = {"k": 100} if name == "LookSAM" else {}
    opt = make_opt(name, m1.parameters(), torch.optim.RMSprop, alpha=0.0, **extra, **kw)
    run_closure(opt, m1, data)
    sam = SAM(m2.parameters(), torch.optim.RMSprop, rho=0.05, **kw)
    for t, batch in enumerate(data):
        if name == "LookSAM" and t == 1:
            for group in sam.param_groups:
                group["rho"] = 0.0
        run_closure(sam, m2, [batch])
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q), f"{name}(alpha=0, RMSprop) is not alpha=0: {(p - q).abs().max()}"


# --------------------------------------------------------------------------- one-step SAM
@pytest.mark.parametrize("api", ["closure", "manual"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_onestep_is_not_sgd_with_set_to_none_grads(api, adaptive):
    """Seed bug (notes 2.7.1): zero_grad() sets grads to None on torch>=2, and the seed's
    first_step then skipped every parameter, so SAM.v2 was bit-identical to SGD."""
    data = batches(3)
    kw = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
    sgd_model, model = mlp(), mlp()
    sgd = torch.optim.SGD(sgd_model.parameters(), **kw)
    opt = OneStepSAM(model.parameters(), rho=0.5 if adaptive else 0.05, adaptive=adaptive, **kw)
    for t, (x, y) in enumerate(data):
        run_base(sgd, sgd_model, [(x, y)])
        sgd.zero_grad(set_to_none=True)
        RUNNERS[api](opt, model, [(x, y)])
        opt.zero_grad(set_to_none=True)  # the seed script's end-of-iteration zero_grad
        w, w_sgd = flat(model.parameters()), flat(sgd_model.parameters())
        if t == 0:  # e_0 = 0: the first step is exactly the base step
            assert torch.equal(w, w_sgd)
        else:
            assert (w - w_sgd).abs().max() > 1e-6, f"step {t}: one-step SAM degenerated to SGD"


def test_onestep_recurrence_on_quadratic():
    a, b, w0 = quadratic(seed=11)
    lr, rho, steps = 0.1, 0.1, 6
    w = nn.Parameter(w0.clone())
    opt = OneStepSAM([w], torch.optim.SGD, rho=rho, lr=lr)
    calls, losses = [], []
    for _ in range(steps):
        losses.append(opt.step(closure_for(opt, w, quad_loss(a, b), calls)))
    assert len(calls) == steps, f"one closure call per step expected, got {len(calls)}"

    ref, prev = w0.clone(), None
    ref_losses = []
    for _ in range(steps):
        e = torch.zeros_like(ref) if prev is None else rho * prev / (prev.norm() + EPS)
        ref_losses.append(quad_loss(a, b)(ref + e))
        g = a @ (ref + e) - b
        ref = ref - lr * g
        prev = g
    torch.testing.assert_close(w.detach(), ref, rtol=1e-13, atol=1e-14)
    # one-pass steps return the loss at w_t + e_t (the only pass they run)
    for got, want in zip(losses, ref_losses):
        assert got is not None
        torch.testing.assert_close(got.detach(), want, rtol=1e-13, atol=1e-14)


def test_onestep_manual_api_is_single_pass():
    model = mlp()
    data = batches(4)
    opt = OneStepSAM(model.parameters(), lr=0.1)
    assert run_manual(opt, model, data) == [False] * 4


# --------------------------------------------------------------------------- LookSAM
def test_looksam_closure_calls_and_first_step_pattern():
    model = mlp()
    data = batches(10)
    opt = LookSAM(model.parameters(), rho=0.05, k=5, lr=0.1)
    calls = []
    for x, y in data:

        def closure(x=x, y=y):
            calls.append(1)
            opt.zero_grad()
            loss = mse(model, x, y)
            loss.backward()
            return loss

        opt.step(closure)
    assert len(calls) == 12, f"expected 10 + 2 closure calls (steps 0 and 5), got {len(calls)}"

    model2 = mlp()
    opt2 = LookSAM(model2.parameters(), rho=0.05, k=5, lr=0.1)
    assert run_manual(opt2, model2, data) == [t % 5 == 0 for t in range(10)]


@pytest.mark.parametrize("api", ["closure", "manual"])
def test_looksam_reuse_formula_on_quadratic(api):
    a, b, w0 = quadratic(seed=13)
    lr, rho, k, alpha, steps = 0.1, 0.2, 3, 0.7, 7
    w = nn.Parameter(w0.clone())
    log = []
    opt = LookSAM([w], recording(torch.optim.SGD, log), rho=rho, k=k, alpha=alpha, lr=lr)
    loss_fn = quad_loss(a, b)
    for _ in range(steps):
        if api == "closure":
            opt.step(closure_for(opt, w, loss_fn))
        else:
            opt.begin_step()
            loss_fn(w).backward()
            if opt.first_step(zero_grad=True):
                loss_fn(w).backward()
            opt.second_step(zero_grad=True)

    ref, gv = w0.clone(), None
    for t in range(steps):
        g = a @ ref - b
        if t % k == 0:
            e = rho * g / (g.norm() + EPS)
            gp = a @ (ref + e) - b
            cos = (g @ gp) / (g.norm() * gp.norm() + EPS)
            gv = gp - cos * gp.norm() * g / (g.norm() + EPS)
            d = gp
        else:
            d = g + alpha * (g.norm() / (gv.norm() + EPS)) * gv
        torch.testing.assert_close(log[t], d, rtol=1e-12, atol=1e-14, msg=f"step {t}")
        ref = ref - lr * d
    torch.testing.assert_close(w.detach(), ref, rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("api", ["closure", "manual"])
@pytest.mark.parametrize(
    "name,extra",
    [
        ("SAM", {}),
        ("ASAM", {"eta": 0.0}),
        ("ASAM", {"eta": 0.01}),
        ("GSAM", {}),
        ("LookSAM", {}),
        ("OneStepSAM", {}),
        ("OneStepSAM", {"adaptive": True}),
    ],
)
def test_zero_gradient_gives_no_nan(name, extra, api):
    model = mlp()
    w0 = flat(model.parameters())
    opt = make_opt(name, model.parameters(), lr=0.1, momentum=0.9, **extra)

    def zero_loss(m, x, y):
        return 0.0 * mse(m, x, y)

    RUNNERS[api](opt, model, batches(5), loss_fn=zero_loss)
    w = flat(model.parameters())
    assert torch.isfinite(w).all(), f"{name}: NaN/inf after a zero gradient"
    assert torch.equal(w, w0), f"{name}: moved with a zero gradient"


@pytest.mark.parametrize("api", ["closure", "manual"])
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_parameter_without_gradient_is_never_moved(name, api):
    model = mlp()
    unused = nn.Parameter(torch.linspace(-1.0, 1.0, 4, dtype=DT))  # requires_grad, not in loss
    unused0 = unused.detach().clone()
    data = batches(7)
    kw = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}
    opt = make_opt(name, [*model.parameters(), unused], **kw)
    RUNNERS[api](opt, model, data)
    assert torch.equal(unused.detach(), unused0), f"{name} moved a parameter with no gradient"

    # the unused parameter takes no part in the (global) norm: same trajectory without it
    ref_model = mlp()
    RUNNERS[api](make_opt(name, list(ref_model.parameters()), **kw), ref_model, data)
    torch.testing.assert_close(
        flat(model.parameters()), flat(ref_model.parameters()), rtol=1e-14, atol=1e-15
    )


@pytest.mark.parametrize("name", ["SAM", "ASAM", "GSAM", "LookSAM"])
def test_per_group_rho_uses_global_norm(name):
    model = mlp(seed=2)
    ((x, y),) = batches(1, seed=4)
    first, second = list(model[0].parameters()), list(model[2].parameters())
    w_first0, w_second0 = flat(first), flat(second)
    rho = 0.5 if name == "ASAM" else 0.05
    opt = make_opt(
        name, [{"params": first}, {"params": second, "rho": 0.0}], rho=rho, lr=0.1, momentum=0.9
    )
    opt.begin_step()
    mse(model, x, y).backward()
    g_first, g_second = flat([p.grad for p in first]), flat([p.grad for p in second])
    assert opt.first_step(zero_grad=True) is True
    assert torch.equal(flat(second), w_second0), "group with rho=0 was perturbed"
    if name == "ASAM":
        eta = 0.01
        t_first, t_second = w_first0.abs() + eta, w_second0.abs() + eta
        norm = torch.cat([t_first * g_first, t_second * g_second]).norm()
        e = rho * t_first * t_first * g_first / (norm + EPS)
    else:
        norm = torch.cat([g_first, g_second]).norm()
        e = rho * g_first / (norm + EPS)
    torch.testing.assert_close(flat(first) - w_first0, e, rtol=1e-12, atol=1e-15)
    mse(model, x, y).backward()
    opt.second_step(zero_grad=True)
    assert not torch.equal(flat(second), w_second0)  # still trained by the base optimizer


def test_per_group_rho_onestep_uses_global_norm():
    model = mlp(seed=2)
    data = batches(2, seed=4)
    first, second = list(model[0].parameters()), list(model[2].parameters())
    rho = 0.05
    opt = OneStepSAM([{"params": first}, {"params": second, "rho": 0.0}], rho=rho, lr=0.1)
    (x, y) = data[0]
    opt.begin_step()
    mse(model, x, y).backward()
    g_first, g_second = flat([p.grad for p in first]), flat([p.grad for p in second])
    assert opt.first_step(zero_grad=True) is False
    opt.second_step(zero_grad=True)

    w_first1, w_second1 = flat(first), flat(second)
    (x, y) = data[1]
    opt.begin_step()  # applies e_1 = rho_group * g_0 / (||g_0|| + eps)
    norm = torch.cat([g_first, g_second]).norm()
    torch.testing.assert_close(
        flat(first) - w_first1, rho * g_first / (norm + EPS), rtol=1e-12, atol=1e-15
    )
    assert torch.equal(flat(second), w_second1), "group with rho=0 was perturbed"
    mse(model, x, y).backward()
    opt.first_step(zero_grad=True)
    opt.second_step(zero_grad=True)


# --------------------------------------------------------------------------- kernels
def test_kernels_grad_norm():
    kernels = pytest.importorskip("kernels")
    # the brief names it grad_norm; the kernels module exports global_norm (same signature)
    fn = getattr(kernels, "grad_norm", None) or getattr(kernels, "global_norm", None)
    if fn is None:
        pytest.skip("kernels.grad_norm / kernels.global_norm not available")
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=gen, dtype=DT) for s in [(3, 4), (5,), (2, 2, 2)]]
    params = [torch.randn(g.shape, generator=gen, dtype=DT) for g in grads]
    params[1][0] = 0.0
    g_flat = torch.cat([g.reshape(-1) for g in grads])
    w_flat = torch.cat([p.reshape(-1) for p in params])
    got = fn(grads, impl="loop")
    torch.testing.assert_close(torch.as_tensor(got, dtype=DT), g_flat.norm(), rtol=1e-14, atol=0)
    for eta in (0.0, 0.01):
        got = fn(grads, params=params, eta=eta, impl="loop")
        want = ((w_flat.abs() + eta) * g_flat).norm()
        torch.testing.assert_close(torch.as_tensor(got, dtype=DT), want, rtol=1e-14, atol=0)
