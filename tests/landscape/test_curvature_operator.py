"""landscape.curvature.HessianOperator against explicit matrices on tiny float64 models:
``torch.autograd.functional.hessian`` for H, ``J^T H_loss J`` from
``torch.autograd.functional.jacobian`` for the GGN, every mode alike."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from landscape.curvature import HessianOperator
from landscape.curvature.operator import clear_mode_cache

MODES = ("reverse", "forward", "auto")
DOUBLE = torch.float64


def mlp(outputs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, outputs)).to(DOUBLE)


def samples(count: int = 12, classes: int | None = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(count, 4, generator=generator, dtype=DOUBLE)
    if classes is None:
        return inputs, torch.randn(count, 2, generator=generator, dtype=DOUBLE)
    return inputs, torch.randint(0, classes, (count,), generator=generator)


def flat_params(model: nn.Module, names: list[str]) -> torch.Tensor:
    every = dict(model.named_parameters())
    return torch.cat([every[n].detach().reshape(-1) for n in names])


def as_dict(model: nn.Module, names: list[str], theta: torch.Tensor) -> dict:
    every, out, start = dict(model.named_parameters()), {}, 0
    for name in names:
        numel = every[name].numel()
        out[name] = theta[start : start + numel].view(every[name].shape)
        start += numel
    return out


def random(n: int, k: int | None = None, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (n,) if k is None else (n, k)
    return torch.randn(shape, generator=generator, dtype=DOUBLE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batches", ["one", "loader", "loader-kept"])
def test_products_equal_the_autograd_hessian(mode, batches, dense_hessian):
    model, (x, y) = mlp(), samples(12)
    data, keep = (x, y), 1
    if batches != "one":  # batches of 5, 5 and 2 samples: the weights n_b / N matter
        data = DataLoader(TensorDataset(x, y), batch_size=5)
        keep = 3 if batches == "loader-kept" else 1
    op = HessianOperator(model, data, "crossentropy", mode=mode, keep_graph_batches=keep)
    hessian = dense_hessian(model, x, y, F.cross_entropy)
    v, V = random(op.size), random(op.size, 3)
    torch.testing.assert_close(op.matvec(v), hessian @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matmat(V), hessian @ V, rtol=1e-10, atol=1e-12)
    assert op.size == hessian.shape[0] and op.mode in ("reverse", "forward")
    assert op.dtype == DOUBLE and op.device == torch.device("cpu")
    assert op.loss() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(op.gradient(), expected, rtol=1e-10, atol=1e-12)


def test_mse_and_callable_losses_and_a_batch_size_split(dense_hessian):
    model, (x, y) = mlp(outputs=2), samples(10, classes=None)
    hessian = dense_hessian(model, x, y, F.mse_loss)
    v = random(hessian.shape[0])
    for loss in ("mse", lambda out, target: ((out - target) ** 2).mean()):
        for mode in ("reverse", "forward"):
            op = HessianOperator(model, (x, y), loss, mode=mode, batch_size=4)
            assert op.provenance()["batch_sizes"] == [4, 4, 2]
            torch.testing.assert_close(op.matvec(v), hessian @ v, rtol=1e-10, atol=1e-12)


def test_subset_takes_the_seeded_samples(dense_hessian):
    model, (x, y) = mlp(), samples(12)
    op = HessianOperator(model, (x, y), mode="reverse", subset=5, subset_seed=3)
    chosen = np.sort(torch.randperm(12, generator=torch.Generator().manual_seed(3))[:5].numpy())
    hessian = dense_hessian(model, x[chosen], y[chosen], F.cross_entropy)
    v = random(op.size)
    torch.testing.assert_close(op.matvec(v), hessian @ v, rtol=1e-10, atol=1e-12)
    assert op.provenance()["samples"] == 5 and "indices_sha256" in op.provenance()


class Square(torch.autograd.Function):
    """x ** 2 with a backward but no jvp: forward-mode AD fails on it."""

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_auto_leaves_out_a_mode_that_fails(dense_hessian):
    model, (x, y) = mlp(outputs=2), samples(10, classes=None)

    def squared_error(outputs, targets):
        return Square.apply(outputs - targets).mean()

    op = HessianOperator(model, (x, y), squared_error)
    assert op.mode == "auto"  # the first products are the probe
    hessian = dense_hessian(model, x, y, F.mse_loss)
    V = random(op.size, 3)
    # column 0 timed in reverse, column 1 tried in forward (fails: made in reverse), column 2
    # in the chosen mode
    torch.testing.assert_close(op.matmat(V), hessian @ V, rtol=1e-10, atol=1e-12)
    facts = op.provenance()
    assert op.mode == "reverse" and "forward failed (NotImplementedError" in facts["mode_reason"]
    assert facts["probe_products"] == 1 and list(facts["probe_seconds"]) == ["reverse"]
    assert facts["hvp_count"] == 3 and facts["probe_extra_products"] == 0


def count_forwards(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("ggn", [False, True])
def test_one_batch_keeps_the_first_order_graph(ggn):
    model, (x, y) = mlp(), samples(12)
    calls = count_forwards(model)
    op = HessianOperator(model, (x, y), mode="reverse", ggn=ggn)
    assert calls[0] == 0  # lazily: nothing runs before the first product
    first = op.matvec(random(op.size))
    for _ in range(3):
        op.matvec(random(op.size, seed=5))
    op.matmat(random(op.size, 2))
    op.loss(), op.gradient()
    assert calls[0] == 1
    torch.testing.assert_close(op.matvec(random(op.size)), first, rtol=0, atol=0)
    assert op.provenance()["graph_kept"] is True


def test_several_batches_redo_the_forward_unless_kept():
    model, (x, y) = mlp(), samples(12)
    data = [(x[:5], y[:5]), (x[5:9], y[5:9]), (x[9:], y[9:])]
    calls = count_forwards(model)
    fresh = HessianOperator(model, data, mode="reverse")  # keep_graph_batches=1 < 3
    fresh.matvec(random(fresh.size))
    fresh.matvec(random(fresh.size))
    assert calls[0] == 6
    fresh.matmat(random(fresh.size, 4))  # one forward per batch for all columns
    assert calls[0] == 9
    calls[0] = 0
    kept = HessianOperator(model, data, mode="reverse", keep_graph_batches=3)
    for _ in range(3):
        kept.matvec(random(kept.size))
    assert calls[0] == 3


def explicit_ggn(model, inputs, targets, loss: str, batches) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    theta = flat_params(model, names)
    total = sum(stop - start for start, stop in batches)
    ggn = torch.zeros(theta.numel(), theta.numel(), dtype=DOUBLE)
    for start, stop in batches:
        x = inputs[start:stop]

        def outputs_of(theta, x=x):
            return functional_call(model, as_dict(model, names, theta), (x,))

        outputs = outputs_of(theta).detach()
        jac = torch.autograd.functional.jacobian(outputs_of, theta).reshape(outputs.numel(), -1)
        if loss == "crossentropy":
            p = torch.softmax(outputs, dim=1)
            blocks = [torch.diag(row) - torch.outer(row, row) for row in p]
            h_loss = torch.block_diag(*blocks) / len(x)
        else:
            h_loss = torch.eye(outputs.numel(), dtype=DOUBLE) * 2 / outputs.numel()
        ggn += (len(x) / total) * jac.T @ h_loss @ jac
    return ggn


@pytest.mark.parametrize("loss", ["crossentropy", "mse"])
@pytest.mark.parametrize("mode", MODES)
def test_ggn_equals_jacobian_sandwich(loss, mode):
    model = mlp(outputs=3 if loss == "crossentropy" else 2)
    x, y = samples(7, classes=3 if loss == "crossentropy" else None)
    bounds = [(0, 4), (4, 7)]
    data = [(x[a:b], y[a:b]) for a, b in bounds]
    op = HessianOperator(model, data, loss, mode=mode, ggn=True, keep_graph_batches=2)
    expected = explicit_ggn(model, x, y, loss, bounds)
    V = random(op.size, 3)
    torch.testing.assert_close(op.matmat(V), expected @ V, rtol=1e-10, atol=1e-12)
    assert np.linalg.eigvalsh(expected.numpy()).min() > -1e-12  # PSD, unlike H
    assert op.provenance()["matrix"] == "ggn"


def test_params_by_name_and_predicate_and_restricted_blocks(dense_hessian):
    model, (x, y) = mlp(), samples(12)
    hessian = dense_hessian(model, x, y, F.cross_entropy)
    full = HessianOperator(model, (x, y), mode="reverse")
    slices = dict(full.blocks("parameter"))
    assert [name for name, _ in full.blocks("module")] == ["0", "2"]
    assert dict(full.blocks("module"))["2"] == slice(slices["2.weight"].start, full.size)
    chosen = ["2.bias", "0.weight"]  # given out of order: the operator keeps model order
    index = torch.cat([torch.arange(full.size)[slices[n]] for n in ("0.weight", "2.bias")])
    block = hessian[index][:, index]
    by_name = HessianOperator(model, (x, y), params=chosen, mode="forward")
    by_predicate = HessianOperator(
        model, (x, y), params=lambda name, p: name in chosen, mode="reverse"
    )
    restricted = full.restricted(chosen)
    for op in (by_name, by_predicate, restricted):
        assert op.names == ["0.weight", "2.bias"] and op.size == len(index)
        v = random(op.size)
        torch.testing.assert_close(op.matvec(v), block @ v, rtol=1e-10, atol=1e-12)
    layer = full.restricted("2")
    assert layer.names == ["2.weight", "2.bias"] and layer.data is full.data
    v = random(layer.size)
    torch.testing.assert_close(layer.matvec(v), hessian[25:, 25:] @ v, rtol=1e-10, atol=1e-12)


def test_flatten_unflatten_round_trip():
    model, data = mlp(), samples(12)
    op = HessianOperator(model, data, mode="reverse")
    flat = random(op.size)
    parts = op.unflatten(flat)
    assert list(parts) == op.names and [p.shape for p in parts.values()] == op.shapes
    torch.testing.assert_close(op.flatten(parts), flat)
    torch.testing.assert_close(op.flatten(list(parts.values())), flat)


def test_as_scipy_eigsh_finds_the_top_eigenvalues(dense_hessian):
    from scipy.sparse.linalg import eigsh

    model, (x, y) = mlp(), samples(12)
    op = HessianOperator(model, (x, y), mode="reverse")
    exact = np.linalg.eigvalsh(dense_hessian(model, x, y, F.cross_entropy).numpy())
    values = eigsh(op.as_scipy(), k=2, which="LA", tol=1e-10, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(values), exact[-2:], rtol=1e-8)
    assert op.hvp_count > 0


def test_hvp_count_provenance_and_the_probe_cache(tmp_path, monkeypatch, dense_hessian):
    cache = tmp_path / "modes.json"
    monkeypatch.setenv("LANDSCAPE_PROBE_CACHE", str(cache))
    clear_mode_cache()
    model, data = mlp(), samples(12)
    hessian = dense_hessian(model, *data, F.cross_entropy)
    op = HessianOperator(model, data)
    assert op.mode == "auto" and op.provenance()["probe_products"] == 0 and not cache.exists()
    # the probe times the operator's own products: reverse first (graph built untimed), then
    # forward (again when close): nothing is made for the probe alone
    for seed in range(3):
        v = random(op.size, seed=seed)
        torch.testing.assert_close(op.matvec(v), hessian @ v, rtol=1e-10, atol=1e-12)
    V = random(op.size, 3)
    torch.testing.assert_close(op.matmat(V), hessian @ V, rtol=1e-10, atol=1e-12)
    facts = op.provenance()
    assert op.hvp_count == 6 and facts["hvp_count"] == 6 and op.mode in ("reverse", "forward")
    assert facts["probe_products"] in (2, 3) and facts["probe_extra_products"] == 0
    assert set(facts["probe_seconds"]) == {"reverse", "forward"}
    assert facts["probe_cache_hit"] is False and facts["mode"] in facts["mode_reason"]
    again = HessianOperator(mlp(), samples(12)).provenance()  # this process remembers
    assert again["probe_cache_hit"] is True and again["probe_cache"] == "process"
    assert again["probe_products"] == 0 and again["mode"] == facts["mode"]
    assert again["probe_seconds"] == facts["probe_seconds"]
    clear_mode_cache()  # a new process: the cache file remembers
    stored = json.loads(cache.read_text())
    assert [entry["mode"] for entry in stored.values()] == [facts["mode"]]
    fresh = HessianOperator(mlp(), samples(12))
    assert fresh.provenance()["probe_cache"] == str(cache) and fresh.mode == facts["mode"]
    torch.testing.assert_close(fresh.matvec(v), hessian @ v, rtol=1e-10, atol=1e-12)
    other_shape = HessianOperator(mlp(), samples(11)).provenance()  # another input shape
    assert other_shape["probe_cache_hit"] is False and other_shape["mode"] == "auto"
    json.dumps(facts)
    for key in ("mode", "data_sha256", "model_sha256", "samples", "bn_mode", "param_count",
                "dtype", "device", "ggn", "probe_products", "mode_reason"):  # fmt: skip
        assert key in facts, key
    assert facts["bn_mode"] == "eval" and facts["samples"] == 12 and facts["param_count"] == 4
    assert facts["dtype"] == "float64" and facts["device"] == "cpu" and facts["ggn"] is False
    assert again["data_sha256"] == facts["data_sha256"]
    assert again["model_sha256"] == facts["model_sha256"]
    other = HessianOperator(mlp(), samples(11), mode="reverse").provenance()
    assert other["data_sha256"] != facts["data_sha256"]


def test_the_cache_file_can_be_off_broken_or_cleared(tmp_path, monkeypatch):
    cache = tmp_path / "sub" / "modes.json"
    model, data = mlp(), samples(12)
    monkeypatch.setenv("LANDSCAPE_PROBE_CACHE", "off")
    clear_mode_cache()
    op = HessianOperator(model, data)
    op.matmat(random(op.size, 3))
    assert op.mode in ("reverse", "forward") and not cache.parent.exists()
    monkeypatch.setenv("LANDSCAPE_PROBE_CACHE", str(cache))
    clear_mode_cache()
    cache.parent.mkdir()
    cache.write_text("{not json")  # unreadable: counts as empty, then rewritten
    op = HessianOperator(model, data)
    op.matmat(random(op.size, 3))
    assert op.provenance()["probe_cache_hit"] is False and len(json.loads(cache.read_text())) == 1
    clear_mode_cache(file=True)
    assert not cache.exists()
    monkeypatch.delenv("LANDSCAPE_PROBE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    op = HessianOperator(model, data)
    op.matmat(random(op.size, 3))
    assert (tmp_path / "xdg" / "samlab" / "hessian-product-modes.json").exists()
    clear_mode_cache(file=True)


def test_resolve_mode_finishes_the_probe_with_products_of_its_own(monkeypatch, dense_hessian):
    monkeypatch.setenv("LANDSCAPE_PROBE_CACHE", "off")
    clear_mode_cache()
    model, data = mlp(), samples(12)
    op = HessianOperator(model, data)
    v = random(op.size)
    first = op.matvec(v)  # timed in reverse; forward is still to be timed
    assert op.mode == "auto" and op.provenance()["probe_products"] == 1
    mode = op.resolve_mode()
    facts = op.provenance()
    assert mode == op.mode in ("reverse", "forward") and op.hvp_count == 1
    assert facts["probe_products"] in (2, 3) and facts["probe_extra_products"] in (1, 2)
    hessian = dense_hessian(model, *data, F.cross_entropy)
    torch.testing.assert_close(first, hessian @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(v), hessian @ v, rtol=1e-10, atol=1e-12)
    assert op.resolve_mode() == mode and op.provenance()["probe_extra_products"] in (1, 2)


def test_several_batches_probe_the_first_batch_up_front(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_PROBE_CACHE", "off")
    clear_mode_cache()
    model, (x, y) = mlp(), samples(12)
    data = [(x[:6], y[:6]), (x[6:], y[6:])]
    op = HessianOperator(model, data)
    facts = op.provenance()
    assert op.mode in ("reverse", "forward") and op.hvp_count == 0
    assert facts["probe_products"] in (2, 3, 4) and facts["probe_extra_products"] > 0


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)
    ).to(DOUBLE)
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model(torch.randn(16, 4, dtype=DOUBLE) * 2 + 1)
    return model


def test_batchnorm_in_eval_mode_gives_a_symmetric_hessian_and_modes_are_restored():
    model, (x, y) = bn_model(), samples(12)
    model[4].eval()  # a mixed state, restored module by module
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    ops = [HessianOperator(model, (x, y), mode=m) for m in ("reverse", "forward")]
    v, w = random(ops[0].size), random(ops[0].size, seed=7)
    for op in ops:
        assert op.loss() == pytest.approx(F.cross_entropy(model.eval()(x), y).item())
        model.train()
        model[4].eval()
        hv, hw = op.matvec(v), op.matvec(w)
        assert float(w @ hv) == pytest.approx(float(v @ hw), rel=1e-10)
        torch.testing.assert_close(hv, ops[0].matvec(v), rtol=1e-10, atol=1e-12)
    assert [m.training for m in model] == [True, True, True, True, False]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, buffers[key], rtol=0, atol=0)


@pytest.mark.parametrize("world", [2, 4])  # with 4, rank 3 holds no batch
def test_a_reducer_sums_the_shards_of_processes(world):
    model, (x, y) = mlp(), samples(12)
    data = [(x[:5], y[:5]), (x[5:9], y[5:9]), (x[9:], y[9:])]
    whole = HessianOperator(model, data, mode="reverse")
    v = random(whole.size)
    slots, barrier, results = [None] * world, threading.Barrier(world), {}

    def reducer_of(rank):
        def reduce(flat):  # an all-reduce (sum) across the threads
            slots[rank] = flat.clone()
            barrier.wait()
            total = sum(slots)
            barrier.wait()
            return total

        return reduce

    def process(rank):  # one "MPI rank": its own model copy, batches rank, rank + world, ...
        op = HessianOperator(
            copy.deepcopy(model), data, reducer=reducer_of(rank), shard=(rank, world)
        )
        results[rank] = (op.matvec(v), op.loss(), op.gradient(), op.provenance())

    threads = [threading.Thread(target=process, args=(r,)) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(results) == set(range(world))
    for rank, (hv, loss, gradient, facts) in results.items():
        torch.testing.assert_close(hv, whole.matvec(v), rtol=1e-10, atol=1e-12)
        assert loss == pytest.approx(whole.loss(), rel=1e-12)
        torch.testing.assert_close(gradient, whole.gradient(), rtol=1e-10, atol=1e-12)
        assert facts["samples"] == 12 and facts["batch_indices"] == list(range(3))[rank::world]
        assert facts["mode"] == "reverse" and facts["shard"] == [rank, world]


def bad_inputs():
    model, data = mlp(), samples(12)
    frozen = mlp().requires_grad_(False)
    yield lambda: HessianOperator(frozen, data), "no parameter selected"
    yield lambda: HessianOperator(model, data, params=["0.weight", "nope"]), "lacks"
    yield lambda: HessianOperator(model, data, params=lambda n, p: False), "no parameter selected"
    yield lambda: HessianOperator(model, [], mode="reverse"), "no samples"
    empty = DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0)), batch_size=2)
    yield lambda: HessianOperator(model, empty), "no samples"
    yield lambda: HessianOperator(model, data, mode="fast"), "mode must be one of"
    yield lambda: HessianOperator(model, data, loss="hinge"), "loss must be one of"
    yield lambda: HessianOperator(model, data, loss=F.l1_loss, ggn=True), "ggn=True needs"
    yield lambda: HessianOperator(model, data, shard=(0, 2)), "needs reducer"
    per_sample = HessianOperator(model, data, lambda out, t: out.sum(1), mode="reverse")
    yield lambda: per_sample.matvec(random(per_sample.size)), "scalar"
    op = HessianOperator(model, data, mode="reverse")
    yield lambda: op.matvec(random(op.size + 1)), r"shape \(43,\)"
    yield lambda: op.matvec(random(op.size).float()), "float32.*convert"
    yield lambda: op.matmat(random(op.size)), r"shape \(43, k\)"
    yield lambda: op.restricted(["3.weight"]), "neither a parameter nor a module"
    yield lambda: op.blocks("layer"), "by must be one of"


@pytest.mark.parametrize("case", range(15))
def test_bad_input_is_a_value_error_naming_the_fix(case):
    make, message = list(bad_inputs())[case]
    with pytest.raises(ValueError, match=message):
        make()
