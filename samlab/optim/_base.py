"""Shared machinery of the SAM family: base optimizer, passes, AMP, state, observability.

The protocol is documented in ``docs/closure-protocol.md``. A subclass implements three hooks:

* ``_begin(groups)`` — before pass 1 (one-step SAM perturbs here); returns nothing.
* ``_first(groups) -> bool`` — after pass 1; perturbs and returns True when a second pass is
  needed.
* ``_finish(groups)`` — after the last pass and after the weights are restored; turns
  ``p.grad`` into the gradient the base optimizer should follow.
"""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

import kernels
from kernels import compiled as _compiled

__all__ = ["SAMBase", "current_pass"]

_CURRENT_PASS: contextvars.ContextVar[tuple[str | None, bool]] = contextvars.ContextVar(
    "samlab_current_pass", default=(None, False)
)
_STALE_MARK = "_samlab_stale_version"
_IMPLS = ("auto", *kernels.IMPLS)
#: "auto" compiles the CPU path only from this many parameter elements on: below it the
#: one-time compilation (about 5-20 s) costs more than a short run saves.
COMPILE_MIN_NUMEL = 2_000_000


def current_pass() -> str | None:
    """The pass that the innermost running ``step(closure)`` is in: "clean", "perturbed" or None.

    Lets a closure that has no reference to the optimizer apply a BatchNorm policy.
    """
    return _CURRENT_PASS.get()[0]


class _ScalerView:
    """A stand-in optimizer for ``GradScaler.unscale_``: one per pass, so that each pass's
    gradients are unscaled once and each pass's inf check is seen by ``scaler.update()``."""

    def __init__(self, param_groups: list[dict[str, Any]]) -> None:
        self.param_groups = param_groups


def _check_nonnegative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


