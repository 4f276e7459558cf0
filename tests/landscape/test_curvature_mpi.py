"""landscape.mpi.curvature under real MPI (marked ``mpi``): the venv's own ``mpiexec -n 2``
runs ``python -m mpi4py _curvature_mpi_job.py`` (one thread per rank, a timeout) next to
``_factories.py``.

- 2 ranks equal one process (this one, the same job's :func:`compute` with ``comm=None``):
  the Hessian-vector product over 8 batches split across ranks, Lanczos lambda_1 on it,
  Hutchinson and SLQ with the probes split, a 3 x 3 eigenvalue map split by the surfaces'
  scheduler (rank 0 writes), and ``run_hessian_mpi``'s top-2 eigenvalues, Hutch++ trace and
  digests;
- a rank that raises inside ``run_hessian_mpi`` ends the whole job within seconds, with the
  rank's traceback.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.mpi_jobs import MPIEXEC, job_environment, launch  # noqa: E402

pytest.importorskip("h5py")

HERE = Path(__file__).resolve().parent
TIMEOUT = 240

try:
    import mpi4py  # noqa: F401

    _NO_MPI = None if MPIEXEC.exists() else f"no mpiexec next to {sys.executable} (pip mpich)"
except ImportError:  # pragma: no cover - the dev extra installs mpi4py
    _NO_MPI = "mpi4py is not installed (pip install mpi4py mpich)"
pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(_NO_MPI is not None, reason=str(_NO_MPI)),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("curvature_mpi")
    for name in ("_factories.py", "_curvature_mpi_job.py"):
        shutil.copy(HERE / name, path / name)
    return path


def mpirun(workdir: Path, out_dir: Path, extra_env=None, *args: str):
    """``mpiexec -n 2 python -m mpi4py _curvature_mpi_job.py OUT_DIR ARGS``: (code, stdout,
    stderr, seconds)."""
    env = job_environment(workdir, extra=extra_env)
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "mpi4py", "_curvature_mpi_job.py"]
    return launch([*command, str(out_dir), *args], cwd=workdir, env=env, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def job(workdir):
    spec = importlib.util.spec_from_file_location("_curvature_mpi_job", workdir / "job_ref.py")
    shutil.copy(workdir / "_curvature_mpi_job.py", workdir / "job_ref.py")
    sys.path.insert(0, str(workdir))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(workdir))
    return module


@pytest.fixture(scope="module")
def results(workdir, job):
    """``(two ranks, one process)``: the job's JSON and the same computations here."""
    mpi_dir, one_dir = workdir / "mpi", workdir / "one"
    mpi_dir.mkdir()
    one_dir.mkdir()
    code, out, err, _ = mpirun(workdir, mpi_dir)
    assert code == 0, f"{out}\n{err}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = json.loads(json.dumps(job.compute(one_dir)))
    finally:
        torch.set_num_threads(threads)
    return json.loads((mpi_dir / "mpi.json").read_text()), reference, mpi_dir


def test_split_batches_give_one_process_products_and_lanczos(results):
    mpi, one, _ = results
    np.testing.assert_allclose(mpi["product"], one["product"], rtol=1e-4, atol=1e-6)
    assert mpi["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert mpi["lambda1"] == pytest.approx(one["lambda1"], rel=1e-6)
    assert abs(mpi["lambda1_products"] - one["lambda1_products"]) <= 1


def test_split_probes_give_one_process_trace_and_density(results):
    mpi, one, _ = results
    assert mpi["trace_products"] == one["trace_products"] == 20
    assert mpi["trace"] == pytest.approx(one["trace"], rel=1e-5)
    np.testing.assert_allclose(mpi["density_nodes"], one["density_nodes"], rtol=1e-5, atol=1e-7)


def test_split_grid_gives_one_process_eigenvalue_map(results):
    from landscape.curvature import load_eigenvalue_map

    mpi, one, mpi_dir = results
    np.testing.assert_allclose(mpi["max_eig"], one["max_eig"], rtol=1e-5)
    np.testing.assert_allclose(mpi["min_eig"], one["min_eig"], rtol=1e-5)
    written = load_eigenvalue_map(mpi_dir / "eigmap.h5")
    assert written.done.all() and written.provenance["kind"] == "hessian_eigenvalue_map"
    np.testing.assert_array_equal(written.max_eig, mpi["max_eig"])
    ranks = mpi["eigmap_ranks"]  # the surfaces' per-rank report
    assert [r["rank"] for r in ranks] == [0, 1] and sum(r["points"] for r in ranks) == 9


def test_run_hessian_mpi_reports_what_one_process_computes(results, job):
    from landscape.curvature import HessianOperator, top_eigenvalues
    from landscape.curvature.trace import hutchpp

    mpi, _, _ = results
    task = mpi["task"]
    inputs = job.inputs()
    op = HessianOperator(inputs["model"], inputs["data"], batch_size=job.BATCH, mode="reverse")
    top = top_eigenvalues(op, 2, tol=1e-6)
    np.testing.assert_allclose(task["eigenvalues"], top.eigenvalues, rtol=1e-5)
    assert task["converged"] and task["nproc"] == 2 and task["samples"] == 256
    assert task["data_sha256"] == op.data.sha256 and task["model_sha256"] == op.model_sha256
    full = HessianOperator(inputs["model"], inputs["data"], mode="reverse")
    assert task["trace"] == pytest.approx(hutchpp(full, 12).trace, rel=1e-5)
    assert task["loss"] == pytest.approx(op.loss(), rel=1e-6) and task["seconds"] > 0


def test_a_failing_rank_ends_the_job_within_seconds(workdir):
    out_dir = workdir / "fail"
    out_dir.mkdir()
    env = {"LANDSCAPE_TEST_RAISE_AFTER": "3", "LANDSCAPE_TEST_RANK": "1"}
    code, out, err, seconds = mpirun(workdir, out_dir, env, "fail")
    assert code != 0, f"the job did not fail:\n{out}\n{err}"
    # Rank 0 sits in collective operations: rank 1 prints its one line itself.
    assert (
        "[landscape rank 1] error: RuntimeError: injected failure after 3 forward passes; "
        "aborting the MPI job (run with SAMLAB_DEBUG=1 for the traceback)"
    ) in err, err
    assert "Traceback" not in err
    assert seconds < 30, seconds  # about 3.5 s on 2 cores; the margin is for loaded CI machines
    assert not (out_dir / "mpi.json").exists()
