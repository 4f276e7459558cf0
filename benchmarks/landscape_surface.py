"""Side-by-side cost of a filter-normalised 2D loss surface: samlab's ``landscape`` against
``loss-landscapes`` (PyPI) and against the bare limit.

Run::

    OMP_NUM_THREADS=1 python benchmarks/landscape_surface.py [--quick] [--models mlp,cnn,resnet20]
        [--points N] [--repeats R] [--out results/benchmarks/landscape_surface.md]
        [--mpi-check] [--full-resnet20]

Every arm evaluates the same work: points of the same 21 x 21 grid on ``[-1, 1]^2`` along the
same filter-normalised directions (``landscape.directions.create_directions``, seed 0,
``filter``/``biasbn``), over the same 1,024 evaluation samples (a seeded subset of the digits
training images for the digits MLP and CNN; synthetic CIFAR-shaped tensors for ResNet-20):

- **limit** (the baseline of every ratio): per grid point, the weights set by one plain axpy
  into a flat buffer and copied into the parameters, then one plain eager forward per batch of
  128 over the samples held in memory, outputs discarded (no loss, no metric).
- **samlab eager**: ``SurfaceEvaluator`` in its default mode (``auto``: eager on CPU), points
  in chunks of its ``default_chunk_size`` like ``surface_2d``; it also computes the loss,
  accuracy and their standard errors from per-batch values.
- **samlab compiled**: ``mode="compiled"`` (``torch.compile``, BatchNorm folded; on models
  cheap enough for its probe also K points per compiled call, ``vmap`` inside the graph with
  the loss, accuracy and per-batch sums fused, kept where it measures faster); its one-time
  construction (compilation, probes) is reported separately, not in the ratio. If its probe
  measured eager faster it runs eager (the note says so).
- **samlab vmap**: ``mode="vmap"`` (K points per forward, K from its CPU budget).
- **loss-landscapes**: ``loss_landscapes.random_plane(model, Loss(CrossEntropyLoss(), X, y),
  distance=0.5, steps=s, normalization="filter")`` with ``s * s`` points per call, timed per
  point: the same number of points and the same samples per point (all 1,024 in one
  forward, its documented usage). Its directions are its own: uniform on [0, 1] (not
  zero-mean, so not Li et al.'s) and filter-normalised its way; its ``distance`` works
  inversely (half-extent = ||theta|| / (2 distance)), so ``distance=0.5`` spans +-||theta||,
  the extent of a +-1 grid along a filter-normalised direction. It moves the model in place
  and sets ``requires_grad=False``: it gets its own copy, restored untimed before each call.

The models are freshly initialised (seed 0) with non-trivial BatchNorm statistics and affine
parameters (loss-landscapes divides by the norm of every parameter and fails on the all-zero
BatchNorm biases of a fresh model). Each round every arm evaluates the same block of grid
points (blocks of a seeded permutation of the 441 points; for ResNet-20 a fixed seeded subset
of 24 points by default), arms interleaved and rotated (``_timing.run_interleaved``); ratios
are per round against the limit's time of the same round, reported as medians.

The clock is process CPU time by default (one thread on a shared machine: far steadier than
wall time); wall time is recorded on the same calls. Inductor compiles in-process here
(``compile_threads = 1``) so that compilation shows on the CPU clock too.

``--mpi-check`` runs the distributed driver (``landscape.compute_surface``) on the
whole 21 x 21 digits-CNN grid under the venv's ``mpiexec`` with 1 and 2 ranks (one thread
each, alternating), and reports the speed-up, the per-rank share of points and whether the
surfaces are bitwise equal. ``--full-resnet20`` runs the whole 21 x 21 ResNet-20 grid eager
and compiled, alternating row by row, and reports the compiled total including compilation
against the eager total (about 17 minutes eager on one thread).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _models import seeded_model
from _timing import Arm, ArmResult, Report, format_markdown_table, run_interleaved
from torch import nn

from landscape import SurfaceEvaluator, grid_coordinates
from landscape.directions import create_directions

GRID = np.linspace(-1.0, 1.0, 21)
SAMPLES = 1024
BATCH = 128
SEED = 0
LL_DISTANCE = 0.5  # loss-landscapes: half-extent ||theta|| / (2 distance) = ||theta||

MODEL_NAMES = {"mlp": "digits_mlp", "cnn": "digits_cnn", "resnet20": "resnet20_cifar"}
LABELS = {"mlp": "digits MLP", "cnn": "digits CNN", "resnet20": "CIFAR ResNet-20"}


@dataclass
class Plan:
    """Per model: points per call (a square: loss-landscapes evaluates steps x steps) and
    rounds."""

    points: int
    repeats: int


DEFAULT_PLANS = {"mlp": Plan(441, 10), "cnn": Plan(25, 10), "resnet20": Plan(4, 6)}
QUICK_PLANS = {"mlp": Plan(121, 3), "cnn": Plan(9, 3), "resnet20": Plan(1, 2)}

#: max ratio to the limit per arm and model (None: reported only)
TARGETS: dict[str, dict[str, float]] = {
    "samlab eager": {"mlp": 1.05, "cnn": 1.05, "resnet20": 1.05},
    "samlab compiled": {"cnn": 0.70, "resnet20": 0.70},
}
FULL_RESNET20_TARGET = 0.75


# --------------------------------------------------------------------------------- set-up


def make_model(key: str) -> nn.Module:
    """The model, seeded, with non-trivial BatchNorm state, in eval mode."""
    return seeded_model(MODEL_NAMES[key], SEED)


def make_data(key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """1,024 evaluation samples: digits training images (seeded subset) or CIFAR-shaped noise."""
    generator = torch.Generator().manual_seed(SEED + 2)
    if key == "resnet20":
        inputs = torch.randn(SAMPLES, 3, 32, 32, generator=generator)
        return inputs, torch.randint(0, 10, (SAMPLES,), generator=generator)
    from samlab.datasets import load_digits

    digits = load_digits(seed=SEED)
    take = torch.randperm(len(digits.x_train), generator=generator)[:SAMPLES].sort().values
    return digits.x_train[take].contiguous(), digits.y_train[take].contiguous()


def point_blocks(points: int, count: int, key: str) -> list[np.ndarray]:
    """``count`` blocks of ``points`` grid coordinates from a seeded permutation of the grid
    (cycling when they need more than its 441 points)."""
    coords = grid_coordinates(GRID, GRID)
    order = np.random.default_rng(SEED + 3).permutation(len(coords))
    if key == "resnet20":  # a fixed seeded subset of the grid
        order = order[: max(24, points * count)]
    reps = math.ceil(points * count / len(order))
    flat = np.tile(order, reps)[: points * count]
    return [coords[flat[i * points : (i + 1) * points]] for i in range(count)]


class Blocks:
    """Each arm's n-th call evaluates block n (modulo): with the same warm-up count for every
    arm, all arms evaluate the same block in the same round."""

    def __init__(self, blocks: list[np.ndarray]) -> None:
        self.blocks = blocks
        self.calls: dict[str, int] = {}

    def next(self, arm: str) -> np.ndarray:
        n = self.calls.get(arm, 0)
        self.calls[arm] = n + 1
        return self.blocks[n % len(self.blocks)]


# --------------------------------------------------------------------------------- arms


class Limit:
    """The bare limit: axpy into a flat buffer, copy into the parameters, plain forwards."""

    def __init__(self, model: nn.Module, directions: Any, inputs: torch.Tensor) -> None:
        self.model = copy.deepcopy(model).eval()
        params = dict(self.model.named_parameters())
        names = [n for n in directions.x if n in params]
        self.params = [params[n].detach() for n in names]

        def flat(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([p.detach().reshape(-1).float() for p in parts])

        self.center = flat(self.params)
        self.dx = flat([directions.x[n] for n in names])
        self.dy = flat([directions.y[n] for n in names])
        self.buffer = torch.empty_like(self.center)
        self.views = [
            part.view_as(p)
            for part, p in zip(self.buffer.split([p.numel() for p in self.params]), self.params)
        ]
        self.batches = [inputs[s : s + BATCH] for s in range(0, len(inputs), BATCH)]

    @torch.no_grad()
    def points(self, coords: np.ndarray) -> None:
        for a, b in coords:
            torch.add(self.center, self.dx, alpha=float(a), out=self.buffer)
            self.buffer.add_(self.dy, alpha=float(b))
            torch._foreach_copy_(self.params, self.views)
            for batch in self.batches:
                self.model(batch)


def samlab_points(evaluator: SurfaceEvaluator, coords: np.ndarray) -> dict[str, np.ndarray]:
    """What ``surface_2d`` does per chunk: ``evaluate_points`` on chunks of its default size."""
    chunk = evaluator.default_chunk_size
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(coords), chunk):
        for name, value in evaluator.evaluate_points(coords[start : start + chunk]).items():
            out.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in out.items()}


class LossLandscapes:
    """loss-landscapes' ``random_plane`` over ``steps * steps`` points, on its own model copy."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int):
        import loss_landscapes
        import loss_landscapes.metrics

        self.ll = loss_landscapes
        self.model = copy.deepcopy(model).eval()
        self.state = copy.deepcopy(self.model.state_dict())
        self.metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), inputs, targets)
        self.steps = steps
        self.last: np.ndarray | None = None

    def restore(self) -> None:
        self.model.load_state_dict(self.state)

    def run(self) -> None:
        self.last = self.ll.random_plane(
            self.model,
            self.metric,
            distance=LL_DISTANCE,
            steps=self.steps,
            normalization="filter",
            deepcopy_model=False,
        )


