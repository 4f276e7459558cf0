"""Each seed's documented loop, run through ``samlab.compat``, against a reference written here
from the seeds' pseudo-code (plain tensor arithmetic on a float64 MLP; no samlab.optim and no
kernels import). Where a seed has a bug the reference does the correct thing, as the drop-in.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from samlab.compat import SAMSGD, SSAMD, SSAMF, LinearScheduler
from samlab.compat.gsam import GSAM, CosineScheduler, ProportionScheduler
from samlab.compat.sam_v2 import SAM as SAMv2

STEPS = 5
TOL = dict(rtol=1e-10, atol=1e-12)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batches(n: int = STEPS, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(size, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (size,), generator=g),
        )
        for _ in range(n)
    ]


def params_of(model):
    return [p for p in model.parameters()]


def grads_at(model, weights, x, y):
    """Loss and gradient of the mean cross-entropy at ``weights`` (restored after)."""
    saved = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    out = [p.grad.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, w in zip(model.parameters(), saved):
            p.copy_(w)
    model.zero_grad(set_to_none=True)
    return loss.detach(), out


def norm(tensors):
    return torch.sqrt(sum((t * t).sum() for t in tensors))


def sgd(w, g, bufs, lr, momentum=0.0, weight_decay=0.0, dampening=0.0, nesterov=False):
    """torch.optim.SGD's update, written out."""
    out = []
    for i, (wi, gi) in enumerate(zip(w, g)):
        d = gi + weight_decay * wi
        if momentum:
            bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + (1 - dampening) * d
            d = d + momentum * bufs[i] if nesterov else bufs[i]
        out.append(wi - lr * d)
    return out


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_same(model, reference):
    for p, r in zip(model.parameters(), reference):
        torch.testing.assert_close(p.detach(), r, **TOL)


# --------------------------------------------------------------------------------------------
# moskomule/sam.pytorch
# --------------------------------------------------------------------------------------------


