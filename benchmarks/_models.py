"""Models the benchmarks in ``benchmarks/`` share: seeded, with non-trivial BatchNorm state.

A freshly initialised BatchNorm (running mean 0, variance 1, weight 1, bias 0) is the identity
up to a scale, which flatters folding and curvature alike; the benchmarks draw its statistics
and affine parameters from a seeded generator instead.
"""

from __future__ import annotations

import torch
from torch import nn


def seeded_model(name: str, seed: int = 0) -> nn.Module:
    """``samlab.models.create_model(name)`` initialised under ``seed``, its BatchNorm state drawn
    from a generator seeded with ``seed + 1``, in eval mode."""
    from samlab.models import create_model

    torch.manual_seed(seed)
    model = create_model(name)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.75 + 0.5 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model.eval()
