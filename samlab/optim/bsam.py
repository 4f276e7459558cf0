"""bSAM: SAM as an optimal relaxation of Bayes (Möllenhoff & Khan, ICLR 2023).

A variational, Adam-like method: a Gaussian posterior ``N(w, sigma^2)`` over the weights with
``sigma^2 = 1 / (N s)`` (``N = num_data``, ``s`` a per-weight precision). Per step (the
paper's Algorithm 1, ``delta = weight_decay``, ``gamma = damping``):

    theta = w + sigma * z,  z ~ N(0, I)                    (pass 1 at a posterior sample)
    g     = grad L(theta)
    e     = rho * g / s
    s    <- beta2 * s + (1 - beta2) * (sqrt(s) * |g| + delta + gamma)
    g_e   = grad L(w + e)                                  (pass 2, the noise removed)
    m    <- beta1 * m + (1 - beta1) * (g_e + delta * w)
    w    <- w - lr * m / s

How the noise is drawn: ``z`` comes per trainable parameter, in ``param_groups`` order, from
``Tensor.normal_(generator=g)`` (the numbers of ``torch.randn(p.shape, generator=g)``), ``g`` a
generator of the optimizer's ``seed`` on the parameter's device whose state ``state_dict``
saves (resumption is exact). It is drawn straight into the perturbation's buffers, where one
pass scales it and adds ``w`` (:func:`kernels.bsam_sample_`; one loop on the compiled path),
and the buffers are swapped in as the weights (:func:`kernels.swap_in`): removing the noise is a
swap back, exact, and no buffer is kept for ``z``. The move to ``w + e`` goes through the ascent
functional (:func:`kernels.sam_ascent_` with ``normalize=False``) and is undone by a swap or
copy too, so the noise never reaches the update. Parameters whose ``.grad`` is None after a
pass are skipped (never updated; their noise is removed like every other's).

The draw is one pass of torch's generator per weight per step, inline on the weights' device.
On CUDA (Philox) it is cheap. On CPU torch's generator is an mt19937 at about 4 ns a sample on
one thread (ResNet-18, 11.2M weights: 45 ms; the small ViT, 2.7M: 11 ms), about 4% of SAM's
full step on that ViT at batch 8, which bSAM's step therefore costs beyond SAM's there
(``docs/performance.md``). Measured and not taken: a counter-based generator compiled with
the step (SplitMix64 and Box-Muller: 1.7x the time of ``normal_``), inductor's own ``randn``
and numpy's generators (slower still); drawing on other threads lowers wall time only where a
core is idle, never the CPU time.

The posterior is available for predictive uncertainty: :meth:`BSAM.posterior_variance` (one
tensor per parameter) and :meth:`BSAM.sampled_weights` (weights set to a sample inside a
``with`` block).

.. note::
   bSAM is its own optimizer (no base optimizer to choose: the mean update is the Adam-like
   rule above, run by :class:`BSAMUpdate`). pytorch-optimizer's BSAM adds the noise and never
   removes it, and fails on parameters whose ``.grad`` is None; the authors' code
   (team-approx-bayes/bayesian-sam) updates ``w`` with the ``s`` of before the step, the paper
   (and samlab) with the updated one. ``step(closure)`` returns the loss at the sample (pass
   1), the pass that ``current_pass()`` reports as "clean" (BatchNorm statistics are
   updated there under the default policy); ``last_step["sharpness_gap"]`` is the loss at
   ``w + e`` minus that loss. Should pass 2 overflow under AMP, the step is skipped but ``s``
   has already taken pass 1's gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

import kernels
from samlab.optim.base import SAMBase

__all__ = ["BSAM", "BSAMUpdate"]


def _check_hyper(lr, betas, weight_decay, damping, num_data, init_precision) -> None:
    if num_data is None or isinstance(num_data, bool) or not num_data > 0:
        raise ValueError(
            "bSAM needs num_data, the number of training examples N (the posterior variance "
            f"is 1 / (N s)), a positive number; got {num_data!r}"
        )
    if not lr >= 0:
        raise ValueError(f"lr must be >= 0, got {lr!r}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    for name, value in (("weight_decay", weight_decay), ("damping", damping)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if not init_precision > 0:
        raise ValueError(f"init_precision must be positive, got {init_precision!r}")


class BSAMUpdate(torch.optim.Optimizer):
    """bSAM's own update of the posterior mean ``w`` (Adam-like), and the owner of the
    posterior state: ``exp_avg`` (``m``) and ``precision`` (``s``) per parameter.

    :class:`BSAM` builds it as its base optimizer; :meth:`step` is
    ``m <- beta1 m + (1 - beta1)(g + delta w)``, ``w <- w - lr m / s`` with ``g = p.grad``.
    """

    def __init__(
        self,
        params,
        lr: float = 0.5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-4,
        damping: float = 0.1,
        num_data: float | None = None,
        init_precision: float = 1.0,
    ) -> None:
        _check_hyper(lr, betas, weight_decay, damping, num_data, init_precision)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            weight_decay=weight_decay,
            damping=damping,
            num_data=num_data,
            init_precision=init_precision,
        )
        super().__init__(params, defaults)
        #: the implementation of the update (:class:`BSAM` hands over its own dispatch)
        self.dispatch = kernels.Dispatch("loop")

    def precisions(self, params: list[Tensor], group: dict[str, Any]) -> list[Tensor]:
        """``s`` of each parameter (created at ``init_precision``, with ``m = 0``)."""
        out = []
        for p in params:
            state = self.state[p]
            if "precision" not in state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["precision"] = torch.full_like(
                    p, float(group["init_precision"]), memory_format=torch.preserve_format
                )
            out.append(state["precision"])
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            precisions = self.precisions(params, group)
            kernels.bsam_update_(
                params,
                [p.grad for p in params],
                [self.state[p]["exp_avg"] for p in params],
                precisions,
                float(group["lr"]),
                group["betas"][0],
                group["weight_decay"],
                impl=self.dispatch,
            )
        return loss


class BSAM(SAMBase):
    """bSAM (see the module docstring for the rule; defaults as pytorch-optimizer's, the paper
    tunes ``lr`` and ``rho`` per dataset).

    Args:
        params: parameters or param-group dicts (each group may set its own ``lr``, ``betas``,
            ``weight_decay``, ``damping``, ``rho``, ``num_data``, ``init_precision``).
        num_data: ``N``, the number of training examples (the variance is ``1 / (N s)``).
        lr: ``alpha``, the step size of the mean.
        betas: ``(beta1, beta2)``: the decay of the gradient average and of the precision.
        weight_decay: ``delta``, the L2 regularizer / prior precision.
        rho: the ascent's scale in ``e = rho g / s`` (0: the second pass is at ``w``).
        damping: ``gamma``, added to the precision's target.
        init_precision: ``s`` at the start.
        seed: of the generators behind the weight noise.
        max_grad_norm: clip ``g_e`` to this norm before the mean update.
        impl: "auto", "loop", "foreach" or "compiled", as for :class:`~samlab.optim.SAM`.
    """

    method = "bSAM"
    perturbs_before_first_pass = True

    def __init__(
        self,
        params,
        *,
        num_data: float | None = None,
        lr: float = 0.5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-4,
        rho: float = 0.05,
        damping: float = 0.1,
        init_precision: float = 1.0,
        seed: int = 0,
        perturb_eps: float = 1e-12,
        max_grad_norm: float | None = None,
        impl: str = "auto",
    ) -> None:
        _check_hyper(lr, betas, weight_decay, damping, num_data, init_precision)
        base_kwargs = dict(
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            damping=damping,
            num_data=num_data,
            init_precision=init_precision,
        )
        defaults = dict(rho=rho, perturb_eps=perturb_eps)
        super().__init__(
            params, BSAMUpdate, defaults, base_kwargs, max_grad_norm=max_grad_norm, impl=impl
        )
        self.base_optimizer.dispatch = self.dispatch
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    # ----------------------------------------------------------------- noise
    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return gen

    def _sample(self) -> None:
        """Move every trainable weight to a posterior sample ``w + sigma z``: ``z`` is drawn
        straight into the perturbation's buffers, scaled and shifted there in one pass
        (:func:`kernels.bsam_sample_`) and swapped in; ``perturbation.restore()`` swaps the
        mean back."""
        groups = [[p for p in group["params"] if p.requires_grad] for group in self.param_groups]
        params = [p for ps in groups for p in ps]
        points = self.perturbation.buffers(params)
        for p, x in zip(params, points):
            x.normal_(generator=self._generator(p.device))
        start = 0
        for group, ps in zip(self.param_groups, groups):
            if ps:
                kernels.bsam_sample_(
                    points[start : start + len(ps)],
                    ps,
                    self.base_optimizer.precisions(ps, group),
                    float(group["num_data"]),
                    impl=self.dispatch,
                )
            start += len(ps)
        self.perturbation.swap_in(params, points)

    # ----------------------------------------------------------------- the passes
    def _begin(self) -> None:
        self.single_pass = False
        self.last_step["rho"] = [group["rho"] for group in self.param_groups]
        self._sample()
        self.current_pass = "clean"  # pass 1 (at the sample) is the one BatchNorm counts

    def _first(self) -> bool:
        self.perturbation.restore()  # the noise is removed: back to the mean w
        grouped = self._grouped()
        if self.track_stats:
            grads = [g for _, _, gs in grouped for g in gs]
            if grads:
                self.last_step["grad_norm"] = kernels.global_norm(grads, impl=self.dispatch)
        for group, params, grads in grouped:
            if params:  # g <- g / s (the ascent direction), then the precision update
                kernels.bsam_precision_(
                    grads,
                    self.base_optimizer.precisions(params, group),
                    group["betas"][1],
                    group["weight_decay"],
                    group["damping"],
                    impl=self.dispatch,
                )
        directions = [grads for _, _, grads in grouped]
        self._ascend(grouped, directions, lambda group: group["rho"], normalize=False)
        return True

    # ----------------------------------------------------------------- the posterior
    @torch.no_grad()
    def posterior_variance(self) -> list[Tensor]:
        """``sigma^2 = 1 / (N s)`` per parameter, in ``param_groups`` order (new tensors):
        ``1 / (N init_precision)`` before a parameter's first update, 0 for a parameter that
        does not require grad (it is never sampled)."""
        out = []
        for group in self.param_groups:
            n = float(group["num_data"])
            for p in group["params"]:
                state = self.base_optimizer.state.get(p, {})
                if not p.requires_grad:
                    out.append(torch.zeros_like(p))
                elif "precision" in state:
                    out.append(1.0 / (state["precision"] * n))
                else:
                    out.append(torch.full_like(p, 1.0 / (n * float(group["init_precision"]))))
        return out

    @contextlib.contextmanager
    def sampled_weights(self, generator: torch.Generator | None = None) -> Iterator[None]:
        """Inside the block every trainable weight is a posterior sample ``w + sigma z``
        (``z`` from ``generator``, default torch's global one); the mean ``w`` is back exactly
        afterwards. For predictive uncertainty: average ``model(x).softmax(-1)`` over samples.
        The training noise generators are not touched."""
        if self.current_pass is not None:
            raise RuntimeError(
                "bSAM.sampled_weights() inside a step: finish the step (second_step()) first"
            )
        variances = iter(self.posterior_variance())
        params, noise = [], []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    var = next(variances)
                    if p.requires_grad:
                        z = torch.randn(
                            p.shape, generator=generator, dtype=p.dtype, device=p.device
                        )
                        params.append(p)
                        noise.append(z.mul_(var.sqrt()))
            segment = kernels.Segment(params, noise, 1.0, 0.0, normalize=False)
            buffers = [torch.empty_like(p) for p in params]
            ascent = kernels.sam_ascent_([segment], buffers, impl=self.dispatch)
        try:
            yield
        finally:
            with torch.no_grad():
                kernels.restore_(ascent, impl=self.dispatch)

    # ----------------------------------------------------------------- state
    def _extra_state(self) -> dict[str, Any]:
        rng = {key: gen.get_state() for key, gen in self._generators.items()}
        return {"seed": self.seed, "rng": rng}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        rng = state.get("rng", {})
        if not isinstance(rng, dict) or not all(isinstance(v, Tensor) for v in rng.values()):
            raise ValueError("bSAM.load_state_dict: 'rng' must map devices to generator states")
        self.seed = int(state.get("seed", self.seed))
        self._generators = {}
        for key, value in rng.items():
            self._generator(torch.device(key)).set_state(value)
