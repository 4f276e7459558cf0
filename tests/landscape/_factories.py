"""Tiny model and data factories for the ``landscape`` command-line and MPI tests.

The command line reaches them as ``_factories:NAME`` from the directory holding this file (it
puts the current directory on ``sys.path``). Everything is seeded, so every process and every
MPI rank builds the same model and the same data.

Fault injection for the tests, read from the environment at every forward pass (per process):

- ``LANDSCAPE_TEST_SLEEP``: seconds to sleep in every forward (spreads work over MPI ranks);
- ``LANDSCAPE_TEST_KILL_AFTER``: after that many forwards the process kills itself with
  SIGKILL (a run killed mid-way, nothing flushed or closed);
- ``LANDSCAPE_TEST_RAISE_AFTER``: after that many forwards the forward raises RuntimeError;
- ``LANDSCAPE_TEST_RANK``: restricts the two faults above to that MPI rank (``PMI_RANK``).
"""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn

NUM_CLASSES = 4
NUM_SAMPLES = 256
_forwards = 0


def _fault_injection() -> None:
    global _forwards
    _forwards += 1
    sleep = float(os.environ.get("LANDSCAPE_TEST_SLEEP", "0") or 0)
    if sleep > 0:
        time.sleep(sleep)
    rank = os.environ.get("LANDSCAPE_TEST_RANK")
    if rank is not None and rank != os.environ.get("PMI_RANK", "0"):
        return
    kill_after = int(os.environ.get("LANDSCAPE_TEST_KILL_AFTER", "0") or 0)
    if kill_after and _forwards > kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    raise_after = int(os.environ.get("LANDSCAPE_TEST_RAISE_AFTER", "0") or 0)
    if raise_after and _forwards > raise_after:
        raise RuntimeError(f"injected failure after {raise_after} forward passes")


class SmallCNN(nn.Module):
    """conv(1->4) + BatchNorm + ReLU, conv(4->8) + BatchNorm + ReLU, pool, linear(8->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, padding=1, stride=2),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _fault_injection()
        return self.head(self.features(x))


class SmallMLP(nn.Module):
    """A different architecture on the same inputs (for direction-file mismatches)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _fault_injection()
        return self.net(x)


def _synthetic(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    inputs = torch.randn(n, 1, 8, 8, generator=generator)
    # Make the classes learnable: a class-dependent bright quadrant.
    for c in range(NUM_CLASSES):
        rows, cols = divmod(c, 2)
        inputs[targets == c, :, 4 * rows : 4 * rows + 4, 4 * cols : 4 * cols + 4] += 1.5
    return inputs, targets


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """256 training samples ``(inputs (N, 1, 8, 8), targets (N,))``, seed 0."""
    return _synthetic(0, NUM_SAMPLES)


def saved_data() -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` read from ``data.pt`` in the current directory: a data file that
    can change between a run and its resume (same factory, sizes and indices)."""
    inputs, targets = torch.load("data.pt", weights_only=True)
    return inputs, targets


def interrupting_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Ctrl-C while the data are built."""
    raise KeyboardInterrupt


def broken_data() -> tuple[torch.Tensor, torch.Tensor]:
    """An unexpected failure inside a factory (not a user mistake landscape can name)."""
    raise RuntimeError("the data server went away")


def test_data() -> tuple[torch.Tensor, torch.Tensor]:
    """128 test samples, seed 1."""
    return _synthetic(1, NUM_SAMPLES // 2)


def loader():
    """The training data as a (shuffling) DataLoader: landscape reads it in index order."""
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(*data()), batch_size=32, shuffle=True)


def empty() -> tuple[torch.Tensor, torch.Tensor]:
    """No samples at all."""
    return torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    with torch.no_grad():  # BatchNorm running statistics that are not the trivial 0 / 1
        model.train()
        model(data()[0][:128])
        model.eval()
    return model


def cnn() -> nn.Module:
    """The small CNN with BatchNorm, weights seeded (the same in every process)."""
    return _seeded(SmallCNN, 0)


def mlp() -> nn.Module:
    """A small MLP, weights seeded."""
    return _seeded(SmallMLP, 0)


def unseeded_cnn() -> nn.Module:
    """The small CNN with torch's per-process random initialisation (differs across ranks)."""
    return SmallCNN().eval()


def rank1_not_a_model() -> nn.Module | str:
    """The small CNN, except on MPI rank 1 (``PMI_RANK``): not an nn.Module (a user mistake
    on one rank only)."""
    return "not a model" if os.environ.get("PMI_RANK") == "1" else cnn()


def not_a_model() -> str:
    """A factory returning something that is not an nn.Module."""
    return "not a model"
