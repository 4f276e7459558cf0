"""Side-by-side Hessian benchmark: samlab's ``landscape.curvature`` against PyHessian 0.1,
hessian-eigenthings 1.0.0a5 and curvlinops-for-pytorch 3.0.1, in one run.

Run::

    OMP_NUM_THREADS=1 python benchmarks/hessian.py [--quick] [--out results/benchmarks/hessian.md]

Sections (each tool driven as documented; instrumentation and the model and data in
``hessian_tools.py``, the trace part in ``hessian_trace.py``, the MPI part in ``hessian_mpi.py``):

1. **Reference** on a CIFAR ResNet-20 (``samlab.models``, seed 0, non-trivial BatchNorm
   statistics, eval mode) and one batch of 128 *random* CIFAR-shaped inputs (seeded ``randn``
   3x32x32 and seeded labels: nothing is downloaded): the top 5 eigenvalues by Lanczos with
   full reorthogonalisation, 60 steps, float64 arithmetic over float32 products (float64
   products cost 10x on one CPU thread, ~20 s each); in the full run one float64 product on
   the top Ritz vector checks ``lambda_1`` in float64.
2. **lambda_1**: each tool runs until its first estimate within 1e-3 (relative) of the
   reference; products and wall time to that point (construction, samlab's probe included),
   median over repeats (start-vector seeds 0, 1, ...; tools interleaved, order rotated). Then
   each tool's own stopping rule at tol 1e-3, once.
3. **Top-5** at tol 1e-3: samlab Lanczos (k=5) against PyHessian's deflated power iteration.
4. **Trace and density** on the digits MLP (``samlab.models.digits_mlp``, briefly trained,
   float64, the 1,438 sklearn digits training images), at initialisation and trained: the
   exact Hessian (2,410 x 2,410, from products with the unit vectors); median relative error
   over 50-200 seeds per m at equal product counts of samlab Hutchinson / Hutch++ (random
   signs and Gaussian) / A-Hutch++ / XTrace (sphere and random signs), PyHessian's Hutchinson
   and curvlinops' Hutchinson / Hutch++ / XTrace; products each needs for 1% error; samlab SLQ
   against the exact spectrum (a figure next to ``--out``).
5. **MPI**: lambda_1 (Lanczos, residual tol 1e-2) over 8 batches of 128 on ResNet-20 with
   ``HessianOperator(shard=(rank, world), reducer=MPI Allreduce)`` under the venv's mpiexec, one
   thread per rank, wall time from the operator's construction to the result (after start-up),
   1 and 2 ranks alternating, median of 3.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import Report, format_markdown_table
from hessian_mpi import mpi_section, mpi_worker
from hessian_tools import (
    Float64Products,
    Trace,
    cifar_batches,
    curvlinops_eigsh,
    eigenthings_lambda,
    pyhessian_lambda,
    resnet20,
    samlab_lambda,
)
from hessian_trace import trace_section

TOL = 1e-3


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _rel(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec=".1f", none="-") -> str:
    return none if value is None else format(value, spec)


# --------------------------------------------------------------------------------- reference


def reference(model, data, steps: int, spot_check: bool, log) -> dict:
    from landscape.curvature import HessianOperator, top_eigenvalues

    tic = time.perf_counter()
    op = HessianOperator(model, data, mode="reverse")
    result = top_eigenvalues(
        Float64Products(op), 5, tol=1e-12, max_iter=steps, seed=1234, return_vectors=spot_check
    )
    facts = {
        "values": np.asarray(result.eigenvalues),
        "residuals": result.residuals,
        "steps": result.hvp_count,
        "seconds": time.perf_counter() - tic,
        "float64": None,
    }
    log(f"reference: {facts['values']} in {facts['seconds']:.0f} s")
    if spot_check:
        tic = time.perf_counter()
        model64 = copy.deepcopy(model).double()
        op64 = HessianOperator(model64, (data[0].double(), data[1]), mode="reverse")
        v = result.vectors[:, 0]
        rq = float(v @ op64.matvec(v)) / float(v @ v)
        facts["float64"] = (rq, time.perf_counter() - tic)
        log(f"float64 check: v^T H v = {rq:.6f} ({facts['float64'][1]:.0f} s)")
    return facts


# --------------------------------------------------------------------------------- lambda_1


def lambda_arms(model, data, ref1: np.ndarray, seed: int):
    """name -> callable running one trajectory run (stopped at reach, except ARPACK)."""

    def run(fn, estimator, stop=True, **kwargs):
        trace = Trace(ref1, TOL, estimator, stop)
        facts = fn(copy.deepcopy(model), data, trace, seed=seed, **kwargs)
        return trace, facts

    return {
        "samlab Lanczos (probe cold)": lambda: run(samlab_lambda, "ritz", cold=True),
        "samlab Lanczos (probe cached)": lambda: run(samlab_lambda, "ritz", cold=False),
        "samlab Lanczos (probe cached, random start)": lambda: run(
            samlab_lambda, "ritz", cold=False, start="random"
        ),
        "PyHessian power": lambda: run(pyhessian_lambda, "rayleigh", tol=1e-12, max_iter=40),
        "eigenthings power": lambda: run(
            eigenthings_lambda, "rayleigh", method="power", tol=1e-12, max_iter=40
        ),
        "eigenthings Lanczos": lambda: run(
            eigenthings_lambda, "ritz", method="lanczos", max_iter=30
        ),
    }


def lambda_section(model, data, ref, repeats, emit, log) -> tuple[list[str], dict]:
    from landscape.curvature import HessianOperator

    ref1 = ref["values"][:1]
    # the "probe cached" arm reads the mode from a cache file of this run, as a later process
    # on this machine would (the "probe cold" arm turns the file off)
    os.environ["LANDSCAPE_PROBE_CACHE"] = str(Path(tempfile.mkdtemp()) / "modes.json")
    HessianOperator(copy.deepcopy(model), data, mode="auto").resolve_mode()  # fills the file
    names = list(lambda_arms(model, data, ref1, 0))
    reach: dict[str, list] = {name: [] for name in names}
    extra: dict[str, list] = {name: [] for name in names}
    for r in range(repeats):
        arms = lambda_arms(model, data, ref1, r)
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            trace, facts = arms[name]()
            reach[name].append(trace.reached)
            extra[name].append(facts)
            got = trace.reached
            log(f"lambda_1 run {r + 1}/{repeats} {name}: {got[:2] if got else 'not reached'}")
    # ARPACK: run to its own stop (it surfaces no estimate before it returns), once.
    trace = Trace(ref1, TOL, "ritz", stop=False)
    eigsh = curvlinops_eigsh(copy.deepcopy(model), data, trace, seed=0)
    log(f"curvlinops eigsh: {trace.products} products, {eigsh['end']:.1f} s")

    rows, medians = [], {}
    for name in names:
        hits = [h for h in reach[name] if h is not None]
        products = _median([h[0] for h in hits])
        seconds = _median([h[1] for h in hits])
        cpu = _median([h[3] for h in hits])
        construct = _median([f["construct"] for f in extra[name]])
        medians[name] = (products, seconds, cpu)
        note = ""
        if name.startswith("samlab"):
            facts = extra[name][0]
            timed = {m: round(t, 2) for m, t in facts["probe"]["probe_seconds"].items()}
            note = (
                f"mode {facts['mode']}; the probe timed {facts['probe_products']} of these "
                f"products ({timed} s each), made {facts['probe_extra']} of its own"
                if facts["probe_products"]
                else f"mode {facts['mode']} from the cache file (a later process: no probe)"
            )
            note += (
                "; random start"
                if "random start" in name
                else "; start: the loss gradient + 0.1 x random (the gradient from the kept "
                "first-order graph: no product)"
            )
        if name == "eigenthings Lanczos":
            note = "runs max_iter steps: these are lanczos(max_iter = m) at the best m"
        rows.append(
            [
                name,
                f"{len(hits)}/{len(reach[name])}",
                _fmt(products, "g"),
                _fmt(seconds),
                _fmt(cpu),
                _fmt(construct, ".2f"),
                ", ".join(f"{h[0]}/{h[1]:.1f}/{h[3]:.1f}" if h else "-" for h in reach[name]),
                note,
            ]
        )
    internal = trace.reached
    arpack_ok = eigsh["values"] and _rel(eigsh["values"][0], ref1[0]) <= TOL
    medians["curvlinops + eigsh"] = (
        trace.products,
        eigsh["end"] if arpack_ok else None,
        eigsh["end_cpu"] if arpack_ok else None,
    )
    rows.append(
        [
            "curvlinops + eigsh (its return)",
            "1/1" if arpack_ok else "0/1",
            str(trace.products),
            _fmt(eigsh["end"]),
            _fmt(eigsh["end_cpu"]),
            _fmt(eigsh["construct"], ".2f"),
            f"{trace.products}/{eigsh['end']:.1f}/{eigsh['end_cpu']:.1f}",
            "ARPACK surfaces its estimate at return (ncv 20)"
            + (
                f"; its Lanczos vectors held it after {internal[0]} products / {internal[1]:.1f} s"
                if internal
                else ""
            ),
        ]
    )
    emit(
        f"## lambda_1 to {TOL:g} of the reference ({repeats} runs per tool, start seeds "
        f"0..{repeats - 1}; medians)"
    )
    emit()
    header = [
        "tool",
        "reached",
        "products",
        "seconds",
        "CPU s",
        "construction s",
        "per run (products/s/CPU s)",
        "note",
    ]
    emit(format_markdown_table(header, rows))
    emit()
    emit(
        "Seconds: wall time from before the tool's construction (PyHessian: its forward and "
        "create_graph backward) to the end of the product whose estimate first lies within 1e-3 "
        "of the reference. Products: every product the tool made to that point. samlab with "
        "the probe cold (no mode remembered: a first run on this machine, model and batch "
        "shape) times the two product modes on Lanczos' own first products, so the probe adds "
        "no product, only the slower mode's extra time on one or two of them; with the probe "
        "cached it reads the mode from its cache file, as every later process does."
    )
    emit()
    return ratio_targets(medians, emit), {"eigsh": eigsh}


def ratio_targets(medians, emit) -> list[str]:
    cold, cached = medians["samlab Lanczos (probe cold)"], medians["samlab Lanczos (probe cached)"]
    pyh = medians["PyHessian power"]
    he = [medians["eigenthings power"], medians["eigenthings Lanczos"]]
    cl = medians["curvlinops + eigsh"]
    rows, missed = [], []

    def check(label, value, target, ok, what):
        rows.append([label, value, target, "PASS" if ok else "MISS"])
        if not ok:
            missed.append(f"lambda_1 {what} ({value} vs {target})")

    def ratio(a, b):
        return None if a is None or b is None else a / b

    check("products: samlab / PyHessian", f"{cold[0]} / {pyh[0]}", "<=", _le(cold[0], pyh[0]),
          "products vs PyHessian")  # fmt: skip
    for clock, index in (("wall", 1), ("CPU", 2)):
        he_best = min((h[index] for h in he if h[index] is not None), default=None)
        for label, ours in (("probe cold", cold), ("probe cached", cached)):
            tag = f"{label}, {clock} time"
            r = ratio(ours[index], pyh[index])
            check(f"time: samlab ({tag}) / PyHessian", _fmt(r, ".2f"), "<= 1.00",
                  r is not None and r <= 1.0, f"time vs PyHessian, {tag}")  # fmt: skip
            r = ratio(he_best, ours[index])
            check(f"speed-up: samlab ({tag}) vs eigenthings' faster", _fmt(r, ".2f"), ">= 1.70",
                  r is not None and r >= 1.7, f"speed-up vs eigenthings, {tag}")  # fmt: skip
            r = ratio(cl[index], ours[index])
            check(f"speed-up: samlab ({tag}) vs curvlinops + eigsh", _fmt(r, ".2f"), ">= 3.00",
                  r is not None and r >= 3.0, f"speed-up vs curvlinops + eigsh, {tag}")  # fmt: skip
    emit(
        "Targets (samlab with the probe cold is a first run on this machine, model and batch "
        "shape; with it cached, every later process; wall time is the issue's measure, CPU "
        "time the one a loaded machine disturbs less):"
    )
    emit()
    emit(format_markdown_table(["measure", "value", "target", ""], rows))
    emit()
    return missed


def _le(a, b) -> bool:
    return a is not None and b is not None and a <= b


def own_rules(model, data, ref, emit, log, pyh_iter: int, he_iter: int) -> dict:
    """Each tool's own stopping rule at tol 1e-3, once (seed 0)."""
    ref1 = ref["values"][:1]
    out = {}

    def run(name, fn, estimator, **kwargs):
        trace = Trace(ref1, TOL, estimator, stop=False)
        facts = fn(copy.deepcopy(model), data, trace, seed=0, **kwargs)
        out[name] = (trace, facts)
        log(f"own rule {name}: {trace.products} products, {facts['end']:.1f} s")

    run("samlab Lanczos (residual <= 1e-3)", samlab_lambda, "ritz", cold=True, max_iter=100)
    run("samlab Lanczos, random start (residual <= 1e-3)", samlab_lambda, "ritz", cold=False,
        max_iter=100, start="random")  # fmt: skip
    run("PyHessian power (change < 1e-3)", pyhessian_lambda, "rayleigh", max_iter=pyh_iter)
    run("eigenthings power (change and residual < 1e-3)", eigenthings_lambda, "rayleigh",
        method="power", max_iter=he_iter)  # fmt: skip
    run("eigenthings Lanczos (default max_iter = 2k = 2)", eigenthings_lambda, "ritz",
        method="lanczos", max_iter=2)  # fmt: skip
    rows = []
    for name, (trace, facts) in out.items():
        value = None
        if "result" in facts and facts["result"] is not None:
            value = facts["result"].eigenvalues[0]
        elif facts.get("values"):
            value = facts["values"][0]
        elif facts.get("value") is not None:
            value = facts["value"]
        rows.append(
            [
                name,
                str(trace.products),
                _fmt(facts["end"]),
                _fmt(value, ".4f"),
                _fmt(None if value is None else _rel(value, ref1[0]), ".1e"),
            ]
        )
    emit("### Each tool's own stopping rule (tol 1e-3, seed 0)")
    emit()
    emit(format_markdown_table(["tool (rule)", "products", "seconds", "lambda_1", "rel. error"],
                               rows))  # fmt: skip
    emit()
    return out


