"""Small helpers shared by notebooks, trainers and scripts: the smoke switch and seeding."""

from __future__ import annotations

import operator
import os
import random

import numpy as np
import torch

__all__ = ["SMOKE_ENV_VAR", "epoch_generator", "seed_everything", "smoke_mode"]

SMOKE_ENV_VAR = "SAMLAB_SMOKE"
"""Name of the environment variable that turns smoke mode on (``SAMLAB_SMOKE=1``)."""

_TRUE_VALUES = ("1", "true", "yes")
_FALSE_VALUES = ("0", "false")


def smoke_mode() -> bool:
    """Return whether smoke mode is on, read from the ``SAMLAB_SMOKE`` environment variable.

    Smoke mode asks notebooks and trainers for the smallest run that still exercises every code
    path (few steps, tiny data), so the test suite can execute them in seconds on a CPU.

    ``"1"``, ``"true"`` and ``"yes"`` (any case, surrounding spaces ignored) mean on; unset,
    empty, ``"0"`` and ``"false"`` mean off.

    Raises:
        ValueError: for any other value, naming the variable and the accepted values, so that a
            typo such as ``SAMLAB_SMOKE=ture`` fails loudly instead of running the full workload.
    """
    raw = os.environ.get(SMOKE_ENV_VAR)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE_VALUES:
        return True
    if value in _FALSE_VALUES or value == "":
        return False
    accepted = ", ".join(repr(v) for v in _TRUE_VALUES + _FALSE_VALUES)
    raise ValueError(
        f"environment variable {SMOKE_ENV_VAR}={raw!r} is not understood; accepted values "
        f"(case-insensitive): {accepted}, or leave it unset"
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all CUDA devices).

    The global generators are seeded for code that does not take a generator (weight
    initialisation in ``nn.Module`` constructors, DataLoader shuffling without one). Prefer the
    returned generator wherever an API accepts one, so the randomness stays explicit and
    recorded (DESIGN.md §9.7).

    Args:
        seed: an integer (Python or NumPy) in ``[0, 2**32)``, NumPy's limit for its global seed.

    Returns:
        A fresh CPU ``torch.Generator`` seeded with ``seed``.

    Raises:
        TypeError: if ``seed`` is not an integer (``bool`` and ``float`` are refused).
        ValueError: if ``seed`` is outside ``[0, 2**32)``.
    """
    if isinstance(seed, bool):
        raise TypeError("seed must be an int, got bool")
    try:
        seed = operator.index(seed)  # accepts int and NumPy integers, refuses floats
    except TypeError:
        raise TypeError(f"seed must be an int, got {type(seed).__name__}") from None
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator that draws the data order of ``epoch`` (0-based) in a run seeded by
    ``seed``: seeded by ``seed * 1_000_003 + epoch``, so a resumed run draws the same order as an
    uninterrupted one without saving generator state."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
