"""Side-by-side cost of samlab's SAM-family steps against plain SGD and pytorch-optimizer.

Run::

    OMP_NUM_THREADS=1 python benchmarks/optim_step.py [--quick] [--models resnet18,vit]
        [--batch-sizes 128,8] [--repeats N] [--out results/benchmarks/optim_step.md]

Two measures, each as medians of paired ratios from interleaved arms (``_timing.py``):

A. Full step / SGD step (forward + backward + update) on a CIFAR-shaped synthetic batch, at
   each batch size: plain SGD, two bare forward+backward passes (the floor of any two-pass
   method), samlab SAM / GSAM / LookSAM (k=5) / one-step SAM through ``step(closure)``, and
   pytorch-optimizer's SAM, GSAM and LookSAM (documented usage; LookSAM also with the caller
   skipping the second pass between refreshes); WSAM, FriendlySAM and bSAM, samlab's and
   pytorch-optimizer's, also as ratios to samlab SAM's full step (target: within 3%).
   LookSAM arms time one whole cycle of k steps per call and report seconds per step.
B. Optimizer-only work on cached gradients / default ``torch.optim.SGD.step``: ``.grad`` is set
   once from one real backward; no forward or backward is timed (WSAM, FriendlySAM, bSAM: a
   fresh copy of the gradient is put back untimed before every call; their target is 2x).
C. (``--measures C``, not run by default) ``impl="foreach"`` / ``impl="loop"`` on CPU: the
   optimizer-only work of SAM, GSAM and one-step SAM on models of 2k to 2M parameters (the
   choice ``impl="auto"`` makes below 2M parameters), paired per round per method.

Batch sizes run in ascending order (the smallest first absorbs torch.compile's one-time
compilation in its warm-up; the same optimizers then run the larger batch). At batch sizes
>= 64 only the core arms run unless ``--all-arms`` (a ResNet-18 pass at batch 128 takes
seconds on one thread, and there the optimizer's own work is a fraction of a percent).

The clock is process CPU time by default (``--clock cpu``): on a shared machine it is far
steadier than wall time, which also counts the time other processes held the core; wall time
is recorded on the same calls and shown next to it. Compilation is reported in wall seconds.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _timing import Arm, ArmResult, Report, format_markdown_table, quartiles, run_interleaved
from torch import nn

from samlab.models import create_model
from samlab.optim import create_optimizer

LR = 1e-4  # small, so that weights stay sane over many repeats
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
RHO = 0.05
ASAM_RHO = 0.5
GSAM_ALPHA = 0.4
LOOKSAM_K = 5
LOOKSAM_ALPHA = 0.7
WSAM_GAMMA = 0.9  # the paper's range 0.8-0.95; decoupled update
FSAM_SIGMA, FSAM_LMBDA = 1.0, 0.9
BSAM_NUM_DATA = 50_000  # CIFAR-10's training set
#: WSAM, FriendlySAM and bSAM, and pytorch-optimizer's classes of the same name
VARIANTS = ("WSAM", "FriendlySAM", "bSAM")
MODEL_NAMES = {"resnet18": "resnet18_cifar", "vit": "vit_small"}
SGD_KW = dict(lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

#: measure A targets: arm -> {batch size or None (any): max ratio}
FULL_TARGETS: dict[str, dict[int | None, float]] = {
    "samlab SAM": {128: 2.02, 8: 2.10},
    "samlab one-step SAM": {None: 1.10},
    f"samlab LookSAM k={LOOKSAM_K}": {None: 1.25},
}
#: measure A, the variants against samlab SAM's full step (median of per-round ratios)
VS_SAM_TARGET = 1.03
#: arms run at batch sizes >= LARGE_BATCH unless --all-arms
CORE_ARMS = ("SGD", "two bare passes", "samlab SAM", *(f"samlab {v}" for v in VARIANTS))
LARGE_BATCH = 64
#: measure B targets (default impl only)
OPTIM_TARGETS: dict[str, float] = {
    "samlab SAM [auto]": 1.5,
    "samlab GSAM [auto]": 2.5,
    "samlab WSAM [auto]": 2.0,
    "samlab FriendlySAM [auto]": 2.0,
}


class Batch:
    """The current synthetic batch (arms read it at call time, so they survive a size change)."""

    def __init__(self) -> None:
        self.x = torch.empty(0)
        self.y = torch.empty(0, dtype=torch.long)

    def set(self, batch_size: int, seed: int = 1234) -> None:
        gen = torch.Generator().manual_seed(seed + batch_size)
        self.x = torch.randn(batch_size, 3, 32, 32, generator=gen)
        self.y = torch.randint(0, 10, (batch_size,), generator=gen)


def _criterion() -> nn.Module:
    return nn.CrossEntropyLoss()


def _closure(model: nn.Module, opt: torch.optim.Optimizer, batch: Batch, crit: nn.Module):
    def closure():
        opt.zero_grad(set_to_none=True)
        loss = crit(model(batch.x), batch.y)
        loss.backward()
        return loss

    return closure


def _samlab_impl(opt: Any) -> str:
    """The tensor-list path a samlab optimizer really took (after its first step)."""
    if opt.impl != "auto":
        return opt.impl
    resolved = opt.dispatch.cpu_choice
    return f"auto->{resolved}" if resolved else "auto"


# ---------------------------------------------------------------------------- measure A
def full_step_arms(base_model: nn.Module, batch: Batch) -> list[Arm]:
    """Measure A's arms, each on its own copy of ``base_model`` (own weights, own state)."""
    import pytorch_optimizer as po

    crit = _criterion()
    arms: list[Arm] = []

    def fresh() -> nn.Module:
        return copy.deepcopy(base_model).train()

    # plain SGD: the baseline
    m_sgd = fresh()
    sgd = torch.optim.SGD(m_sgd.parameters(), **SGD_KW)

    def sgd_step():
        sgd.zero_grad()
        crit(m_sgd(batch.x), batch.y).backward()
        sgd.step()

    arms.append(Arm("SGD", sgd_step, info={"note": "torch.optim.SGD, default (per-tensor) path"}))

    # two bare passes: the floor of every two-pass method
    m_bare = fresh()

    def two_passes():
        for _ in range(2):
            m_bare.zero_grad(set_to_none=True)
            crit(m_bare(batch.x), batch.y).backward()

    arms.append(Arm("two bare passes", two_passes, info={"note": "2x forward+backward, no update"}))

    # samlab, through step(closure)
    def samlab_arm(label: str, name: str, per_call: int = 1, warmup: int = 2, **kw) -> None:
        model = fresh()
        opt = create_optimizer(name, model.parameters(), **SGD_KW, **kw)
        closure = _closure(model, opt, batch, crit)

        def step():
            for _ in range(per_call):
                opt.step(closure)

        info = {"impl": lambda opt=opt: _samlab_impl(opt), "samlab": True}
        arms.append(Arm(label, step, per_call=per_call, warmup=warmup, info=info))

    samlab_arm("samlab SAM", "sam", rho=RHO)
    samlab_arm("samlab GSAM", "gsam", rho=RHO, alpha=GSAM_ALPHA)
    samlab_arm(
        f"samlab LookSAM k={LOOKSAM_K}",
        "looksam",
        per_call=LOOKSAM_K,
        warmup=1,
        rho=RHO,
        k=LOOKSAM_K,
        alpha=LOOKSAM_ALPHA,
    )
    samlab_arm("samlab one-step SAM", "onestep-sam", rho=RHO)
    samlab_arm("samlab WSAM", "wsam", rho=RHO, gamma=WSAM_GAMMA)
    samlab_arm("samlab FriendlySAM", "friendlysam", rho=RHO, sigma=FSAM_SIGMA, lmbda=FSAM_LMBDA)
    samlab_arm("samlab bSAM", "bsam", rho=RHO, num_data=BSAM_NUM_DATA)

    # pytorch-optimizer SAM, documented usage: closure(); step(closure)
    m_po = fresh()
    po_sam = po.SAM(m_po.parameters(), torch.optim.SGD, rho=RHO, **SGD_KW)
    po_sam_closure = _closure(m_po, po_sam, batch, crit)

    def po_sam_step():
        po_sam_closure()
        po_sam.step(po_sam_closure)

    arms.append(Arm("PO SAM", po_sam_step, info={"note": "closure(); step(closure)"}))

    # pytorch-optimizer GSAM: base optimizer instance, model, rho scheduler, set_closure
    m_pg = fresh()
    pg_base = torch.optim.SGD(m_pg.parameters(), **SGD_KW)
    pg_lr = torch.optim.lr_scheduler.LambdaLR(pg_base, lambda _: 1.0)
    pg_rho = po.ProportionScheduler(pg_lr, max_lr=LR, min_lr=LR, max_value=RHO, min_value=RHO)
    po_gsam = po.GSAM(m_pg.parameters(), pg_base, m_pg, pg_rho, alpha=GSAM_ALPHA)

    def po_gsam_step():
        po_gsam.set_closure(crit, batch.x, batch.y)
        po_gsam.step()
        po_gsam.update_rho_t()

    arms.append(
        Arm("PO GSAM", po_gsam_step, info={"note": "set_closure(); step(); update_rho_t()"})
    )

    # pytorch-optimizer LookSAM k=5: documented (closure every step) and caller-skipped
    def po_looksam_arm(label: str, skip: bool, note: str) -> None:
        model = fresh()
        opt = po.LookSAM(
            model.parameters(),
            torch.optim.SGD,
            rho=RHO,
            k=LOOKSAM_K,
            alpha=LOOKSAM_ALPHA,
            **SGD_KW,
        )
        closure = _closure(model, opt, batch, crit)

        def one_step():
            closure()
            if not skip:
                opt.step(closure)
                return
            if opt.get_step() % opt.k == 0:  # refresh step: perturb, second pass
                opt.first_step(zero_grad=True)
                closure()
            opt.second_step()  # other steps: reuse g_v on the clean gradient

        def cycle():
            for _ in range(LOOKSAM_K):
                one_step()

        arms.append(Arm(label, cycle, per_call=LOOKSAM_K, info={"note": note}))

    po_looksam_arm(
        f"PO LookSAM k={LOOKSAM_K} (documented)", False, "closure(); step(closure) every step"
    )
    po_looksam_arm(
        f"PO LookSAM k={LOOKSAM_K} (caller skips)",
        True,
        "second pass only when get_step() % k == 0",
    )
    arms += po_variant_full_arms(fresh, batch, crit)
    return arms