# --------------------------------------------------------------------------------- top-5


def top5_section(model, data, ref, emit, log, pyh_iter: int) -> tuple[list[str], dict]:
    ref5 = ref["values"][:5]
    samlab = Trace(ref5, TOL, "ritz", stop=False)
    facts = samlab_lambda(copy.deepcopy(model), data, samlab, k=5, tol=TOL, max_iter=100)
    log(f"top-5 samlab: {samlab.products} products")
    pyh = Trace(ref5[:1], TOL, "rayleigh", stop=False)
    pfacts = pyhessian_lambda(copy.deepcopy(model), data, pyh, top_n=5, tol=TOL, max_iter=pyh_iter)
    log(f"top-5 PyHessian: {pyh.products} products")
    values = facts["result"].eigenvalues
    pvalues = sorted(pfacts["values"], reverse=True)
    rows = [
        [
            "samlab Lanczos k=5 (residual <= 1e-3)",
            str(samlab.products),
            _fmt(facts["end"]),
            _fmt(max(_rel(v, r) for v, r in zip(values, ref5)), ".1e"),
            f"{samlab.reached[0]} / {samlab.reached[1]:.1f}" if samlab.reached else "-",
        ],
        [
            f"PyHessian deflated power top_n=5 (change < 1e-3, maxIter {pyh_iter})",
            str(pyh.products),
            _fmt(pfacts["end"]),
            _fmt(max(_rel(v, r) for v, r in zip(pvalues, ref5)), ".1e"),
            "-",
        ],
    ]
    emit("## Top-5 eigenvalues at tol 1e-3 (seed 0)")
    emit()
    emit(format_markdown_table(
        ["tool (rule)", "products", "seconds", "max rel. error of the 5", "all 5 within 1e-3 at "
         "(products / s)"], rows))  # fmt: skip
    emit()
    ratio = pyh.products / samlab.products
    ok = ratio >= 2.0
    emit(f"Products PyHessian / samlab: {ratio:.2f} (target >= 2.00: {'PASS' if ok else 'MISS'}).")
    emit()
    missed = [] if ok else [f"top-5 products PyHessian/samlab {ratio:.2f} < 2.00"]
    return missed, {"samlab": values, "pyhessian": pvalues}


