"""samlab: sharpness-aware minimization optimizers and trainers for PyTorch.

Subpackages: ``samlab.optim`` (SAM, ASAM, GSAM, LookSAM, one-step SAM, registry),
``samlab.train`` (closures, checkpoints, trainers), ``samlab.models``, ``samlab.datasets``.
Loss landscapes live in the separate ``landscape`` package; tensor-list kernels in ``kernels``.
"""

from samlab.utils import seed_everything, smoke_mode

__version__ = "0.2.0"
__all__ = ["__version__", "seed_everything", "smoke_mode"]
