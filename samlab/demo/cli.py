"""The command line of ``make demo``: ``python -m samlab.demo`` and the ``samlab-demo`` script.

Runs the optimizer comparison (:mod:`samlab.demo.comparison`), then the SGD vs SAM loss
landscapes (:mod:`samlab.demo.landscape_section`, ``--no-landscape`` skips them) and SAMformer
with and without SAM (:mod:`samlab.demo.forecast`, ``--no-forecast`` skips it), and prints where
the time went.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from landscape.cli.exits import EXIT_INTERRUPTED, run_command
from samlab.demo.comparison import DEFAULT_EPOCHS, run_optimizer_comparison


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m samlab.demo",
        description="Compare SGD, SAM, ASAM, GSAM, LookSAM and one-step SAM on the digits CNN.",
    )
    parser.add_argument("--output", type=Path, default=Path("results"), help="output folder")
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"epochs (default {DEFAULT_EPOCHS}; smoke 2)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 2 epochs, 512 digits")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (default 1: fastest here)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split, initialisation, data order")
    parser.add_argument("--fresh", action="store_true", help="retrain runs found under --output")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--no-landscape",
        action="store_true",
        help="skip the SGD vs SAM loss landscapes and Hessians",
    )
    parser.add_argument(
        "--no-forecast", action="store_true", help="skip SAMformer with and without SAM on ETTh1"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m samlab.demo`` and ``make demo``: exit status 0, 2 for
    malformed flags, 1 with one ``error:`` line for any failure (``SAMLAB_DEBUG=1`` for the
    traceback), 130 on Ctrl-C and 143 on SIGTERM (finished runs are kept: rerun to resume)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.threads < 1:
        parser.error(f"--threads must be a positive integer, got {args.threads}")
    return run_command(lambda: _run(args), _interrupted)


def _interrupted(status: int) -> str:
    what = "interrupted" if status == EXIT_INTERRUPTED else "terminated (SIGTERM)"
    return f"{what}; the finished runs are kept: rerun the same command to resume"


def _run(args: argparse.Namespace) -> int:
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    comparison = run_optimizer_comparison(
        args.output,
        args.epochs,
        smoke=args.smoke,
        threads=args.threads,
        seed=args.seed,
        progress=not args.no_progress,
        fresh=args.fresh,
    )
    print(f"\nwrote {comparison.output / 'summary.csv'}, learning_curves.png, demo_config.json")
    # the sections are imported when they run, after the comparison: a run that skips them
    # never loads the landscape and forecasting code
    if not args.no_landscape:
        from samlab.demo.landscape_section import run_demo_curvature, run_demo_landscapes

        landscape = run_demo_landscapes(comparison, smoke=args.smoke, seed=args.seed)
        print(f"wrote {landscape.figure}, {landscape.sharpness_csv.name}, landscape/*.h5")
        print(
            f"landscapes took {landscape.seconds:.1f} s (CPU {landscape.cpu_seconds:.1f} s on "
            f"{landscape.processes} process{'es' if landscape.processes > 1 else ''})"
        )
        curvature = run_demo_curvature(comparison, smoke=args.smoke, seed=args.seed)
        print(f"wrote {curvature.csv.name}, {curvature.figure.name}")
        print(f"Hessian section took {curvature.seconds:.1f} s")
    if not args.no_forecast:
        from samlab.demo.forecast import run_demo_forecast

        forecast = run_demo_forecast(
            args.output,
            smoke=args.smoke,
            seed=args.seed,
            progress=not args.no_progress,
            threads=args.threads,
            fresh=args.fresh,
        )
        print(f"wrote {forecast.summary_csv}, {forecast.figure.name}")
        print(f"SAMformer runs took {forecast.seconds:.1f} s")
    print(
        f"demo took {time.perf_counter() - start:.1f} s "
        f"(CPU {_cpu_seconds() - cpu_start:.1f} s, subprocesses included)"
    )
    return 0


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished subprocesses (the MPI ranks)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime
