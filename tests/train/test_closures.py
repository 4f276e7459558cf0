"""``samlab.train.make_closure`` and the model-side half of the closure protocol.

Checks, against independent references: the BatchNorm policy (running statistics compared with
a copy of the model that ran only the forward the policy names), gradient accumulation,
``current_pass()`` inside a raw closure, bf16 autocast on CPU, and fp16 ``GradScaler`` logic on
CPU (finite steps, overflow in either pass skipping the step, ``max_grad_norm`` after
unscaling). A CUDA variant of the AMP test runs where a GPU exists.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samlab.optim import StepRecorder, create_optimizer, current_pass, get_optimizer_info
from samlab.optim import list_optimizers as _names
from samlab.train import make_closure

DT = torch.float64
SAM_NAMES = [n for n in _names() if get_optimizer_info(n).sam_family]
TWO_PASS = [n for n in SAM_NAMES if get_optimizer_info(n).passes != 1]
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def needs(name):
    """Keywords an optimizer cannot do without: bSAM's number of training examples."""
    return {"num_data": 64} if get_optimizer_info(name).samples_weights else {}


def base_untouched(opt) -> bool:
    """The base optimizer has not stepped: it holds no state (SGD's momentum buffers), or, for
    bSAM (whose precision exists from its first posterior sample), its gradient average is 0."""
    states = list(opt.base_optimizer.state.values())
    if getattr(opt, "posterior_variance", None) is not None:
        return all(not s["exp_avg"].any() for s in states)
    return len(states) == 0


# --------------------------------------------------------------------------- models / data
class SmallCNN(nn.Module):
    def __init__(self, dtype=DT):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, dtype=dtype)
        self.bn = nn.BatchNorm2d(4, dtype=dtype)
        self.head = nn.Linear(4, 3, dtype=dtype)
        self.bn1d = nn.BatchNorm1d(3, momentum=0.3, dtype=dtype)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        return self.bn1d(self.head(h.mean(dim=(2, 3))))


def cnn(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SmallCNN()


def image_batch(t=0, n=8):
    gen = torch.Generator().manual_seed(100 + t)
    x = torch.randn(n, 2, 5, 5, generator=gen, dtype=DT) * 2 + 0.5
    y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


def mlp(dtype=DT, seed=0, d_in=4, hidden=8, d_out=3):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(d_in, hidden, dtype=dtype), nn.Tanh(), nn.Linear(hidden, d_out, dtype=dtype)
        )


