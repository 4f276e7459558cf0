"""Loss surfaces: analytic oracles, grid convention, fast paths vs the eager twin, BatchNorm."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape.evaluate.center as center_module
from landscape import Surface, SurfaceEvaluator, as_tensors, surface_1d, surface_2d
from landscape.directions import Directions, create_directions
from landscape.evaluate import ProbeSettings, standard_error
from landscape.evaluate.paths import PATHS, EvaluationPath, PassTimer, cxx_available
from landscape.evaluate.paths.choose import AUTO_PROBE_EAGER_POINTS, AUTO_PROBE_ROUNDS
from landscape.evaluate.paths.fold import fold_batchnorm
from landscape.evaluate.stats import Metrics, fast_cross_entropy_stats
from landscape.grid import grid_coordinates

# Fast path vs eager: (rtol, atol) per dtype.
TOLERANCE = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest (and time most steadily) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_bitwise_equal(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype
        assert torch.equal(after[name], tensor), name


def assert_metrics_close(got: dict, expected: dict, dtype: torch.dtype) -> None:
    rtol, atol = TOLERANCE[dtype]
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=rtol, atol=atol, err_msg=name)


# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


class Quadratic(nn.Module):
    """Outputs its parameter for every sample; the loss below makes the surface a quadratic."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta.expand(x.shape[0], -1)


def make_cnn(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU x2, max-pool, linear-BN1d-ReLU, linear: 3 foldable BatchNorms."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(96, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 3),
    ).to(dtype)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
                module.num_batches_tracked.fill_(5)
    return model.eval()


class BatchMeanShift(nn.Module):
    """Logits minus 1% of their mean over the rows of the forward call: outputs that depend on
    which rows are evaluated together."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out - 0.01 * out.mean(0, keepdim=True) * x.shape[0]


class ShiftedUnderVmap(nn.Module):
    """The inner model, with outputs scaled by 1.01 when its weights are batched by vmap."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        weight = next(self.inner.parameters())
        return out * 1.01 if torch._C._functorch.is_batchedtensor(weight) else out


def image_data(n: int = 80, dtype: torch.dtype = torch.float64, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 1, 8, 8, generator=generator, dtype=dtype)
    targets = torch.randint(0, 3, (n,), generator=generator)
    return inputs, targets


def logistic_setup(n: int = 200, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2).double()
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    targets = inputs[:, 0] - 0.5 * inputs[:, 1] + 0.3 * torch.randn(n, generator=generator) > 0
    return model, inputs, targets.long()


def numpy_cross_entropy(weight, bias, inputs, targets):
    logits = inputs @ weight.T + bias
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    losses = log_norm - logits[np.arange(len(targets)), targets]
    correct = (logits.argmax(axis=1) == targets).astype(np.float64)
    return losses, correct


# --------------------------------------------------------------------------------------------
# Analytic oracles
# --------------------------------------------------------------------------------------------


def test_quadratic_surface_matches_closed_form_on_a_non_square_grid():
    generator = torch.Generator().manual_seed(0)
    dim = 5
    root = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    hessian = root @ root.T + torch.eye(dim, dtype=torch.float64)
    centres = torch.randn(40, dim, generator=generator, dtype=torch.float64)
    theta0 = torch.randn(dim, generator=generator, dtype=torch.float64)
    dx = torch.randn(dim, generator=generator)  # float32, as Directions holds them
    dy = torch.randn(dim, generator=generator)

    def quadratic_loss(outputs, targets):  # per sample: (theta - c_i)^T A (theta - c_i) / 2
        diff = outputs - targets
        return 0.5 * torch.einsum("bi,ij,bj->b", diff, hessian, diff)

    directions = Directions(x={"theta": dx}, y={"theta": dy}, dir_type="weights", meta={})
    x, y = np.linspace(-1.0, 2.0, 7), np.linspace(-0.5, 0.5, 4)
    surface = surface_2d(
        Quadratic(theta0), directions, (centres, centres), x=x, y=y,
        loss=quadratic_loss, batch_size=8, progress=False,
    )  # fmt: skip
    assert surface.shape == (4, 7)
    assert set(surface.metrics) == {"train_loss", "train_loss_se"}

    # mean_i (t - c_i)^T A (t - c_i) / 2 = (t - cbar)^T A (t - cbar) / 2 + spread, and
    # t = theta0 + a dx + b dy makes it a quadratic polynomial in (a, b).
    A, c = hessian.numpy(), centres.numpy()
    cbar = c.mean(axis=0)
    spread = 0.5 * np.mean(np.einsum("bi,ij,bj->b", c - cbar, A, c - cbar))
    u, p, q = theta0.numpy() - cbar, dx.double().numpy(), dy.double().numpy()
    aa, bb = np.meshgrid(x, y)
    expected = (
        0.5 * u @ A @ u + spread
        + aa * (p @ A @ u) + bb * (q @ A @ u)
        + 0.5 * aa**2 * (p @ A @ p) + aa * bb * (p @ A @ q) + 0.5 * bb**2 * (q @ A @ q)
    )  # fmt: skip
    np.testing.assert_allclose(surface.metrics["train_loss"], expected, rtol=1e-12)
    assert surface.done.all()