def po_variants(model: nn.Module) -> dict[str, torch.optim.Optimizer]:
    """pytorch-optimizer's WSAM, FriendlySAM and BSAM on ``model``, with samlab's settings."""
    import pytorch_optimizer as po

    ps = list(model.parameters())
    return {
        "WSAM": po.WSAM(model, ps, torch.optim.SGD, rho=RHO, gamma=WSAM_GAMMA, **SGD_KW),
        "FriendlySAM": po.FriendlySAM(
            ps, torch.optim.SGD, rho=RHO, sigma=FSAM_SIGMA, lmbda=FSAM_LMBDA, **SGD_KW
        ),
        "bSAM": po.BSAM(ps, num_data=BSAM_NUM_DATA, lr=LR, weight_decay=WEIGHT_DECAY, rho=RHO),
    }


def po_variant_full_arms(fresh: Callable[[], nn.Module], batch: Batch, crit) -> list[Arm]:
    """pytorch-optimizer's WSAM, FriendlySAM, BSAM in their documented usage: WSAM and BSAM
    ``step(closure)`` (which run both passes), FriendlySAM ``closure(); step(closure)``. BSAM
    fails on parameters whose ``.grad`` is None, so its arm computes one gradient before the
    first step."""
    arms = []
    for label in VARIANTS:
        model = fresh()
        opt = po_variants(model)[label]
        closure = _closure(model, opt, batch, crit)
        if label == "bSAM":
            closure()  # its first_step needs .grad on every parameter

        def step(opt=opt, closure=closure, caller_pass=label == "FriendlySAM"):
            if caller_pass:
                closure()
            opt.step(closure)

        note = "closure(); step(closure)" if label == "FriendlySAM" else "step(closure)"
        arms.append(Arm(f"PO {label}", step, info={"note": note}))
    return arms


