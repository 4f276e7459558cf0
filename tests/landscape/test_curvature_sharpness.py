"""landscape.curvature.sharpness: worst-case (m-, adaptive), average-case and Keskar's
epsilon-sharpness against closed forms on quadratic and linear losses (float64, tiny), and the
evaluation contract (eval mode, weights untouched, modes restored, JSON-able results, errors
that name the fix)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import (
    CIRCLE_POINTS,
    FIT_WINDOW,
    SharpnessResult,
    average_sharpness,
    epsilon_sharpness,
    sharpness_1d,
    sharpness_2d,
    sharpness_grid,
    worst_case_sharpness,
)
from landscape.curvature.sharpness import RandomSubspace

DTYPE = torch.float64


def mean_output(outputs, targets):
    """The model's outputs are the per-sample losses."""
    return outputs.mean()


class Quadratic(nn.Module):
    """Per-sample losses ``||B_i (w - w*)||^2 / 2`` (inputs ``B_i``, shape ``(N, k, n)``), so
    the mean loss is ``(w - w*)^T A (w - w*) / 2`` with ``A = mean_i B_i^T B_i``."""

    def __init__(self, centre: torch.Tensor, at: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter((centre if at is None else at).clone())
        self.register_buffer("centre", centre.clone())

    def forward(self, factors: torch.Tensor) -> torch.Tensor:
        residual = torch.einsum("nkd,d->nk", factors, self.w - self.centre)
        return 0.5 * residual.square().sum(1)


class Linear(nn.Module):
    """Per-sample losses ``x_i . w + c``: the mean loss is ``g . w + c`` with ``g = mean x_i``."""

    def __init__(self, w: torch.Tensor, offset: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.offset


def quadratic(samples=8, k=3, n=5, *, diagonal=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if diagonal:
        factors = torch.diag_embed(torch.rand(samples, n, generator=gen, dtype=DTYPE) + 0.5)
    else:
        factors = torch.randn(samples, k, n, generator=gen, dtype=DTYPE)
    centre = torch.randn(n, generator=gen, dtype=DTYPE)
    hessians = factors.transpose(1, 2) @ factors  # per-sample A_i
    data = (factors, torch.zeros(samples, dtype=DTYPE))
    return data, centre, hessians


def linear(samples=6, n=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, n, generator=gen, dtype=DTYPE)
    w = torch.randn(n, generator=gen, dtype=DTYPE)
    return (x, torch.zeros(samples, dtype=DTYPE)), w, x.mean(0)


def top_eigenvalue(matrix: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(matrix).max())


def classifier(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)
    ).double()
    x = torch.randn(24, 4, dtype=DTYPE)
    y = torch.randint(0, 3, (24,))
    model.train()
    with torch.no_grad():
        model(x)  # running statistics that differ from the batch's
    return model, (x, y)


# --- worst case ---------------------------------------------------------------------------


def test_worst_case_l2_at_a_quadratic_minimum_is_half_rho_squared_lambda_max():
    data, centre, hessians = quadratic()
    rho = 0.3
    result = worst_case_sharpness(Quadratic(centre), data, rho, loss=mean_output, steps=200)
    exact = 0.5 * rho**2 * top_eigenvalue(hessians.mean(0))
    assert result.value == pytest.approx(exact, rel=1e-8)
    assert result.loss == pytest.approx(0.0, abs=1e-20)
    assert result.error is None and result.error_increase is None
    assert math.isnan(result.loss_increase_stderr)  # one chunk


def test_worst_case_linf_at_a_diagonal_minimum_is_half_rho_squared_trace():
    data, centre, hessians = quadratic(diagonal=True)
    rho = 0.2
    result = worst_case_sharpness(Quadratic(centre), data, rho, loss=mean_output, norm="linf")
    exact = 0.5 * rho**2 * float(hessians.mean(0).diagonal().sum())
    assert result.value == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("adaptive", [False, True])
def test_worst_case_of_a_linear_loss_is_rho_times_the_dual_norm(adaptive):
    data, w, g = linear()
    rho, eta = 0.1, 0.05
    scale = w.abs() + eta if adaptive else torch.ones_like(w)
    for norm, dual in (("l2", 2), ("linf", 1)):
        result = worst_case_sharpness(
            Linear(w), data, rho, loss=mean_output, norm=norm, adaptive=adaptive, eta=eta
        )
        exact = rho * float(torch.linalg.vector_norm(scale * g, ord=dual))
        assert result.value == pytest.approx(exact, rel=1e-9), norm


def test_adaptive_worst_case_at_a_quadratic_minimum_matches_its_closed_form():
    data, centre, hessians = quadratic()
    rho = 0.4
    scale = torch.diag(centre.abs())  # eta = 0: delta = |w*| gamma, ||gamma|| <= rho
    result = worst_case_sharpness(
        Quadratic(centre), data, rho, loss=mean_output, adaptive=True, steps=200
    )
    exact = 0.5 * rho**2 * top_eigenvalue(scale @ hessians.mean(0) @ scale)
    assert result.value == pytest.approx(exact, rel=1e-8)
    assert result.adaptive and result.settings["eta"] == 0.0
    data, centre, hessians = quadratic(diagonal=True)
    result = worst_case_sharpness(
        Quadratic(centre), data, rho, loss=mean_output, norm="linf", adaptive=True, eta=0.1
    )
    a, scale = hessians.mean(0).diagonal(), centre.abs() + 0.1
    assert result.value == pytest.approx(0.5 * rho**2 * float((a * scale**2).sum()))


def test_m_sharpness_equals_the_whole_set_at_m_n_and_exceeds_it_for_smaller_m():
    data, centre, hessians = quadratic(samples=8)
    rho, model = 0.3, Quadratic(centre)
    whole = worst_case_sharpness(model, data, rho, loss=mean_output, steps=200)
    at_n = worst_case_sharpness(model, data, rho, loss=mean_output, steps=200, m=8)
    assert at_n.value == whole.value and at_n.values == whole.values
    # mean over chunks of max >= max of the mean; here both are known exactly
    for m in (1, 2, 3):
        result = worst_case_sharpness(model, data, rho, loss=mean_output, steps=200, m=m)
        chunks = hessians.split(m)
        exact = [0.5 * rho**2 * top_eigenvalue(h.mean(0)) for h in chunks]
        sizes = [len(h) for h in chunks]
        assert result.values == pytest.approx(exact, rel=1e-7)
        assert result.weights == tuple(sizes) and result.m == m
        assert result.value == pytest.approx(np.average(exact, weights=sizes), rel=1e-7)
        assert result.value >= whole.value
        assert result.loss_increase_stderr > 0


# --- average case -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("norm", "adaptive", "antithetic"),
    [("l2", False, False), ("l2", True, False), ("linf", False, True), ("linf", True, False)],
)
def test_average_case_of_a_quadratic_is_half_the_weighted_trace(norm, adaptive, antithetic):
    data, centre, hessians = quadratic()
    away = centre + 0.5  # not at the minimum: the linear term averages out
    rho, a = 0.5, hessians.mean(0).diagonal()
    n = len(centre)
    scale = rho * away.abs() if adaptive else torch.full_like(away, rho / math.sqrt(n))
    if norm == "linf":
        scale = rho * away.abs() if adaptive else torch.full_like(away, rho)
    variance = scale**2 / (1.0 if norm == "l2" else 3.0)
    exact = 0.5 * float((a * variance).sum())
    result = average_sharpness(
        Quadratic(centre, at=away),
        data,
        rho,
        loss=mean_output,
        samples=400,
        norm=norm,
        adaptive=adaptive,
        antithetic=antithetic,
    )
    assert abs(result.value - exact) < 3 * result.loss_increase_stderr
    assert result.loss_increase_stderr < 0.2 * exact
    assert len(result.values) == 400 and result.samples == 400
    if norm == "l2" and not adaptive:
        assert result.settings["sigma"] == pytest.approx(rho / math.sqrt(n))


# --- Keskar -------------------------------------------------------------------------------


def test_epsilon_sharpness_of_a_diagonal_quadratic_and_a_linear_loss():
    data, centre, hessians = quadratic(diagonal=True)
    epsilon, a = 1e-2, hessians.mean(0).diagonal()
    bounds = epsilon * (centre.abs() + 1)
    rise = 0.5 * float((a * bounds**2).sum())
    result = epsilon_sharpness(Quadratic(centre), data, epsilon, loss=mean_output)
    assert result.value == pytest.approx(100 * rise, rel=1e-12)
    assert result.norm == "box" and result.settings["subspace_dim"] is None
    data, w, g = linear()
    offset = 0.7  # L(w) = g . w + 0.7 enters the denominator 1 + L(w)
    result = epsilon_sharpness(Linear(w, offset), data, epsilon, loss=mean_output)
    loss = float(g @ w) + offset
    rise = float((g.abs() * epsilon * (w.abs() + 1)).sum())
    assert result.loss == pytest.approx(loss)
    assert result.loss_increase == pytest.approx(rise, rel=1e-12)
    assert result.value == pytest.approx(100 * rise / (1 + loss), rel=1e-12)


def test_epsilon_sharpness_in_a_random_subspace_matches_its_closed_form():
    data, w, g = linear(n=12)
    epsilon, p = 1e-2, 3
    result = epsilon_sharpness(Linear(w), data, epsilon, loss=mean_output, subspace_dim=p, seed=5)
    basis = RandomSubspace(12, p, seed=5, dtype=DTYPE).dense()
    bounds = epsilon * ((torch.linalg.pinv(basis) @ w).abs() + 1)
    exact = float(((basis.T @ g).abs() * bounds).sum())  # max of g . A y over the box
    assert result.loss_increase == pytest.approx(exact, rel=1e-9)
    assert result.settings["subspace_dim"] == p
    data, w, g = linear(n=150)
    options = {"loss": mean_output, "steps": 2, "max_full_dim": 149}
    automatic = epsilon_sharpness(Linear(w), data, epsilon, **options)
    assert automatic.settings["subspace_dim"] == 100  # above the limit: Keskar's p
    assert (
        epsilon_sharpness(Linear(w), data, epsilon, subspace_dim=0, **options).settings[
            "subspace_dim"
        ]
        is None
    )  # 0 forces the full space
    options["max_full_dim"] = 150
    assert epsilon_sharpness(Linear(w), data, epsilon, **options).settings["subspace_dim"] is None


def test_random_subspace_blocks_give_one_matrix_and_its_pseudo_inverse():
    cached = RandomSubspace(50, 4, seed=3, dtype=DTYPE, block_rows=7)
    streamed = RandomSubspace(50, 4, seed=3, dtype=DTYPE, block_rows=7, cache_bytes=0)
    dense = cached.dense()
    assert dense.shape == (50, 4) and torch.equal(dense, streamed.dense())
    y, v = torch.randn(4, dtype=DTYPE), torch.randn(50, dtype=DTYPE)
    assert torch.allclose(streamed.forward(y), dense @ y)
    assert torch.allclose(streamed.adjoint(v), dense.T @ v)
    assert torch.allclose(streamed.pseudo_inverse_apply(v), torch.linalg.pinv(dense) @ v)
    assert streamed.cache is None and streamed.generated_blocks > 8  # regenerated, not stored
    assert abs(float(dense.mean())) < 0.3 and 0.7 < float(dense.std()) < 1.3


# --- the evaluation contract --------------------------------------------------------------


MEASURES = [
    (worst_case_sharpness, {"norm": "l2", "m": 8}),
    (worst_case_sharpness, {"norm": "linf", "adaptive": True, "logit_normalise": True}),
    (average_sharpness, {"samples": 5}),
    (epsilon_sharpness, {}),
]


@pytest.mark.parametrize(("measure", "options"), MEASURES)
def test_weights_buffers_and_modes_are_restored_and_batchnorm_is_frozen(measure, options):
    model, data = classifier()
    model[3].eval()  # a mixed-mode model: each module gets its own flag back
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    modes = [m.training for m in model.modules()]
    seen = []
    model[4].register_forward_hook(lambda module, args, out: seen.append(model[1].training))
    result = measure(model, data, 0.5, **options)
    assert seen and not any(seen)  # evaluated in eval mode
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert list(model.parameters()) == params and all(p.grad is None for p in params)
    assert [m.training for m in model.modules()] == modes
    assert result.bn_mode == "eval" and result.provenance["bn_mode"] == "eval"
    assert -1.0 <= result.error_increase <= 1.0
    assert all(-1.0 <= e <= 1.0 for e in result.error_values)
    assert result.loss_increase >= 0 or measure is average_sharpness


def test_an_exception_mid_run_leaves_weights_and_modes_as_they_were():
    model, data = classifier()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def failing(outputs, targets):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(outputs, targets)

    with pytest.raises(RuntimeError, match="boom"):
        worst_case_sharpness(model, data, 0.5, loss=failing)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("measure", [worst_case_sharpness, average_sharpness, epsilon_sharpness])
def test_zero_radius_gives_zero_increases(measure):
    model, data = classifier()
    result = measure(model, data, 0.0)
    assert result.value == 0.0 and result.loss_increase == 0.0
    assert result.error_increase == 0.0 and 0.0 <= result.error <= 1.0


def test_logit_normalisation_equals_a_normalising_wrapper():
    model, data = classifier()

    class Normalised(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            out = out - out.mean(-1, keepdim=True)
            return out / out.norm(dim=-1, keepdim=True)

    options = {"rho": 0.05, "norm": "linf", "adaptive": True, "m": 6, "steps": 5}
    inside = worst_case_sharpness(model, data, logit_normalise=True, **options)
    outside = worst_case_sharpness(Normalised(model), data, **options)
    assert inside.values == pytest.approx(outside.values, rel=1e-10)
    assert inside.loss == pytest.approx(outside.loss, rel=1e-12)
    plain = worst_case_sharpness(model, data, **options)
    assert plain.loss != pytest.approx(inside.loss)
    # unit-norm logits differ by at most sqrt(2): the cross-entropy stays near log(3)
    assert abs(inside.loss - math.log(3)) < math.sqrt(2)


def test_results_are_frozen_json_and_carry_provenance():
    model, data = classifier()
    result = worst_case_sharpness(model, data, 0.1, m=8, steps=3, subset=16, subset_seed=2)
    assert isinstance(result, SharpnessResult)
    with pytest.raises(AttributeError):
        result.value = 0.0
    with pytest.raises(TypeError, match="cannot be changed"):
        result.provenance["size"] = 0
    with pytest.raises(TypeError, match="cannot be changed"):
        result.settings.update(eta=1.0)
    row = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert row["measure"] == "worst_case" and row["m"] == 8 and row["steps"] == 3
    prov = row["provenance"]
    assert prov["size"] == 16 and prov["subset"] == 16 and prov["subset_seed"] == 2
    assert len(prov["model_sha256"]) == 64 and len(prov["data_sha256"]) == 64
    assert prov["parameters"] == sum(p.numel() for p in model.parameters())
    single = epsilon_sharpness(model, data, steps=2).to_dict()
    assert single["loss_increase_stderr"] is None  # NaN (one value) as JSON null


def test_sharpness_grid_returns_one_result_per_radius_in_order():
    data, centre, hessians = quadratic()
    rhos = [0.0, 0.1, 0.2]
    results = sharpness_grid(
        "worst_case", Quadratic(centre), data, rhos, loss=mean_output, steps=100
    )
    assert [r.rho for r in results] == rhos
    lam = top_eigenvalue(hessians.mean(0))
    assert [r.value for r in results] == pytest.approx([0.5 * r**2 * lam for r in rhos])
    results = sharpness_grid(average_sharpness, Quadratic(centre), data, [0.1], loss=mean_output)
    assert len(results) == 1 and results[0].measure == "average"


def test_sharpness_against_rho_is_drawn_with_error_bars(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from landscape.plot import plot_sharpness, save_sharpness
    from tests.figure_checks import figure_problems

    data, centre, _ = quadratic()
    model, rhos = Quadratic(centre), [0.05, 0.1, 0.2]
    results = {
        "worst_case": sharpness_grid("worst_case", model, data, rhos, loss=mean_output, m=8),
        "average": sharpness_grid("average", model, data, rhos, loss=mean_output, samples=6),
    }
    axes = plot_sharpness(results)
    assert len(axes) == 1  # no 0-1 error for this loss: one panel
    lines = axes[0].containers
    assert len(lines) == 2  # one errorbar series per measure
    drawn = lines[0].lines[0].get_ydata()
    assert list(drawn) == pytest.approx([r.loss_increase for r in results["worst_case"]])
    assert figure_problems(axes[0].figure) == []
    plt.close(axes[0].figure)
    flat = [r for items in results.values() for r in items]  # a plain list groups by measure
    assert len(plot_sharpness(flat)[0].containers) == 2
    plt.close("all")
    path = save_sharpness(tmp_path / "s.png", results)
    assert path.stat().st_size > 0 and not plt.get_fignums()
    with pytest.raises(ValueError, match="no results for the measure 'average'"):
        plot_sharpness({"average": []})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, d: worst_case_sharpness(m, d, -0.1), r"rho must be >= 0.*abs\(rho\)"),
        (lambda m, d: worst_case_sharpness(m, d, 0.1, m=25), r"m = 25 .* 24 .*pass m <= 24"),
        (lambda m, d: worst_case_sharpness(m, d, 0.1, norm="l1"), r"norm must be 'l2' or 'linf'"),
        (lambda m, d: average_sharpness(m, d, 0.1, samples=0), r"samples must be an integer"),
        (lambda m, d: epsilon_sharpness(m, d, -1e-3), r"epsilon must be >= 0"),
        (lambda m, d: worst_case_sharpness(m, d, 0.1, loss="l1"), r"loss must be one of"),
        (lambda m, d: sharpness_grid("sam", m, d, [0.1]), r"measure must be one of"),
        (lambda m, d: sharpness_grid("average", m, d, []), r"pass at least one radius"),
        (lambda m, d: worst_case_sharpness(m, (d[0][:0], d[1][:0]), 0.1), r"empty; pass at"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_fix(call, message):
    model, data = classifier()
    with pytest.raises(ValueError, match=message):
        call(model, data)


def test_surface_sharpness_keeps_its_names():
    from landscape.curvature.sharpness import surface

    assert (FIT_WINDOW, CIRCLE_POINTS) == (surface.FIT_WINDOW, surface.CIRCLE_POINTS)
    assert sharpness_1d is surface.sharpness_1d and sharpness_2d is surface.sharpness_2d
