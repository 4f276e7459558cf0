"""Evaluating a model at points of a direction grid: :class:`SurfaceEvaluator` and its data.

The evaluator (``evaluator.py``) is composed of its frozen settings (``spec.py``), the
evaluation data (``data.py``), the moved weights (``weights.py``), the metrics (``stats.py``),
the centre check (``center.py``), the provenance (``provenance.py``) and one evaluation path
chosen at construction (the ``paths`` subpackage).
"""

from landscape.evaluate.center import CENTER_TOLERANCE
from landscape.evaluate.data import as_tensors
from landscape.evaluate.evaluator import SurfaceEvaluator
from landscape.evaluate.provenance import (
    DATA_DIGEST_SCHEME,
    data_sha256,
    hash_indices,
    hash_tensors,
)
from landscape.evaluate.spec import BN_MODES, LOSSES, MODES, ProbeSettings
from landscape.evaluate.stats import standard_error

__all__ = [
    "BN_MODES",
    "DATA_DIGEST_SCHEME",
    "CENTER_TOLERANCE",
    "LOSSES",
    "MODES",
    "ProbeSettings",
    "SurfaceEvaluator",
    "as_tensors",
    "data_sha256",
    "hash_indices",
    "hash_tensors",
    "standard_error",
]