def test_logistic_regression_matches_numpy_cross_entropy():
    model, inputs, targets = logistic_setup()
    directions = create_directions(model, seed=3, xignore="none", yignore="none")
    x, y = np.linspace(-1, 1, 5), np.linspace(-2, 1, 4)
    surface = surface_2d(model, directions, (inputs, targets), x=x, y=y, progress=False)

    w0, b0 = model.weight.detach().numpy(), model.bias.detach().numpy()
    dxw, dyw = (d["weight"].double().numpy() for d in (directions.x, directions.y))
    dxb, dyb = (d["bias"].double().numpy() for d in (directions.x, directions.y))
    for i, b in enumerate(y):
        for j, a in enumerate(x):
            losses, correct = numpy_cross_entropy(
                w0 + a * dxw + b * dyw, b0 + a * dxb + b * dyb, inputs.numpy(), targets.numpy()
            )
            assert surface.metrics["train_loss"][i, j] == pytest.approx(losses.mean(), rel=1e-12)
            assert surface.metrics["train_acc"][i, j] == pytest.approx(correct.mean(), abs=1e-15)
    assert 0.0 <= surface.metrics["train_acc"].min() <= surface.metrics["train_acc"].max() <= 1.0


def test_interpolation_between_two_models_hits_both_ends_and_the_average(capsys):
    # Weights on a 2^-10 lattice: the difference model2 - model1 is exact in float32 (the
    # dtype of directions), so alpha = 0, 1/2, 1 give exactly model1, their mean and model2.
    def lattice_linear(seed):
        torch.manual_seed(seed)
        layer = nn.Linear(4, 3).double()
        with torch.no_grad():
            for tensor in layer.parameters():
                tensor.copy_(torch.randint(-512, 512, tensor.shape) / 1024)
        return layer

    model1, model2 = lattice_linear(1), lattice_linear(2)
    inputs, targets = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    directions = create_directions(model1, model2=model2, ndim=1)
    surface = surface_1d(model1, directions, (inputs, targets), x=[0.0, 0.5, 1.0])
    assert "3/3" in capsys.readouterr().err  # the tqdm bar (points/s)

    average = copy.deepcopy(model1)
    with torch.no_grad():
        for mine, theirs, mean in zip(
            model1.parameters(), model2.parameters(), average.parameters()
        ):
            mean.copy_((mine + theirs) / 2)
    for k, reference in enumerate((model1, average, model2)):
        with torch.no_grad():
            expected = F.cross_entropy(reference(inputs), targets).item()
        assert surface.metrics["train_loss"][k] == pytest.approx(expected, rel=1e-14, abs=0)


def test_regression_metrics_are_mse_and_mae():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    inputs, targets = torch.randn(60, 3, dtype=torch.float64), torch.randn(60, 2).double()
    directions = create_directions(model, seed=1, ndim=1, xignore="none")
    x = np.array([-0.5, 0.0, 0.75])
    surface = surface_1d(model, directions, (inputs, targets), x=x, loss="mse", progress=False)
    assert set(surface.metrics) == {"train_loss", "train_mae", "train_loss_se", "train_mae_se"}
    w0, b0 = model.weight.detach().numpy(), model.bias.detach().numpy()
    dw, db = directions.x["weight"].double().numpy(), directions.x["bias"].double().numpy()
    for k, a in enumerate(x):
        error = inputs.numpy() @ (w0 + a * dw).T + (b0 + a * db) - targets.numpy()
        assert surface.metrics["train_loss"][k] == pytest.approx(np.mean(error**2), rel=1e-12)
        assert surface.metrics["train_mae"][k] == pytest.approx(np.mean(np.abs(error)), rel=1e-12)

    # A (N,) target for a (N, 1) output is reshaped, not broadcast to (N, N).
    single = nn.Linear(3, 1).double()
    flat_targets = torch.randn(60, dtype=torch.float64)
    center = SurfaceEvaluator(
        single, create_directions(single, seed=0, ndim=1), (inputs, flat_targets), loss="mse"
    ).check_center()
    with torch.no_grad():
        expected = F.mse_loss(single(inputs)[:, 0], flat_targets).item()
    assert center["train_loss"] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------
# Grid convention, centre, standard errors, determinism
# --------------------------------------------------------------------------------------------


def test_grid_element_ij_is_the_point_x_j_y_i_and_chunks_do_not_matter():
    model, inputs, targets = logistic_setup(n=64)
    directions = create_directions(model, seed=0)
    x, y = np.array([-1.0, -0.2, 0.4, 1.3]), np.array([-0.7, 0.1, 0.9])
    seen = []
    surface = surface_2d(
        model, directions, (inputs, targets), x=x, y=y, progress=False, chunk_size=5,
        batch_size=16, callback=lambda indices, metrics: seen.append((indices.copy(), metrics)),
    )  # fmt: skip
    assert surface.shape == (3, 4) and surface.metrics["train_loss"].shape == (3, 4)
    assert np.array_equal(np.concatenate([indices for indices, _ in seen]), np.arange(12))
    assert [len(indices) for indices, _ in seen] == [5, 5, 2]
    coords = surface.coordinates()
    assert np.array_equal(coords, grid_coordinates(x, y))
    evaluator = SurfaceEvaluator(model, directions, (inputs, targets), batch_size=16)
    for i in range(3):
        for j in range(4):
            assert np.array_equal(coords[i * 4 + j], [x[j], y[i]])
            single = evaluator.evaluate_points(np.array([[x[j], y[i]]]))
            for name, value in single.items():  # bitwise: the chunk does not matter
                assert value[0] == surface.metrics[name][i, j], name
    for indices, metrics in seen:
        flat = surface.metrics["train_loss"].reshape(-1)
        assert np.array_equal(metrics["train_loss"], flat[indices])


