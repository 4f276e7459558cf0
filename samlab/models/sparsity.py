"""Static sparse weights for sparse training: which weights exist, held by the trainer.

A :class:`WeightMasks` is a set of boolean masks, one per prunable weight, True where the weight
is kept. The trainer applies it after every optimizer step (:meth:`WeightMasks.apply` zeroes the
pruned entries in place), saves it in checkpoints (:meth:`WeightMasks.state_dict`), and so
trains a network with a fixed sparse support, the setting of S^2-SAM (Ji et al., NeurIPS 2024;
seed 001) where one-step SAM is compared with SGD and SAM on sparse networks. These masks are
not sparse SAM's *perturbation* masks (which coordinates SAM perturbs, kept by
:mod:`samlab.optim`): a network can have both.

**Prunable weights** (:func:`prunable_weights`): the ``weight`` of every convolution
(``nn.Conv1d/2d/3d``) and linear layer (``nn.Linear`` and subclasses), never biases or
normalisation parameters, and -- with ``dense_ends=True``, the default -- not the first and the
last of them in registration order (the input stem and the classifier). That is S^2-SAM's
"irregular" (element-wise) sparsity: its ResNet-32 profiles prune exactly the 30 convolutions
inside the residual blocks and keep the stem conv and the classifier dense, which is what
``prunable_weights(resnet32_cifar())`` returns. Weights that are not ``nn.Module`` layers
(``nn.MultiheadAttention.in_proj_weight``, position embeddings) are never pruned; pass
``names=`` to choose the weights yourself.

Two ways to draw masks at weight sparsity ``s`` (the fraction of prunable weights removed);
both keep exactly ``floor((1 - s) * N)`` of the ``N`` prunable weights:

* :meth:`WeightMasks.magnitude` -- keep the weights of largest ``|w|``, over all prunable
  weights at once (``scope="global"``, S^2-SAM's ``--sp-global-magnitude``) or per layer
  (``scope="layer"``, each layer at sparsity ``s``). Ties go to the lower flat index.
* :meth:`WeightMasks.erk` -- Erdos-Renyi-Kernel random masks (Evci et al., "Rigging the
  Lottery", ICML 2020, appendix): layer ``l`` of shape (n_out, n_in, k_h, k_w) gets density
  ``min(1, eps * (n_out + n_in + k_h + k_w) / (n_out * n_in * k_h * k_w))`` (a linear layer:
  ``(n_out + n_in) / (n_out * n_in)``), with ``eps`` chosen so that the kept count is
  ``(1 - s) * N``; layers whose density would exceed 1 are made dense and ``eps`` recomputed
  over the rest, as in RigL. The real-valued counts are rounded by the largest-remainder rule so
  the total is exact, then each layer keeps that many entries drawn uniformly (``generator``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kernels import keep_count, unstructured_masks

__all__ = ["PRUNABLE_LAYERS", "WeightMasks", "erk_densities", "prunable_weights"]

#: Layer types whose ``weight`` is prunable.
PRUNABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

_SCOPES = {"global": "global", "layer": "tensor"}


def prunable_weights(
    model: nn.Module, *, dense_ends: bool = True, names: Sequence[str] | None = None
) -> list[tuple[str, nn.Parameter]]:
    """``(name, weight)`` of the prunable weights of ``model`` in registration order, named as
    in ``model.named_parameters()`` (see the module docstring for the rule).

    ``names`` picks exactly those parameters instead (``ValueError`` for a name the model lacks
    or a parameter with fewer than 2 dimensions).
    """
    if names is not None:
        params = dict(model.named_parameters())
        chosen = []
        for name in names:
            if name not in params:
                raise ValueError(f"the model has no parameter {name!r} to prune")
            if params[name].dim() < 2:
                raise ValueError(f"{name!r} is {params[name].dim()}-D; only weights are pruned")
            chosen.append((name, params[name]))
        return chosen
    found: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, PRUNABLE_LAYERS) or not isinstance(weight, nn.Parameter):
            continue
        if id(weight) in seen:  # tied weights are pruned once
            continue
        seen.add(id(weight))
        found.append((f"{module_name}.weight" if module_name else "weight", weight))
    if dense_ends:
        found = found[1:-1]
    if not found:
        raise ValueError(
            "the model has no prunable weights (conv/linear layers"
            + (", the first and last kept dense" if dense_ends else "")
            + "); pass dense_ends=False or names=[...]"
        )
    return found


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1) (the fraction removed), got {sparsity}")
    return float(sparsity)


def erk_densities(shapes: Sequence[Sequence[int]], sparsity: float) -> list[float]:
    """Real-valued ERK densities of layers shaped ``shapes`` whose weighted mean is
    ``1 - sparsity`` (see the module docstring)."""
    sizes = [math.prod(shape) for shape in shapes]
    raw = [sum(shape) / size for shape, size in zip(shapes, sizes)]
    target = (1.0 - sparsity) * sum(sizes)
    dense: set[int] = set()
    while True:
        sparse = [i for i in range(len(shapes)) if i not in dense]
        budget = target - sum(sizes[i] for i in dense)
        weight = sum(raw[i] * sizes[i] for i in sparse)
        eps = budget / weight if weight > 0 else 0.0
        over = [i for i in sparse if eps * raw[i] > 1.0]
        if not over:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        top = max(raw[i] for i in over)
        dense.update(i for i in over if raw[i] == top)


def _exact_counts(densities: Sequence[float], sizes: Sequence[int], keep: int) -> list[int]:
    """Integers near ``density * size`` (largest remainder, ties to the earlier layer) that sum
    to ``keep``, each within [0, size]."""
    real = [d * n for d, n in zip(densities, sizes)]
    counts = [min(n, math.floor(r + 1e-9)) for r, n in zip(real, sizes)]
    order = sorted(range(len(sizes)), key=lambda i: (-(real[i] - counts[i]), i))
    missing = keep - sum(counts)
    for i in order:
        if missing <= 0:
            break
        if counts[i] < sizes[i]:
            counts[i] += 1
            missing -= 1
    for i in reversed(order):  # float slack the other way: take back from the smallest remainders
        if missing >= 0:
            break
        if counts[i] > 0:
            counts[i] -= 1
            missing += 1
    return counts


class WeightMasks:
    """Boolean keep-masks for named weights, applied in place by :meth:`apply`.

    Build with :meth:`magnitude` or :meth:`erk`, or pass ``masks`` (name -> bool tensor shaped
    like the weight). ``method`` and ``sparsity`` are recorded for checkpoints and reports.
    Names are those of ``model.named_parameters()``: build and apply the masks on the same
    module (the one inside a DDP wrapper, whose names gain a ``module.`` prefix).
    """

    def __init__(
        self,
        masks: Mapping[str, Tensor],
        *,
        method: str = "custom",
        sparsity: float | None = None,
    ) -> None:
        self._masks: dict[str, Tensor] = {}
        for name, mask in masks.items():
            if not isinstance(mask, Tensor):
                raise ValueError(f"mask {name!r} must be a tensor, got {type(mask).__name__}")
            self._masks[name] = mask.detach().to(torch.bool)
        self.method = method
        self.sparsity = None if sparsity is None else _check_sparsity(sparsity)

    @classmethod
    def magnitude(
        cls,
        model: nn.Module,
        sparsity: float,
        *,
        scope: str = "global",
        dense_ends: bool = True,
        names: Sequence[str] | None = None,
    ) -> WeightMasks:
        """Keep the prunable weights of largest magnitude (``scope`` "global" or "layer")."""
        sparsity = _check_sparsity(sparsity)
        if scope not in _SCOPES:
            raise ValueError(f"scope must be one of {', '.join(_SCOPES)}, got {scope!r}")
        weights = prunable_weights(model, dense_ends=dense_ends, names=names)
        scores = [w.detach().abs() for _, w in weights]
        masks = unstructured_masks(scores, sparsity, scope=_SCOPES[scope])
        named = {name: mask for (name, _), mask in zip(weights, masks)}
        return cls(named, method=f"magnitude-{scope}", sparsity=sparsity)

    @classmethod
    def erk(
        cls,
        model: nn.Module,
        sparsity: float,
        *,
        generator: torch.Generator | None = None,
        dense_ends: bool = True,
        names: Sequence[str] | None = None,
    ) -> WeightMasks:
        """Erdos-Renyi-Kernel random masks with exactly ``floor((1 - sparsity) * N)`` kept."""
        sparsity = _check_sparsity(sparsity)
        weights = prunable_weights(model, dense_ends=dense_ends, names=names)
        shapes = [tuple(w.shape) for _, w in weights]
        sizes = [w.numel() for _, w in weights]
        densities = erk_densities(shapes, sparsity)
        counts = _exact_counts(densities, sizes, keep_count(sum(sizes), sparsity))
        named = {}
        for (name, weight), size, count in zip(weights, sizes, counts):
            chosen = torch.randperm(size, generator=generator)[:count]
            mask = torch.zeros(size, dtype=torch.bool)
            mask[chosen] = True
            named[name] = mask.view(weight.shape).to(weight.device)
        return cls(named, method="erk", sparsity=sparsity)

    # -- reading -----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The masked parameters' names, in order."""
        return list(self._masks)

    def mask(self, name: str) -> Tensor:
        """The keep-mask of ``name`` (True = kept)."""
        try:
            return self._masks[name]
        except KeyError:
            raise ValueError(f"no mask for {name!r}; masked: {', '.join(self._masks)}") from None

    def __len__(self) -> int:
        return len(self._masks)

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __contains__(self, name: object) -> bool:
        return name in self._masks

    def density(self, name: str | None = None) -> float:
        """Kept fraction over all masked weights, or of the weight ``name``."""
        if name is not None:
            mask = self.mask(name)
            return int(mask.sum()) / mask.numel() if mask.numel() else 1.0
        total = sum(m.numel() for m in self._masks.values())
        kept = sum(int(m.sum()) for m in self._masks.values())
        return kept / total if total else 1.0

    def densities(self) -> dict[str, float]:
        """Kept fraction of every masked weight."""
        return {name: self.density(name) for name in self._masks}

    # -- applying ----------------------------------------------------------------------------

    def _targets(self, model: nn.Module) -> list[tuple[nn.Parameter, Tensor]]:
        params = dict(model.named_parameters())
        pairs = []
        for name, mask in self._masks.items():
            param = params.get(name)
            if param is None:
                raise ValueError(f"the model has no parameter {name!r} (masked by WeightMasks)")
            if param.shape != mask.shape:
                raise ValueError(
                    f"mask {name!r} is shaped {tuple(mask.shape)}, the parameter "
                    f"{tuple(param.shape)}"
                )
            if mask.device != param.device:
                mask = self._masks[name] = mask.to(param.device)
            pairs.append((param, mask))
        return pairs

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned entries of ``model``'s masked weights, in place."""
        for param, mask in self._targets(model):
            param.masked_fill_(~mask, 0)

    @torch.no_grad()
    def apply_to_grads(self, model: nn.Module) -> None:
        """Zero the pruned entries of the masked weights' gradients (those that exist)."""
        for param, mask in self._targets(model):
            if param.grad is not None:
                param.grad.masked_fill_(~mask, 0)

    def to(self, device: torch.device | str) -> WeightMasks:
        """Move every mask to ``device`` (in place); returns ``self``."""
        self._masks = {name: mask.to(device) for name, mask in self._masks.items()}
        return self

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"masks": {name: bool tensor}, "method": str, "sparsity": float | None}``
        (loadable with ``torch.load(..., weights_only=True)``)."""
        return {
            "masks": {name: mask.clone() for name, mask in self._masks.items()},
            "method": self.method,
            "sparsity": self.sparsity,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the masks with ``state``'s. If this object holds masks already, ``state``
        must mask the same names with the same shapes (``ValueError`` naming the difference)."""
        if not isinstance(state, Mapping) or "masks" not in state:
            raise ValueError("a WeightMasks state is a mapping with a 'masks' entry")
        masks = state["masks"]
        if self._masks:
            if list(masks) != list(self._masks):
                missing = sorted(set(self._masks) - set(masks))
                extra = sorted(set(masks) - set(self._masks))
                raise ValueError(
                    f"the state masks other weights: missing {missing}, unexpected {extra}"
                )
            for name, mask in masks.items():
                if tuple(mask.shape) != tuple(self._masks[name].shape):
                    raise ValueError(
                        f"mask {name!r} in the state is shaped {tuple(mask.shape)}, here "
                        f"{tuple(self._masks[name].shape)}"
                    )
        devices = {name: m.device for name, m in self._masks.items()}
        self._masks = {
            name: mask.detach().to(torch.bool).to(devices.get(name, mask.device))
            for name, mask in masks.items()
        }
        self.method = state.get("method", "custom")
        sparsity = state.get("sparsity")
        self.sparsity = None if sparsity is None else _check_sparsity(sparsity)

    def __repr__(self) -> str:
        return (
            f"WeightMasks(method={self.method!r}, sparsity={self.sparsity}, "
            f"layers={len(self._masks)}, density={self.density():.4f})"
        )
