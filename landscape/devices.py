"""The device rule shared by every command line of this repository.

* An explicit device (``--device cuda`` or ``--device cuda:N``) that this machine does not have
  is an error: the user asked for that device by name.
* loss-landscape's boolean ``--cuda`` is a habit flag: without a CUDA device it prints one line,
  ``note: --cuda: no CUDA device, running on CPU``, and the command runs on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["NO_CUDA_NOTE", "resolve_device"]

#: what ``--cuda`` prints on a machine without a CUDA device
NO_CUDA_NOTE = "note: --cuda: no CUDA device, running on CPU"


def resolve_device(
    device: str | None = None,
    cuda: bool = False,
    *,
    local_index: int = 0,
    note: Callable[[str], Any] = print,
) -> Any:
    """The ``torch.device`` for the flags ``--device DEVICE`` and ``--cuda``.

    ``device`` wins when given: a CUDA device this machine lacks raises ``ValueError`` naming
    the devices it has. Otherwise ``cuda=True`` gives GPU ``local_index`` modulo the visible
    GPUs (one per MPI rank of a node), or, without a GPU, the CPU after calling ``note`` with
    :data:`NO_CUDA_NOTE`. Neither: the CPU.
    """
    import torch

    if device:
        try:
            chosen = torch.device(device)
        except RuntimeError:
            chosen = None
        if chosen is None or chosen.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {device}: the device must be cpu, cuda or cuda:N")
        if chosen.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise ValueError(
                    f"--device {device}: this machine has no CUDA device; use --device cpu "
                    "(or --cuda, which falls back to the CPU with a note)"
                )
            if chosen.index is not None and chosen.index >= count:
                raise ValueError(
                    f"--device {device}: no such CUDA device; this machine has {count} "
                    f"(cuda:0 .. cuda:{count - 1})"
                )
        return chosen
    if cuda:
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            note(NO_CUDA_NOTE)
            return torch.device("cpu")
        return torch.device("cuda", int(local_index) % torch.cuda.device_count())
    return torch.device("cpu")
