"""How ``HessianOperator(mode="auto")`` chooses its product mode: by timing both.

The two modes of :data:`~landscape.curvature.products.PRODUCT_MODES` give the same ``H v`` (to
rounding), so the timing need not waste products. On **one batch** the operator's engine is a
:class:`ProbingProducts`: the operator's first products are answered in turn by each mode and
timed (with :class:`~landscape.evaluate.paths.chunks.PassTimer`'s clock: thread CPU time on one
CPU thread, else CUDA-synchronised wall time), then the faster mode answers the rest. Every
timed product is one the caller asked for (Lanczos' first steps, say): the probe's only cost is
that one or two of them run in the slower mode. "reverse" goes first; with kept graphs the
first-order graph is built untimed (it is kept for the operator), so its timed product is the
steady-state cost. "forward" is timed on its first product (its constructor did its one-time
set-up; a cold product can only be slower than a warm one) and timed again, on the next
product, only when it comes within :data:`RETIME` of "reverse". On **several batches**
:func:`choose_mode` times the modes up front on the first batch alone (2-3 products of one
batch, made for the probe only: a product over all batches in the slower mode would cost more).
A mode other than "reverse" that fails (an operation without a forward-mode derivative) is left
out, the failure noted (the product it owed is made in "reverse").

A choice is remembered per :func:`probe_key` (device and its name, torch version, thread count,
model class and parameter shapes, input shape, dtype, loss, GGN flag, whether graphs are kept):
for the process, and across processes in a JSON file, so a later run on the same machine, model
and data shapes does not probe at all. The file is ``$LANDSCAPE_PROBE_CACHE`` if that names a
path, ``off`` (or ``0``, ``no``, ``false``, empty) turns it off; by default it is
``$XDG_CACHE_HOME/samlab/hessian-product-modes.json`` (``~/.cache`` without ``XDG_CACHE_HOME``).
An unreadable file counts as empty and an unwritable one is skipped: the cache only saves time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from landscape.curvature.products import (
    PRODUCT_MODES,
    ForwardProducts,
    ProductSetting,
    ReverseProducts,
    make_products,
)
from landscape.evaluate.paths.chunks import PassTimer

#: a mode whose cold first product takes at most this times the best is timed again warm
RETIME = 1.5
#: the environment variable naming the cache file (or "off")
CACHE_VARIABLE = "LANDSCAPE_PROBE_CACHE"
CACHE_OFF = ("", "0", "off", "no", "false")
#: the choices made in this process: probe key -> (mode, seconds per product of each mode)
_choices: dict[tuple, tuple[str, dict[str, float]]] = {}


def cache_file() -> Path | None:
    """The cross-process cache file (see the module docstring), or None when turned off."""
    setting = os.environ.get(CACHE_VARIABLE)
    if setting is not None:
        return None if setting.strip().lower() in CACHE_OFF else Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "samlab" / "hessian-product-modes.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _file_key(key: tuple) -> str:
    return json.dumps(key, default=str)


def _cached(key: tuple) -> tuple[str, dict[str, float], str] | None:
    """``(mode, seconds, where)`` remembered for ``key``: in this process, else in the file."""
    if key in _choices:
        mode, seconds = _choices[key]
        return mode, seconds, "process"
    path = cache_file()
    if path is None:
        return None
    entry = _read(path).get(_file_key(key))
    try:
        mode, seconds = entry["mode"], {str(m): float(s) for m, s in entry["seconds"].items()}
    except (TypeError, KeyError, AttributeError, ValueError):
        return None
    if mode not in PRODUCT_MODES:
        return None
    _choices[key] = (mode, seconds)
    return mode, seconds, str(path)


def _remember(key: tuple, mode: str, seconds: dict[str, float]) -> None:
    _choices[key] = (mode, dict(seconds))
    path = cache_file()
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read(path)
        entries[_file_key(key)] = {
            "mode": mode,
            "seconds": seconds,
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(entries, stream, indent=1, sort_keys=True)
            os.replace(scratch, path)  # atomic: a concurrent reader sees the old or new file
        finally:
            with contextlib.suppress(OSError):
                os.unlink(scratch)


def clear_mode_cache(file: bool = False) -> None:
    """Forget the modes ``"auto"`` chose so far in this process (the next operator probes,
    unless the cache file knows the choice); ``file=True`` deletes the cache file too."""
    _choices.clear()
    path = cache_file()
    if file and path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass
class ModeChoice:
    """A product mode and why: ``reason``, the probe's ``seconds`` per product of each mode,
    where the choice came from when cached (``"process"`` or the cache file's path), how many
    products the probe timed and how many of those were made for it alone (``extra``: not
    counted in the operator's ``hvp_count``)."""

    mode: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)
    cache: str | None = None
    products: int = 0
    extra: int = 0

    def describe(self) -> dict[str, Any]:
        """The choice as provenance entries."""
        return {
            "mode_reason": self.reason,
            "probe_seconds": dict(self.seconds),
            "probe_cache_hit": self.cache is not None,
            "probe_cache": self.cache,
            "probe_products": self.products,
            "probe_extra_products": self.extra,
        }


def probe_key(setting: ProductSetting, keep_graph: bool) -> tuple:
    """What the choice depends on: the device type and name (the CPU's or the GPU's), the
    torch version, the intra-op thread count, the model class, the selected parameters' shapes,
    the first batch's input shape, the parameters' dtype, the loss (a name, or a callable's
    qualified name), GGN or Hessian, and whether graphs are kept."""
    reference, model, loss = setting.primals[0], setting.model, setting.loss
    device = reference.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return (
        device.type,
        name,
        str(torch.__version__),
        torch.get_num_threads(),
        f"{type(model).__module__}.{type(model).__qualname__}",
        tuple(tuple(p.shape) for p in setting.primals),
        tuple(setting.batches[0][0].shape),
        str(reference.dtype),
        loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss)),
        setting.ggn,
        keep_graph,
    )