def test_samsgd_follows_the_seed_loop() -> None:
    model, data = mlp(), batches()
    ref_model = mlp()
    lr, rho, momentum, wd = 0.1, 0.05, 0.9, 5e-4
    optimizer = SAMSGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd, rho=rho)
    w, bufs = weights(ref_model), [None] * 4
    for x, y in data:

        def closure(x=x, y=y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        # reference (notes 5.3): clean loss/grad; eps = rho g / ||g||; grad at w + eps; SGD
        ref_loss, g = grads_at(ref_model, w, x, y)
        n = norm(g)
        e = [gi * (rho / (n + 1e-12)) for gi in g]  # the seed has no eps: NaN at g = 0
        _, gp = grads_at(ref_model, [wi + ei for wi, ei in zip(w, e)], x, y)
        w = sgd(w, gp, bufs, lr, momentum, wd)
        torch.testing.assert_close(loss.detach(), ref_loss, **TOL)
    assert_same(model, w)


def test_samsgd_zero_gradient_gives_no_nan() -> None:
    model = mlp()
    optimizer = SAMSGD(model.parameters(), lr=0.1, rho=0.05)

    def closure():
        optimizer.zero_grad()
        loss = (model(torch.zeros(2, 6, dtype=torch.float64)) * 0).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# jjsrf/SSAM-NEURIPS2024 (SAM.v2)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_v2_one_step_follows_the_corrected_pseudo_code(adaptive: bool) -> None:
    model, data = mlp(), batches()
    ref_model = mlp()
    lr, rho, momentum, wd = 0.1, 0.05, 0.9, 5e-4
    optimizer = SAMv2(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, v2=True,
                      lr=lr, momentum=momentum, weight_decay=wd)  # fmt: skip
    w, bufs, kept = weights(ref_model), [None] * 4, None
    for x, y in data:
        optimizer.zero_grad()
        optimizer.first_step(zero_grad=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.second_step(zero_grad=True)
        # reference (notes 2.3, corrected): e from the previous step's gradient (0 at first)
        if kept is None:
            e = [torch.zeros_like(wi) for wi in w]
        else:
            t = [wi.abs() if adaptive else torch.ones_like(wi) for wi in w]
            n = norm([ti * ki for ti, ki in zip(t, kept)])
            e = [rho * ti * ti * ki / (n + 1e-12) for ti, ki in zip(t, kept)]
        ref_loss, g = grads_at(ref_model, [wi + ei for wi, ei in zip(w, e)], x, y)
        kept = g
        w = sgd(w, g, bufs, lr, momentum, wd)
        torch.testing.assert_close(loss.detach(), ref_loss, **TOL)
    assert_same(model, w)
    assert any(p.grad is None for p in model.parameters())  # zero_grad set None: v2 still works


def test_sam_v2_two_step_is_classic_sam() -> None:
    model, data = mlp(), batches()
    ref_model = mlp()
    optimizer = SAMv2(model.parameters(), torch.optim.SGD, rho=0.05, v2=False, lr=0.1)
    w, bufs = weights(ref_model), [None] * 4
    for x, y in data:
        F.cross_entropy(model(x), y).backward()
        optimizer.first_step(zero_grad=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.second_step(zero_grad=True)
        _, g = grads_at(ref_model, w, x, y)
        n = norm(g)
        _, gp = grads_at(ref_model, [wi + 0.05 * gi / (n + 1e-12) for wi, gi in zip(w, g)], x, y)
        w = sgd(w, gp, bufs, 0.1)
    assert_same(model, w)


# --------------------------------------------------------------------------------------------
# juntang-zhuang/GSAM
# --------------------------------------------------------------------------------------------


def reference_linear(t, total, vmax, vmin, warmup=0, init=0.0):
    if t < warmup:
        return init + (vmax - init) * t / warmup
    return vmax + (vmin - vmax) * min((t - warmup) / (total - warmup), 1.0)


@pytest.mark.parametrize("adaptive", [False, True])
def test_gsam_follows_the_seed_readme_loop(adaptive: bool) -> None:
    model, data = mlp(), batches(n=6)
    ref_model = mlp()
    total, lr_max, alpha = 4, 0.1, 0.3  # T_max < steps: the schedules stay at their minimum
    base = torch.optim.SGD(model.parameters(), lr=lr_max, momentum=0.9, weight_decay=5e-4)
    lr_scheduler = LinearScheduler(T_max=total, max_value=lr_max, min_value=lr_max * 0.01,
                                   optimizer=base, warmup_step=1)  # fmt: skip
    rho_scheduler = LinearScheduler(T_max=total, max_value=0.1, min_value=0.02, warmup_step=1)
    optimizer = GSAM(params=model.parameters(), base_optimizer=base, model=model,
                     gsam_alpha=alpha, rho_scheduler=rho_scheduler, adaptive=adaptive)  # fmt: skip
    w, bufs = weights(ref_model), [None] * 4
    for k, (x, y) in enumerate(data):
        optimizer.set_closure(lambda out, t: F.cross_entropy(out, t), x, y)
        predictions, loss = optimizer.step()
        lr_scheduler.step()
        optimizer.update_rho_t()
        # reference (notes 3.3): lr and rho at the same step index k
        lr = reference_linear(k, total, lr_max, lr_max * 0.01, warmup=1)
        rho = reference_linear(k, total, 0.1, 0.02, warmup=1)
        ref_loss, g = grads_at(ref_model, w, x, y)
        t = [wi.abs() if adaptive else torch.ones_like(wi) for wi in w]
        n = norm([ti * gi for ti, gi in zip(t, g)])
        e = [rho * ti * ti * gi / (n + 1e-12) for ti, gi in zip(t, g)]
        _, gp = grads_at(ref_model, [wi + ei for wi, ei in zip(w, e)], x, y)
        ng, ngp = norm(g), norm(gp)
        cos = sum((a * b).sum() for a, b in zip(g, gp)) / (ng * ngp + 1e-12)
        final = [b - alpha * (a - cos * ng * b / (ngp + 1e-12)) for a, b in zip(g, gp)]
        w = sgd(w, final, bufs, lr, 0.9, 5e-4)
        torch.testing.assert_close(loss.detach(), ref_loss, **TOL)
        assert predictions.shape == (16, 3)
    assert_same(model, w)
    assert base.state  # the user's instance holds the momentum
    assert "state" in optimizer.state_dict()["base_optimizer"]


def test_gsam_schedulers() -> None:
    cos = CosineScheduler(T_max=10, max_value=1.0, min_value=0.1, warmup_steps=2, init_value=0.0)
    values = [cos.value] + [cos.step() for _ in range(14)]
    want = [t / 2 for t in range(2)] + [
        0.1 + 0.9 * (1 + math.cos(math.pi * min((t - 2) / 8, 1.0))) / 2 for t in range(2, 15)
    ]
    assert values == pytest.approx(want)
    assert values[-1] == pytest.approx(0.1)  # clamped past T_max
    model = mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.2)
    torch_scheduler = torch.optim.lr_scheduler.LambdaLR(base, lambda s: 1.0 - 0.1 * s)
    prop = ProportionScheduler(
        torch_scheduler, max_lr=0.2, min_lr=0.0, max_value=0.5, min_value=0.1
    )
    for _ in range(3):
        base.step()
        torch_scheduler.step()
        lr = torch_scheduler.get_last_lr()[0]
        assert prop.step() == pytest.approx(0.1 + 0.4 * lr / 0.2)
    with pytest.raises(ValueError, match="max_lr > min_lr"):
        ProportionScheduler(torch_scheduler, 0.1, 0.1, 0.5, 0.1)
    with pytest.raises(TypeError, match="already-built"):
        GSAM(model.parameters(), torch.optim.SGD, model, 0.1, cos)


# --------------------------------------------------------------------------------------------
# Mi-Peng sparse SAM
# --------------------------------------------------------------------------------------------


class Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def fisher(ref_model, w, dataset):
    """Empirical Fisher: per-sample cross-entropy gradients with the true labels, squared,
    summed over every sample of ``dataset`` (eval mode; the MLP has no BatchNorm)."""
    total = [torch.zeros_like(wi) for wi in w]
    for xi, yi in dataset:
        _, g = grads_at(ref_model, w, xi[None], yi[None])
        total = [t + gi * gi for t, gi in zip(total, g)]
    return total


def global_topk_mask(scores, sparsity):
    flat = torch.cat([s.reshape(-1) for s in scores])
    keep = int(flat.numel() * (1 - sparsity))
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, keep).indices] = 1
    return [m.view_as(s) for m, s in zip(torch.split(mask, [s.numel() for s in scores]), scores)]


