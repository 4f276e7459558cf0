"""Image classification with SGD and every SAM variant: one loop, resumable runs, a CLI.

``train_classifier(config, train_data, test_data)`` builds the model and the optimizer by
registry name, and for every batch builds a closure with :func:`samlab.train.make_closure` and
calls ``optimizer.step(closure)``. It never asks which optimizer it holds: the number of passes
and the sharpness gap are read from ``optimizer.last_step`` when the optimizer keeps one (the SAM
family does, see docs/closure-protocol.md), and a plain optimizer counts as one pass per step.

Learning-rate schedules (cosine, linear, step, multistep; linear warm-up; per iteration or per
epoch), label smoothing, weight decay, gradient clipping, AMP (bf16; fp16 with a GradScaler on
CUDA), DDP under ``torchrun`` (global or per-worker perturbation, SyncBatchNorm), static sparse
weights (magnitude or ERK masks re-applied after every step). Evaluation runs under
``torch.no_grad()`` with ``model.eval()``; the test loss is the plain cross-entropy.

With ``output_dir`` the run writes ``config.json``, ``metrics.csv`` (one row per epoch),
``metrics.json``, ``last.pt`` after every epoch and ``best.pt``; calling it again with the same
config resumes from ``last.pt`` (or a samlab 0.2 ``checkpoint.pt``), bit for bit (the data order
of epoch ``e`` is drawn from a generator seeded by ``(seed, e)``), and a finished run is loaded,
not retrained; ``extend=True`` continues it to more epochs. One run per folder
(:func:`samlab.train.locks.run_folder_lock`), every file written atomically.

Modules: ``config`` (:class:`ClassifyConfig`, :class:`EpochMetrics`, :class:`TrainResult`),
``schedules`` (the learning rate per step), ``batches`` (data on the device, DDP shards),
``loop`` (one step for every optimizer, one epoch, evaluation), ``sparse`` (weight masks),
``distributed`` (torchrun), ``digest`` (``data_sha256``: what data a run was trained on; a
resume on other data is refused), ``inputs`` (a checkpoint as ``landscape``'s named inputs
``classifier`` / ``samlab_images``), ``checkpointing`` (the output folder, resume rules), ``run``
(:func:`train_classifier`), ``sharpness`` (λ_max and trace of a final model), ``cli`` (``python -m
samlab.train.classify`` / ``samlab-classify``: samlab's and the seed projects' flags, presets,
several seeds).
"""

from samlab.train.classify.checkpointing import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LEGACY_CHECKPOINT_NAME,
    METRICS_JSON_NAME,
    METRICS_NAME,
)
from samlab.train.classify.config import (
    AMP_MODES,
    LR_SCHEDULES,
    LR_STEPS,
    WEIGHT_MASKS,
    ClassifyConfig,
    EpochMetrics,
    TrainResult,
    is_classify_config,
)
from samlab.train.classify.run import train_classifier
from samlab.train.classify.schedules import lr_at, lr_factor

__all__ = [
    "AMP_MODES",
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LEGACY_CHECKPOINT_NAME",
    "LR_SCHEDULES",
    "LR_STEPS",
    "METRICS_JSON_NAME",
    "METRICS_NAME",
    "WEIGHT_MASKS",
    "ClassifyConfig",
    "EpochMetrics",
    "TrainResult",
    "lr_at",
    "lr_factor",
    "is_classify_config",
    "train_classifier",
]
