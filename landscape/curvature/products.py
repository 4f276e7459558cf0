"""Curvature-vector products of a sample-weighted mean loss, by reverse or forward-over-reverse AD.

The loss is ``L(theta) = sum_b w_b l(f(x_b; theta), y_b)`` with ``w_b = n_b / N``; ``theta`` are
the selected parameters (the others and the buffers are constants of the model call,
:func:`torch.func.functional_call`). Two engines compute ``H v`` (``H`` the Hessian of ``L``):

- :class:`ReverseProducts` (``mode="reverse"``, double backward): ``H v = grad <grad L, v>``.
  The first-order gradients ``g_b`` are built once per batch with ``create_graph=True``; with
  ``keep_graph`` their graphs are kept and each product is one backward pass through them
  (``autograd.grad(<g_b, v>, theta, retain_graph=True)``), no new forward; without it each
  product redoes the forward and first backward per batch (once per batch for all columns of a
  ``matmat``).
- :class:`ForwardProducts` (``mode="forward"``, forward-over-reverse): ``H v`` is the
  directional derivative of the gradient, ``torch.func.jvp`` of ``torch.func.grad``; one forward
  per batch and product, nothing kept between products.

With ``ggn`` both compute generalized Gauss-Newton products ``G v = sum_b w_b J_b^T H_b J_b v``
instead, ``J_b`` the Jacobian of the batch outputs with respect to ``theta`` and ``H_b`` the
Hessian of the batch's mean loss with respect to the outputs (:func:`output_hessian_product`):
``G`` drops the terms of ``H`` with second derivatives of the model and is positive
semi-definite. Reverse: ``J v`` by the double-vjp trick (``J^T u`` is linear in a dummy ``u``, so
``J v = d/du <J^T u, v>``), then ``J^T (H_b J v)`` by one vjp through the kept outputs graph.
Forward: ``J v`` by ``torch.func.jvp``, ``J^T`` by ``torch.func.vjp``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp
from torch.nn import functional as F

LOSSES = ("crossentropy", "mse")
PRODUCT_MODES = ("reverse", "forward")


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``mean((outputs - targets)^2)``, torch's ``mse_loss``, written out: ``mse_loss``'s
    backward fails under forward-mode AD ("ZeroTensors are immutable", torch 2.14)."""
    if outputs.shape != targets.shape:
        raise ValueError(
            f"mse: outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} differ in "
            "shape; reshape the targets (broadcasting them is rarely meant)"
        )
    return torch.square(outputs - targets).mean()


def loss_function(loss: str | Callable[[Tensor, Tensor], Tensor]) -> Callable:
    """The mean loss ``(outputs, targets) -> scalar`` of a loss name, or the callable itself."""
    if loss == "crossentropy":
        return F.cross_entropy
    if loss == "mse":
        return mean_squared_error
    return loss


def check_loss(loss: Any, ggn: bool) -> None:
    """``ValueError`` unless ``loss`` is a name of :data:`LOSSES` or a callable, and a name
    when ``ggn`` (the GGN needs the loss's Hessian in the outputs)."""
    if isinstance(loss, str) and loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES} or a callable, got {loss!r}")
    if not isinstance(loss, str) and not callable(loss):
        raise ValueError("loss must be 'crossentropy', 'mse' or a callable (outputs, targets)")
    if ggn and not isinstance(loss, str):
        raise ValueError(
            "ggn=True needs the loss's Hessian in the outputs, known for 'crossentropy' and "
            "'mse' only: use one of those, or ggn=False with a callable loss"
        )


def checked_scalar(value: Any) -> Tensor:
    """``value`` if it is a scalar tensor, else a ``ValueError`` saying how to fix the loss."""
    if not isinstance(value, Tensor) or value.ndim != 0:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"the loss must return a scalar tensor (the mean over the batch), got {got}: "
            "reduce it with .mean() (or reduction='mean')"
        )
    return value


def output_hessian_product(loss: str, outputs: Tensor, u: Tensor) -> Tensor:
    """``H u`` for ``H`` the Hessian of the mean ``loss`` over a batch with respect to its
    ``outputs``. Cross-entropy (softmax over dim 1; ``M = outputs.numel() / C`` positions, the
    batch size for ``(n, C)`` logits): ``(diag(p) - p p^T) u / M`` at each position (for
    probability targets summing to 1 as well as class indices). MSE: ``2 u / numel``."""
    if loss == "crossentropy":
        if outputs.ndim < 2:
            raise ValueError(
                "ggn with crossentropy needs outputs shaped (batch, classes, ...), got "
                f"{tuple(outputs.shape)}"
            )
        probs = torch.softmax(outputs, dim=1)
        weighted = probs * u
        positions = outputs.numel() // outputs.shape[1]
        return (weighted - probs * weighted.sum(dim=1, keepdim=True)) / positions
    return u * (2.0 / outputs.numel())


