"""The checks of a SAM-family optimizer: its options, its param groups, a state_dict to load.

Every check raises before anything changes, with a message that names what to do instead:
:func:`check_options` in the constructor, :func:`check_group` in ``add_param_group``,
:func:`check_state_dict` in ``load_state_dict`` (a state_dict that another method, another
base optimizer or another model saved).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["check_group", "check_options", "check_state_dict"]


def _check_nonnegative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def check_options(
    method: str,
    base_optimizer: Any,
    defaults: dict[str, Any],
    max_grad_norm: float | None,
) -> None:
    """The constructor's: a base optimizer class (not an instance), non-negative ``rho``,
    ``eta`` and ``alpha``, a positive ``perturb_eps`` and ``max_grad_norm``."""
    if isinstance(base_optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{method}: base_optimizer must be an optimizer class such as "
            "torch.optim.SGD, not an instance; samlab builds it on its own param_groups "
            f"(pass its options as keywords, e.g. {method}(params, torch.optim.SGD, "
            "lr=0.1, momentum=0.9))"
        )
    if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
        raise TypeError(
            f"{method}: base_optimizer must be a torch.optim.Optimizer subclass, "
            f"got {base_optimizer!r}"
        )
    for key in ("rho", "eta", "alpha"):
        if key in defaults:
            _check_nonnegative(key, defaults[key])
    if "perturb_eps" in defaults and not defaults["perturb_eps"] > 0:
        raise ValueError(f"perturb_eps must be positive, got {defaults['perturb_eps']!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm!r}")


def check_group(param_group: dict[str, Any]) -> None:
    """A param group's own ``rho``, ``eta`` and method weights (non-negative) and
    ``perturb_eps`` (positive)."""
    for key in ("rho", "eta", "gsam_alpha", "looksam_alpha", "fsam_sigma", "damping"):
        if key in param_group:
            _check_nonnegative(f"{key} (param group)", param_group[key])
    for key in ("wsam_gamma", "fsam_lmbda"):  # weights in [0, 1)
        value = param_group.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{key} (param group) must be in [0, 1), got {value!r}")
    if "num_data" in param_group and not param_group["num_data"] > 0:
        got = param_group["num_data"]
        raise ValueError(f"num_data (param group) must be positive, got {got!r}")
    if "perturb_eps" in param_group and not param_group["perturb_eps"] > 0:
        raise ValueError(f"perturb_eps must be positive, got {param_group['perturb_eps']!r}")


def check_state_dict(
    state_dict: Any, *, method: str, base: str, param_groups: list[dict[str, Any]]
) -> None:
    """Raise ``ValueError`` unless ``state_dict`` was saved by a ``method`` optimizer over a
    ``base`` optimizer on parameters of the shapes in ``param_groups``."""
    if not isinstance(state_dict, dict) or "samlab" not in state_dict:
        raise ValueError(
            f"{method}.load_state_dict: this is not a samlab SAM-family state_dict "
            "(no 'samlab' entry); a plain torch optimizer's state_dict belongs to "
            "optimizer.base_optimizer.load_state_dict"
        )
    saved = state_dict["samlab"].get("method")
    if saved != method:
        raise ValueError(
            f"{method}.load_state_dict: the state_dict was saved from {saved}; build "
            f"a {saved} optimizer to load it"
        )
    saved_base = state_dict["samlab"].get("base", base)
    if saved_base != base:
        raise ValueError(
            f"{method}.load_state_dict: the state_dict was saved with base optimizer "
            f"{saved_base}, this one wraps {base}; build "
            f"{method}(params, torch.optim.{saved_base}, ...) to load it"
        )
    _check_shapes(state_dict, method, param_groups)


def _check_shapes(
    state_dict: dict[str, Any], method: str, param_groups: list[dict[str, Any]]
) -> None:
    """Every saved per-parameter tensor must have its parameter's shape."""
    params = [p for group in param_groups for p in group["params"]]
    saved_groups = state_dict.get("param_groups", [])
    n_saved = sum(len(g["params"]) for g in saved_groups)
    if n_saved != len(params) or len(saved_groups) != len(param_groups):
        raise ValueError(
            f"{method}.load_state_dict: the state_dict holds {n_saved} parameters in "
            f"{len(saved_groups)} groups, this optimizer {len(params)} in "
            f"{len(param_groups)}; build the optimizer on the same model and groups"
        )
    index = {i: p for i, p in enumerate(params)}
    states = [state_dict.get("state", {}), state_dict["base_optimizer"].get("state", {})]
    for state in states:
        for i, entry in state.items():
            p = index.get(i)
            for key, value in entry.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise ValueError(
                        f"{method}.load_state_dict: saved state {key!r} of parameter "
                        f"{i} has shape {tuple(value.shape)}, the parameter "
                        f"{tuple(p.shape)}; the state_dict comes from another model"
                    )
