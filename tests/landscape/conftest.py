"""Fixtures shared by the ``landscape`` tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


@pytest.fixture(scope="session", autouse=True)
def probe_cache_file(tmp_path_factory):
    """``HessianOperator(mode="auto")`` remembers its product mode in a file: the tests (and
    the processes they start) use a file of their own, not the user's cache."""
    saved = os.environ.get("LANDSCAPE_PROBE_CACHE")
    path = tmp_path_factory.mktemp("probe-cache") / "hessian-product-modes.json"
    os.environ["LANDSCAPE_PROBE_CACHE"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("LANDSCAPE_PROBE_CACHE", None)
    else:
        os.environ["LANDSCAPE_PROBE_CACHE"] = saved


#: environment that would make an in-process CLI run believe it is under MPI or in debug mode
CLI_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
CLI_ENV += ("SAMLAB_DEBUG", "LANDSCAPE_TRACEBACK")


@pytest.fixture
def cli_workdir(tmp_path, monkeypatch):
    """Run in a scratch directory holding the test factories, outside MPI and debug mode; one
    torch thread, restored after (the CLI tests make it autouse)."""
    shutil.copy(Path(__file__).resolve().parent / "_factories.py", tmp_path / "_factories.py")
    monkeypatch.chdir(tmp_path)
    for key in CLI_ENV:
        monkeypatch.delenv(key, raising=False)
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)
