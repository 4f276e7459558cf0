"""Fast paths of ``kernels`` against their per-tensor reference twin (``impl="loop"``).

float64 must agree to 1e-14 relative (DESIGN.md §7: "float64 tight"); lower precisions use the
tolerance table below. Every fast path in ``kernels.IMPLS`` is covered, plus the
``torch.compile`` functions of ``kernels.compiled`` when a compiler is available (skipped with
the reason otherwise), and whole SAM-family trajectories with ``impl="foreach"`` vs ``"loop"``.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import kernels
from samlab.optim import create_optimizer, get_optimizer_info, list_optimizers

FAST = [impl for impl in kernels.IMPLS if impl != "loop"]
F64_RTOL = 1e-14
#: fast path vs loop, same dtype: (rtol, atol). bf16 has an 8-bit mantissa (2**-8 = 3.9e-3):
#: reductions may round differently by an ulp or two.
TOL = {
    torch.float32: (2e-6, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-2),
}
SHAPES = [(3, 4), (), (5,), (2, 3, 2), (1,), (7, 1)]
SAM_NAMES = [n for n in list_optimizers() if get_optimizer_info(n).sam_family]


def tensors(dtype, seed=0, shapes=SHAPES, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen, dtype=torch.float64) * scale).to(dtype) for s in shapes]


def clones(ts):
    return [t.clone() for t in ts]


def close(a, b, dtype):
    if dtype == torch.float64:
        torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=0.0)
    else:
        rtol, atol = TOL[dtype]
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


DTYPES = [torch.float64, *TOL]


# --------------------------------------------------------------------------- global_norm
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm_matches_loop(impl, dtype):
    xs = tensors(dtype)
    got = kernels.global_norm(xs, impl=impl)
    ref = kernels.global_norm(xs, impl="loop")
    assert got.dtype == ref.dtype == dtype and got.dim() == 0
    close(got, ref, dtype)
    exact = torch.sqrt(sum((x.double() ** 2).sum() for x in xs))
    rtol = F64_RTOL if dtype == torch.float64 else TOL[dtype][0]
    torch.testing.assert_close(ref.double(), exact, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eta", [0.01, 0.0])
def test_adaptive_global_norm_matches_loop(impl, dtype, eta):
    xs, ws = tensors(dtype), tensors(dtype, seed=1)
    ws[1] = torch.zeros_like(ws[1])  # a weight that is exactly 0 (eta=0: never perturbed)
    ws_before = clones(ws)
    got = kernels.global_norm(xs, params=ws, eta=eta, impl=impl)
    ref = kernels.global_norm(xs, params=ws, eta=eta, impl="loop")
    close(got, ref, dtype)
    exact = torch.sqrt(
        sum((((w.double().abs() + eta) * x.double()) ** 2).sum() for w, x in zip(ws, xs))
    )
    rtol = F64_RTOL if dtype == torch.float64 else TOL[dtype][0]
    torch.testing.assert_close(ref.double(), exact, rtol=rtol, atol=0.0)
    assert all(torch.equal(w, w0) for w, w0 in zip(ws, ws_before))  # params are read only


# --------------------------------------------------------------------------- dot
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dot_matches_loop(impl, dtype):
    a, b = tensors(dtype), tensors(dtype, seed=2)
    got = kernels.dot(a, b, impl=impl)
    ref = kernels.dot(a, b, impl="loop")
    assert got.dim() == 0
    close(got, ref, dtype)
    if dtype == torch.float64:
        exact = sum((x * y).sum() for x, y in zip(a, b))
        torch.testing.assert_close(ref, exact, rtol=F64_RTOL, atol=1e-15)


# --------------------------------------------------------------------------- perturb_ / copy_
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("adaptive", [False, True])
def test_perturb_matches_loop(impl, dtype, adaptive):
    w0, g = tensors(dtype, seed=3), tensors(dtype, seed=4)
    scale = torch.tensor(0.37, dtype=dtype)
    results = {}
    for which in ("loop", impl):
        params, backups = clones(w0), [torch.empty_like(t) for t in w0]
        kernels.perturb_(params, g, backups, scale, adaptive=adaptive, eta=0.01, impl=which)
        for b, w in zip(backups, w0):
            assert torch.equal(b, w)  # the backup is an exact copy of w
        results[which] = params
    for got, ref in zip(results[impl], results["loop"]):
        close(got, ref, dtype)
    if dtype == torch.float64:
        for w, gi, ref in zip(w0, g, results["loop"]):
            t = (w.abs() + 0.01) ** 2 if adaptive else 1.0
            torch.testing.assert_close(ref, w + 0.37 * t * gi, rtol=F64_RTOL, atol=1e-15)


@pytest.mark.parametrize("impl", kernels.IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_copy_is_exact(impl, dtype):
    src = tensors(dtype, seed=5, scale=1e3)
    dst = [torch.full_like(t, float("nan")) for t in src]
    kernels.copy_(dst, src, impl=impl)
    assert all(torch.equal(d, s) for d, s in zip(dst, src))
    dst[0].add_(1)
    assert not torch.equal(dst[0], src[0])  # a copy, not an alias


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scaled_add_matches_loop(impl, dtype):
    y0, x = tensors(dtype, seed=6), tensors(dtype, seed=7)
    scale = torch.tensor(-0.8125, dtype=dtype)
    ref, got = clones(y0), clones(y0)
    kernels.scaled_add_(ref, x, scale, impl="loop")
    kernels.scaled_add_(got, x, scale, impl=impl)
    for a, b in zip(got, ref):
        close(a, b, dtype)


@pytest.mark.parametrize("impl", FAST)
def test_perturb_then_copy_back_restores_bitwise(impl):
    w0, g = tensors(torch.float32, seed=8), tensors(torch.float32, seed=9)
    params, backups = clones(w0), [torch.empty_like(t) for t in w0]
    kernels.perturb_(params, g, backups, torch.tensor(0.05), impl=impl)
    assert any(not torch.equal(p, w) for p, w in zip(params, w0))
    kernels.copy_(params, backups, impl=impl)
    assert all(torch.equal(p, w) for p, w in zip(params, w0))


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("impl", kernels.IMPLS)
def test_empty_lists(impl):
    assert float(kernels.global_norm([], impl=impl)) == 0.0
    assert float(kernels.global_norm([], params=[], eta=0.01, impl=impl)) == 0.0
    assert float(kernels.dot([], [], impl=impl)) == 0.0
    kernels.copy_([], [], impl=impl)
    kernels.scaled_add_([], [], torch.tensor(1.0), impl=impl)
    kernels.perturb_([], [], [], torch.tensor(1.0), adaptive=True, eta=0.01, impl=impl)


@pytest.mark.parametrize("impl", kernels.IMPLS)
def test_only_zero_dim_tensors(impl):
    xs = [torch.tensor(3.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)]
    assert float(kernels.global_norm(xs, impl=impl)) == 5.0
    assert float(kernels.dot(xs, xs, impl=impl)) == 25.0
    params, backups = clones(xs), [torch.empty_like(x) for x in xs]
    kernels.perturb_(params, xs, backups, torch.tensor(0.5, dtype=torch.float64), impl=impl)
    assert [float(p) for p in params] == [4.5, -6.0]


@pytest.mark.parametrize("impl", kernels.IMPLS)
def test_zero_vectors_give_zero_norm(impl):
    zs = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    assert float(kernels.global_norm(zs, impl=impl)) == 0.0
    ws = tensors(torch.float64)
    assert float(kernels.global_norm(zs, params=ws, eta=0.01, impl=impl)) == 0.0


def test_unknown_impl_is_rejected():
    with pytest.raises(ValueError, match="impl"):
        kernels.global_norm([torch.ones(2)], impl="cuda-magic")
    with pytest.raises(ValueError, match="impl"):
        kernels.copy_([torch.ones(2)], [torch.ones(2)], impl="fast")


# --------------------------------------------------------------------------- compiled kernels
def _compiled_module():
    try:
        module = importlib.import_module("kernels.compiled")
    except ImportError:
        pytest.skip("kernels.compiled does not exist in this checkout")
    if not module.compiler_available():
        pytest.skip("no C++ compiler for torch.compile here (g++/clang++/CXX not found)")
    return module


def _compiled_fn(module, name):
    try:
        return module.compiled(name)
    except RuntimeError as err:
        pytest.skip(f"torch.compile unavailable: {err}")


def test_compiled_norm_sq_matches_loop():
    module = _compiled_module()
    fn = _compiled_fn(module, "norm_sq_into")
    xs, ws = tensors(torch.float64), tensors(torch.float64, seed=1)
    try:
        plain = fn(xs, None)
    except Exception as err:  # inductor could not build the kernel on this machine
        pytest.skip(f"torch.compile failed here: {type(err).__name__}: {err}")
    ref = kernels.global_norm(xs, impl="loop") ** 2
    torch.testing.assert_close(plain, ref, rtol=F64_RTOL, atol=0.0)
    flat = [t for pair in zip(ws, xs) for t in pair]
    adaptive = fn(flat, 0.01)
    ref = kernels.global_norm(xs, params=ws, eta=0.01, impl="loop") ** 2
    torch.testing.assert_close(adaptive, ref, rtol=F64_RTOL, atol=0.0)


@pytest.mark.parametrize("adaptive", [False, True])
def test_compiled_perturb_matches_loop(adaptive):
    module = _compiled_module()
    fn = _compiled_fn(module, "perturb_into")
    w0, g = tensors(torch.float64, seed=3), tensors(torch.float64, seed=4)
    scale = torch.tensor(0.37, dtype=torch.float64)
    out = [torch.empty_like(w) for w in w0]
    try:
        fn(out, w0, g, scale, 0.01 if adaptive else None)
    except Exception as err:
        pytest.skip(f"torch.compile failed here: {type(err).__name__}: {err}")
    ref, backups = clones(w0), [torch.empty_like(w) for w in w0]
    kernels.perturb_(ref, g, backups, scale, adaptive=adaptive, eta=0.01, impl="loop")
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=1e-15)
    assert all(torch.equal(w, w1) for w, w1 in zip(w0, tensors(torch.float64, seed=3)))


# --------------------------------------------------------------------------- whole trajectories
def _mlp():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(5, 7, dtype=torch.float64),
            nn.Tanh(),
            nn.Linear(7, 3, dtype=torch.float64),
        )


def _trajectory(name, impl, steps=10):
    model = _mlp()
    kw = {"lr": 0.05, "momentum": 0.9, "rho": 0.05, "impl": impl}
    if name == "looksam":
        kw["k"] = 3
    if name == "bsam":
        kw["num_data"] = 100
    opt = create_optimizer(name, model.parameters(), **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
        y = torch.randn(16, 3, generator=gen, dtype=torch.float64)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", SAM_NAMES)
def test_foreach_trajectory_matches_loop(name):
    ref = _trajectory(name, "loop")
    got = _trajectory(name, "foreach")
    start = [p.detach() for p in _mlp().parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(ref, start))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