# ---------------------------------------------------------------------------- measure B
def optimizer_only_arms(base_model: nn.Module, batch: Batch, with_asam: bool = True) -> list[Arm]:
    """Measure B's arms: each on its own copy of the model holding a copy of one real
    gradient; the timed region is the optimizer's own work only. Samlab arms warm up with
    two calls: the first compiles the ascent (SGD's first step, which creates the momentum
    buffers, runs eagerly), the second compiles the fused base step. Optimizers of the same
    model share the compiled graphs, so only the first arm of each method compiles."""
    import pytorch_optimizer as po
    from pytorch_optimizer.optimizer.utils.model import (
        disable_running_stats,
        enable_running_stats,
    )

    crit = _criterion()
    model = copy.deepcopy(base_model).train()
    model.zero_grad(set_to_none=True)
    crit(model(batch.x), batch.y).backward()
    real_grads = [p.grad.detach().clone() for p in model.parameters()]
    del model
    arms: list[Arm] = []

    def fresh() -> tuple[nn.Module, list[tuple[nn.Parameter, torch.Tensor]]]:
        m = copy.deepcopy(base_model).train()
        pairs = []
        for p, g in zip(m.parameters(), real_grads):
            p.grad = g.clone()
            pairs.append((p, p.grad))
        return m, pairs

    m_sgd, _ = fresh()
    sgd = torch.optim.SGD(m_sgd.parameters(), **SGD_KW)
    arms.append(Arm("SGD.step", sgd.step, info={"note": "torch.optim.SGD default path"}))

    _, pairs_ra = fresh()

    def reassign():
        for p, g in pairs_ra:
            p.grad = g

    arms.append(
        Arm("p.grad = g (all params)", reassign, info={"note": "cost of GSAM's put-back alone"})
    )

    def samlab_arm(label: str, name: str, impl: str, put_back: bool, **kw) -> None:
        m, pairs = fresh()
        opt = create_optimizer(name, m.parameters(), impl=impl, **SGD_KW, **kw)
        if put_back:

            def step():
                opt.begin_step()
                opt.first_step()
                for p, g in pairs:  # GSAM took .grad away (kept as the clean gradient)
                    p.grad = g
                opt.second_step()
        else:

            def step():
                opt.begin_step()
                opt.first_step()
                opt.second_step()

        info = {"impl": lambda opt=opt: _samlab_impl(opt), "samlab": True}
        if put_back:
            info["note"] = "p.grad = g put back inside the timed region"
        arms.append(Arm(label, step, warmup=2, info=info))

    for impl in ("auto", "loop"):
        samlab_arm(f"samlab SAM [{impl}]", "sam", impl, False, rho=RHO)
        if with_asam:
            samlab_arm(f"samlab ASAM [{impl}]", "asam", impl, False, rho=ASAM_RHO)
        samlab_arm(f"samlab GSAM [{impl}]", "gsam", impl, True, rho=RHO, alpha=GSAM_ALPHA)

    arms += variant_optimizer_only_arms(fresh)

    m_po, _ = fresh()
    po_sam = po.SAM(m_po.parameters(), torch.optim.SGD, rho=RHO, **SGD_KW)

    def po_sam_step():
        po_sam.first_step()
        po_sam.second_step()

    arms.append(Arm("PO SAM", po_sam_step, info={"note": "first_step(); second_step()"}))

    if with_asam:
        m_pa, _ = fresh()
        po_asam = po.SAM(m_pa.parameters(), torch.optim.SGD, rho=ASAM_RHO, adaptive=True, **SGD_KW)

        def po_asam_step():
            po_asam.first_step()
            po_asam.second_step()

        arms.append(Arm("PO ASAM", po_asam_step, info={"note": "SAM(adaptive=True), eta = 0"}))

    m_pg, _ = fresh()
    pg_base = torch.optim.SGD(m_pg.parameters(), **SGD_KW)
    pg_lr = torch.optim.lr_scheduler.LambdaLR(pg_base, lambda _: 1.0)
    pg_rho = po.ProportionScheduler(pg_lr, max_lr=LR, min_lr=LR, max_value=RHO, min_value=RHO)
    po_gsam = po.GSAM(m_pg.parameters(), pg_base, m_pg, pg_rho, alpha=GSAM_ALPHA)

    def po_gsam_step():
        # GSAM.step() minus its two get_grad() passes, in its own order
        po_gsam.perturb_weights(rho=po_gsam.rho_t)
        disable_running_stats(m_pg)
        po_gsam.gradient_decompose(po_gsam.alpha)
        po_gsam.un_perturb()
        po_gsam.sync_grad()
        po_gsam.base_optimizer.step()
        enable_running_stats(m_pg)

    arms.append(
        Arm(
            "PO GSAM",
            po_gsam_step,
            info={"note": "step() without its 2 passes: perturb, decompose, un-perturb, base"},
        )
    )
    return arms