class SAMBase(torch.optim.Optimizer):
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
        self._backups: dict[Tensor, Tensor] = {}
        self._skip = False
        self._perturbed = False
        self.track_stats = False
        self._scaler_views: tuple[_ScalerView, _ScalerView] | None = None
        self._in_step = False
        self._swapped: list[Tensor] = []  # perturbed by swapping storages (compiled path)
        self._copied: list[list[Tensor]] = []  # perturbed in place, backed up by copy
        self._auto_cpu_impl: str | None = None
        self._compiled_base_step = None

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
            self._auto_cpu_impl = "compiled" if big and _compiled.compiler_available() else "loop"
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
        self._compiled_base_step = None

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

    def _grads_are_fresh(self) -> bool:
        """True when some gradient was computed after the previous step ended.

        Gradients that changed only by being zeroed in place (``zero_grad(set_to_none=False)``)
        are not fresh: all-zero gradients mean no clean pass ran, so samlab runs it.
        """
        grads = [p.grad for p in self._all_params_with_grad()]
        if not any(getattr(g, _STALE_MARK, None) != g._version for g in grads):
            return False
        return any(bool(g.any()) for g in grads)  # stops at the first non-zero tensor

    def _mark_grads_stale(self) -> None:
        for p in self._all_params_with_grad():
            setattr(p.grad, _STALE_MARK, p.grad._version)

    def _backups_for(self, params: list[Tensor]) -> list[Tensor]:
        out = []
        for p in params:
            buf = self._backups.get(p)
            if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
                buf = torch.empty_like(p, memory_format=torch.preserve_format)
                self._backups[p] = buf
            out.append(buf)
        return out

    def _global_norm(self, grouped, directions=None) -> Tensor:
        """``||g||`` over all groups, with ASAM's ``T = |w| + eta`` on adaptive groups."""
        parts = []
        for i, (group, params, grads) in enumerate(grouped):
            if not params:
                continue
            vectors = grads if directions is None else directions[i]
            adaptive = group.get("adaptive", False)
            if self._impl_for(params[0].device) == "compiled":
                try:
                    if adaptive:
                        flat = [t for pair in zip(params, vectors) for t in pair]
                        sq = _compiled.compiled("norm_sq_into")(flat, group.get("eta", 0.0))
                    else:
                        sq = _compiled.compiled("norm_sq_into")(list(vectors), None)
                    parts.append(sq.sqrt())
                    continue
                except Exception as err:  # no compiler, inductor failure
                    self._compile_failed(err)
            parts.append(
                kernels.global_norm(
                    vectors,
                    params=params if adaptive else None,
                    eta=group.get("eta", 0.0),
                    impl=self._impl_for(params[0].device),
                )
            )
        if not parts:
            return torch.zeros((), device=self._first_device())
        if len(parts) == 1:
            return parts[0]
        return torch.linalg.vector_norm(torch.stack([x.to(parts[0].device) for x in parts]))

    def _perturb(self, grouped, directions, norm: Tensor, rho_of) -> None:
        """Back up ``w`` and perturb every group along ``directions`` (a list per group):
        ``e = rho_group / (norm + eps) * direction`` (times ``T^2`` for ASAM)."""
        for (group, params, _), dirs in zip(grouped, directions):
            if not params:
                continue
            rho = rho_of(group)
            scale = rho / (norm + group["perturb_eps"])
            if self._impl_for(params[0].device) == "compiled" and self._perturb_swap(
                group, params, dirs, scale
            ):
                continue
            self._copied.append(params)
            kernels.perturb_(
                params,
                dirs,
                self._backups_for(params),
                scale,
                adaptive=group.get("adaptive", False),
                eta=group.get("eta", 0.0),
                impl=self._impl_for(params[0].device),
            )
        self._perturbed = True
        self.current_pass = "perturbed"
        if self.track_stats:
            self.last_step["perturbation_norm"] = self._perturbation_norm(
                grouped, directions, norm, rho_of
            )

    def _perturb_swap(self, group, params, dirs, scale) -> bool:
        """Compiled path: write ``w + e`` into spare buffers and swap storages with ``p.data``
        (restoring is then a swap back, no copy); the original storage is untouched."""
        spare = self._backups_for(params)
        eta = group.get("eta", 0.0) if group.get("adaptive", False) else None
        try:
            _compiled.compiled("perturb_into")(spare, params, list(dirs), scale, eta)
        except Exception as err:
            self._compile_failed(err)
            return False
        for p, buf in zip(params, spare):
            original = p.data
            p.data = buf
            self._backups[p] = original
            self._swapped.append(p)
        return True

    def _restore(self) -> None:
        if not self._perturbed:
            return
        for p in self._swapped:
            perturbed = p.data
            p.data = self._backups[p]
            self._backups[p] = perturbed  # the spare buffer of the next step
        self._swapped = []
        for params in self._copied:
            kernels.copy_(
                params, [self._backups[p] for p in params], impl=self._impl_for(params[0].device)
            )
        self._copied = []
        self._perturbed = False

    def _perturbation_norm(self, grouped, directions, norm: Tensor, rho_of) -> Tensor:
        """||e|| over all groups (exact for per-group rho and ASAM); computed from the
        backed-up weights, so call it right after perturbing."""
        squares = []
        for (group, params, _), grads in zip(grouped, directions):
            if not params:
                continue
            scale = rho_of(group) / (norm + group["perturb_eps"])
            if group.get("adaptive", False):
                t = [
                    (self._backups[p].abs() + group["eta"]) ** 2 * g for p, g in zip(params, grads)
                ]
            else:
                t = grads
            squares.append((scale * kernels.global_norm(t)) ** 2)
        if not squares:
            return torch.zeros(())
        return torch.stack([s.to(squares[0].device) for s in squares]).sum().sqrt()

    # ----------------------------------------------------------------- AMP
    def _unscale(self, scaler, pass_index: int) -> bool:
        """Unscale this pass's gradients with ``scaler``; True when they hold inf/NaN."""
        if scaler is None or not scaler.is_enabled():
            return False
        if self._scaler_views is None:
            self._scaler_views = (_ScalerView(self.param_groups), _ScalerView(self.param_groups))
        view = self._scaler_views[pass_index]
        view.param_groups = self.param_groups
        scaler.unscale_(view)
        try:
            found = scaler._per_optimizer_states[id(view)]["found_inf_per_device"]
        except (AttributeError, KeyError) as err:  # pragma: no cover - torch internals moved
            raise RuntimeError(
                "samlab could not read GradScaler's inf check; this torch version changed "
                "GradScaler internals: use bf16 autocast or report the torch version"
            ) from err
        return bool(sum(v.item() for v in found.values()))

    # ----------------------------------------------------------------- subclass hooks
    def _begin(self) -> None:
        self.current_pass = "clean"
        self.single_pass = False

    def _first(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        """Default: p.grad already holds the gradient to follow (g at w + e)."""

    # ----------------------------------------------------------------- manual API
    @torch.no_grad()
    def begin_step(self) -> None:
        """Call before the first forward of a step (one-step SAM perturbs here)."""
        self._skip = False
        self.last_step = {"passes": 0, "skipped": False}
        self._begin()

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, scaler=None) -> bool:
        """After pass 1's backward: perturb if the method needs a second pass.

        Returns True when the caller must now run a second forward+backward (at ``w + e``),
        False when the step has a single pass. Call ``second_step()`` in both cases.
        """
        if self.current_pass is None:  # manual users may skip begin_step() for two-pass methods
            if self.perturbs_before_first_pass:
                raise RuntimeError(
                    f"{self.method}: call begin_step() before the forward pass; it applies the "
                    "perturbation that this step's only pass must see (without it the step "
                    "would silently be the base optimizer's)"
                )
            self.begin_step()
        self.last_step["passes"] = self.last_step.get("passes", 0) + 1
        if self._unscale(scaler, 0):
            self._skip = True
            self.single_pass = True
            return False
        needs_second = False if self.single_pass else bool(self._first())
        if needs_second and zero_grad:
            self.zero_grad(set_to_none=True)
        return needs_second

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, *, scaler=None) -> None:
        """Restore ``w``, form the final gradient and step the base optimizer."""
        if self.current_pass is None:
            raise RuntimeError(
                f"{self.method}.second_step() called without first_step(); call "
                "begin_step(), backward, first_step(), [backward], second_step() in that order"
            )
        two_pass = self.current_pass == "perturbed" and not self.single_pass
        if two_pass:
            self.last_step["passes"] = self.last_step.get("passes", 0) + 1
            if self._unscale(scaler, 1):
                self._skip = True
        elif self.single_pass and self.last_step.get("passes", 0) == 0:
            # one-pass methods via the manual API: first_step() may have been skipped
            self.last_step["passes"] = 1
            if self._unscale(scaler, 0):
                self._skip = True
        self._restore()
        if not self._skip:
            self._finish()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self._all_params_with_grad(), self.max_grad_norm)
            self._base_step()
        self._end_step()
        self._opt_called = True  # lets LR schedulers know the optimizer stepped
        if not self._in_step:
            for hook in list(self._optimizer_step_post_hooks.values()):
                hook(self, (), {})
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def _base_step(self) -> None:
        """The base optimizer's step, compiled on the compiled path (learning rates become
        0-d tensors there, so LR schedulers do not trigger recompilation)."""
        params = self._all_params_with_grad()
        # Only SGD's compiled step is exact (compiled Adam/AdamW compute their bias correction
        # from a float32 step count): other bases step eagerly.
        exact = type(self.base_optimizer) is torch.optim.SGD
        if not params or not exact or self._impl_for(params[0].device) != "compiled":
            self.base_optimizer.step()
            return
        if self._compiled_base_step is None:
            for group in self.param_groups:
                if not isinstance(group.get("lr"), Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float64)
            self._compiled_base_step = torch.compile(self.base_optimizer.step, dynamic=False)
        try:
            self._compiled_base_step()
        except Exception as err:
            self._compile_failed(err)
            self.base_optimizer.step()

    def _end_step(self) -> None:
        self.last_step["skipped"] = self._skip
        clean, pert = self.last_step.get("clean_loss"), self.last_step.get("perturbed_loss")
        if clean is not None and pert is not None:
            self.last_step["sharpness_gap"] = pert - clean
        self._mark_grads_stale()
        self.current_pass = None
        self.single_pass = False
        if not self._skip:  # a skipped (AMP overflow) step is not a step: LookSAM retries it
            self._step_index += 1

    # ----------------------------------------------------------------- closure API
    def step(self, closure: Callable[[], Any] | None = None, *, scaler=None) -> Any:
        """One full step with ``closure`` (zero-grads, forward, backward, returns the loss).

        Returns the loss of the clean pass that this call ran, the perturbed-point loss for
        one-step SAM, or None when the clean gradients were computed by the caller before
        ``step`` (they are then reused, not recomputed).
        """
        if closure is None:
            raise TypeError(
                f"{self.method}.step() needs a closure that zero-grads, runs forward and "
                "backward and returns the loss; without one use the manual API: "
                "begin_step(), backward, first_step(), [backward], second_step()"
            )
        token = None
        self._in_step = True
        try:
            self.begin_step()
            token = _CURRENT_PASS.set((self.current_pass, self.single_pass))
            loss = None
            if self.current_pass == "perturbed" or not self._grads_are_fresh():
                with torch.enable_grad():
                    loss = closure()
                self._record_loss(loss)
            if self.first_step(scaler=scaler):
                _CURRENT_PASS.set((self.current_pass, self.single_pass))
                with torch.enable_grad():
                    perturbed = closure()
                self._record_loss(perturbed)
            self.second_step(scaler=scaler)
            return loss
        finally:
            self._in_step = False
            if token is not None:
                _CURRENT_PASS.reset(token)
            if self.current_pass is not None:  # an exception inside a pass: restore w
                with torch.no_grad():
                    self._restore()
                self.current_pass = None
                self.single_pass = False

    def _record_loss(self, loss: Any) -> None:
        if loss is None:
            return
        value = loss.detach() if isinstance(loss, Tensor) else loss
        key = "perturbed_loss" if self.current_pass == "perturbed" else "clean_loss"
        self.last_step[key] = value

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
