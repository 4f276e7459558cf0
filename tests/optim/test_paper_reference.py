"""Every SAM-family optimizer against a step-by-step float64 reference written from the papers.

The reference works on the flat parameter vector of a small 2-layer tanh MLP on one fixed
random regression batch, computes gradients with ``torch.autograd.grad`` on that vector, and
implements the base optimizers (SGD with momentum and weight decay, Adam with bias correction)
by hand, exactly as ``torch.optim.SGD`` / ``torch.optim.Adam`` define them. Nothing here
imports or reuses samlab / kernels code except the optimizers under test. ``eps = 1e-12`` sits
where ``docs/closure-protocol.md`` puts it:

* SAM (Foret et al. 2021): ``e = rho g / (||g|| + eps)``; follow ``g_p = grad L(w + e)``.
* ASAM (Kwon et al. 2021): ``T = |w| + eta``, ``e = rho T^2 g / (||T g|| + eps)``.
* GSAM (Zhuang et al. 2022): follow ``g_p - alpha g_perp``,
  ``g_perp = g - <g, g_p> / (||g|| ||g_p|| + eps) * ||g|| * g_p / (||g_p|| + eps)``.
* LookSAM (Liu et al. 2022): every k-th step as SAM and keep
  ``g_v = g_p - <g, g_p> / (||g|| ||g_p|| + eps) * ||g_p|| * g / (||g|| + eps)``;
  otherwise follow ``g + alpha ||g|| / (||g_v|| + eps) * g_v``.
* one-step SAM (SAM.v2 / S^2-SAM, Ji et al. 2024): ``e_t = rho g_{t-1} / (||g_{t-1}|| + eps)``
  (``e_0 = 0``; adaptive: ``T = |w_t| + eta``, ``e_t = rho T^2 g_{t-1} / (||T g_{t-1}|| + eps)``),
  follow ``g_t = grad L(w_t + e_t)``.
* WSAM (Yue et al. 2023), ``a = gamma / (1 - gamma)``: coupled, follow ``g + a (g_p - g)``;
  decoupled, the base step with ``g`` and then ``w <- w - lr a (g_p - g)``.
* FriendlySAM (Li et al. 2024): ``m_t = lmbda m_{t-1} + (1 - lmbda) g_t`` (``m_0 = 0``),
  ``e = rho d / (||d|| + eps)`` with ``d = g_t - sigma m_t``; follow ``g_p``.
* bSAM (Möllenhoff & Khan 2023, Algorithm 1): ``theta = w + z / sqrt(N s)``,
  ``g = grad L(theta)``, ``e = rho g / s``, ``s <- b2 s + (1 - b2)(sqrt(s) |g| + delta +
  gamma)``, ``m <- b1 m + (1 - b1)(grad L(w + e) + delta w)``, ``w <- w - lr m / s``; ``z``
  drawn per parameter as ``torch.randn(shape, generator)`` from a generator seeded as the
  optimizer's (the one stream both sides share).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samlab.optim import ASAM, BSAM, GSAM, SAM, WSAM, FriendlySAM, LookSAM, OneStepSAM

DT = torch.float64
EPS = 1e-12
D_IN, HIDDEN, D_OUT, BATCH = 4, 8, 3, 16
SHAPES = [(HIDDEN, D_IN), (HIDDEN,), (D_OUT, HIDDEN), (D_OUT,)]
STEPS = 20
TOL = 1e-14  # measured worst: 4.4e-16 (SAM, ASAM, GSAM, one-step), 2.2e-15 (LookSAM)

SGD_KW = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
ADAM_KW = {"lr": 0.01}


# --------------------------------------------------------------------------- problem
def problem():
    gen = torch.Generator().manual_seed(2024)
    x = torch.randn(BATCH, D_IN, generator=gen, dtype=DT)
    y = torch.randn(BATCH, D_OUT, generator=gen, dtype=DT)
    pieces = []
    for shape, fan_in in zip(SHAPES, [D_IN, D_IN, HIDDEN, HIDDEN]):
        pieces.append(torch.randn(shape, generator=gen, dtype=DT).reshape(-1) / fan_in**0.5)
    return torch.cat(pieces), x, y


def unflatten(w):
    out, i = [], 0
    for shape in SHAPES:
        n = math.prod(shape)
        out.append(w[i : i + n].view(shape))
        i += n
    return out


def loss_flat(w, x, y):
    w1, b1, w2, b2 = unflatten(w)
    out = F.linear(torch.tanh(F.linear(x, w1, b1)), w2, b2)
    return ((out - y) ** 2).mean()


def grad_flat(w, x, y):
    w = w.detach().clone().requires_grad_(True)
    loss = loss_flat(w, x, y)
    (g,) = torch.autograd.grad(loss, w)
    return g, loss.detach()


def norm(v):
    return torch.sqrt((v * v).sum())


# --------------------------------------------------------------------------- base optimizers
class RefSGD:
    """torch.optim.SGD: d = g + wd w; buf = d (first step) else momentum buf + d; w -= lr buf."""

    def __init__(self, lr, momentum=0.0, weight_decay=0.0):
        self.lr, self.momentum, self.wd = lr, momentum, weight_decay
        self.buf = None

    def step(self, w, g):
        d = g + self.wd * w if self.wd else g
        if self.momentum:
            self.buf = d.clone() if self.buf is None else self.momentum * self.buf + d
            d = self.buf
        return w - self.lr * d


class RefAdam:
    """torch.optim.Adam (no amsgrad, no weight decay): bias-corrected first/second moments."""

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8):
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = self.v = None
        self.t = 0

    def step(self, w, g):
        if self.m is None:
            self.m, self.v = torch.zeros_like(w), torch.zeros_like(w)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat = self.m / (1 - self.b1**self.t)
        denom = torch.sqrt(self.v) / math.sqrt(1 - self.b2**self.t) + self.eps
        return w - self.lr * m_hat / denom


def ref_base(base):
    return RefSGD(**SGD_KW) if base == "sgd" else RefAdam(**ADAM_KW)


# --------------------------------------------------------------------------- reference methods
def ascent(w, g, rho, adaptive, eta):
    if adaptive:
        t = w.abs() + eta
        return rho * t * t * g / (norm(t * g) + EPS)
    return rho * g / (norm(g) + EPS)


def reference(cfg, base, w0, x, y, steps=STEPS):
    """Weights after each step and the loss each step(closure) should return."""
    method = cfg["method"]
    rho, adaptive, eta = cfg["rho"], cfg.get("adaptive", False), cfg.get("eta", 0.01)
    opt = ref_base(base)
    w = w0.clone()
    traj, losses = [], []
    prev = g_v = None
    ema = torch.zeros_like(w)
    for t in range(steps):
        if method == "OneStepSAM":
            e = torch.zeros_like(w) if prev is None else ascent(w, prev, rho, adaptive, eta)
            g, loss = grad_flat(w + e, x, y)
            prev = d = g
        elif method == "LookSAM" and t % cfg["k"] != 0:
            g, loss = grad_flat(w, x, y)
            d = g + cfg["alpha"] * (norm(g) / (norm(g_v) + EPS)) * g_v
        elif method == "FriendlySAM":
            g, loss = grad_flat(w, x, y)
            ema = cfg["lmbda"] * ema + (1 - cfg["lmbda"]) * g
            d, _ = grad_flat(w + ascent(w, g - cfg["sigma"] * ema, rho, adaptive, eta), x, y)
        elif method == "WSAM":
            g, loss = grad_flat(w, x, y)
            gp, _ = grad_flat(w + ascent(w, g, rho, adaptive, eta), x, y)
            a = cfg["gamma"] / (1 - cfg["gamma"])
            if cfg["decouple"]:
                w = opt.step(w, g) - opt.lr * a * (gp - g)
                traj.append(w)
                losses.append(loss)
                continue
            d = g + a * (gp - g)
        else:
            g, loss = grad_flat(w, x, y)
            gp, _ = grad_flat(w + ascent(w, g, rho, adaptive, eta), x, y)
            d = gp
            if method in ("GSAM", "LookSAM"):
                cos = (g @ gp) / (norm(g) * norm(gp) + EPS)
            if method == "GSAM":
                g_perp = g - cos * norm(g) * gp / (norm(gp) + EPS)
                d = gp - cfg["alpha"] * g_perp
            elif method == "LookSAM":
                g_v = gp - cos * norm(gp) * g / (norm(g) + EPS)
        w = opt.step(w, d)
        traj.append(w)
        losses.append(loss)
    return traj, losses


# --------------------------------------------------------------------------- samlab side
CASES = {
    "SAM": {"method": "SAM", "rho": 0.05},
    "ASAM-eta0.01": {"method": "ASAM", "rho": 0.5, "eta": 0.01, "adaptive": True},
    "ASAM-eta0": {"method": "ASAM", "rho": 0.5, "eta": 0.0, "adaptive": True},
    "GSAM": {"method": "GSAM", "rho": 0.05, "alpha": 0.4},
    "LookSAM-k3": {"method": "LookSAM", "rho": 0.05, "k": 3, "alpha": 0.7},
    "OneStepSAM": {"method": "OneStepSAM", "rho": 0.05},
    "OneStepSAM-adaptive": {"method": "OneStepSAM", "rho": 0.5, "eta": 0.01, "adaptive": True},
    "WSAM": {"method": "WSAM", "rho": 0.05, "gamma": 0.9, "decouple": True},
    "WSAM-coupled": {"method": "WSAM", "rho": 0.05, "gamma": 0.8, "decouple": False},
    "FriendlySAM": {"method": "FriendlySAM", "rho": 0.05, "sigma": 1.0, "lmbda": 0.9},
    "FriendlySAM-adaptive": {
        "method": "FriendlySAM",
        "rho": 0.5,
        "sigma": 0.5,
        "lmbda": 0.6,
        "eta": 0.01,
        "adaptive": True,
    },
}


def build(cfg, params, base):
    cls, kw = (torch.optim.SGD, SGD_KW) if base == "sgd" else (torch.optim.Adam, ADAM_KW)
    method = cfg["method"]
    if method == "SAM":
        return SAM(params, cls, rho=cfg["rho"], **kw)
    if method == "ASAM":
        return ASAM(params, cls, rho=cfg["rho"], eta=cfg["eta"], **kw)
    if method == "GSAM":
        return GSAM(params, cls, rho=cfg["rho"], alpha=cfg["alpha"], rho_schedule=None, **kw)
    if method == "LookSAM":
        return LookSAM(params, cls, rho=cfg["rho"], k=cfg["k"], alpha=cfg["alpha"], **kw)
    if method == "WSAM":
        return WSAM(params, cls, rho=cfg["rho"], gamma=cfg["gamma"], decouple=cfg["decouple"], **kw)
    adaptive, eta = cfg.get("adaptive", False), cfg.get("eta", 0.01)
    if method == "FriendlySAM":
        knobs = dict(sigma=cfg["sigma"], lmbda=cfg["lmbda"], adaptive=adaptive, eta=eta)
        return FriendlySAM(params, cls, rho=cfg["rho"], **knobs, **kw)
    return OneStepSAM(params, cls, rho=cfg["rho"], adaptive=adaptive, eta=eta, **kw)


def model_from(w0):
    model = nn.Sequential(
        nn.Linear(D_IN, HIDDEN, dtype=DT), nn.Tanh(), nn.Linear(HIDDEN, D_OUT, dtype=DT)
    )
    with torch.no_grad():
        for p, piece in zip(model.parameters(), unflatten(w0)):
            p.copy_(piece)
    return model


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def samlab_trajectory(cfg, base, api, w0, x, y, steps=STEPS):
    return trajectory(lambda params: build(cfg, params, base), api, w0, x, y, steps)[:2]


def trajectory(make, api, w0, x, y, steps=STEPS):
    """(weights after each step, the loss each step returned, the optimizer): ``make(params)``
    driven through ``step(closure)`` or the manual two-call API."""
    model = model_from(w0)
    opt = make(model.parameters())

    def loss_fn():
        return ((model(x) - y) ** 2).mean()

    traj, losses = [], []
    for _ in range(steps):
        if api == "closure":

            def closure():
                opt.zero_grad()
                loss = loss_fn()
                loss.backward()
                return loss

            losses.append(opt.step(closure))
        else:
            opt.begin_step()
            loss = loss_fn()
            loss.backward()
            if opt.first_step(zero_grad=True):
                loss_fn().backward()
            opt.second_step(zero_grad=True)
            losses.append(loss.detach())
        traj.append(flat_params(model))
    return traj, losses, opt


@pytest.fixture(scope="module")
def data():
    return problem()


@pytest.mark.parametrize("api", ["closure", "manual"])
@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_paper_reference(case, base, api, data):
    w0, x, y = data
    cfg = CASES[case]
    ref, ref_losses = reference(cfg, base, w0, x, y)
    got, losses = samlab_trajectory(cfg, base, api, w0, x, y)
    # the run must actually move: a frozen optimizer would trivially "match" nothing
    assert (ref[-1] - w0).abs().max() > 1e-3
    worst = 0.0
    for t, (a, b) in enumerate(zip(got, ref)):
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        assert diff <= TOL, f"{case}/{base}/{api}: step {t} max |diff| = {diff:.3e}"
    # the loss of the pass each step ran first (clean, or at w_t + e_t for one-step SAM)
    for t, (a, b) in enumerate(zip(losses, ref_losses)):
        assert a is not None, f"{case}/{api}: step {t} returned None"
        a = a.detach() if isinstance(a, torch.Tensor) else a
        assert abs(float(a) - float(b)) <= TOL, f"{case}/{api}: step {t} loss {a} != {b}"


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_methods_differ_from_each_other(base, data):
    """Guards the reference itself: the variants must not collapse onto one trajectory."""
    w0, x, y = data
    finals = {name: reference(cfg, base, w0, x, y)[0][-1] for name, cfg in CASES.items()}
    plain = reference({"method": "OneStepSAM", "rho": 0.0}, base, w0, x, y)[0][-1]
    names = sorted(finals)
    for i, a in enumerate(names):
        assert (finals[a] - plain).abs().max() > 1e-6, f"{a} equals the base optimizer"
        for b in names[i + 1 :]:
            assert (finals[a] - finals[b]).abs().max() > 1e-8, f"{a} == {b}"


# --------------------------------------------------------------------------- bSAM
BSAM_KW = {"num_data": 500, "lr": 0.05, "betas": (0.8, 0.9), "weight_decay": 1e-3, "rho": 0.05}
BSAM_KW.update(damping=0.1, init_precision=2.0)


def bsam_reference(w0, x, y, *, num_data, lr, betas, weight_decay, rho, damping, init_precision,
                   seed=0, steps=STEPS):  # fmt: skip
    """Weights after each step and the loss at each step's posterior sample."""
    gen = torch.Generator().manual_seed(seed)
    b1, b2 = betas
    w, m, s = w0.clone(), torch.zeros_like(w0), torch.full_like(w0, init_precision)
    traj, losses = [], []
    for _ in range(steps):
        z = torch.cat([torch.randn(shape, generator=gen, dtype=DT).reshape(-1) for shape in SHAPES])
        g, loss = grad_flat(w + z / torch.sqrt(num_data * s), x, y)
        e = rho * g / s
        s = b2 * s + (1 - b2) * (torch.sqrt(s) * g.abs() + weight_decay + damping)
        g_e, _ = grad_flat(w + e, x, y)
        m = b1 * m + (1 - b1) * (g_e + weight_decay * w)
        w = w - lr * m / s
        traj.append(w)
        losses.append(loss)
    return traj, losses, s


