"""The Hessian section of ``make demo``: λ_max, trace, spectral density and worst-case sharpness
of the SGD and SAM models, on the same training digits as their surfaces.

For each model, on one fixed seeded subset (eval mode, mean cross-entropy; the surfaces'
protocol), with :mod:`landscape.curvature`:

* ``lambda_max``: the top Hessian eigenvalue by Lanczos (relative Ritz residual ``<= 1e-3``);
* ``trace`` and ``trace_se``: Hutch++ with its standard error;
* ``sharp_l2`` / ``sharp_err``: worst-case sharpness in an L2 ball of radius ``rho`` (SAM's own
  radius, an absolute step in weight space) over chunks of ``m = 128`` samples: the mean loss
  rise (and 0-1 error rise) that projected gradient ascent finds (Andriushchenko et al., 2023);
* the spectral density by stochastic Lanczos quadrature, drawn side by side
  (``hessian_spectra.png``).

The rows go to ``hessian.csv`` and are printed as a table.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape.curvature import (
    HessianOperator,
    hutchpp,
    spectral_density,
    top_eigenvalues,
    worst_case_sharpness,
)
from landscape.plot import save_spectrum
from samlab.datasets import digits_eval_data
from samlab.demo.tables import text_table, write_csv
from samlab.models import create_model
from samlab.train.checkpoint import load_checkpoint

#: the columns of ``hessian.csv`` (defined in the module docstring)
HESSIAN_COLUMNS = (
    "optimizer",
    "samples",
    "lambda_max",
    "trace",
    "trace_se",
    "rho",
    "sharp_l2",
    "sharp_err",
    "hvp_count",
    "seconds",
)


@dataclass(frozen=True)
class CurvatureSettings:
    """How much work the section does (products per model: about ``trace_products`` +
    ``density_probes * density_steps`` + the eigenvalue's 10-20)."""

    samples: int = 512  # the seeded subset of the landscapes' digits (their first ``samples``)
    trace_products: int = 30
    density_probes: int = 3
    density_steps: int = 24
    sharpness_steps: int = 10
    m: int = 128
    tol: float = 1e-3


FULL_CURVATURE = CurvatureSettings()
SMOKE_CURVATURE = CurvatureSettings(
    samples=128, trace_products=12, density_probes=2, density_steps=12, sharpness_steps=3
)


@dataclass(frozen=True)
class CurvatureResult:
    """What the section computed: one row per model, the densities, the files, the time."""

    rows: tuple[dict[str, Any], ...]
    densities: Mapping[str, Any]
    csv: Path
    figure: Path
    seconds: float


def curvature_row(
    name: str,
    checkpoint: Path,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    samples: int,
    subset_seed: int,
    rho: float,
    settings: CurvatureSettings,
) -> tuple[dict[str, Any], Any]:
    """The :data:`HESSIAN_COLUMNS` of one model and its spectral density."""
    start = time.perf_counter()
    model = create_model("digits_cnn")
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    op = HessianOperator(model, data, "crossentropy", subset=samples, subset_seed=subset_seed)
    eig = top_eigenvalues(op, 1, tol=settings.tol, seed=0)
    trace = hutchpp(op, settings.trace_products, seed=0)
    density = spectral_density(
        op, probes=settings.density_probes, steps=settings.density_steps, seed=0
    )
    sharp = worst_case_sharpness(
        model,
        data,
        rho,
        loss="crossentropy",
        m=settings.m,
        steps=settings.sharpness_steps,
        subset=samples,
        subset_seed=subset_seed,
        seed=0,
    )
    row = {
        "optimizer": name,
        "samples": samples,
        "lambda_max": eig.eigenvalues[0],
        "trace": trace.trace,
        "trace_se": trace.stderr,
        "rho": rho,
        "sharp_l2": sharp.loss_increase,
        "sharp_err": sharp.error_increase,
        "hvp_count": op.hvp_count,
        "seconds": time.perf_counter() - start,
    }
    return row, density


def format_curvature(rows: tuple[dict[str, Any], ...]) -> str:
    """The rows as a fixed-width text table."""
    columns = [("model", "<6"), ("lambda_max", ">11"), ("trace", ">10"), ("+-", ">8"),
               ("sharp_l2", ">10"), ("sharp_err", ">10"), ("HVPs", ">5"), ("s", ">6")]  # fmt: skip
    lines = [
        f"{r['optimizer']:<6} {r['lambda_max']:>11.4g} {r['trace']:>10.4g} {r['trace_se']:>8.2g} "
        f"{r['sharp_l2']:>10.3g} {r['sharp_err']:>10.3g} {r['hvp_count']:>5d} {r['seconds']:>6.1f}"
        for r in rows
    ]
    return text_table(columns, lines)


def run_curvature_section(
    output: str | Path,
    checkpoints: Mapping[str, Path],
    *,
    subset_seed: int,
    rho: float,
    data_kwargs: Mapping[str, Any] | None = None,
    settings: CurvatureSettings = FULL_CURVATURE,
) -> CurvatureResult:
    """λ_max, trace, sharpness and the spectral density of every model in ``checkpoints``;
    writes ``hessian.csv`` and ``hessian_spectra.png`` to ``output`` and prints the table."""
    start = time.perf_counter()
    output = Path(output)
    data = digits_eval_data(**dict(data_kwargs or {}))
    samples = min(settings.samples, len(data[1]))
    print(f"\nHessian of {', '.join(checkpoints)} on {samples} training digits (eval mode):")
    rows, densities = [], {}
    for name, checkpoint in checkpoints.items():
        row, density = curvature_row(
            name, Path(checkpoint), data, samples=samples, subset_seed=subset_seed, rho=rho,
            settings=settings,
        )  # fmt: skip
        rows.append(row)
        densities[name] = density
    csv_path = write_csv(output / "hessian.csv", HESSIAN_COLUMNS, rows)
    figure = save_spectrum(
        output / "hessian_spectra.png",
        list(densities.values()),
        [name.upper() for name in densities],
        log=True,
        overlay=False,
        title=f"Hessian spectral density (SLQ), {samples} training digits",
    )
    print(format_curvature(tuple(rows)))
    print(
        f"sharp_l2 / sharp_err: the loss / 0-1 error rise at the worst point of an L2 ball of "
        f"radius {rho:g} (m = {settings.m}); trace: Hutch++ with {settings.trace_products} products"
    )
    return CurvatureResult(
        rows=tuple(rows),
        densities=densities,
        csv=csv_path,
        figure=figure,
        seconds=time.perf_counter() - start,
    )