def test_center_equals_the_models_own_loss_and_a_mismatch_raises():
    model = make_cnn()
    inputs, targets = image_data()
    test_inputs, test_targets = image_data(n=40, seed=7)
    evaluator = SurfaceEvaluator(
        model, create_directions(model, seed=0), (inputs, targets),
        test_data=(test_inputs, test_targets), batch_size=32,
    )  # fmt: skip
    center = evaluator.check_center()
    with torch.no_grad():
        for name, (data, labels) in {
            "train": (inputs, targets),
            "test": image_data(40, seed=7),
        }.items():
            outputs = model(data)
            loss = F.cross_entropy(outputs, labels).item()
            assert center[f"{name}_loss"] == pytest.approx(loss, rel=1e-12)
            accuracy = (outputs.argmax(1) == labels).double().mean().item()
            assert center[f"{name}_acc"] == pytest.approx(accuracy, abs=1e-15)
    assert evaluator.metric_names == (
        "train_loss", "train_acc", "train_loss_se", "train_acc_se",
        "test_loss", "test_acc", "test_loss_se", "test_acc_se",
    )  # fmt: skip

    # A model whose outputs depend on the rows evaluated together (it subtracts the mean
    # logit of the forward call): evaluated in one forward of 80 rows on the surface but per
    # batch of 32 by the reference, so the two disagree and the check names the metric.
    batch_dependent = BatchMeanShift(make_cnn())
    mismatch = SurfaceEvaluator(
        batch_dependent, create_directions(batch_dependent, seed=0), (inputs, targets),
        batch_size=32, forward_chunk=len(inputs),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"centre check failed: train_(loss|acc) is "):
        mismatch.check_center()
    assert SurfaceEvaluator(
        batch_dependent, create_directions(batch_dependent, seed=0), (inputs, targets),
        batch_size=32, forward_chunk=32,
    ).check_center()["train_loss"] > 0  # fmt: skip  # same rows per forward: they agree


@pytest.mark.parametrize("batch_size", [50, 64])  # equal batches; 64, 64, 64, 8
def test_standard_error_comes_from_the_per_batch_means(batch_size):
    model, inputs, targets = logistic_setup(n=200)
    evaluator = SurfaceEvaluator(
        model, create_directions(model, seed=0, ndim=1), (inputs, targets), batch_size=batch_size
    )
    values = evaluator.evaluate_points(np.array([[0.3]]))
    with torch.no_grad():
        directions = evaluator.directions
        weight = model.weight + 0.3 * directions.x["weight"].double()
        losses, correct = numpy_cross_entropy(
            weight.numpy(), model.bias.numpy(), inputs.numpy(), targets.numpy()
        )
    for metric, per_sample in (("loss", losses), ("acc", correct)):
        batches = np.split(per_sample, np.arange(batch_size, len(per_sample), batch_size))
        means = np.array([batch.mean() for batch in batches])
        sizes = np.array([len(batch) for batch in batches], dtype=np.float64)
        if batch_size == 50:
            expected = np.std(means, ddof=1) / np.sqrt(len(means))
        else:  # size-weighted: B / (B - 1) * sum (n_b / N)^2 (m_b - M)^2
            weights, mean = sizes / sizes.sum(), per_sample.mean()
            expected = np.sqrt(
                len(means) / (len(means) - 1) * np.sum(weights**2 * (means - mean) ** 2)
            )
        assert values[f"train_{metric}_se"][0] == pytest.approx(expected, rel=1e-10)
        assert values[f"train_{metric}"][0] == pytest.approx(per_sample.mean(), rel=1e-12)
    assert np.isnan(standard_error(np.array([3.0]), np.array([4.0])))


# --------------------------------------------------------------------------------------------
# Fast paths vs the eager twin; BatchNorm
# --------------------------------------------------------------------------------------------

POINTS = np.array([[0.0, 0.0], [0.4, -0.3], [-1.0, 0.8], [0.9, 0.9], [-0.2, -1.1]])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_vmap_matches_eager_on_a_cnn_with_batchnorm(dtype, dir_type):
    model = make_cnn(dtype)
    before = state_of(model)
    data = image_data(dtype=dtype)
    directions = create_directions(model, seed=0, dir_type=dir_type, xignore="none")
    options = dict(test_data=image_data(n=24, seed=5, dtype=dtype), batch_size=32)
    eager = SurfaceEvaluator(model, directions, data, mode="eager", **options)
    vmapped = SurfaceEvaluator(model, directions, data, mode="vmap", points_per_call=3, **options)
    assert vmapped.mode == "vmap" and vmapped.provenance["execution"]["points_per_call"] == 3
    assert_metrics_close(vmapped.evaluate_points(POINTS), eager.evaluate_points(POINTS), dtype)
    # every chunk is padded to K points: the same point gives the same bits in any chunk,
    # at any position (alone, first of [3, 4, pad], last of [4, 0, 3])
    alone = vmapped.evaluate_points(POINTS[3:4])
    for chunk, position in ((POINTS, 3), (POINTS[[4, 0, 3]], 2)):
        values = vmapped.evaluate_points(chunk)
        for name in alone:
            assert np.array_equal(alone[name][0], values[name][position], equal_nan=True), name
    assert_bitwise_equal(model, before)


