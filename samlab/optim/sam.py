"""SAM (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021).

Update rule (per step, ``g = grad L(w)``):

* SAM:  ``e = rho * g / (||g|| + eps)``; ``g_p = grad L(w + e)``; base step with ``g_p``.
* ASAM: ``T = |w| + eta``; ``e = rho * T^2 g / (||T g|| + eps)``; the rest as SAM.

.. note::
   Kwon et al. define ``T = |w| + eta`` with ``eta = 0.01``; davda54/sam, pytorch-optimizer and
   the official GSAM code use ``eta = 0`` (a weight that is exactly 0 is then never perturbed).
   samlab's default is the paper's ``eta = 0.01``; pass ``eta=0`` to reproduce davda54/sam.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from samlab.optim.base import SAMBase

__all__ = ["ASAM", "SAM", "GradientPairSAM", "sam_keywords"]


class SAM(SAMBase):
    """Sharpness-aware minimization wrapping any ``torch.optim`` optimizer.

    Args:
        params: parameters or param-group dicts (each group may set its own ``rho``,
            ``adaptive``, ``eta``, ``perturb_eps`` and base-optimizer options).
        base_optimizer: a ``torch.optim.Optimizer`` class (default ``torch.optim.SGD``),
            built on this optimizer's param_groups with ``**base_kwargs``.
        rho: neighbourhood radius (>= 0; 0 reproduces the base optimizer exactly).
        adaptive: ASAM's scale-invariant perturbation.
        eta: ASAM's offset in ``T = |w| + eta`` (paper: 0.01; davda54/sam: 0).
        perturb_eps: added to every norm, so a zero gradient gives a zero perturbation (named
            apart from the base optimizer's own ``eps``, e.g. Adam's, which goes through
            ``**base_kwargs``).
        max_grad_norm: clip the final gradient (after AMP unscaling) to this norm.
        impl: "auto" (foreach on CUDA; on CPU foreach below 2M parameters and the
            torch.compile path from 2M on where a C++ compiler exists), "loop" (the readable
            reference), "foreach" or "compiled" for the tensor-list kernels
            (docs/closure-protocol.md, "Fast paths").

    Example::

        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        def closure():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss
        loss = opt.step(closure)
    """

    method = "SAM"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        perturb_eps: float = 1e-12,
        max_grad_norm: float | None = None,
        impl: str = "auto",
        **base_kwargs: Any,
    ) -> None:
        defaults = dict(rho=rho, adaptive=bool(adaptive), eta=eta, perturb_eps=perturb_eps)
        super().__init__(
            params, base_optimizer, defaults, base_kwargs, max_grad_norm=max_grad_norm, impl=impl
        )

    def _rho(self, group: dict[str, Any]) -> float:
        return group["rho"]

    def _begin(self) -> None:
        super()._begin()
        # rho = 0 everywhere: the step is the base optimizer's, with one pass
        rhos = [self._rho(group) for group in self.param_groups]
        self.single_pass = all(rho == 0 for rho in rhos)
        self.last_step["rho"] = rhos  # also on one-pass steps (a schedule's warm-up from 0)

    def _ascent(self) -> tuple[list, Tensor]:
        """Perturb along the current gradients; returns (grouped, norm)."""
        grouped = self._grouped()  # last_step["rho"] was recorded by _begin()
        norm = self._ascend(grouped, [grads for _, _, grads in grouped], self._rho)
        self.last_step["grad_norm"] = norm
        return grouped, norm

    def _first(self) -> bool:
        self._ascent()
        return True


def sam_keywords(
    *, drop: tuple[str, ...] = (), parent: Callable | None = None
) -> Callable[[Callable], Callable]:
    """For the ``__init__`` of a SAM subclass that takes its own keywords and hands the rest
    (``**options``) to :class:`SAM` (or to ``parent``, another such ``__init__``): its
    signature as callers see it (``inspect.signature``, ``help()``,
    :func:`~samlab.optim.create_optimizer`): the parent's, with the subclass's own keywords
    replacing the parent's of the same name or following ``rho``, less ``drop``."""
    parent = SAM.__init__ if parent is None else parent

    def decorate(init: Callable) -> Callable:
        sam = inspect.signature(parent).parameters.values()
        own = [p for p in inspect.signature(init).parameters.values() if p.kind is p.KEYWORD_ONLY]
        names = {p.name for p in own}
        params = []
        for p in sam:
            if p.name == "rho":
                params += own if "rho" in names else [p, *own]
            elif p.name not in names and p.name not in drop:
                params.append(p)
        init.__signature__ = inspect.signature(parent).replace(parameters=params)
        return init

    return decorate


class GradientPairSAM(SAM):
    """SAM that keeps the clean gradient ``g`` beside the perturbed one ``g_p`` and combines
    the two with a weight ``alpha`` (GSAM, LookSAM), kept in each param group under
    :attr:`alpha_key`. ``_first`` takes each ``p.grad`` tensor itself (no copy) into
    ``_clean_grads``, so the perturbed backward writes fresh ``.grad`` tensors."""

    #: the param-group key of ``alpha``, named apart from a base optimizer's own ``alpha``
    #: (RMSprop's): "gsam_alpha", "looksam_alpha"
    alpha_key: str

    def __init__(self, params: Any, base_optimizer: Any, alpha: float, **options: Any) -> None:
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        super().__init__(params, base_optimizer, **options)
        for group in self.param_groups:
            group.setdefault(self.alpha_key, alpha)
        self.defaults[self.alpha_key] = alpha
        self._clean_grads: dict[Tensor, Tensor] = {}

    def _first(self) -> bool:
        self._ascent()
        for p in self._all_params_with_grad():
            self._clean_grads[p] = p.grad
            p.grad = None
        return True


class ASAM(SAM):
    """Adaptive SAM (Kwon et al., ICML 2021): ``SAM(..., adaptive=True)`` with ``rho=0.5``.

    ``T = |w| + eta`` with the paper's ``eta = 0.01`` by default (``eta=0``: davda54/sam).
    ASAM's useful ``rho`` is about ten times SAM's (0.5–2.0 for CIFAR WideResNets).
    """

    method = "ASAM"

    @sam_keywords(drop=("adaptive",))
    def __init__(self, params, base_optimizer=torch.optim.SGD, *, rho: float = 0.5, **options):
        # bound as the signature says: ``adaptive`` is no ASAM keyword, so like any unknown
        # keyword it goes to the base optimizer (which refuses it)
        bound = inspect.signature(ASAM.__init__).bind(self, params, base_optimizer, **options)
        bound.apply_defaults()
        sam = bound.arguments
        defaults = dict(rho=rho, adaptive=True, eta=sam["eta"], perturb_eps=sam["perturb_eps"])
        SAMBase.__init__(
            self,
            params,
            base_optimizer,
            defaults,
            sam["base_kwargs"],
            max_grad_norm=sam["max_grad_norm"],
            impl=sam["impl"],
        )
