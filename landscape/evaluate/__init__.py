"""Evaluating a model at points of a direction grid: :class:`SurfaceEvaluator` and its data."""

from landscape.evaluate.center import CENTER_TOLERANCE
from landscape.evaluate.data import as_tensors, hash_indices
from landscape.evaluate.evaluator import BN_MODES, LOSSES, MODES, SurfaceEvaluator
from landscape.evaluate.stats import standard_error

__all__ = [
    "BN_MODES",
    "CENTER_TOLERANCE",
    "LOSSES",
    "MODES",
    "SurfaceEvaluator",
    "as_tensors",
    "hash_indices",
    "standard_error",
]
