"""Loss landscapes and curvature for any ``torch.nn.Module`` (DESIGN.md §2 and §5).

This package will hold:

- filter-normalised random directions and 1D/2D loss surfaces (Li et al., 2018), computed on
  one process or split over MPI ranks, returned as a frozen ``Surface`` value, saved to HDF5
  with the key names of tomgoldstein/loss-landscape and plotted as contours, heat maps, 3D
  surfaces and 1D curves;
- Hessian sharpness: Hessian-vector products, the top eigenvalues (power iteration, Lanczos),
  the trace (Hutchinson) and the spectral density, plus worst-case and average sharpness.

It depends on torch and numpy only; h5py, matplotlib, mpi4py, scipy and tqdm are imported inside
the functions that need them, and it never imports ``samlab`` (``tests/test_boundaries.py``).
Its contents arrive in a later issue; nothing is public yet.
"""

__all__: list[str] = []
