"""The loss-landscape section of ``make demo``: SGD and SAM compared on filter-normalised surfaces.

For the final SGD and SAM checkpoints of the optimizer comparison
(:mod:`samlab.demo.comparison`), the demo computes, with the ``landscape`` command line
(``python -m landscape surface``):

* a 2D surface on ``[-1, 1]^2`` (21 x 21 points) around the model, along two random Gaussian
  directions, filter-normalised (Li et al., NeurIPS 2018), zero on biases and BatchNorm
  parameters (``--xignore biasbn``), moving the weights only (``--dir_type weights``), with
  BatchNorm in eval mode (the running statistics of the checkpoint);
* a 1D slice on ``[-1, 1]`` (41 points) along the 2D surface's x direction (the same direction
  file), so the slice is the ``y = 0`` row of the surface at twice the resolution;

each evaluated on the same seeded random 1,024 of the training digits the model was trained on
(:func:`digits_eval_data`), on **2 MPI ranks**: the venv's own
``mpiexec -n 2 python -m mpi4py -m landscape surface ... --mpi`` with ``OMP_NUM_THREADS=1`` per
rank, launched as a subprocess (one process, with a printed note, when there is no ``mpiexec``
next to the interpreter or no mpi4py). Each model gets its own direction file: the directions are
drawn from the same seed but normalised filter by filter against that model's own weights.

Files under ``<output>/landscape/``: ``<opt>_directions.h5``, ``<opt>_2d.h5``, ``<opt>_1d.h5``
(HDF5 in loss-landscape's layout; each surface has a ``.json`` sidecar with the command) and
``<opt>_inputs.json`` (the checkpoint hash and settings the files belong to: files of another
checkpoint or grid are deleted, files of the same one are resumed, or reused when complete).
In ``<output>`` itself: ``landscape_sgd_vs_sam.png`` (contours, 3D surfaces and 1D slices, shared
levels and colour scales) and ``sharpness.csv``.

Sharpness: :mod:`samlab.demo.sharpness` (``sharpness.csv``, the definitions); the figure:
:mod:`samlab.demo.landscape_figure`; the commands and their files:
:mod:`samlab.demo.landscape_runs`.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landscape.mpi import launch_environment, launch_prefix, run_command
from samlab.datasets import digits_eval_data
from samlab.demo.comparison import COMPARISON, SMOKE_TRAIN_SAMPLES, Comparison
from samlab.demo.landscape_figure import LABELS, plot_landscapes
from samlab.demo.landscape_runs import (
    DATA_FACTORY,
    FULL_SETTINGS,
    SMOKE_SETTINGS,
    LandscapeSettings,
    file_sha256,
    forget_stale,
    is_complete,
    load_when_unlocked,
    surface_arguments,
    surface_files,
)
from samlab.demo.sharpness import format_sharpness, sharpness_row, slice_mismatch, write_sharpness
from samlab.train.classify import CHECKPOINT_NAME

#: the optimizers of the comparison whose final models get a landscape
LANDSCAPE_MODELS = ("sgd", "sam")


@dataclass(frozen=True)
class LandscapeResult:
    """What the section computed: sharpness rows, files, and where the time went."""

    rows: tuple[dict[str, Any], ...]
    figure: Path
    sharpness_csv: Path
    files: dict[str, dict[str, Path]]  # optimizer -> {"directions", "2d", "1d"}
    processes: int  # MPI ranks used (1: the one-process fallback)
    note: str  # why the fallback was used ("" when it was not)
    seconds: float  # wall time of the whole section
    cpu_seconds: float  # CPU time of the section: this process plus the surface subprocesses
    points_computed: int  # grid points evaluated now (0 when everything was reused)
    slice_mismatch: dict[str, float] = field(default_factory=dict)  # 1D vs 2D y=0 row


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_landscape_section(
    output: str | Path,
    checkpoints: Mapping[str, Path],
    *,
    settings: LandscapeSettings = FULL_SETTINGS,
    data_kwargs: Mapping[str, Any] | None = None,
    train_samples: int | None = None,
    title: str = "",
) -> LandscapeResult:
    """Compute the surfaces of ``checkpoints`` (optimizer -> checkpoint file), draw the figure,
    write ``sharpness.csv`` and print the table.

    Args:
        output: the demo's output folder (files go to ``output/landscape/``, the figure and
            ``sharpness.csv`` to ``output``).
        checkpoints: e.g. ``{"sgd": .../last.pt, "sam": ...}``.
        settings: grids, samples and ranks (:data:`FULL_SETTINGS`, :data:`SMOKE_SETTINGS`).
        data_kwargs: keyword arguments of :func:`digits_eval_data` (``seed``, ``limit``).
        train_samples: how many digits the data factory returns (the subset is capped to it).
    """
    start, cpu_start, child_start = time.perf_counter(), time.process_time(), _children_cpu()
    output = Path(output)
    folder = output / "landscape"
    folder.mkdir(parents=True, exist_ok=True)
    data_kwargs = dict(data_kwargs or {})
    samples = min(settings.samples, train_samples) if train_samples else settings.samples
    prefix, processes, note = launch_prefix(settings.ranks)
    env = launch_environment(processes)
    if note:
        print(f"note: {note}")
    where = f"{processes} MPI ranks" if processes > 1 else "1 process"
    print(
        f"\nloss landscapes of {', '.join(LABELS.get(n, n) for n in checkpoints)} on {where}: "
        f"{settings.grid}x{settings.grid} 2D + {settings.points_1d}-point 1D on "
        f"[-{settings.span:g}, {settings.span:g}], {samples} training digits"
    )

    files: dict[str, dict[str, Path]] = {}
    surfaces: dict[str, tuple[Any, Any]] = {}
    computed = 0
    for name, checkpoint in checkpoints.items():
        checkpoint = Path(checkpoint)
        paths = surface_files(folder, name)
        files[name] = paths
        inputs = {
            "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": file_sha256(checkpoint),
            "settings": {**settings.to_dict(), "samples": samples},
            "data_factory": DATA_FACTORY,  # 0.1.0's files name another factory: recomputed
            "data_kwargs": data_kwargs,
        }
        forget_stale(paths, folder / f"{name}_inputs.json", inputs)
        for ndim in (2, 1):  # the 2D command creates the direction file the 1D one reuses
            surf_file = paths[f"{ndim}d"]
            label = f"{name} {ndim}D"
            if is_complete(surf_file):
                print(f"  {label}: {surf_file} already computed")
                continue
            args = surface_arguments(
                checkpoint,
                paths["directions"],
                surf_file,
                settings,
                ndim=ndim,
                data_kwargs=data_kwargs,
                samples=samples,
            )
            if processes > 1:
                args.append("--mpi")
            else:
                args += ["--threads", str(max(1, min(settings.ranks, os.cpu_count() or 1)))]
            began = time.perf_counter()
            text = run_command([*prefix, *args], env, label)
            print(f"  {label} ({time.perf_counter() - began:.1f} s):")
            for line in text.strip().splitlines():
                print(f"    {line}")
                if line.startswith("computed "):
                    computed += int(line.split()[1])
        surf_2d, surf_1d = load_when_unlocked(paths["2d"]), load_when_unlocked(paths["1d"])
        if not (surf_2d.done.all() and surf_1d.done.all()):
            raise RuntimeError(f"landscape of {name}: the surface files are incomplete")
        surfaces[name] = (surf_2d, surf_1d)

    rows = tuple(
        sharpness_row(name, s1, s2, settings.rho, samples) for name, (s2, s1) in surfaces.items()
    )
    mismatch = {name: slice_mismatch(s1, s2) for name, (s2, s1) in surfaces.items()}
    sharpness_csv = write_sharpness(rows, output / "sharpness.csv")
    figure = plot_landscapes(
        surfaces, output / "landscape_sgd_vs_sam.png", rho=settings.rho, title=title
    )
    print()
    print(format_sharpness(rows))
    shown = ", ".join(f"{LABELS.get(n, n)} {v:.2g}" for n, v in mismatch.items())
    print(f"1D slice vs the 2D surface's y = 0 row at common points: max |difference| {shown}")
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start + _children_cpu() - child_start
    return LandscapeResult(
        rows=rows,
        figure=figure,
        sharpness_csv=sharpness_csv,
        files=files,
        processes=processes,
        note=note,
        seconds=seconds,
        cpu_seconds=cpu,
        points_computed=computed,
        slice_mismatch=mismatch,
    )


def demo_checkpoints(comparison: Comparison) -> dict[str, Path]:
    """The final checkpoints of the comparison's :data:`LANDSCAPE_MODELS` (SGD and SAM)."""
    checkpoints = {}
    for name in LANDSCAPE_MODELS:
        result = comparison.results.get(name)
        if result is None or result.output_dir is None:
            raise ValueError(f"the comparison has no saved {name!r} run to draw a landscape of")
        checkpoints[name] = Path(result.output_dir) / CHECKPOINT_NAME
    return checkpoints


