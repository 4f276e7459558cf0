"""The ascent functional ``kernels.sam_ascent_`` / ``kernels.sam_ascent`` and its dispatch.

In float64 the loop reference, foreach and compiled agree (several segments with their own
rho, eps and ASAM eta under one global norm); the in-place and pure forms agree; restoring is
exact; the one fallback of an owned :class:`kernels.Dispatch` warns once and continues on the
loop, bit for bit as the loop, while a plain ``"compiled"`` falls back silently; ``"auto"``
chooses per device and model size. Sparse SAM's masks go through the same functional: every
path agrees with the loop (float64 tight, float32 and bfloat16 within their tolerances), an
all-True mask is SAM bit for bit, an all-False mask moves nothing, ``mask_norm`` makes the
radius rho.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import kernels
from kernels import Dispatch, Segment, compiled
from kernels.dispatch import COMPILE_MIN_NUMEL

F64_RTOL = 1e-14
#: the shapes and segments of ``test_compiled_steps.py``'s ascent test, so that the compiled
#: graphs are shared (a 0-d tensor, odd lengths, one longer than a reduction row of 4096)
SHAPES = [(3, 5), (), (1,), (7,), (4099,), (2, 3, 2)]


def needs_compiler(impl):
    if impl == "compiled" and not compiled.compiler_available():
        pytest.skip("no C++ compiler for torch.compile")


def tensors(seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def segments(ws, ds, etas):
    """Two segments with their own rho, eps and eta around an empty one (a param group
    without gradients)."""
    return [
        Segment(ws[:3], ds[:3], 0.05, 1e-12, etas[0]),
        Segment([], [], 0.3, 1e-12, None),
        Segment(ws[3:], ds[3:], 0.2, 1e-3, etas[1]),
    ]


def ascend(impl, etas=(None, None), seed=0):
    """(weights after the in-place ascent, the Ascent, the weights before, the segments)."""
    ws, ds = tensors(seed), tensors(seed + 1)
    before = [w.clone() for w in ws]
    segs = segments(ws, ds, etas)
    buffers = [torch.empty_like(w) for w in ws]
    ascent = kernels.sam_ascent_(segs, buffers, impl=impl)
    return ws, ascent, before, segs


def check_against_the_loop(impl, etas):
    ref, ref_ascent, _, _ = ascend("loop", etas)
    got, ascent, before, _ = ascend(impl, etas)
    torch.testing.assert_close(ascent.norm, ref_ascent.norm, rtol=F64_RTOL, atol=0.0)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=1e-15)
    # the compiled path swaps storages (w + e lives in the buffers), the others copy w
    assert ascent.swapped == [impl == "compiled"] * len(got)
    kernels.restore_(ascent, impl=impl)
    assert all(torch.equal(w, w0) for w, w0 in zip(got, before))


@pytest.mark.parametrize("eta", [None, 0.01], ids=["sam", "asam"])
@pytest.mark.parametrize("impl", ["foreach", "compiled"])
def test_in_place_paths_match_the_loop_and_restore_exactly(impl, eta):
    needs_compiler(impl)
    check_against_the_loop(impl, (eta, eta))


def test_sam_and_asam_segments_under_one_norm_match_the_loop():
    check_against_the_loop("foreach", (None, 0.01))


@pytest.mark.parametrize("impl", kernels.IMPLS)
def test_the_pure_form_matches_the_in_place_form(impl):
    needs_compiler(impl)
    moved, ascent, before, segs = ascend(impl, (0.01, 0.01))
    weights = [w.clone() for w in before]
    pure = [s._replace(params=weights[i : i + len(s.params)]) for i, s in zip([0, 3, 3], segs)]
    points, norm, masked_norm = kernels.sam_ascent(pure)
    assert all(torch.equal(w, w0) for w, w0 in zip(weights, before))  # nothing moved
    assert masked_norm is None  # dense
    torch.testing.assert_close(norm, ascent.norm, rtol=F64_RTOL, atol=0.0)
    for a, b in zip(points, moved):
        torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=1e-15)


def test_the_perturbation_norm_is_rho_per_segment():
    """||e|| over a SAM and an ASAM segment, against its definition ||(w + e) - w|| computed
    from the moved weights."""
    ws, ascent, before, segs = ascend("loop", (None, 0.01))
    size = kernels.perturbation_norm(segs, ascent)
    moved = torch.cat([(w - w0).flatten() for w, w0 in zip(ws, before)])
    torch.testing.assert_close(size, torch.linalg.vector_norm(moved), rtol=1e-12, atol=0.0)


def failing(name):
    def call(*args, **kwargs):
        raise RuntimeError(f"inductor could not build {name}")

    return call


@pytest.mark.parametrize("owner", ["SAM", None])
def test_one_fallback_warns_once_and_continues_on_the_loop(monkeypatch, owner):
    monkeypatch.setattr(compiled, "compiled", failing)
    ref, ref_ascent, _, _ = ascend("loop")
    dispatch = Dispatch("compiled", owner=owner) if owner else "compiled"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            got, ascent, _, _ = ascend(dispatch)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if owner:
        assert len(messages) == 1 and messages[0].startswith("SAM: torch.compile failed"), messages
        assert "inductor could not build ascent_into" in messages[0]
        assert dispatch.impl == "loop"
    else:  # a plain "compiled" falls back call by call, silently
        assert messages == []
    assert torch.equal(ascent.norm, ref_ascent.norm)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert not any(ascent.swapped)


def test_auto_chooses_per_device_and_model_size():
    small = Dispatch("auto", numel=lambda: 1000)
    assert small.impl_for(torch.device("cuda")) == "foreach"
    assert small.impl_for(torch.device("cpu")) == "foreach" == small.cpu_choice
    size = [COMPILE_MIN_NUMEL]
    big = Dispatch("auto", numel=lambda: size[0])
    expected = "compiled" if compiled.compiler_available() else "foreach"
    assert big.impl_for(torch.device("cpu")) == expected
    size[0] = 10
    assert big.impl_for(torch.device("cpu")) == expected  # chosen once ...
    big.forget()
    assert big.impl_for(torch.device("cpu")) == "foreach"  # ... until the model changes
    with pytest.raises(ValueError, match="impl must be one of"):
        Dispatch("fast")
    with pytest.raises(ValueError, match="impl must be one of"):
        kernels.global_norm([torch.ones(2)], impl="auto")  # "auto" needs a Dispatch


def test_a_mask_of_the_wrong_length_is_refused_and_empty_segments_are_skipped():
    w, d = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="one boolean tensor"):
        kernels.sam_ascent_([Segment([w], [d], 0.1, 1e-12, mask=[None, None])], [w.clone()])
    ascent = kernels.sam_ascent_([Segment([], [], 0.1, 1e-12)], [])
    assert ascent.params == [] and float(ascent.norm) == 0.0


# --------------------------------------------------------------------------- sparse SAM masks
#: per-dtype tolerances of a path against the loop (float64: tight)
TOLERANCES = {
    torch.float64: (F64_RTOL, 1e-15),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 2e-2),
}


def masks_for(ws, seed=3, density=0.5):
    gen = torch.Generator().manual_seed(seed)
    masks = [torch.rand(w.shape, generator=gen) < density for w in ws]
    masks[1] = None  # a dense weight among masked ones
    return masks


def masked_segments(ws, ds, masks, etas=(None, 0.01)):
    """SAM (the seed's norm) and ASAM (renormalised to rho) segments with masks."""
    return [
        Segment(ws[:3], ds[:3], 0.05, 1e-12, etas[0], masks[:3]),
        Segment(ws[3:], ds[3:], 0.2, 1e-3, etas[1], masks[3:], mask_norm=True),
    ]


def masked_ascend(impl, dtype=torch.float64, masks=None):
    ws, ds = tensors(0, dtype), tensors(1, dtype)
    before = [w.clone() for w in ws]
    masks = masks_for(ws) if masks is None else masks
    segs = masked_segments(ws, ds, masks)
    ascent = kernels.sam_ascent_(segs, [torch.empty_like(w) for w in ws], impl=impl)
    return ws, ascent, before, segs


def test_the_masked_loop_is_the_rule():
    """e = rho / (n + eps) * m * d with n = ||d|| (seed) or ||m d|| (mask_norm), ASAM's T."""
    ws, ascent, before, segs = masked_ascend("loop")
    ds, masks = tensors(1), masks_for(ws)
    dense = [torch.ones_like(w, dtype=torch.bool) if m is None else m for w, m in zip(ws, masks)]
    t = [torch.ones_like(w) for w in before[:3]] + [w.abs() + 0.01 for w in before[3:]]
    full = torch.sqrt(sum(((ti * d) ** 2).sum() for ti, d in zip(t, ds)))
    masked = torch.sqrt(sum(((ti * d * m) ** 2).sum() for ti, d, m in zip(t, ds, dense)))
    torch.testing.assert_close(ascent.norm, full, rtol=F64_RTOL, atol=0.0)
    torch.testing.assert_close(ascent.masked_norm, masked, rtol=F64_RTOL, atol=0.0)
    for i, (w, w0, d, m) in enumerate(zip(ws, before, ds, dense)):
        scale = 0.05 / (full + 1e-12) if i < 3 else 0.2 / (masked + 1e-3)
        expected = w0 + scale * t[i] ** 2 * d * m
        torch.testing.assert_close(w, expected, rtol=F64_RTOL, atol=1e-15)
        assert torch.equal(w[~m], w0[~m])  # masked-out entries never move


@pytest.mark.parametrize(
    "impl, dtype",
    [
        ("foreach", torch.float64),
        ("compiled", torch.float64),
        ("foreach", torch.float32),
        ("compiled", torch.float32),
        ("foreach", torch.bfloat16),
    ],
)
def test_masked_paths_match_the_loop_and_restore_exactly(impl, dtype):
    needs_compiler(impl)
    rtol, atol = TOLERANCES[dtype]
    ref, ref_ascent, _, _ = masked_ascend("loop", dtype)
    got, ascent, before, segs = masked_ascend(impl, dtype)
    torch.testing.assert_close(ascent.norm, ref_ascent.norm, rtol=rtol, atol=atol)
    torch.testing.assert_close(ascent.masked_norm, ref_ascent.masked_norm, rtol=rtol, atol=atol)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    if dtype == torch.float64:
        size = kernels.perturbation_norm(segs, ascent)
        moved = torch.cat([(w - w0).flatten() for w, w0 in zip(got, before)])
        torch.testing.assert_close(size, torch.linalg.vector_norm(moved), rtol=1e-12, atol=0.0)
    kernels.restore_(ascent, impl=impl)
    assert all(torch.equal(w, w0) for w, w0 in zip(got, before))


@pytest.mark.parametrize("impl", kernels.IMPLS)
def test_the_pure_masked_form_matches_the_in_place_form(impl):
    needs_compiler(impl)
    moved, ascent, before, segs = masked_ascend(impl)
    weights = [w.clone() for w in before]
    pure = [s._replace(params=weights[i : i + len(s.params)]) for i, s in zip([0, 3], segs)]
    points, norm, masked_norm = kernels.sam_ascent(pure)
    torch.testing.assert_close(norm, ascent.norm, rtol=F64_RTOL, atol=0.0)
    torch.testing.assert_close(masked_norm, ascent.masked_norm, rtol=F64_RTOL, atol=0.0)
    assert masked_norm < norm  # the masks drop entries
    for a, b in zip(points, moved):
        torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=1e-15)


