"""``landscape.compute_surface``: the one-process loop (resume computes only what is missing), and
real MPI: the venv's own ``mpiexec -n 2/3`` running ``python -m mpi4py -m landscape surface ...
--mpi`` (one thread per rank, a timeout; marked ``mpi``).

- 2 and 3 ranks write the same surface as one process, bit for bit, and report every rank's
  share of the points;
- a run killed mid-way (SIGKILL of rank 0 after it has flushed a chunk) resumes and equals an
  uninterrupted run, computing only the missing points;
- a rank that raises aborts the whole job (non-zero exit, no hang).

The reference single-process surfaces are computed in this process with ``compute_surface``'s
one-process loop through ``landscape.cli.main`` (one thread).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")

from landscape import compute_surface, format_rank_report  # noqa: E402
from landscape.cli import main  # noqa: E402
from landscape.io import SurfaceWriter, load_surface  # noqa: E402
from tests.mpi_jobs import MPIEXEC, job_environment, launch  # noqa: E402

HERE = Path(__file__).resolve().parent
TIMEOUT = 300
GRID = ["--x", "-1:1:5", "--y", "-0.5:1:5"]
BASE = [
    "surface",
    "--model",
    "_factories:cnn",
    "--data",
    "_factories:data",
    "--test_data",
    "_factories:test_data",
    "--batch_size",
    "64",
    "--no_progress",
    *GRID,
]

try:
    import mpi4py  # noqa: F401

    _NO_MPI = None if MPIEXEC.exists() else f"no mpiexec next to {sys.executable} (pip mpich)"
except ImportError:  # pragma: no cover - the dev extra installs mpi4py
    _NO_MPI = "mpi4py is not installed (pip install mpi4py mpich)"
needs_mpi = pytest.mark.skipif(_NO_MPI is not None, reason=str(_NO_MPI))


# --------------------------------------------------------------------------------------------
# one process (no mpi4py import)
# --------------------------------------------------------------------------------------------


class FakeEvaluator:
    """``loss = 10 x + y`` at every point; records how many points each call got."""

    metric_names = ("train_loss", "train_loss_se")
    ndim = 2
    provenance = {"kind": "fake"}

    def __init__(self):
        self.calls = []

    def evaluate_points(self, coords):
        self.calls.append(len(coords))
        return {"train_loss": 10 * coords[:, 0] + coords[:, 1], "train_loss_se": 0 * coords[:, 0]}


def expected_loss(x, y):
    xx, yy = np.meshgrid(x, y)
    return 10 * xx + yy


def test_one_process_in_memory():
    x, y = np.linspace(-1, 1, 5), np.linspace(0, 1, 3)
    evaluator = FakeEvaluator()
    surface = compute_surface(evaluator, x=x, y=y, chunk_size=4, progress=False)
    np.testing.assert_array_equal(surface.metrics["train_loss"], expected_loss(x, y))
    assert surface.done.all() and evaluator.calls == [4, 4, 4, 3]
    assert surface.provenance["kind"] == "fake" and surface.provenance["nproc"] == 1
    (rank,) = surface.provenance["ranks"]
    assert (rank["rank"], rank["points"], rank["chunks"]) == (0, 15, 4)
    assert format_rank_report([rank])[0].startswith("rank 0: 15 points (100%) in 4 chunks")


def test_one_process_resume_computes_only_missing(tmp_path):
    x, y = np.linspace(-1, 1, 5), np.linspace(0, 1, 3)
    names = FakeEvaluator.metric_names
    path = tmp_path / "partial.h5"
    with SurfaceWriter.open(path, x=x, y=y, metric_names=names, provenance={"p": 1}) as writer:
        done = np.array([0, 1, 2, 7, 14])
        coords = np.stack(np.meshgrid(x, y), -1).reshape(-1, 2)[done]
        writer.write(done, FakeEvaluator().evaluate_points(coords))
    evaluator = FakeEvaluator()
    with SurfaceWriter.open(path, x=x, y=y, metric_names=names, provenance={"p": 1}) as writer:
        surface = compute_surface(evaluator, writer, chunk_size=100, progress=False)
    assert evaluator.calls == [10]
    assert surface.provenance["ranks"][0]["points"] == 10 and surface.provenance["p"] == 1
    np.testing.assert_array_equal(load_surface(path).metrics["train_loss"], expected_loss(x, y))


def test_one_process_rejects_inconsistent_input(tmp_path):
    with pytest.raises(ValueError, match="needs a writer or the grid"):
        compute_surface(FakeEvaluator(), progress=False)
    with pytest.raises(ValueError, match="1-D"):
        compute_surface(FakeEvaluator(), x=np.zeros(3), progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        compute_surface(FakeEvaluator(), x=np.zeros(3), y=np.zeros(2), chunk_size=0)
    x = np.linspace(0, 1, 3)
    with SurfaceWriter.open(
        tmp_path / "other.h5", x=x, y=x, metric_names=("test_loss",), provenance={}
    ) as writer:
        with pytest.raises(ValueError, match="holds metrics"):
            compute_surface(FakeEvaluator(), writer, progress=False)


# --------------------------------------------------------------------------------------------
# MPI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, names",
    [
        (
            "landscape.surface",
            ["Surface", "SurfaceEvaluator", "as_tensors", "grid_coordinates"]
            + ["surface_1d", "surface_2d"],
        ),
        ("landscape.distributed", ["compute_surface", "format_rank_report"]),
    ],
)
def test_moved_modules_warn_and_reexport_only_public_names(monkeypatch, module, names):
    """``landscape.surface`` and ``landscape.distributed`` stay one release: importing them
    warns, naming the new place, and they hold exactly their former public names, the objects
    of :mod:`landscape`."""
    import importlib

    import landscape

    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{module} is deprecated.*from landscape"):
        moved = importlib.import_module(module)
    assert moved.__all__ == names
    for name in names:
        assert name in landscape.__all__ and getattr(moved, name) is getattr(landscape, name)
    assert {name for name in vars(moved) if not name.startswith("_")} == {*names, "warnings"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi")
    shutil.copy(HERE / "_factories.py", path / "_factories.py")
    return path


@pytest.fixture(scope="module")
def reference(workdir):
    """The surface computed by one process (this one, one thread)."""
    old_cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(workdir)
    try:
        assert main([*BASE, "--surf_file", str(workdir / "single.h5"), "--threads", "1"]) == 0
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(threads)
    return load_surface(workdir / "single.h5")


def mpirun(ranks, workdir, surf_file, extra_env=None, extra_args=(), base=BASE):
    """``mpiexec -n RANKS python -m mpi4py -m landscape surface ... --mpi``; returns
    (returncode, stdout, stderr, seconds)."""
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "landscape"]
    command += [*base, "--surf_file", str(surf_file), "--mpi", *extra_args]
    env = job_environment(extra=extra_env)
    result = launch(command, cwd=workdir, env=env, timeout=TIMEOUT)
    wait_for_ranks(str(surf_file))
    return result


def _rank_pids(marker):
    """Processes (not zombies) whose command line names ``marker`` or that hold it open."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            # An exiting process has already dropped its memory (empty cmdline) but may still
            # hold the file (and its HDF5 lock) for a while.
            fds = []
            for fd in os.listdir(f"/proc/{entry}/fd"):
                try:
                    fds.append(os.readlink(f"/proc/{entry}/fd/{fd}"))
                except OSError:
                    pass
        except OSError:
            continue
        if state not in ("Z", "X") and (marker in cmdline or marker in fds):
            pids.append(int(entry))
    return pids


