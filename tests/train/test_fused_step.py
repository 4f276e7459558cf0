"""FusedStep: the whole SAM/Adam step as one compiled graph must do what optimizer.step does."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samlab.models.samformer import samformer
from samlab.models.tsmixer import tsmixer
from samlab.optim import create_optimizer
from samlab.train.closures import make_closure
from samlab.train.fused_step import FusedStep, fused_step_unsupported


def _needs_compiler():
    import kernels.compiled

    if not kernels.compiled.compiler_available():
        pytest.skip("no C++ compiler for torch.compile")


def _samformer_setup():
    torch.manual_seed(0)
    model = samformer(3, seq_len=32, horizon=8)
    with torch.no_grad():  # non-trivial RevIN affine parameters
        model.revin.weight.uniform_(0.5, 1.5)
        model.revin.bias.uniform_(-0.5, 0.5)
    batches = [(torch.randn(6, 32, 3), torch.randn(6, 8, 3)) for _ in range(5)]
    return model, batches, "sam", dict(base="adam", rho=0.7, lr=1e-2)


def _mlp_setup():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))
    batches = [(torch.randn(8, 5), torch.randn(8, 2)) for _ in range(5)]
    return model, batches, "adam", dict(lr=1e-2, weight_decay=1e-2)


@pytest.mark.parametrize("setup", [_samformer_setup, _mlp_setup], ids=["sam-samformer", "adam-mlp"])
def test_fused_step_matches_optimizer_step(setup):
    _needs_compiler()
    model, batches, name, kwargs = setup()
    twin = copy.deepcopy(model)
    eager_opt = create_optimizer(name, list(model.parameters()), **kwargs)
    fused_opt = create_optimizer(name, list(twin.parameters()), **kwargs)
    fused = FusedStep(twin, fused_opt, F.mse_loss)
    for i, (x, y) in enumerate(batches):
        if i == 3:  # a schedule changes lr (and rho) between steps: no recompilation
            for opt in (eager_opt, fused_opt):
                opt.param_groups[0]["lr"] = 3e-3
                if name == "sam":
                    opt.param_groups[0]["rho"] = 0.3
        want = eager_opt.step(make_closure(model, F.mse_loss, x, y, eager_opt))
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            got = fused(x, y)
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-7)
    for (name_, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        if name_ == "key.bias":
            # softmax is invariant to q.b_K (the same for every key): its gradient is 0 up to
            # rounding, and Adam turns that rounding noise into steps of size lr on both paths
            continue
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name_)
    # the optimizer state is Adam's own, in the same tensors a checkpoint saves
    want_sd, got_sd = eager_opt.state_dict(), fused_opt.state_dict()
    if name == "sam":
        assert got_sd["samlab"]["step"] == want_sd["samlab"]["step"] == len(batches)
        for key in ("grad_norm", "perturbed_loss", "clean_loss"):
            torch.testing.assert_close(
                fused_opt.last_step[key], eager_opt.last_step[key], rtol=1e-4, atol=1e-7
            )
        assert fused_opt.last_step["rho"] == eager_opt.last_step["rho"] == [0.3]
        want_sd, got_sd = want_sd["base_optimizer"], got_sd["base_optimizer"]
    skip = {i for i, (n, _) in enumerate(model.named_parameters()) if n == "key.bias"}
    for index, state in want_sd["state"].items():
        if index in skip:
            continue
        mine = got_sd["state"][index]
        assert float(mine["step"]) == float(state["step"]) == len(batches)
        torch.testing.assert_close(mine["exp_avg"], state["exp_avg"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(mine["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-4, atol=1e-9)


def test_fused_sparse_sam_over_adam_matches_optimizer_step():
    """SSAM-F over Adam on a buffer-free model: dense (SAM) before the refresh, masked after."""
    _needs_compiler()
    model, batches, _, _ = _mlp_setup()
    twin = copy.deepcopy(model)
    kwargs = dict(base="adam", rho=0.3, lr=1e-2, num_samples=6)
    eager_opt = create_optimizer("ssamf", list(model.parameters()), **kwargs)
    fused_opt = create_optimizer("ssamf", list(twin.parameters()), **kwargs)
    fused = FusedStep(twin, fused_opt, F.mse_loss)
    for i, (x, y) in enumerate(batches):
        if i == 2:
            for m, opt in ((model, eager_opt), (twin, fused_opt)):
                opt.refresh_masks(m, F.mse_loss, [batches[0]])
            assert all(torch.equal(a, b) for a, b in zip(eager_opt.masks(), fused_opt.masks()))
        want = eager_opt.step(make_closure(model, F.mse_loss, x, y, eager_opt))
        got = fused(x, y)
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-7)
        # the radius reached / rho, recorded as on the optimizer path: 1 while dense
        radius = fused_opt.last_step["effective_radius"]
        torch.testing.assert_close(
            radius, eager_opt.last_step["effective_radius"], rtol=1e-4, atol=1e-7
        )
        assert (float(radius) == 1.0) if i < 2 else (0.0 < float(radius) < 1.0)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)
    assert fused_opt.last_step["mask_density"] == eager_opt.last_step["mask_density"] < 1


def test_fused_step_takes_windows_with_class_targets():
    # 3-D inputs go in channel-major; targets of another rank are passed as they are
    _needs_compiler()
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    twin = copy.deepcopy(model)
    eager_opt = create_optimizer("sam", list(model.parameters()), base="adam", rho=0.2, lr=1e-2)
    fused_opt = create_optimizer("sam", list(twin.parameters()), base="adam", rho=0.2, lr=1e-2)
    fused = FusedStep(twin, fused_opt, F.cross_entropy)
    for _ in range(3):
        x, y = torch.randn(5, 4, 3), torch.randint(0, 3, (5,))
        want = eager_opt.step(make_closure(model, F.cross_entropy, x, y, eager_opt))
        torch.testing.assert_close(fused(x, y), want.detach(), rtol=1e-5, atol=1e-7)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)


def test_fused_step_names_what_it_does_not_cover():
    model = samformer(3, seq_len=32, horizon=8)
    params = list(model.parameters())
    cases = {
        "buffers": (tsmixer(3, seq_len=32, horizon=8), "sam", dict(base="adam")),
        "adaptive": (model, "asam", dict(base="adam")),
        "SAM over Adam and plain Adam": (model, "sam", dict(base="sgd", lr=0.1)),
        "GSAM, whose step is not SAM's": (model, "gsam", dict(base="adam")),
        "WSAM, whose step is not SAM's": (model, "wsam", dict(base="adam")),
        "FriendlySAM, whose step is not SAM's": (model, "friendlysam", dict(base="adam")),
    }
    for needle, (net, name, kw) in cases.items():
        opt = create_optimizer(name, [p for p in net.parameters() if p.requires_grad], **kw)
        reason = fused_step_unsupported(net, opt)
        assert reason is not None and needle in reason, (needle, reason)
        with pytest.raises(ValueError, match="FusedStep cannot run"):
            FusedStep(net, opt)
    groups = [{"params": params[:2]}, {"params": params[2:]}]
    assert "param groups" in fused_step_unsupported(model, torch.optim.Adam(groups))
    assert "exactly the model's" in fused_step_unsupported(model, torch.optim.Adam(params[1:]))
    assert "amsgrad" in fused_step_unsupported(model, torch.optim.Adam(params, amsgrad=True))
    assert fused_step_unsupported(model, torch.optim.Adam(params)) is None
