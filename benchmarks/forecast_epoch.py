"""SAMformer training epoch on ETTh1: compiled against eager, side by side.

    OMP_NUM_THREADS=1 python benchmarks/forecast_epoch.py [--horizon 96] [--steps 0]
        [--repeats 5] [--threads 1] [--out results/benchmarks/forecast_epoch.md]

Arms (interleaved and rotated, ``_timing.run_interleaved``; medians of per-round ratios):

- **eager SAM** (baseline): the trainer's own epoch loop (``samlab.train.forecast.steps``)
  with SAMformer + SAM (rho 0.7, Adam lr 1e-3, batch 32) on ETTh1's training windows.
- **compiled SAM**: the same with ``ForecastConfig(compile=True)``: the trainer runs each step
  as one compiled graph (``samlab.train.fused_step.FusedStep``: both passes, the perturbation
  and Adam's update; RevIN on channel-major tokens) and evaluates with ``torch.compile(model)``;
  the one-time compilation is reported separately.
- **eager Adam**: plain Adam, one pass per step (the baseline without SAM), for the SAM/Adam cost.

``--steps N`` times N steps per call instead of a whole epoch (251 steps at H=96). The clock is
process CPU time (one thread; steadier than wall time on a shared machine), wall time recorded
too. Before timing, eager and compiled models from the same initial weights train 20 steps on
the same batches and the largest relative difference of their losses is reported.

Target (issue 4): compiled SAM epoch <= 0.75 x eager SAM epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import torch
from _timing import Arm, format_markdown_table, run_interleaved

from samlab.datasets.timeseries import load_forecast_data
from samlab.train.forecast import ForecastConfig, build_forecaster, forecast_optimizer
from samlab.train.forecast.steps import TrainStep, compile_forecaster, train_epoch

TARGET = 0.75


def _setup(config: ForecastConfig, data, init_state):
    model = build_forecaster(config, data.n_channels)
    model.load_state_dict(init_state)
    optimizer = forecast_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    fwd = compile_forecaster(model, config.compile)
    return TrainStep.for_config(model, fwd, optimizer, config)


def _epoch_fn(config, data, init_state):
    step_fn = _setup(config, data, init_state)

    def run():
        train_epoch(step_fn, data, config, 0, torch.device("cpu"))

    return run


def _agreement(config, data, init_state, steps=20) -> tuple[float, float]:
    """(largest relative loss difference compiled vs eager over ``steps`` steps, seconds of
    compilation: the compiled arm's first step beyond the eager arm's). The timed arms reuse
    the graphs compiled here, so their warm-up shows no compilation."""
    losses, first = {}, {}
    for compiled in (False, True):
        cfg = dataclasses.replace(config, compile=compiled)
        step_fn = _setup(cfg, data, init_state)
        batches = data.train.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0))
        out = []
        for step, (x, y) in zip(range(steps), batches, strict=False):
            start = time.perf_counter()
            out.append(float(step_fn(x, y)))
            if step == 0:
                first[compiled] = time.perf_counter() - start
        losses[compiled] = out
    worst = max(abs(a - b) / abs(a) for a, b in zip(losses[False], losses[True], strict=True))
    return worst, first[True] - first[False]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--horizon", type=int, default=96)
    p.add_argument("--steps", type=int, default=0, help="steps per call (0: a whole epoch)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/benchmarks/forecast_epoch.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_forecast_data("ETTh1", args.horizon, data_dir=args.data_dir)
    common = dict(horizon=args.horizon, progress=False, max_train_batches=args.steps or None)
    configs = {
        "eager SAM": ForecastConfig(**common),
        "compiled SAM": ForecastConfig(**common, compile=True),
        "eager Adam": ForecastConfig(**common, rho=0.0),
    }
    torch.manual_seed(0)
    init_state = build_forecaster(configs["eager SAM"], data.n_channels).state_dict()
    worst, compile_s = _agreement(configs["eager SAM"], data, init_state)
    arms = [Arm(name, _epoch_fn(cfg, data, init_state)) for name, cfg in configs.items()]
    results = run_interleaved(
        arms,
        repeats=args.repeats,
        warmup=1,
        timer=time.process_time,
        extra_timers={"wall": time.perf_counter},
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    # the trainer's steps per epoch: a trailing one-window batch is dropped (BatchNorm)
    steps = args.steps or len(data.train) // 32 + (len(data.train) % 32 > 1)
    rows = []
    for name, res in results.items():
        q1, q3 = res.ratio_quartiles
        rows.append([name, f"{res.median_seconds:.2f}", f"{res.median_of('wall'):.2f}",
                     f"{res.median_ratio:.3f}", f"{q1:.3f}-{q3:.3f}",
                     f"{res.warmup_excess():.1f}"])  # fmt: skip
    ratio = results["compiled SAM"].median_ratio
    sam_adam = results["eager SAM"].median_seconds / results["eager Adam"].median_seconds
    text = "\n".join([
        f"ETTh1 H={args.horizon}, SAMformer, batch 32, {steps} steps per call, "
        f"{args.repeats} rounds, {args.threads} thread(s), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}; clock: process CPU time.",
        "",
        format_markdown_table(
            ["arm", "CPU s/call", "wall s/call", "ratio to eager SAM", "IQR", "warm-up excess s"],
            rows
        ),
        "",
        f"compiled / eager SAM epoch: {ratio:.3f} (target <= {TARGET}) -> "
        f"{'PASS' if ratio <= TARGET else 'MISS'}; eager SAM / eager Adam: {sam_adam:.2f}; "
        f"max relative loss difference compiled vs eager over 20 steps: {worst:.1e}; "
        f"compilation (first compiled step beyond the eager one): {compile_s:.1f} s wall",
    ])  # fmt: skip
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