@dataclass
class Built:
    arms: list[Arm]
    notes: dict[str, str] = field(default_factory=dict)
    construction: dict[str, tuple[float, float]] = field(default_factory=dict)  # wall, cpu
    check: str = ""


def _cpu_with_children() -> float:
    """Process CPU seconds plus those of waited-for children (the C++ compiler)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(fn(), wall seconds, CPU seconds including child processes)``."""
    wall, cpu = time.perf_counter(), _cpu_with_children()
    value = fn()
    return value, time.perf_counter() - wall, _cpu_with_children() - cpu


def build_arms(key: str, plan: Plan, log: Callable[[str], Any]) -> Built:
    model = make_model(key)
    inputs, targets = make_data(key)
    directions = create_directions(model, seed=SEED)
    steps = math.isqrt(plan.points)
    blocks = Blocks(point_blocks(plan.points, plan.repeats + 1, key))
    built = Built([])

    limit = Limit(model, directions, inputs)
    built.arms.append(
        Arm("limit", lambda: limit.points(blocks.next("limit")), per_call=plan.points)
    )

    evaluators: dict[str, SurfaceEvaluator] = {}
    for arm_name, mode in (
        ("samlab eager", "auto"),
        ("samlab compiled", "compiled"),
        ("samlab vmap", "vmap"),
    ):
        log(f"{key}: building {arm_name}")
        evaluator, wall, cpu = _timed(
            lambda mode=mode: SurfaceEvaluator(
                copy.deepcopy(model), directions, (inputs, targets), batch_size=BATCH, mode=mode
            )
        )
        evaluators[arm_name] = evaluator
        built.construction[arm_name] = (wall, cpu)
        execution = evaluator.provenance["execution"]
        note = [f"mode {evaluator.mode}"]
        if "forward_chunk" in execution:
            note.append(
                f"forward chunk {execution['forward_chunk']} ({execution['forward_chunk_choice']})"
            )
        if evaluator.mode == "vmap":
            note.append(f"K = {evaluator.points_per_call} points per forward")
        elif evaluator.points_per_call > 1:
            note.append(f"K = {evaluator.points_per_call} points per compiled call")
        if "batchnorm_folded" in execution:
            note.append(f"{execution['batchnorm_folded']} BN folded")
        if "compiled_fallback" in execution:
            note.append("probe: " + execution["compiled_fallback"])
        if "compiled_points_probe_ms_per_point" in execution:
            probe = execution["compiled_points_probe_ms_per_point"]
            note.append(
                "K-point probe (ms/point): "
                + ", ".join(f"{key} {value:.3g}" for key, value in probe.items())
            )
        if "compile_error" in execution:
            note.append("compile failed: " + execution["compile_error"][:80])
        built.notes[arm_name] = "; ".join(note)
        built.arms.append(
            Arm(
                arm_name,
                lambda ev=evaluator, name=arm_name: samlab_points(ev, blocks.next(name)),
                per_call=plan.points,
            )
        )

    ll = LossLandscapes(model, inputs, targets, steps)
    built.notes["loss-landscapes"] = (
        f"random_plane steps={steps} ({steps * steps} points/call), distance={LL_DISTANCE}, "
        "all samples in one forward"
    )
    built.arms.append(Arm("loss-landscapes", ll.run, setup=ll.restore, per_call=steps * steps))

    # the fast paths agree with the eager twin (values), on the first block
    coords = blocks.blocks[0][: min(8, plan.points)]
    reference = evaluators["samlab eager"].evaluate_points(coords)
    parts = []
    for arm_name in ("samlab compiled", "samlab vmap"):
        got = evaluators[arm_name].evaluate_points(coords)
        worst = max(
            float(np.max(np.abs(got[m] - reference[m]) / (np.abs(reference[m]) + 1e-12)))
            for m in ("train_loss", "train_acc")
        )
        parts.append(f"{arm_name.split()[1]} {worst:.1e}")
    centre = evaluators["samlab eager"].check_center()
    built.check = (
        f"centre loss {centre['train_loss']:.4f} (check_center passed); max relative difference "
        f"to eager on {len(coords)} points: " + ", ".join(parts)
    )
    return built


