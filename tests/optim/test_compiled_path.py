"""The SAM family on the compiled path (``impl="compiled"``) against the loop reference.

Trajectories of every SAM-family method (WSAM, FriendlySAM and bSAM included) agree with
``impl="loop"`` in float64 (two param groups with their own lr, weight
decay and rho); the fused whole-phase functions are really the ones called; with ``rho=0`` the
step is ``torch.optim.SGD``'s bit for bit, in float32 with momentum and weight decay too;
optimizers on equal shapes share one compiled graph; an exhausted compile cache warns and
falls back to the loop instead of silently running eager; resume is bit-exact.
Skipped with the reason where no C++ compiler is available.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

import kernels.compiled
from samlab.optim import SAM, create_optimizer

pytestmark = pytest.mark.skipif(
    not kernels.compiled.compiler_available(), reason="no C++ compiler for torch.compile"
)

DT = torch.float64
KW = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "rho": 0.05}
METHODS = {
    "sam": {},
    "asam": {"rho": 0.5},
    "gsam": {"alpha": 0.3},
    "looksam": {"k": 2},
    "onestep-sam": {},
    "wsam": {"gamma": 0.8},
    "wsam-coupled": {"gamma": 0.8, "decouple": False},
    "friendlysam": {"lmbda": 0.6},
    "bsam": {"num_data": 100},
}
#: the whole-phase compiled functions each method must use once SGD has its buffers
FUSED = {
    "sam": {"ascent_into", "sgd_step_"},
    "asam": {"ascent_into", "sgd_step_"},
    "gsam": {"ascent_into", "gsam_sgd_step_"},
    "looksam": {"ascent_into", "sgd_step_"},
    "onestep-sam": {"ascent_into", "sgd_step_"},
    "wsam": {"ascent_into", "wsam_sgd_step_"},
    "wsam-coupled": {"ascent_into", "wsam_sgd_step_"},
    "friendlysam": {"ema_direction_graph", "ascent_into", "sgd_step_"},
    "bsam": {"bsam_sample_graph", "ascent_into", "bsam_precision_graph", "bsam_update_graph"},
}


def mlp(dtype=DT, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(5, 7, dtype=dtype), nn.Tanh(), nn.Linear(7, 3, dtype=dtype))


def groups(model, name):
    """Two groups: weights with their own lr and rho, biases without weight decay (bSAM: one
    group; its per-group kernels would compile each graph twice, and the loop path covers
    groups in the battery)."""
    if name == "bsam":
        return list(model.parameters())
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    extra = {"rho": 0.08} if name != "onestep-sam" else {}
    return [{"params": weights, "lr": 0.03, **extra}, {"params": biases, "weight_decay": 0.0}]


def run(model, opt, steps, start=0, dtype=DT):
    for t in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + t)
        x = torch.randn(16, 5, generator=gen, dtype=dtype)
        y = torch.randn(16, 3, generator=gen, dtype=dtype)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture
def spy(monkeypatch):
    """Names of the compiled functions called (through ``kernels.compiled.compiled``)."""
    called = []
    real = kernels.compiled.compiled

    def recording(name):
        fn = real(name)

        def call(*args, **kwargs):
            called.append(name if isinstance(name, str) else name.__name__)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(kernels.compiled, "compiled", recording)
    return called


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_compiled_trajectory_matches_the_loop_and_uses_the_fused_calls(name, spy):
    runs = {}
    for impl in ("loop", "compiled"):
        model = mlp()
        registry_name = name.removesuffix("-coupled")
        options = {**KW, **METHODS[name]}
        opt = create_optimizer(registry_name, groups(model, name), impl=impl, **options)
        run(model, opt, 3)
        spy.clear()
        run(model, opt, 3, start=3)
        runs[impl] = flat(model)
        assert opt.impl == impl  # no fallback happened
    torch.testing.assert_close(runs["compiled"], runs["loop"], rtol=1e-13, atol=1e-15)
    assert set(spy) == FUSED[name] | (
        {"pair_stats_into", "axpy_into"} if name == "looksam" else set()
    )


@pytest.mark.slow
def test_rho_zero_is_sgd_bit_for_bit_in_float32():
    model, ref_model = mlp(torch.float32), mlp(torch.float32)
    sgd_kw = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True}
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.0, impl="compiled", **sgd_kw)
    ref = torch.optim.SGD(ref_model.parameters(), **sgd_kw)
    for t in range(5):
        run(model, opt, 1, start=t, dtype=torch.float32)
        run(ref_model, ref, 1, start=t, dtype=torch.float32)
        assert torch.equal(flat(model), flat(ref_model)), f"step {t}"
    assert opt.impl == "compiled"


@pytest.mark.slow
def test_optimizers_on_equal_shapes_share_the_compiled_graphs():
    from torch._dynamo.utils import counters

    model = mlp()
    run(model, create_optimizer("sam", model.parameters(), impl="compiled", **KW), 3)
    before = counters["stats"]["unique_graphs"]
    other = mlp(seed=1)
    run(other, create_optimizer("sam", other.parameters(), impl="compiled", **KW), 3)
    assert counters["stats"]["unique_graphs"] == before


def test_an_exhausted_compile_cache_warns_once_and_falls_back_to_the_loop(monkeypatch):
    from torch._dynamo.exc import FailOnRecompileLimitHit

    def exhausted(name):
        def call(*args, **kwargs):
            raise FailOnRecompileLimitHit("recompile_limit reached")

        return call

    monkeypatch.setattr(kernels.compiled, "compiled", exhausted)
    ref_model, model = mlp(), mlp()
    ref = create_optimizer("gsam", ref_model.parameters(), impl="loop", **KW)
    opt = create_optimizer("gsam", model.parameters(), impl="compiled", **KW)
    run(ref_model, ref, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(model, opt, 3)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "recompile_limit" in messages[0], messages
    assert opt.impl == "loop"
    torch.testing.assert_close(flat(model), flat(ref_model), rtol=1e-13, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam", "gsam", "onestep-sam"])
def test_compiled_resume_is_bit_exact(name):
    def fresh(seed=0):
        model = mlp(seed=seed)
        return model, create_optimizer(
            name, model.parameters(), impl="compiled", **{**KW, **METHODS[name]}
        )

    model, opt = fresh()
    run(model, opt, 6)
    straight = flat(model)
    model, opt = fresh()
    run(model, opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model, opt = fresh(seed=5)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    run(model, opt, 3, start=3)
    assert torch.equal(flat(model), straight)


@pytest.mark.slow
def test_gsam_first_step_compiles_nothing_it_uses_once(spy):
    """SGD's first step creates its momentum buffers eagerly; that step's decomposition runs
    the loop instead of compiling a graph used once, and the fused call takes over after."""
    model = mlp()
    opt = create_optimizer("gsam", model.parameters(), impl="compiled", **KW)
    run(model, opt, 1)
    assert spy == ["ascent_into"]
    spy.clear()
    run(model, opt, 1, start=1)
    assert spy == ["ascent_into", "gsam_sgd_step_"]


@pytest.mark.slow
def test_spare_buffers_are_one_reused_block_and_channels_last_keeps_its_format():
    def conv_model():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return nn.Sequential(
                nn.Conv2d(2, 4, 3, dtype=DT), nn.Flatten(), nn.Linear(36, 1, dtype=DT)
            )

    gen = torch.Generator().manual_seed(7)  # not the global RNG: compilation may draw from it
    x = torch.randn(4, 2, 5, 5, generator=gen, dtype=DT)
    y = torch.randn(4, 1, generator=gen, dtype=DT)
    runs, formats = {}, []
    for impl, channels_last in (("loop", False), ("compiled", False), ("compiled", True)):
        model = conv_model()
        if channels_last:
            model[0].weight.data = model[0].weight.data.to(memory_format=torch.channels_last)
        opt = SAM(model.parameters(), torch.optim.SGD, lr=0.05, momentum=0.9, impl=impl)

        def closure(model=model, opt=opt):
            opt.zero_grad()
            if opt.current_pass == "perturbed":
                formats.append(model[0].weight.is_contiguous(memory_format=torch.channels_last))
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        spares = []
        for _ in range(3):
            opt.step(closure)
            block = opt.perturbation.block
            spares.append(None if block is None else block.data_ptr())
        runs[(impl, channels_last)] = flat(model)
        if impl == "compiled" and not channels_last:
            assert len(set(spares)) == 1 and spares[0] is not None  # one block, allocated once
    torch.testing.assert_close(runs[("compiled", False)], runs[("loop", False)], rtol=1e-13, atol=0)
    torch.testing.assert_close(runs[("compiled", True)], runs[("loop", False)], rtol=1e-13, atol=0)
    assert formats[-3:] == [True, True, True]  # w + e kept channels_last for the forward


@pytest.mark.slow
def test_a_rho_schedule_and_an_lr_scheduler_do_not_recompile():
    from torch._dynamo.utils import counters

    from samlab.optim import LinearRho

    runs = {}
    for impl in ("loop", "compiled"):
        model = mlp()
        schedule = LinearRho(rho_max=0.08, rho_min=0.02, total_steps=8)
        opt = create_optimizer("gsam", model.parameters(), impl=impl, rho_schedule=schedule, **KW)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        for t in range(6):
            if t == 2:
                graphs = counters["stats"]["unique_graphs"]
            run(model, opt, 1, start=t)
            sched.step()
        if impl == "compiled":
            assert counters["stats"]["unique_graphs"] == graphs
        runs[impl] = flat(model)
    torch.testing.assert_close(runs["compiled"], runs["loop"], rtol=1e-13, atol=1e-15)


@pytest.mark.slow
def test_bsam_posterior_sample_is_the_reference():
    """The compiled sample (``z`` scaled and ``w`` added in one loop, in the buffer ``z`` was
    drawn into) is ``w + z / sqrt(N s)`` to rounding, ``z`` from the optimizer's generator (the
    generated code's division may round differently from eager's, as every compiled twin's)."""
    model = mlp()
    opt = create_optimizer("bsam", model.parameters(), impl="compiled", num_data=100, lr=0.05)
    run(model, opt, 2)  # the precision has moved from its start
    params = list(model.parameters())
    means = [p.detach().clone() for p in params]
    precisions = [opt.base_optimizer.state[p]["precision"].clone() for p in params]
    gen = torch.Generator()
    gen.set_state(opt.state_dict()["samlab"]["rng"]["cpu"])
    opt.begin_step()  # pass 1's weights (the test ends mid-step)
    for p, w, s in zip(params, means, precisions):
        z = torch.randn(p.shape, generator=gen, dtype=DT)
        torch.testing.assert_close(
            p.detach(), w + z / torch.sqrt(100.0 * s), rtol=1e-15, atol=1e-16
        )
        assert not torch.equal(p.detach(), w)
    assert opt.impl == "compiled"  # no fallback happened