@pytest.mark.parametrize("impl", kernels.IMPLS)
def test_an_all_true_mask_is_sam_bit_for_bit_and_all_false_moves_nothing(impl):
    needs_compiler(impl)
    ws = tensors(0)
    plain_segs = [
        Segment(ws[:3], tensors(1)[:3], 0.05, 1e-12),
        Segment(ws[3:], tensors(1)[3:], 0.2, 1e-3, 0.01),
    ]
    sam = kernels.sam_ascent_(plain_segs, [torch.empty_like(w) for w in ws], impl=impl)
    sam_points = [w.clone() for w in ws]
    kernels.restore_(sam, impl=impl)
    everything = [torch.ones_like(w, dtype=torch.bool) for w in ws]
    got, ascent, _, _ = masked_ascend(impl, masks=everything)
    assert all(torch.equal(a, b) for a, b in zip(got, sam_points))
    assert torch.equal(ascent.norm, sam.norm)
    nothing = [torch.zeros_like(w, dtype=torch.bool) for w in ws]
    got, ascent, before, _ = masked_ascend(impl, masks=nothing)
    assert all(torch.equal(a, b) for a, b in zip(got, before))


@pytest.mark.parametrize("impl", kernels.IMPLS)
def test_masks_in_the_weights_dtype_equal_boolean_masks(impl):
    """0/1 masks in the weight's dtype (what the optimizers pass: inductor's CPU code does not
    vectorize bool loads) move the weights exactly as boolean masks."""
    needs_compiler(impl)
    ws = tensors(0)
    boolean = masks_for(ws)
    numeric = [None if m is None else m.to(torch.float64) for m in boolean]
    a, ascent_a, _, _ = masked_ascend(impl, masks=boolean)
    b, ascent_b, _, _ = masked_ascend(impl, masks=numeric)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(ascent_a.masked_norm, ascent_b.masked_norm)
