"""Edge cases of the protocol found in review: each once silently turned SAM into SGD or
loaded a wrong state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels import compiled
from samlab.optim import (
    GSAM,
    SAM,
    LookSAM,
    OneStepSAM,
    ProportionalRho,
    create_optimizer,
    get_optimizer_info,
    list_optimizers,
)


def model_and_data(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1)).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(16, 4, generator=gen, dtype=dtype)
    y = torch.randn(16, 1, generator=gen, dtype=dtype)
    return model, x, y


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def closure_for(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("cls", [SAM, GSAM, LookSAM])
def test_grads_zeroed_in_place_before_step_are_not_taken_as_the_clean_gradient(cls):
    runs = []
    for zero_first in (False, True):
        model, x, y = model_and_data()
        opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, rho=0.1)
        closure = closure_for(model, opt, x, y)
        for _ in range(4):
            if zero_first:
                opt.zero_grad(set_to_none=False)
            opt.step(closure)
        runs.append(flat(model))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_onestep_manual_api_without_begin_step_is_an_error():
    model, x, y = model_and_data()
    opt = OneStepSAM(model.parameters(), lr=0.1)
    ((model(x) - y) ** 2).mean().backward()
    with pytest.raises(RuntimeError, match="begin_step"):
        opt.first_step()


@pytest.mark.parametrize("name", list_optimizers() + ["sam-adam", "adamw-sam"])
def test_every_name_takes_the_shared_keywords(name):
    model, _, _ = model_and_data()
    needs = {"num_data": 100} if get_optimizer_info(name).samples_weights else {}  # bSAM's N
    opt = create_optimizer(
        name, model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, rho=0.05, **needs
    )
    assert isinstance(opt, torch.optim.Optimizer)


def test_state_dict_from_another_base_optimizer_is_refused_before_any_change():
    model, x, y = model_and_data()
    sgd = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    sgd.step(closure_for(model, sgd, x, y))
    adam = SAM(model.parameters(), torch.optim.Adam, lr=0.1)
    groups_before = adam.param_groups
    with pytest.raises(ValueError, match="base optimizer SGD"):
        adam.load_state_dict(sgd.state_dict())
    assert adam.param_groups is groups_before
    adam.step(closure_for(model, adam, x, y))  # still usable


def test_state_dict_from_another_model_is_refused():
    model, x, y = model_and_data()
    opt = SAM(model.parameters(), lr=0.1, momentum=0.9)
    opt.step(closure_for(model, opt, x, y))
    other = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 1)).double()
    with pytest.raises(ValueError, match="another model"):
        SAM(other.parameters(), lr=0.1, momentum=0.9).load_state_dict(opt.state_dict())


def test_looksam_k_mismatch_is_refused():
    model, x, y = model_and_data()
    opt = LookSAM(model.parameters(), lr=0.1, k=2)
    opt.step(closure_for(model, opt, x, y))
    with pytest.raises(ValueError, match="k=2"):
        LookSAM(model.parameters(), lr=0.1, k=5).load_state_dict(opt.state_dict())


def test_proportional_rho_follows_the_lr_through_warm_up():
    model, x, y = model_and_data()
    schedule = ProportionalRho(rho_max=0.1, rho_min=0.0)
    opt = GSAM(model.parameters(), lr=0.1, rho_schedule=schedule)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
    closure = closure_for(model, opt, x, y)
    rhos = []
    for _ in range(5):
        opt.step(closure)
        rhos.append(opt.last_step["rho"][0])
        warm.step()
    assert rhos[0] == pytest.approx(0.01)  # lr 0.01 of a 0.1 peak
    assert rhos[-1] == pytest.approx(0.1)
    assert rhos == sorted(rhos)


@pytest.mark.slow
@pytest.mark.skipif(not compiled.compiler_available(), reason="no C++ compiler for torch.compile")
@pytest.mark.parametrize("base", [torch.optim.SGD, torch.optim.AdamW])
def test_compiled_path_matches_the_loop_and_rho_zero_is_the_base(base):
    runs = {}
    for impl in ("loop", "compiled"):
        model, x, y = model_and_data()
        opt = SAM(model.parameters(), base, lr=0.01, rho=0.05, impl=impl)
        closure = closure_for(model, opt, x, y)
        for _ in range(5):
            opt.step(closure)
        runs[impl] = flat(model)
    torch.testing.assert_close(runs["compiled"], runs["loop"], rtol=1e-13, atol=1e-15)
    model, x, y = model_and_data()
    ref_model, _, _ = model_and_data()
    opt = SAM(model.parameters(), base, lr=0.01, rho=0.0, impl="compiled")
    ref = base(ref_model.parameters(), lr=0.01)
    for _ in range(5):
        opt.step(closure_for(model, opt, x, y))
        closure_for(ref_model, ref, x, y)()
        ref.step()
    torch.testing.assert_close(flat(model), flat(ref_model), rtol=0, atol=0)


def test_record_step_books_a_step_that_ran_outside_step():
    """``record_step`` is how a traced training step (``samlab.train.FusedStep``) reaches the
    optimizer's state: the record becomes ``last_step``, the step count advances (saved in
    ``state_dict``, and LookSAM's refresh cycle follows it)."""
    model, x, y = model_and_data()
    opt = LookSAM(model.parameters(), torch.optim.SGD, lr=0.1, rho=0.1, k=2)
    record = {"passes": 2, "skipped": False, "rho": [0.1]}
    opt.record_step(record)
    assert opt.last_step is record
    assert opt.state_dict()["samlab"]["step"] == 1
    opt.step(closure_for(model, opt, x, y))  # step 1 of a k=2 cycle: one pass
    assert opt.last_step["passes"] == 1
    opt.step(closure_for(model, opt, x, y))  # step 2: a refresh, two passes
    assert opt.last_step["passes"] == 2 and opt.state_dict()["samlab"]["step"] == 3