def cached_choice(key: tuple) -> ModeChoice | None:
    """The remembered choice for ``key`` (see the module docstring), or None."""
    found = _cached(key)
    if found is None:
        return None
    mode, seconds, where = found
    where_said = "this process" if where == "process" else "the cache file"
    reason = f"{mode} measured faster for this model (probe cached in {where_said})"
    return ModeChoice(mode, reason, dict(seconds), cache=where)


def _decided(
    key: tuple, seconds: dict[str, float], failures: list[str], products: int, extra: int
) -> ModeChoice:
    mode = min(seconds, key=lambda m: seconds[m])
    _remember(key, mode, seconds)
    others = [m for m in seconds if m != mode]
    reason = (
        f"{mode} measured faster than {', '.join(others)}"
        if others
        else f"{mode}, the one mode that works"
    )
    reason = "; ".join([reason, *failures])
    return ModeChoice(mode, reason, dict(seconds), products=products, extra=extra)


def _failure(mode: str, error: Exception) -> str:
    return f"{mode} failed ({type(error).__name__}: {str(error)[:120]})"


def choose_mode(
    key: tuple,
    setting: ProductSetting,
    keep_graph: bool,
    vector: Sequence[Tensor],
    device: torch.device,
) -> ModeChoice:
    """The faster mode on ``setting`` (the first of several batches) for the per-parameter
    ``vector``, by products made for the probe alone; run it with the model prepared (eval
    mode). The caller looks up :func:`cached_choice` first."""
    engines = {mode: make_products(mode, setting, keep_graph) for mode in PRODUCT_MODES}
    timer = PassTimer(device)

    def timed(mode: str) -> float:
        return timer({mode: lambda e=engines[mode]: e.apply([vector])}, 1)[mode]

    # The reference mode ("reverse") must work. With kept graphs its warm-up is building
    # them (no product), else one product.
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
            failures.append(_failure(mode, error))
            del engines[mode]
            seconds.pop(mode, None)
    return _decided(key, seconds, failures, products, products)