def regression_batch(n=16, dtype=DT, seed=1, d_in=4, d_out=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(n, d_out, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def bn_stats(model):
    return {
        f"{name}.{key}": getattr(m, key).clone()
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for key in BN_STATS
    }


def assert_stats_equal(a, b):
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key}: {a[key]} != {b[key]}"


def forwarded(snapshot, x):
    """The BN statistics of ``snapshot`` after one training-mode forward on ``x``."""
    ref = copy.deepcopy(snapshot)
    ref.train()
    with torch.no_grad():
        ref(x)
    return bn_stats(ref)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def spy_on(closure, opt, model, log):
    """Wraps ``closure``: records (pass, copy of the model as the pass starts)."""

    def spy():
        log.append((getattr(opt, "current_pass", None), copy.deepcopy(model)))
        return closure()

    return spy


# --------------------------------------------------------------------------- BatchNorm policy
@pytest.mark.parametrize("policy", ["clean", "perturbed", "both", "none"])
def test_bn_policy_two_pass_sam(policy):
    model = cnn()
    opt = create_optimizer("sam", model.parameters(), lr=0.1, momentum=0.9, rho=0.5)
    for t in range(2):
        x, y = image_batch(t)
        before = bn_stats(model)
        log = []
        closure = make_closure(model, F.cross_entropy, x, y, opt, bn_policy=policy)
        opt.step(spy_on(closure, opt, model, log))
        assert [p for p, _ in log] == ["clean", "perturbed"]
        (_, at_w), (_, at_w_e) = log
        # the passes really ran at different weights and give different statistics
        assert not torch.equal(at_w.conv.weight, at_w_e.conv.weight)
        at_w_stats, at_w_e_stats = forwarded(at_w, x), forwarded(at_w_e, x)
        assert not torch.equal(at_w_stats["bn.running_var"], at_w_e_stats["bn.running_var"])
        after = bn_stats(model)
        if policy == "none":
            assert_stats_equal(after, before)
            assert_stats_equal(bn_stats(at_w_e), before)
        elif policy == "clean":
            assert_stats_equal(after, forwarded(at_w, x))
        elif policy == "perturbed":
            assert_stats_equal(bn_stats(at_w_e), before)  # the clean pass left them alone
            assert_stats_equal(after, forwarded(at_w_e, x))
        else:  # both: clean then perturbed
            assert_stats_equal(bn_stats(at_w_e), forwarded(at_w, x))
            assert_stats_equal(after, forwarded(at_w_e, x))
        if policy != "none":
            assert not torch.equal(after["bn.running_mean"], before["bn.running_mean"])
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("name", ["onestep-sam", "sgd"])
@pytest.mark.parametrize("policy", ["clean", "perturbed", "both", "none"])
def test_bn_policy_one_pass_steps_update_unless_none(name, policy):
    model = cnn()
    kw = {"rho": 0.5} if name == "onestep-sam" else {}
    opt = create_optimizer(name, model.parameters(), lr=0.1, momentum=0.9, **kw)
    for t in range(3):
        x, y = image_batch(t)
        before = bn_stats(model)
        log = []
        closure = make_closure(model, F.cross_entropy, x, y, opt, bn_policy=policy)
        opt.step(spy_on(closure, opt, model, log))
        assert len(log) == 1
        after = bn_stats(model)
        if policy == "none":
            assert_stats_equal(after, before)
        else:
            assert_stats_equal(after, forwarded(log[0][1], x))


def test_bn_policy_looksam_one_pass_steps_update():
    model = cnn()
    opt = create_optimizer("looksam", model.parameters(), lr=0.1, rho=0.5, k=2)
    for t in range(4):
        x, y = image_batch(t)
        log = []
        closure = make_closure(model, F.cross_entropy, x, y, opt, bn_policy="perturbed")
        opt.step(spy_on(closure, opt, model, log))
        assert len(log) == (2 if t % 2 == 0 else 1)
        # refresh steps: only the perturbed pass; one-pass steps: that pass
        assert_stats_equal(bn_stats(model), forwarded(log[-1][1], x))


def test_bn_policy_rejects_unknown_values():
    model = cnn()
    opt = create_optimizer("sam", model.parameters(), lr=0.1)
    x, y = image_batch()
    with pytest.raises(ValueError, match="bn_policy"):
        make_closure(model, F.cross_entropy, x, y, opt, bn_policy="sometimes")
    with pytest.raises(ValueError, match="perturbation"):
        make_closure(model, F.cross_entropy, x, y, opt, perturbation="local")
    with pytest.raises(ValueError, match="per_worker"):  # needs a DDP model (no_sync)
        make_closure(model, F.cross_entropy, x, y, opt, perturbation="per_worker")
    with pytest.raises(ValueError, match="micro_batches"):
        make_closure(model, F.cross_entropy, x, y, opt, micro_batches=0)
    with pytest.raises(ValueError, match="micro_batches"):
        make_closure(model, F.cross_entropy, x, y, opt, micro_batches=len(x) + 1)


# --------------------------------------------------------------------------- accumulation
@pytest.mark.parametrize("name", SAM_NAMES + ["sgd"])
@pytest.mark.parametrize("n, micro", [(16, 4), (10, 4)])
def test_micro_batches_give_the_full_batch_step(name, n, micro):
    finals = []
    for mb in (1, micro):
        model = mlp()
        opt = create_optimizer(name, model.parameters(), lr=0.1, momentum=0.9, **needs(name))
        losses = []
        for t in range(3):
            x, y = regression_batch(n=n, seed=t)
            closure = make_closure(model, F.mse_loss, x, y, opt, micro_batches=mb)
            losses.append(opt.step(closure))
            if mb > 1:
                assert closure.calls == get_optimizer_info(name).passes or name == "looksam"
                assert closure.last_outputs.shape == (n, 3)
        finals.append((params_of(model), losses))
    for a, b in zip(finals[0][0], finals[1][0]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    for a, b in zip(finals[0][1], finals[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- current_pass
@pytest.mark.parametrize("name", SAM_NAMES)
def test_current_pass_inside_a_raw_closure(name):
    model = mlp()
    kw = {"k": 2} if name == "looksam" else needs(name)
    opt = create_optimizer(name, model.parameters(), lr=0.1, **kw)
    x, y = regression_batch()
    seen = []

    def closure():
        seen.append((current_pass(), opt.current_pass, opt.single_pass))
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        return loss

    assert current_pass() is None and opt.current_pass is None
    per_step = []
    for _ in range(2):
        seen.clear()
        opt.step(closure)
        per_step.append(list(seen))
        assert current_pass() is None and opt.current_pass is None
    if name == "onestep-sam":
        assert per_step == [[("perturbed", "perturbed", True)]] * 2
    elif name == "looksam":
        assert per_step == [
            [("clean", "clean", False), ("perturbed", "perturbed", False)],
            [("clean", "clean", True)],
        ]
    else:
        assert per_step == [[("clean", "clean", False), ("perturbed", "perturbed", False)]] * 2


def test_current_pass_is_reset_after_an_exception():
    model = mlp()
    opt = create_optimizer("sam", model.parameters(), lr=0.1, rho=0.3)
    x, y = regression_batch()
    w0 = params_of(model)

    def closure():
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if current_pass() == "perturbed":
            raise RuntimeError("boom in the perturbed pass")
        return loss

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure)
    assert current_pass() is None and opt.current_pass is None
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), w0))  # w restored