def variant_optimizer_only_arms(fresh: Callable) -> list[Arm]:
    """Measure B for WSAM, FriendlySAM and bSAM, samlab's and pytorch-optimizer's. They
    change ``.grad`` (WSAM takes it as the clean gradient; FriendlySAM and bSAM overwrite it
    with their ascent direction), so an untimed ``setup`` puts a fresh copy of the cached
    gradient back before every call: the timed region is the optimizer's own work only."""
    arms: list[Arm] = []

    def restorer(pairs):
        def setup():
            for p, g in pairs:
                if p.grad is None or p.grad is g:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)

        return setup

    def samlab_arm(label: str, name: str, impl: str, **kw) -> None:
        m, pairs = fresh()
        pairs = [(p, g.clone()) for p, g in pairs]
        opt = create_optimizer(name, m.parameters(), impl=impl, **SGD_KW, **kw)

        def step():
            opt.begin_step()
            opt.first_step()
            opt.second_step()

        info = {"impl": lambda opt=opt: _samlab_impl(opt), "samlab": True}
        info["note"] = "begin_step(); first_step(); second_step() (bSAM: noise, ascent, update)"
        arms.append(Arm(label, step, setup=restorer(pairs), warmup=2, info=info))

    knobs = {
        "WSAM": ("wsam", {"rho": RHO, "gamma": WSAM_GAMMA}),
        "FriendlySAM": ("friendlysam", {"rho": RHO, "sigma": FSAM_SIGMA, "lmbda": FSAM_LMBDA}),
        "bSAM": ("bsam", {"rho": RHO, "num_data": BSAM_NUM_DATA}),
    }
    for impl in ("auto", "loop"):
        for label, (name, kw) in knobs.items():
            samlab_arm(f"samlab {label} [{impl}]", name, impl, **kw)

    # the floor of any bSAM: one standard normal per weight from torch's generator (what
    # samlab's bSAM draws each step, into its ascent buffers)
    m_draw, _ = fresh()
    draw_into = [torch.empty_like(p) for p in m_draw.parameters()]
    draw_gen = torch.Generator().manual_seed(0)

    def draw():
        for x in draw_into:
            x.normal_(generator=draw_gen)

    arms.append(
        Arm("bSAM's draw alone", draw, info={"note": "Tensor.normal_ per weight (mt19937 on CPU)"})
    )

    for label in VARIANTS:
        m, pairs = fresh()
        pairs = [(p, g.clone()) for p, g in pairs]
        opt = po_variants(m)[label]
        if label == "bSAM":

            def step(opt=opt):  # noise, ascent, update: its 3 steps without the 2 passes
                opt.first_step()
                opt.second_step()
                opt.third_step()
        else:

            def step(opt=opt):
                opt.first_step()
                opt.second_step()

        note = "first/second/third_step()" if label == "bSAM" else "first_step(); second_step()"
        arms.append(Arm(f"PO {label}", step, setup=restorer(pairs), info={"note": note}))
    return arms