def fake_probe_timer(eager_ms_per_point, vmap_ms_per_point, points_per_call):
    """Probe settings whose clock fakes the timings of the auto probe's eager/vmap pair (both
    arms still run once; K = ``points_per_call`` points per vmap call); every other probe is
    timed for real. Returns the settings and the list of rounds asked for."""
    real = PassTimer(torch.device("cpu"))
    asked = []

    def timer(passes, rounds):
        if set(passes) != {"eager", "vmap"}:
            return real(passes, rounds)
        asked.append(rounds)
        for run in passes.values():
            run()
        eager_points = min(points_per_call, AUTO_PROBE_EAGER_POINTS)
        return {
            "eager": eager_ms_per_point * 1e-3 * eager_points,
            "vmap": vmap_ms_per_point * 1e-3 * points_per_call,
        }

    return ProbeSettings(timer=timer), asked


@pytest.mark.parametrize(
    "vmap_ms, kept", [(0.5, True), (0.95, False)], ids=["vmap-2x-faster", "vmap-5pct-faster"]
)
def test_auto_probe_keeps_vmap_only_where_it_measures_10_percent_faster(vmap_ms, kept):
    model = make_cnn(torch.float32)
    before = state_of(model)
    data = image_data(n=80, dtype=torch.float32)
    directions = create_directions(model, seed=0)
    options = dict(test_data=image_data(n=24, seed=5, dtype=torch.float32), batch_size=32)
    eager = SurfaceEvaluator(model, directions, data, mode="eager", **options)
    probes, asked = fake_probe_timer(1.0, vmap_ms, points_per_call=8)
    auto = SurfaceEvaluator(
        model, directions, data, points_per_call=8, probe_vmap=True, probes=probes, **options
    )  # the vmap probe on the CPU too, as on CUDA
    assert asked == [AUTO_PROBE_ROUNDS]
    probe = auto.provenance["execution"]["auto_vmap_probe"]
    assert probe["ms_per_point"] == {"eager": 1.0, "vmap": vmap_ms}
    assert probe["points_per_call"] == 8 and probe["eager_points"] == 4
    assert probe["choice"] == ("vmap" if kept else "eager"), probe["reason"]
    assert auto.mode == probe["choice"]
    assert auto.points_per_call == (8 if kept else 1)
    assert auto.provenance["mode"] == probe["choice"]
    json.dumps(auto.provenance)
    assert_metrics_close(auto.evaluate_points(POINTS), eager.evaluate_points(POINTS), torch.float32)
    assert_bitwise_equal(model, before)


def test_auto_probe_rejects_vmap_that_disagrees_and_does_not_run_on_cpu_or_mpi(monkeypatch):
    model = make_cnn(torch.float64)
    data = image_data(n=64)
    directions = create_directions(model, seed=0)
    probes, asked = fake_probe_timer(1.0, 0.1, points_per_call=4)  # vmap would win on time
    options = dict(batch_size=32, probes=probes)

    # CPU, probe not forced: eager as before, no probe at all.
    cpu = SurfaceEvaluator(model, directions, data, **options)
    assert cpu.mode == "eager" and "auto_vmap_probe" not in cpu.provenance["execution"]
    assert asked == []

    options["probe_vmap"] = True  # from here on the vmap probe runs on the CPU too
    shifted = ShiftedUnderVmap(make_cnn(torch.float64))  # vmap's outputs 1% off eager's
    wrong = SurfaceEvaluator(
        shifted, create_directions(shifted, seed=0), data, points_per_call=4, **options
    )
    probe = wrong.provenance["execution"]["auto_vmap_probe"]
    assert wrong.mode == "eager" and probe["choice"] == "eager"
    assert "disagrees" in probe["reason"] and asked == []  # never timed

    # bn_mode="recompute" cannot use vmap: no probe.
    recompute = SurfaceEvaluator(model, directions, data, bn_mode="recompute", **options)
    assert recompute.mode == "eager" and "auto_vmap_probe" not in recompute.provenance["execution"]

    # One of several MPI ranks: no probe (the ranks could choose differently), eager.
    monkeypatch.setenv("PMI_SIZE", "2")
    ranked = SurfaceEvaluator(model, directions, data, points_per_call=4, **options)
    probe = ranked.provenance["execution"]["auto_vmap_probe"]
    assert ranked.mode == "eager" and "MPI" in probe["reason"] and asked == []


def test_eager_values_do_not_depend_on_the_group_of_points_and_barely_on_the_forward_chunk():
    # Forward chunks of parts of a batch, 1, 2 and 3 batches and the whole set (train 80 =
    # 32 + 32 + 16, test 24: remainders). With a given forward chunk, metrics computed for a
    # group of points at once (or one point at a time when the output budget is tiny) give the
    # same bits as each point alone: the per-chunk bookkeeping is exact. Across forward chunks
    # the values agree to float32 rounding only: a convolution's bits may depend on its batch
    # size (oneDNN picks its algorithm by shape; on an AMX Xeon batch 8 and 32 differ in the
    # last bit), which is why the probe keeps a chunk only after a bitwise check.
    model = make_cnn(torch.float32)
    before = state_of(model)
    data = image_data(n=80, dtype=torch.float32)
    directions = create_directions(model, seed=1)
    options = dict(test_data=image_data(n=24, seed=5, dtype=torch.float32), batch_size=32)
    reference = SurfaceEvaluator(model, directions, data, forward_chunk=32, **options)
    assert reference.provenance["execution"]["forward_chunk"] == 32
    batchwise = reference.evaluate_points(POINTS)
    for chunk in (8, 20, 32, 64, 96, 1000):
        evaluator = SurfaceEvaluator(model, directions, data, forward_chunk=chunk, **options)
        assert evaluator.provenance["execution"]["forward_chunk"] == min(80, chunk)
        together = evaluator.evaluate_points(POINTS)
        for k in range(len(POINTS)):
            single = evaluator.evaluate_points(POINTS[k : k + 1])
            for name, value in single.items():
                assert np.array_equal(value[0], together[name][k], equal_nan=True), (chunk, name)
        for name, value in together.items():
            np.testing.assert_allclose(value, batchwise[name], rtol=1e-5, atol=1e-7, err_msg=name)
    one_by_one = SurfaceEvaluator(
        model, directions, data, forward_chunk=96, output_budget=1, **options
    )  # metrics point by point
    for name, value in one_by_one.evaluate_points(POINTS[::-1]).items():
        assert np.array_equal(value[::-1], together[name], equal_nan=True), name
    assert_bitwise_equal(model, before)


