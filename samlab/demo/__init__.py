"""``make demo``: SGD and seven SAM variants on scikit-learn's 8x8 digits, side by side.

    python -m samlab.demo --output results [--epochs N] [--smoke] [--threads T] [--fresh]
                                           [--no-landscape] [--no-forecast]

Every optimizer (SGD, SAM, ASAM, GSAM, LookSAM, one-step SAM, and sparse SAM: SSAM-F and
SSAM-D, half the entries perturbed, masks refreshed every epoch) trains the digits CNN
(:func:`samlab.models.digits_cnn`, BatchNorm statistics updated in the clean pass) from the
same initial weights, on the same batches, with the same learning-rate schedule, momentum,
weight decay and epochs; only the optimizer differs (:mod:`samlab.demo.comparison`). The run
writes, under ``--output``:

* ``summary.csv``: one row per optimizer (final/best test accuracy, final train loss, mean
  sharpness gap, passes per step, training seconds, seconds per epoch, seconds relative to
  SGD, CPU seconds, which stay meaningful when other jobs share the cores, and for sparse SAM
  the mean mask density, the mean effective radius and the total seconds of the mask
  refreshes, which the training seconds exclude; see
  :data:`~samlab.demo.comparison.SUMMARY_COLUMNS`), also printed as a table;
* ``learning_curves.png``: train loss and test accuracy per epoch, all eight optimizers;
* ``demo_config.json``: the shared settings and each optimizer's config;
* ``runs/<profile>/<optimizer>/``: each run's ``metrics.csv``, ``config.json`` and
  ``last.pt`` / ``best.pt``. Running the demo again with the same settings loads the finished runs
  instead of retraining them (``--fresh`` retrains).

Then the loss landscapes (:mod:`samlab.demo.landscape_section`; ``--no-landscape`` skips them):
for the final SGD and SAM models, a filter-normalised 2D surface (21 x 21 on [-1, 1]^2) and a 1D
slice (41 points) of the train loss on 1,024 training digits, computed on 2 MPI ranks by the
``landscape`` command line (one process when there is no ``mpiexec``), written to
``landscape/*.h5``; ``landscape_sgd_vs_sam.png`` (contours, 3D surfaces and 1D slices side by
side) and ``sharpness.csv`` (curvature of the 1D slice at the centre and the loss rise at radius
rho = 0.05, also printed). ``--smoke`` uses a 5 x 5 grid, a 7-point slice and 128 digits.

Time (printed at the end, with CPU seconds, which stay meaningful on shared cores): measured on
this repository's 2-core machine while other jobs kept its load average at 3-4, before the
SSAM-F and SSAM-D rows were added, the default demo took 155 s (149 CPU s): training 47 CPU s
on one core, the landscapes 90 s wall and 102 CPU s on 2 ranks, about a third of it the
start-up of the 4 MPI launches (torch imported by every rank). Not re-measured since; the two
sparse rows add their own training and refresh seconds, which the summary reports.
Last, SAMformer (:mod:`samlab.demo.forecast`; ``--no-forecast`` skips it): trained on the
embedded ETTh1 (H=96, the paper's protocol cut to 8 epochs) with SAM (rho 0.7) and without
(plain Adam: the paper's Transformer baseline); ``forecast_summary.csv`` (test MSE/MAE and the
top Hessian eigenvalue of each model) and ``forecast_etth1.png`` (forecasts and validation
curves).

Modules: :mod:`~samlab.demo.comparison` (the optimizer comparison), :mod:`~samlab.demo.cli`
(the command line), :mod:`~samlab.demo.landscape_section` (the landscape section),
:mod:`~samlab.demo.landscape_runs` (its ``landscape`` commands and files),
:mod:`~samlab.demo.sharpness` (its sharpness table), :mod:`~samlab.demo.landscape_figure` (its
figure), :mod:`~samlab.demo.forecast` (SAMformer).
"""

from samlab.demo.cli import main
from samlab.demo.comparison import (
    COMPARISON,
    SUMMARY_COLUMNS,
    Comparison,
    comparison_configs,
    plot_learning_curves,
    run_optimizer_comparison,
    write_summary,
)

__all__ = [
    "COMPARISON",
    "SUMMARY_COLUMNS",
    "Comparison",
    "comparison_configs",
    "main",
    "plot_learning_curves",
    "run_optimizer_comparison",
    "write_summary",
]
