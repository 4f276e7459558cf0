"""Plots of loss surfaces: contours, heat maps, 3D surfaces, 1D curves and trajectories.

Every function takes a :class:`~landscape.grid.Surface` (or plain arrays), draws on the
``ax`` it is given (a new figure when ``None``) and returns that Axes; matplotlib is imported
inside the functions. The options keep tomgoldstein/loss-landscape's meaning:

- ``vmin``, ``vmax``, ``vlevel``: contour levels ``np.arange(vmin, vmax, vlevel)`` and the
  colour limits of heat maps (loss-landscape's command-line defaults are 0.1, 10, 0.5; here
  ``None`` means "from the data": the finite minimum, the maximum and about 15 round levels);
- ``log``: logarithmic loss axis of 1D plots (log colour scale for heat maps,
  ``log(z + 0.1)`` for 3D surfaces, as ``h52vtp.py --log``);
- ``loss_max``: upper limit of the loss axis of 1D plots;
- ``xmin``, ``xmax``: x-axis limits of 1D plots (``None``: the data's; the command line maps
  loss-landscape's defaults -1 and 1 to ``None``, as its ``plot_1D.py`` does);
- ``zlim``: upper z limit of the 3D surface. loss-landscape's ``plot_2D.py`` parses
  ``--zlim`` (default 10) but never uses it; here it sets the limit (``None``: the data's).

:func:`plot_1d_repeat` overlays the 1D curves of several surfaces (e.g. along different random
directions) in one figure, as loss-landscape's ``plot_1d_loss_err_repeat``.

Points that are not ``done`` are NaN and left blank, so a partial surface plots.

Noise floor: every point's loss is an estimate with a standard error (``<metric>_se``, from
the per-batch means). Contour levels closer together than twice the median standard error
cannot be told apart from noise: :func:`plot_contour` keeps levels at least that far apart
solid and draws the ones in between dashed and grey, with a legend entry giving the floor;
:func:`plot_1d` shades a band of ``band`` (default 2) standard errors around each curve.

The code: :mod:`~landscape.plot.line` (the 1D plots), :mod:`~landscape.plot.plane` (contours,
heat maps, 3D surfaces, trajectories), :mod:`~landscape.plot.figures` (the standard figure set,
:func:`plot_all`) and :mod:`~landscape.plot.grid` (what every plot shares: values, levels,
labels, :func:`noise_floor`). :mod:`~landscape.plot.spectrum` draws Hessian spectra: SLQ
densities side by side or overlaid (:func:`plot_density`, :func:`save_spectrum`) and the
convergence of eigenvalue and trace estimates (:func:`plot_convergence`);
:mod:`~landscape.plot.eigmap` draws Hessian eigenvalue maps (:func:`plot_eig_ratio`, the heat
map of ``|min_eig / max_eig|``, and :func:`plot_max_eig`, contours of ``max_eig``);
:mod:`~landscape.plot.sharpness` draws sharpness measures against the radius
(:func:`plot_sharpness`, :func:`save_sharpness`).
"""

from landscape.plot.eigmap import plot_eig_ratio, plot_max_eig
from landscape.plot.figures import plot_all, save_figure
from landscape.plot.grid import noise_floor
from landscape.plot.line import plot_1d, plot_1d_repeat
from landscape.plot.plane import plot_contour, plot_heatmap, plot_surface_3d, plot_trajectory
from landscape.plot.sharpness import plot_sharpness, save_sharpness
from landscape.plot.spectrum import plot_convergence, plot_density, save_spectrum

__all__ = [
    "noise_floor",
    "plot_1d",
    "plot_1d_repeat",
    "plot_all",
    "plot_contour",
    "plot_convergence",
    "plot_density",
    "plot_eig_ratio",
    "plot_heatmap",
    "plot_max_eig",
    "plot_sharpness",
    "plot_surface_3d",
    "plot_trajectory",
    "save_figure",
    "save_sharpness",
    "save_spectrum",
]