@pytest.mark.parametrize("loss", ["mse", "per_sample", "batch_mean"])
def test_forward_chunks_agree_for_regression_and_loss_callables(loss):
    # to float32 rounding: a matmul's bits may depend on its row count (MKL picks its kernel
    # by shape), so only the probe's bitwise check makes a chosen chunk value-neutral
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    inputs, targets = torch.randn(70, 3), torch.randn(70, 2)
    losses = {
        "mse": "mse",
        "per_sample": lambda out, y: (out - y).abs().sum(1),
        "batch_mean": lambda out, y: (out - y).square().mean(),  # needs nominal batches
    }
    directions = create_directions(model, seed=0, xignore="none", yignore="none")
    values = [
        SurfaceEvaluator(
            model, directions, (inputs, targets), loss=losses[loss], batch_size=16,
            forward_chunk=chunk,
        ).evaluate_points(POINTS)
        for chunk in (16, 5, 48, 80)
    ]  # fmt: skip
    for other in values[1:]:
        for name in values[0]:
            np.testing.assert_allclose(other[name], values[0][name], rtol=1e-6, err_msg=name)
    assert np.all(np.isfinite(values[0]["train_loss_se"]))


def test_the_forward_chunk_probe_records_its_choice_and_never_changes_values(monkeypatch):
    model, inputs, targets = logistic_setup(n=300)
    directions = create_directions(model, seed=0)
    nominal = SurfaceEvaluator(
        model, directions, (inputs, targets), forward_chunk=64, batch_size=64
    )
    probes = ProbeSettings(max_pass_seconds=math.inf)  # timed on whole passes
    probed = SurfaceEvaluator(model, directions, (inputs, targets), batch_size=64, probes=probes)
    execution = probed.provenance["execution"]
    assert execution["forward_chunk_choice"] == "probe"
    probed_chunks = set(execution["forward_chunk_probe"]) - {"unit"}
    assert {"64", "32"} <= probed_chunks <= {"16", "32", "64", "128", "256", "300"}
    assert str(execution["forward_chunk"]) in probed_chunks
    json.dumps(probed.provenance)
    got, expected = probed.evaluate_points(POINTS), nominal.evaluate_points(POINTS)
    for name in expected:
        assert np.array_equal(got[name], expected[name], equal_nan=True), name
    probes = ProbeSettings(max_pass_seconds=0.0)  # timed on a prefix
    prefix = SurfaceEvaluator(model, directions, (inputs, targets), batch_size=64, probes=probes)
    assert prefix.provenance["execution"]["forward_chunk_probe"]["unit"] == "ms per sample"
    for name, value in prefix.evaluate_points(POINTS).items():
        assert np.array_equal(value, expected[name], equal_nan=True), name
    probes = ProbeSettings(max_pass_seconds=0.0, max_batch_seconds=0.0)  # a "slow" model
    slow = SurfaceEvaluator(model, directions, (inputs, targets), batch_size=64, probes=probes)
    assert slow.provenance["execution"]["forward_chunk"] == 64
    assert "no probe" in slow.provenance["execution"]["forward_chunk_choice"]
    with pytest.raises(ValueError, match="forward_chunk"):
        SurfaceEvaluator(model, directions, (inputs, targets), forward_chunk=0)
    monkeypatch.setenv("PMI_SIZE", "3")  # one of 3 ranks launched by mpiexec: no probe
    ranked = SurfaceEvaluator(model, directions, (inputs, targets), batch_size=64, probes=probes)
    assert ranked.provenance["execution"]["forward_chunk"] == 64
    assert "3 MPI ranks" in ranked.provenance["execution"]["forward_chunk_choice"]


def test_outputs_that_are_views_of_the_weights_are_copied_before_the_next_point():
    # Quadratic returns a view of its parameter: the outputs of several points are held
    # together, so each must be copied before the next point overwrites the weights.
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64)
    directions = Directions(x={"theta": torch.tensor([1.0, 0.0])}, y=None, dir_type="weights")
    centres = torch.zeros(10, 2, dtype=torch.float64)
    values = SurfaceEvaluator(
        Quadratic(theta), directions, (centres, centres), batch_size=4,
        loss=lambda out, y: (out - y).square().sum(1),
    ).evaluate_points(np.array([[0.0], [1.0], [3.0]]))  # fmt: skip
    np.testing.assert_allclose(values["train_loss"], [5.0, 8.0, 20.0], rtol=1e-15)


