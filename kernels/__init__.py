"""Tensor-list operations behind samlab's optimizers.

Each fast path (``torch._foreach_*`` or ``torch.compile``) has a readable per-tensor reference
twin selected with ``impl="loop"``; tests check in float64 that they agree. No ``nn.Module``
code lives here and nothing here imports ``samlab`` or ``landscape``.
"""

from kernels.sam_ops import (
    IMPLS,
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

__all__ = [
    "IMPLS",
    "adaptive_weights",
    "axpy_",
    "copy_",
    "dot",
    "global_norm",
    "gsam_combine_",
    "gsam_decompose_",
    "pair_stats",
    "perturb_",
    "scaled_add_",
]
