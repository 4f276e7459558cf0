"""The loss-landscape section of ``make demo``: SGD and SAM compared on filter-normalised surfaces.

For the final SGD and SAM checkpoints of the optimizer comparison (:mod:`samlab.demo`), the
demo computes, with the ``landscape`` command line (``python -m landscape surface``):

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

Sharpness, from the computed train loss ``L`` (the definitions, also printed under the table):

* ``curv_fd``: second finite difference of the 1D slice at the centre,
  ``(L(h) - 2 L(0) + L(-h)) / h^2`` with ``h`` the grid step (0.05);
* ``curv_fit``: ``2 c2`` of the least-squares quadratic ``c0 + c1 a + c2 a^2`` fitted to the 1D
  slice over ``|a| <= 0.1`` (5 points; at least the 3 points around 0 on coarser grids). The
  walls rise faster than a parabola (roughly exponentially), so a wider window gives a larger
  value (for the SGD model of ``make demo``: 1.07 at the 3 points, 1.24 over ``|a| <= 0.1``,
  2.9 over ``|a| <= 0.25``);
* ``rise1d``: loss rise at radius ``rho = 0.05`` along the x direction, ``(L(rho) + L(-rho)) / 2
  - L(0)`` (``rise1d_max``: the larger side), read from a cubic interpolating spline through the
  slice (exact at grid points; 0.05 is one with 41 points on [-1, 1]);
* ``rise2d``: mean over 72 points of the circle ``a^2 + b^2 = rho^2`` of the 2D surface, minus
  ``L(0)``, read from a bicubic interpolating spline through the grid (``rise2d_max``: the
  maximum over the circle).

``rho`` is in units of the filter-normalised directions: at ``a = rho`` every filter of the
network has moved by ``rho`` times its own norm, in a random direction. This is not SAM's
adversarial ``rho`` (an absolute step along the gradient), so these numbers measure the average
flatness around the minimum, not the worst case SAM minimises (``mean_sharpness_gap`` in
``summary.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landscape.curvature import FIT_WINDOW, sharpness_1d, sharpness_2d
from landscape.mpi import launch_environment, launch_prefix, run_command
from samlab.datasets import digits_eval_data

__all__ = [
    "FULL_SETTINGS",
    "LANDSCAPE_MODELS",
    "SHARPNESS_COLUMNS",
    "SMOKE_SETTINGS",
    "LandscapeResult",
    "LandscapeSettings",
    "format_sharpness",
    "plot_landscapes",
    "run_demo_landscapes",
    "run_landscape_section",
]

#: the optimizers of the comparison whose final models get a landscape
LANDSCAPE_MODELS = ("sgd", "sam")
LABELS = {"sgd": "SGD", "sam": "SAM"}
COLORS = {"sgd": "C0", "sam": "C3"}
MODEL_FACTORY = "samlab.models:digits_cnn"
DATA_FACTORY = "samlab.datasets:digits_eval_data"
SHARPNESS_COLUMNS = (
    "optimizer",
    "samples",
    "loss_center",
    "acc_center",
    "rho",
    "fd_step",
    "curv_fd",
    "curv_fit",
    "rise1d",
    "rise1d_max",
    "rise2d",
    "rise2d_max",
    "loss_2d_max",
)


@dataclass(frozen=True)
class LandscapeSettings:
    """Grids, evaluation data and launch of the landscape section."""

    grid: int  # 2D points per side on [-span, span]
    points_1d: int  # 1D points on [-span, span]
    samples: int  # seeded random subset of the training digits evaluated at every point
    span: float = 1.0
    rho: float = 0.05
    direction_seed: int = 0
    subset_seed: int = 0
    batch_size: int = 128
    ranks: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: ``make demo``: 441 + 41 points per model; 90 s wall, 102 CPU s for both models on 2 ranks
FULL_SETTINGS = LandscapeSettings(grid=21, points_1d=41, samples=1024)
#: ``--smoke``: 25 + 7 points per model on 128 digits
SMOKE_SETTINGS = LandscapeSettings(grid=5, points_1d=7, samples=128)


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


# --------------------------------------------------------------------------------------------
# launching the landscape command line
# --------------------------------------------------------------------------------------------


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _surface_arguments(
    checkpoint: Path,
    dir_file: Path,
    surf_file: Path,
    settings: LandscapeSettings,
    *,
    ndim: int,
    data_kwargs: Mapping[str, Any],
    samples: int,
) -> list[str]:
    span = f"{-settings.span:g}:{settings.span:g}"
    args = [
        "surface",
        "--model",
        MODEL_FACTORY,
        "--model_file",
        str(checkpoint),
        "--data",
        DATA_FACTORY,
        "--data_kwargs",
        json.dumps(dict(data_kwargs), sort_keys=True),
        "--subset",
        str(samples),
        "--subset_seed",
        str(settings.subset_seed),
        "--batch_size",
        str(settings.batch_size),
        "--loss_name",
        "crossentropy",
        "--bn_mode",
        "eval",
        "--dir_type",
        "weights",
        "--xnorm",
        "filter",
        "--xignore",
        "biasbn",
        "--seed",
        str(settings.direction_seed),
        "--dir_file",
        str(dir_file),
        "--surf_file",
        str(surf_file),
        "--no_progress",
    ]
    if ndim == 2:
        args += [f"--x={span}:{settings.grid}", f"--y={span}:{settings.grid}"]
        args += ["--ynorm", "filter", "--yignore", "biasbn"]
    else:  # the x direction of the 2D direction file
        args += [f"--x={span}:{settings.points_1d}"]
    return args


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path) -> Any:
    """``load_surface``, retrying briefly while a just-finished rank still holds the lock."""
    from landscape.io import load_surface

    deadline = time.monotonic() + 10.0
    while True:
        try:
            return load_surface(path)
        except ValueError as err:
            if "lock" not in str(err).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _complete(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return bool(_load(path).done.all())
    except (ValueError, OSError):
        return False


def _model_files(folder: Path, name: str) -> dict[str, Path]:
    return {
        "directions": folder / f"{name}_directions.h5",
        "2d": folder / f"{name}_2d.h5",
        "1d": folder / f"{name}_1d.h5",
    }


def _forget_stale(files: Mapping[str, Path], stamp: Path, inputs: Mapping[str, Any]) -> bool:
    """Delete ``files`` (and sidecars) made for other inputs; ``True`` if they may be reused."""
    try:
        previous = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        previous = None
    if previous == json.loads(json.dumps(inputs)):
        return True
    for path in files.values():
        for stale in (path, path.with_name(path.name + ".json")):
            stale.unlink(missing_ok=True)
    stamp.write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
    return False


# --------------------------------------------------------------------------------------------
# sharpness from the surfaces
# --------------------------------------------------------------------------------------------


def _sharpness_row(name: str, surf_1d: Any, surf_2d: Any, rho: float, samples: int) -> dict:
    row: dict[str, Any] = {"optimizer": name, "samples": samples, "rho": rho}
    row.update(sharpness_1d(surf_1d.x, surf_1d.metrics["train_loss"], rho))
    row.update(sharpness_2d(surf_2d.x, surf_2d.y, surf_2d.metrics["train_loss"], rho))
    centre = int(np.flatnonzero(np.isclose(surf_1d.x, 0.0, rtol=0.0, atol=1e-12))[0])
    row["acc_center"] = float(surf_1d.metrics["train_acc"][centre])
    return {key: row[key] for key in SHARPNESS_COLUMNS}


def _slice_mismatch(surf_1d: Any, surf_2d: Any) -> float:
    """Largest |1D slice - 2D surface's y = 0 row| where their x coordinates coincide."""
    row = np.flatnonzero(np.isclose(surf_2d.y, 0.0, rtol=0.0, atol=1e-12))
    if row.size != 1:
        return math.nan
    worst = 0.0
    for j, xj in enumerate(surf_2d.x):
        match = np.flatnonzero(np.isclose(surf_1d.x, xj, rtol=0.0, atol=1e-9))
        if match.size:
            a = surf_1d.metrics["train_loss"][match[0]]
            b = surf_2d.metrics["train_loss"][row[0], j]
            worst = max(worst, abs(float(a) - float(b)))
    return worst