# --------------------------------------------------------------------------------- tables


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _seconds(x: float) -> str:
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.2f} s"


def paired(a: ArmResult, b: ArmResult) -> list[float]:
    return [x / y for x, y in zip(a.seconds, b.seconds)]


def model_table(
    key: str, results: dict[str, ArmResult], built: Built, clock: str, other: str
) -> tuple[str, list[str]]:
    header = [
        "arm",
        "ratio to limit (median)",
        "IQR",
        "min-max",
        f"{clock} per point",
        f"{other} per point",
        "target",
        "status",
        "note",
    ]
    rows, missed = [], []
    for name, res in results.items():
        q1, q3 = res.ratio_quartiles
        lo, hi = res.ratio_range
        target = TARGETS.get(name, {}).get(key)
        status, target_s = "", "-"
        if target is not None:
            ok = res.median_ratio <= target
            status, target_s = ("PASS" if ok else "MISS"), f"<= {target:.2f}"
            if not ok:
                missed.append(f"{key}/{name} {res.median_ratio:.3f} > {target:.2f}")
        rows.append(
            [
                name,
                _fmt(res.median_ratio),
                f"{_fmt(q1)}-{_fmt(q3)}",
                f"{_fmt(lo)}-{_fmt(hi)}",
                _seconds(res.median_seconds),
                _seconds(res.median_of(other)),
                target_s,
                status,
                built.notes.get(
                    name, "per point: one axpy + 8 forwards of 128" if name == "limit" else ""
                ),
            ]
        )
    # compiled vs loss-landscapes, paired per round
    vs = paired(results["samlab compiled"], results["loss-landscapes"])
    q1, q3 = _quartiles(vs)
    ok = statistics.median(vs) <= 1.0
    if not ok:
        missed.append(f"{key}/compiled vs loss-landscapes {statistics.median(vs):.3f} > 1")
    rows.append(
        [
            "compiled / loss-landscapes",
            _fmt(statistics.median(vs)),
            f"{_fmt(q1)}-{_fmt(q3)}",
            f"{_fmt(min(vs))}-{_fmt(max(vs))}",
            "",
            "",
            "<= 1.00",
            "PASS" if ok else "MISS",
            "paired per round",
        ]
    )
    eager = results["samlab eager"].median_ratio
    vmap = results["samlab vmap"].median_ratio
    rows.append(
        [
            "vmap / eager",
            _fmt(statistics.median(paired(results["samlab vmap"], results["samlab eager"]))),
            "",
            "",
            "",
            "",
            "default only if < 1",
            "",
            f"auto on CPU is eager ({'vmap faster' if vmap < eager else 'vmap slower'} here)",
        ]
    )
    return format_markdown_table(header, rows), missed


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