def vs_sam_table(results: dict[str, ArmResult]) -> tuple[str, list[str]]:
    """Measure A's variants (samlab's and pytorch-optimizer's) / samlab SAM, per round."""
    sam = results.get("samlab SAM")
    rows, missed = [], []
    if sam is None:
        return "", missed
    for label in VARIANTS:
        for who in ("samlab", "PO"):
            res = results.get(f"{who} {label}")
            if res is None:
                continue
            ratios = [a / b for a, b in zip(res.seconds, sam.seconds)]
            median = statistics.median(ratios)
            q1, q3 = quartiles(ratios)
            target, status = "-", ""
            if who == "samlab":
                target = f"<= {VS_SAM_TARGET:.2f}"
                status = "PASS" if median <= VS_SAM_TARGET else "MISS"
                if status == "MISS":
                    missed.append(res.name)
            rows.append([res.name, _fmt(median), f"{_fmt(q1)}-{_fmt(q3)}", target, status])
    header = ["arm", "median ratio to samlab SAM", "IQR", "target", "status"]
    return format_markdown_table(header, rows), missed


# ---------------------------------------------------------------------------- measure C
#: measure C's models: label -> a samlab model name, or the width of a 4-layer MLP
IMPL_MODELS: dict[str, str | int] = {
    "digits_mlp": "digits_mlp",
    "digits_cnn": "digits_cnn",
    "mlp-0.2M": 300,
    "resnet20": "resnet20_cifar",
    "mlp-1.9M": 960,
}
#: measure C's methods: label -> (registry name, keywords)
IMPL_METHODS = {
    "SAM": ("sam", {"rho": RHO}),
    "GSAM": ("gsam", {"rho": RHO, "alpha": GSAM_ALPHA}),
    "one-step SAM": ("onestep-sam", {"rho": RHO}),
}


