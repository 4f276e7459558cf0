"""Optional packages (h5py, matplotlib, ...), imported inside the functions that need them.

landscape depends on torch and numpy only at import time (DESIGN.md §9.5); a function that
needs another package imports it through :func:`import_optional`, which names what is missing
and how to install it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, why: str) -> ModuleType:
    """``module`` imported; ``ImportError(why)`` (naming the package to install) if it is not
    installed."""
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - h5py and matplotlib are dependencies
        raise ImportError(why) from err