@pytest.mark.slow  # one torch.compile: 8-30 s depending on the inductor cache and the load
def test_compiled_with_folded_batchnorm_matches_eager():
    if not cxx_available():
        pytest.skip(
            "torch.compile on CPU needs a C++ compiler (g++ or clang++; or SAMLAB_NO_COMPILE)"
        )
    # No timing probes: this small model might measure faster eager (then 'compiled' falls
    # back to eager, see the next test), and the equality is what is tested here.
    probes = ProbeSettings(max_batch_seconds=0.0)
    model = make_cnn(torch.float64)
    model.train()  # the evaluator must use eval mode and give the flag back
    before = state_of(model)
    data = image_data(n=80)  # batches of 32, 32, 16: the last one is padded
    directions = create_directions(model, seed=2, xignore="none", yignore="none")
    options = dict(test_data=image_data(n=24, seed=5), batch_size=32, probes=probes)
    compiled = SurfaceEvaluator(model, directions, data, mode="compiled", **options)
    assert compiled.mode == "compiled", compiled.provenance["execution"]
    assert compiled.provenance["execution"]["batchnorm_folded"] == 3
    eager = SurfaceEvaluator(model, directions, data, mode="eager", **options)
    got = compiled.evaluate_points(POINTS)  # a recompile would raise here
    assert_metrics_close(got, eager.evaluate_points(POINTS), torch.float64)
    compiled.check_center()
    assert model.training and all(m.training for m in model.modules())
    assert_bitwise_equal(model, before)
    # a guard change (here requires_grad) would recompile: refused, model still restored
    model[11].weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="recompile"):
        compiled.evaluate_points(POINTS[1:2])
    model[11].weight.requires_grad_(True)
    assert_bitwise_equal(model, before)


@pytest.mark.slow  # one torch.compile of a small MLP: a few seconds
def test_compiled_falls_back_to_eager_when_the_probe_measures_it_slower(recwarn):
    if not cxx_available():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    # timed on whole passes; compiled never "faster"
    probes = ProbeSettings(max_pass_seconds=math.inf, min_gain=0.0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    data = (torch.randn(50, 4), torch.randint(0, 3, (50,)))
    directions = create_directions(model, seed=0)
    evaluator = SurfaceEvaluator(
        model, directions, data, mode="compiled", batch_size=16, probes=probes
    )
    execution = evaluator.provenance["execution"]
    assert evaluator.mode == "eager" and "eager" in execution["compiled_fallback"]
    assert set(execution["compiled_probe_ms"]) == {"eager", "compiled"}
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    eager = SurfaceEvaluator(model, directions, data, mode="eager", batch_size=16, probes=probes)
    got, expected = evaluator.evaluate_points(POINTS), eager.evaluate_points(POINTS)
    for name in expected:
        assert np.array_equal(got[name], expected[name], equal_nan=True), name


@pytest.mark.slow  # one torch.compile of a K-point vmap graph per evaluation set: seconds
def test_compiled_points_per_call_match_eager_and_do_not_depend_on_position():
    if not cxx_available():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    # "cheap" (timed on whole passes), and every fast path "wins"
    probes = ProbeSettings(max_pass_seconds=math.inf, min_gain=math.inf)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    model.train()
    before = state_of(model)
    generator = torch.Generator().manual_seed(3)
    data = (torch.randn(150, 4, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (150,), generator=generator))  # fmt: skip
    test = (torch.randn(40, 4, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (40,), generator=generator))  # fmt: skip
    directions = create_directions(model, seed=1, xignore="none", yignore="none")
    # 150 = 4 x 32 + 22: a ragged last batch
    options = dict(test_data=test, batch_size=32, probes=probes)
    fast = SurfaceEvaluator(model, directions, data, mode="compiled", **options)
    execution = fast.provenance["execution"]
    assert fast.mode == "compiled" and fast.points_per_call > 1, execution
    assert "points per compiled call" in execution["compiled_points"]
    assert execution["points_per_call"] == fast.points_per_call == fast.default_chunk_size
    eager = SurfaceEvaluator(model, directions, data, mode="eager", **options)
    got = fast.evaluate_points(POINTS)
    assert_metrics_close(got, eager.evaluate_points(POINTS), torch.float64)
    # a point's bits do not depend on its chunk or its position in the padded call
    order = [3, 0, 4, 1, 2]
    shuffled = fast.evaluate_points(POINTS[order])
    single = [fast.evaluate_points(POINTS[k : k + 1]) for k in range(len(POINTS))]
    for name, value in got.items():
        assert np.array_equal(shuffled[name], value[order], equal_nan=True), name
        ones = np.array([one[name][0] for one in single])
        assert np.array_equal(ones, value, equal_nan=True), name
    fast.check_center()
    assert model.training and all(m.training for m in model.modules())
    assert_bitwise_equal(model, before)


def test_fast_cross_entropy_stats_match_cross_entropy_and_argmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=generator, dtype=torch.float64)
    logits[:8] = torch.round(logits[:8])  # ties: argmax takes the first maximum
    logits[8, 1] = logits[8, 3] = 9.0
    logits[9, 2] = math.nan  # NaN counts as the maximum, as in argmax
    targets = torch.randint(0, 5, (64,), generator=generator)
    targets[8], targets[9] = 3, 2
    got = fast_cross_entropy_stats(logits, targets)
    losses = F.cross_entropy(logits, targets, reduction="none")
    correct = (logits.argmax(1) == targets).double()
    assert torch.equal(got[1], correct)
    torch.testing.assert_close(got[0], losses, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_compiled_falls_back_to_eager_with_one_warning(monkeypatch):
    monkeypatch.setenv("SAMLAB_NO_COMPILE", "1")  # as without a C++ compiler
    model = make_cnn(torch.float64)
    directions = create_directions(model, seed=0)
    with pytest.warns(RuntimeWarning, match="eager") as caught:
        evaluator = SurfaceEvaluator(model, directions, image_data(n=32), mode="compiled")
    assert len(caught) == 1 and evaluator.mode == "eager"
    assert "C++" in evaluator.provenance["execution"]["compile_error"]
    evaluator.check_center()


def test_folded_forward_follows_in_place_weight_changes():
    model = make_cnn(torch.float64)
    inputs, _ = image_data(n=16)
    folded = fold_batchnorm(model, inputs)
    assert folded.num_folded == 3 and folded.reason is None
    with torch.no_grad():
        for tensor in model.state_dict().values():  # weights and BN statistics move
            if tensor.is_floating_point():
                tensor.mul_(1.1).add_(0.01)
        folded.refresh()
        torch.testing.assert_close(folded(inputs), model(inputs), rtol=1e-12, atol=1e-12)

    # a pair whose conv output is also used elsewhere must not be folded
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)

        def forward(self, x):
            h = self.conv(x)
            return self.bn(h) + h

    assert fold_batchnorm(Branch().double().eval(), inputs).num_folded == 0