def test_ssamf_follows_the_seed_engine_loop() -> None:
    model, ref_model = mlp(), mlp()
    epochs, per_epoch, rho, sparsity = 2, 3, 0.2, 0.5
    data = batches(n=epochs * per_epoch)
    g = torch.Generator().manual_seed(5)
    train_set = torch.utils.data.TensorDataset(
        torch.randn(24, 6, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (24,), generator=g),
    )
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    optimizer = SSAMF(model.parameters(), base, rho=rho, sparsity=sparsity, num_samples=24,
                      update_freq=1, pattern="unstructured")  # fmt: skip
    logger = Logger()
    w, bufs = weights(ref_model), [None] * 4
    mask = [torch.zeros_like(wi) for wi in w]  # the seed's masks start at zero
    for epoch in range(epochs):
        for i in range(per_epoch):
            x, y = data[epoch * per_epoch + i]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()

            def closure(x=x, y=y):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()

            optimizer.step(closure, model=model, train_data=train_set, logger=logger,
                           update=(i == 0))  # fmt: skip
            # reference (notes 1.4): e = rho * mask * g / (||g|| + 1e-7), masks refreshed after
            # the step from the Fisher of all 24 samples, global top-k
            _, gr = grads_at(ref_model, w, x, y)
            n = norm(gr)
            e = [rho * mi * gi / (n + 1e-7) for mi, gi in zip(mask, gr)]
            _, gp = grads_at(ref_model, [wi + ei for wi, ei in zip(w, e)], x, y)
            w = sgd(w, gp, bufs, 0.05, 0.9, 1e-3)
            if i == 0:
                mask = global_topk_mask(fisher(ref_model, w, train_set), sparsity)
    assert_same(model, w)
    for p, m in zip(model.parameters(), mask):
        assert torch.equal(optimizer.state[p]["mask"], m.bool())
    kept = int(83 * (1 - sparsity))  # 83 parameters, the seed's int(N * (1 - sparsity))
    assert logger.lines[:2] == ["Update Mask!", f"Mask Lived Weight: {kept / 83:.4f}"]


def test_ssamd_drops_and_grows_as_the_seed_with_weight_scores() -> None:
    model, ref_model = mlp(), mlp()
    data = batches(n=4)
    rho, sparsity, drop_rate, t_end = 0.2, 0.5, 0.5, 4
    base = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizer = SSAMD(model.parameters(), base, rho=rho, sparsity=sparsity, drop_rate=drop_rate,
                      drop_strategy="weight", growth_strategy="weight", update_freq=1,
                      T_start=0, T_end=t_end)  # fmt: skip
    mask = [optimizer.state[p]["mask"].double() for p in model.parameters()]  # random start
    total = sum(m.numel() for m in mask)
    assert sum(int(m.sum()) for m in mask) == int(total * (1 - sparsity))
    w, bufs = weights(ref_model), [None] * 4
    for epoch, (x, y) in enumerate(data):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()

        def closure(x=x, y=y):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()

        optimizer.step(closure, logger=None, update=True, epoch=epoch)
        _, gr = grads_at(ref_model, w, x, y)
        n = norm(gr)
        e = [rho * mi * gi / (n + 1e-7) for mi, gi in zip(mask, gr)]
        _, gp = grads_at(ref_model, [wi + ei for wi, ei in zip(w, e)], x, y)
        w = sgd(w, gp, bufs, 0.05)
        # reference (notes 1.4, SSAM-D): drop the k = floor(live * dr) live entries of lowest
        # |w|, revive the k dead entries of highest |w|; the live count stays exactly constant
        # (the seed rounds keep and revive counts separately, so its count drifts)
        rate = drop_rate * (1 + math.cos(math.pi * epoch / t_end)) / 2
        flat_m = torch.cat([m.reshape(-1) for m in mask])
        score = torch.cat([wi.abs().reshape(-1) for wi in w]) + 1e-7
        live = int(flat_m.sum())
        grow = min(math.floor(live * rate), flat_m.numel() - live)
        new = torch.zeros_like(flat_m)
        new[torch.topk(score * flat_m, live - grow).indices] = 1
        if grow:
            new[torch.topk(score * (1 - flat_m), grow).indices] = 1
        mask = [m.view_as(wi) for m, wi in zip(torch.split(new, [wi.numel() for wi in w]), w)]
    assert_same(model, w)
    for p, m in zip(model.parameters(), mask):
        assert torch.equal(optimizer.state[p]["mask"], m.bool())
