"""Shared machinery of the SAM family: base optimizer, passes, AMP, state, observability.

The protocol is documented in ``docs/closure-protocol.md``. A subclass implements three hooks:

* ``_begin(groups)`` — before pass 1 (one-step SAM perturbs here); returns nothing.
* ``_first(groups) -> bool`` — after pass 1; perturbs and returns True when a second pass is
  needed.
* ``_finish(groups)`` — after the last pass and after the weights are restored; turns
  ``p.grad`` into the gradient the base optimizer should follow.
* ``_update()`` (optional) — ``_finish``, clipping and the base step; GSAM and one-step SAM
  override it to fuse the three into one compiled call.
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
#: one-time compilation (30-130 s cold, seconds from inductor's disk cache) costs more than a
#: short run saves (ResNet-20, 0.27M: compiled SAM saves ~0.4 ms a step over foreach).
COMPILE_MIN_NUMEL = 2_000_000
#: torch.optim's C++ grouping of tensor lists (private; a Python set where it is missing)
_GROUP_BY_DEVICE_AND_DTYPE = getattr(torch._C, "_group_tensors_by_device_and_dtype", None)


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
            grad = p.grad
            setattr(grad, _STALE_MARK, grad._version)

    def _backups_for(self, params: list[Tensor]) -> list[Tensor]:
        out = []
        for p in params:
            buf = self._backups.get(id(p))
            if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
                buf = torch.empty_like(p, memory_format=torch.preserve_format)
                self._backups[id(p)] = buf
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

    def _ascend(self, grouped, directions, rho_of) -> Tensor:
        """Perturb every group along ``directions`` (a list per group) with the global norm of
        ``directions`` (ASAM's ``||T d||`` on adaptive groups); returns that norm.

        The compiled path does it in one graph (:func:`kernels.compiled.ascent_into`); the
        others compute :meth:`_global_norm` and then :meth:`_perturb`.
        """
        norm = self._ascend_compiled(grouped, directions, rho_of)
        if norm is None:
            norm = self._global_norm(grouped, directions)
            self._perturb(grouped, directions, norm, rho_of)
        return norm

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

    def _ascend_compiled(self, grouped, directions, rho_of) -> Tensor | None:
        """The compiled ascent over all groups in one call: the norm, then ``w + e`` written
        into spare buffers whose storages are swapped with ``p.data`` (restoring is a swap
        back). None where it does not apply (other impl, mixed devices or dtypes, failure)."""
        segments = [(g, ps, ds) for (g, ps, _), ds in zip(grouped, directions) if ps]
        if not segments:
            return None
        params = [p for _, ps, _ in segments for p in ps]
        dirs = [d for _, _, ds in segments for d in ds]
        layout = self._uniform(params, dirs)
        if layout is None:
            return None
        device, dtype = layout
        spec = tuple(
            (len(ps), float(g["perturb_eps"]), float(g["eta"]) if g.get("adaptive") else None)
            for g, ps, _ in segments
        )
        rhos = [torch.tensor(float(rho_of(g)), dtype=dtype, device=device) for g, _, _ in segments]
        spare = self._flat_spare(params, device, dtype)
        try:
            norm = _compiled.compiled("ascent_into")(spare, params, dirs, rhos, spec)
        except Exception as err:  # no compiler, inductor failure, recompile limit
            self._compile_failed(err)
            return None
        self._swap_in(params, spare)
        self._perturbed = True
        self.current_pass = "perturbed"
        if self.track_stats:
            self.last_step["perturbation_norm"] = self._perturbation_norm(
                grouped, directions, norm, rho_of
            )
        return norm

    def _flat_spare(
        self, params: list[Tensor], device: torch.device, dtype: torch.dtype
    ) -> list[Tensor]:
        """Spare buffers for the compiled ascent: views shaped like ``params`` into one
        contiguous buffer (each view 64-byte aligned), kept across steps. Writing ``w + e`` as
        one stream measured about 7% faster than into separate allocations (ViT, CPU).
        Non-contiguous parameters (channels_last) get ``empty_like`` buffers instead."""
        cached = self._spare
        if (
            cached is not None
            and cached[0] == tuple(map(id, params))
            and all(v.shape == p.shape for v, p in zip(cached[1], params))
            and cached[1][0].dtype == dtype
            and cached[1][0].device == device
        ):
            return cached[1]
        if not all(p.is_contiguous() for p in params):  # e.g. channels_last: keep the format
            return self._backups_for(params)
        align = max(1, 64 // torch.empty((), dtype=dtype).element_size())
        sizes = [-(-p.numel() // align) * align for p in params]
        flat = torch.empty(sum(sizes), dtype=dtype, device=device)
        views, offset = [], 0
        for p, size in zip(params, sizes):
            views.append(flat[offset : offset + p.numel()].view(p.shape))
            offset += size
        self._spare = (tuple(map(id, params)), views)
        return views

    def _swap_in(self, params: list[Tensor], spare: list[Tensor]) -> None:
        """``p.data <- spare`` (holding ``w + e``); the original storage becomes the backup."""
        for p, buf in zip(params, spare):
            original = p.data
            p.data = buf
            self._swapped.append((p, original))

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
        self._swap_in(params, spare)
        return True

    def _restore(self) -> None:
        if not self._perturbed:
            return
        for p, original in self._swapped:  # the spare (w + e) stays for the next step
            p.data = original
        self._swapped = []
        for params in self._copied:
            kernels.copy_(
                params,
                [self._backups[id(p)] for p in params],
                impl=self._impl_for(params[0].device),
            )
        self._copied = []
        self._perturbed = False

    def _perturbation_norm(self, grouped, directions, norm: Tensor, rho_of) -> Tensor:
        """||e|| over all groups (exact for per-group rho and ASAM); computed from the
        backed-up weights, so call it right after perturbing."""
        squares = []
        # w of each perturbed parameter: its swapped-out storage, else its backup copy
        before = {id(p): original for p, original in self._swapped}
        for (group, params, _), grads in zip(grouped, directions):
            if not params:
                continue
            scale = rho_of(group) / (norm + group["perturb_eps"])
            if group.get("adaptive", False):
                t = [
                    (before.get(id(p), self._backups.get(id(p))).abs() + group["eta"]) ** 2 * g
                    for p, g in zip(params, grads)
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
            self._update()
        self._end_step()
        self._opt_called = True  # lets LR schedulers know the optimizer stepped
        if not self._in_step:
            for hook in list(self._optimizer_step_post_hooks.values()):
                hook(self, (), {})
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def _update(self) -> None:
        """After the weights are restored: the final gradient (``_finish``), clipping, the
        base step. Subclasses may fuse the three on the compiled path."""
        self._finish()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._all_params_with_grad(), self.max_grad_norm)
        self._base_step()

    def _base_step(self) -> None:
        """The base optimizer's step; on the compiled path SGD's update runs as one compiled
        call (:func:`kernels.compiled.sgd_step_`, bit-exact with ``torch.optim.SGD``)."""
        plan = self._sgd_plan()
        if plan is not None:
            params, grads, bufs, lrs, spec = plan
            try:
                _compiled.compiled("sgd_step_")(params, grads, bufs, lrs, spec)
                self._base_stepped()
                return
            except Exception as err:
                self._compile_failed(err)
        self.base_optimizer.step()

    def _base_stepped(self) -> None:
        """What ``base_optimizer.step()`` records besides the update (LR schedulers built on
        the base optimizer check it)."""
        self.base_optimizer._opt_called = True

    def _sgd_plan(self):
        """``(params, grads, momentum buffers, lrs, spec)`` for the compiled SGD step, or None
        where it does not apply: the compiled path is not in use, the base is not exactly
        ``torch.optim.SGD``, a hook is registered on it, an option has no compiled twin
        (differentiable, fused, tensor weight decay), tensors differ in device or dtype, or a
        momentum buffer does not exist yet (SGD's first step creates them eagerly)."""
        self._sgd_first_step = False
        base = self.base_optimizer
        if type(base) is not torch.optim.SGD:
            return None
        from torch.optim import optimizer as _torch_optimizer

        if (
            base._optimizer_step_pre_hooks
            or base._optimizer_step_post_hooks
            or _torch_optimizer._global_optimizer_pre_hooks
            or _torch_optimizer._global_optimizer_post_hooks
        ):
            return None
        params, grads, bufs, lrs, spec = [], [], [], [], []
        for index, group in enumerate(self.param_groups):
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            if group.get("differentiable") or group.get("fused"):
                return None
            weight_decay, momentum = group["weight_decay"], group["momentum"]
            if isinstance(weight_decay, Tensor) or isinstance(momentum, Tensor):
                return None
            if momentum != 0:
                for p in ps:
                    state = base.state.get(p)
                    buf = None if state is None else state.get("momentum_buffer")
                    if buf is None:
                        self._sgd_first_step = True
                        return None
                    bufs.append(buf)
            else:
                bufs.extend([None] * len(ps))
            lrs.append(self._lr_tensor(index, group["lr"], ps[0].device))
            if lrs[-1] is None:
                return None
            params.extend(ps)
            grads.extend(p.grad for p in ps)
            spec.append(
                (
                    len(ps),
                    float(weight_decay),
                    float(momentum),
                    float(group["dampening"]),
                    bool(group["nesterov"]),
                    bool(group["maximize"]),
                )
            )
        if not params or self._uniform(params, grads) is None:
            return None
        return params, grads, bufs, lrs, tuple(spec)

    def _lr_tensor(self, index: int, lr, device: torch.device) -> Tensor | None:
        """Group ``index``'s learning rate as a 0-d float64 tensor on ``device`` (refilled each
        step, so a scheduler never recompiles); a tensor lr that requires grad has no compiled
        twin (None)."""
        if isinstance(lr, Tensor):
            if lr.requires_grad or lr.numel() != 1:
                return None
            return lr.detach().reshape(()).to(device=device, dtype=torch.float64)
        buf = self._lr_tensors.get(index)
        if buf is None or buf.device != device:
            buf = self._lr_tensors[index] = torch.zeros((), dtype=torch.float64, device=device)
        buf.fill_(lr)
        return buf

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
