"""Instrumented drivers of samlab's ``landscape.curvature`` and its peers for
``benchmarks/hessian.py``: PyHessian 0.1, hessian-eigenthings 1.0.0a5, curvlinops 3.0.1.

Every driver wraps the tool's own product function (PyHessian's module-level
``hessian_vector_product``, hessian-eigenthings' ``HessianOperator.matvec``, the SciPy operator
that curvlinops exports, samlab's ``HessianOperator.matvec``) in a :class:`Trace`, which counts
products, stamps each with the wall time and the process CPU time since the run started
(construction included; the trace's own bookkeeping is subtracted; CPU time, one thread: what
the tool's work costs, little disturbed by other jobs holding the cores of a loaded machine)
and computes the estimate the tool holds after it:

- ``"rayleigh"`` (power iteration): ``v^T H v / v^T v`` of the latest input;
- ``"ritz"`` (Lanczos, ARPACK): the top Ritz values of the space spanned by every input so far
  (Rayleigh-Ritz on the Krylov space; equal to the top eigenvalues of the Lanczos tridiagonal
  with full reorthogonalisation, and what ARPACK's tridiagonal holds between restarts).

With ``stop=True`` the trace raises :class:`Reached` right after the product whose estimate is
within ``tol`` (relative) of the reference, ending the tool's run there.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from _models import seeded_model
from torch import Tensor, nn
from torch.nn import functional as F

SEED = 0


def resnet20() -> nn.Module:
    """CIFAR ResNet-20, seeded, with non-trivial BatchNorm statistics, in eval mode."""
    return seeded_model("resnet20_cifar", SEED)


def cifar_batches(count: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches of random CIFAR-shaped inputs (seeded randn) and labels."""
    generator = torch.Generator().manual_seed(SEED + 2)
    out = []
    for _ in range(count):
        inputs = torch.randn(batch, 3, 32, 32, generator=generator)
        out.append((inputs, torch.randint(0, 10, (batch,), generator=generator)))
    return out


class Reached(Exception):
    """The tool's estimate is within tolerance: its run ends here."""


@dataclass
class Trace:
    """Products, times and estimates of one run (see the module docstring)."""

    reference: np.ndarray  # the k reference eigenvalues, descending
    tol: float = 1e-3
    estimator: str = "ritz"
    stop: bool = True
    t0: float = field(default_factory=time.perf_counter)
    c0: float = field(default_factory=time.process_time)
    overhead: float = 0.0
    cpu_overhead: float = 0.0
    products: int = 0
    # (products, wall seconds, estimate, CPU seconds) after each product
    records: list[tuple[int, float, tuple[float, ...], float]] = field(default_factory=list)
    reached: tuple[int, float, tuple[float, ...], float] | None = None
    _q: list[np.ndarray] = field(default_factory=list)
    _hq: list[np.ndarray] = field(default_factory=list)

    def restart(self) -> None:
        self.t0, self.overhead = time.perf_counter(), 0.0
        self.c0, self.cpu_overhead = time.process_time(), 0.0

    def now(self) -> float:
        return time.perf_counter() - self.t0 - self.overhead

    def cpu_now(self) -> float:
        return time.process_time() - self.c0 - self.cpu_overhead

    def _estimate(self, v: np.ndarray, hv: np.ndarray) -> tuple[float, ...]:
        k = len(self.reference)
        if self.estimator == "rayleigh":
            return (float(v @ hv) / float(v @ v),)
        self._q.append(v)
        self._hq.append(hv)
        q, hq = np.stack(self._q, 1), np.stack(self._hq, 1)
        gram, small = q.T @ q, q.T @ hq
        small = (small + small.T) / 2
        w, u = np.linalg.eigh(gram)
        keep = w > 1e-10 * w.max()
        basis = u[:, keep] / np.sqrt(w[keep])
        theta = np.linalg.eigvalsh(basis.T @ small @ basis)[::-1]
        return tuple(float(t) for t in theta[:k])

    def record(self, v: Any, hv: Any, columns: int = 1) -> None:
        """After a product of ``v`` (flat tensor / array / list of tensors) giving ``hv``."""
        stamp, cpu = self.now(), self.cpu_now()
        tic, ctic = time.perf_counter(), time.process_time()
        self.products += columns
        v64, hv64 = _flat64(v), _flat64(hv)
        estimate = self._estimate(v64, hv64)
        self.records.append((self.products, stamp, estimate, cpu))
        within = len(estimate) == len(self.reference) and self.within(estimate)
        self.overhead += time.perf_counter() - tic
        self.cpu_overhead += time.process_time() - ctic
        if within and self.reached is None:
            self.reached = self.records[-1]
            if self.stop:
                raise Reached

    def within(self, estimate: tuple[float, ...]) -> bool:
        error = np.abs(np.asarray(estimate) - self.reference) / np.abs(self.reference)
        return bool(np.all(error <= self.tol))

    def wrap(self, fn):
        def wrapped(v, *args, **kwargs):
            out = fn(v, *args, **kwargs)
            self.record(v, out)
            return out

        return wrapped


def _flat64(x: Any) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        return np.concatenate([_flat64(t) for t in x])
    if isinstance(x, Tensor):
        return x.detach().reshape(-1).double().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


# --------------------------------------------------------------------------------- samlab


