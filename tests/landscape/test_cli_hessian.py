"""``python -m landscape hessian`` and ``sharpness``: the JSON they write, against exact linear
algebra on a tiny float64 model, the eigenvector direction file drawn by ``surface``, the
eigenvalue map (``--eigmap``: file, resume, figures), ``hessian --mpi`` on 2 ranks against one
process (one ``mpiexec`` launch, marked ``mpi``), and a clear one-line error for each bad
input."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from landscape import load_surface  # noqa: E402
from landscape.cli import main  # noqa: E402
from tests.mpi_jobs import MPIEXEC, job_environment, launch  # noqa: E402

FACTORIES = """
import torch
from torch import nn


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def frozen():
    return model().requires_grad_(False)


def data():
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(40, 4, generator=generator, dtype=torch.float64)
    return inputs, torch.randint(0, 3, (40,), generator=generator)


def empty():
    return torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long)


def per_sample_loss(outputs, targets):
    return nn.functional.cross_entropy(outputs, targets, reduction="none")
"""

BASE = ["--model", "hapi_factories:model", "--data", "hapi_factories:data"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "hapi_factories.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def exact_hessian(dense_hessian) -> torch.Tensor:
    namespace: dict = {}
    exec(FACTORIES, namespace)
    model, (inputs, targets) = namespace["model"](), namespace["data"]()
    return dense_hessian(model, inputs, targets)


def test_hessian_writes_the_json_interface(workdir, capsys, dense_hessian):
    out = workdir / "out.json"
    argv = [*BASE, "--topk", "3", "--trace", "--output", str(out), "--tol", "1e-8"]
    assert main(["hessian", *argv]) == 0
    result = json.loads(out.read_text())
    for key in (
        "eigenvalues",
        "trace",
        "trace_stderr",
        "hvp_count",
        "seconds",
        "tol",
        "loss",
        "samples",
        "data_sha256",
        "model_sha256",
        "provenance",
        "residuals",
        "lambda_max",
        "lambda_ratio",
    ):
        assert key in result, key
    hessian = exact_hessian(dense_hessian)
    exact = torch.linalg.eigvalsh(hessian).flip(0)
    np.testing.assert_allclose(result["eigenvalues"], exact[:3].numpy(), rtol=1e-7)
    assert all(r <= 1e-8 for r in result["residuals"]) and result["converged"]
    assert result["lambda_ratio"] == pytest.approx(float(exact[0] / exact[2]), rel=1e-7)
    # 99 Hutch++ products on 43 parameters: a sketch of 33 leaves a small residual
    error = abs(result["trace"] - float(hessian.trace()))
    assert error <= 5 * result["trace_stderr"] + 1e-10
    assert result["samples"] == 40 and result["tol"] == 1e-8
    assert result["provenance"]["dtype"] == "float64" and result["provenance"]["bn_mode"] == "eval"
    assert "estimated" in capsys.readouterr().out


def test_hessian_options_and_the_direction_file_draw_the_curvature(workdir):
    out, dirs = workdir / "all.json", workdir / "dirs.h5"
    argv = [
        *BASE,
        "--smallest",
        "--density",
        "--density_steps",
        "20",
        "--layers",
        "--dir_out",
        str(dirs),
        "--method",
        "power",
        "--mode",
        "forward",
        "--subset",
        "30",
        "--tol",
        "1e-9",
        "--output",
        str(out),
    ]
    assert main(["hessian", *argv]) == 0
    result = json.loads(out.read_text())
    assert result["samples"] == 30 and result["provenance"]["mode"] == "forward"
    assert result["smallest"]["eigenvalues"][0] < 0 < result["eigenvalues"][0]
    assert list(result["layers"]) == ["0", "2"]
    assert (workdir / "all_density.png").stat().st_size > 0
    assert result["density"]["figure"].endswith("all_density.png")
    surf = workdir / "surf.h5"
    argv = [
        *BASE,
        "--subset",
        "30",
        "--dir_file",
        str(dirs),
        "--x=-1e-3:1e-3:3",
        "--surf_file",
        str(surf),
        "--no_progress",
    ]
    assert main(["surface", *argv]) == 0
    loss = load_surface(surf).metrics["train_loss"]
    second = (loss[0] - 2 * loss[1] + loss[2]) / 1e-6
    assert second == pytest.approx(result["eigenvalues"][0], rel=1e-4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--topk", "50"], "--topk = 50 eigenvalues asked, but the selected parameters have only"),
        (["--model", "hapi_factories:frozen"], "0 parameters requiring grad"),
        (["--loss_fn", "hapi_factories:per_sample_loss"], "must return a scalar"),
        (["--data", "hapi_factories:empty"], "the data hold no samples"),
        (["--params", "nothing"], "no parameter selected"),
        (["--mpi", "--layers"], "--layers does not run under --mpi: run `hessian --layers` on one"),
        (["--mpi", "--dir_out", "d.h5"], "--dir_out does not run under --mpi"),
        (["--mpi", "--method", "power"], "drop --method power"),
        (["--eigmap"], "--eigmap needs its grid: --x MIN:MAX:NUM"),
        (["--eigmap", "--x=-1:1:3", "--trace"], "--eigmap computes only the map: run --trace"),
        (["--x=-1:1:3", "--dir_file", "d.h5"], "--x, --dir_file belong to the eigenvalue map"),
        (
            ["--eigmap", "--x=-1:1:3", "--y=-1:1:3", "--surf_file", "d.h5", "--dir_file", "d.h5"],
            "--surf_file and --dir_file must be different files",
        ),
    ],
)
def test_hessian_bad_input_gets_a_one_line_error(workdir, capsys, argv, message):
    assert main(["hessian", *BASE, *argv, "--output", str(workdir / "x.json")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (workdir / "x.json").exists()


def test_mpiexec_without_mpi_is_refused(workdir, capsys, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["hessian", *BASE, "--output", "x.json"]) == 1
    err = capsys.readouterr().err
    assert "launched by mpiexec with 2 ranks but without --mpi" in err and "add --mpi" in err
    assert main(["sharpness", *BASE]) == 1
    assert "launched by mpiexec with 2 ranks but without --mpi" in capsys.readouterr().err
    assert not (workdir / "x.json").exists()


def test_eigmap_writes_resumes_and_draws(workdir, capsys, dense_hessian):
    import h5py

    from landscape.curvature import load_eigenvalue_map

    surf = workdir / "maps" / "map.h5"
    argv = [*BASE, "--eigmap", "--x=-1:1:5", "--y=-1:1:5", "--surf_file", str(surf)]
    argv += ["--mode", "reverse", "--tol", "1e-6", "--no_progress"]
    assert main(["hessian", *argv]) == 0
    out = capsys.readouterr().out
    assert "25 of 25 points to compute" in out and "estimated total" in out
    with h5py.File(surf, "r") as f:
        assert {"xcoordinates", "ycoordinates", "max_eig", "min_eig", "done"} <= set(f)
    emap = load_eigenvalue_map(surf)
    assert emap.shape == (5, 5) and emap.done.all() and emap.provenance["eig_tol"] == 1e-6
    exact = torch.linalg.eigvalsh(exact_hessian(dense_hessian))  # the centre is grid point [2, 2]
    assert emap.max_eig[2, 2] == pytest.approx(float(exact[-1]), rel=1e-6)
    assert emap.min_eig[2, 2] == pytest.approx(float(exact[0]), rel=1e-6)
    for name in ("map_eig_ratio.png", "map_max_eig.png"):
        assert (surf.parent / name).stat().st_size > 0, name
    # the default direction file goes next to the map, as for surface
    assert len(list(surf.parent.glob("hapi_factories_model_weights_*_seed=0.h5"))) == 1
    assert main(["hessian", *argv, "--output", str(workdir / "again.json")]) == 0
    assert "0 of 25 points to compute" in capsys.readouterr().out
    runs = json.loads(surf.with_name("map.h5.json").read_text())["runs"]
    assert [r["computed_points"] for r in runs] == [25, 0]
    summary = json.loads((workdir / "again.json").read_text())
    assert summary["points"] == 25 and summary["nproc"] == 1
    assert summary["max_eig"][1] == pytest.approx(float(np.nanmax(emap.max_eig)))


def two_ranks_and_one(workdir, command: str, flags: list[str]) -> tuple[str, dict, dict]:
    """``command`` with ``flags`` on 2 MPI ranks (``--mpi``) and on this process: the ranks'
    stdout and both JSON outputs (two.json, one.json)."""
    pytest.importorskip("mpi4py")
    launcher = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "landscape"]
    launcher += [command, *flags, "--mpi", "--output", "two.json"]
    code, out, err, _ = launch(launcher, cwd=workdir, env=job_environment(workdir), timeout=240)
    assert code == 0, f"{out}\n{err}"
    assert main([command, *flags, "--output", "one.json"]) == 0
    two = json.loads((workdir / "two.json").read_text())
    one = json.loads((workdir / "one.json").read_text())
    assert (one["nproc"], two["nproc"]) == (1, 2)
    return out, two, one


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec next to {sys.executable}")
def test_hessian_mpi_on_two_ranks_equals_one_process(workdir):
    flags = [*BASE, "--topk", "3", "--smallest", "--trace", "--density", "--density_steps"]
    flags += ["20", "--tol", "1e-8", "--mode", "reverse"]
    out, two, one = two_ranks_and_one(workdir, "hessian", flags)
    assert "--batch_size 20 (at least one batch per rank)" in out
    assert set(two) == set(one)
    np.testing.assert_allclose(two["eigenvalues"], one["eigenvalues"], rtol=1e-9)
    assert all(r <= 1e-8 for r in two["residuals"]) and two["converged"]
    assert two["smallest"]["eigenvalues"][0] == pytest.approx(one["smallest"]["eigenvalues"][0])
    assert two["trace"] == pytest.approx(one["trace"], rel=1e-10)
    assert two["trace_stderr"] == pytest.approx(one["trace_stderr"], rel=1e-6)
    np.testing.assert_allclose(two["density"]["nodes"], one["density"]["nodes"], atol=1e-9)
    assert (workdir / "two_density.png").stat().st_size > 0
    for key in ("samples", "data_sha256", "model_sha256", "size", "tol"):
        assert two[key] == one[key], key
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-12)


def test_sharpness_writes_each_measure_and_radius(workdir):
    out = workdir / "sharp.json"
    argv = [
        *BASE,
        "--measure",
        "worst_case,average,epsilon",
        "--rho",
        "0.01,0.05",
        "--steps",
        "3",
        "--samples",
        "4",
        "--m",
        "20",
        "--output",
        str(out),
    ]
    assert main(["sharpness", *argv]) == 0
    result = json.loads(out.read_text())
    assert set(result["measures"]) == {"worst_case", "average", "epsilon"}
    worst = result["measures"]["worst_case"]
    assert [r["rho"] for r in worst] == [0.01, 0.05] and worst[0]["m"] == 20
    assert 0 <= worst[0]["value"] <= worst[1]["value"]
    assert result["samples"] == 40 and len(result["model_sha256"]) == 64
    figure = workdir / "sharp_sharpness.png"
    assert result["figure"] == str(figure) and figure.stat().st_size > 0
    assert main(["sharpness", *BASE, "--measure", "sharpest"]) == 2


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec next to {sys.executable}")
def test_sharpness_mpi_on_two_ranks_equals_one_process(workdir):
    flags = [*BASE, "--measure", "worst_case,average,epsilon", "--rho", "0.01,0.05"]
    flags += ["--steps", "3", "--samples", "4", "--m", "20"]
    out, two, one = two_ranks_and_one(workdir, "sharpness", flags)
    assert "on 2 ranks" in out
    for measure, results in one["measures"].items():
        assert [r["rho"] for r in two["measures"][measure]] == [r["rho"] for r in results]
        for a, b in zip(two["measures"][measure], results):
            assert a["value"] == pytest.approx(b["value"], rel=1e-9, abs=1e-15), measure
            assert a["values"] == pytest.approx(b["values"], rel=1e-9, abs=1e-15), measure
    for key in ("loss", "samples", "data_sha256", "model_sha256"):
        assert two[key] == one[key], key
    assert (workdir / "two_sharpness.png").stat().st_size > 0
