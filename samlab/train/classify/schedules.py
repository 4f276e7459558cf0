"""The learning-rate schedule of a classification run, as a factor of the peak ``lr`` per step.

:func:`lr_factor` returns ``factor(step)`` for ``torch.optim.lr_scheduler.LambdaLR`` (stepped
after every optimizer step). The schedules:

* ``cosine``: ``lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2``, ``p`` the progress after the
  warm-up (0 -> 1 over the remaining steps);
* ``linear``: from ``lr`` to ``lr_min`` linearly in ``p``;
* ``step``: ``lr * lr_gamma ** k``, ``k`` the number of ``lr_milestones`` (fractions of all
  steps) reached;
* ``multistep``: the same with ``lr_milestone_epochs`` (epoch numbers, as torch's
  ``MultiStepLR`` stepped per epoch);
* ``constant``.

``warmup_epochs`` > 0 puts a linear warm-up from ``lr * warmup_start`` to ``lr`` in front.
``lr_step="epoch"`` holds the value of an epoch's first step for the whole epoch (the seeds that
step their scheduler once per epoch, e.g. SSAM's); ``"iteration"`` changes it every step.

The factor depends only on the step index and the config, so a resumed run (LambdaLR's saved
``last_epoch``) continues on the same curve, and an extended run (more epochs) continues from
its step on the curve recomputed for the new total.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from samlab.train.classify.config import ClassifyConfig

__all__ = ["lr_at", "lr_factor"]


def lr_factor(config: ClassifyConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """``factor(step)``: the learning rate of step ``step`` (0-based) divided by ``config.lr``."""
    total = steps_per_epoch * config.epochs
    warm = round(config.warmup_epochs * steps_per_epoch)
    floor = config.lr_min / config.lr

    def factor(step: int) -> float:
        if config.lr_step == "epoch":
            step = (step // steps_per_epoch) * steps_per_epoch
        if step < warm:
            return config.warmup_start + (1.0 - config.warmup_start) * step / warm
        if config.lr_schedule == "step":
            progress = min(step / total, 1.0)
            return config.lr_gamma ** sum(progress >= m for m in config.lr_milestones)
        if config.lr_schedule == "multistep":
            epoch = step / steps_per_epoch
            return config.lr_gamma ** sum(epoch >= m for m in config.lr_milestone_epochs)
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        if config.lr_schedule == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.lr_schedule == "linear":
            return 1.0 - (1.0 - floor) * progress
        return 1.0

    return factor


def lr_at(config: ClassifyConfig, steps_per_epoch: int, step: int) -> float:
    """The learning rate of step ``step``."""
    return config.lr * lr_factor(config, steps_per_epoch)(step)