# --------------------------------------------------------------------------- bf16 autocast
def test_bf16_autocast_loss_finite_and_falling():
    torch.manual_seed(0)
    model = mlp(dtype=torch.float32)
    x, y = regression_batch(n=32, dtype=torch.float32)
    opt = create_optimizer("sam", model.parameters(), lr=0.1, momentum=0.9, rho=0.05)
    losses = []
    for _ in range(20):
        closure = make_closure(model, F.mse_loss, x, y, opt, autocast_dtype=torch.bfloat16)
        loss = opt.step(closure)
        assert loss.dtype in (torch.bfloat16, torch.float32)
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_step_within_bf16_tolerance_of_float32():
    x, y = regression_batch(n=32, dtype=torch.float32)
    results = {}
    for dtype in (None, torch.bfloat16):
        model = mlp(dtype=torch.float32)
        w0 = params_of(model)
        opt = create_optimizer("sam", model.parameters(), lr=0.1, rho=0.05)
        loss = opt.step(make_closure(model, F.mse_loss, x, y, opt, autocast_dtype=dtype))
        results[dtype] = (float(loss), [p - w for p, w in zip(params_of(model), w0)])
    loss32, delta32 = results[None]
    loss16, delta16 = results[torch.bfloat16]
    assert loss16 == pytest.approx(loss32, rel=2e-2)
    for a, b in zip(delta16, delta32):
        # bf16 matmuls: ~2**-8 relative error per product, a few products deep
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2 * float(b.abs().max()))


# --------------------------------------------------------------------------- fp16 GradScaler
def scaler_setup(name="sam", init_scale=2.0**12, **opt_kw):
    model = mlp(dtype=torch.float32)
    kw = {"lr": 0.1, "rho": 0.05, **needs(name), **opt_kw}
    opt = create_optimizer(name, model.parameters(), **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    assert scaler.is_enabled()
    return model, opt, scaler


class InfInjector:
    """Puts +inf into the first layer's gradient during the chosen pass."""

    def __init__(self, model, opt, target_pass):
        self.opt, self.target, self.on = opt, target_pass, False
        model[0].weight.register_hook(self._hook)

    def _hook(self, grad):
        return torch.full_like(grad, float("inf")) if self.on else grad

    def wrap(self, closure):
        def spy():
            self.on = self.opt.current_pass == self.target
            return closure()

        return spy


@pytest.mark.parametrize("name", SAM_NAMES)
def test_grad_scaler_finite_step_equals_unscaled_step(name):
    x, y = regression_batch(dtype=torch.float32)
    finals = []
    for use_scaler in (False, True):
        model, opt, scaler = scaler_setup(name, momentum=0.9)
        for _ in range(3):
            closure = make_closure(
                model, F.mse_loss, x, y, opt, scaler=scaler if use_scaler else None
            )
            loss = opt.step(closure, scaler=scaler if use_scaler else None)
            assert torch.isfinite(loss)
            if use_scaler:
                scaler.update()
                assert scaler.get_scale() == 2.0**12
                assert opt.last_step["skipped"] is False
        finals.append(params_of(model))
    for a, b in zip(*finals):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", TWO_PASS)
def test_grad_scaler_overflow_in_clean_pass_skips_step(name):
    x, y = regression_batch(dtype=torch.float32)
    model, opt, scaler = scaler_setup(name, momentum=0.9)
    recorder = StepRecorder(opt)
    injector = InfInjector(model, opt, "clean")
    w0 = params_of(model)
    closure = make_closure(model, F.mse_loss, x, y, opt, scaler=scaler)
    opt.step(injector.wrap(closure), scaler=scaler)
    assert closure.calls == 1  # the perturbed pass was not run
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), w0))
    assert opt.last_step["skipped"] is True and recorder.records[-1]["skipped"] is True
    assert base_untouched(opt)  # no momentum buffers: the base did not step
    scaler.update()
    assert scaler.get_scale() == 2.0**11
    # the next step (finite) runs normally at the lowered scale; a skipped step is not a step,
    # so it is again a two-pass step (LookSAM: the skipped refresh is not lost for k steps)
    injector.target = None
    closure = make_closure(model, F.mse_loss, x, y, opt, scaler=scaler)
    opt.step(injector.wrap(closure), scaler=scaler)
    scaler.update()
    assert opt.last_step["skipped"] is False
    assert closure.calls == 2, "the skipped step advanced the optimizer's step count"
    assert scaler.get_scale() == 2.0**11
    assert any(not torch.equal(a, b) for a, b in zip(params_of(model), w0))