def impl_model(spec: str | int) -> nn.Module:
    if isinstance(spec, str):
        return create_model(spec)
    return nn.Sequential(
        nn.Linear(64, spec), nn.Linear(spec, spec), nn.Linear(spec, spec), nn.Linear(spec, 10)
    )


def impl_arms(base_model: nn.Module) -> list[Arm]:
    """Measure C's arms: each method under ``impl="loop"`` and ``"foreach"``, each on its own
    copy of the model holding one fixed random gradient; a call runs enough optimizer steps
    (``begin_step``, ``first_step``, ``second_step``) to last milliseconds."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in base_model.parameters()]
    numel = sum(g.numel() for g in grads)
    per_call = min(200, max(1, 2_000_000 // numel))
    arms = []
    for label, (name, kw) in IMPL_METHODS.items():
        for impl in ("loop", "foreach"):
            model = copy.deepcopy(base_model)
            params = list(model.parameters())
            opt = create_optimizer(name, params, impl=impl, **SGD_KW, **kw)
            own = [g.clone() for g in grads]

            def steps(opt=opt, params=params, own=own):
                for _ in range(per_call):
                    for p, g in zip(params, own):  # GSAM takes .grad away: put it back
                        p.grad = g
                    opt.begin_step()
                    opt.first_step()
                    for p, g in zip(params, own):
                        p.grad = g
                    opt.second_step()

            arms.append(Arm(f"{label} [{impl}]", steps, per_call=per_call, warmup=2))
    return arms


def impl_table(results: dict[str, ArmResult]) -> list[str]:
    """Per method: the median over rounds of foreach seconds / loop seconds of that round."""
    cells = []
    for label in IMPL_METHODS:
        loop, fast = results[f"{label} [loop]"], results[f"{label} [foreach]"]
        ratios = [f / lo for f, lo in zip(fast.seconds, loop.seconds)]
        q1, q3 = quartiles(ratios)
        cells.append(
            f"{_fmt(statistics.median(ratios))} ({_fmt(q1)}-{_fmt(q3)}); loop "
            f"{_seconds(loop.median_seconds)}"
        )
    return cells


# ---------------------------------------------------------------------------- report
def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _seconds(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def results_table(
    results: dict[str, ArmResult],
    targets: Callable[[str], float | None],
    clock: str,
    other: str,
) -> tuple[str, list[str]]:
    """(markdown table, names of arms that missed their target)."""
    header = [
        "arm",
        "median ratio",
        "IQR of ratios",
        "min-max",
        f"median {clock} s/step",
        f"median {other} s/step",
        "warm-up excess (wall)",
        "target",
        "status",
        "path / note",
    ]
    rows, missed = [], []
    for name, res in results.items():
        q1, q3 = res.ratio_quartiles
        lo, hi = res.ratio_range
        target = targets(name)
        if target is None:
            status, target_s = "", "-"
        else:
            ok = res.median_ratio <= target
            status, target_s = ("PASS" if ok else "MISS"), f"<= {target:.2f}"
            if not ok:
                missed.append(name)
        impl = res.info.get("impl")
        note = impl() if callable(impl) else res.info.get("note", "")
        if callable(impl) and res.info.get("note"):
            note += "; " + res.info["note"]
        wall = None if clock == "wall" else "wall"
        excess = res.warmup_excess(wall)
        rows.append(
            [
                name,
                _fmt(res.median_ratio),
                f"{_fmt(q1)}-{_fmt(q3)}",
                f"{_fmt(lo)}-{_fmt(hi)}",
                _seconds(res.median_seconds),
                _seconds(res.median_of(other)),
                f"{excess:.1f} s" if res.warmup_seconds else "-",
                target_s,
                status,
                note,
            ]
        )
    return format_markdown_table(header, rows), missed


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _code_state() -> str:
    """HEAD and the uncommitted files under samlab/ and kernels/ (what this run measured)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "samlab", "kernels"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"{head}" + (f" + uncommitted {', '.join(changed)}" if changed else " (clean)")