def wait_for_ranks(marker, timeout=30.0):
    """Hydra's mpiexec can return before the ranks it killed have exited (each rank runs in its
    own session; an exiting rank holds the HDF5 file, and its lock, for up to ~0.2 s): wait for
    them, and fail if any outlives ``timeout``."""
    if not os.path.isdir("/proc"):  # pragma: no cover - not Linux
        time.sleep(1.0)
        return
    deadline = time.monotonic() + timeout
    while pids := _rank_pids(marker):
        if time.monotonic() > deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pytest.fail(f"MPI ranks {pids} outlived mpiexec by {timeout} s")
        time.sleep(0.02)


def assert_same_bits(surface, reference):
    assert set(surface.metrics) == set(reference.metrics)
    assert surface.done.all()
    for name, values in reference.metrics.items():
        got = surface.metrics[name]
        assert got.dtype == values.dtype == np.float64
        assert got.tobytes() == values.tobytes(), f"{name} differs from one process"


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_mpi_surface_equals_one_process_bit_for_bit(workdir, reference, ranks):
    surf = workdir / f"mpi{ranks}.h5"
    # A little sleep per forward, so that every rank gets a share on a busy 2-core machine.
    code, out, err, _ = mpirun(ranks, workdir, surf, {"LANDSCAPE_TEST_SLEEP": "0.004"})
    assert code == 0, f"{out}\n{err}"
    surface = load_surface(surf)
    assert_same_bits(surface, reference)
    assert surface.provenance["nproc"] == ranks

    # Per-rank shares are reported (stdout and the JSON beside the surface).
    run = json.loads(Path(f"{surf}.json").read_text())["runs"][-1]
    shares = {r["rank"]: r["points"] for r in run["ranks"]}
    assert sorted(shares) == list(range(ranks))
    assert sum(shares.values()) == run["computed_points"] == 25
    assert sum(points > 0 for points in shares.values()) >= 2, shares  # dynamic, not one rank
    for rank in range(ranks):
        assert f"rank {rank}: {shares[rank]} points" in out


