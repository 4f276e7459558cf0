"""Shared machinery of the SAM family: base optimizer, passes, AMP, state, observability.

The protocol is documented in ``docs/closure-protocol.md``. A subclass implements three hooks:

* ``_begin(groups)`` — before pass 1 (one-step SAM perturbs here); returns nothing.
* ``_first(groups) -> bool`` — after pass 1; perturbs and returns True when a second pass is
  needed.
* ``_finish(groups)`` — after the last pass and after the weights are restored; turns
  ``p.grad`` into the gradient the base optimizer should follow.
* ``_update()`` (optional) — ``_finish``, clipping and the base step; GSAM and one-step SAM
  override it to fuse the three into one compiled call.

The code: this module holds :class:`SAMBase`: construction and validation, param groups, the
implementation chosen per device, the subclass hooks and ``state_dict``. Its machinery lives in
its base classes, one private module each: the passes of a step (the closure and the manual
API, AMP unscaling; :mod:`samlab.optim._base_passes`, which also defines :func:`current_pass`,
re-exported here), the perturbation (:mod:`samlab.optim._base_perturb`) and the base
optimizer's step (:mod:`samlab.optim._base_update`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

import kernels
from kernels import compiled as _compiled
from samlab.optim._base_passes import _Passes, _ScalerView, current_pass
from samlab.optim._base_perturb import _Perturbation
from samlab.optim._base_update import _BaseUpdate

__all__ = ["SAMBase", "current_pass"]

_IMPLS = ("auto", *kernels.IMPLS)
#: "auto" compiles the CPU path only from this many parameter elements on: below it the
#: one-time compilation (30-130 s cold, seconds from inductor's disk cache) costs more than a
#: short run saves (ResNet-20, 0.27M: compiled SAM saves ~0.4 ms a step over foreach).
COMPILE_MIN_NUMEL = 2_000_000
#: torch.optim's C++ grouping of tensor lists (private; a Python set where it is missing)
_GROUP_BY_DEVICE_AND_DTYPE = getattr(torch._C, "_group_tensors_by_device_and_dtype", None)


def _check_nonnegative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


class SAMBase(_Passes, _Perturbation, _BaseUpdate, torch.optim.Optimizer):
    """Base class: wraps ``base_optimizer`` built on this optimizer's own ``param_groups``."""

    #: name used in error messages and state_dict checks
    method = "SAMBase"
    #: True when begin_step() perturbs before the first forward (one-step SAM)
    perturbs_before_first_pass = False

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        defaults: dict[str, Any],
        base_kwargs: dict[str, Any],
        *,
        max_grad_norm: float | None = None,
        impl: str = "auto",
    ) -> None:
        if isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{self.method}: base_optimizer must be an optimizer class such as "
                "torch.optim.SGD, not an instance; samlab builds it on its own param_groups "
                f"(pass its options as keywords, e.g. {self.method}(params, torch.optim.SGD, "
                "lr=0.1, momentum=0.9))"
            )
        if not (
            isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)
        ):
            raise TypeError(
                f"{self.method}: base_optimizer must be a torch.optim.Optimizer subclass, "
                f"got {base_optimizer!r}"
            )
        for key in ("rho", "eta", "alpha"):
            if key in defaults:
                _check_nonnegative(key, defaults[key])
        if "perturb_eps" in defaults and not defaults["perturb_eps"] > 0:
            raise ValueError(f"perturb_eps must be positive, got {defaults['perturb_eps']!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm!r}")
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        self.max_grad_norm = max_grad_norm
        self.impl = impl
        super().__init__(params, defaults)
        try:
            self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        except TypeError as err:
            raise ValueError(
                f"{self.method}: {base_optimizer.__name__} rejected the options "
                f"{sorted(base_kwargs)}: {err}"
            ) from err
        # One list of group dicts, shared: LR schedulers and per-group options reach both.
        self.param_groups = self.base_optimizer.param_groups
        for key, value in self.base_optimizer.defaults.items():
            self.defaults.setdefault(key, value)
        self.current_pass: str | None = None
        self.single_pass = False
        self.last_step: dict[str, Any] = {}
        self._step_index = 0
        # id(param) -> its backup (loop/foreach) or spare buffer (compiled path); keyed by id
        # because a Tensor's __hash__ is a Python call and this runs per parameter and step
        self._backups: dict[int, Tensor] = {}
        self._skip = False
        self._perturbed = False
        self.track_stats = False
        self._scaler_views: tuple[_ScalerView, _ScalerView] | None = None
        self._in_step = False
        # (param, its storage holding w) for params perturbed by swapping storages (compiled)
        self._swapped: list[tuple[Tensor, Tensor]] = []
        self._copied: list[list[Tensor]] = []  # perturbed in place, backed up by copy
        self._auto_cpu_impl: str | None = None
        self._lr_tensors: dict[int, Tensor] = {}  # per group: its lr as a 0-d float64 tensor
        self._sgd_first_step = False  # set by _sgd_plan: SGD has not created its buffers yet
        self._spare: tuple[tuple[int, ...], list[Tensor]] | None = None  # see _flat_spare

    # ----------------------------------------------------------------- param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in ("rho", "eta", "gsam_alpha", "looksam_alpha"):
            if key in param_group:
                _check_nonnegative(f"{key} (param group)", param_group[key])
        if "perturb_eps" in param_group and not param_group["perturb_eps"] > 0:
            raise ValueError(f"perturb_eps must be positive, got {param_group['perturb_eps']!r}")
        super().add_param_group(param_group)
        self._auto_cpu_impl = None
        base = getattr(self, "base_optimizer", None)
        if base is not None:
            group = self.param_groups.pop()
            base.add_param_group(group)

    # ----------------------------------------------------------------- helpers
    def _impl_for(self, device: torch.device) -> str:
        if self.impl != "auto":
            return self.impl
        if device.type == "cuda":
            return "foreach"
        if self._auto_cpu_impl is None:
            numel = sum(p.numel() for g in self.param_groups for p in g["params"])
            big = numel >= COMPILE_MIN_NUMEL
            # below the threshold (or without a compiler): torch._foreach_*, which measured
            # 3-9% faster than the loop on CPU for 2k-0.3M parameter models (torch 2.14)
            compiled = big and _compiled.compiler_available()
            self._auto_cpu_impl = "compiled" if compiled else "foreach"
        return self._auto_cpu_impl

    def _compile_failed(self, err: Exception) -> None:
        warnings.warn(
            f"{self.method}: torch.compile failed ({type(err).__name__}: {err}); falling back "
            "to the eager per-tensor loop (impl='loop')",
            RuntimeWarning,
            stacklevel=3,
        )
        self.impl = "loop"
        self._auto_cpu_impl = "loop"

    def _grouped(self) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]:
        """(group, params with a gradient, their gradients) for every group."""
        out = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            out.append((group, params, [p.grad for p in params]))
        return out

    def _all_params_with_grad(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    def _first_device(self) -> torch.device:
        return self.param_groups[0]["params"][0].device

    def _uniform(
        self, tensors: list[Tensor], grads: list[Tensor] = ()
    ) -> tuple[torch.device, torch.dtype] | None:
        """(device, dtype) shared by all ``tensors`` and ``grads`` when the compiled path
        applies to their device and ``grads`` are dense (sparse gradients of
        ``nn.Embedding(sparse=True)`` have no compiled twin); None otherwise (the callers
        then take the general path)."""
        first = tensors[0]
        device, dtype = first.device, first.dtype
        if self._impl_for(device) != "compiled":
            return None
        everything = [*tensors, *grads]
        if _GROUP_BY_DEVICE_AND_DTYPE is not None:
            if len(_GROUP_BY_DEVICE_AND_DTYPE([everything], False)) != 1:
                return None
        elif len({(t.device, t.dtype) for t in everything}) != 1:
            return None
        if any(g.is_sparse for g in grads):
            return None
        return device, dtype

    # ----------------------------------------------------------------- subclass hooks
    def _begin(self) -> None:
        self.current_pass = "clean"
        self.single_pass = False

    def _first(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        """Default: p.grad already holds the gradient to follow (g at w + e)."""

    def _update(self) -> None:
        """After the weights are restored: the final gradient (``_finish``), clipping, the
        base step. Subclasses may fuse the three on the compiled path."""
        self._finish()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._all_params_with_grad(), self.max_grad_norm)
        self._base_step()

    # ----------------------------------------------------------------- state
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["base_optimizer"] = self.base_optimizer.state_dict()
        sd["samlab"] = {
            "method": self.method,
            "base": type(self.base_optimizer).__name__,
            "step": self._step_index,
            **self._extra_state(),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or "samlab" not in state_dict:
            raise ValueError(
                f"{self.method}.load_state_dict: this is not a samlab SAM-family state_dict "
                "(no 'samlab' entry); a plain torch optimizer's state_dict belongs to "
                "optimizer.base_optimizer.load_state_dict"
            )
        saved = state_dict["samlab"].get("method")
        if saved != self.method:
            raise ValueError(
                f"{self.method}.load_state_dict: the state_dict was saved from {saved}; build "
                f"a {saved} optimizer to load it"
            )
        base = state_dict["samlab"].get("base", type(self.base_optimizer).__name__)
        if base != type(self.base_optimizer).__name__:
            raise ValueError(
                f"{self.method}.load_state_dict: the state_dict was saved with base optimizer "
                f"{base}, this one wraps {type(self.base_optimizer).__name__}; build "
                f"{self.method}(params, torch.optim.{base}, ...) to load it"
            )
        self._check_shapes(state_dict)
        self._load_extra_state(state_dict["samlab"])  # validates method knobs before any change
        plain = {k: v for k, v in state_dict.items() if k not in ("base_optimizer", "samlab")}
        super().load_state_dict(plain)
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        self.base_optimizer.param_groups = self.param_groups
        self._step_index = int(state_dict["samlab"]["step"])
        self._backups.clear()
        self._spare = None

    def _check_shapes(self, state_dict: dict[str, Any]) -> None:
        """Every saved per-parameter tensor must have its parameter's shape."""
        params = [p for group in self.param_groups for p in group["params"]]
        saved_groups = state_dict.get("param_groups", [])
        n_saved = sum(len(g["params"]) for g in saved_groups)
        if n_saved != len(params) or len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{self.method}.load_state_dict: the state_dict holds {n_saved} parameters in "
                f"{len(saved_groups)} groups, this optimizer {len(params)} in "
                f"{len(self.param_groups)}; build the optimizer on the same model and groups"
            )
        index = {i: p for i, p in enumerate(params)}
        states = [state_dict.get("state", {}), state_dict["base_optimizer"].get("state", {})]
        for state in states:
            for i, entry in state.items():
                p = index.get(i)
                for key, value in entry.items():
                    if isinstance(value, Tensor) and value.dim() > 0 and value.shape != p.shape:
                        raise ValueError(
                            f"{self.method}.load_state_dict: saved state {key!r} of parameter "
                            f"{i} has shape {tuple(value.shape)}, the parameter "
                            f"{tuple(p.shape)}; the state_dict comes from another model"
                        )

    def __repr__(self) -> str:
        return f"{self.method}(base_optimizer={self.base_optimizer!r})"