# --------------------------------------------------------------------------------- MPI check


def mpi_worker(args: argparse.Namespace) -> int:
    """One rank of the MPI check (run under mpiexec by ``--mpi-check``)."""
    from mpi4py import MPI

    from landscape import compute_surface

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    key = args.mpi_model
    model = make_model(key)
    inputs, targets = make_data(key)
    directions = create_directions(model, seed=SEED)
    evaluator = SurfaceEvaluator(
        model, directions, (inputs, targets), batch_size=BATCH, forward_chunk=args.mpi_chunk
    )
    comm.Barrier()
    tic = time.perf_counter()
    surface = compute_surface(evaluator, None, x=GRID, y=GRID, comm=comm, progress=False)
    comm.Barrier()
    elapsed = time.perf_counter() - tic
    if comm.Get_rank() == 0:
        record = {
            "seconds": elapsed,
            "ranks": surface.provenance.get("ranks", []),
            "train_loss": surface.metrics["train_loss"].ravel().tolist(),
            "forward_chunk": evaluator.provenance["execution"].get("forward_chunk"),
            "mode": evaluator.mode,
        }
        Path(args.mpi_json).write_text(json.dumps(record))
    return 0


def mpi_check(args: argparse.Namespace, emit: Callable[[str], None], log: Callable) -> list[str]:
    from landscape import format_rank_report

    mpiexec = Path(sys.executable).with_name("mpiexec")
    # Ranks of an MPI job do not probe their forward chunk (they would time each other's
    # load): probe once here, and give every run (1 or 2 ranks) the same chunk.
    key = args.mpi_model
    model = make_model(key)
    probe = SurfaceEvaluator(
        model, create_directions(model, seed=SEED), make_data(key), batch_size=BATCH
    )
    chunk = int(probe.provenance["execution"]["forward_chunk"])
    del probe
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs: dict[int, list[dict]] = {1: [], 2: []}
    repeats = 1 if args.quick else args.mpi_repeats
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for ranks in (1, 2) if r % 2 == 0 else (2, 1):
                out = Path(tmp) / f"r{ranks}_{r}.json"
                command = [
                    str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py",
                    str(Path(__file__).resolve()), "--mpi-worker", "--mpi-model", args.mpi_model,
                    "--mpi-json", str(out), "--mpi-chunk", str(chunk),
                ]  # fmt: skip
                log(f"MPI check: {ranks} rank(s), run {r + 1}/{repeats}")
                subprocess.run(command, check=True, env=env, timeout=1800)
                runs[ranks].append(json.loads(out.read_text()))
    one = statistics.median(run["seconds"] for run in runs[1])
    two = statistics.median(run["seconds"] for run in runs[2])
    speedup = one / two
    bitwise = all(run["train_loss"] == runs[1][0]["train_loss"] for run in runs[1] + runs[2])
    emit(
        f"## MPI: {LABELS[args.mpi_model]}, whole 21 x 21 grid, `compute_surface` under the venv's "
        f"mpiexec, one thread per rank ({repeats} run(s) each, alternating; median)"
    )
    emit()
    fastest = {r: min(run["seconds"] for run in runs[r]) for r in (1, 2)}
    rows = [
        ["1 rank", f"{one:.2f} s", f"{fastest[1]:.2f} s", "1.00", "1.00", "-"],
        [
            "2 ranks",
            f"{two:.2f} s",
            f"{fastest[2]:.2f} s",
            f"{speedup:.2f}",
            f"{fastest[1] / fastest[2]:.2f}",
            ">= 1.40",
        ],
    ]
    header = ["ranks", "wall (median)", "wall (min)", "speed-up", "speed-up (min)", "target"]
    emit(format_markdown_table(header, rows))
    emit()
    emit(
        f"Runs (s): 1 rank {[round(r['seconds'], 2) for r in runs[1]]}, 2 ranks "
        f"{[round(r['seconds'], 2) for r in runs[2]]}. Load average (1 min) at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes take cores too)."
    )
    emit()
    emit(
        f"Surfaces bitwise equal on 1 and 2 ranks: {bitwise}; evaluator mode "
        f"{runs[1][0]['mode']}, forward chunk {runs[1][0]['forward_chunk']} (probed once by "
        "the parent and passed to every rank). Per-rank share (each 2-rank run):"
    )
    emit()
    for run in runs[2]:
        for line in format_rank_report(run["ranks"]):
            emit(f"- {line}")
    emit()
    missed = []
    if speedup < 1.4:
        missed.append(f"MPI 2 ranks speed-up {speedup:.2f} < 1.40")
    if not bitwise:
        missed.append("MPI surfaces differ between 1 and 2 ranks")
    return missed


