"""``python -m landscape hessian`` and ``sharpness``: the JSON they write, against exact linear
algebra on a tiny float64 model, the eigenvector direction file drawn by ``surface``, and a
clear one-line error for each bad input."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.func import functional_call  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from landscape import load_surface  # noqa: E402
from landscape.cli import main  # noqa: E402

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


def exact_hessian() -> torch.Tensor:
    namespace: dict = {}
    exec(FACTORIES, namespace)
    model, (inputs, targets) = namespace["model"](), namespace["data"]()
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_of(theta):
        params, start = {}, 0
        for name, p in named:
            params[name] = theta[start : start + p.numel()].view(p.shape)
            start += p.numel()
        return F.cross_entropy(functional_call(model, params, (inputs,)), targets)

    return torch.autograd.functional.hessian(loss_of, flat)


def test_hessian_writes_the_json_interface(workdir, capsys):
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
    hessian = exact_hessian()
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
        (["--mpi"], "not available yet"),
        (["--params", "nothing"], "no parameter selected"),
    ],
)
def test_hessian_bad_input_gets_a_one_line_error(workdir, capsys, argv, message):
    assert main(["hessian", *BASE, *argv, "--output", str(workdir / "x.json")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (workdir / "x.json").exists()


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
    assert main(["sharpness", *BASE, "--measure", "sharpest"]) == 2
