"""Sharpness of a trained forecaster: its top Hessian eigenvalue, measured once per run.

The eigenvalue itself is :func:`landscape.curvature.hessian_top_eigenvalue` (Lanczos on a
:class:`landscape.curvature.HessianOperator`, any model); :func:`run_top_eigenvalue` applies it
to the best checkpoint of a finished :func:`samlab.train.forecast.train_forecaster` run and
stores the value with the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from landscape.curvature import HessianEigen, hessian_top_eigenvalue
from landscape.io import atomic_write
from samlab.datasets.timeseries import ForecastData, load_forecast_data
from samlab.train.checkpoint import load_checkpoint
from samlab.train.forecast import ForecastConfig, build_forecaster, forecast_batches
from samlab.train.forecast.loop import read_result

__all__ = ["METHOD", "HessianEigen", "hessian_top_eigenvalue", "run_top_eigenvalue"]

#: how ``run_top_eigenvalue`` measured a stored value (older values are measured again)
METHOD = "Lanczos, relative Ritz residual <= 1e-3"


def run_top_eigenvalue(
    run_dir, *, windows: int = 1024, iters: int = 30, data: ForecastData | None = None
) -> float:
    """λ_max of a finished :func:`samlab.train.forecast.train_forecaster` run: its best
    checkpoint (``run_dir/best.pt``, config included) on the first ``windows`` training windows.

    Stored in ``run_dir/result.json`` as ``lambda_max`` (with ``lambda_max_windows``) and read
    back from there on later calls, so each run is measured once; the file is replaced
    atomically (:func:`landscape.io.atomic_write`), so a kill never leaves it truncated. The
    data must be that of the run (its ``data_sha256``). ``data``: the run's
    :class:`~samlab.datasets.timeseries.ForecastData` if already loaded.
    """
    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        raise FileNotFoundError(f"{result_path} is missing: the run has not finished")
    result = read_result(result_path)
    if (
        "lambda_max" in result
        and result.get("lambda_max_windows") == windows
        and result.get("lambda_max_method") == METHOD
    ):
        return float(result["lambda_max"])
    config = ForecastConfig.from_dict(result["config"])
    if data is None:
        data = load_forecast_data(config.dataset, config.horizon, seq_len=config.seq_len,
                                  data_dir=config.data_dir, path=config.data_path)  # fmt: skip
    recorded = result.get("data_sha256")
    if recorded is not None and data.data_sha256 and recorded != data.data_sha256:
        raise ValueError(
            f"{result_path} was computed on other data than {data.path} reads now "
            f"(data_sha256 {recorded[:12]}... against {data.data_sha256[:12]}...); measure "
            "with the run's own data"
        )
    model = build_forecaster(config, data.n_channels)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    batches = forecast_batches(data.train, windows)
    eig = hessian_top_eigenvalue(model, batches, iters=iters, tol=1e-3)
    result.update(lambda_max=eig.eigenvalue, lambda_max_windows=windows, lambda_max_method=METHOD)
    atomic_write(result_path, json.dumps(result, indent=2) + "\n")
    return eig.eigenvalue