# --------------------------------------------------------------------------------- full grid


def full_resnet20(emit: Callable[[str], None], log: Callable, rows: int = 21) -> list[str]:
    """Whole 21 x 21 ResNet-20 grid (its first ``rows`` rows): eager vs compiled (compilation
    included), alternating row by row."""
    key = "resnet20"
    model = make_model(key)
    inputs, targets = make_data(key)
    directions = create_directions(model, seed=SEED)
    data = (inputs, targets)
    eager, eager_wall, eager_cpu = _timed(
        lambda: SurfaceEvaluator(copy.deepcopy(model), directions, data, batch_size=BATCH)
    )
    compiled, build_wall, build_cpu = _timed(
        lambda: SurfaceEvaluator(
            copy.deepcopy(model), directions, data, batch_size=BATCH, mode="compiled"
        )
    )
    totals = {"eager": [eager_wall, eager_cpu], "compiled": [build_wall, build_cpu]}
    coords = grid_coordinates(GRID, GRID)
    values: dict[str, dict[str, list]] = {"eager": {}, "compiled": {}}
    arms = {"eager": eager, "compiled": compiled}
    for i in range(rows):
        order = ("eager", "compiled") if i % 2 == 0 else ("compiled", "eager")
        for name in order:
            block = coords[i * len(GRID) : (i + 1) * len(GRID)]
            result, wall, cpu = _timed(lambda ev=arms[name], b=block: samlab_points(ev, b))
            totals[name][0] += wall
            totals[name][1] += cpu
            for metric, value in result.items():
                values[name].setdefault(metric, []).append(value)
        log(
            f"full ResNet-20: row {i + 1}/{rows}; eager {totals['eager'][1]:.0f} s, compiled "
            f"{totals['compiled'][1]:.0f} s CPU so far"
        )
    cpu_ratio = totals["compiled"][1] / totals["eager"][1]
    wall_ratio = totals["compiled"][0] / totals["eager"][0]
    loss = {n: np.concatenate(v["train_loss"]) for n, v in values.items()}
    worst = float(np.max(np.abs(loss["compiled"] - loss["eager"]) / np.abs(loss["eager"])))
    emit(
        f"## Full 21 x 21 ResNet-20 grid ({rows * len(GRID)} points, 1,024 samples): eager vs "
        "compiled including construction (compilation, probes), alternating row by row"
    )
    emit()
    emit(
        format_markdown_table(
            [
                "arm",
                "construction wall / CPU",
                "total CPU",
                "total wall",
                "ratio (CPU)",
                "ratio (wall)",
                "target",
            ],
            [
                [
                    "eager",
                    f"{eager_wall:.1f} s / {eager_cpu:.1f} s",
                    f"{totals['eager'][1]:.0f} s",
                    f"{totals['eager'][0]:.0f} s",
                    "1.000",
                    "1.000",
                    "-",
                ],
                [
                    "compiled",
                    f"{build_wall:.1f} s / {build_cpu:.1f} s",
                    f"{totals['compiled'][1]:.0f} s",
                    f"{totals['compiled'][0]:.0f} s",
                    f"{cpu_ratio:.3f}",
                    f"{wall_ratio:.3f}",
                    f"<= {FULL_RESNET20_TARGET:.2f}",
                ],
            ],
        )  # fmt: skip
    )
    emit()
    chunks = {
        name: evaluator.provenance["execution"].get("forward_chunk")
        for name, evaluator in arms.items()
    }
    emit(
        f"Compiled mode used: {compiled.mode}; forward chunks (probe): eager {chunks['eager']}, "
        f"compiled {chunks['compiled']}; max relative train-loss difference to eager over the "
        f"grid: {worst:.1e}."
    )
    emit()
    return [] if cpu_ratio <= FULL_RESNET20_TARGET else [f"full ResNet-20 {cpu_ratio:.3f} > 0.75"]