# --------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller pieces")
    parser.add_argument("--out", default="results/benchmarks/hessian.md")
    parser.add_argument(
        "--sections",
        default="eigen,trace,mpi",
        help="comma list of eigen (lambda_1, own rules, top-5), lambda (lambda_1 only), trace, mpi",
    )
    parser.add_argument("--repeats", type=int, default=None, help="lambda_1 runs per tool")
    parser.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mpi-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mpi-batches", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mpi_worker:
        return mpi_worker(args)
    torch.set_num_threads(1)
    if args.quick:
        args.batch, args.mpi_batches = 32, 4
    steps = 30 if args.quick else 60
    repeats = args.repeats or (1 if args.quick else 3)
    ladder = [6, 12, 24, 48] if args.quick else [6, 12, 24, 48, 96, 192]
    # seeds per m for the trace section (medians over at least 50 in the full run)
    budget, low, high = (60, 5, 10) if args.quick else (2400, 50, 200)
    seeds = {m: max(low, min(high, budget // m)) for m in ladder}
    sections = set(args.sections.split(","))
    out = Path(args.out)

    started = time.perf_counter()
    load0 = os.getloadavg()
    lines = [
        "# Hessian benchmark: samlab vs PyHessian, hessian-eigenthings, curvlinops",
        "",
        f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`",
        f"- torch {torch.__version__}, PyHessian {_version('pyhessian')}, hessian-eigenthings "
        f"{_version('hessian-eigenthings')}, curvlinops {_version('curvlinops-for-pytorch')}, "
        f"scipy {_version('scipy')}, Python {platform.python_version()}, "
        f"{torch.get_num_threads()} thread, {os.cpu_count()} CPUs, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; wall clock (a shared machine: noisy)",
        f"- ResNet-20 data: ONE batch of {args.batch} RANDOM CIFAR-shaped inputs (seeded randn "
        "3x32x32, seeded labels; no download), eval mode, float32, cross-entropy"
        + (" (--quick: batch 32, 30 reference steps, 1 run, MPI 4 batches)" if args.quick else ""),
        "",
    ]
    report = Report(lines, started)
    emit, log = report.emit, report.log
    missed: list[str] = []

    if "eigen" in sections or "lambda" in sections:
        model = resnet20()
        data = cifar_batches(1, args.batch)[0]
        ref = reference(model, data, steps, spot_check=not args.quick, log=log)
        emit(f"## Reference: Lanczos, {ref['steps']} steps, float64 arithmetic, float32 products")
        emit()
        rows = [[f"lambda_{i + 1}", f"{v:.6f}", f"{r:.1e}"] for i, (v, r) in
                enumerate(zip(ref["values"], ref["residuals"]))]  # fmt: skip
        emit(format_markdown_table(["", "value", "relative Ritz residual"], rows))
        emit()
        if ref["float64"]:
            rq, secs = ref["float64"]
            emit(
                f"float64 check: the top Ritz vector's Rayleigh quotient with one float64 product "
                f"{rq:.6f} (relative difference {_rel(rq, ref['values'][0]):.1e}; {secs:.0f} s)."
            )
            emit()
        emit(f"Reference took {ref['seconds']:.0f} s.")
        emit()
        lam_missed, extra = lambda_section(model, data, ref, repeats, emit, log)
        missed += lam_missed
    if "eigen" in sections:
        own = own_rules(model, data, ref, emit, log, 100, 8 if args.quick else 15)
        top_missed, top = top5_section(model, data, ref, emit, log, 30 if args.quick else 50)
        missed += top_missed
        emit("## Eigenvalues by tool (own rules, seed 0) against the reference")
        emit()
        ref_vals = ref["values"]
        rows = [["reference", *(f"{v:.4f}" for v in ref_vals), "-"]]
        for name, key in (("samlab Lanczos k=5", "samlab"), ("PyHessian top_n=5", "pyhessian")):
            worst = max(_rel(v, r) for v, r in zip(top[key], ref_vals))
            rows.append([name, *(f"{v:.4f}" for v in top[key]), f"{worst:.1e}"])
        for name, (_, facts) in own.items():
            value = facts.get("value") or (facts.get("values") or [None])[0]
            if facts.get("result") is not None:
                value = facts["result"].eigenvalues[0]
            if value is not None:
                rows.append([name.split(" (")[0], f"{value:.4f}", "", "", "", "",
                             f"{_rel(value, ref_vals[0]):.1e}"])  # fmt: skip
        value = extra["eigsh"]["values"][0]
        rows.append(["curvlinops + eigsh", f"{value:.4f}", "", "", "", "",
                     f"{_rel(value, ref_vals[0]):.1e}"])  # fmt: skip
        emit(format_markdown_table(["tool", "l1", "l2", "l3", "l4", "l5", "max rel. diff"], rows))
        emit()
        del model
    if "trace" in sections:
        missed += trace_section(ladder, seeds, out.parent, emit, log)
    if "mpi" in sections:
        missed += mpi_section(args, 1 if args.quick else 3, emit, log)

    elapsed = time.perf_counter() - started
    emit(
        f"Total wall time {elapsed:.0f} s; load average (1 min) {load0[0]:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end."
    )
    report.finish(out, missed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