def write_sharpness(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``sharpness.csv`` with :data:`SHARPNESS_COLUMNS`, one row per model."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SHARPNESS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def format_sharpness(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sharpness table as fixed-width text, with the definitions underneath."""
    header = (
        f"{'optimizer':<10} {'L(0)':>8} {'acc(0)':>7} {'curv_fd':>8} {'curv_fit':>8} "
        f"{'rise1d':>9} {'rise1d_max':>10} {'rise2d':>9} {'rise2d_max':>10} {'L2d_max':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['optimizer']:<10} {r['loss_center']:>8.4f} {r['acc_center']:>7.4f} "
            f"{r['curv_fd']:>8.4f} {r['curv_fit']:>8.4f} {r['rise1d']:>9.5f} "
            f"{r['rise1d_max']:>10.5f} {r['rise2d']:>9.5f} {r['rise2d_max']:>10.5f} "
            f"{r['loss_2d_max']:>8.3f}"
        )
    if rows:
        r = rows[0]
        lines += [
            f"train loss L on {r['samples']} training digits; directions filter-normalised "
            f"(rho = {r['rho']:g} moves every filter by {r['rho']:g} x its norm).",
            f"curv_fd = (L(h) - 2L(0) + L(-h)) / h^2 with h = {r['fd_step']:.4g} (1D slice); "
            f"curv_fit = 2 c2 of a quadratic fitted over |a| <= {max(FIT_WINDOW, r['fd_step']):g}.",
            "rise1d = (L(rho) + L(-rho)) / 2 - L(0) on the 1D slice (cubic spline; max: worse "
            "side); rise2d = mean (max) of L - L(0) on the circle |(a, b)| = rho of the 2D "
            "surface (bicubic spline, 72 angles).",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the figure
# --------------------------------------------------------------------------------------------


def _round_sig(value: float, digits: int = 2) -> float:
    if value <= 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(value))))