def demo_data_kwargs(*, smoke: bool, seed: int) -> dict[str, Any]:
    """The keyword arguments of :func:`digits_eval_data`: the digits the models trained on."""
    data_kwargs: dict[str, Any] = {"seed": seed}
    if smoke:
        data_kwargs["limit"] = SMOKE_TRAIN_SAMPLES
    return data_kwargs


def run_demo_curvature(comparison: Comparison, *, smoke: bool = False, seed: int = 0):
    """The Hessian section (:mod:`samlab.demo.curvature`) for the same models and digits as the
    landscapes: λ_max, trace, worst-case sharpness at SAM's rho, spectral densities."""
    from samlab.demo.curvature import FULL_CURVATURE, SMOKE_CURVATURE, run_curvature_section

    settings = SMOKE_SETTINGS if smoke else FULL_SETTINGS
    return run_curvature_section(
        comparison.output,
        demo_checkpoints(comparison),
        subset_seed=settings.subset_seed,
        rho=COMPARISON["sam"]["rho"],
        data_kwargs=demo_data_kwargs(smoke=smoke, seed=seed),
        settings=SMOKE_CURVATURE if smoke else FULL_CURVATURE,
    )


def run_demo_landscapes(
    comparison: Comparison, *, smoke: bool = False, seed: int = 0
) -> LandscapeResult:
    """The section for a finished :class:`~samlab.demo.Comparison`: its SGD and SAM checkpoints,
    evaluated on the training digits they were trained on (``--smoke``: the first 512)."""
    checkpoints = demo_checkpoints(comparison)
    data_kwargs = demo_data_kwargs(smoke=smoke, seed=seed)
    epochs = len(comparison.results[LANDSCAPE_MODELS[0]].history)
    return run_landscape_section(
        comparison.output,
        checkpoints,
        settings=SMOKE_SETTINGS if smoke else FULL_SETTINGS,
        data_kwargs=data_kwargs,
        train_samples=len(digits_eval_data(**data_kwargs)[1]),
        title=f"digits CNN after {epochs} epochs: SGD vs SAM (rho = {COMPARISON['sam']['rho']:g}), "
        "filter-normalised loss landscapes",
    )
