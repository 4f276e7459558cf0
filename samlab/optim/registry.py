"""The optimizer registry: data, one entry per optimizer, one ``create_optimizer``.

Trainers never ask which class they hold: they read capability flags from the entry
(``passes``; ``refreshes_masks``: call ``optimizer.refresh_masks(model, loss_fn, batches)``
at the start of every epoch where ``optimizer.masks_due(epoch)``) and call
``optimizer.step(closure)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from samlab.optim.bsam import BSAM
from samlab.optim.friendlysam import FriendlySAM
from samlab.optim.gsam import GSAM
from samlab.optim.looksam import LookSAM
from samlab.optim.onestep import OneStepSAM
from samlab.optim.sam import ASAM, SAM
from samlab.optim.ssamd import SSAMD
from samlab.optim.ssamf import SSAMF
from samlab.optim.wsam import WSAM

__all__ = [
    "BASE_OPTIMIZERS",
    "OptimInfo",
    "create_optimizer",
    "get_optimizer_info",
    "list_optimizers",
]

#: base optimizers that the SAM family can wrap by name (``base="adam"``)
BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


@dataclass(frozen=True)
class OptimInfo:
    """One registry entry.

    Attributes:
        name: canonical name.
        factory: the class (a SAM-family wrapper or a torch optimizer).
        sam_family: True when ``factory`` wraps a base optimizer.
        passes: forward+backward passes per step: 1, 2, or "1-2" (LookSAM: 2 every k-th step).
        base: default base optimizer name for the SAM family; None for a SAM-family method
            that is its own optimizer (bSAM), which takes no ``base``.
        defaults: keyword defaults applied before the caller's keywords.
        description: one line with the paper.
        refreshes_masks: True when the optimizer has ``masks_due(epoch)`` and
            ``refresh_masks(model, loss_fn, batches, epoch=..., epochs=...)`` (sparse SAM),
            which trainers call at the start of each due epoch.
        samples_weights: True when the first pass of a step runs at a random sample of the
            weights (bSAM's posterior sample): ``step(closure)`` always evaluates the closure
            there and returns that loss (gradients computed before ``step`` are not reused);
            the optimizer has ``posterior_variance()`` and ``sampled_weights()``.
    """

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    sam_family: bool
    passes: int | str
    base: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    refreshes_masks: bool = False
    samples_weights: bool = False


_ENTRIES = (
    OptimInfo("sgd", torch.optim.SGD, False, 1, description="stochastic gradient descent"),
    OptimInfo("adam", torch.optim.Adam, False, 1, description="Adam (Kingma & Ba, 2015)"),
    OptimInfo("adamw", torch.optim.AdamW, False, 1, description="AdamW (Loshchilov & Hutter)"),
    OptimInfo("sam", SAM, True, 2, "sgd", description="SAM (Foret et al., ICLR 2021)"),
    OptimInfo("asam", ASAM, True, 2, "sgd", description="ASAM (Kwon et al., ICML 2021)"),
    OptimInfo("gsam", GSAM, True, 2, "sgd", description="GSAM (Zhuang et al., ICLR 2022)"),
    OptimInfo("looksam", LookSAM, True, "1-2", "sgd", description="LookSAM (Liu et al., 2022)"),
    OptimInfo(
        "onestep-sam", OneStepSAM, True, 1, "sgd", description="SAM.v2 / S2-SAM (Ji et al., 2024)"
    ),
    OptimInfo(
        "ssamf",
        SSAMF,
        True,
        2,
        "sgd",
        description="SSAM-F, Fisher-masked sparse SAM (Mi et al., NeurIPS 2022)",
        refreshes_masks=True,
    ),
    OptimInfo(
        "ssamd",
        SSAMD,
        True,
        2,
        "sgd",
        description="SSAM-D, dynamic-mask sparse SAM (Mi et al., NeurIPS 2022)",
        refreshes_masks=True,
    ),
    OptimInfo(
        "wsam",
        WSAM,
        True,
        2,
        "sgd",
        description="WSAM, weighted sharpness as a regularizer (Yue et al., KDD 2023)",
    ),
    OptimInfo(
        "friendlysam",
        FriendlySAM,
        True,
        2,
        "sgd",
        description="FriendlySAM / F-SAM (Li et al., CVPR 2024)",
    ),
    OptimInfo(
        "bsam",
        BSAM,
        True,
        2,
        None,
        description="bSAM, SAM as a relaxation of Bayes (Moellenhoff & Khan, ICLR 2023)",
        samples_weights=True,
    ),
)
_REGISTRY: dict[str, OptimInfo] = {info.name: info for info in _ENTRIES}

#: the seeds' spellings with a base optimizer: "name-base" for these bases ...
_NAME_BASE = {
    "sam": ("sgd", "adam", "adamw"),
    "asam": ("sgd", "adam"),
    "gsam": ("sgd", "adamw"),
    "looksam": ("sgd",),
    "ssamf": ("sgd", "adam", "adamw"),
    "ssamd": ("sgd", "adam", "adamw"),
    "wsam": ("sgd", "adam", "adamw"),
    "friendlysam": ("sgd", "adam", "adamw"),
}
#: ... and "base-name" for these
_BASE_NAME = {"sam": ("sgd", "adam", "adamw"), "asam": ("sgd",)}
#: seed spellings -> (canonical name, base optimizer)
_ALIASES: dict[str, tuple[str, str | None]] = {
    **{f"{name}-{base}": (name, base) for name, bases in _NAME_BASE.items() for base in bases},
    **{f"{base}-{name}": (name, base) for name, bases in _BASE_NAME.items() for base in bases},
    **dict.fromkeys(
        ("onestep", "one-step-sam", "sam-v2", "samv2", "s2-sam"), ("onestep-sam", None)
    ),
    **dict.fromkeys(("fsam", "f-sam", "friendly-sam"), ("friendlysam", None)),
    **dict.fromkeys(("bayesian-sam", "b-sam"), ("bsam", None)),
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def list_optimizers(*, aliases: bool = False) -> list[str]:
    """Canonical registry names (and the accepted aliases when ``aliases=True``)."""
    names = list(_REGISTRY)
    return names + sorted(_ALIASES) if aliases else names


def get_optimizer_info(name: str) -> OptimInfo:
    """The registry entry of ``name`` (canonical or alias)."""
    key = _normalise(name)
    key = _ALIASES.get(key, (key, None))[0]
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown optimizer {name!r}; known: {', '.join(list_optimizers())} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return _REGISTRY[key]


def _accepted(cls: type) -> set[str]:
    return {
        n
        for n, p in inspect.signature(cls.__init__).parameters.items()
        if n not in ("self", "params") and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


#: shared keywords that ``create_optimizer`` accepts for every name and drops where they have no
#: meaning, so one command line can switch optimizers: ``rho`` for one-pass optimizers, and
#: ``momentum`` for (base) optimizers without momentum (Adam, AdamW), as timm does.
COMMON_KEYWORDS = ("lr", "momentum", "weight_decay", "rho")


def _drop_meaningless(kwargs: dict[str, Any], cls: type, *, sam_family: bool) -> dict[str, Any]:
    out = dict(kwargs)
    if not sam_family:
        rho = out.pop("rho", None)
        if rho is not None and not (isinstance(rho, (int, float)) and rho >= 0):
            raise ValueError(f"rho must be a non-negative number, got {rho!r}")
    if "momentum" in out and "momentum" not in _accepted(cls):
        out.pop("momentum")
    return out


def create_optimizer(
    name: str, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], **kwargs: Any
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` on ``params``.

    SAM-family names wrap SGD unless ``base="adam"``/``"adamw"`` (or an alias such as
    ``sam-adam``) says otherwise (bSAM is its own optimizer and takes no ``base``); every
    other keyword goes to the wrapper or the base optimizer. A keyword that neither takes
    raises ``ValueError`` naming it. The shared keywords ``lr``, ``momentum``,
    ``weight_decay`` and ``rho`` are accepted for every name: ``rho`` is ignored by the
    one-pass optimizers (sgd, adam, adamw) and ``momentum`` by optimizers without momentum
    (Adam, AdamW, bSAM).
    """
    key = _normalise(name)
    alias_base = _ALIASES.get(key, (key, None))[1]
    info = get_optimizer_info(name)
    kwargs = {**info.defaults, **kwargs}
    base_name = kwargs.pop("base", None)
    if base_name is not None and not isinstance(base_name, str):
        got = base_name.__name__ if isinstance(base_name, type) else type(base_name).__name__
        raise TypeError(
            f"base must be a name from {sorted(BASE_OPTIMIZERS)}, got {got} "
            f"({'a class' if isinstance(base_name, type) else 'an instance'}); to wrap another "
            "optimizer class call the class directly, e.g. SAM(params, MyOptimizer, lr=...); an "
            "instance cannot be wrapped (samlab builds it on its own param_groups)"
        )
    if not info.sam_family:
        if base_name is not None:
            raise ValueError(f"'base' applies to the SAM family only, not to {info.name!r}")
        kwargs = _drop_meaningless(kwargs, info.factory, sam_family=False)
        unknown = set(kwargs) - _accepted(info.factory)
        if unknown:
            raise ValueError(
                f"{info.name} does not take {sorted(unknown)}; it takes "
                f"{sorted(_accepted(info.factory))}"
            )
        return info.factory(params, **kwargs)
    if info.base is None:  # its own optimizer (bSAM): no base to choose
        if base_name is not None:
            raise ValueError(
                f"{info.name} is its own optimizer and takes no 'base' (got {base_name!r}); "
                "its update rule is fixed by the paper"
            )
        kwargs = _drop_meaningless(kwargs, info.factory, sam_family=True)
        unknown = set(kwargs) - _accepted(info.factory)
        if unknown:
            raise ValueError(
                f"{info.name} does not take {sorted(unknown)}; it takes "
                f"{sorted(_accepted(info.factory))}"
            )
        return info.factory(params, **kwargs)
    if alias_base is not None and base_name is not None and _normalise(base_name) != alias_base:
        raise ValueError(f"{name!r} already names base {alias_base!r}; drop base={base_name!r}")
    base_name = _normalise(base_name or alias_base or info.base or "sgd")
    if base_name not in BASE_OPTIMIZERS:
        raise ValueError(f"unknown base {base_name!r}; choose from {sorted(BASE_OPTIMIZERS)}")
    base_cls = BASE_OPTIMIZERS[base_name]
    kwargs = _drop_meaningless(kwargs, base_cls, sam_family=True)
    known = _accepted(info.factory) | _accepted(base_cls)
    known.discard("base_optimizer")
    unknown = set(kwargs) - known
    if unknown:
        raise ValueError(
            f"{info.name} with base {base_name} does not take {sorted(unknown)}; it takes "
            f"{sorted(known)}"
        )
    return info.factory(params, base_cls, **kwargs)