def _shared_levels(values: Sequence[np.ndarray], count: int = 14) -> np.ndarray:
    """Contour levels common to all ``values``: geometric between the lowest and highest
    finite loss when they span more than a decade (the basin and the walls both get lines),
    linear otherwise; rounded to two significant digits."""
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.array([low])
    if low > 0 and high / low > 10:
        levels = np.geomspace(low * 1.15, high * 0.98, count)
    else:
        levels = np.linspace(low + 0.05 * (high - low), high * 0.98, count)
    return np.unique([_round_sig(v) for v in levels])


def plot_landscapes(
    surfaces: Mapping[str, tuple[Any, Any]], path: Path, *, rho: float, title: str = ""
) -> Path:
    """One figure, the models side by side: contour (row 1), 3D surface (row 2), and the 1D
    slices of all models on one axes (row 3: the whole slice on a log scale, and a linear zoom
    on the centre with ``±rho`` marked). Contours share their levels and colours, 3D surfaces
    their colour scale and z range, so the panels compare directly.

    ``surfaces``: optimizer -> (2D surface, 1D surface), both with ``train_loss``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from landscape.plot import plot_1d, plot_contour, plot_surface_3d

    names = list(surfaces)
    grids = [np.asarray(surfaces[n][0].metrics["train_loss"], dtype=np.float64) for n in names]
    levels = _shared_levels(grids)
    low = min(float(np.nanmin(g)) for g in grids)
    high = max(float(np.nanmax(g)) for g in grids)

    figure = Figure(figsize=(5.6 * len(names), 15), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, len(names), height_ratios=[1.0, 1.0, 0.8])
    contour_axes, surface_axes = [], []
    for col, name in enumerate(names):
        surf_2d = surfaces[name][0]
        label = LABELS.get(name, name)
        ax = figure.add_subplot(grid[0, col])
        # no noise-floor split: its floor is twice the median standard error over the whole
        # grid, which the walls dominate (the SE grows with the loss: ~0.1 there, ~0.001 in
        # the basin) and which would grey out every level of the basin
        plot_contour(
            surf_2d,
            "train_loss",
            ax=ax,
            levels=levels,
            noise_floor=False,
            title=f"{label}: train loss (contours)",
        )
        ax.plot([0], [0], marker="+", color="k", markersize=10)
        ax.set_aspect("equal")
        ax.set(xlabel="x (filter-normalised)", ylabel="y (filter-normalised)")
        contour_axes.append(ax)
        ax3 = figure.add_subplot(grid[1, col], projection="3d")
        plot_surface_3d(
            surf_2d,
            "train_loss",
            ax=ax3,
            vmin=low,
            vmax=high,
            colorbar=False,
            title=f"{label}: train loss surface",
        )
        ax3.set_zlim(0.0, high * 1.02)
        ax3.set_zlabel("train loss")
        ax3.view_init(elev=28, azim=-60)
        surface_axes.append(ax3)
    figure.colorbar(
        ScalarMappable(Normalize(levels.min(), levels.max()), cmap="viridis"),
        ax=contour_axes,
        label="train loss (contour levels, shared)",
        shrink=0.8,
    )
    figure.colorbar(
        ScalarMappable(Normalize(low, high), cmap="coolwarm"),
        ax=surface_axes,
        label="train loss (shared colour scale)",
        shrink=0.6,
    )

    full_ax = figure.add_subplot(grid[2, : max(1, len(names) - 1)])
    zoom_ax = figure.add_subplot(grid[2, -1]) if len(names) > 1 else None
    zoom = max(4 * rho, FIT_WINDOW)
    handles: list[Any] = []
    zoom_values: list[np.ndarray] = []
    for name in names:
        surf_1d = surfaces[name][1]
        color = COLORS.get(name, f"C{len(handles) + 4}")
        label = LABELS.get(name, name)
        for ax, kwargs in ((full_ax, {"log": True}), (zoom_ax, {"xmin": -zoom, "xmax": zoom})):
            if ax is None:
                continue
            lines, bands = len(ax.lines), len(ax.collections)
            plot_1d(surf_1d, ["train_loss"], ax=ax, accuracy=False, **kwargs)
            for line in ax.lines[lines:]:
                line.set_color(color)
                line.set_marker(".")
                line.set_label(f"{label} train loss")
            for band in ax.collections[bands:]:
                band.set_color(color)
                band.set_alpha(0.2)
        handles.append(Line2D([], [], color=color, marker=".", label=f"{label} train loss"))
        coords = np.asarray(surf_1d.x, dtype=np.float64)
        values = np.asarray(surf_1d.metrics["train_loss"], dtype=np.float64)
        near = np.abs(coords) <= zoom * (1 + 1e-9)  # the points in the zoom and the drawn
        edges = np.interp([-zoom, zoom], coords, values)  # line where it leaves the window
        zoom_values.append(np.concatenate([values[near], edges]))
    handles.append(Patch(color="0.5", alpha=0.3, label="± 2 SE (per-batch spread)"))
    for ax in (full_ax, zoom_ax):
        if ax is None:
            continue
        ax.set_ylabel("train loss", color="k")
        ax.tick_params("y", colors="k")
        ax.set_xlabel("x (filter-normalised, the 2D surface's x direction)")
        ax.grid(True, alpha=0.3)
    rho_handle = Line2D([], [], color="0.3", linestyle=":", label=f"±rho = ±{rho:g}")
    full_ax.set_title("1D slices (log scale)")
    full_ax.legend(handles=handles, loc="upper center", fontsize=8)
    if zoom_ax is not None:
        for sign in (-1, 1):
            zoom_ax.axvline(sign * rho, color="0.3", linestyle=":", linewidth=1)
        values = np.concatenate(zoom_values)
        pad = 0.08 * (values.max() - values.min() or 1.0)
        zoom_ax.set_ylim(values.min() - pad, values.max() + pad)
        zoom_ax.set_title("centre, linear scale")
        zoom_ax.legend(handles=[*handles[:-1], rho_handle], loc="upper center", fontsize=8)
    figure.suptitle(title or "digits CNN: SGD vs SAM loss landscapes")
    figure.savefig(path)
    return path


# --------------------------------------------------------------------------------------------
# the section
# --------------------------------------------------------------------------------------------


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
        checkpoints: e.g. ``{"sgd": .../checkpoint.pt, "sam": ...}``.
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
        paths = _model_files(folder, name)
        files[name] = paths
        inputs = {
            "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": _sha256(checkpoint),
            "settings": {**settings.to_dict(), "samples": samples},
            "data_kwargs": data_kwargs,
        }
        _forget_stale(paths, folder / f"{name}_inputs.json", inputs)
        for ndim in (2, 1):  # the 2D command creates the direction file the 1D one reuses
            surf_file = paths[f"{ndim}d"]
            label = f"{name} {ndim}D"
            if _complete(surf_file):
                print(f"  {label}: {surf_file} already computed")
                continue
            args = _surface_arguments(
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
        surf_2d, surf_1d = _load(paths["2d"]), _load(paths["1d"])
        if not (surf_2d.done.all() and surf_1d.done.all()):
            raise RuntimeError(f"landscape of {name}: the surface files are incomplete")
        surfaces[name] = (surf_2d, surf_1d)

    rows = tuple(
        _sharpness_row(name, s1, s2, settings.rho, samples) for name, (s2, s1) in surfaces.items()
    )
    mismatch = {name: _slice_mismatch(s1, s2) for name, (s2, s1) in surfaces.items()}
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


def run_demo_landscapes(comparison: Any, *, smoke: bool = False, seed: int = 0) -> LandscapeResult:
    """The section for a finished :class:`samlab.demo.Comparison`: its SGD and SAM checkpoints,
    evaluated on the training digits they were trained on (``--smoke``: the first 512)."""
    from samlab.demo import COMPARISON, SMOKE_TRAIN_SAMPLES
    from samlab.train.classify import CHECKPOINT_NAME

    checkpoints = {}
    for name in LANDSCAPE_MODELS:
        result = comparison.results.get(name)
        if result is None or result.output_dir is None:
            raise ValueError(f"the comparison has no saved {name!r} run to draw a landscape of")
        checkpoints[name] = Path(result.output_dir) / CHECKPOINT_NAME
    data_kwargs: dict[str, Any] = {"seed": seed}
    if smoke:
        data_kwargs["limit"] = SMOKE_TRAIN_SAMPLES
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
