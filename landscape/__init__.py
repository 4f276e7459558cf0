"""Loss landscapes for any ``torch.nn.Module`` (DESIGN.md §2 and §5).

- :mod:`landscape.directions`: seeded, filter-normalised random directions (Li et al., NeurIPS
  2018), directions to other checkpoints, PCA of a trajectory; HDF5 by parameter name.
- :mod:`landscape.grid`: the frozen :class:`Surface` (loss and accuracy, or MSE and MAE, with
  per-point standard errors, a ``done`` mask and provenance) and its grid coordinates.
- :mod:`landscape.evaluate`: :class:`SurfaceEvaluator` and its evaluation paths (eagerly,
  compiled with BatchNorm folded, or K points per forward with ``vmap``).
- :mod:`landscape.compute`: whole 1D/2D surfaces (:func:`surface_1d`, :func:`surface_2d`) and the
  points a surface file still lacks (:func:`compute_surface`), on one process or MPI ranks.
- :mod:`landscape.mpi`: the surface over MPI ranks (dynamic chunks, rank 0 writes) and launching
  a command on N ranks.
- :mod:`landscape.curvature`: Hessian eigenvalues, traces, spectral densities and eigenvalue
  maps on one Hessian-vector-product engine; sharpness measures; λ_max during training.
- :mod:`landscape.io`: HDF5 with tomgoldstein/loss-landscape's keys, resume, VTK export.
- :mod:`landscape.plot`: contours, heat maps, 3D surfaces, 1D curves, trajectories.
- :mod:`landscape.devices`: the device rule of every command line (:func:`resolve_device`).
- :mod:`landscape.cli` and ``python -m landscape``: the command line (``surface``, ``plot``,
  ``project``, ``vtk``, ``hessian``, ``sharpness``).

It depends on torch and numpy only; h5py, matplotlib, mpi4py, scipy and tqdm are imported inside
the functions that need them, and it never imports ``samlab`` (``tests/test_boundaries.py``).

Example::

    import landscape
    dirs = landscape.create_directions(model, seed=0)            # filter / biasbn / weights
    surf = landscape.surface_2d(model, dirs, (inputs, targets), x=np.linspace(-1, 1, 21),
                                y=np.linspace(-1, 1, 21))
    landscape.plot.plot_contour(surf)
"""

from landscape.compute import compute_surface, format_rank_report, surface_1d, surface_2d
from landscape.devices import NO_CUDA_NOTE, resolve_device
from landscape.directions import (
    Directions,
    create_directions,
    direction_targets,
    load_directions,
    load_trajectory,
    pca_directions,
    project_trajectory,
    random_direction,
    save_directions,
)
from landscape.evaluate import SurfaceEvaluator, as_tensors
from landscape.grid import Surface, grid_coordinates
from landscape.io import (
    SurfaceWriter,
    export_vtp,
    load_surface,
    save_surface,
    surface_progress,
)

__all__ = [
    "NO_CUDA_NOTE",
    "Directions",
    "Surface",
    "SurfaceEvaluator",
    "SurfaceWriter",
    "as_tensors",
    "compute_surface",
    "create_directions",
    "direction_targets",
    "export_vtp",
    "format_rank_report",
    "grid_coordinates",
    "load_directions",
    "load_surface",
    "load_trajectory",
    "pca_directions",
    "project_trajectory",
    "random_direction",
    "resolve_device",
    "save_directions",
    "save_surface",
    "surface_1d",
    "surface_2d",
    "surface_progress",
]
