"""SSAM-D: sparse SAM with a dynamic mask by drop and growth (Mi et al., NeurIPS 2022).

The first refresh selects the pattern's top entries of the growth score (random by default:
the seed's random initial mask). Each later refresh at epoch ``t`` drops the fraction
``dr_t = drop_rate * (1 + cos(pi * t / T_end)) / 2`` of the live entries with the lowest
drop score and revives as many previously dead entries with the highest growth score, per
tensor (``scope="tensor"``) or over all parameters (``scope="global"``, the seed's): the number
of perturbed entries is unchanged and at least ``1 - dr_t`` of them stay.

Scores: ``"weight"`` ``|w|``, ``"gradient"`` ``|g|``, ``"random"`` uniform noise from the
optimizer's generator. The gradient is that of the mean loss over the first ``num_samples``
samples of the ``batches`` given to :meth:`SSAMD.refresh_masks`, at the current weights, in
eval mode (the seed used the clean gradient of the refresh step's mini-batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import kernels
from samlab.optim.fisher import mean_gradient
from samlab.optim.sam import sam_keywords
from samlab.optim.ssam import SparseSAM, cosine_drop_rate, is_rank_zero

__all__ = ["SSAMD", "STRATEGIES"]

STRATEGIES = ("weight", "gradient", "random")


class SSAMD(SparseSAM):
    """SSAM-D over any ``torch.optim`` optimizer (pattern "unstructured").

    Args beyond :class:`~samlab.optim.ssam.SparseSAM`'s:
        drop_rate: the fraction of live entries replaced at a refresh, before decay (0.5).
        drop_strategy, growth_strategy: "weight", "gradient" or "random" (seed: gradient,
            random).
        T_end: the epoch at which the cosine decay of the drop rate reaches 0; None: the
            ``epochs`` given to :meth:`refresh_masks` (the run's length), else constant.
    """

    method = "SSAMD"

    @sam_keywords(parent=SparseSAM.__init__)
    def __init__(
        self,
        params,
        base_optimizer=torch.optim.SGD,
        *,
        T_end: int | None = None,  # noqa: N803 (the seed's name)
        drop_rate: float = 0.5,
        drop_strategy: str = "gradient",
        growth_strategy: str = "random",
        **options: Any,
    ) -> None:
        if isinstance(drop_rate, bool) or not (
            isinstance(drop_rate, (int, float)) and 0 <= drop_rate <= 1
        ):
            raise ValueError(f"drop_rate must be in [0, 1], got {drop_rate!r}")
        for name, value in (("drop_strategy", drop_strategy), ("growth_strategy", growth_strategy)):
            if value not in STRATEGIES:
                raise ValueError(f"{name} must be one of {STRATEGIES}, got {value!r}")
        if T_end is not None and not (isinstance(T_end, int) and T_end >= 1):
            raise ValueError(f"T_end must be a positive number of epochs or None, got {T_end!r}")
        if options.get("pattern", "unstructured") != "unstructured":
            raise ValueError(
                f"SSAMD grows and drops single entries: pattern must be 'unstructured', got "
                f"{options['pattern']!r} (use SSAMF for structured, nm or tensor masks)"
            )
        super().__init__(params, base_optimizer, **options)
        self.drop_rate, self.T_end = float(drop_rate), T_end
        self.drop_strategy, self.growth_strategy = drop_strategy, growth_strategy

    def _scores(self, strategy: str, gradient: list[Tensor] | None) -> list[Tensor]:
        params = self.all_params()
        if strategy == "weight":
            return [p.detach().abs() for p in params]
        if strategy == "random":
            return [torch.rand(p.shape, generator=self.generator).to(p.device) for p in params]
        if gradient is None:
            raise ValueError(
                "SSAMD.refresh_masks: the 'gradient' strategy needs batches with at least one "
                "sample (got none, or batches=None); pass the training batches, or "
                "drop_strategy/growth_strategy 'weight' or 'random'"
            )
        return [g.abs() for g in gradient]

    def refresh_masks(self, model, loss_fn, batches, *, epoch=None, epochs=None) -> None:
        """Drop and grow (the first refresh: the initial mask); ``batches`` is read only for
        the gradient strategy (and may be None otherwise); ``epoch`` (default: refreshes so
        far times ``update_freq``) and ``epochs`` (for ``T_end=None``) set the decayed drop
        rate."""
        params = self.all_params()
        epoch = self.refreshes * self.update_freq if epoch is None else epoch
        rate = cosine_drop_rate(self.drop_rate, epoch, self.T_end or epochs)
        info: dict[str, Any] = {"epoch": epoch, "drop_rate": rate}
        if not is_rank_zero():
            self.install_masks([torch.zeros_like(p, dtype=torch.bool) for p in params], info)
            return
        old = self.masks()
        # the first refresh reads only the growth score; None batches: no gradient (a clear
        # error below where a strategy needs it)
        needed = (
            {self.growth_strategy} if old is None else {self.growth_strategy, self.drop_strategy}
        )
        gradient = None
        if "gradient" in needed and batches is not None:
            gradient = mean_gradient(model, loss_fn, batches, params, num_samples=self.num_samples)
        grow = self._scores(self.growth_strategy, gradient)
        if old is None:
            self.install_masks(self.pattern_masks(grow), info)
            return
        drop = self._scores(self.drop_strategy, gradient)
        allowed = self.perturbable()
        if self.scope == "global":
            idx = [i for i, ok in enumerate(allowed) if ok]
            flat = [torch.cat([t[i].reshape(-1).cpu() for i in idx]) for t in (old, drop, grow)]
            new = kernels.drop_grow_mask(*flat, rate)
            parts = torch.split(new, [params[i].numel() for i in idx])
            masks = list(old)
            for i, part in zip(idx, parts):
                masks[i] = part.view(params[i].shape).to(params[i].device)
        else:
            masks = [
                kernels.drop_grow_mask(o, d, g, rate) if ok else o
                for o, d, g, ok in zip(old, drop, grow, allowed)
            ]
        self.install_masks(masks, info)
