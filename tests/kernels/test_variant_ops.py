"""The elementwise ops of WSAM, FriendlySAM and bSAM (:mod:`kernels.variant_ops`): the loop
against the closed forms of their docstrings, ``foreach`` against the loop (float64), and the
``normalize=False`` segments of the ascent functional. The compiled twins are checked through
the optimizers' trajectories in ``tests/optim/test_compiled_path.py``."""

from __future__ import annotations

import pytest
import torch

import kernels

DT = torch.float64
SHAPES = [(5, 3), (7,), (2, 2, 3)]


def tensors(seed, positive=False):
    gen = torch.Generator().manual_seed(seed)
    out = [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
    return [t.abs() + 0.5 for t in out] if positive else out


def clones(ts):
    return [t.clone() for t in ts]


def close(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("impl", ["loop", "foreach"])
def test_lerp_and_ema_direction(impl):
    g, e = tensors(1), tensors(2)
    start = clones(g)
    kernels.lerp_(start, e, 4.0, impl=impl)
    close(start, [a + 4.0 * (b - a) for a, b in zip(g, e)])

    grads, emas = clones(g), clones(e)
    kernels.ema_direction_(grads, emas, 0.9, 0.7, impl=impl)
    new_m = [0.9 * m + 0.1 * x for m, x in zip(e, g)]
    close(emas, new_m)
    close(grads, [x - 0.7 * m for x, m in zip(g, new_m)])

    grads = clones(g)
    kernels.ema_direction_(grads, clones(e), 0.9, 0.0, impl=impl)
    assert all(torch.equal(a, b) for a, b in zip(grads, g))  # sigma = 0: g untouched


@pytest.mark.parametrize("impl", ["loop", "foreach"])
def test_bsam_ops(impl):
    z, s, g, w, m = tensors(3), tensors(4, positive=True), tensors(5), tensors(6), tensors(7)
    points = clones(z)
    kernels.bsam_sample_(points, w, s, 50.0, impl=impl)
    close(points, [c + a / torch.sqrt(50.0 * b) for a, b, c in zip(z, s, w)])

    grads, prec = clones(g), clones(s)
    kernels.bsam_precision_(grads, prec, 0.99, 1e-3, 0.1, impl=impl)
    close(grads, [a / b for a, b in zip(g, s)])
    close(prec, [0.99 * b + 0.01 * (b.sqrt() * a.abs() + 1e-3 + 0.1) for a, b in zip(g, s)])

    params, avgs = clones(w), clones(m)
    kernels.bsam_update_(params, g, avgs, s, 0.3, 0.8, 1e-2, impl=impl)
    new_m = [0.8 * c + 0.2 * (a + 1e-2 * b) for a, b, c in zip(g, w, m)]
    close(avgs, new_m)
    close(params, [b - 0.3 * c / d for b, c, d in zip(w, new_m, s)])


@pytest.mark.parametrize("impl", ["loop", "foreach"])
@torch.no_grad()
def test_unnormalized_segments_move_by_rho_d_and_leave_the_norm_alone(impl):
    w, d, d2 = tensors(8), tensors(9), tensors(10)
    buffers = [torch.empty_like(t) for t in w + w]
    params = [torch.nn.Parameter(t.clone()) for t in w + w]
    segments = [
        kernels.Segment(params[:3], d, 0.05, 1e-12),  # SAM: by the global norm of d only
        kernels.Segment(params[3:], d2, 0.5, 1e-12, normalize=False),  # bSAM: rho * d
    ]
    ascent = kernels.sam_ascent_(segments, buffers, impl=impl)
    norm = torch.sqrt(sum((t * t).sum() for t in d))
    torch.testing.assert_close(ascent.norm, norm, rtol=1e-15, atol=0)
    close([p.detach() for p in params[:3]], [a + 0.05 * b / (norm + 1e-12) for a, b in zip(w, d)])
    close([p.detach() for p in params[3:]], [a + 0.5 * b for a, b in zip(w, d2)])
    pure = kernels.sam_ascent(
        [kernels.Segment(w, d, 0.05, 1e-12), kernels.Segment(w, d2, 0.5, 1e-12, normalize=False)]
    )
    close(pure.points, [p.detach() for p in params])
    kernels.restore_(ascent, impl=impl)
    assert all(torch.equal(p.detach(), t) for p, t in zip(params, w + w))
    only = kernels.sam_ascent_(
        [kernels.Segment(params[:3], d, 1.0, 0.0, normalize=False)], buffers[:3], impl=impl
    )
    assert only.norm.dtype == DT and float(only.norm) == 0.0  # nothing normalizes
    kernels.restore_(only, impl=impl)


@torch.no_grad()
def test_swap_in_makes_the_points_the_weights_and_restore_swaps_back():
    w, e = tensors(11), tensors(12)
    params = [torch.nn.Parameter(t.clone()) for t in w]
    storages = [p.data_ptr() for p in params]
    points = [a + b for a, b in zip(w, e)]
    ascent = kernels.swap_in(params, points)
    assert [p.data_ptr() for p in params] == [x.data_ptr() for x in points]
    assert ascent.swapped == [True] * 3 and float(ascent.norm) == 0.0
    kernels.restore_(ascent)
    assert [p.data_ptr() for p in params] == storages
    assert all(torch.equal(p.detach(), t) for p, t in zip(params, w))
    with pytest.raises(ValueError, match="shaped and laid out like the weights"):
        kernels.swap_in(params, [torch.zeros(2)] * 3)
    with pytest.raises(ValueError, match="2 points for 3 weights"):
        kernels.swap_in(params, points[:2])