@pytest.mark.mpi
@needs_mpi
def test_killed_run_resumes_to_the_same_surface(workdir, reference):
    surf = workdir / "killed.h5"
    # Rank 0 makes 1 forward in the factory, 2 x 6 for the centre check (train 4 + test 2
    # batches, evaluator and reference), then 6 per point: SIGKILL it in its second chunk, after
    # its first chunk (4 points) has been written and flushed.
    kill_after = 1 + 12 + 6 * 4 + 6 * 2 + 3
    code, out, err, _ = mpirun(
        2,
        workdir,
        surf,
        {
            "LANDSCAPE_TEST_KILL_AFTER": str(kill_after),
            "LANDSCAPE_TEST_RANK": "0",
            "LANDSCAPE_TEST_SLEEP": "0.004",
        },
    )
    assert code != 0, f"the run was not killed:\n{out}\n{err}"
    partial = load_surface(surf, wait=30)
    done_before = int(partial.done.sum())
    assert 3 <= done_before < 25, done_before
    for name, values in reference.metrics.items():  # what was written is already final
        got = partial.metrics[name][partial.done]
        assert got.tobytes() == values[partial.done].tobytes()
        assert np.isnan(partial.metrics[name][~partial.done]).all()

    # The same command again (here on one process) computes only what is missing.
    old_cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(workdir)
    try:
        assert main([*BASE, "--surf_file", str(surf), "--threads", "1"]) == 0
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(threads)
    run = json.loads(Path(f"{surf}.json").read_text())["runs"][-1]
    assert run["computed_points"] == 25 - done_before
    assert_same_bits(load_surface(surf), reference)


@pytest.mark.mpi
@needs_mpi
def test_failing_rank_aborts_the_job(workdir):
    surf = workdir / "failing.h5"
    # Rank 2 raises in its first point while rank 0 may be waiting for it.
    code, out, err, seconds = mpirun(
        3,
        workdir,
        surf,
        {"LANDSCAPE_TEST_RAISE_AFTER": "3", "LANDSCAPE_TEST_RANK": "2"},
    )
    assert code != 0
    assert seconds < TIMEOUT
    assert (
        "[landscape rank 2] error: RuntimeError: injected failure after 3 forward passes; "
        "aborting the MPI job (run with SAMLAB_DEBUG=1 for the traceback)"
    ) in err
    assert "Traceback" not in err
    assert not load_surface(surf, wait=30).done.all()


@pytest.mark.mpi
@needs_mpi
def test_unseeded_model_factory_gets_rank0_weights(workdir):
    """torch seeds every process differently: ranks must still evaluate one model."""
    surf = workdir / "unseeded.h5"
    base = [a if a != "_factories:cnn" else "_factories:unseeded_cnn" for a in BASE]
    base = [*base[: base.index("--x")], "--x", "-1:1:3"]
    code, out, err, _ = mpirun(2, workdir, surf, {"LANDSCAPE_TEST_SLEEP": "0.004"}, base=base)
    assert code == 0, f"{out}\n{err}"
    assert "every rank uses rank 0's weights" in out
    centre = float(out.split("centre: train_loss=")[1].split(",")[0])
    surface = load_surface(surf)
    assert surface.metrics["train_loss"][1] == pytest.approx(centre, rel=1e-5)
    shares = {
        r["rank"]: r["points"]
        for r in json.loads(Path(f"{surf}.json").read_text())["runs"][-1]["ranks"]
    }
    assert sum(shares.values()) == 3
