"""Sparse SAM's mask operations, each with a readable per-tensor reference twin.

A mask is a boolean tensor shaped like its weight, True where the weight is perturbed (the
ascent functional takes it in :attr:`kernels.Segment.mask`). Scores are non-negative
importance values of the same shape (an empirical Fisher, ``|w|``, ``|g|``, uniform noise).
Every selection is exact and deterministic: ties go to the lower (row-major flat) index.

Each function takes ``impl``: ``"loop"`` is the reference (a stable sort, a Python loop over
tensors or samples, exactly the rule of the docstring); ``"vectorized"`` (the default) is the
fast path (a ``kthvalue`` threshold with a cumulative tie count instead of a sort, pairwise
ranks inside N:M groups, one cumulative sum over tensor sizes, one reduction over the sample
dimension). ``tests/kernels/test_masks.py`` checks that the two agree bit for bit on masks
(ties included) and in float64 on the Fisher sums.

Patterns (Mi et al., NeurIPS 2022 and its TPAMI 2025 study), for ``sparsity`` ``s``, the
fraction of entries NOT perturbed:

* :func:`topk_mask` / :func:`unstructured_masks`: exactly ``floor((1 - s) * numel)`` entries
  with the largest scores per tensor, or over all tensors at once (``scope="global"``).
* :func:`nm_mask`: ``n`` of every ``m`` consecutive entries along the row-major flattening of
  the reduction dimensions (a linear weight ``(out, in)`` groups along ``in``, a convolution
  ``(out, in, kh, kw)`` along ``in * kh * kw``: the layout 2:4 semi-structured kernels expect).
* :func:`structured_mask`: whole output rows (filters), ``floor((1 - s) * out)`` of them by
  mean score.
* :func:`tensor_masks`: the seed's "structured" rule: whole tensors switched on by mean score,
  greedily, until ``(1 - s)`` of all entries are on (may overshoot by one tensor).
* :func:`drop_grow_mask`: SSAM-D's refresh: drop the live entries of lowest drop score,
  revive as many previously dead entries of highest growth score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "MASK_IMPLS",
    "drop_grow_mask",
    "fisher_accumulate_",
    "keep_count",
    "mask_overlap",
    "nm_fits",
    "nm_mask",
    "structured_mask",
    "tensor_masks",
    "topk_mask",
    "unstructured_masks",
]

MASK_IMPLS = ("loop", "vectorized")


def _check_impl(impl: str) -> None:
    if impl not in MASK_IMPLS:
        raise ValueError(f"impl must be one of {MASK_IMPLS}, got {impl!r}")


def keep_count(numel: int, sparsity: float) -> int:
    """``floor((1 - sparsity) * numel)``, robust to float rounding (``(1 - 0.9) * 10`` is 1)."""
    return min(numel, max(0, math.floor(round((1.0 - sparsity) * numel, 6))))


def topk_mask(score: Tensor, keep: int, *, impl: str = "vectorized") -> Tensor:
    """True on exactly ``keep`` entries of ``score`` with the largest values (ties: the lower
    flat index first); shaped like ``score``."""
    _check_impl(impl)
    flat = score.reshape(-1)
    n = flat.numel()
    if keep >= n:
        return torch.ones_like(score, dtype=torch.bool)
    mask = torch.zeros(n, dtype=torch.bool, device=score.device)
    if keep <= 0:
        return mask.view(score.shape)
    if impl == "loop":
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:keep]] = True
        return mask.view(score.shape)
    threshold = torch.kthvalue(flat, n - keep + 1).values  # the keep-th largest value
    above = flat > threshold
    ties = flat == threshold
    room = keep - above.sum()
    return (above | (ties & (torch.cumsum(ties, 0) <= room))).view(score.shape)


def unstructured_masks(
    scores: Sequence[Tensor],
    sparsity: float,
    *,
    scope: str = "tensor",
    impl: str = "vectorized",
) -> list[Tensor]:
    """Top-k masks keeping ``floor((1 - sparsity) * numel)`` entries of each tensor
    (``scope="tensor"``) or of all tensors together (``scope="global"``, the seed's rule:
    ties by position in the concatenation)."""
    if scope == "tensor":
        return [topk_mask(s, keep_count(s.numel(), sparsity), impl=impl) for s in scores]
    if scope != "global":
        raise ValueError(f"scope must be 'tensor' or 'global', got {scope!r}")
    if not scores:
        return []
    device = scores[0].device
    flat = torch.cat([s.reshape(-1).to(device=device, dtype=torch.float64) for s in scores])
    mask = topk_mask(flat, keep_count(flat.numel(), sparsity), impl=impl)
    parts = torch.split(mask, [s.numel() for s in scores])
    return [m.view(s.shape).to(s.device) for m, s in zip(parts, scores)]


def nm_fits(shape: Sequence[int], m: int) -> bool:
    """True when a tensor of ``shape`` takes the N:M pattern: at least 2-D, and the length of
    its reduction dimensions (all but the first) a multiple of ``m``."""
    if len(shape) < 2:
        return False
    return math.prod(shape[1:]) % m == 0


def nm_mask(score: Tensor, n: int, m: int, *, impl: str = "vectorized") -> Tensor:
    """``n`` of every ``m`` consecutive entries along the reduction dimensions (row-major
    flattening of all but the first dimension), those of largest score (ties: lower index).
    Needs :func:`nm_fits`."""
    _check_impl(impl)
    if not nm_fits(score.shape, m):
        raise ValueError(
            f"a tensor of shape {tuple(score.shape)} does not take the {n}:{m} pattern (it must "
            f"be at least 2-D with a reduction length that is a multiple of {m})"
        )
    groups = score.reshape(score.shape[0], -1, m)
    if impl == "loop":
        order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
        mask = torch.zeros_like(groups, dtype=torch.bool)
        mask.scatter_(-1, order[..., :n], True)
        return mask.view(score.shape)
    # rank of entry i in its group: entries of larger score, plus equal ones before it
    a, b = groups.unsqueeze(-1), groups.unsqueeze(-2)  # a[..., i, 0], b[..., 0, j]
    earlier = torch.ones(m, m, dtype=torch.bool, device=score.device).tril(-1)  # j < i
    rank = ((b > a) | ((b == a) & earlier)).sum(-1)
    return (rank < n).view(score.shape)


def structured_mask(score: Tensor, sparsity: float, *, impl: str = "vectorized") -> Tensor:
    """Whole output rows (filters of a convolution, rows of a linear weight):
    ``floor((1 - sparsity) * rows)`` rows of largest mean score (ties: lower row)."""
    if score.dim() < 2:
        raise ValueError(
            f"the structured pattern needs a tensor of at least 2 dimensions, got shape "
            f"{tuple(score.shape)}"
        )
    rows = score.reshape(score.shape[0], -1).mean(1)
    keep = topk_mask(rows, keep_count(rows.numel(), sparsity), impl=impl)
    return keep.view(-1, *([1] * (score.dim() - 1))).expand(score.shape).clone()


def tensor_masks(
    scores: Sequence[Tensor], sparsity: float, *, impl: str = "vectorized"
) -> list[Tensor]:
    """The seed's tensor-level rule: tensors in order of decreasing mean score (ties: earlier
    tensor first) are switched on while fewer than ``(1 - sparsity) * total`` entries are on."""
    _check_impl(impl)
    if not scores:
        return []
    target = (1.0 - sparsity) * sum(s.numel() for s in scores)
    means = torch.stack([s.detach().double().mean().cpu() for s in scores])
    order = torch.sort(means, descending=True, stable=True).indices.tolist()
    on = [False] * len(scores)
    if impl == "loop":
        kept = 0
        for i in order:
            if kept >= target:
                break
            on[i] = True
            kept += scores[i].numel()
    else:
        sizes = torch.tensor([scores[i].numel() for i in order], dtype=torch.float64)
        before = torch.cumsum(sizes, 0) - sizes  # entries on before each tensor in the order
        for i, flag in zip(order, (before < target).tolist()):
            on[i] = flag
    return [torch.full_like(s, flag, dtype=torch.bool) for s, flag in zip(scores, on)]


def drop_grow_mask(
    mask: Tensor,
    drop_score: Tensor,
    grow_score: Tensor,
    drop_rate: float,
    *,
    impl: str = "vectorized",
) -> Tensor:
    """SSAM-D's refresh of one mask (or of a concatenation of masks): of the ``L`` live
    entries keep the ``L - k`` of largest ``drop_score``, and revive the ``k`` previously dead
    entries of largest ``grow_score``, ``k = min(floor(L * drop_rate), dead)``. The live count
    is unchanged and at least ``1 - drop_rate`` of the old live entries stay live."""
    mask = mask.to(torch.bool)
    live = int(mask.sum())
    k = min(math.floor(live * drop_rate + 1e-9), mask.numel() - live)
    low = torch.finfo(torch.float64).min
    kept = topk_mask(torch.where(mask, drop_score.double(), low), live - k, impl=impl)
    grown = topk_mask(torch.where(mask, low, grow_score.double()), k, impl=impl)
    return kept | grown


def mask_overlap(new: Sequence[Tensor], old: Sequence[Tensor]) -> float:
    """The fraction of ``old``'s True entries that are True in ``new`` (1.0 when ``old`` has
    none)."""
    both = sum(int((a & b).sum()) for a, b in zip(new, old))
    before = sum(int(b.sum()) for b in old)
    return both / before if before else 1.0


def fisher_accumulate_(
    fisher: Sequence[Tensor], per_sample_grads: Sequence[Tensor], *, impl: str = "vectorized"
) -> None:
    """``F_i <- F_i + sum_b g_{b,i}^2``: add the squared per-sample gradients
    (``per_sample_grads[i]`` shaped ``(batch, *F_i.shape)``) to the Fisher diagonal."""
    _check_impl(impl)
    if impl == "loop":
        for f, g in zip(fisher, per_sample_grads):
            for sample in g:
                f.addcmul_(sample, sample)
        return
    if all(len(g) == 1 for g in per_sample_grads):
        single = [g[0] for g in per_sample_grads]
        torch._foreach_addcmul_(list(fisher), single, single)
        return
    torch._foreach_add_(list(fisher), [torch.sum(g * g, 0) for g in per_sample_grads])
