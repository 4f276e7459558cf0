"""Forecasters of samlab.models: RevIN, SAMformer (and its baselines), TSMixer; the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samlab.models import (
    FORECASTERS,
    RevIN,
    SAMformer,
    TSMixer,
    create_model,
    get_model_info,
    list_models,
    samformer,
    transformer,
    transformer_random,
    tsmixer,
)

FORECASTER_NAMES = ["samformer", "transformer", "transformer_random", "tsmixer"]
BATCH, SEQ_LEN, HORIZON, CHANNELS = 4, 32, 8, 5


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def window(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Series with per-channel offsets and scales, so RevIN has something to undo."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator, dtype=dtype)
    offsets = torch.linspace(-3.0, 5.0, shape[-1], dtype=dtype)
    scales = torch.linspace(0.5, 4.0, shape[-1], dtype=dtype)
    return x * scales + offsets


def randomize_revin(revin: RevIN, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        revin.weight.copy_(0.5 + torch.rand(revin.n_channels, generator=generator))
        revin.bias.copy_(torch.randn(revin.n_channels, generator=generator))


# ---------------------------------------------------------------------------------------------
# Shapes, parameter counts, registry


@pytest.mark.parametrize("name", FORECASTER_NAMES)
def test_registry_builds_each_forecaster(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, n_channels=CHANNELS, seq_len=SEQ_LEN, horizon=HORIZON)
    out = model(window(BATCH, SEQ_LEN, CHANNELS))
    assert out.shape == (BATCH, HORIZON, CHANNELS)
    assert torch.isfinite(out).all()
    info = get_model_info(name)
    assert info.task == "forecasting"
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_batchnorm == info.has_batchnorm


def test_registry_lists_forecasters_by_task() -> None:
    assert list_models("forecasting") == FORECASTER_NAMES
    assert set(FORECASTERS) == set(FORECASTER_NAMES)
    assert set(list_models(None)) == set(list_models()) | set(FORECASTER_NAMES)
    assert all(get_model_info(name).task == "classification" for name in list_models())
    with pytest.raises(ValueError, match="unknown task"):
        list_models("regression")


def test_registry_example_from_the_docs() -> None:
    model = create_model("samformer", n_channels=7, seq_len=512, horizon=96)
    assert isinstance(model, SAMformer)
    assert count_parameters(model) == 82_590


@pytest.mark.parametrize(
    ("factory", "horizon"),
    [(samformer, HORIZON), (transformer, 1), (transformer_random, HORIZON), (tsmixer, 3)],
)
def test_output_shapes(factory, horizon: int) -> None:
    model = factory(CHANNELS, seq_len=SEQ_LEN, horizon=horizon)
    assert model(window(3, SEQ_LEN, CHANNELS)).shape == (3, horizon, CHANNELS)


def test_samformer_parameter_counts_match_the_paper_and_the_pytorch_port() -> None:
    # TF / paper: 3*(L*16 + 16) + (16*L + L) + (L + 1)*H + 2D; port: 2*(L*16 + 16) + (L*L + L) + ...
    assert count_parameters(samformer(7, 512, 96)) == 82_590
    assert count_parameters(samformer(7, 512, 720)) == 402_702
    assert count_parameters(samformer(7, 512, 96, output_projection=False)) == 328_334
    assert count_parameters(samformer(7, 512, 720, output_projection=False)) == 648_446
    assert count_parameters(samformer(7, 512, 96, use_revin=False)) == 82_590 - 2 * 7


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n_channels"):
        samformer(0)
    with pytest.raises(ValueError, match="d_model"):
        samformer(3, d_model=0)
    with pytest.raises(ValueError, match="dropout"):
        tsmixer(3, dropout=1.0)
    with pytest.raises(ValueError, match="norm"):
        tsmixer(3, norm="group")
    with pytest.raises(ValueError, match="activation"):
        tsmixer(3, activation="softmax")
    with pytest.raises(ValueError, match="seq_len=32"):
        samformer(CHANNELS, SEQ_LEN)(torch.randn(2, CHANNELS, SEQ_LEN))  # channels-first: wrong
    with pytest.raises(RuntimeError, match="before normalize"):
        RevIN(3).denormalize(torch.randn(2, 4, 3))


# ---------------------------------------------------------------------------------------------
# RevIN


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("affine_at_init", [True, False])
def test_revin_inverts_exactly(dtype: torch.dtype, tol: float, affine_at_init: bool) -> None:
    revin = RevIN(CHANNELS).to(dtype)
    if not affine_at_init:
        randomize_revin(revin)
    x = window(BATCH, SEQ_LEN, CHANNELS, dtype=dtype)
    z = revin.normalize(x)
    torch.testing.assert_close(revin.denormalize(z), x, rtol=tol, atol=tol)
    # Standardised per (sample, channel) before the affine map.
    standard = (z - revin.bias) / revin.weight
    zeros = torch.zeros(BATCH, CHANNELS, dtype=dtype)
    torch.testing.assert_close(standard.mean(dim=1), zeros, rtol=0, atol=100 * tol)
    expected_std = x.std(dim=1, correction=0) / torch.sqrt(x.var(dim=1, correction=0) + revin.eps)
    torch.testing.assert_close(standard.std(dim=1, correction=0), expected_std, rtol=tol, atol=tol)


def test_revin_without_affine_has_no_parameters() -> None:
    revin = RevIN(CHANNELS, affine=False)
    assert count_parameters(revin) == 0
    x = window(BATCH, SEQ_LEN, CHANNELS, dtype=torch.float64)
    torch.testing.assert_close(revin.denormalize(revin.normalize(x)), x, rtol=1e-12, atol=1e-12)


def test_revin_statistics_are_detached() -> None:
    revin = RevIN(CHANNELS).double()
    randomize_revin(revin)
    x = window(BATCH, SEQ_LEN, CHANNELS, dtype=torch.float64).requires_grad_(True)
    upstream = torch.randn(BATCH, SEQ_LEN, CHANNELS, dtype=torch.float64)
    (revin.normalize(x) * upstream).sum().backward()
    # With mu and sigma constants, d z / d x = gamma / sigma elementwise.
    sigma = torch.sqrt(x.detach().var(dim=1, keepdim=True, correction=0) + revin.eps)
    torch.testing.assert_close(x.grad, upstream * revin.weight.detach() / sigma)
    # Through the statistics the gradient would differ (a centred, projected version).
    x_live = x.detach().clone().requires_grad_(True)
    var, mean = torch.var_mean(x_live, dim=1, keepdim=True, correction=0)
    live = (x_live - mean) / torch.sqrt(var + revin.eps) * revin.weight + revin.bias
    (live * upstream).sum().backward()
    assert not torch.allclose(x_live.grad, x.grad)


# ---------------------------------------------------------------------------------------------
# SAMformer


def explicit_samformer(model: SAMformer, x: torch.Tensor) -> torch.Tensor:
    """The forward pass written out: explicit softmax attention instead of SDPA."""
    z = model.revin.normalize(x) if model.revin is not None else x
    tokens = z.transpose(1, 2)  # (B, D, L)
    q, k, v = model.query(tokens), model.key(tokens), model.value(tokens)
    attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(model.d_model), dim=-1)
    mixed = attention @ v
    if model.out_proj is not None:
        mixed = mixed @ model.out_proj.weight.T + model.out_proj.bias
    out = (tokens + mixed) @ model.head.weight.T + model.head.bias  # (B, D, H)
    out = out.transpose(1, 2)
    if model.revin is not None:
        out = (out - model.revin.bias) / model.revin.weight * model.revin.std + model.revin.mean
    return out


@pytest.mark.parametrize("output_projection", [True, False])
@pytest.mark.parametrize("use_revin", [True, False])
def test_samformer_sdpa_matches_explicit_formula(output_projection: bool, use_revin: bool) -> None:
    torch.manual_seed(0)
    model = samformer(
        CHANNELS, SEQ_LEN, HORIZON, output_projection=output_projection, use_revin=use_revin
    ).double()
    if use_revin:
        randomize_revin(model.revin)
    x = window(BATCH, SEQ_LEN, CHANNELS, dtype=torch.float64)
    torch.testing.assert_close(model(x), explicit_samformer(model, x), rtol=1e-12, atol=1e-12)


def test_samformer_tokens_need_no_copy_in_the_graph() -> None:
    # The window is copied once into channel-major memory before RevIN; the tokens that every
    # Linear reads are then a contiguous view, so autograd records no copy.
    for use_revin in (True, False):
        model = samformer(CHANNELS, SEQ_LEN, HORIZON, use_revin=use_revin)
        tokens, _ = model._tokens(window(BATCH, SEQ_LEN, CHANNELS))
        assert tokens.shape == (BATCH, CHANNELS, SEQ_LEN)
        assert tokens.is_contiguous()


def test_attention_is_over_channels() -> None:
    torch.manual_seed(0)
    model = samformer(CHANNELS, SEQ_LEN, HORIZON)
    attention = model.attention_map(window(BATCH, SEQ_LEN, CHANNELS))
    assert attention.shape == (BATCH, CHANNELS, CHANNELS)
    assert (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(BATCH, CHANNELS))


@pytest.mark.parametrize("affine_at_init", [True, False])
def test_samformer_is_channel_permutation_equivariant(affine_at_init: bool) -> None:
    torch.manual_seed(0)
    model = samformer(CHANNELS, SEQ_LEN, HORIZON).double()
    if not affine_at_init:
        randomize_revin(model.revin)
    x = window(BATCH, SEQ_LEN, CHANNELS, dtype=torch.float64)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    out = model(x)
    attention = model.attention_map(x)
    with torch.no_grad():  # RevIN's per-channel parameters follow their channels
        model.revin.weight.copy_(model.revin.weight[permutation])
        model.revin.bias.copy_(model.revin.bias[permutation])
    torch.testing.assert_close(model(x[..., permutation]), out[..., permutation])
    torch.testing.assert_close(
        model.attention_map(x[..., permutation]), attention[:, permutation][:, :, permutation]
    )


def test_transformer_is_samformer_architecture() -> None:
    torch.manual_seed(0)
    first = samformer(CHANNELS, SEQ_LEN, HORIZON)
    torch.manual_seed(0)
    second = transformer(CHANNELS, SEQ_LEN, HORIZON)
    assert type(first) is type(second)
    for (name_a, a), (name_b, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert name_a == name_b and torch.equal(a, b)


def test_transformer_random_freezes_attention_and_drops_revin() -> None:
    model = transformer_random(CHANNELS, SEQ_LEN, HORIZON)
    assert model.revin is None
    assert not any(isinstance(m, RevIN) for m in model.modules())
    frozen = {id(p) for p in model.attention_parameters()}
    assert len(frozen) == 8  # W_Q, W_K, W_V, W_O with biases
    for parameter in model.parameters():
        assert parameter.requires_grad == (id(parameter) not in frozen)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    assert all(
        not p.requires_grad for p in samformer(3, 8, 2, freeze_attention=True).query.parameters()
    )


# ---------------------------------------------------------------------------------------------
# TSMixer


def mixing_parameters(model: TSMixer) -> int:
    return count_parameters(model.blocks)


def test_tsmixer_blocks_have_their_own_layers_by_default() -> None:
    model = tsmixer(CHANNELS, SEQ_LEN, HORIZON, n_block=3)
    per_block = [{id(p) for p in block.parameters()} for block in model.blocks]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not per_block[i] & per_block[j]
    first = model.blocks[0].layers
    assert first.time_norm is not first.feature_norm


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_tsmixer_shared_weights_have_one_block_of_parameters(norm: str) -> None:
    L, D, ff = SEQ_LEN, CHANNELS, 16
    shared = tsmixer(D, L, HORIZON, n_block=4, ff_dim=ff, norm=norm, share_weights=True)
    separate = tsmixer(D, L, HORIZON, n_block=4, ff_dim=ff, norm=norm)
    norm_size = 2 * L * D  # one scale and one shift per (time, channel) cell
    mixing = (L * L + L) + (D * ff + ff) + (ff * D + D)
    assert mixing_parameters(shared) == mixing + norm_size  # one norm for both halves
    assert mixing_parameters(separate) == 4 * (mixing + 2 * norm_size)
    assert count_parameters(shared) == mixing + norm_size + (L * HORIZON + HORIZON) + 2 * D
    layers = shared.blocks[0].layers
    assert all(block.layers is layers for block in shared.blocks)
    assert layers.time_norm is layers.feature_norm
    # Same function, applied n_block times: the output still has the right shape.
    assert shared(window(BATCH, L, D)).shape == (BATCH, HORIZON, D)


def test_tsmixer_batchnorm_matches_keras_window_normalisation() -> None:
    # Keras BatchNormalization(axis=[-2, -1]): statistics over the batch per (time, channel).
    model = tsmixer(CHANNELS, SEQ_LEN, HORIZON).train()
    norm = model.blocks[0].layers.time_norm
    x = window(16, SEQ_LEN, CHANNELS)
    mean = x.mean(dim=0, keepdim=True)
    var = x.var(dim=0, keepdim=True, correction=0)
    torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)
    layer = tsmixer(CHANNELS, SEQ_LEN, HORIZON, norm="layer").blocks[0].layers.time_norm
    flat = x.flatten(1)
    expected = (flat - flat.mean(1, keepdim=True)) / torch.sqrt(
        flat.var(1, correction=0, keepdim=True) + 1e-3
    )
    torch.testing.assert_close(layer(x), expected.view_as(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_tsmixer_train_and_eval_differ(norm: str) -> None:
    torch.manual_seed(0)
    model = tsmixer(CHANNELS, SEQ_LEN, HORIZON, norm=norm, dropout=0.5)
    x = window(BATCH, SEQ_LEN, CHANNELS)
    train_a, train_b = model.train()(x), model(x)
    assert not torch.allclose(train_a, train_b)  # dropout draws differ
    model.eval()
    with torch.no_grad():
        eval_a, eval_b = model(x), model(x)
    torch.testing.assert_close(eval_a, eval_b, rtol=0, atol=0)
    assert not torch.allclose(eval_a, train_a)


def test_tsmixer_without_dropout_in_eval_depends_on_running_stats() -> None:
    torch.manual_seed(0)
    model = tsmixer(CHANNELS, SEQ_LEN, HORIZON, dropout=0.0)
    x = window(BATCH, SEQ_LEN, CHANNELS)
    train_out = model.train()(x)
    with torch.no_grad():
        eval_out = model.eval()(x)
    assert not torch.allclose(train_out, eval_out)  # batch statistics vs running statistics


# ---------------------------------------------------------------------------------------------
# Training and dtypes


@pytest.mark.parametrize(
    "build",
    [
        lambda: samformer(CHANNELS, SEQ_LEN, HORIZON),
        lambda: samformer(CHANNELS, SEQ_LEN, HORIZON, output_projection=False),
        lambda: transformer_random(CHANNELS, SEQ_LEN, HORIZON),
        lambda: tsmixer(CHANNELS, SEQ_LEN, HORIZON, dropout=0.0),
        lambda: tsmixer(CHANNELS, SEQ_LEN, HORIZON, dropout=0.0, norm="layer", share_weights=True),
    ],
)
def test_one_adam_step_lowers_mse(build) -> None:
    torch.manual_seed(0)
    model = build().train()
    x = window(16, SEQ_LEN, CHANNELS, seed=1)
    y = window(16, HORIZON, CHANNELS, seed=2)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = F.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = F.mse_loss(model(x), y)
    assert after < loss.detach(), (loss.item(), after.item())


@pytest.mark.parametrize("name", FORECASTER_NAMES)
def test_float64_forward_and_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, n_channels=CHANNELS, seq_len=SEQ_LEN, horizon=HORIZON)
    model = model.double().eval()
    x = window(BATCH, SEQ_LEN, CHANNELS, dtype=torch.float64)
    out = model(x)
    assert out.dtype == torch.float64
    out.square().mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.dtype == torch.float64 for p in trainable)
    with torch.no_grad():
        single = model.float()(x.float())
    torch.testing.assert_close(single, out.detach().float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("factory", [samformer, tsmixer])
def test_keras_init_is_glorot_uniform_with_zero_biases_and_torch_init_is_kept_on_request(factory):
    torch.manual_seed(0)
    model = factory(7, seq_len=64, horizon=24)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert linears
    for name, layer in linears.items():
        fan_out, fan_in = layer.weight.shape
        if name in ("query", "key", "value"):  # Keras' one-head attention kernel (L, 1, d)
            fan_out *= fan_in
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = layer.weight.detach()
        assert w.abs().max() <= bound, name
        assert w.abs().max() > 0.9 * bound, name  # uniform on the whole interval
        assert torch.count_nonzero(layer.bias) == 0, name
    torch.manual_seed(0)
    default = factory(7, seq_len=64, horizon=24, init="torch")
    assert torch.count_nonzero(default.head.bias) > 0
    with pytest.raises(ValueError, match="init must be one of"):
        factory(7, seq_len=64, horizon=24, init="glorot")


def test_compiled_samformer_gradients_equal_eager():
    # under torch.compile RevIN's affine parameters are expanded per window (two-stage
    # gradient sums, see RevIN._affine); values and gradients must still match eager
    import kernels.compiled

    if not kernels.compiled.compiler_available():
        pytest.skip("no C++ compiler for torch.compile")
    torch.manual_seed(0)
    model = samformer(3, seq_len=32, horizon=8)
    x, y = torch.randn(6, 32, 3), torch.randn(6, 8, 3)
    with torch.no_grad():  # non-trivial affine parameters
        model.revin.weight.uniform_(0.5, 1.5)
        model.revin.bias.uniform_(-0.5, 0.5)

    def grads(fn):
        model.zero_grad()
        loss = F.mse_loss(fn(x), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = grads(model)
    compiled_loss, compiled_grads = grads(torch.compile(model))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert model.revin.weight.grad.abs().sum() > 0


def test_revin_channel_major_equals_channel_last() -> None:
    # the compiled forward runs RevIN on (B, D, T) tokens (time_dim=2); same numbers as (B, T, D)
    revin = RevIN(CHANNELS)
    randomize_revin(revin)
    x = window(BATCH, SEQ_LEN, CHANNELS, dtype=torch.float64)
    z, stats = revin.normalize_with_stats(x)
    zt, stats_t = revin.normalize_with_stats(x.transpose(1, 2), time_dim=2)
    torch.testing.assert_close(zt.transpose(1, 2), z, rtol=1e-12, atol=1e-12)
    for a, b in zip(stats, stats_t, strict=True):
        torch.testing.assert_close(b.transpose(1, 2), a, rtol=1e-12, atol=1e-12)
    y = window(BATCH, HORIZON, CHANNELS, dtype=torch.float64)
    back = revin.denormalize_with(y.transpose(1, 2), stats_t, time_dim=2).transpose(1, 2)
    torch.testing.assert_close(back, revin.denormalize_with(y, stats), rtol=1e-12, atol=1e-12)
    assert revin.mean is None  # the *_with methods store nothing
