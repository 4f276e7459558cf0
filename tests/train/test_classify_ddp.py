"""``train_classifier`` under DDP: 2 gloo processes (torchrun's environment variables) against
one process on the same global batches.

With the default global perturbation, 2 ranks x half of every batch make the steps of one
process on the whole batch (equal up to float32 summation order); the per-worker perturbation
(m-sharpness) makes other steps. Rank 0 alone writes the output folder.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from samlab.datasets import load_digits
from samlab.train.classify import ClassifyConfig, train_classifier

pytestmark = pytest.mark.ddp

REPO = Path(__file__).resolve().parents[2]
WORLD = 2
CONFIG = dict(model="digits_mlp", optimizer="sam", batch_size=64, epochs=2, steps_per_epoch=3,
              device="cpu", threads=1, lr_schedule="constant")  # fmt: skip

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    from samlab.datasets import load_digits
    from samlab.train.classify import ClassifyConfig, train_classifier

    out = sys.argv[1]
    data = load_digits(seed=0)
    train, test = (data.x_train[:512], data.y_train[:512]), (data.x_test, data.y_test)
    states = {}
    for mode in ("global", "per_worker"):
        config = ClassifyConfig(**CONFIG, perturbation=mode)
        result = train_classifier(config, train, test, progress=False,
                                  output_dir=os.path.join(out, mode))
        states[mode] = result.model_state
        states[mode + "_loss"] = torch.tensor(result.column("train_loss"))
    torch.save(states, os.path.join(out, f"rank{dist.get_rank()}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # see tests/train/test_ddp.py: gloo may abort at interpreter shutdown
    """
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, ddp_runner):
    free_port, run_ranks = ddp_runner
    tmp = tmp_path_factory.mktemp("classify_ddp")
    script = tmp / "worker.py"
    script.write_text(f"CONFIG = {CONFIG!r}\n" + WORKER)
    port = str(free_port())
    envs = []
    for rank in range(WORLD):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank)}
        env.update(WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        if Path("/sys/class/net/lo").exists():
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        envs.append(env)
    commands = [[sys.executable, str(script), str(tmp)]] * WORLD
    run_ranks(commands, cwd=REPO, envs=envs, log_dir=tmp, timeout=180)
    return tmp, [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_global_perturbation_equals_one_process(ranks):
    tmp, (rank0, rank1) = ranks
    for key in rank0["global"]:  # DDP keeps the replicas equal
        assert torch.equal(rank0["global"][key], rank1["global"][key]), key
    data = load_digits(seed=0)
    single = train_classifier(
        ClassifyConfig(**CONFIG),
        (data.x_train[:512], data.y_train[:512]),
        (data.x_test, data.y_test),
        progress=False,
    )
    moved = 0.0
    for key, value in single.model_state.items():
        torch.testing.assert_close(rank0["global"][key], value, rtol=1e-5, atol=1e-6)
        moved = max(moved, float((value - rank0["per_worker"][key]).abs().max()))
    assert moved > 1e-5  # per-worker perturbation takes other steps
    # the epoch's training loss: the mean over both ranks' halves == the single process's
    expected = torch.tensor(single.column("train_loss"))
    torch.testing.assert_close(rank0["global_loss"], expected.to(rank0["global_loss"].dtype))
    # rank 0 wrote the folder; its checkpoint is the single process's model
    saved = torch.load(tmp / "global" / "last.pt", weights_only=True)
    assert saved["epoch"] == 2
    config = json.loads((tmp / "global" / "config.json").read_text())
    assert config["resolved"]["world_size"] == WORLD
