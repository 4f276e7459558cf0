"""DDP for the classification trainer: torchrun's environment, the process group, the wrapper.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) :func:`world_from_env` finds
the world, :func:`init` starts the process group (gloo on CPU, nccl on CUDA; CUDA ranks use
``cuda:LOCAL_RANK``), :func:`wrap` converts BatchNorm to SyncBatchNorm when asked and wraps the
model in ``DistributedDataParallel``, and :func:`sum_over_ranks` adds the epoch's counters of
all ranks. The batch size is the global batch: every rank steps on its ``1/world`` part of each
batch (:class:`~samlab.train.classify.batches.Batches`), so with the default global
perturbation ``world`` ranks compute the steps of one process on the whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["World", "init", "sum_over_ranks", "world_from_env", "wrap"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """The DDP world of torchrun's environment variables (one process when they are unset)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return World()
    return World(
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
    )


def init(world: World, device: torch.device) -> torch.device:
    """Start the process group (once) and return this rank's device."""
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(model: nn.Module, device: torch.device, *, sync_bn: bool) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    import torch.distributed as dist

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
