"""Fixtures shared by the ``landscape`` tests."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F


def _dense_hessian(model, inputs, targets, loss_fn=F.cross_entropy, names=None) -> torch.Tensor:
    """The exact Hessian of the mean loss over all samples by ``torch.autograd.functional``
    (one call, no batching, eval mode), over the parameters ``names`` (default: all)."""
    every = dict(model.named_parameters())
    names = names or list(every)
    flat = torch.cat([every[n].detach().reshape(-1) for n in names])

    def loss_of(theta):
        params, start = {}, 0
        for name in names:
            numel = every[name].numel()
            params[name] = theta[start : start + numel].view(every[name].shape)
            start += numel
        return loss_fn(functional_call(model, params, (inputs,)), targets)

    was = model.training
    model.eval()
    try:
        return torch.autograd.functional.hessian(loss_of, flat)
    finally:
        model.train(was)


@pytest.fixture(scope="session")
def dense_hessian():
    """``dense_hessian(model, inputs, targets, loss_fn=F.cross_entropy, names=None)``: the
    reference Hessian the curvature tests compare against."""
    return _dense_hessian
