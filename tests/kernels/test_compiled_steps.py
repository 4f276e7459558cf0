"""The whole-phase compiled functions of ``kernels.compiled`` against their references.

* ``sgd_step_`` against ``torch.optim.SGD.step`` itself: bit-exact in float32 and float64 for
  every option (momentum, dampening, nesterov, weight decay, maximize, per-group values).
* ``ascent_into`` against the loop's ``global_norm`` + ``perturb_`` (float64, tight).
* ``gsam_sgd_step_`` against the loop's ``gsam_decompose_`` followed by ``SGD.step``.
* the two-level reductions across their row boundary.

Skipped with the reason where no C++ compiler is available.
"""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import compiled

pytestmark = pytest.mark.skipif(
    not compiled.compiler_available(), reason="no C++ compiler for torch.compile here"
)

F64_RTOL = 1e-13
#: 0-d, one element, odd lengths and a tensor longer than one reduction row (4096)
SHAPES = [(3, 5), (), (1,), (7,), (4099,), (2, 3, 2)]
SGD_OPTIONS = [
    dict(momentum=0.0),
    dict(momentum=0.9, weight_decay=5e-4),
    dict(momentum=0.9, dampening=0.1, weight_decay=1e-2, maximize=True),
    dict(momentum=0.9, nesterov=True, weight_decay=5e-4),
    dict(momentum=0.0, weight_decay=3e-3),
]


def tensors(seed, dtype=torch.float64, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


def fn(name):
    try:
        return compiled.compiled(name)
    except RuntimeError as err:
        pytest.skip(f"torch.compile unavailable: {err}")


def sgd_spec(groups):
    return tuple(
        (
            len(g["params"]),
            float(g["weight_decay"]),
            float(g["momentum"]),
            float(g["dampening"]),
            bool(g["nesterov"]),
            bool(g["maximize"]),
        )
        for g in groups
    )


def sgd_inputs(opt):
    """(params, grads, bufs, lrs, spec) of ``opt`` (a torch.optim.SGD), as samlab builds them."""
    params = [p for g in opt.param_groups for p in g["params"]]
    bufs = [
        opt.state[p]["momentum_buffer"] if g["momentum"] != 0 else None
        for g in opt.param_groups
        for p in g["params"]
    ]
    lrs = [torch.tensor(g["lr"], dtype=torch.float64) for g in opt.param_groups]
    return params, [p.grad for p in params], bufs, lrs, sgd_spec(opt.param_groups)


def two_groups(dtype, options, seed=0):
    ws = tensors(seed, dtype)
    params = [torch.nn.Parameter(w) for w in ws]
    return params, [
        {"params": params[:3], "lr": 0.0123, **options},
        {"params": params[3:], "lr": 0.07, **{**options, "weight_decay": 0.0}},
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", SGD_OPTIONS)
def test_sgd_step_is_bit_exact_with_torch_sgd(dtype, options):
    ref_params, ref_groups = two_groups(dtype, options)
    got_params, got_groups = two_groups(dtype, options)
    ref = torch.optim.SGD(ref_groups)
    got = torch.optim.SGD(got_groups)  # its first step creates the buffers, as in samlab
    step = fn("sgd_step_")
    for t in range(4):
        for i, (p, q) in enumerate(zip(ref_params, got_params)):
            p.grad = tensors(100 + 10 * t + i, dtype)[i]
            q.grad = p.grad.clone()
        ref.step()
        if t == 0:
            got.step()
        else:
            with torch.no_grad():
                step(*sgd_inputs(got))
        for p, q in zip(ref_params, got_params):
            assert torch.equal(p, q), f"step {t}: compiled SGD differs from torch.optim.SGD"
        for p, q in zip(ref_params, got_params):
            if ref.state[p]:
                assert torch.equal(ref.state[p]["momentum_buffer"], got.state[q]["momentum_buffer"])


def test_sgd_step_keeps_the_gradients_when_asked():
    params, groups = two_groups(torch.float64, SGD_OPTIONS[1])
    opt = torch.optim.SGD(groups)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    keep = [torch.full_like(p, 7.0) for p in params]
    grads = [p.grad.clone() for p in params]
    with torch.no_grad():
        fn("sgd_step_")(*sgd_inputs(opt), keep)
    assert all(torch.equal(k, g) for k, g in zip(keep, grads))


@pytest.mark.parametrize("adaptive", [False, True])
def test_ascent_into_matches_the_loop(adaptive):
    """Two segments with their own rho and eps (and eta for ASAM); the norm is global."""
    ws, gs = tensors(1), tensors(2)
    split = 3
    rhos = [0.05, 0.2]
    epss = [1e-12, 1e-3]
    eta = 0.01 if adaptive else None
    spec = ((split, epss[0], eta), (len(ws) - split, epss[1], eta))
    out = [torch.empty_like(w) for w in ws]
    norm = fn("ascent_into")(
        out, ws, gs, [torch.tensor(r, dtype=torch.float64) for r in rhos], spec
    )

    ref_norm = kernels.global_norm(gs, params=ws if adaptive else None, eta=0.01, impl="loop")
    torch.testing.assert_close(norm, ref_norm, rtol=F64_RTOL, atol=0.0)
    for lo, hi, rho, eps in [(0, split, rhos[0], epss[0]), (split, len(ws), rhos[1], epss[1])]:
        ref = [w.clone() for w in ws[lo:hi]]
        backups = [torch.empty_like(w) for w in ref]
        scale = rho / (ref_norm + eps)
        kernels.perturb_(ref, gs[lo:hi], backups, scale, adaptive=adaptive, eta=0.01, impl="loop")
        for a, b in zip(out[lo:hi], ref):
            torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=1e-15)
    assert all(torch.equal(w, w0) for w, w0 in zip(ws, tensors(1)))  # inputs untouched


def test_gsam_sgd_step_matches_decompose_then_sgd():
    options = SGD_OPTIONS[3]
    runs = {}
    for how in ("loop", "fused"):
        params, groups = two_groups(torch.float64, options)
        opt = torch.optim.SGD(groups)
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()  # buffers exist from here on
        g = tensors(5)
        for p, gp in zip(params, tensors(6)):
            p.grad = gp
        if how == "loop":
            cos = kernels.gsam_decompose_([p.grad for p in params], g, 0.4, 1e-12, impl="loop")
            opt.step()
        else:
            with torch.no_grad():
                ps, grads, bufs, lrs, spec = sgd_inputs(opt)
                cos = fn("gsam_sgd_step_")(ps, grads, g, bufs, lrs, spec, 0.4, 1e-12)
        runs[how] = (cos, [p.detach().clone() for p in params], [p.grad.clone() for p in params])
    torch.testing.assert_close(runs["fused"][0], runs["loop"][0], rtol=F64_RTOL, atol=1e-15)
    for key in (1, 2):  # weights, and the final gradient left in .grad
        for a, b in zip(runs["fused"][key], runs["loop"][key]):
            torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=1e-15)


@pytest.mark.parametrize("n", [1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_two_level_reductions_across_the_row_boundary(n):
    x, y = tensors(7, shapes=[(n,)])[0], tensors(8, shapes=[(n,)])[0]
    got = fn("dot_into")([x], [y])
    torch.testing.assert_close(got, x @ y, rtol=F64_RTOL, atol=1e-15)
    got = fn("norm_sq_into")([x.view(-1, 1) if n % 2 else x], None)
    torch.testing.assert_close(got, x @ x, rtol=F64_RTOL, atol=0.0)
