"""``sharpness`` of :mod:`landscape.cli`: parameter-space sharpness measures to JSON.

``python -m landscape sharpness --model M:F --model_file SD.pt --data M:F --measure
worst_case,average --rho 0.01,0.05 --output OUT.json`` runs each measure of
:mod:`landscape.curvature.sharpness` over the radii (Keskar's ``epsilon`` takes each radius as
its epsilon) on the evaluation protocol of the surfaces (the model/data flags, ``--subset``,
eval mode, the loss) and writes one entry per measure and radius
(:meth:`SharpnessResult.to_dict`), and a figure of each measure against the radius
(``OUT_sharpness.png``: loss increase and, for cross-entropy, 0-1 error increase with standard
errors; :func:`landscape.plot.save_sharpness`). Under ``mpiexec -n N python -m mpi4py -m
landscape sharpness ... --mpi`` the (measure, radius) pairs are shared out over the ranks (each
pair is one independent call with the same seed, so the values equal one process's); rank 0
gathers them and writes. A rank that fails ends the job (:func:`landscape.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from landscape.cli.curvature import add_evaluation_args, curvature_inputs
from landscape.cli.inputs import CLIError, Context, data_flag, data_source
from landscape.cli.options import add_data_args, add_model_args, nonnegative_int, positive_int
from landscape.cli.ranks import agree_across_ranks, join_mpi
from landscape.io.atomic import atomic_write

MEASURES = ("worst_case", "average", "epsilon")


def float_list(text: str) -> list[float]:
    """An argparse type: comma-separated non-negative numbers (``"0.01,0.05"``)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.01,0.05, got {text!r}") from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {text!r}")
    return values


def measure_list(text: str) -> list[str]:
    """An argparse type: comma-separated names of :data:`MEASURES`."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in MEASURES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(MEASURES)}, got {text!r}")
    return names


def add_sharpness_parser(sub: Any) -> None:
    """The ``sharpness`` subcommand and its flags."""
    s = sub.add_parser(
        "sharpness",
        usage="%(prog)s --model MODULE:FACTORY --data MODULE:FACTORY [--measure M,...] "
        "[--rho R,...] [--mpi] [--output OUT.json] [options]",
        help="worst-case, average-case and epsilon sharpness of a model, as JSON",
        description="Andriushchenko et al. (2023) worst-case m-sharpness (L2/L-inf, adaptive) "
        "and average-case sharpness, Keskar et al. (2017) epsilon-sharpness, over radii.",
    )
    add_model_args(s, required=True)
    add_data_args(s, batch_size=None)
    add_evaluation_args(s, products=False)
    g = s.add_argument_group("measures")
    g.add_argument(
        "--measure",
        type=measure_list,
        default=["worst_case"],
        help="comma-separated: worst_case, average, epsilon (worst_case)",
    )
    g.add_argument("--rho", type=float_list, default=[0.05], help="radii, e.g. 0.01,0.05")
    g.add_argument("--norm", choices=("l2", "linf"), default="l2", help="ball (l2)")
    g.add_argument("--adaptive", action="store_true", help="ball scaled by |w| (+ --eta)")
    g.add_argument("--eta", type=float, default=0.0, help="adaptive offset (0)")
    g.add_argument("--m", type=positive_int, default=None, help="m-sharpness chunk (all)")
    g.add_argument("--steps", type=nonnegative_int, default=20, help="ascent steps (20)")
    g.add_argument("--samples", type=positive_int, default=100, help="noise draws (100)")
    g.add_argument("--logit_normalise", action="store_true", help="normalised logits")


def _options(args: argparse.Namespace, measure: str, loss: Any, subset: Any) -> dict[str, Any]:
    common = {
        "loss": loss,
        "subset": subset,
        "subset_seed": args.subset_seed,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "logit_normalise": args.logit_normalise,
    }
    if measure == "worst_case":
        return {
            **common,
            "norm": args.norm,
            "adaptive": args.adaptive,
            "eta": args.eta,
            "m": args.m,
            "steps": args.steps,
        }
    if measure == "average":
        return {
            **common,
            "norm": args.norm,
            "adaptive": args.adaptive,
            "eta": args.eta,
            "samples": args.samples,
        }
    return {**common, "steps": args.steps}


def cmd_sharpness(args: argparse.Namespace, ctx: Context) -> None:
    """``sharpness``: every ``--measure`` at every ``--rho``, written as JSON and a figure; under
    ``--mpi`` the (measure, radius) pairs shared out over the ranks."""
    from landscape.curvature import sharpness_grid
    from landscape.plot import save_sharpness

    started = time.perf_counter()
    output = Path(args.output or "sharpness.json")
    join_mpi(args, ctx, "compute every measure into the same file")
    model, data, subset, loss, _ = curvature_inputs(args, ctx)
    if ctx.size > 1:
        agree_across_ranks(ctx, model, args, data, None, subset)
    pairs = [(measure, rho) for measure in args.measure for rho in args.rho]
    ranks = f" on {ctx.size} ranks" if ctx.size > 1 else ""
    ctx.log(f"sharpness: {', '.join(args.measure)} at rho {args.rho}{ranks}")
    computed: dict[int, Any] = {}  # index into pairs -> its result
    for index in range(ctx.rank, len(pairs), ctx.size):
        measure, rho = pairs[index]
        options = _options(args, measure, loss, subset)
        try:
            (computed[index],) = sharpness_grid(measure, model, data, [rho], **options)
        except TypeError as err:
            raise CLIError(f"--{data_flag(args)} {data_source(args)[0]}: {err}") from None
    if ctx.size > 1:
        gathered = ctx.comm.gather(computed, root=0)
        if ctx.rank != 0:
            return
        computed = {key: value for part in gathered for key, value in part.items()}
    drawn: dict[str, list[Any]] = {measure: [] for measure in args.measure}
    for index, (measure, _) in enumerate(pairs):  # pairs run over the radii in order
        drawn[measure].append(computed[index])
    for measure, results in drawn.items():
        shown = ", ".join(f"{r.rho:g}: {r.value:.4g}" for r in results)
        ctx.log(f"{measure}: {shown} ({sum(r.seconds for r in results):.2f} s)")
    facts = drawn[args.measure[0]][0].provenance
    out = {
        "measures": {m: [r.to_dict() for r in results] for m, results in drawn.items()},
        "loss": drawn[args.measure[0]][0].loss,
        "samples": facts.get("size"),
        "data_sha256": facts.get("data_sha256"),
        "model_sha256": facts.get("model_sha256"),
        "nproc": ctx.size,
        "seconds": time.perf_counter() - started,
        "command": " ".join(["landscape", *args.argv]),
    }
    figure = save_sharpness(output.with_name(output.stem + "_sharpness.png"), drawn)
    out["figure"] = str(figure)
    atomic_write(output, json.dumps(out, indent=2, default=str) + "\n")
    ctx.log(f"wrote {output} and {figure} ({out['seconds']:.2f} s)")