class ProbingProducts:
    """The engine of ``mode="auto"`` on one batch until it has chosen (see the module
    docstring): :meth:`apply` answers each product with the mode being timed; :attr:`choice`
    is None until the choice is made, then the chosen engine (:attr:`chosen`) answers."""

    mode = "auto"

    def __init__(
        self, key: tuple, setting: ProductSetting, keep_graph: bool, device: torch.device
    ) -> None:
        self.key = key
        self.keep_graph = keep_graph
        self.engines = {mode: make_products(mode, setting, keep_graph) for mode in PRODUCT_MODES}
        self.timer = PassTimer(device)
        self.queue = list(PRODUCT_MODES)  # modes still to time, in order
        self.seconds: dict[str, float] = {}
        self.failures: list[str] = []
        self.products = 0
        self.retimed: set[str] = set()
        self.choice: ModeChoice | None = None

    @property
    def chosen(self) -> ReverseProducts | ForwardProducts:
        """The chosen mode's engine (after the choice)."""
        if self.choice is None:
            raise RuntimeError("the probe has not chosen a mode yet")
        return self.engines[self.choice.mode]

    def pending(self) -> ModeChoice:
        """The state before the choice, as a :class:`ModeChoice` of mode ``"auto"``."""
        timed = ", ".join(f"{m} {s:.3g} s" for m, s in self.seconds.items()) or "none yet"
        reason = (
            "probing: the next products are timed in "
            f"{', '.join(self.queue)} (timed so far: {timed})"
        )
        return ModeChoice("auto", reason, dict(self.seconds), products=self.products)

    def _timed(self, mode: str, vector: Sequence[Tensor]) -> list[Tensor]:
        engine, out = self.engines[mode], []
        if mode == PRODUCT_MODES[0] and self.keep_graph and not self.seconds:
            engine.build_graphs()  # untimed: kept for the operator
        seconds = self.timer({mode: lambda: out.extend(engine.apply([vector]))}, 1)[mode]
        self.products += 1
        self.seconds[mode] = min(seconds, self.seconds.get(mode, seconds))
        return out[0]

    def _probe(self, vector: Sequence[Tensor]) -> list[Tensor]:
        while self.queue:
            mode = self.queue.pop(0)
            try:
                product = self._timed(mode, vector)
            except (RuntimeError, NotImplementedError) as error:
                if mode == PRODUCT_MODES[0]:
                    raise
                self.failures.append(_failure(mode, error))
                del self.engines[mode]
                continue
            others = [s for m, s in self.seconds.items() if m != mode]
            close = others and self.seconds[mode] <= RETIME * min(others)
            if mode != PRODUCT_MODES[0] and close and mode not in self.retimed:
                self.retimed.add(mode)
                self.queue.insert(0, mode)  # timed again warm, on the next product
            if not self.queue:
                self._choose()
            return product
        self._choose()
        return self.chosen.apply([vector])[0]

    def finish(self, vector: Sequence[Tensor]) -> None:
        """Make the choice now, by products with ``vector`` made for the probe alone."""
        extra = 0
        while self.choice is None:
            self._probe(vector)
            extra += 1
        self.choice.extra = extra

    def _choose(self) -> None:
        self.choice = _decided(self.key, self.seconds, self.failures, self.products, 0)
        self.engines = {self.choice.mode: self.engines[self.choice.mode]}  # frees kept graphs

    def apply(self, vectors: Sequence[Sequence[Tensor]]) -> list[list[Tensor]]:
        """This process's product with each vector (per-parameter tensors)."""
        out: list[list[Tensor]] = []
        for index, vector in enumerate(vectors):
            if self.choice is not None:
                return out + self.chosen.apply(vectors[index:])
            out.append(self._probe(vector))
        return out

    def loss_and_gradient(self) -> tuple[Tensor, list[Tensor]]:
        """As the engines' (from the kept graph while "reverse" is still an engine)."""
        if self.choice is not None:
            return self.chosen.loss_and_gradient()
        return self.engines[PRODUCT_MODES[0]].loss_and_gradient()
