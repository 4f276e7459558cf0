"""Sparse SAM (Mi et al., NeurIPS 2022; TPAMI 2025): SAM that perturbs only where a mask is 1.

Per step, with ``g = grad L(w)`` and boolean masks ``m`` (one per weight, in
``optimizer.state[p]["mask"]``)::

    e = rho * m * g / (||g|| + eps)          (the seed's rule; the radius is rho ||m g|| / ||g||)
    e = rho * m * g / (||m g|| + eps)        (renormalize=True: the radius is rho)

then SAM's second pass at ``w + e`` and the base step. The masked ascent is one call of
:func:`kernels.sam_ascent_` (the mask slot of :class:`kernels.Segment`) on every path.
:class:`SparseSAM` holds what SSAM-F (:mod:`samlab.optim.ssamf`, Fisher masks) and SSAM-D
(:mod:`samlab.optim.ssamd`, drop/grow masks) share: the options, the patterns, the masks in
the optimizer state (saved by ``state_dict``), the refresh cadence, DDP broadcast, diagnostics.

Before the first :meth:`~SparseSAM.refresh_masks` every mask is dense: the step is SAM's
(``last_step["mask_density"] == 1.0``). Sparsity 0 is SAM bit for bit; sparsity 1 (every mask
empty) runs one pass: the base optimizer exactly.

Diagnostics in ``last_step`` (and :class:`~samlab.optim.StepRecorder`): ``mask_density`` (the
fraction of perturbed entries), ``effective_radius`` (the radius reached as a fraction of rho:
``||m g|| / ||g||``, 1 with ``renormalize``), ``mask_overlap`` (the fraction of the previous
mask's entries that the last refresh kept).

.. note::
   Deviations from the seed: masks start dense (SAM), not all-zero (SSAM-F) or random
   (SSAM-D); the N:M groups run along the reduction dimensions of conv weights (the seed's
   conv masks were transposed, see ``docs/sparse-sam.md``); tensors that ``"nm"`` or
   ``"structured"`` cannot take (1-D ones; for N:M also a reduction length not a multiple of
   ``m``) are perturbed densely with one warning (``strict=True``: an error), while
   ``"unstructured"`` and ``"tensor"`` mask 1-D tensors like any other (``only_weights=True``
   leaves them out); the Fisher is computed in eval mode.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

import kernels
from samlab.optim.sam import SAM, sam_keywords

__all__ = ["PATTERNS", "SparseSAM", "cosine_drop_rate", "is_rank_zero"]

PATTERNS = ("unstructured", "structured", "nm", "tensor")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_options(sparsity, pattern, scope, n, m, update_freq, num_samples) -> None:
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float))
        or not 0 <= sparsity <= 1
    ):
        raise ValueError(
            f"sparsity must be in [0, 1] (the fraction of entries NOT perturbed: 0 is SAM, 1 "
            f"the base optimizer), got {sparsity!r}"
        )
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if scope not in ("tensor", "global"):
        raise ValueError(f"scope must be 'tensor' or 'global', got {scope!r}")
    if pattern == "nm" and not (_is_int(n) and _is_int(m) and 0 < n <= m):
        raise ValueError(
            f"the N:M pattern needs integers 0 < n <= m (e.g. n=2, m=4), got n={n!r}, m={m!r}"
        )
    if not (_is_int(update_freq) and update_freq >= 1):
        raise ValueError(
            f"update_freq (epochs between refreshes) must be >= 1, got {update_freq!r}"
        )
    if not (_is_int(num_samples) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


class SparseSAM(SAM):
    """The sparse-SAM machinery; build :class:`~samlab.optim.SSAMF` or
    :class:`~samlab.optim.SSAMD`.

    Args beyond :class:`~samlab.optim.SAM`'s:
        sparsity: the fraction of entries NOT perturbed, in [0, 1] (ignored by ``"nm"``,
            whose density is n/m).
        pattern: "unstructured" (top-k entries), "structured" (whole output rows/filters),
            "nm" (n of every m along the reduction dimensions), "tensor" (whole tensors,
            the seed's "structured").
        scope: "tensor" (sparsity exact per tensor) or "global" (the seed's top-k over all
            parameters; "unstructured" only).
        n, m: the N:M pattern.
        strict: a tensor the pattern cannot take (``"nm"``: 1-D or a reduction length not a
            multiple of m; ``"structured"``: 1-D) is an error, raised at construction (and
            at a refresh for parameters added since), instead of perturbed densely with a
            warning. ``"unstructured"`` and ``"tensor"`` take every tensor.
        renormalize: divide by ``||m g||`` so the radius is rho (the seed divides by ``||g||``).
        only_weights: perturb tensors of 2 or more dimensions only (no biases, no norms);
            a param group with ``"perturb": False`` is never perturbed either.
        update_freq: epochs between mask refreshes (:meth:`masks_due`).
        num_samples: samples read from ``batches`` at a refresh.
        seed: of the generator behind random scores and sampled labels.
    """

    method = "SparseSAM"

    @sam_keywords(parent=SAM.__init__)
    def __init__(
        self,
        params,
        base_optimizer=torch.optim.SGD,
        *,
        pattern: str = "unstructured",
        sparsity: float = 0.5,
        scope: str = "tensor",
        n: int = 2,
        m: int = 4,
        strict: bool = False,
        renormalize: bool = False,
        only_weights: bool = False,
        update_freq: int = 1,
        num_samples: int = 128,
        seed: int = 0,
        **options: Any,
    ) -> None:
        _check_options(sparsity, pattern, scope, n, m, update_freq, num_samples)
        if scope == "global" and pattern != "unstructured":
            raise ValueError(f"scope='global' applies to pattern='unstructured', not {pattern!r}")
        super().__init__(params, base_optimizer, **options)
        self.sparsity, self.pattern, self.scope = float(sparsity), pattern, scope
        self.n, self.m, self.strict = n, m, bool(strict)
        self.only_weights, self.update_freq, self.num_samples = (
            only_weights,
            update_freq,
            num_samples,
        )
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        for group in self.param_groups:
            group.setdefault("renormalize", bool(renormalize))
            group.setdefault("perturb", True)
        self.defaults.update(renormalize=bool(renormalize), perturb=True)
        if self.strict:  # every rank refuses here, not rank 0 alone at its first refresh
            unfit = [
                f"#{i} {tuple(p.shape)}"
                for i, (p, ok) in enumerate(zip(self.all_params(), self.perturbable()))
                if ok and not self.fits(p.shape)
            ]
            if unfit:
                self._unfit(unfit)
        self.refreshes = 0
        self.mask_density = 1.0
        self.mask_overlap = 1.0
        self.last_refresh: dict[str, Any] = {}
        #: the masks as 0/1 in each weight's dtype, what the ascent multiplies by (inductor's
        #: CPU code does not vectorize bool loads: a bool mask made the compiled ascent of a
        #: ResNet-18 ~10x slower, a float one costs ~20% of that ascent); rebuilt on refresh
        self._factors: dict[Tensor, Tensor] = {}

    # ----------------------------------------------------------------- cadence
    def masks_due(self, epoch: int) -> bool:
        """True when the masks should be refreshed at the start of ``epoch`` (0-based): every
        ``update_freq`` epochs from epoch 0."""
        return epoch % self.update_freq == 0

    def refresh_masks(self, model, loss_fn, batches, *, epoch=None, epochs=None) -> None:
        """Recompute the masks (see the subclasses); ``batches`` is an iterable of
        ``(inputs, targets)``, ``epoch`` the current epoch and ``epochs`` the run's length."""
        raise NotImplementedError

    # ----------------------------------------------------------------- masks
    def all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def masks(self) -> list[Tensor] | None:
        """The masks in parameter order (all-True for a parameter added after the last
        refresh), or None before the first refresh."""
        if not self.refreshes:
            return None
        return [self._mask_of(p) for p in self.all_params()]

    def _mask_of(self, p: Tensor) -> Tensor:
        mask = self.state[p].get("mask")
        return torch.ones_like(p, dtype=torch.bool) if mask is None else mask

    def perturbable(self) -> list[bool]:
        """Per parameter: whether it may be perturbed at all (its group, ``only_weights``)."""
        return [
            bool(group["perturb"]) and (not self.only_weights or p.dim() >= 2)
            for group in self.param_groups
            for p in group["params"]
        ]

    def pattern_masks(self, scores: list[Tensor]) -> list[Tensor]:
        """The masks of ``self.pattern`` over ``scores`` (one per parameter)."""
        allowed = self.perturbable()
        picked = [s for s, ok in zip(scores, allowed) if ok]
        out: list[Tensor | None] = [None] * len(scores)
        if self.pattern == "tensor":
            chosen = iter(kernels.tensor_masks(picked, self.sparsity))
        elif self.pattern == "unstructured" and self.scope == "global":
            chosen = iter(kernels.unstructured_masks(picked, self.sparsity, scope="global"))
        else:
            chosen = iter(self._per_tensor(picked))
        names = []
        for i, (score, ok) in enumerate(zip(scores, allowed)):
            if not ok:
                out[i] = torch.zeros_like(score, dtype=torch.bool)
                continue
            mask = next(chosen)
            if mask is None:
                names.append(f"#{i} {tuple(score.shape)}")
                mask = torch.ones_like(score, dtype=torch.bool)
            out[i] = mask
        if names:
            self._unfit(names)
        return out

    def fits(self, shape) -> bool:
        """Whether the pattern can take a tensor of ``shape``: ``"nm"`` needs 2 or more
        dimensions and a reduction length that is a multiple of m, ``"structured"`` 2 or more
        dimensions; ``"unstructured"`` and ``"tensor"`` take every tensor."""
        if self.pattern == "nm":
            return kernels.nm_fits(shape, self.m)
        if self.pattern == "structured":
            return len(shape) >= 2
        return True

    def _per_tensor(self, scores: list[Tensor]) -> list[Tensor | None]:
        """Masks per tensor; None where the pattern cannot take the tensor."""
        out = []
        for s in scores:
            if not self.fits(s.shape):
                out.append(None)
            elif self.pattern == "unstructured":
                out.append(kernels.topk_mask(s, kernels.keep_count(s.numel(), self.sparsity)))
            elif self.pattern == "nm":
                out.append(kernels.nm_mask(s, self.n, self.m))
            else:
                out.append(kernels.structured_mask(s, self.sparsity))
        return out

    def _unfit(self, names: list[str]) -> None:
        what = (
            f"{self.n}:{self.m} (at least 2-D, reduction length a multiple of {self.m})"
            if self.pattern == "nm"
            else "structured (at least 2-D)"
        )
        message = (
            f"{self.method}: {len(names)} parameters cannot take the pattern {what}: "
            f"{', '.join(names)}"
        )
        if self.strict:
            raise ValueError(
                f"{message}; pass strict=False to perturb them densely, only_weights=True or a "
                "param group with 'perturb': False to leave them out"
            )
        warnings.warn(f"{message}; they are perturbed densely (strict=True refuses)", stacklevel=4)

    def install_masks(self, masks: list[Tensor], info: dict[str, Any]) -> None:
        """Store ``masks`` (broadcast from rank 0 under torch.distributed), update the density
        and overlap, and record ``info`` in :attr:`last_refresh`."""
        masks = _broadcast([m.to(torch.bool) for m in masks])
        old = self.masks()
        params = self.all_params()
        self._factors.clear()
        for p, mask in zip(params, masks):
            self.state[p]["mask"] = mask.to(p.device)
        on = sum(int(mask.sum()) for mask in masks)
        self.mask_density = on / max(1, sum(p.numel() for p in params))
        self.mask_overlap = 1.0 if old is None else kernels.mask_overlap(masks, old)
        self.refreshes += 1
        self.last_refresh = {
            **info,
            "mask_density": self.mask_density,
            "overlap": self.mask_overlap,
        }

    # ----------------------------------------------------------------- the step
    def _segment_masks(self, group, params):
        if not self.refreshes:
            return None, False
        return [self._factor(p) for p in params], bool(group["renormalize"])

    def _factor(self, p: Tensor) -> Tensor | None:
        factor = self._factors.get(p)
        if factor is None:
            mask = self.state[p].get("mask")
            if mask is None:
                return None
            factor = self._factors[p] = mask.to(p.dtype)
        return factor

    def _begin(self) -> None:
        super()._begin()
        if self.refreshes and self.mask_density == 0.0:
            self.single_pass = True  # nothing is perturbed: the base optimizer's step
        self.last_step["mask_density"] = self.mask_density
        self.last_step["mask_overlap"] = self.mask_overlap

    def _first(self) -> bool:
        _, norm = self._ascent()
        self.last_step["effective_radius"] = self.effective_radius(
            norm, self.perturbation.masked_norm
        )
        return True

    def effective_radius(self, norm: Tensor, masked_norm: Tensor | None) -> Tensor:
        """The radius reached as a fraction of rho, ``||m g|| / (||g|| + eps)``, from the
        ascent's norms (1 while dense or with ``renormalize``); the eager paths and
        ``FusedStep`` record it as ``last_step["effective_radius"]``."""
        renormalized = all(group["renormalize"] for group in self.param_groups)
        if masked_norm is None or renormalized:
            return torch.ones((), dtype=norm.dtype, device=norm.device)
        return masked_norm / (norm + self.param_groups[0]["perturb_eps"])

    # ----------------------------------------------------------------- state
    def _extra_state(self) -> dict[str, Any]:
        return {
            "refreshes": self.refreshes,
            "mask_density": self.mask_density,
            "mask_overlap": self.mask_overlap,
            "generator": self.generator.get_state(),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.refreshes = int(state.get("refreshes", 0))
        self.mask_density = float(state.get("mask_density", 1.0))
        self.mask_overlap = float(state.get("mask_overlap", 1.0))
        if "generator" in state:
            self.generator.set_state(state["generator"])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._factors.clear()
        for p in self.all_params():  # torch casts state tensors to the parameter's dtype
            if "mask" in self.state.get(p, {}):
                self.state[p]["mask"] = self.state[p]["mask"].to(torch.bool)


def is_rank_zero() -> bool:
    """True without torch.distributed, or on rank 0 (the rank that computes the masks)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _broadcast(masks: list[Tensor]) -> list[Tensor]:
    """Rank 0's masks on every rank (no-op without an initialised process group)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return masks
    out = []
    for mask in masks:
        as_bytes = mask.to(torch.uint8)
        dist.broadcast(as_bytes, src=0)
        out.append(as_bytes.to(torch.bool))
    return out


def cosine_drop_rate(drop_rate: float, epoch: int, t_end: int | None) -> float:
    """SSAM-D's drop rate at ``epoch``: ``drop_rate * (1 + cos(pi * epoch / t_end)) / 2``
    (constant without ``t_end``; 0 from ``t_end`` on)."""
    if t_end is None:
        return drop_rate
    if epoch >= t_end:
        return 0.0
    return drop_rate * (1 + math.cos(math.pi * epoch / t_end)) / 2
