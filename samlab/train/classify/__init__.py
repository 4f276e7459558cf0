"""A small, generic image-classification trainer: the same loop for SGD and every SAM variant.

``train_classifier(config, train_data, test_data)`` builds the model and the optimizer by
registry name, and for every batch builds a closure with :func:`samlab.train.make_closure`
and calls ``optimizer.step(closure)``. It never asks which optimizer it holds: the number of
passes and the sharpness gap are read from ``optimizer.last_step`` when the optimizer keeps
one (the SAM family does, see docs/closure-protocol.md), and a plain optimizer counts as one
pass per step.

The learning-rate schedule steps once per iteration (``"cosine"`` decays to 0 over all steps,
``"step"`` multiplies by ``lr_gamma`` at the ``lr_milestones`` fractions of training).
Evaluation runs under ``torch.no_grad()`` with ``model.eval()``; the test loss is the plain
cross-entropy (no label smoothing), the train loss is the training criterion at the point the
optimizer evaluates (``w`` for SGD and SAM, ``w + e`` for one-step SAM).

With ``output_dir`` the run writes ``config.json`` (the resolved config), ``metrics.csv`` (one
row per epoch, flushed as it goes) and ``checkpoint.pt`` (+ ``checkpoint.json``) after every
epoch; calling it again with the same config resumes from the checkpoint, bit for bit (the
data order of epoch ``e`` is drawn from a generator seeded by ``(seed, e)``), and a finished
run is loaded, not retrained.

Modules: ``config`` (:class:`ClassifyConfig`, :class:`EpochMetrics`, :class:`TrainResult`),
``loop`` (batches, learning-rate schedule, one epoch, evaluation), ``run``
(:func:`train_classifier` and its output folder) and ``__main__`` (``python -m
samlab.train.classify``: the digits from a shell).
"""

from samlab.train.classify.config import LR_SCHEDULES, ClassifyConfig, EpochMetrics, TrainResult
from samlab.train.classify.run import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, train_classifier

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LR_SCHEDULES",
    "METRICS_NAME",
    "ClassifyConfig",
    "EpochMetrics",
    "TrainResult",
    "train_classifier",
]