@pytest.mark.parametrize("name", TWO_PASS)
def test_grad_scaler_overflow_in_perturbed_pass_skips_and_restores(name):
    x, y = regression_batch(dtype=torch.float32)
    model, opt, scaler = scaler_setup(name, momentum=0.9, rho=0.5)
    injector = InfInjector(model, opt, "perturbed")
    w0 = params_of(model)
    seen = []
    closure = make_closure(model, F.mse_loss, x, y, opt, scaler=scaler)

    def spy():
        seen.append(params_of(model))
        return closure()

    opt.step(injector.wrap(spy), scaler=scaler)
    assert closure.calls == 2
    assert any(not torch.equal(a, b) for a, b in zip(seen[1], w0))  # it was perturbed
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), w0))  # bit-exact restore
    assert opt.last_step["skipped"] is True
    assert base_untouched(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**11


def test_grad_scaler_overflow_in_onestep_pass_skips_and_restores():
    x, y = regression_batch(dtype=torch.float32)
    model, opt, scaler = scaler_setup("onestep-sam", rho=0.5)
    closure = make_closure(model, F.mse_loss, x, y, opt, scaler=scaler)
    opt.step(closure, scaler=scaler)  # keeps g_0, so step 1 is perturbed
    scaler.update()
    injector = InfInjector(model, opt, "perturbed")
    w1 = params_of(model)
    kept = {k: v["kept_grad"].clone() for k, v in opt.state.items()}
    closure = make_closure(model, F.mse_loss, x, y, opt, scaler=scaler)
    opt.step(injector.wrap(closure), scaler=scaler)
    assert closure.calls == 1 and opt.last_step["skipped"] is True
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), w1))
    assert all(torch.equal(opt.state[k]["kept_grad"], v) for k, v in kept.items())
    scaler.update()
    assert scaler.get_scale() == 2.0**11


@pytest.mark.parametrize("use_scaler", [False, True])
def test_max_grad_norm_clips_the_final_unscaled_gradient(use_scaler):
    x, y = regression_batch(dtype=torch.float32)
    y = y * 50  # a large gradient
    max_norm = 0.1
    model, opt, scaler = scaler_setup("sam", lr=1.0, momentum=0.0, max_grad_norm=max_norm)
    scaler = scaler if use_scaler else None
    w0 = params_of(model)
    opt.step(make_closure(model, F.mse_loss, x, y, opt, scaler=scaler), scaler=scaler)
    assert opt.last_step["grad_norm"] > 10 * max_norm
    update = torch.sqrt(sum(((a - b).double() ** 2).sum() for a, b in zip(params_of(model), w0)))
    assert float(update) == pytest.approx(max_norm, rel=1e-5)
    if scaler is not None:
        scaler.update()
        assert scaler.get_scale() == 2.0**12


def test_grad_scaler_manual_api_matches_closure():
    x, y = regression_batch(dtype=torch.float32)
    finals = []
    for api in ("closure", "manual"):
        model, opt, scaler = scaler_setup("sam", momentum=0.9)
        for _ in range(2):
            if api == "closure":
                opt.step(make_closure(model, F.mse_loss, x, y, opt, scaler=scaler), scaler=scaler)
            else:
                opt.begin_step()
                opt.zero_grad()
                scaler.scale(F.mse_loss(model(x), y)).backward()
                if opt.first_step(zero_grad=True, scaler=scaler):
                    scaler.scale(F.mse_loss(model(x), y)).backward()
                opt.second_step(zero_grad=True, scaler=scaler)
            scaler.update()
        finals.append(params_of(model))
    assert all(torch.equal(a, b) for a, b in zip(*finals))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fp16 autocast)")
def test_fp16_autocast_with_grad_scaler_on_cuda():
    device = torch.device("cuda")
    x, y = (t.to(device) for t in regression_batch(n=64, dtype=torch.float32))
    results = {}
    for amp in (False, True):
        model = mlp(dtype=torch.float32).to(device)
        w0 = params_of(model)
        opt = create_optimizer("sam", model.parameters(), lr=0.1, momentum=0.9, rho=0.05)
        scaler = torch.amp.GradScaler("cuda", init_scale=2.0**14) if amp else None
        losses = []
        for t in range(20):
            closure = make_closure(
                model,
                F.mse_loss,
                x,
                y,
                opt,
                scaler=scaler,
                autocast_dtype=torch.float16 if amp else None,
            )
            losses.append(float(opt.step(closure, scaler=scaler)))
            if scaler is not None:
                scaler.update()
            if t == 0:
                first = [p - w for p, w in zip(params_of(model), w0)]
        results[amp] = (losses, first)
    losses, first16 = results[True]
    _, first32 = results[False]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    for a, b in zip(first16, first32):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2 * float(b.abs().max()))
