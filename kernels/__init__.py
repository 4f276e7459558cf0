"""Tensor-list operations behind samlab's optimizers.

Each fast path (``torch._foreach_*`` or ``torch.compile``) has a readable per-tensor reference
twin selected with ``impl="loop"``; tests check in float64 that they agree. SAM's ascent is one
functional over param-group segments with the dispatch inside (:func:`sam_ascent_` in place,
:func:`sam_ascent` pure); a :class:`Dispatch` chooses the implementation per device and owns
the one fallback. Sparse SAM's masks (top-k, N:M, structured, tensor-level, drop/grow) and
Fisher accumulation live in :mod:`kernels.masks`; the elementwise ops of WSAM, FriendlySAM and
bSAM in :mod:`kernels.variant_ops`. No ``nn.Module`` code lives here and nothing
here imports ``samlab`` or ``landscape``.
"""

from kernels.ascent import (
    Ascent,
    Segment,
    Shifted,
    perturbation_norm,
    restore_,
    sam_ascent,
    sam_ascent_,
    swap_in,
)
from kernels.dispatch import IMPLS, NOT_RUN, Dispatch
from kernels.masks import (
    MASK_IMPLS,
    drop_grow_mask,
    fisher_accumulate_,
    keep_count,
    mask_overlap,
    nm_fits,
    nm_mask,
    structured_mask,
    tensor_masks,
    topk_mask,
    unstructured_masks,
)
from kernels.sam_ops import (
    adaptive_weights,
    axpy_,
    copy_,
    dot,
    global_norm,
    gsam_combine_,
    gsam_decompose_,
    pair_stats,
    perturb_,
    scaled_add_,
)
from kernels.variant_ops import (
    bsam_precision_,
    bsam_sample_,
    bsam_update_,
    ema_direction_,
    lerp_,
)

__all__ = [
    "IMPLS",
    "MASK_IMPLS",
    "NOT_RUN",
    "Ascent",
    "Dispatch",
    "Segment",
    "Shifted",
    "adaptive_weights",
    "axpy_",
    "bsam_precision_",
    "bsam_sample_",
    "bsam_update_",
    "copy_",
    "dot",
    "ema_direction_",
    "drop_grow_mask",
    "fisher_accumulate_",
    "global_norm",
    "gsam_combine_",
    "gsam_decompose_",
    "keep_count",
    "lerp_",
    "mask_overlap",
    "nm_fits",
    "nm_mask",
    "pair_stats",
    "perturb_",
    "perturbation_norm",
    "restore_",
    "sam_ascent",
    "sam_ascent_",
    "scaled_add_",
    "structured_mask",
    "swap_in",
    "tensor_masks",
    "topk_mask",
    "unstructured_masks",
]