# --------------------------------------------------------------------------------- main


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer points and rounds")
    parser.add_argument(
        "--models", default="mlp,cnn,resnet20", help="comma list of mlp,cnn,resnet20"
    )
    parser.add_argument(
        "--points", type=int, default=None,
        help="grid points per arm call (rounded down to a square: loss-landscapes evaluates "
        "steps x steps); default mlp 441, cnn 25, resnet20 4",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=None, help="measured rounds per model")
    parser.add_argument("--out", default="results/benchmarks/landscape_surface.md")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--mpi-check", action="store_true", help="1 vs 2 MPI ranks (CNN grid)")
    parser.add_argument("--mpi-model", default="cnn", choices=sorted(MODEL_NAMES))
    parser.add_argument("--mpi-repeats", type=int, default=3)
    parser.add_argument("--full-resnet20", action="store_true", help="whole ResNet-20 grid")
    parser.add_argument(
        "--cold-compile", action="store_true", help="disable inductor's on-disk caches"
    )
    parser.add_argument("--full-rows", type=int, default=21, help=argparse.SUPPRESS)
    parser.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mpi-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mpi-chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mpi_worker:
        return mpi_worker(args)

    torch.set_num_threads(1)
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1  # compilation on this process's CPU clock
    if args.cold_compile:  # compile from scratch (no FX-graph / kernel caches on disk)
        inductor_config.force_disable_caches = True
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else []
    for m in models:
        if m not in MODEL_NAMES:
            parser.error(f"unknown model {m!r}; choose from {sorted(MODEL_NAMES)}")
    clocks = {"cpu": time.process_time, "wall": time.perf_counter}
    other = "wall" if args.clock == "cpu" else "cpu"
    timing = dict(timer=clocks[args.clock], extra_timers={other: clocks[other]})

    started = time.perf_counter()
    load0 = os.getloadavg()
    lines = [
        "# Loss-surface benchmark",
        "",
        f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`",
        f"- torch {torch.__version__}, loss-landscapes {_version('loss-landscapes')}, Python "
        f"{platform.python_version()}, {torch.get_num_threads()} thread, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "- work: points of the 21 x 21 grid on [-1, 1]^2, filter-normalised directions (seed 0, "
        "biasbn), 1,024 samples, batch 128; every arm evaluates the same block of points per "
        "round (loss-landscapes: its own steps x steps plane, same count, same samples)",
        "- ratios: per round, arm time / limit time of the same round; median, quartiles, "
        "min-max; arms interleaved, order rotated each round; one warm-up round excluded; "
        "construction (compilation, probes) reported separately",
        f"- clock: {args.clock} time; {other} time on the same calls; inductor caches "
        f"{'disabled (cold compilation)' if args.cold_compile else 'as found on disk'}",
        "",
    ]
    report = Report(lines, started)
    emit, log = report.emit, report.log
    missed_all: list[str] = []

    for key in models:
        plans = QUICK_PLANS if args.quick else DEFAULT_PLANS
        plan = Plan(plans[key].points, plans[key].repeats)
        if args.points is not None:
            plan.points = max(1, math.isqrt(args.points)) ** 2
        if args.repeats is not None:
            plan.repeats = args.repeats
        built = build_arms(key, plan, log)
        log(f"{key}: {len(built.arms)} arms x {plan.repeats} rounds of {plan.points} points")
        results = run_interleaved(
            built.arms, repeats=plan.repeats, baseline="limit", warmup=1, progress=log, **timing
        )
        table, missed = model_table(key, results, built, args.clock, other)
        limit = results["limit"]
        emit(
            f"## {LABELS[key]} ({sum(p.numel() for p in make_model(key).parameters()):,} params; "
            f"limit {_seconds(limit.median_seconds)} {args.clock} per point; {plan.points} "
            f"points per call, {plan.repeats} rounds)"
        )
        emit()
        emit(table)
        emit()
        construction = ", ".join(
            f"{name.split()[1]} {wall:.1f} s wall / {cpu:.1f} s CPU"
            for name, (wall, cpu) in built.construction.items()
        )
        emit(f"Construction (one-time; compiled: compilation and probes): {construction}.")
        emit(f"Check: {built.check}.")
        emit()
        missed_all += missed
        del built, results

    if args.mpi_check:
        missed_all += mpi_check(args, emit, log)
    if args.full_resnet20:
        missed_all += full_resnet20(emit, log, args.full_rows)

    elapsed = time.perf_counter() - started
    load1 = os.getloadavg()
    emit(
        f"Total wall time {elapsed:.0f} s; load average (1 min) {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end."
    )
    report.finish(args.out, missed_all)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