@pytest.mark.parametrize("api", ["closure", "manual"])
@pytest.mark.parametrize("rho", [0.05, 0.0])
def test_bsam_matches_paper_reference(api, rho, data):
    """20 steps of bSAM against Algorithm 1 in float64: every update starts from the mean
    (the noise is removed, or the trajectories would differ by about sigma = 0.03), the
    posterior variance is ``1 / (N s)``. ``rho = 0``: the second pass is at ``w`` exactly."""
    w0, x, y = data
    kw = {**BSAM_KW, "rho": rho}
    ref, ref_losses, ref_s = bsam_reference(w0, x, y, **kw)
    got, losses, opt = trajectory(lambda ps: BSAM(ps, impl="loop", **kw), api, w0, x, y)
    assert (ref[-1] - w0).abs().max() > 1e-3
    for t, (a, b) in enumerate(zip(got, ref)):
        diff = (a - b).abs().max().item()
        assert diff <= TOL, f"bSAM/{api}/rho={rho}: step {t} max |diff| = {diff:.3e}"
    for t, (a, b) in enumerate(zip(losses, ref_losses)):
        assert abs(float(a.detach()) - float(b)) <= TOL, f"bSAM/{api}: step {t} loss {a} != {b}"
    variance = torch.cat([v.reshape(-1) for v in opt.posterior_variance()])
    torch.testing.assert_close(variance, 1 / (kw["num_data"] * ref_s), rtol=1e-13, atol=0)


def test_methods_differ_from_the_base_optimizers(data):
    """Guards the new references: WSAM, FriendlySAM and bSAM move away from what their limits
    (base optimizer, SAM, no ascent) would do."""
    w0, x, y = data
    sam = reference(CASES["SAM"], "sgd", w0, x, y)[0][-1]
    plain = reference({"method": "OneStepSAM", "rho": 0.0}, "sgd", w0, x, y)[0][-1]
    for name in ("WSAM", "WSAM-coupled", "FriendlySAM"):
        final = reference(CASES[name], "sgd", w0, x, y)[0][-1]
        assert (final - sam).abs().max() > 1e-6 and (final - plain).abs().max() > 1e-6, name
    with_rho = bsam_reference(w0, x, y, **BSAM_KW)[0][-1]
    without = bsam_reference(w0, x, y, **{**BSAM_KW, "rho": 0.0})[0][-1]
    assert (with_rho - without).abs().max() > 1e-6
