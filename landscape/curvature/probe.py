"""How ``HessianOperator(mode="auto")`` chooses its product mode: by timing both.

:func:`choose_mode` times Hessian-vector products of each mode of
:data:`~landscape.curvature.products.PRODUCT_MODES` on the first batch (on the device at hand,
with :class:`~landscape.evaluate.paths.chunks.PassTimer`'s clock: thread CPU time on one CPU
thread, else CUDA-synchronised wall time) and takes the faster. "reverse" is warmed up first:
when graphs are kept, by building the first-order graph (which the operator keeps; no
product), so its timed product is the steady-state cost of a product, not the graph's;
otherwise by one product. "forward" is timed on its first product (its constructor does its
one-time set-up; a cold product can only be slower than a warm one) and timed again only when
that comes within :data:`RETIME` of "reverse". So a probe costs 2 products (3 when close, 3-4
without kept graphs) instead of two per mode. A mode other than "reverse" that fails (an
operation without a forward-mode derivative) is left out, the failure noted. The choice is
remembered for the process per :func:`probe_key`, so operators on the same model and data
shapes do not probe again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from landscape.curvature.products import PRODUCT_MODES, ProductSetting, make_products
from landscape.evaluate.paths.chunks import PassTimer

#: a mode whose cold first product takes at most this times the best is timed again warm
RETIME = 1.5
#: the choices made in this process: probe key -> (mode, seconds per product of each mode)
_choices: dict[tuple, tuple[str, dict[str, float]]] = {}


def clear_mode_cache() -> None:
    """Forget the modes ``"auto"`` chose so far in this process (the next operator probes)."""
    _choices.clear()


@dataclass
class ModeChoice:
    """A product mode and why: ``reason``, the probe's ``seconds`` per product of each mode,
    whether they came from the process's cache, how many products the probe made, and its
    engines (reusable when the probe ran on all the operator's batches)."""

    mode: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    products: int = 0
    engines: dict[str, Any] = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        """The choice as provenance entries."""
        return {
            "mode_reason": self.reason,
            "probe_seconds": dict(self.seconds),
            "probe_cache_hit": self.cache_hit,
            "probe_products": self.products,
        }


def probe_key(
    model: nn.Module,
    shapes: Sequence[torch.Size],
    inputs: Tensor,
    dtype: torch.dtype,
    device: torch.device,
    loss: Any,
    ggn: bool,
    keep_graph: bool,
) -> tuple:
    """What the choice depends on: device type, model class, parameter shapes, the first
    batch's input shape, the parameters' dtype, the loss (a name, or a callable's qualified
    name), GGN or Hessian, and whether graphs are kept."""
    return (
        device.type,
        f"{type(model).__module__}.{type(model).__qualname__}",
        tuple(tuple(shape) for shape in shapes),
        tuple(inputs.shape),
        str(dtype),
        loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss)),
        ggn,
        keep_graph,
    )


def choose_mode(
    key: tuple,
    setting: ProductSetting,
    keep_graph: bool,
    vector: Sequence[Tensor],
    device: torch.device,
) -> ModeChoice:
    """The cached choice for ``key``, else the faster mode on ``setting`` (one batch) for the
    per-parameter ``vector``; run it with the model prepared (eval mode)."""
    if key in _choices:
        mode, seconds = _choices[key]
        reason = f"{mode} measured faster for this model (cached probe)"
        return ModeChoice(mode, reason, dict(seconds), cache_hit=True)
    engines = {mode: make_products(mode, setting, keep_graph) for mode in PRODUCT_MODES}
    timer = PassTimer(device)

    def timed(mode: str) -> float:
        return timer({mode: lambda e=engines[mode]: e.apply([vector])}, 1)[mode]

    # The reference mode ("reverse") must work. With kept graphs its warm-up is building
    # them (kept for the operator; no product), else one product.
    reference = engines[PRODUCT_MODES[0]]
    products, failures = 0, []
    if keep_graph:
        reference.build_graphs()
    else:
        reference.apply([vector])
        products += 1
    seconds = {PRODUCT_MODES[0]: timed(PRODUCT_MODES[0])}
    products += 1
    for mode in PRODUCT_MODES[1:]:
        # The first product of another mode, cold: an upper bound on its steady cost (its
        # constructor did the one-time set-up). Timed again warm only when it comes within
        # RETIME of the best so far, where a one-time cost could decide the choice.
        try:
            products += 1
            seconds[mode] = timed(mode)
            if seconds[mode] <= RETIME * min(seconds.values()):
                products += 1
                seconds[mode] = min(seconds[mode], timed(mode))
        except (RuntimeError, NotImplementedError) as error:
            failures.append(f"{mode} failed ({type(error).__name__}: {str(error)[:120]})")
            del engines[mode]
            seconds.pop(mode, None)
    mode = min(seconds, key=lambda m: seconds[m])
    _choices[key] = (mode, dict(seconds))
    others = [m for m in seconds if m != mode]
    reason = (
        f"{mode} measured faster than {', '.join(others)}"
        if others
        else f"{mode}, the one mode that works"
    )
    reason = "; ".join([reason, *failures])
    return ModeChoice(mode, reason, seconds, products=products, engines=engines)
