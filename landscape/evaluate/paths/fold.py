"""BatchNorm folding for the compiled evaluation path (:mod:`landscape.evaluate.paths.compiled`).

In eval mode a BatchNorm layer that directly follows a convolution or a linear layer is an
affine map per channel, so it can be merged into that layer:

.. math::

    s = \\gamma / \\sqrt{\\sigma^2 + \\epsilon}, \\qquad
    W_f = s \\odot W \\ (\\text{per output channel}), \\qquad
    b_f = s \\odot (b - \\mu) + \\beta .

:func:`fold_batchnorm` traces the model once with ``torch.fx`` and returns a
:class:`FoldedForward`: a copy of the model's *eval* forward in which every foldable
``Conv{1,2,3}d``/``Linear`` → ``BatchNorm`` pair is one layer with its own weight and bias. All
other submodules (and every parameter and buffer they hold) are **shared** with the model, so
perturbing the model's tensors in place perturbs the folded forward too. The folded layers'
weights are recomputed from the model's current (perturbed) layer weights and BatchNorm state by
:meth:`FoldedForward.refresh`, which writes them in place: a ``torch.compile`` of
``FoldedForward.module`` therefore compiles once and sees new weights at every grid point
without recompiling (parameters are graph inputs, not constants).

A pair is folded only when it is safe in eval mode: the layer's output feeds the BatchNorm and
nothing else, the BatchNorm tracks running statistics, the channel counts agree and, for
``Linear``, the output is 2-D (``BatchNorm1d`` normalises dim 1). The folded forward is checked
against the model's own output on an example batch; if they disagree (or tracing fails),
nothing is folded and :attr:`FoldedForward.reason` says why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from landscape.evaluate.weights import BATCHNORM

__all__ = ["FoldedForward", "fold_batchnorm", "folded_weights"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def folded_weights(
    weight: Tensor, bias: Tensor | None, batchnorm: BATCHNORM
) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``layer`` followed by ``batchnorm`` (eval mode) as one layer.

    ``weight`` is ``(C_out, ...)`` (a conv filter bank or a linear weight), ``bias`` ``(C_out,)``
    or None; the BatchNorm's current running statistics, scale and shift are used.
    """
    if batchnorm.running_mean is None or batchnorm.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    mean = batchnorm.running_mean.to(weight.dtype)
    scale = torch.rsqrt(batchnorm.running_var.to(weight.dtype) + batchnorm.eps)
    if batchnorm.weight is not None:
        scale = scale * batchnorm.weight.to(weight.dtype)
    shift = -mean if bias is None else bias - mean
    folded_bias = shift * scale
    if batchnorm.bias is not None:
        folded_bias = folded_bias + batchnorm.bias.to(weight.dtype)
    folded_weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return folded_weight, folded_bias


@dataclass
class FoldedForward:
    """The model's eval forward with BatchNorm folded into the preceding layers.

    ``module`` is the folded forward (an ``fx.GraphModule`` sharing every unfolded submodule
    with the model, or the model itself when nothing was folded); ``pairs`` lists
    ``(layer, batchnorm, folded_layer)`` for each fold; ``reason`` says why nothing was folded.
    Call :meth:`refresh` after changing the model's weights or BatchNorm statistics.
    """

    module: nn.Module
    pairs: list[tuple[nn.Module, BATCHNORM, nn.Module]] = field(default_factory=list)
    reason: str | None = None

    @property
    def num_folded(self) -> int:
        """Number of BatchNorm layers folded away."""
        return len(self.pairs)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute every folded weight from the model's current tensors, in place."""
        for layer, batchnorm, folded in self.pairs:
            weight, bias = folded_weights(layer.weight, layer.bias, batchnorm)
            folded.weight.copy_(weight)
            folded.bias.copy_(bias)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def _folded_layer(layer: nn.Module) -> nn.Module:
    """A private copy of ``layer`` with plain weight and bias parameters of its own."""
    from torch.nn.utils import parametrize

    new = copy.deepcopy(layer)
    if parametrize.is_parametrized(new):
        for name in list(new.parametrizations.keys()):
            parametrize.remove_parametrizations(new, name, leave_parametrized=True)
    for hooks in ("_forward_hooks", "_forward_pre_hooks"):
        getattr(new, hooks).clear()
    weight = layer.weight.detach()
    new.weight = nn.Parameter(weight.clone(), requires_grad=False)
    out_channels = weight.shape[0]
    new.bias = nn.Parameter(
        torch.zeros(out_channels, dtype=weight.dtype, device=weight.device), requires_grad=False
    )
    return new


def _close(a: Tensor, b: Tensor) -> bool:
    tol = 1e-10 if a.dtype == torch.float64 else 1e-4 if a.dtype == torch.float32 else 1e-2
    scale = 1.0 + float(b.abs().max()) if b.numel() else 1.0
    return a.shape == b.shape and float((a - b).abs().max()) <= tol * scale


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_input: Tensor) -> FoldedForward:
    """Trace ``model`` (which must be in eval mode) and fold its BatchNorm layers.

    ``example_input`` is one batch as the model takes it; it is used to read the output shapes
    of linear layers and to check the folded forward against the model. Never modifies
    ``model``. Returns a :class:`FoldedForward` whose weights are already refreshed.
    """
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    if model.training:
        raise ValueError("fold_batchnorm needs the model in eval mode")
    try:
        graph_module = fx.symbolic_trace(model)
        ShapeProp(graph_module).propagate(example_input)
    except Exception as error:  # noqa: BLE001 - any tracing failure means "do not fold"
        return FoldedForward(model, reason=f"torch.fx could not trace the model: {error}")

    modules = dict(graph_module.named_modules())
    pairs = []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORM):
            continue
        batchnorm = modules[node.target]
        source = node.args[0] if node.args else None
        if (
            len(node.args) != 1
            or node.kwargs
            or not isinstance(source, fx.Node)
            or source.op != "call_module"
            or not isinstance(modules.get(source.target), _FOLDABLE)
            or len(source.users) != 1
            or not batchnorm.track_running_stats
            or batchnorm.running_mean is None
        ):
            continue
        layer = modules[source.target]
        meta = source.meta.get("tensor_meta")
        out_channels = layer.weight.shape[0]
        if out_channels != batchnorm.num_features or meta is None:
            continue
        if isinstance(layer, nn.Linear) and len(meta.shape) != 2:
            continue
        folded = _folded_layer(layer)
        name = "_folded_" + source.target.replace(".", "_")
        while name in modules:
            name += "_"
        graph_module.add_submodule(name, folded)
        modules[name] = folded
        source.target = name
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        pairs.append((layer, batchnorm, folded))
    if not pairs:
        return FoldedForward(model, reason="no Conv/Linear -> BatchNorm pair to fold")
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.eval()
    result = FoldedForward(graph_module, pairs)
    result.refresh()
    expected = model(example_input)
    got = graph_module(example_input)
    if not (isinstance(expected, Tensor) and isinstance(got, Tensor) and _close(got, expected)):
        return FoldedForward(model, reason="the folded forward disagreed with the model")
    return result
