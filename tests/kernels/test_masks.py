"""Sparse SAM's mask kernels (:mod:`kernels.masks`) against their definitions and their twins.

N:M keeps exactly N of every M with exactly the top-N scores, in groups of M along the
reduction dimensions (linear: along ``in``; conv: along ``in * kh * kw``); unstructured top-k is
exact per tensor and globally; ties go to the lower index; the vectorized path equals the loop
reference bit for bit (ties included), in float64, float32 and bfloat16; the Fisher sums agree
in float64 tightly and within per-dtype tolerances in float32 and bfloat16.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import kernels
from kernels import masks as M

SHAPES = [(8, 12), (6, 4, 3, 3), (5,), (7, 3)]


DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def scores(seed=0, shapes=SHAPES, ties=False, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    out = [torch.rand(s, generator=gen, dtype=torch.float64) for s in shapes]
    if ties:  # few distinct values: many ties to break by index
        out = [(s * 3).floor() for s in out]
    return [s.to(dtype) for s in out]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_topk_is_exact_and_the_twins_agree(sparsity, ties, dtype):
    """Selections are exact in every dtype (bfloat16 scores tie often)."""
    for s in scores(1, ties=ties, dtype=dtype):
        keep = M.keep_count(s.numel(), sparsity)
        ref = M.topk_mask(s, keep, impl="loop")
        fast = M.topk_mask(s, keep, impl="vectorized")
        assert torch.equal(ref, fast) and ref.shape == s.shape and ref.dtype == torch.bool
        assert int(ref.sum()) == keep
        if 0 < keep < s.numel():  # every kept score >= every dropped one
            assert s[ref].min() >= s[~ref].max()
    assert M.keep_count(10, 0.9) == 1 and M.keep_count(10, 0.7) == 3 and M.keep_count(5, 0.5) == 2


def test_ties_go_to_the_lower_index():
    s = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0])
    for impl in M.MASK_IMPLS:
        assert M.topk_mask(s, 2, impl=impl).tolist() == [False, True, True, False, False]
        nm = M.nm_mask(torch.ones(1, 4), 2, 4, impl=impl)
        assert nm.tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_global_top_k_over_all_tensors(sparsity):
    ss = scores(2)
    for impl in M.MASK_IMPLS:
        got = M.unstructured_masks(ss, sparsity, scope="global", impl=impl)
        flat = torch.cat([s.flatten() for s in ss])
        keep = M.keep_count(flat.numel(), sparsity)
        assert sum(int(m.sum()) for m in got) == keep
        kept = torch.cat([s[m] for s, m in zip(ss, got)])
        dropped = torch.cat([s[~m] for s, m in zip(ss, got)])
        assert kept.min() >= dropped.max()
    per_tensor = M.unstructured_masks(ss, sparsity)
    assert [int(m.sum()) for m in per_tensor] == [M.keep_count(s.numel(), sparsity) for s in ss]
    with pytest.raises(ValueError, match="scope"):
        M.unstructured_masks(ss, 0.5, scope="layer")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 2), (1, 4), (3, 4)])
def test_nm_keeps_exactly_the_top_n_of_every_m_along_the_reduction_dims(n, m, ties, dtype):
    linear, conv = scores(3, [(6, 16), (4, 8, 3, 3)], ties=ties, dtype=dtype)
    for s in (linear, conv):
        ref = M.nm_mask(s, n, m, impl="loop")
        fast = M.nm_mask(s, n, m, impl="vectorized")
        assert torch.equal(ref, fast) and ref.shape == s.shape
        # groups of m consecutive entries of the row-major flattening of all but dim 0
        groups_mask = ref.reshape(s.shape[0], -1, m)
        groups_score = s.reshape(s.shape[0], -1, m)
        assert (groups_mask.sum(-1) == n).all()
        for g_mask, g_score in zip(groups_mask.reshape(-1, m), groups_score.reshape(-1, m)):
            order = torch.sort(g_score, descending=True, stable=True).indices[:n]
            assert set(order.tolist()) == set(torch.nonzero(g_mask).flatten().tolist())
    # the conv layout: a group is 4 consecutive entries of w[o].flatten() = (in, kh, kw)
    conv_mask = M.nm_mask(conv, n, m)
    for o, start in itertools.product(range(conv.shape[0]), range(0, 72, m)):
        assert int(conv_mask[o].flatten()[start : start + m].sum()) == n


def test_nm_fits_and_refuses_other_shapes():
    assert M.nm_fits((8, 12), 4) and M.nm_fits((4, 3, 3, 4), 4)
    assert not M.nm_fits((8,), 4)  # 1-D
    assert not M.nm_fits((64, 3, 3, 3), 4)  # ResNet-18's first conv: 27
    assert not M.nm_fits((16, 1, 3, 3), 4)  # the digits CNN's first conv: 9
    with pytest.raises(ValueError, match="2:4"):
        M.nm_mask(torch.rand(4, 3, 3, 3), 2, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75])
def test_structured_keeps_whole_rows(sparsity, dtype):
    for s in scores(4, [(8, 12), (6, 4, 3, 3)], ties=True, dtype=dtype):
        ref = M.structured_mask(s, sparsity, impl="loop")
        assert torch.equal(ref, M.structured_mask(s, sparsity, impl="vectorized"))
        rows = ref.reshape(s.shape[0], -1)
        assert (rows.all(1) | ~rows.any(1)).all()  # each row all on or all off
        assert int(rows.all(1).sum()) == M.keep_count(s.shape[0], sparsity)
        means = s.reshape(s.shape[0], -1).mean(1)
        if 0 < int(rows.all(1).sum()) < s.shape[0]:
            assert means[rows.all(1)].min() >= means[~rows.all(1)].max()
    with pytest.raises(ValueError, match="2 dimensions"):
        M.structured_mask(torch.rand(5), 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_tensor_level_greedy_by_mean_score(sparsity, dtype):
    ss = scores(5, [(10,), (4, 4), (30,), (2, 3)], dtype=dtype)
    ss[2] = ss[2] * 0.1  # a large tensor of low score
    ref = M.tensor_masks(ss, sparsity, impl="loop")
    assert [bool(m.all()) for m in ref] == [
        bool(m.all()) for m in M.tensor_masks(ss, sparsity, impl="vectorized")
    ]
    assert all(bool(m.all()) or not bool(m.any()) for m in ref)
    on = sum(int(m.sum()) for m in ref)
    total = sum(s.numel() for s in ss)
    assert on >= (1 - sparsity) * total - 1e-9
    if sparsity == 1.0:
        assert on == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("drop_rate", [0.0, 0.25, 0.5, 1.0])
def test_drop_grow_keeps_the_count_and_the_overlap(drop_rate, dtype):
    gen = torch.Generator().manual_seed(6)
    mask = torch.rand(200, generator=gen) < 0.4
    drop = torch.rand(200, generator=gen).to(dtype)  # bfloat16: many ties, broken by index
    grow = torch.rand(200, generator=gen).to(dtype)
    ref = M.drop_grow_mask(mask, drop, grow, drop_rate, impl="loop")
    assert torch.equal(ref, M.drop_grow_mask(mask, drop, grow, drop_rate, impl="vectorized"))
    assert int(ref.sum()) == int(mask.sum())
    assert M.mask_overlap([ref], [mask]) >= 1 - drop_rate - 1e-12
    kept = ref & mask
    if (mask & ~ref).any() and kept.any():  # the dropped had the lowest drop scores
        assert drop[kept].min() >= drop[mask & ~ref].max()
    grown = ref & ~mask
    if grown.any() and (~mask & ~ref).any():
        assert grow[grown].min() >= grow[~mask & ~ref].max()


@pytest.mark.parametrize("batch", [9, 1])
def test_fisher_accumulation_twins_agree_in_float64(batch):
    gen = torch.Generator().manual_seed(7)
    grads = [torch.randn(batch, *s, generator=gen, dtype=torch.float64) for s in SHAPES]
    ref = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    fast = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    kernels.fisher_accumulate_(ref, grads, impl="loop")
    kernels.fisher_accumulate_(fast, grads, impl="vectorized")
    for a, b, g in zip(ref, fast, grads):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0.0)
        torch.testing.assert_close(a, (g**2).sum(0), rtol=1e-14, atol=0.0)
    with pytest.raises(ValueError, match="impl"):
        kernels.fisher_accumulate_(ref, grads, impl="foreach")


#: the Fisher twins' tolerances per dtype (the loop adds sample by sample, the fast path sums
#: the squares over the batch first)
FISHER_TOL = {torch.float32: (1e-5, 1e-6), torch.bfloat16: (4e-2, 1e-2)}


@pytest.mark.parametrize("dtype", list(FISHER_TOL))
@pytest.mark.parametrize("batch", [9, 1])
def test_fisher_accumulation_twins_agree_in_lower_precision(batch, dtype):
    gen = torch.Generator().manual_seed(8)
    exact = [torch.randn(batch, *s, generator=gen, dtype=torch.float64) for s in SHAPES]
    grads = [g.to(dtype) for g in exact]
    ref = [torch.zeros(s, dtype=dtype) for s in SHAPES]
    fast = [torch.zeros(s, dtype=dtype) for s in SHAPES]
    kernels.fisher_accumulate_(ref, grads, impl="loop")
    kernels.fisher_accumulate_(fast, grads, impl="vectorized")
    rtol, atol = FISHER_TOL[dtype]
    for a, b, g in zip(ref, fast, grads):
        assert a.dtype == b.dtype == dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        want = (g.double() ** 2).sum(0).to(dtype)  # the rounded inputs' exact sum
        torch.testing.assert_close(b, want, rtol=rtol, atol=atol)
