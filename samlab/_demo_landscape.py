"""``samlab._demo_landscape:digits_eval_data``: the data factory name of samlab 0.1.0's surfaces.

Surface files that ``make demo`` wrote with samlab 0.1.0 record ``--data
samlab._demo_landscape:digits_eval_data`` (provenance ``data_factory``, part of a surface's
identity), so resuming or recomputing such a file with ``python -m landscape surface`` names the
factory as recorded. It is :func:`samlab.datasets.digits_eval_data`; the demo's landscape section
is :mod:`samlab.demo.landscape_section`.
"""

import warnings

from samlab.datasets import digits_eval_data

__all__ = ["digits_eval_data"]

# A FutureWarning, not a DeprecationWarning: it is meant for whoever types the factory name on
# the landscape command line (Python hides DeprecationWarnings raised during an import there).
warnings.warn(
    "samlab._demo_landscape is deprecated and will be removed in the next release: the data "
    "factory is samlab.datasets:digits_eval_data (the same function)",
    FutureWarning,
    stacklevel=2,
)
