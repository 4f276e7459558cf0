"""WSAM, FriendlySAM and bSAM: their limiting cases, exactly, and what pytorch-optimizer gets
wrong (the paper references are in ``test_paper_reference.py``, the contract in the battery).

* WSAM ``gamma = 0`` is the base optimizer bit for bit (one pass); ``gamma = 1/2`` coupled is
  SAM bit for bit, with SGD (momentum, weight decay) and Adam bases, on the loop and foreach
  paths; decoupled ``gamma = 1/2`` over plain SGD is SAM up to rounding.
* FriendlySAM ``sigma = 0`` is SAM bit for bit; ``rho = 0`` of both is the base optimizer.
* bSAM: ``rho = 0`` puts the second pass at the mean exactly; the noise of the first pass is
  gone before the update; a parameter whose ``.grad`` is None is skipped; the posterior
  variance and ``sampled_weights()`` are what they say.
* Norms of float64 gradients are computed in float64 (pytorch-optimizer's are float32).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samlab.optim import BSAM, SAM, WSAM, FriendlySAM, StepRecorder, create_optimizer

DT = torch.float64
SGD_KW = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
ADAM_KW = {"lr": 0.01}
BASES = {"sgd": (torch.optim.SGD, SGD_KW), "adam": (torch.optim.Adam, ADAM_KW)}


def mlp(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6, dtype=DT), nn.Tanh(), nn.Linear(6, 3, dtype=DT))


def batch(t):
    gen = torch.Generator().manual_seed(50 + t)
    return torch.randn(8, 4, generator=gen, dtype=DT), torch.randn(8, 3, generator=gen, dtype=DT)


def run(model, opt, steps=6, log=None):
    """``steps`` closure steps; ``log`` receives the weights each pass saw."""
    calls = 0
    for t in range(steps):
        x, y = batch(t)

        def closure(x=x, y=y):
            nonlocal calls
            calls += 1
            opt.zero_grad()
            if log is not None:
                log.append([p.detach().clone() for p in model.parameters()])
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
    return calls


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def trajectory(make, steps=6):
    model = mlp()
    calls = run(model, make(model.parameters()), steps)
    return flat(model), calls


# --------------------------------------------------------------------------- exact limits
@pytest.mark.parametrize("impl", ["loop", "foreach"])
@pytest.mark.parametrize("base", sorted(BASES))
def test_limits_are_exact(base, impl):
    cls, kw = BASES[base]
    plain, plain_calls = trajectory(lambda ps: cls(ps, **kw))
    sam, _ = trajectory(lambda ps: SAM(ps, cls, impl=impl, **kw))
    cases = {
        "WSAM gamma=0 (decoupled)": (lambda ps: WSAM(ps, cls, gamma=0.0, impl=impl, **kw), plain),
        "WSAM gamma=0 (coupled)": (
            lambda ps: WSAM(ps, cls, gamma=0.0, decouple=False, impl=impl, **kw),
            plain,
        ),
        "WSAM rho=0": (lambda ps: WSAM(ps, cls, rho=0.0, impl=impl, **kw), plain),
        "FriendlySAM rho=0": (lambda ps: FriendlySAM(ps, cls, rho=0.0, impl=impl, **kw), plain),
        "WSAM gamma=1/2 coupled": (
            lambda ps: WSAM(ps, cls, gamma=0.5, decouple=False, impl=impl, **kw),
            sam,
        ),
        "FriendlySAM sigma=0": (lambda ps: FriendlySAM(ps, cls, sigma=0.0, impl=impl, **kw), sam),
    }
    for label, (make, expected) in cases.items():
        got, calls = trajectory(make)
        assert torch.equal(got, expected), f"{label}: max |diff| {(got - expected).abs().max()}"
        if expected is plain:
            assert calls == plain_calls, f"{label}: {calls} closure calls (one pass expected)"
    assert not torch.equal(sam, plain)
    moved = [trajectory(lambda ps: WSAM(ps, cls, impl=impl, **kw))[0]]
    moved.append(trajectory(lambda ps: FriendlySAM(ps, cls, impl=impl, **kw))[0])
    assert all(not torch.equal(m, sam) and not torch.equal(m, plain) for m in moved)


def test_decoupled_wsam_at_one_half_over_plain_sgd_is_sam():
    """The decoupled update adds ``-lr (g_p - g)`` after SGD's ``-lr g``: SAM's ``-lr g_p`` up
    to one rounding per step (a base with momentum would accumulate ``g`` instead)."""
    sam, _ = trajectory(lambda ps: SAM(ps, torch.optim.SGD, lr=0.05))
    wsam, _ = trajectory(lambda ps: WSAM(ps, torch.optim.SGD, gamma=0.5, lr=0.05))
    torch.testing.assert_close(wsam, sam, rtol=1e-14, atol=1e-15)
    momentum, _ = trajectory(lambda ps: WSAM(ps, torch.optim.SGD, gamma=0.5, **SGD_KW))
    sam_momentum, _ = trajectory(lambda ps: SAM(ps, torch.optim.SGD, **SGD_KW))
    assert (momentum - sam_momentum).abs().max() > 1e-8


def test_friendlysam_keeps_its_ema_in_the_state():
    model = mlp()
    opt = FriendlySAM(model.parameters(), torch.optim.SGD, lmbda=0.5, **SGD_KW)
    log = []
    run(model, opt, 1, log)
    x, y = batch(0)
    probe = mlp()
    probe.load_state_dict(dict(zip(dict(probe.named_parameters()), log[0])))
    ((probe(x) - y) ** 2).mean().backward()
    for p, q in zip(model.parameters(), probe.parameters()):  # m_1 = (1 - lmbda) g_1
        torch.testing.assert_close(opt.state[p]["grad_ema"], 0.5 * q.grad, rtol=1e-15, atol=0)


# --------------------------------------------------------------------------- bSAM
class WithUnused(nn.Module):
    """A trainable layer the loss never uses and a frozen one."""

    def __init__(self):
        super().__init__()
        self.net = mlp()
        with torch.random.fork_rng():
            torch.manual_seed(3)
            self.unused = nn.Linear(2, 2, dtype=DT)
            self.frozen = nn.Linear(2, 2, dtype=DT).requires_grad_(False)

    def forward(self, x):
        return self.net(x)


def test_bsam_samples_removes_the_noise_and_skips_params_without_grad():
    model = WithUnused()
    opt = BSAM(model.parameters(), num_data=50, lr=0.05, rho=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = []
    for _ in range(3):
        start = [p.detach().clone() for p in model.parameters()]
        run(model, opt, 1, log)
        sample, second = log[-2], log[-1]
        for i, (w, b) in enumerate(zip(start, second)):
            assert torch.equal(b, w), f"rho=0: pass 2 must see the mean exactly (param {i})"
        names = [n for n, _ in model.named_parameters()]
        moved = {n for n, w, a in zip(names, start, sample) if not torch.equal(w, a)}
        assert moved == {n for n in names if not n.startswith("frozen")}, moved
        assert all(p.grad is None for p in model.unused.parameters())
    params = dict(model.named_parameters())
    for name in ("unused.weight", "unused.bias", "frozen.weight", "frozen.bias"):
        assert torch.equal(params[name], before[name]), f"{name} moved"
    assert not torch.equal(params["net.0.weight"], before["net.0.weight"])
    variances = dict(zip(params, opt.posterior_variance()))
    assert torch.equal(variances["frozen.weight"], torch.zeros(2, 2, dtype=DT))
    assert torch.equal(variances["unused.bias"], torch.full((2,), 1 / 50, dtype=DT))
    prior = torch.full_like(variances["net.0.weight"], 1 / 50)
    assert (variances["net.0.weight"] != prior).all()  # s moved from 1 towards |g| + damping


@pytest.mark.parametrize("impl", ["loop", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bsam_first_pass_is_the_mean_plus_seeded_noise_bit_for_bit(impl, dtype):
    """Pass 1 sees ``w + z / sqrt(N s)`` exactly, ``z`` drawn per trainable parameter in
    ``param_groups`` order from a generator of the optimizer's seed (as the float64 paper
    reference draws it), ``s`` the precision before the step; a frozen weight is not drawn
    for; the mean is back exactly before the update."""
    model = mlp().to(dtype)
    model[0].bias.requires_grad_(False)
    opt = BSAM(model.parameters(), num_data=40, lr=0.05, rho=0.05, seed=11, impl=impl)
    gen = torch.Generator().manual_seed(11)
    for t in range(3):
        params = list(model.parameters())
        before = [p.detach().clone() for p in params]
        state = opt.base_optimizer.state  # s is updated in place during the step: copy it
        prec = [state[p]["precision"].clone() if p in state else None for p in params]
        log = []
        x, y = (a.to(dtype) for a in batch(t))

        def closure(x=x, y=y, log=log):
            opt.zero_grad()
            log.append([p.detach().clone() for p in model.parameters()])
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
        for i, (p, w, s, seen) in enumerate(zip(params, before, prec, log[0])):
            if not p.requires_grad:
                assert torch.equal(seen, w), f"step {t}: the frozen weight {i} moved"
                continue
            z = torch.randn(p.shape, generator=gen, dtype=dtype)
            s = torch.ones_like(w) if s is None else s
            assert torch.equal(seen, w + z / torch.sqrt(s * 40.0)), f"step {t}, weight {i}"
    assert torch.equal(opt.state_dict()["samlab"]["rng"]["cpu"], gen.get_state())


def test_bsam_sampled_weights_restores_the_mean_exactly():
    model = mlp()
    opt = BSAM(model.parameters(), num_data=20, lr=0.05)
    run(model, opt, 2)
    mean = flat(model)
    gen = torch.Generator().manual_seed(9)
    samples = []
    for _ in range(200):
        with opt.sampled_weights(generator=gen):
            samples.append(flat(model))
        assert torch.equal(flat(model), mean)
    spread = torch.stack(samples).var(dim=0)
    variance = torch.cat([v.reshape(-1) for v in opt.posterior_variance()])
    assert torch.allclose(spread, variance, rtol=0.3)  # 200 samples: about 10% error
    after_training = opt.state_dict()["samlab"]["rng"]["cpu"]
    with opt.sampled_weights():
        pass
    assert torch.equal(opt.state_dict()["samlab"]["rng"]["cpu"], after_training)


def test_bsam_refuses_a_missing_num_data_and_a_base():
    with pytest.raises(ValueError, match="num_data"):
        create_optimizer("bsam", mlp().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="base"):
        create_optimizer("bsam", mlp().parameters(), num_data=10, base="sgd")
    with pytest.raises(ValueError, match="betas"):
        BSAM(mlp().parameters(), num_data=10, betas=(0.9, 1.0))


# --------------------------------------------------------------------------- float64 norms
FLOAT64_KW = {"wsam": {}, "friendlysam": {"sigma": 0.0}, "bsam": {"num_data": 1e30}}


@pytest.mark.parametrize("name", sorted(FLOAT64_KW))
def test_float64_gradient_norms_stay_float64(name):
    """The recorded gradient norm of float64 parameters is float64 and exact to rounding (a
    float32 norm is off by about 1e-8 relative; pytorch-optimizer's SAM family computes its
    norms in float32). FriendlySAM with sigma = 0 perturbs along g; bSAM's noise at
    N = 1e30 moves the sample by about 1e-15."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(20_000, dtype=DT))
    target = torch.randn(20_000, dtype=DT) * 1e-3
    opt = create_optimizer(name, [w], lr=0.01, rho=0.05, **FLOAT64_KW[name])
    recorder = StepRecorder(opt)
    scale = 1.000000123

    def closure():
        opt.zero_grad()
        loss = ((w - target) ** 2).sum() * scale
        loss.backward()
        return loss

    grad = 2 * scale * (w.detach() - target)
    expected = float(torch.linalg.vector_norm(grad))
    opt.step(closure)
    assert opt.last_step["grad_norm"].dtype == DT
    assert abs(recorder.records[-1]["grad_norm"] - expected) <= 1e-14 * expected
    as_float32 = float(torch.linalg.vector_norm(grad.float()))
    assert abs(as_float32 - expected) > 1e-11 * expected  # what a float32 norm would be off