def select_parameters(model: nn.Module, params: Any) -> list[str]:
    """Names of the selected parameters in model order: all requiring grad (``None``), those
    named, or those for which ``params(name, parameter)`` is true."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        chosen = [n for n, _ in trainable]
    elif callable(params):
        chosen = [n for n, p in trainable if params(n, p)]
    else:
        if isinstance(params, str):
            raise ValueError(f"params must be a sequence of names: params=[{params!r}]")
        wanted, every = list(params), dict(model.named_parameters())
        unknown = [n for n in wanted if n not in every]
        if unknown:
            raise ValueError(
                f"params names {unknown}, which the model lacks; its parameters are "
                f"{list(every)[:8]}{' ...' if len(every) > 8 else ''}"
            )
        frozen = [n for n in wanted if not every[n].requires_grad]
        if frozen:
            raise ValueError(
                f"params names {frozen}, which do not require grad: call requires_grad_() "
                "on them or leave them out"
            )
        chosen = [n for n, _ in trainable if n in set(wanted)]
    if not chosen:
        raise ValueError(
            f"no parameter selected: the model has {len(trainable)} parameters requiring "
            "grad and params chose none; select some (params=None takes all requiring grad)"
        )
    every = dict(model.named_parameters())
    dtypes = {every[name].dtype for name in chosen}
    if len(dtypes) != 1 or not every[chosen[0]].is_floating_point():
        raise ValueError(
            f"the selected parameters must share one floating dtype, got "
            f"{sorted(map(str, dtypes))}: convert the model (model.double()) or select "
            "parameters of one dtype"
        )
    return chosen


class ProductSetting:
    """What the engines share: ``model``, the selected parameters (``names``; used detached),
    the other parameters as constants, the batches with weights ``n_b / N``, the
    loss (name or callable) and whether products are of the GGN."""

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        batches: Sequence[tuple[Tensor, Tensor]],
        weights: Sequence[float],
        loss: str | Callable[[Tensor, Tensor], Tensor],
        ggn: bool,
    ) -> None:
        self.model = model
        self.names = list(names)
        every = {name: p.detach() for name, p in model.named_parameters()}
        self.primals = [every[name] for name in self.names]
        self.constants = {name: p for name, p in every.items() if name not in set(self.names)}
        self.batches = [(x, y, float(w)) for (x, y), w in zip(batches, weights, strict=True)]
        self.loss = loss
        self.loss_fn = loss_function(loss)
        self.ggn = ggn

    def outputs(self, params: Sequence[Tensor], inputs: Tensor) -> Tensor:
        """The model's outputs on ``inputs`` with the selected parameters set to ``params``."""
        tensors = {**self.constants, **dict(zip(self.names, params, strict=True))}
        return functional_call(self.model, tensors, (inputs,))

    def weighted_loss(self, outputs: Tensor, targets: Tensor, weight: float) -> Tensor:
        """``weight`` times the batch's mean loss."""
        return checked_scalar(self.loss_fn(outputs, targets)) * weight

    def zeros(self) -> list[Tensor]:
        """One zero tensor per selected parameter."""
        return [torch.zeros_like(p) for p in self.primals]

    def loss_and_gradient(self) -> tuple[Tensor, list[Tensor]]:
        """This process's share of ``L`` and of its gradient (one forward and backward per
        batch, nothing kept)."""
        leaves = [p.detach().requires_grad_() for p in self.primals]
        reference = self.primals[0]
        total = torch.zeros((), dtype=reference.dtype, device=reference.device)
        gradient = self.zeros()
        for inputs, targets, weight in self.batches:
            loss = self.weighted_loss(self.outputs(leaves, inputs), targets, weight)
            parts = torch.autograd.grad(loss, leaves, materialize_grads=True)
            total = total + loss.detach()
            torch._foreach_add_(gradient, parts)
        return total, gradient


def _contract(tensors: Sequence[Tensor], vector: Sequence[Tensor]) -> Tensor | None:
    """``sum_i <tensors_i, vector_i>`` over the tensors that carry a graph (None if none do)."""
    terms = [(t * v).sum() for t, v in zip(tensors, vector, strict=True) if t.requires_grad]
    return torch.stack(terms).sum() if terms else None


