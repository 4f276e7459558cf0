"""Per-sample gradients and the diagonal Fisher for sparse SAM's masks.

.. note::
   DESIGN.md §3 keeps models and data out of ``samlab.optim``. This module is the one named
   exception (amended in ``docs/sparse-sam.md``): SSAM-F's mask needs the Fisher of the
   model on data, so ``refresh_masks(model, loss_fn, batches)`` calls :func:`fisher_diagonal`
   here and nothing else in ``samlab.optim`` touches a model.

The empirical Fisher (Mi et al., NeurIPS 2022) is ``F = sum_i (grad l(x_i, y_i))^2`` over the
first ``num_samples`` samples of ``batches`` (a sum, as the seed's; the scale does not change
a top-k). ``true_fisher=True`` samples the labels from the model (``y_i ~ softmax(f(x_i))``,
for classifiers whose outputs are logits) with the given generator instead of using the data's.

.. note::
   The model runs in eval mode and its mode is restored afterwards: BatchNorm uses and keeps
   its running statistics, dropout is off. The seed runs the Fisher in train mode on batches of
   one sample, so every refresh wrote ``num_samples`` single-sample updates into the BatchNorm
   statistics, and BatchNorm1d raised.

Two exact methods compute the per-sample gradients (they agree to rounding; a float64 test
checks it):

* ``"loop"``: one forward and ``torch.autograd.grad`` per sample (the seed's method, without
  touching ``.grad``).
* ``"vmap"``: ``torch.func.vmap(torch.func.grad(...))`` over chunks of samples, the chunk
  sized to keep the stacked gradients under :data:`VMAP_CHUNK_BYTES`.

``method="measure"`` chooses at run time without repeating work: the first chunk runs the
loop, the second vmap, both summed into the Fisher and timed per sample (the seconds are
returned in :class:`FisherResult` and the optimizer records them), and the faster computes the
rest; the optimizer keeps the choice for later refreshes. Chunks are then at most half of
``num_samples``, so that samples that would fit in one chunk still time both methods.
``method="auto"`` (the default) is ``"loop"`` on CPU, where it was measured fastest
(``benchmarks/sparse_sam.py``, CIFAR ResNet-18, one thread: the loop 0.95 of the seed's loop,
vmap in chunks 1.77, figures in ``docs/sparse-sam.md``), and ``"measure"`` on other devices.
BackPACK (slower) and Opacus (refuses BatchNorm) were not taken.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

import kernels

__all__ = [
    "FISHER_METHODS",
    "VMAP_CHUNK_BYTES",
    "FisherResult",
    "eval_mode",
    "fisher_diagonal",
    "mean_gradient",
    "samples",
    "unwrap",
]

FISHER_METHODS = ("auto", "measure", "loop", "vmap")
#: the stacked per-sample gradients of one vmap chunk stay under this size
VMAP_CHUNK_BYTES = 256 * 2**20


class FisherResult(NamedTuple):
    """What :func:`fisher_diagonal` computed.

    Attributes:
        fisher: one tensor per parameter (shaped like it; zeros where a parameter is not the
            model's or takes no gradient).
        samples: the number of samples summed.
        method: the method used; for "measure", the faster per sample on the first two
            chunks, or still "measure" when there was a single sample (computed by the loop).
        seconds: total seconds per method used.
        per_sample: "measure" only: the seconds per sample of each method on its timed
            chunk (what the choice compared); empty for the other methods.
    """

    fisher: list[Tensor]
    samples: int
    method: str
    seconds: dict[str, float]
    per_sample: dict[str, float]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode, every submodule's mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.train(training)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (whose backward hooks
    would all-reduce every per-sample gradient)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def samples(batches: Iterable[Any], num_samples: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(inputs, targets)`` chunks of the first ``num_samples`` samples of ``batches``."""
    left = num_samples
    for batch in batches:
        if left <= 0:
            return
        inputs, targets = batch[0], batch[1]
        take = min(left, len(inputs))
        left -= take
        yield inputs[:take], targets[:take]


def _loop_fisher(model, loss_fn, params, fisher, x, y) -> None:
    """Per sample: ``torch.autograd.grad`` of its loss, squares added in place."""
    for i in range(len(x)):
        loss = loss_fn(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        pairs = [(f, g) for f, g in zip(fisher, grads) if g is not None]
        kernels.fisher_accumulate_([f for f, _ in pairs], [g.unsqueeze(0) for _, g in pairs])


def _vmap_fisher(model, loss_fn, params, fisher, x, y) -> None:
    """``vmap(grad(...))`` over the chunk, the stacked squares summed over it."""
    from torch.func import functional_call, grad, vmap

    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    frozen = {
        n: p.detach() for n, p in model.named_parameters() if id(p) not in set(map(id, params))
    }
    buffers = dict(model.named_buffers())

    def loss_of(weights: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        state = {**frozen, **weights, **buffers}
        out = functional_call(model, state, (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    weights = {k: p.detach() for k, p in zip(keys, params)}
    per_sample = vmap(grad(loss_of), in_dims=(None, 0, 0))(weights, x, y)
    kernels.fisher_accumulate_(fisher, [per_sample[k] for k in keys])


_PER_SAMPLE: dict[str, Callable[..., None]] = {"loop": _loop_fisher, "vmap": _vmap_fisher}


def _chunks(x: Tensor, y: Tensor, size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for start in range(0, len(x), size):
        yield x[start : start + size], y[start : start + size]


def fisher_diagonal(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Iterable[Any],
    params: list[Tensor],
    *,
    num_samples: int,
    true_fisher: bool = False,
    generator: torch.Generator | None = None,
    method: str = "auto",
) -> FisherResult:
    """The diagonal Fisher ``sum_i g_i^2`` of ``params`` over the first ``num_samples`` samples
    of ``batches`` (an iterable of ``(inputs, targets)``), ``loss_fn(outputs, targets)`` the
    mean loss; see the module docstring for the methods and the eval-mode deviation.

    Raises:
        ValueError: an unknown ``method``, or ``batches`` holding no sample.
    """
    if method not in FISHER_METHODS:
        raise ValueError(f"method must be one of {FISHER_METHODS}, got {method!r}")
    model = unwrap(model)
    owned = {id(p) for p in model.parameters()}
    live = [p for p in params if id(p) in owned and p.requires_grad]
    if method == "auto":  # by the measurements in the module docstring
        on_cpu = all(p.device.type == "cpu" for p in live)
        method = "loop" if on_cpu else "measure"
    fisher = [torch.zeros_like(p) for p in params]
    acc = [f for f, p in zip(fisher, params) if id(p) in owned and p.requires_grad]
    numel = sum(p.numel() * p.element_size() for p in live) or 1
    chunk = max(1, min(num_samples, VMAP_CHUNK_BYTES // numel))
    if method == "measure":  # at least two chunks, so that both methods are timed
        chunk = min(chunk, max(1, (num_samples + 1) // 2))
    seconds: dict[str, float] = {}
    per_sample: dict[str, float] = {}  # "measure": seconds per sample of each method
    count, chosen = 0, method
    with eval_mode(model), torch.enable_grad():
        for inputs, targets in samples(batches, num_samples):
            if true_fisher:
                with torch.no_grad():
                    probs = torch.softmax(model(inputs).float(), dim=-1)
                targets = torch.multinomial(probs.cpu(), 1, generator=generator).flatten()
                targets = targets.to(inputs.device)
            for x, y in _chunks(inputs, targets, chunk):
                # "measure": the first chunk by the loop, the second by vmap (both count),
                # timed per sample; the faster computes the rest
                now = (
                    chosen if chosen != "measure" else ("vmap" if "loop" in per_sample else "loop")
                )
                start = time.perf_counter()
                _PER_SAMPLE[now](model, loss_fn, live, acc, x, y)
                spent = time.perf_counter() - start
                seconds[now] = seconds.get(now, 0.0) + spent
                if chosen == "measure":
                    per_sample[now] = spent / len(x)
                    if len(per_sample) == 2:
                        chosen = min(per_sample, key=per_sample.get)
                count += len(x)
    if count == 0:
        raise ValueError(
            "refresh_masks: batches held no sample; pass an iterable of (inputs, targets) "
            "with at least one sample (e.g. the training loader), and num_samples >= 1"
        )
    return FisherResult(fisher, count, chosen, seconds, per_sample)


def mean_gradient(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Iterable[Any],
    params: list[Tensor],
    *,
    num_samples: int,
) -> list[Tensor] | None:
    """The gradient of the mean loss over the first ``num_samples`` samples of ``batches`` at
    the current weights, in eval mode (SSAM-D's gradient score); None when there is no sample."""
    model = unwrap(model)
    owned = {id(p) for p in model.parameters()}
    total = [torch.zeros_like(p) for p in params]
    live = [p for p in params if id(p) in owned and p.requires_grad]
    slots = [t for t, p in zip(total, params) if id(p) in owned and p.requires_grad]
    count = 0
    with eval_mode(model), torch.enable_grad():
        for x, y in samples(batches, num_samples):
            loss = loss_fn(model(x), y) * len(x)
            for slot, g in zip(slots, torch.autograd.grad(loss, live, allow_unused=True)):
                if g is not None:
                    slot.add_(g)
            count += len(x)
    return [t / count for t in total] if count else None
