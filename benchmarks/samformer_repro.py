"""Reproduce SAMformer's ETTh1 table (Ilbert et al., ICML 2024) with a resumable batch runner.

    python benchmarks/samformer_repro.py [--horizons 96,192,336,720] [--seeds 3]
        [--rhos 0.1,0.3,0.5,0.7,1.0] [--search-seeds 1] [--workers 2] [--max-runs N]
        [--out results/samformer_repro] [--compile] [--dry-run] [--select 96:0.7,192:0.5]

Stages, in order:

1. **rho search** (validation set only; the test set never chooses anything): SAMformer with
   SAM at every rho of ``--rhos`` on ``--search-seeds`` seeds per horizon; the rho with the
   lowest mean validation MSE is selected per horizon.
2. **table**: for every horizon, ``--seeds`` seeds (0..N-1) of
   SAMformer + SAM (selected rho), SAMformer without SAM (= the paper's "Transformer": the same
   architecture, plain Adam, one pass per step), TSMixer without SAM and TSMixer + SAM (rho 0.7,
   the official script's value).
3. **sharpness**: the top Hessian eigenvalue (``samlab.train.sharpness.run_top_eigenvalue``,
   power iteration on the first 1,024 training windows) of every finished SAMformer run with
   and without SAM, so the paper's claim "SAM lowers sharpness" is checked beside the MSE.

Every run is a ``samlab.train.forecast`` run directory under ``--out``; a finished run
(``result.json``) is skipped and an interrupted one resumes from its ``last.pt``, so the table
can be built over several sittings (``--max-runs`` caps new runs per sitting). The table, paper
beside measured, is written to ``OUT/table.md`` and ``OUT/table.csv`` after every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAPER_ETTH1 = {96: 0.381, 192: 0.409, 336: 0.423, 720: 0.427}
"""SAMformer + SAM test MSE on ETTh1 from the paper (notes/samformer.md §6.2)."""

TSMIXER_RHO = 0.7
CSV_KEYS = ("horizon", "model", "optimizer", "rho", "seed", "test_mse", "test_mae", "val_mse",
            "best_epoch", "epochs_run", "seconds", "seconds_per_epoch")  # fmt: skip


@dataclass(frozen=True)
class Job:
    stage: str
    horizon: int
    model: str
    rho: float
    seed: int

    @property
    def label(self) -> str:
        return f"{self.model}+SAM" if self.rho > 0 else f"{self.model}"

    def run_dir(self, out: Path) -> Path:
        return out / f"H{self.horizon}" / f"{self.model}_rho{self.rho:g}" / f"seed_{self.seed}"


def _config(job: Job, args: argparse.Namespace):
    from samlab.train.forecast import ForecastConfig

    return ForecastConfig(
        dataset=args.dataset, horizon=job.horizon, model=job.model, rho=job.rho, seed=job.seed,
        compile=args.compile, data_dir=args.data_dir, threads=args.threads, progress=False,
        max_epochs=args.epochs,
    )  # fmt: skip


def _run(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    from samlab.train.forecast import train_forecaster

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return train_forecaster(_config(job, args), job.run_dir(Path(args.out)))


def _result(job: Job, out: Path) -> dict[str, Any] | None:
    path = job.run_dir(out) / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def search_jobs(args) -> list[Job]:
    return [
        Job("search", h, "samformer", rho, seed)
        for h in args.horizons
        if h not in args.select
        for rho in args.rhos
        for seed in range(args.search_seeds)
    ]


def selected_rho(args, horizon: int) -> float | None:
    """The search's rho for ``horizon`` (lowest mean validation MSE), None until complete;
    ``--select`` gives it directly (a search done in an earlier sitting)."""
    if horizon in args.select:
        return args.select[horizon]
    out = Path(args.out)
    scores = {}
    for rho in args.rhos:
        results = [_result(Job("search", horizon, "samformer", rho, s), out)
                   for s in range(args.search_seeds)]  # fmt: skip
        if any(r is None for r in results):
            return None
        scores[rho] = statistics.fmean(r["val_mse"] for r in results)
    return min(scores, key=scores.get)


def table_jobs(args) -> list[Job]:
    jobs = []
    for h in args.horizons:
        rho = selected_rho(args, h)
        configs = [("samformer", 0.0), ("tsmixer", 0.0), ("tsmixer", TSMIXER_RHO)]
        if rho is not None:
            configs.insert(0, ("samformer", rho))
        for model, r in configs:
            jobs += [Job("table", h, model, r, s) for s in range(args.seeds)]
    # SAMformer (the paper's targets) at every horizon first; TSMixer (several times slower
    # per epoch: its 0.9 dropout on (B, L, ff_dim) makes the RNG a third of a step)
    # after (then seed by seed, so a short sitting leaves every cell with at least one seed)
    return sorted(jobs, key=lambda j: (j.model != "samformer", j.seed))


def _cell(results: list[dict[str, Any]], key: str = "test_mse") -> str:
    values = [r[key] for r in results]
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def write_table(args, *, save: bool = True) -> str:
    """The table as markdown; with ``save`` also written to OUT/table.md and OUT/table.csv."""
    out = Path(args.out)
    lines = [
        f"ETTh1 test MSE (mean ± std over seeds; L=512, batch 32, Adam lr 1e-3, patience 5). "
        f"Seeds: {args.seeds}. rho selected on the validation set from {args.rhos}.",
        "",
        "| H | paper SAMformer | SAMformer+SAM (rho) | SAMformer w/o SAM (Transformer) | "
        "TSMixer | TSMixer+SAM | λmax SAM / w/o SAM | epochs run (SAMformer+SAM) | s/epoch | "
        "s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for h in args.horizons:
        rho = selected_rho(args, h)
        cells = {}
        for model, r in [("samformer", rho), ("samformer", 0.0), ("tsmixer", 0.0),
                         ("tsmixer", TSMIXER_RHO)]:  # fmt: skip
            if r is None:
                cells[(model, r)] = []
                continue
            res = [_result(Job("table", h, model, r, s), out) for s in range(args.seeds)]
            cells[(model, r)] = [x for x in res if x is not None]
            for x in cells[(model, r)]:
                rows.append({**{k: x[k] for k in CSV_KEYS}, "lambda_max": x.get("lambda_max")})

        def fmt(key, cells=cells):
            res = cells[key]
            return "—" if not res else f"{_cell(res)} (n={len(res)})"

        sam = cells[("samformer", rho)]

        def lam(res):
            values = [x["lambda_max"] for x in res if "lambda_max" in x]
            if not values:
                return "—"
            return f"{statistics.fmean(values):.2f} (n={len(values)})"

        epochs = ", ".join(str(x["epochs_run"]) for x in sam) or "—"
        spe = f"{statistics.fmean(x['seconds_per_epoch'] for x in sam):.1f}" if sam else "—"
        spr = f"{statistics.fmean(x['seconds'] for x in sam):.0f}" if sam else "—"
        rho_txt = "search pending" if rho is None else f"{rho:g}"
        lines.append(
            f"| {h} | {PAPER_ETTH1.get(h, float('nan')):.3f} | {fmt(('samformer', rho))} "
            f"({rho_txt}) | {fmt(('samformer', 0.0))} | {fmt(('tsmixer', 0.0))} | "
            f"{fmt(('tsmixer', TSMIXER_RHO))} | {lam(sam)} / {lam(cells[('samformer', 0.0)])} | "
            f"{epochs} | {spe} | {spr} |"
        )
    lines += ["", "rho search (validation MSE, mean over search seeds):", ""]
    lines.append("| H | " + " | ".join(f"rho={r:g}" for r in args.rhos) + " |")
    lines.append("|---|" + "---|" * len(args.rhos))
    for h in args.horizons:
        cells = []
        for r in args.rhos:
            res = [_result(Job("search", h, "samformer", r, s), out)
                   for s in range(args.search_seeds)]  # fmt: skip
            res = [x for x in res if x is not None]
            cells.append(_cell(res, "val_mse") if res else "—")
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if not save:  # --dry-run reads only (a live runner may be writing the same folder)
        return text
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    if rows:
        with (out / "table.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return text


def _pending(jobs: list[Job], out: Path) -> list[Job]:
    return [j for j in jobs if _result(j, out) is None]


def run_stage(jobs: list[Job], args, budget: list[int]) -> None:
    jobs = _pending(jobs, Path(args.out))[: budget[0]]
    if not jobs:
        return
    print(f"{len(jobs)} runs to do ({jobs[0].stage})", flush=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(_run, job, args): job for job in jobs}
        for future in futures:
            job = futures[future]
            result = future.result()
            budget[0] -= 1
            print(
                f"[{time.perf_counter() - start:7.0f}s] H={job.horizon} {job.label} "
                f"rho={job.rho:g} seed {job.seed}: val {result['val_mse']:.4f} test "
                f"{result['test_mse']:.4f} ({result['epochs_run']} epochs, "
                f"{result['seconds_per_epoch']:.1f} s/epoch)",
                flush=True,
            )
            write_table(args)


def sharpness_stage(args) -> None:
    """λmax of every finished SAMformer run with and without SAM (each measured once)."""
    from samlab.train.sharpness import METHOD, run_top_eigenvalue

    out = Path(args.out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    jobs = [j for j in table_jobs(args) if j.model == "samformer" and _result(j, out)]
    todo = [j for j in jobs if _result(j, out).get("lambda_max_method") != METHOD]
    for k, job in enumerate(todo, 1):
        value = run_top_eigenvalue(job.run_dir(out), windows=1024, iters=30)
        print(f"[sharpness {k}/{len(todo)}] H={job.horizon} {job.label} seed {job.seed}: "
              f"lambda_max {value:.3f}", flush=True)  # fmt: skip
    if todo:
        write_table(args)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ETTh1")
    p.add_argument("--horizons", default="96,192,336,720")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rhos", default="0.1,0.3,0.5,0.7,1.0")
    p.add_argument("--search-seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--max-runs", type=int, default=10**9, help="new runs in this sitting")
    p.add_argument("--out", default="results/samformer_repro")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--stage", choices=("all", "search", "table", "sharpness"), default="all")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list pending runs and print the table (writes nothing)",
    )
    p.add_argument("--select", default="", metavar="H:RHO,...",
                   help="rho per horizon chosen by an earlier search (skips the search stage "
                   "for those horizons), e.g. 96:0.7,192:0.5")  # fmt: skip
    args = p.parse_args(argv)
    args.horizons = [int(h) for h in args.horizons.split(",") if h]
    args.rhos = _floats(args.rhos)
    args.select = {int(h): float(r) for h, r in (x.split(":") for x in args.select.split(",") if x)}
    out = Path(args.out)
    if args.dry_run:
        for job in _pending(search_jobs(args), out) + _pending(table_jobs(args), out):
            print(f"pending: {job.stage} H={job.horizon} {job.model} rho={job.rho:g} "
                  f"seed={job.seed}")  # fmt: skip
        print(write_table(args, save=False))
        return 0
    budget = [args.max_runs]
    if args.stage in ("all", "search"):
        run_stage(search_jobs(args), args, budget)
    if args.stage in ("all", "table"):
        run_stage(table_jobs(args), args, budget)
    if args.stage in ("all", "sharpness"):
        sharpness_stage(args)
    print(write_table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