class ReverseProducts:
    """Products by double backward; ``keep_graph``: the first-order graphs of all batches are
    built at the first product and kept (see the module docstring)."""

    mode = "reverse"

    def __init__(self, setting: ProductSetting, keep_graph: bool) -> None:
        self.setting = setting
        self.keep_graph = keep_graph
        self.leaves = [p.detach().requires_grad_() for p in setting.primals]
        self.graphs: list[tuple[float, Tensor, Any]] | None = None

    def build_graphs(self) -> None:
        """Build (and keep, when graphs are kept) the first-order graphs now, without a
        product: the probe's warm-up of this mode."""
        for _ in self._records():
            pass

    def _records(self) -> Iterator[tuple[float, Tensor, Any]]:
        """Per batch ``(weight, weighted loss, state)``: the state is the first-order
        gradients (created with a graph) or, for the GGN, the outputs."""
        if self.graphs is not None:
            yield from self.graphs
            return
        setting, built = self.setting, []
        for inputs, targets, weight in setting.batches:
            outputs = setting.outputs(self.leaves, inputs)
            loss = setting.weighted_loss(outputs, targets, weight)
            state = outputs
            if not setting.ggn:
                state = torch.autograd.grad(
                    loss, self.leaves, create_graph=True, materialize_grads=True
                )
            record = (weight, loss, state)
            if self.keep_graph:
                built.append(record)
            yield record
        if self.keep_graph:
            self.graphs = built

    def _hessian(self, gradients: Sequence[Tensor], vector: Sequence[Tensor]) -> Sequence[Tensor]:
        dot = _contract(gradients, vector)
        if dot is None:  # the loss is at most linear in the parameters
            return self.setting.zeros()
        return torch.autograd.grad(dot, self.leaves, retain_graph=True, materialize_grads=True)

    def _ggn(self, outputs: Tensor, vector: Sequence[Tensor], weight: float) -> Sequence[Tensor]:
        dummy = torch.zeros_like(outputs, requires_grad=True)
        pulled = torch.autograd.grad(
            outputs, self.leaves, dummy, create_graph=True, materialize_grads=True
        )
        dot = _contract(pulled, vector)
        if dot is None:  # the outputs do not depend on the parameters
            return self.setting.zeros()
        (jv,) = torch.autograd.grad(dot, dummy, retain_graph=True)
        cotangent = output_hessian_product(self.setting.loss, outputs.detach(), jv) * weight
        return torch.autograd.grad(
            outputs, self.leaves, cotangent, retain_graph=True, materialize_grads=True
        )

    def apply(self, vectors: Sequence[Sequence[Tensor]]) -> list[list[Tensor]]:
        """This process's share of the product with each vector (per-parameter tensors)."""
        totals = [self.setting.zeros() for _ in vectors]
        for weight, _, state in self._records():
            for total, vector in zip(totals, vectors, strict=True):
                if self.setting.ggn:
                    product = self._ggn(state, vector, weight)
                else:
                    product = self._hessian(state, vector)
                torch._foreach_add_(total, [p.detach() for p in product])
        return totals

    def loss_and_gradient(self) -> tuple[Tensor, list[Tensor]]:
        """As :meth:`ProductSetting.loss_and_gradient`, from the kept graphs when kept."""
        if not self.keep_graph:
            return self.setting.loss_and_gradient()
        total, gradient = None, self.setting.zeros()
        for _, loss, state in self._records():
            if self.setting.ggn:
                state = torch.autograd.grad(
                    loss, self.leaves, retain_graph=True, materialize_grads=True
                )
            torch._foreach_add_(gradient, [g.detach() for g in state])
            total = loss.detach() if total is None else total + loss.detach()
        if total is None:
            total = torch.zeros((), dtype=gradient[0].dtype, device=gradient[0].device)
        return total, gradient


class ForwardProducts:
    """Products by forward-over-reverse AD with :mod:`torch.func` (see the module docstring)."""

    mode = "forward"

    def __init__(self, setting: ProductSetting) -> None:
        self.setting = setting
        # torch loads its forward-AD decompositions at the first jvp of the process, through
        # the deprecated torch.jit.script: do that once here, without its FutureWarning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            jvp(torch.sin, (torch.zeros(1),), (torch.ones(1),))

    def apply(self, vectors: Sequence[Sequence[Tensor]]) -> list[list[Tensor]]:
        """This process's share of the product with each vector (per-parameter tensors)."""
        setting = self.setting
        primals = setting.primals
        totals = [setting.zeros() for _ in vectors]
        for inputs, targets, weight in setting.batches:

            def outputs_of(params: list[Tensor], inputs: Tensor = inputs) -> Tensor:
                return setting.outputs(params, inputs)

            if setting.ggn:
                outputs, pull = vjp(outputs_of, primals)
                for total, vector in zip(totals, vectors, strict=True):
                    _, jv = jvp(outputs_of, (primals,), (list(vector),))
                    hjv = output_hessian_product(setting.loss, outputs, jv) * weight
                    (product,) = pull(hjv)
                    torch._foreach_add_(total, product)
                continue

            def loss_of(params: list[Tensor], inputs=inputs, targets=targets, weight=weight):
                return setting.weighted_loss(outputs_of(params, inputs), targets, weight)

            gradient_of = grad(loss_of)
            for total, vector in zip(totals, vectors, strict=True):
                _, product = jvp(gradient_of, (primals,), (list(vector),))
                torch._foreach_add_(total, product)
        return totals

    def loss_and_gradient(self) -> tuple[Tensor, list[Tensor]]:
        """As :meth:`ProductSetting.loss_and_gradient`."""
        return self.setting.loss_and_gradient()


def make_products(
    mode: str, setting: ProductSetting, keep_graph: bool
) -> ReverseProducts | ForwardProducts:
    """The engine of ``mode`` (one of :data:`PRODUCT_MODES`)."""
    if mode == "reverse":
        return ReverseProducts(setting, keep_graph)
    if mode == "forward":
        return ForwardProducts(setting)
    raise ValueError(f"mode must be one of {PRODUCT_MODES}, got {mode!r}")
