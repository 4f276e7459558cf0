"""Which implementation the SAM tensor-list updates run, and the one fallback.

Every update in :mod:`kernels` has three implementations: the per-tensor ``"loop"``
(the readable reference), ``"foreach"`` (``torch._foreach_*`` multi-tensor kernels) and
``"compiled"`` (the loop under ``torch.compile``, :mod:`kernels.compiled`). A :class:`Dispatch`
makes the choice, per device, and owns what happens when a compiled call fails: it is the one
place where that is decided, as ``torch.optim.sgd()``'s ``_default_to_fused_or_foreach`` is.

* ``impl="auto"`` picks by measurement: ``"foreach"`` on CUDA; on CPU ``"compiled"`` for
  models of at least :data:`COMPILE_MIN_NUMEL` parameter elements where a C++ compiler exists,
  else ``"foreach"``. Measured on CPU with one thread (``benchmarks/optim_step.py``): the
  compiled ascent and base step are several times faster than either eager path, but the
  one-time compilation (30-130 s cold, seconds from inductor's disk cache) costs more than a
  short run of a small model saves; between the eager paths foreach is 4-11% faster than the
  loop on models of many tensors and about even (up to 7% slower) on models of a few large
  ones (figures in :mod:`kernels.sam_ops`).
* The fallback. A dispatch with an ``owner`` (an optimizer) warns once when a compiled call
  fails (no compiler, an inductor failure, an exhausted recompile limit), naming the owner and
  the error, and runs the loop from then on: it never switches to eager silently. A dispatch
  without an owner (what a plain ``impl="compiled"`` string means to the functions of
  :mod:`kernels`) runs the loop for that call without a warning and tries again the next time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from kernels import compiled

__all__ = ["COMPILE_MIN_NUMEL", "IMPLS", "NOT_RUN", "Dispatch", "as_dispatch"]

IMPLS = ("loop", "foreach", "compiled")
#: "auto" compiles the CPU path only from this many parameter elements on: below it the
#: one-time compilation (30-130 s cold, seconds from inductor's disk cache) costs more than a
#: short run saves (ResNet-20, 0.27M: compiled SAM saves ~0.4 ms a step over foreach).
COMPILE_MIN_NUMEL = 2_000_000
#: what :meth:`Dispatch.run` returns when the compiled call did not run (the caller runs its loop)
NOT_RUN = object()
#: torch.optim's C++ grouping of tensor lists (private; a Python set where it is missing)
_GROUP_BY_DEVICE_AND_DTYPE = getattr(torch._C, "_group_tensors_by_device_and_dtype", None)


class Dispatch:
    """The implementation chosen per device, and the fallback when a compiled call fails.

    Args:
        impl: ``"auto"``, ``"loop"``, ``"foreach"`` or ``"compiled"``.
        owner: the name a failure warning starts with (an optimizer's ``method``); None makes
            failures silent and stateless (the plain-string ``impl`` of :mod:`kernels`).
        numel: for ``"auto"``: returns the number of parameter elements of the model (read on
            the first CPU choice, again after :meth:`forget`).
    """

    __slots__ = ("impl", "owner", "_numel", "_cpu")

    def __init__(
        self,
        impl: str = "loop",
        *,
        owner: str | None = None,
        numel: Callable[[], int] | None = None,
    ) -> None:
        if impl not in ("auto", *IMPLS):
            raise ValueError(f"impl must be one of {('auto', *IMPLS)}, got {impl!r}")
        self.impl = impl
        self.owner = owner
        self._numel = numel
        self._cpu: str | None = None  # "auto"'s CPU choice, made once

    def __repr__(self) -> str:
        return f"Dispatch({self.impl!r}, owner={self.owner!r})"

    @property
    def cpu_choice(self) -> str | None:
        """What ``"auto"`` chose on CPU (None until a CPU tensor asked, or without ``"auto"``)."""
        return self._cpu

    def forget(self) -> None:
        """Choose again on the next call (the model grew: ``add_param_group``)."""
        self._cpu = None

    def impl_for(self, device: torch.device) -> str:
        """The implementation that runs on ``device``."""
        if self.impl != "auto":
            return self.impl
        if device.type == "cuda":
            return "foreach"
        if self._cpu is None:
            numel = self._numel() if self._numel is not None else 0
            big = numel >= COMPILE_MIN_NUMEL
            # below the threshold (or without a compiler): torch._foreach_*
            self._cpu = "compiled" if big and compiled.compiler_available() else "foreach"
        return self._cpu

    def compiled_layout(
        self, tensors: Sequence[Tensor], grads: Sequence[Tensor] = ()
    ) -> tuple[torch.device, torch.dtype] | None:
        """(device, dtype) when one compiled call over all ``tensors`` and ``grads`` applies:
        the first tensor's device runs ``"compiled"``, all share its device and dtype, and
        ``grads`` are dense (sparse gradients of ``nn.Embedding(sparse=True)`` have no
        compiled twin); None otherwise (the caller then takes its general path)."""
        first = tensors[0]
        device, dtype = first.device, first.dtype
        if self.impl_for(device) != "compiled":
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

    def run(self, name: str | Callable, *args):
        """``kernels.compiled.compiled(name)(*args)`` (``name``: a function of
        :mod:`kernels.compiled` or a graph function itself), or :data:`NOT_RUN` where it failed
        (then :meth:`failed` has run and the caller runs its loop)."""
        try:
            return compiled.compiled(name)(*args)
        except Exception as err:  # no compiler, inductor failure, recompile limit
            self.failed(err)
            return NOT_RUN

    def failed(self, err: Exception) -> None:
        """The fallback: with an owner, warn once and run the loop from now on."""
        if self.owner is None:
            return
        warnings.warn(
            f"{self.owner}: torch.compile failed ({type(err).__name__}: {err}); falling back "
            "to the eager per-tensor loop (impl='loop')",
            RuntimeWarning,
            stacklevel=4,
        )
        self.impl = "loop"
        self._cpu = "loop"


#: the ownerless dispatch of each plain ``impl`` string (stateless, so shared)
_PLAIN = {impl: Dispatch(impl) for impl in IMPLS}


def as_dispatch(impl: str | Dispatch) -> Dispatch:
    """``impl`` itself, or the ownerless dispatch of a plain string (``ValueError`` for an
    unknown one; ``"auto"`` needs a :class:`Dispatch` that knows the model)."""
    if isinstance(impl, Dispatch):
        return impl
    try:
        return _PLAIN[impl]
    except (KeyError, TypeError):
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}") from None
