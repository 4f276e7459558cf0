"""Static sparse training (the setting of S²-SAM): weights held at zero by a fixed mask.

:func:`weight_masks_for` builds :class:`samlab.models.sparsity.WeightMasks` for a run
(``weight_sparsity`` > 0): global magnitude pruning of the initial weights, or ERK random masks
drawn from a generator seeded by the run's seed. The trainer applies them once before training
and again after every optimizer step, and saves them in its checkpoints (``state_dict``). These
*weight* masks are the trainer's; sparse SAM's *perturbation* masks belong to the optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from samlab.train.classify.config import ClassifyConfig

__all__ = ["weight_masks_for"]


def weight_masks_for(config: ClassifyConfig, model: nn.Module, saved: Any = None) -> Any:
    """The weight masks of ``config`` on ``model`` (None when ``weight_sparsity`` is 0);
    ``saved``: a masks ``state_dict`` from a checkpoint, loaded instead of drawing new ones."""
    if config.weight_sparsity == 0.0:
        if saved is not None:
            raise ValueError("the checkpoint holds weight masks but weight_sparsity is 0")
        return None
    from samlab.models.sparsity import WeightMasks

    if config.weight_mask == "magnitude":
        masks = WeightMasks.magnitude(model, config.weight_sparsity)
    else:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 17)
        masks = WeightMasks.erk(model, config.weight_sparsity, generator=generator)
    if saved is not None:
        masks.load_state_dict(saved)
    masks.apply(model)
    return masks
