"""GSAM's and LookSAM's decomposition kernels: every fast path against the per-tensor loop."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import compiled

FAST = [impl for impl in kernels.IMPLS if impl != "loop"]
SHAPES = [(3, 4), (), (5,), (2, 3, 2), (7, 1)]


def tensors(seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def skip_without_compiler(impl):
    if impl == "compiled" and not compiled.compiler_available():
        pytest.skip("no C++ compiler for torch.compile here")


@pytest.mark.parametrize("impl", FAST)
def test_pair_stats_matches_loop_and_definition(impl):
    skip_without_compiler(impl)
    a, b = tensors(0), tensors(1)
    got = kernels.pair_stats(a, b, impl=impl)
    ref = kernels.pair_stats(a, b, impl="loop")
    flat_a = torch.cat([t.flatten() for t in a])
    flat_b = torch.cat([t.flatten() for t in b])
    exact = (flat_a.norm(), flat_b.norm(), flat_a @ flat_b)
    for g, r, e in zip(got, ref, exact):
        torch.testing.assert_close(g, r, rtol=1e-14, atol=0.0)
        torch.testing.assert_close(g, e, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("impl", FAST)
def test_gsam_combine_matches_loop(impl):
    skip_without_compiler(impl)
    g_p, g = tensors(2), tensors(3)
    coef = torch.tensor(0.37, dtype=torch.float64)
    got, ref = [t.clone() for t in g_p], [t.clone() for t in g_p]
    kernels.gsam_combine_(got, g, coef, 0.4, impl=impl)
    kernels.gsam_combine_(ref, g, coef, 0.4, impl="loop")
    for x, y, gp, gi in zip(got, ref, g_p, g):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(x, gp - 0.4 * (gi - 0.37 * gp), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("impl", FAST)
def test_axpy_matches_loop_and_may_alias(impl):
    skip_without_compiler(impl)
    x, y = tensors(4), tensors(5)
    s = torch.tensor(-1.25, dtype=torch.float64)
    out = [torch.empty_like(t) for t in x]
    kernels.axpy_(out, x, y, s, impl=impl)
    aliased = [t.clone() for t in x]
    kernels.axpy_(aliased, aliased, y, s, impl=impl)
    for o, a, xi, yi in zip(out, aliased, x, y):
        torch.testing.assert_close(o, xi + s * yi, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(a, o, rtol=0.0, atol=0.0)
