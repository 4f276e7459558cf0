"""The sharpness table of the demo's landscape section: one row per model, from its surfaces.

Sharpness, from the computed train loss ``L`` (the definitions, also printed under the table):

* ``curv_fd``: second finite difference of the 1D slice at the centre,
  ``(L(h) - 2 L(0) + L(-h)) / h^2`` with ``h`` the grid step (0.05);
* ``curv_fit``: ``2 c2`` of the least-squares quadratic ``c0 + c1 a + c2 a^2`` fitted to the 1D
  slice over ``|a| <= 0.1`` (5 points; at least the 3 points around 0 on coarser grids). The
  walls rise faster than a parabola (roughly exponentially), so a wider window gives a larger
  value (for the SGD model of ``make demo``: 1.07 at the 3 points, 1.24 over ``|a| <= 0.1``,
  2.9 over ``|a| <= 0.25``);
* ``rise1d``: loss rise at radius ``rho = 0.05`` along the x direction, ``(L(rho) + L(-rho)) / 2
  - L(0)`` (``rise1d_max``: the larger side), read from a cubic interpolating spline through the
  slice (exact at grid points; 0.05 is one with 41 points on [-1, 1]);
* ``rise2d``: mean over 72 points of the circle ``a^2 + b^2 = rho^2`` of the 2D surface, minus
  ``L(0)``, read from a bicubic interpolating spline through the grid (``rise2d_max``: the
  maximum over the circle).

``rho`` is in units of the filter-normalised directions: at ``a = rho`` every filter of the
network has moved by ``rho`` times its own norm, in a random direction. This is not SAM's
adversarial ``rho`` (an absolute step along the gradient), so these numbers measure the average
flatness around the minimum, not the worst case SAM minimises (``mean_sharpness_gap`` in
``summary.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape.curvature import FIT_WINDOW, sharpness_1d, sharpness_2d
from samlab.demo.tables import text_table, write_csv

#: the columns of ``sharpness.csv`` (defined above)
SHARPNESS_COLUMNS = (
    "optimizer",
    "samples",
    "loss_center",
    "acc_center",
    "rho",
    "fd_step",
    "curv_fd",
    "curv_fit",
    "rise1d",
    "rise1d_max",
    "rise2d",
    "rise2d_max",
    "loss_2d_max",
)


def sharpness_row(name: str, surf_1d: Any, surf_2d: Any, rho: float, samples: int) -> dict:
    """The :data:`SHARPNESS_COLUMNS` of model ``name`` from its 1D slice and 2D surface."""
    row: dict[str, Any] = {"optimizer": name, "samples": samples, "rho": rho}
    row.update(sharpness_1d(surf_1d.x, surf_1d.metrics["train_loss"], rho))
    row.update(sharpness_2d(surf_2d.x, surf_2d.y, surf_2d.metrics["train_loss"], rho))
    centre = int(np.flatnonzero(np.isclose(surf_1d.x, 0.0, rtol=0.0, atol=1e-12))[0])
    row["acc_center"] = float(surf_1d.metrics["train_acc"][centre])
    return {key: row[key] for key in SHARPNESS_COLUMNS}


def slice_mismatch(surf_1d: Any, surf_2d: Any) -> float:
    """Largest |1D slice - 2D surface's y = 0 row| where their x coordinates coincide."""
    row = np.flatnonzero(np.isclose(surf_2d.y, 0.0, rtol=0.0, atol=1e-12))
    if row.size != 1:
        return math.nan
    worst = 0.0
    for j, xj in enumerate(surf_2d.x):
        match = np.flatnonzero(np.isclose(surf_1d.x, xj, rtol=0.0, atol=1e-9))
        if match.size:
            a = surf_1d.metrics["train_loss"][match[0]]
            b = surf_2d.metrics["train_loss"][row[0], j]
            worst = max(worst, abs(float(a) - float(b)))
    return worst


def write_sharpness(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``sharpness.csv`` with :data:`SHARPNESS_COLUMNS`, one row per model."""
    return write_csv(path, SHARPNESS_COLUMNS, rows, _six_digits)


def _six_digits(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


#: the printed table's column titles and their widths
SHARPNESS_HEADINGS = (
    ("optimizer", "<10"), ("L(0)", ">8"), ("acc(0)", ">7"), ("curv_fd", ">8"),
    ("curv_fit", ">8"), ("rise1d", ">9"), ("rise1d_max", ">10"), ("rise2d", ">9"),
    ("rise2d_max", ">10"), ("L2d_max", ">8"),
)  # fmt: skip


def format_sharpness(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sharpness table as fixed-width text, with the definitions underneath."""
    lines = []
    for r in rows:
        lines.append(
            f"{r['optimizer']:<10} {r['loss_center']:>8.4f} {r['acc_center']:>7.4f} "
            f"{r['curv_fd']:>8.4f} {r['curv_fit']:>8.4f} {r['rise1d']:>9.5f} "
            f"{r['rise1d_max']:>10.5f} {r['rise2d']:>9.5f} {r['rise2d_max']:>10.5f} "
            f"{r['loss_2d_max']:>8.3f}"
        )
    if rows:
        r = rows[0]
        lines += [
            f"train loss L on {r['samples']} training digits; directions filter-normalised "
            f"(rho = {r['rho']:g} moves every filter by {r['rho']:g} x its norm).",
            f"curv_fd = (L(h) - 2L(0) + L(-h)) / h^2 with h = {r['fd_step']:.4g} (1D slice); "
            f"curv_fit = 2 c2 of a quadratic fitted over |a| <= {max(FIT_WINDOW, r['fd_step']):g}.",
            "rise1d = (L(rho) + L(-rho)) / 2 - L(0) on the 1D slice (cubic spline; max: worse "
            "side); rise2d = mean (max) of L - L(0) on the circle |(a, b)| = rho of the 2D "
            "surface (bicubic spline, 72 angles).",
        ]
    return text_table(SHARPNESS_HEADINGS, lines)
