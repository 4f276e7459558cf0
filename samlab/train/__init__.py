"""Training helpers: closures with the BatchNorm policy, checkpoints, trainers."""

from samlab.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from samlab.train.classify import ClassifyConfig, EpochMetrics, TrainResult, train_classifier
from samlab.train.closures import (
    BN_POLICIES,
    PERTURBATION_MODES,
    SAMClosure,
    bn_update_context,
    make_closure,
)
from samlab.train.fused_step import FusedStep

__all__ = [
    "BN_POLICIES",
    "ClassifyConfig",
    "EpochMetrics",
    "FusedStep",
    "TrainResult",
    "train_classifier",
    "PERTURBATION_MODES",
    "SAMClosure",
    "bn_update_context",
    "load_checkpoint",
    "make_closure",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
