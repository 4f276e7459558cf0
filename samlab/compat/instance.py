"""Seed optimizers take an already-built base optimizer *instance*; samlab's take a class."""

from __future__ import annotations

from typing import Any

import torch

from samlab.optim.base_step import BaseStep

__all__ = ["adopt_instance", "check_instance", "same_params"]


def check_instance(name: str, base_optimizer: Any) -> None:
    """``TypeError`` unless ``base_optimizer`` is a built ``torch.optim.Optimizer``."""
    if not isinstance(base_optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{name} (seed API) takes an already-built base optimizer instance, e.g. "
            f"torch.optim.SGD(model.parameters(), lr=0.1); for a class use samlab.optim.{name}"
        )


def same_params(name: str, params: Any, base_optimizer: torch.optim.Optimizer) -> None:
    """``ValueError`` unless ``params`` (tensors or groups; may be empty) are the base
    optimizer's parameters: the seeds use the base optimizer's groups and ignore ``params``."""
    given = []
    for item in params if params is not None else []:
        given.extend(item["params"] if isinstance(item, dict) else [item])
    held = {id(p) for g in base_optimizer.param_groups for p in g["params"]}
    if given and {id(p) for p in given} != held:
        raise ValueError(f"{name}: params must be the parameters of base_optimizer")


def adopt_instance(optimizer: Any, base_optimizer: torch.optim.Optimizer) -> None:
    """Make ``base_optimizer`` (built on the same param-group dicts, as the samlab optimizer was
    constructed from them) the one that steps: its state (momentum) is the run's and LR
    schedulers built on it see its steps."""
    optimizer.base_optimizer = base_optimizer
    optimizer.param_groups = base_optimizer.param_groups
    optimizer.base_step = BaseStep(base_optimizer, optimizer.dispatch)
