"""Directions in weight space for loss surfaces (Li et al., NeurIPS 2018).

A loss surface is the loss along one or two directions through trained weights ``theta0``:
``f(a) = L(theta0 + a * dx)`` (1D) or ``f(a, b) = L(theta0 + a * dx + b * dy)`` (2D). Li, Xu,
Taylor, Studer and Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
draw ``dx`` and ``dy`` from N(0, 1) and *filter-normalise* them: every filter ``d[k]`` (a slice
along dim 0 of a weight tensor) is rescaled to the norm of the matching weight filter,
``d[k] <- d[k] * ||w[k]|| / ||d[k]||``, so that the picture does not depend on the scale
invariance of ReLU networks with BatchNorm.

This package builds such directions for any ``nn.Module``:

- :func:`random_direction` and :func:`create_directions`: random (filter, layer, weight or no
  normalisation), interpolation towards a second checkpoint, the plane through three;
- :func:`pca_directions`, :func:`load_trajectory` and :func:`project_trajectory`: the two
  principal directions of an optimisation path and the path projected onto them;
- :func:`save_directions` and :func:`load_directions`: HDF5 files with loss-landscape's groups
  ``xdirection/`` and ``ydirection/``, one dataset per parameter *name* (loss-landscape's
  position-indexed files are read too, given the model).

Every direction is a ``dict`` name -> float32 CPU tensor in the model's order, shaped like the
tensor it moves; the weights at a grid point are ``theta0 + x * dx (+ y * dy)``.

.. note::
   Where samlab deviates from tomgoldstein/loss-landscape (snapshot 64ef4d5):

   - the defaults are ``norm="filter"`` and ``ignore="biasbn"`` (the paper's setting);
     loss-landscape's empty defaults give raw N(0, 1) weight directions and set every 1-D
     entry equal to the weights themselves;
   - the ``seed`` is honoured and recorded (loss-landscape hard-codes 123, so ``--idx``
     repeats the same direction);
   - directions are stored by parameter name, not by position, so a file from another
     architecture is rejected instead of silently mis-applied;
   - ``dir_type="states"`` never moves integer buffers (``num_batches_tracked``), and tied
     tensors appear once;
   - the second direction can be made orthogonal to the first (``orthogonalize=True``);
     loss-landscape only prints their cosine.

``h5py`` is imported inside the functions that need it.

The code: :mod:`~landscape.directions.value` (the :class:`Directions` value,
:func:`direction_targets`, option names), :mod:`~landscape.directions.create` (random
directions, directions of a surface), :mod:`~landscape.directions.normalise` (normalisation,
inner products, Gram-Schmidt), :mod:`~landscape.directions.states` (state_dicts from modules and
checkpoints), :mod:`~landscape.directions.pca` (trajectories, PCA, projection) and
:mod:`~landscape.directions.files` (direction files).
"""

from landscape.directions.create import create_directions, random_direction
from landscape.directions.files import SCHEMA_VERSION, load_directions, save_directions
from landscape.directions.pca import load_trajectory, pca_directions, project_trajectory
from landscape.directions.value import (
    DIR_TYPES,
    IGNORES,
    KINDS,
    NORMS,
    Directions,
    direction_targets,
)

__all__ = [
    "DIR_TYPES",
    "IGNORES",
    "KINDS",
    "NORMS",
    "SCHEMA_VERSION",
    "Directions",
    "create_directions",
    "direction_targets",
    "load_directions",
    "load_trajectory",
    "pca_directions",
    "project_trajectory",
    "random_direction",
    "save_directions",
]
