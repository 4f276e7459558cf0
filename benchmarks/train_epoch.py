"""samlab's classification loop against a plain hand-written PyTorch loop, and the data loader.

    OMP_NUM_THREADS=1 python benchmarks/train_epoch.py [--quick] [--steps 200] [--repeats 5]
        [--batch 128] [--out results/benchmarks/train_epoch.md]

A. Loop overhead. ResNet-20 (``resnet20_cifar``), batch 128, one thread, ``--steps`` steps of
   FakeData-style 32x32 inputs (seeded randn, seeded labels, held in memory) per call, then an
   evaluation of 256 samples. Arms, interleaved and rotated (``_timing.run_interleaved``):

   - **plain SGD** (baseline): ``zero_grad; cross_entropy(model(x), y).backward();
     opt.step()`` with ``torch.optim.SGD`` (momentum 0.9, weight decay 5e-4), then
     ``model.eval()`` + ``no_grad`` evaluation;
   - **samlab SGD**: :func:`samlab.train.classify.loop.train_epoch` with the same model
     architecture, data, optimizer and evaluation (closure, BatchNorm policy, non-finite check,
     per-step metrics, LR scheduler step, the epoch's figures; progress bars off);
   - **plain SAM** / **samlab SAM**: the same with samlab's SAM (rho 0.05) through
     ``optimizer.step(closure)``, the plain arm with a hand-written closure.

   The overhead is the median over rounds of the paired ratio samlab / plain for each
   optimizer (target <= 1.03). Clock: process CPU time (one thread; steadier than wall time on
   a shared machine), wall time recorded too.
B. Data loader throughput: CIFAR-shaped training data with crop+flip+Cutout
   (``load_image_dataset("cifar10", "train", augment="cutout", fake_size=N)``: seeded uint8
   noise images through samlab's CIFAR training transform, as a CIFAR file would give them),
   batch 128, for ``num_workers`` 0, 1 and 2, in images per second (wall), against the
   training throughput of
   arm A (images per second of samlab SGD and SAM). Target: loader >= 5x training.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from _timing import Arm, Report, format_markdown_table, run_interleaved
from torch import nn
from torch.utils.data import DataLoader

from samlab.models import create_model
from samlab.optim import create_optimizer
from samlab.train.classify import ClassifyConfig
from samlab.train.classify.batches import Batches
from samlab.train.classify.loop import Stepper, train_epoch

TARGET_OVERHEAD = 1.03
TARGET_LOADER = 5.0
LR, MOMENTUM, WEIGHT_DECAY, RHO = 1e-3, 0.9, 5e-4, 0.05


def fake_cifar(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def build(optimizer: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = create_model("resnet20_cifar").train()
    kwargs = dict(lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    if optimizer == "sam":
        kwargs["rho"] = RHO
    return model, create_optimizer(optimizer, model.parameters(), **kwargs)


def plain_arm(optimizer: str, train, test, batch: int):
    """A hand-written loop: the baseline."""
    model, opt = build(optimizer)
    x_all, y_all = train
    loss_fn = nn.CrossEntropyLoss()

    gen = torch.Generator().manual_seed(0)

    def run() -> None:
        order = torch.randperm(len(x_all), generator=gen)  # shuffled, as samlab's
        for start in range(0, len(x_all), batch):
            rows = order[start : start + batch]
            x, y = x_all[rows], y_all[rows]
            if optimizer == "sam":

                def closure(x=x, y=y):
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    return loss

                opt.step(closure)
            else:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            for start in range(0, len(test[0]), 256):
                out = model(test[0][start : start + 256])
                loss_fn(out, test[1][start : start + 256]).item()
                (out.argmax(1) == test[1][start : start + 256]).sum().item()
        model.train()

    return run


def samlab_arm(optimizer: str, train, test, batch: int, steps: int):
    """samlab's epoch: Stepper + train_epoch (progress bars off)."""
    model, opt = build(optimizer)
    config = ClassifyConfig(
        model="resnet20_cifar", optimizer=optimizer, lr=LR, batch_size=batch, epochs=1,
        device="cpu", lr_schedule="constant",
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    stepper = Stepper(model, opt, scheduler, nn.CrossEntropyLoss(), config,
                      sam_family=optimizer == "sam")  # fmt: skip
    device = torch.device("cpu")
    train_batches = Batches(train, batch, train=True, device=device)
    test_batches = Batches(test, 256, train=False, device=device)
    epoch = [0]

    def run() -> None:
        train_epoch(stepper, train_batches, test_batches, config, epoch[0], steps, False)
        epoch[0] += 1

    return run


def loader_throughput(batch: int, workers: int, batches: int) -> float:
    """Images per second (wall) of crop+flip+Cutout CIFAR batches, first batch excluded."""
    from samlab.datasets.images import load_image_dataset

    data = load_image_dataset("cifar10", "train", augment="cutout", fake_size=batch * batches)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    it = iter(loader)
    next(it)  # worker start-up
    start = time.perf_counter()
    n = 0
    for x, _ in it:
        n += len(x)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 steps, 3 rounds, fewer batches")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="results/benchmarks/train_epoch.md")
    args = p.parse_args(argv)
    steps, repeats = (10, 3) if args.quick else (args.steps, args.repeats)
    loader_batches = 8 if args.quick else 30
    torch.set_num_threads(1)
    started = time.perf_counter()
    load0 = os.getloadavg()
    lines = [
        "# Classification loop: samlab vs a plain PyTorch loop; data loader throughput",
        "",
        f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`",
        f"- torch {torch.__version__}, Python {platform.python_version()}, 1 thread, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; load average "
        f"at start {load0[0]:.1f}",
        f"- ResNet-20, batch {args.batch}, {steps} steps of random 32x32 inputs per call + "
        f"evaluation of 256 samples, {repeats} rounds; clock: process CPU time (wall recorded)",
        "",
    ]
    report = Report(lines, started)
    rates = [loader_throughput(args.batch, w, loader_batches) for w in (0, 1, 2)]
    report.log("loader: " + ", ".join(f"{r:.0f} images/s" for r in rates))
    train = fake_cifar(steps * args.batch, 0)
    test = fake_cifar(256, 1)
    arms = []
    for opt in ("sgd", "sam"):
        arms.append(Arm(f"plain {opt.upper()}", plain_arm(opt, train, test, args.batch)))
        arms.append(Arm(f"samlab {opt.upper()}", samlab_arm(opt, train, test, args.batch, steps)))
    results = run_interleaved(
        arms, repeats=repeats, warmup=1, timer=time.process_time,
        extra_timers={"wall": time.perf_counter}, progress=report.log,
    )  # fmt: skip
    rows, missed = [], []
    train_rate = {}
    for opt in ("SGD", "SAM"):
        plain, ours = results[f"plain {opt}"], results[f"samlab {opt}"]
        ratios = [a / b for a, b in zip(ours.seconds, plain.seconds)]
        ratio = statistics.median(ratios)
        train_rate[opt] = steps * args.batch / ours.median_of("wall")
        rows.append([opt, f"{plain.median_seconds:.2f}", f"{ours.median_seconds:.2f}",
                     f"{ratio:.3f}", f"{min(ratios):.3f}-{max(ratios):.3f}",
                     f"{train_rate[opt]:.0f}"])  # fmt: skip
        if ratio > TARGET_OVERHEAD:
            missed.append(f"samlab/plain {opt} {ratio:.3f} > {TARGET_OVERHEAD}")
    report.emit("## A. Loop overhead (samlab epoch / plain loop)")
    report.emit("")
    report.emit(format_markdown_table(
        ["optimizer", "plain CPU s/call", "samlab CPU s/call", "samlab / plain (median)",
         "min-max", "samlab images/s (wall)"], rows))  # fmt: skip
    report.emit("")
    report.emit(f"## B. Data loader (crop+flip+Cutout, batch {args.batch}) vs training")
    report.emit("")
    loader_rows = []
    for workers, rate in zip((0, 1, 2), rates):
        loader_rows.append([workers, f"{rate:.0f}", f"{rate / train_rate['SGD']:.1f}",
                            f"{rate / train_rate['SAM']:.1f}"])  # fmt: skip
    best = max(rates) / train_rate["SGD"]
    if best < TARGET_LOADER:
        missed.append(f"loader at best {best:.1f}x SGD training < {TARGET_LOADER}x")
    header = ["num_workers", "images/s (wall)", "x SGD training", "x SAM training"]
    report.emit(format_markdown_table(header, loader_rows))
    report.emit("")
    report.emit(
        f"load average at end {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s"
    )
    report.finish(args.out, missed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