def _parse_list(text: str, cast=str) -> list:
    return [cast(t.strip()) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: resnet18, batch 8")
    parser.add_argument("--models", default=None, help="comma list of resnet18, vit")
    parser.add_argument("--batch-sizes", default=None, help="comma list (default 128,8)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds for every measure")
    parser.add_argument("--optim-repeats", type=int, default=None, help="rounds of measure B")
    parser.add_argument(
        "--measures",
        default="A,B",
        help="A (full step), B (optimizer only), C (foreach / loop on CPU, models of 2k-2M)",
    )
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="primary clock (default cpu)"
    )
    parser.add_argument(
        "--all-arms", action="store_true", help=f"every arm also at batch >= {LARGE_BATCH}"
    )
    parser.add_argument("--out", default="results/benchmarks/optim_step.md")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    # No recompile-limit override: samlab's compiled functions take plain tensor lists, so
    # every optimizer instance on the same model shares one graph per function.

    models = _parse_list(args.models) if args.models else (["resnet18"] if args.quick else None)
    models = models or ["resnet18", "vit"]
    for m in models:
        if m not in MODEL_NAMES:
            parser.error(f"unknown model {m!r}; choose from {sorted(MODEL_NAMES)}")
    if args.batch_sizes:
        batch_sizes = _parse_list(args.batch_sizes, int)
    else:
        batch_sizes = [8] if args.quick else [128, 8]
    batch_sizes = sorted(set(batch_sizes))
    measures = {m.upper() for m in _parse_list(args.measures)}
    clocks = {"cpu": time.process_time, "wall": time.perf_counter}
    other = "wall" if args.clock == "cpu" else "cpu"
    timing = dict(timer=clocks[args.clock], extra_timers={other: clocks[other]})

    def repeats_for(batch_size: int) -> int:
        if args.repeats is not None:
            return args.repeats
        if args.quick:
            return 2
        return 3 if batch_size >= LARGE_BATCH else 6

    optim_repeats = args.optim_repeats or args.repeats or (3 if args.quick else 10)

    started = time.perf_counter()
    load0 = os.getloadavg()
    lines = [
        "# Optimizer step benchmark",
        "",
        f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`",
        f"- torch {torch.__version__}, samlab {_version('samlab-toolkit')}, "
        f"pytorch-optimizer {_version('pytorch-optimizer')}, "
        f"Python {platform.python_version()}, {torch.get_num_threads()} thread, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- code measured: {_code_state()}",
        f"- lr {LR}, momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}, rho {RHO} (ASAM "
        f"{ASAM_RHO}), GSAM alpha {GSAM_ALPHA}, LookSAM k {LOOKSAM_K} alpha {LOOKSAM_ALPHA}, "
        f"WSAM gamma {WSAM_GAMMA}, FriendlySAM sigma {FSAM_SIGMA} lmbda {FSAM_LMBDA}, bSAM "
        f"N {BSAM_NUM_DATA} (lr {LR}, weight decay {WEIGHT_DECAY} as delta)",
        "- ratios: per round, arm time / baseline time of the same round; median, quartiles "
        "and min-max over rounds; arms interleaved, order rotated each round; warm-up "
        "excluded ('warm-up excess' = warm-up seconds beyond the steady median: compilation)",
        f"- clock: {args.clock} time (process CPU time: steadier on a shared machine); "
        f"{other} time on the same calls",
        "",
    ]
    report = Report(lines, started)
    emit, progress = report.emit, report.log
    missed_all: list[str] = []

    for model_key in models:
        torch.manual_seed(0)
        base_model = create_model(MODEL_NAMES[model_key]).train()
        n_params = sum(p.numel() for p in base_model.parameters())
        batch = Batch()

        if "B" in measures:
            batch.set(8)
            arms = optimizer_only_arms(base_model, batch, with_asam=not args.quick)
            progress(f"measure B, {model_key}: {len(arms)} arms x {optim_repeats} rounds")
            res = run_interleaved(arms, repeats=optim_repeats, warmup=1, **timing)
            table, missed = results_table(res, OPTIM_TARGETS.get, args.clock, other)
            base_s = res["SGD.step"].median_seconds
            emit(
                f"## B. Optimizer-only work on cached gradients / SGD.step: {model_key} "
                f"({n_params / 1e6:.2f}M params; SGD.step {_seconds(base_s)} {args.clock}; "
                f"{optim_repeats} rounds)"
            )
            emit()
            emit(table)
            emit()
            emit(
                "GSAM arms: `first_step()` takes `.grad` away (keeps it as the clean "
                "gradient); the cached tensors are put back with `p.grad = g` inside the "
                "timed region (its cost alone: the `p.grad = g` row). PO GSAM: its `step()` "
                "without the two `get_grad()` passes."
            )
            emit()
            missed_all += [f"B/{model_key}/{n}" for n in missed]
            del arms, res

        if "A" in measures:
            batch.set(batch_sizes[0])
            arms = full_step_arms(base_model, batch)
            for i, batch_size in enumerate(batch_sizes):
                batch.set(batch_size)
                reps = repeats_for(batch_size)
                progress(f"measure A, {model_key}, batch {batch_size}: {reps} rounds")
                run_arms = arms
                if batch_size >= LARGE_BATCH and not args.all_arms:
                    run_arms = [a for a in arms if a.name in CORE_ARMS]
                if i > 0:  # the optimizers are compiled already: one warm-up call per arm
                    run_arms = [copy.copy(a) for a in run_arms]
                    for a in run_arms:
                        a.warmup = 1
                res = run_interleaved(run_arms, repeats=reps, warmup=1, progress=progress, **timing)

                def target(name: str, batch_size=batch_size) -> float | None:
                    spec = FULL_TARGETS.get(name, {})
                    return spec.get(batch_size, spec.get(None))

                table, missed = results_table(res, target, args.clock, other)
                emit(
                    f"## A. Full step / SGD step: {model_key}, batch {batch_size} "
                    f"(SGD step {_seconds(res['SGD'].median_seconds)} {args.clock}; "
                    f"{reps} rounds)"
                )
                emit()
                emit(table)
                emit()
                missed_all += [f"A/{model_key}/b{batch_size}/{n}" for n in missed]
                table, missed = vs_sam_table(res)
                if table:
                    emit(f"Full step / samlab SAM's full step ({model_key}, batch {batch_size}):")
                    emit()
                    emit(table)
                    emit()
                    missed_all += [f"A-vs-SAM/{model_key}/b{batch_size}/{n}" for n in missed]
            del arms

    if "C" in measures:
        rows = []
        for label, spec in IMPL_MODELS.items():
            torch.manual_seed(0)
            model = impl_model(spec)
            ps = list(model.parameters())
            progress(f"measure C, {label}: {optim_repeats} rounds")
            res = run_interleaved(impl_arms(model), repeats=optim_repeats, warmup=1, **timing)
            numel = sum(p.numel() for p in ps)
            rows.append([label, f"{numel:,}", len(ps), *impl_table(res)])
        emit(
            f"## C. impl='foreach' / impl='loop' on CPU, optimizer-only work ({optim_repeats} "
            "rounds; median of the per-round ratios, quartiles; loop seconds per step)"
        )
        emit()
        emit(format_markdown_table(["model", "params", "tensors", *IMPL_METHODS], rows))
        emit()

    elapsed = time.perf_counter() - started
    load1 = os.getloadavg()
    emit(
        f"Total wall time {elapsed:.0f} s; load average (1 min) {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end."
    )
    report.finish(args.out, missed_all, sep=", ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
