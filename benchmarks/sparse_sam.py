"""Sparse SAM side by side: the Fisher's per-sample methods, and the SSAM step against SAM's.

Run::

    OMP_NUM_THREADS=1 python benchmarks/sparse_sam.py [--quick] [--num-samples 128]
        [--batch-sizes 8,128] [--repeats N] [--out results/benchmarks/sparse_sam.md]

Two measures on a CIFAR ResNet-18 (synthetic CIFAR-shaped data), each as medians of paired
ratios from interleaved arms (``_timing.py``; process CPU time on one thread by default):

A. The diagonal Fisher over ``--num-samples`` samples (default 128) by every exact method,
   against the seed's per-sample loop (forward, ``loss.backward()``, ``F += p.grad ** 2`` per
   sample; here in eval mode like the others): samlab's ``"loop"`` (``torch.autograd.grad``
   per sample), ``"vmap"`` (``torch.func.vmap(grad)`` in chunks), ``"measure"`` (the loop on
   the first chunk, vmap on the second, the faster for the rest) and ``"auto"`` (what
   ``refresh_masks`` runs by default: the loop on CPU, "measure" elsewhere), and BackPACK's
   ``SumGradSquared`` (``backpack-for-pytorch``, in chunks of :data:`BACKPACK_CHUNK` samples,
   checked against the loop on two samples first; where it is missing, refuses the model or
   disagrees, the report says why and the arm is left out). Target: ``"auto"`` is never slower
   than the seed's loop.
B. SSAM-F step / SAM step and SSAM-D step / SAM step (``step(closure)``, forward and backward
   included) at each batch size, default options (unstructured, sparsity 0.5; SSAM-D's first
   refresh draws its mask from the random growth score), ``impl="compiled"``; the masks are
   refreshed once before timing (the refresh is excluded and reported separately). Target:
   <= 1.03.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from _timing import Arm, format_markdown_table, quartiles, run_interleaved
from torch import nn

from samlab.models import create_model
from samlab.optim import create_optimizer
from samlab.optim.fisher import eval_mode, fisher_diagonal

LR, MOMENTUM, RHO = 1e-4, 0.9, 0.05
STEP_TARGET, FISHER_TARGET = 1.03, 1.0
BACKPACK_CHUNK = 16  # samples per BackPACK backward (its per-sample buffers grow with it)
#: the sparse variants of measure B: registry name -> label
SPARSE_STEPS = {"ssamf": "SSAM-F", "ssamd": "SSAM-D"}


def cifar(n: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + n)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def seed_fisher(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The seed's ``get_fisher``: one sample at a time, ``backward`` into ``.grad``, squares
    summed (eval mode here, as samlab's methods)."""
    params = list(model.parameters())
    fisher = [torch.zeros_like(p) for p in params]
    with eval_mode(model):
        for i in range(len(x)):
            model.zero_grad(set_to_none=True)
            loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
            for f, p in zip(fisher, params):
                if p.grad is not None:
                    f.add_(p.grad * p.grad)
    model.zero_grad(set_to_none=True)
    return fisher


def backpack_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """BackPACK's ``SumGradSquared`` Fisher as a callable over ``(x, y)`` (eval mode, summed
    loss so that the squares are those of the per-sample gradients), or ``(None, why)`` where
    BackPACK is missing, refuses the model, or disagrees with samlab's loop on two samples."""
    try:
        from backpack import backpack, extend
        from backpack.extensions import SumGradSquared
    except ImportError as err:
        return None, f"backpack-for-pytorch is not installed ({err})"
    extended = extend(copy.deepcopy(model))
    loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))
    params = list(extended.parameters())

    def run(xs, ys):
        fisher = [torch.zeros_like(p) for p in params]
        with eval_mode(extended), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no extension for CifarResNet" (containers)
            for start in range(0, len(xs), BACKPACK_CHUNK):
                extended.zero_grad(set_to_none=True)
                with backpack(SumGradSquared()):
                    stop = start + BACKPACK_CHUNK
                    loss_fn(extended(xs[start:stop]), ys[start:stop]).backward()
                for f, p in zip(fisher, params):
                    f.add_(p.sum_grad_squared)
        extended.zero_grad(set_to_none=True)
        return fisher

    try:
        got = run(x[:2], y[:2])
    except Exception as err:  # noqa: BLE001 - the reason is the report
        return None, f"BackPACK refused the model: {type(err).__name__}: {err}"
    want = fisher_diagonal(
        model,
        nn.CrossEntropyLoss(),
        [(x[:2], y[:2])],
        list(model.parameters()),
        num_samples=2,
        method="loop",
    ).fisher
    scale = max(float(w.abs().max()) for w in want) or 1.0
    error = max(float((g - w).abs().max()) for g, w in zip(got, want)) / scale
    if error > 1e-3:
        return None, f"BackPACK disagrees with the loop on two samples (max error {error:.2g})"
    return (lambda: run(x, y)), f"BackPACK agrees with the loop (max error {error:.1g})"