def test_bn_recompute_uses_re_estimated_statistics_and_restores_buffers():
    model = make_cnn(torch.float64)
    before = state_of(model)
    inputs, targets = image_data(n=64)
    directions = create_directions(model, seed=4)
    evaluator = SurfaceEvaluator(
        model, directions, (inputs, targets), bn_mode="recompute", batch_size=32
    )
    coords = np.array([[0.0, 0.0], [0.5, -0.5]])
    values = evaluator.evaluate_points(coords)
    assert_bitwise_equal(model, before)

    batches = [inputs[:32], inputs[32:]]
    for k, (a, b) in enumerate(coords):  # oracle: torch's own BN re-estimation (SWA)
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for name, tensor in moved.named_parameters():
                tensor.add_(a * directions.x[name].double() + b * directions.y[name].double())
        torch.optim.swa_utils.update_bn(batches, moved)
        moved.eval()
        with torch.no_grad():
            expected = F.cross_entropy(moved(inputs), targets).item()
        assert values["train_loss"][k] == pytest.approx(expected, rel=1e-10)

    frozen = SurfaceEvaluator(model, directions, (inputs, targets), batch_size=32)
    assert frozen.center()["train_loss"] != pytest.approx(values["train_loss"][0], rel=1e-3)
    assert evaluator.check_center()["train_loss"] == values["train_loss"][0]
    assert_bitwise_equal(model, before)
    with pytest.raises(ValueError, match="bn_mode"):
        SurfaceEvaluator(model, directions, (inputs, targets), bn_mode="recompute", mode="vmap")


def test_model_is_unchanged_bitwise_after_evaluation_even_on_error():
    model = make_cnn(torch.float64)
    for parameter in model.parameters():
        parameter.grad = None
    before = state_of(model)
    inputs, targets = image_data(n=40)
    directions = create_directions(model, seed=0, dir_type="states")
    surface_2d(
        model, directions, (inputs, targets), x=[-1, 0.5], y=[0.3], progress=False
    )  # fmt: skip
    assert_bitwise_equal(model, before)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())

    def failing_loss(outputs, targets):
        raise RuntimeError("boom")

    evaluator = SurfaceEvaluator(model, directions, (inputs, targets), loss=failing_loss)
    with pytest.raises(RuntimeError, match="boom"):
        evaluator.evaluate_points(np.array([[0.7, -0.7]]))
    assert_bitwise_equal(model, before)


# --------------------------------------------------------------------------------------------
# Data, subsets, provenance, validation
# --------------------------------------------------------------------------------------------


def test_empty_data_raise_value_error():
    empty = (torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        as_tensors(empty)
    with pytest.raises(ValueError, match="empty"):
        as_tensors(DataLoader(TensorDataset(*empty), batch_size=4))
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="empty"):
        SurfaceEvaluator(model, create_directions(model, seed=0), empty)
    with pytest.raises(ValueError, match="subset"):
        as_tensors((torch.ones(5, 3), torch.ones(5)), subset=0)


def test_subset_indices_are_recorded_and_reproducible_from_the_seed():
    inputs, targets = torch.randn(100, 3), torch.randint(0, 2, (100,))
    x1, y1, idx1 = as_tensors((inputs, targets), subset=20, subset_seed=3)
    x2, y2, idx2 = as_tensors(TensorDataset(inputs, targets), subset=20, subset_seed=3)
    x3, y3, idx3 = as_tensors(
        DataLoader(TensorDataset(inputs, targets), batch_size=7, shuffle=True),
        subset=20,
        subset_seed=3,
    )  # noqa: E501
    _, _, other = as_tensors((inputs, targets), subset=20, subset_seed=4)
    assert idx1.dtype == np.int64 and len(set(idx1.tolist())) == 20
    assert np.array_equal(idx1, idx2) and np.array_equal(idx1, idx3)
    assert not np.array_equal(idx1, other)
    for xs, ys in ((x1, y1), (x2, y2), (x3, y3)):
        assert torch.equal(xs, inputs[idx1]) and torch.equal(ys, targets[idx1])

    class Pairs(torch.utils.data.Dataset):  # a plain map-style dataset of (x, y) items
        def __len__(self):
            return len(inputs)

        def __getitem__(self, index):
            return inputs[index], int(targets[index])

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(inputs, targets))

    x4, y4, idx4 = as_tensors(Pairs(), subset=20, subset_seed=3)
    x5, y5, idx5 = as_tensors(DataLoader(Stream(), batch_size=16), subset=20, subset_seed=3)
    assert np.array_equal(idx4, idx1) and np.array_equal(idx5, idx1)
    for xs, ys in ((x4, y4), (x5, y5)):
        assert torch.equal(xs, inputs[idx1]) and torch.equal(ys, targets[idx1])
    explicit = np.array([5, 1, 9])
    assert np.array_equal(as_tensors((inputs, targets), subset=explicit)[2], explicit)

    model = nn.Linear(3, 2)
    evaluator = SurfaceEvaluator(
        model, create_directions(model, seed=0), (inputs, targets), subset=20, subset_seed=3
    )
    assert np.array_equal(evaluator.train_indices, idx1)
    provenance = evaluator.provenance
    assert provenance["train_size"] == 20 and provenance["subset"] == 20
    digest = hashlib.sha256(idx1.astype("<i8").tobytes()).hexdigest()
    assert provenance["train_indices_sha256"] == digest


