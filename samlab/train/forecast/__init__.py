"""Time-series forecasting trainer: SAMformer's protocol (Ilbert et al., ICML 2024).

One run = one (dataset, horizon, model, optimizer, seed). The protocol (notes/samformer.md §2-4):
look-back L=512, batch 32, Adam at the paper's per-dataset learning rate, SAM around it with
``rho`` (0.7 by default for SAMformer; ``rho=0`` / ``--no_sam`` is plain Adam, one pass per
step), up to 300 epochs, cosine warm restarts every 5 epochs down to 1e-6, early stopping on the
validation MSE with patience 5, the best-validation weights reloaded for the test, MSE and MAE
on the standardised scale.

Like every samlab trainer it builds a closure per batch and calls ``optimizer.step(closure)``;
Adam calls it once, SAM twice. With ``compile=True`` a model without buffers (SAMformer, the
Transformer) instead runs each step as one compiled graph (:class:`~samlab.train.FusedStep`: the
same update in about half the time of the eager SAM step on CPU). Each epoch ends with an atomic
``last.pt`` (model, optimizer, RNG, early-stopping state, history), so a killed run resumes
where it stopped and finishes bit for bit as an uninterrupted one; a finished run leaves
``result.json`` and is skipped.

Modules: ``config`` (:class:`ForecastConfig`), ``model`` (the model of a config, its evaluation),
``steps`` (the training step and epoch, eager or compiled), ``loop`` (:func:`train_forecaster`),
``result`` (:class:`ForecastResult`), ``seeds`` (the aggregate of an output folder's seeds) and
``__main__`` (the command line, ``python -m samlab.train.forecast`` or ``samlab-forecast``).
"""

from samlab.train.forecast.config import DEFAULT_SAM_RHO, FORECAST_MODELS, ForecastConfig
from samlab.train.forecast.loop import (
    cosine_restart_lr,
    forecast_optimizer,
    read_result,
    train_forecaster,
)
from samlab.train.forecast.model import build_forecaster, evaluate_forecaster, forecast_batches
from samlab.train.forecast.result import ForecastResult
from samlab.train.forecast.seeds import aggregate, finished_seeds, write_aggregate

__all__ = [
    "DEFAULT_SAM_RHO",
    "FORECAST_MODELS",
    "ForecastConfig",
    "ForecastResult",
    "aggregate",
    "finished_seeds",
    "read_result",
    "write_aggregate",
    "build_forecaster",
    "cosine_restart_lr",
    "evaluate_forecaster",
    "forecast_batches",
    "forecast_optimizer",
    "train_forecaster",
]