def fisher_measure(args, timer) -> tuple[str, dict]:
    model = create_model("resnet18_cifar")
    loss_fn = nn.CrossEntropyLoss()
    x, y = cifar(args.num_samples)
    params = list(model.parameters())
    chosen = {}

    def samlab(method):
        def run():
            result = fisher_diagonal(
                model, loss_fn, [(x, y)], params, num_samples=args.num_samples, method=method
            )
            chosen[method] = (result.method, result.seconds)

        return run

    arms = [Arm("seed per-sample loop", lambda: seed_fisher(model, loss_fn, x, y))]
    arms += [Arm(f"samlab {m}", samlab(m)) for m in ("loop", "vmap", "measure", "auto")]
    backpack_run, backpack_note = backpack_fisher(model, x, y)
    print(f"BackPACK SumGradSquared: {backpack_note}", flush=True)
    if backpack_run is not None:
        arms.append(Arm(f"BackPACK SumGradSquared (chunks of {BACKPACK_CHUNK})", backpack_run))
    results = run_interleaved(
        arms, repeats=args.fisher_repeats, warmup=1, timer=timer, progress=_progress(args)
    )
    rows = []
    for name, r in results.items():
        (q1, q3), med = quartiles(r.ratios), statistics.median(r.ratios)
        target = f"<= {FISHER_TARGET}" if name == "samlab auto" else ""
        rows.append(
            [
                name,
                f"{statistics.median(r.seconds):.2f}",
                f"{med:.3f}",
                f"{q1:.3f}-{q3:.3f}",
                target,
            ]
        )
    header = ["method", "s (median)", "/ seed loop", "quartiles", "target"]
    auto = chosen.get("measure", ("?", {}))
    note = (
        f"`measure` chose **{auto[0]}** (seconds per method in its last run: "
        + ", ".join(f"{k} {v:.2f}" for k, v in auto[1].items())
        + ")"
    )
    note += f"; BackPACK: {backpack_note}"
    return format_markdown_table(header, rows) + "\n\n" + note, results


def step_measure(args, timer) -> str:
    base = create_model("resnet18_cifar")
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for batch in args.batch_sizes:
        x, y = cifar(batch, seed=99)
        arms, refresh_seconds = [], {}
        for name in ("sam", *SPARSE_STEPS):
            model = copy.deepcopy(base)
            opt = create_optimizer(
                name, model.parameters(), lr=LR, momentum=MOMENTUM, rho=RHO, impl="compiled"
            )
            if name in SPARSE_STEPS:
                start = time.perf_counter()
                opt.refresh_masks(model, loss_fn, [cifar(args.refresh_samples, seed=7)])
                refresh_seconds[name] = time.perf_counter() - start

            def step(model=model, opt=opt, x=x, y=y):
                def closure():
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    return loss

                opt.step(closure)

            arms.append(Arm(SPARSE_STEPS.get(name, "SAM"), step))
        results = run_interleaved(
            arms, repeats=args.repeats, warmup=2, timer=timer, progress=_progress(args)
        )
        sam_seconds = statistics.median(results["SAM"].seconds)
        for name, label in SPARSE_STEPS.items():
            ratios = results[label].ratios
            (q1, q3), med = quartiles(ratios), statistics.median(ratios)
            rows.append(
                [
                    batch,
                    label,
                    f"{sam_seconds:.3f}",
                    f"{statistics.median(results[label].seconds):.3f}",
                    f"{med:.3f}",
                    f"{q1:.3f}-{q3:.3f}",
                    f"<= {STEP_TARGET}",
                    f"{refresh_seconds[name]:.1f} ({args.refresh_samples} samples)",
                ]
            )
    header = ["batch", "variant", "SAM s", "variant s", "/ SAM", "quartiles", "target"]
    return format_markdown_table([*header, "refresh s (wall)"], rows)


def _progress(args):
    return print if args.verbose else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke: 16 samples, batch 8")
    parser.add_argument("--num-samples", type=int, default=128)
    parser.add_argument("--batch-sizes", default="8,128")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of measure B")
    parser.add_argument("--fisher-repeats", type=int, default=3, help="rounds of measure A")
    parser.add_argument("--refresh-samples", type=int, default=128)
    parser.add_argument("--measures", default="AB")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--out", default="results/benchmarks/sparse_sam.md")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        args.num_samples, args.refresh_samples, args.batch_sizes = 16, 16, [8]
        args.repeats, args.fisher_repeats = 3, 2
    timer = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    lines = [
        "# Sparse SAM benchmark",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
        f", clock {args.clock}, `{' '.join(sys.argv[1:])}`",
    ]
    if "A" in args.measures:
        table, _ = fisher_measure(args, timer)
        lines += ["", f"## A. Fisher, ResNet-18, {args.num_samples} samples", "", table]
        print("\n".join(lines[-4:]), flush=True)
    if "B" in args.measures:
        table = step_measure(args, timer)
        lines += ["", "## B. SSAM-F and SSAM-D step / SAM step, ResNet-18, compiled", "", table]
        print("\n".join(lines[-4:]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