def test_provenance_is_json_and_identifies_the_model():
    model = make_cnn(torch.float32)
    data = image_data(n=32, dtype=torch.float32)
    directions = create_directions(model, seed=5)
    provenance = SurfaceEvaluator(model, directions, data).provenance
    json.dumps(provenance)
    for key in ("directions", "dir_type", "loss_name", "bn_mode", "batch_size", "mode",
                "train_size", "train_indices_sha256", "model_sha256", "directions_sha256",
                "torch_version", "numpy_version", "landscape_version"):  # fmt: skip
        assert key in provenance, key
    assert provenance["directions"]["seed"] == 5 and provenance["mode"] == "eager"
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    assert provenance["model_sha256"] == digest.hexdigest()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1
    assert (
        SurfaceEvaluator(model, directions, data).provenance["model_sha256"] != digest.hexdigest()
    )


def test_invalid_directions_and_options_raise():
    model = nn.Linear(3, 2)
    data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    foreign = Directions(x={"nope": torch.ones(2)}, y=None, dir_type="weights", meta={})
    with pytest.raises(ValueError, match="nope"):
        SurfaceEvaluator(model, foreign, data)
    bad_shape = Directions(
        x={"weight": torch.ones(3, 2), "bias": torch.ones(2)}, y=None, dir_type="weights"
    )
    with pytest.raises(ValueError, match="shape"):
        SurfaceEvaluator(model, bad_shape, data)
    directions = create_directions(model, seed=0, ndim=1)
    for option in (
        {"mode": "fast"},
        {"bn_mode": "train"},
        {"loss": "hinge"},
        {"batch_size": 0},
        {"probe_vmap": "yes"},
        {"output_budget": -1},
    ):
        with pytest.raises(ValueError):
            SurfaceEvaluator(model, directions, data, **option)
    with pytest.raises(ValueError, match="surface_2d"):
        surface_2d(model, directions, data, progress=False)
    with pytest.raises(ValueError):
        Surface(
            x=np.zeros(3), y=np.zeros(2), metrics={"l": np.zeros((3, 2))}, done=np.zeros((2, 3))
        )


def test_eager_cross_entropy_stats_equal_cross_entropy_and_argmax():
    torch.manual_seed(0)
    metrics = Metrics("crossentropy", batch_size=128, sets=[])
    outputs = torch.randn(300, 10)
    outputs[:50, 3] = outputs[:50, 7] = outputs[:50].max(1).values + 1  # ties: first index wins
    targets = torch.randint(0, 10, (300,))
    targets[:25] = 3
    targets[25:50] = 7
    fast = metrics.per_sample(outputs, targets, eager=True)
    reference = metrics.per_sample(outputs, targets)
    np.testing.assert_allclose(fast[0], F.cross_entropy(outputs, targets, reduction="none"),
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    assert torch.equal(fast[1], (outputs.argmax(1) == targets).float())
    assert torch.equal(fast[1], reference[1]) and fast[1][:25].all() and not fast[1][25:50].any()
    # out-of-range class indices take F.cross_entropy's path and its error
    with pytest.raises((IndexError, RuntimeError)):
        metrics.per_sample(outputs, torch.full((300,), 12), eager=True)


def test_evaluator_holds_its_parts_and_every_path_follows_one_protocol():
    """The evaluator inherits from nothing and holds its parts (:mod:`landscape.evaluate`),
    which never import it; every evaluation path listed in ``paths.PATHS`` answers one
    protocol; ``CENTER_TOLERANCE`` is the same object from :mod:`landscape.evaluate`."""
    import importlib
    import pkgutil

    import landscape.evaluate as evaluate
    import landscape.evaluate.paths as paths

    assert SurfaceEvaluator.__bases__ == (object,)
    protocol = {"mode", "points_per_call", "batch_sums", "evaluate"}
    public = {name for name in vars(EvaluationPath) if not name.startswith("_")}
    assert public | set(EvaluationPath.__annotations__) == protocol
    for path in PATHS:
        assert issubclass(path, EvaluationPath) and isinstance(path.mode, str), path
        assert all(len(cls.__bases__) == 1 for cls in path.__mro__[:-1]), path  # no mixins
    assert evaluate.CENTER_TOLERANCE is center_module.CENTER_TOLERANCE
    for package in (evaluate, paths):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            if module.__name__ != "landscape.evaluate.evaluator" and not info.ispkg:
                assert not hasattr(module, "SurfaceEvaluator"), module.__name__