def samlab_lambda(
    model, data, trace: Trace, *, k=1, tol=1e-3, cold=True, seed=0, max_iter=60, start="gradient"
):
    """samlab: ``HessianOperator(mode="auto")`` and ``top_eigenvalues(method="lanczos",
    start=start)``; returns facts about the run. The gradient of the default start comes from
    the first-order graph the products keep (no product; its time is in the trace's clock).
    ``cold``: no remembered mode (the process cache cleared, the cache file off), so the
    operator's first products time the modes; else the process cache is cleared and the mode
    comes from the cache file, as in a later process on this machine (the caller points
    ``LANDSCAPE_PROBE_CACHE`` at a file that holds it)."""
    from landscape.curvature import HessianOperator, top_eigenvalues
    from landscape.curvature.operator import clear_mode_cache

    saved = os.environ.get("LANDSCAPE_PROBE_CACHE")
    if cold:
        os.environ["LANDSCAPE_PROBE_CACHE"] = "off"
    clear_mode_cache()
    try:
        trace.restart()
        op = HessianOperator(model, data, mode="auto")
        built = trace.now()
        op.matvec = trace.wrap(op.matvec)
        result = None
        try:
            result = top_eigenvalues(op, k, tol=tol, max_iter=max_iter, seed=seed, start=start)
        except Reached:
            pass
        end = trace.now()
    finally:
        if saved is None:
            os.environ.pop("LANDSCAPE_PROBE_CACHE", None)
        else:
            os.environ["LANDSCAPE_PROBE_CACHE"] = saved
    return {
        "construct": built,
        "probe_products": op.choice.products,
        "probe_extra": op.choice.extra,
        "probe": op.choice.describe(),
        "mode": op.mode,
        "result": result,
        "end": end,
    }


class Float64Products:
    """The operator protocol in float64 over a float32 operator: float64 Lanczos arithmetic
    (vectors, reorthogonalisation, tridiagonal) on float32 products."""

    def __init__(self, op) -> None:
        self.op, self.size, self.dtype, self.device = op, op.size, torch.float64, op.device

    @property
    def hvp_count(self) -> int:
        return self.op.hvp_count

    def matvec(self, v: Tensor) -> Tensor:
        return self.op.matvec(v.to(self.op.dtype)).double()

    def matmat(self, V: Tensor) -> Tensor:  # noqa: N803
        return self.op.matmat(V.to(self.op.dtype)).double()

    def provenance(self) -> dict:
        return {**self.op.provenance(), "arithmetic": "float64 over float32 products"}


# --------------------------------------------------------------------------------- PyHessian


def pyhessian_module():
    """``pyhessian.hessian`` the module (``import pyhessian.hessian`` gives the class)."""
    import pyhessian.hessian  # noqa: F401

    return sys.modules["pyhessian.hessian"]


def pyhessian_lambda(model, data, trace: Trace, *, top_n=1, tol=1e-3, max_iter=100, seed=0):
    """PyHessian power iteration (deflated for ``top_n > 1``); its per-iteration estimate is
    the Rayleigh quotient of the normalised iterate (the trace's ``"rayleigh"``)."""
    module = pyhessian_module()
    original = module.hessian_vector_product

    def counted(gradients, params, v):
        hv = original(gradients, params, v)
        trace.record(v, hv)
        return hv

    module.hessian_vector_product = counted
    model = copy.deepcopy(model)
    values = None
    try:
        torch.manual_seed(seed)
        trace.restart()
        computer = module.hessian(model, nn.CrossEntropyLoss(), data=data, cuda=False)
        built = trace.now()
        try:
            values, _ = computer.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
        except Reached:
            pass
    finally:
        module.hessian_vector_product = original
        for p in model.parameters():
            p.grad = None
    return {"construct": built, "values": values, "end": trace.now()}


# --------------------------------------------------------------------------------- eigenthings


def _he_operator(model, data):
    from hessian_eigenthings.operators.hessian import HessianOperator

    def loss_fn(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1])

    return HessianOperator(model.eval(), [data], loss_fn)


def eigenthings_lambda(model, data, trace: Trace, *, method, tol=1e-3, max_iter=30, seed=0):
    """hessian-eigenthings ``power_iteration_one`` (``"power"``, Rayleigh estimates) or
    ``lanczos`` (``"lanczos"``, k=1, which="LA": it always runs ``max_iter`` steps, so the
    trace's Ritz values are what ``lanczos(max_iter=m)`` returns for each ``m``)."""
    from hessian_eigenthings.algorithms.lanczos import lanczos
    from hessian_eigenthings.algorithms.power_iteration import power_iteration_one

    trace.restart()
    op = _he_operator(model, data)
    built = trace.now()
    op.matvec = trace.wrap(op.matvec)
    value = None
    try:
        if method == "power":
            value = power_iteration_one(op, max_iter=max_iter, tol=tol, seed=seed)[0]
        else:
            result = lanczos(op, k=1, max_iter=max_iter, tol=tol, which="LA", seed=seed)
            value = float(result.eigenvalues[0])
    except Reached:
        pass
    return {"construct": built, "value": value, "end": trace.now()}


# --------------------------------------------------------------------------------- curvlinops


def curvlinops_operator(model, data):
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    return HessianLinearOperator(
        model.eval(), nn.CrossEntropyLoss(), params, [data], check_deterministic=False
    )


def curvlinops_eigsh(model, data, trace: Trace, *, tol=1e-3, seed=0):
    """curvlinops ``HessianLinearOperator.to_scipy()`` and SciPy ``eigsh(k, which="LA",
    tol)``, run to its own stop (ARPACK surfaces no estimate before it returns); the trace
    records the Ritz values its Lanczos vectors hold."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    trace.restart()
    op = curvlinops_operator(model, data).to_scipy()
    built = trace.now()
    wrapped = LinearOperator(op.shape, matvec=trace.wrap(op.matvec), dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    k = len(trace.reference)
    values = eigsh(wrapped, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return {
        "construct": built,
        "values": sorted(values.tolist(), reverse=True),
        "end": trace.now(),
        "end_cpu": trace.cpu_now(),
    }
