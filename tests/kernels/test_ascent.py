"""The ascent functional ``kernels.sam_ascent_`` / ``kernels.sam_ascent`` and its dispatch.

In float64 the loop reference, foreach and compiled agree (several segments with their own
rho, eps and ASAM eta under one global norm); the in-place and pure forms agree; restoring is
exact; the one fallback of an owned :class:`kernels.Dispatch` warns once and continues on the
loop, bit for bit as the loop, while a plain ``"compiled"`` falls back silently; ``"auto"``
chooses per device and model size; a mask is refused (reserved for sparse SAM).
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
    points, norm = kernels.sam_ascent(pure)
    assert all(torch.equal(w, w0) for w, w0 in zip(weights, before))  # nothing moved
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


def test_a_mask_is_refused_and_empty_segments_are_skipped():
    w, d = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="reserved for sparse SAM"):
        kernels.sam_ascent_([Segment([w], [d], 0.1, 1e-12, mask=torch.ones(3))], [w.clone()])
    ascent = kernels.sam_ascent_([Segment([], [], 0.1, 1e-12)], [])
    assert ascent.params == [] and float(ascent.norm) == 0.0
