"""The forecast command line with dnsch/sam_experiments' (seed 003's) training flags.

``python -m samlab.train.forecast --dataset ETTh1 --seed 1 [--no_sam]`` runs without
``--output`` (a default folder, printed), the seed's flag names are aliases, ``--seed-defaults``
takes the seed's own defaults, and devices follow the rule of every samlab command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from samlab.train.forecast import __main__ as cli


def parsed(*argv: str):
    return cli.apply_presets(cli.build_parser().parse_args(list(argv)))


def test_seed_aliases_and_presets() -> None:
    args = parsed("--lrate", "0.002", "--wdecay", "1e-4", "--max_epochs", "7", "--hid_dim", "8")
    assert (args.lr, args.weight_decay, args.epochs, args.d_model) == (0.002, 1e-4, 7, 8)
    assert (args.batch_size, args.patience, args.rho) == (32, 5, None)  # the paper's protocol
    seed = parsed("--seed-defaults")
    assert {k: getattr(seed, k) for k in cli.SEED_DEFAULTS} == cli.SEED_DEFAULTS
    assert (seed.batch_size, seed.rho, seed.patience) == (256, 0.5, 30)
    mixed = parsed("--seed-defaults", "--batch_size", "64", "--no_sam")
    assert mixed.batch_size == 64 and mixed.rho is None and mixed.no_sam  # explicit flags win
    assert cli.default_output(parsed("--dataset", "ETTh1", "--seed-defaults")) == Path(
        "results/samformer/ETTh1/seq_len_512_pred_len_96_bs_256_rho_0.5"
    )
    assert cli.default_output(parsed("--dataset", "ETTh2", "--no_sam")).name.endswith(
        "bs_32_no_sam"
    )
    assert cli.default_output(parsed("--dataset", "ETTh1")).name.endswith("rho_0.7")


def test_default_output_is_printed_and_hid_dim_reaches_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "ETTh1", "--seed", "1", "--smoke", "--quiet", "--hid_dim", "8",
            "--seed-defaults", "--max_epochs", "1"]  # fmt: skip
    try:
        code = cli.main(argv)
    except FileNotFoundError as err:  # pragma: no cover - the embedded data is missing
        pytest.skip(f"ETTh1 not found: {err}")
    out = capsys.readouterr().out
    assert code == 0, out
    folder = Path("results/samformer/ETTh1/seq_len_512_pred_len_96_bs_256_rho_0.5")
    assert f"output: {folder} (no --output given)" in out
    ckpt = torch.load(folder / "seed_1" / "best.pt", weights_only=True)
    assert ckpt["config"]["d_model"] == 8 and ckpt["config"]["batch_size"] == 256
    assert ckpt["model"]["query.weight"].shape == (8, 512)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["rho"] == 0.5 and metrics["seeds"] == [1]


def test_no_dataset_and_no_output_is_an_error_not_a_300_epoch_run(capsys) -> None:
    with pytest.raises(SystemExit) as usage:
        cli.main([])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "--dataset" in err and "--output" in err


def test_device_rule(capsys) -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert cli.main(["--device", f"cuda:{count}", "--smoke", "--output", "unused"]) == 1
    assert f"--device cuda:{count}" in capsys.readouterr().err


def test_old_checkpoints_without_d_model_still_resume() -> None:
    from samlab.train.forecast import ForecastConfig

    saved = ForecastConfig().to_dict()
    del saved["d_model"]  # a checkpoint written before the field existed
    assert ForecastConfig().differences(saved) is None
    assert ForecastConfig(d_model=8).differences(saved) == ["d_model"]
    with pytest.raises(ValueError, match="d_model applies"):
        ForecastConfig(model="tsmixer", d_model=8)
