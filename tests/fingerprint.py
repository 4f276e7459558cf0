"""Behaviour fingerprint: run samlab's public commands and hash every non-timing result.

Used to show that a refactor changes no behaviour: run it before and after on the same machine
and compare the two JSON files::

    python tests/fingerprint.py run --out before.json   # at the old commit
    python tests/fingerprint.py run --out after.json    # at the new one
    python tests/fingerprint.py compare before.json after.json

``run`` executes, each with a fresh output folder:

* the demo (``python -m samlab.demo``; ``--smoke`` with ``--quick``): every optimizer's
  checkpoint, the surfaces on 2 MPI ranks, sharpness and forecast tables;
* the landscape command line on the demo's SAM checkpoint: a 2-D surface on 1 process and on
  2 MPI ranks (eager), a compiled 2-D surface and a 1-D slice;
* forecast smoke runs (SAMformer eager with ``--sharpness``, SAMformer ``--compile``, TSMixer);
* every registry optimizer for a few steps under each ``impl`` (in process, float64 and
  float32, two param groups), hashing parameters and ``state_dict`` tensors.

Hashed: every HDF5 dataset (metric arrays, ``done`` masks, coordinates, directions), every
tensor of every checkpoint (``.pt``), every CSV column and JSON value, except the fields that
measure time, come from timing probes or name versions (:data:`EXCLUDED`). Those are listed
here; everything else must be equal bit for bit. Not a test (it runs for minutes): pytest does
not collect it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: field names (CSV columns, JSON keys at any depth) whose values are timings, timing-probe
#: results, host facts or version strings; compared by presence only
EXCLUDED = (
    "seconds",
    "seconds_vs_sgd",
    "cpu_seconds",
    "seconds_per_epoch",
    "epoch_seconds",
    "wall_s",
    "busy_s",
    "time",
    "elapsed",
    "compile_seconds",
    "forward_chunk_probe",
    "forward_chunk_choice",
    "auto_vmap_probe",
    "compiled_probe",
    "probe",
    "versions",
    "torch",
    "numpy",
    "samlab",
    "landscape",
    "python",
    "host",
    "hostname",
    "platform",
    "created",
    "date",
    "command",
    "argv",
    "path",
    "checkpoint",
    "model_file",
    "dir_file",
    "surf_file",
    "output",
    "output_dir",
    "data_dir",
    "ranks",  # MPI's dynamic schedule: which rank took how many points varies run to run
    "checkpoint_sha256",  # the file holds the epoch timings too (its tensors are compared)
)
#: patterns of field names excluded in the same way (timings named by unit)
EXCLUDED_PATTERNS = (r".*_seconds$", r".*_s$", r"^seconds_.*", r".*_time$", r".*timing.*")

#: values that name a moved public object: (before, after) pairs compared as equal and counted
#: apart (the demo's evaluation data factory moved to samlab.datasets in 0.2.0)
RENAMED = {
    ("'samlab._demo_landscape:digits_eval_data'", "'samlab.datasets:digits_eval_data'"),
}

ROOT = Path(__file__).resolve().parents[1]


def excluded(name: str) -> bool:
    """True for a field whose value is a timing, probe result, path or version."""
    return name in EXCLUDED or any(re.fullmatch(p, name) for p in EXCLUDED_PATTERNS)


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    head = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(head + array.tobytes()).hexdigest()[:24]


# ------------------------------------------------------------------------------ file readers
def _h5(path: Path) -> dict[str, str]:
    import h5py

    out: dict[str, str] = {}
    with h5py.File(path, "r") as handle:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                if isinstance(value, bytes):
                    return  # provenance strings (JSON with timings, commands, versions)
                out[name] = _digest(np.asarray(value))

        handle.visititems(visit)
    return out


def _tensors(value: Any, prefix: str, out: dict[str, str]) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        out[prefix] = _digest(value.detach().cpu().numpy())
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and excluded(key):
                continue
            _tensors(item, f"{prefix}.{key}", out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _tensors(item, f"{prefix}[{i}]", out)
    elif isinstance(value, str) and value[:1] in "[{":
        try:
            _json_items(json.loads(value), prefix, out)  # e.g. a history stored as JSON text
        except json.JSONDecodeError:
            out[prefix] = repr(value)
    elif isinstance(value, (int, float, bool, str)) or value is None:
        out[prefix] = repr(value)


def _pt(path: Path) -> dict[str, str]:
    import torch

    out: dict[str, str] = {}
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        for key in ("model", "optimizer", "scheduler", "epoch", "step", "best"):
            if key in data:
                _tensors(data[key], key, out)
        for key, value in data.items():
            if key not in out and key not in ("config", "rng") and not excluded(str(key)):
                _tensors(value, str(key), out)
    else:
        _tensors(data, "state", out)
    return out


def _csv(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    out = {}
    for column in rows[0]:
        if column is None or excluded(column):
            continue
        out[column] = "|".join(str(r.get(column)) for r in rows)
    return out


def _json_items(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not excluded(str(key)):
                _json_items(item, f"{prefix}.{key}", out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_items(item, f"{prefix}[{i}]", out)
    else:
        out[prefix] = repr(value)


def _json(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        _json_items(json.loads(path.read_text()), "", out)
    except json.JSONDecodeError:
        out["<unreadable>"] = "1"
    return out


READERS = {".h5": _h5, ".pt": _pt, ".csv": _csv, ".json": _json}


def fingerprint_tree(folder: Path) -> dict[str, dict[str, str]]:
    """``{relative file path: {field: digest}}`` for every readable result under ``folder``."""
    result = {}
    for path in sorted(folder.rglob("*")):
        reader = READERS.get(path.suffix)
        if reader is None or not path.is_file():
            continue
        result[str(path.relative_to(folder))] = reader(path)
    return result


# ------------------------------------------------------------------------------ scenarios
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONHASHSEED"] = "0"
    return env


def _run(command: list[str], cwd: Path, *, threads: int | None = None) -> None:
    env = _env()
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(command)}")


def _data_factory() -> str:
    """The digits evaluation data factory, wherever this version of samlab defines it."""
    import importlib

    for module, name in (("samlab.datasets", "digits_eval_data"),):
        if hasattr(importlib.import_module(module), name):
            return f"{module}:{name}"
    return "samlab._demo_landscape:digits_eval_data"


def _landscape(work: Path, checkpoint: Path) -> None:
    py = sys.executable
    mpiexec = Path(py).parent / "mpiexec"
    common = [
        "--model", "samlab.models:digits_cnn", "--model_file", str(checkpoint),
        "--data", _data_factory(), "--subset", "256", "--batch_size", "64", "--no_progress",
        "--seed", "3",
    ]  # fmt: skip
    grid = ["--x=-1:1:9", "--y=-1:1:9"]
    dirs = str(work / "dirs.h5")
    _run([py, "-m", "landscape", "surface", *common, *grid, "--dir_file", dirs,
          "--surf_file", str(work / "one_rank.h5")], work, threads=1)  # fmt: skip
    if mpiexec.is_file():
        _run([str(mpiexec), "-n", "2", py, "-m", "mpi4py", "-m", "landscape", "surface",
              *common, *grid, "--dir_file", dirs, "--surf_file", str(work / "two_ranks.h5"),
              "--mpi"], work, threads=1)  # fmt: skip
    _run([py, "-m", "landscape", "surface", *common, *grid, "--dir_file", dirs, "--mode",
          "compiled", "--surf_file", str(work / "compiled.h5")], work, threads=1)  # fmt: skip
    _run([py, "-m", "landscape", "surface", *common, "--x=-0.5:0.5:11", "--dir_file", dirs,
          "--surf_file", str(work / "one_d.h5")], work, threads=1)  # fmt: skip


def _forecast(work: Path) -> None:
    py = sys.executable
    base = [py, "-m", "samlab.train.forecast", "--smoke", "--quiet", "--threads", "1"]
    _run([*base, "--output", str(work / "samformer"), "--sharpness"], work)
    _run([*base, "--output", str(work / "compiled"), "--compile"], work)
    _run([*base, "--output", str(work / "tsmixer"), "--model", "tsmixer", "--rho", "0.7"], work)


def optimizer_runs() -> dict[str, dict[str, str]]:
    """Every registry optimizer x impl x dtype: parameters and state after a few steps."""
    import torch

    from samlab.optim import create_optimizer, get_optimizer_info, list_optimizers

    torch.set_num_threads(1)
    out: dict[str, dict[str, str]] = {}
    for name in (*list_optimizers(), "sam-adam"):
        family = name == "sam-adam" or get_optimizer_info(name).sam_family
        for impl in ("loop", "foreach", "compiled") if family else ("default",):
            for dtype in (torch.float64, torch.float32):
                torch.manual_seed(0)
                model = torch.nn.Sequential(
                    torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
                ).to(dtype)
                groups = [
                    {"params": list(model[0].parameters())},
                    {"params": list(model[2].parameters()), "lr": 0.05},
                ]
                kwargs: dict[str, Any] = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
                if name in ("adam", "adamw"):
                    kwargs = {"lr": 0.01}
                if family:
                    kwargs["impl"] = impl
                if get_optimizer_info(name).samples_weights:
                    kwargs["num_data"] = 32  # bSAM's N
                opt = create_optimizer(name, groups, **kwargs)
                x = torch.randn(32, 6, dtype=dtype)
                y = torch.randint(0, 3, (32,))

                def closure(opt=opt, model=model, x=x, y=y):
                    opt.zero_grad()
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    loss.backward()
                    return loss

                losses = [float(opt.step(closure).detach()) for _ in range(6)]
                record: dict[str, str] = {"losses": repr(losses)}
                for key, value in model.state_dict().items():
                    record[f"param.{key}"] = _digest(value.numpy())
                _tensors(opt.state_dict(), "state", record)
                out[f"{name}/{impl}/{str(dtype)[6:]}"] = record
    return out


def run(out: Path, quick: bool) -> None:
    """All scenarios, each in a fresh folder; writes ``{scenario: {file: {field: digest}}}``."""
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="samlab-fingerprint-") as tmp:
        tmp_path = Path(tmp)
        demo = tmp_path / "demo"
        flags = ["--smoke"] if quick else []
        _run([py, "-m", "samlab.demo", "--output", str(demo), *flags], ROOT)
        checkpoints = sorted(demo.rglob("sam/last.pt"))
        if not checkpoints:
            raise SystemExit("the demo wrote no sam/last.pt")
        cli = tmp_path / "cli"
        cli.mkdir()
        _landscape(cli, checkpoints[0])
        forecast = tmp_path / "forecast"
        forecast.mkdir()
        _forecast(forecast)
        result = {
            "demo": fingerprint_tree(demo),
            "landscape_cli": fingerprint_tree(cli),
            "forecast": fingerprint_tree(forecast),
            "optimizers": optimizer_runs(),
        }
        if os.environ.get("SAMLAB_FINGERPRINT_KEEP"):
            keep = Path(os.environ["SAMLAB_FINGERPRINT_KEEP"])
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(tmp_path, keep)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    fields = sum(len(f) for s in result.values() for f in s.values())
    print(f"wrote {out}: {sum(len(s) for s in result.values())} files/runs, {fields} fields")


def compare(a: Path, b: Path) -> int:
    """Print every field that differs or exists on one side only; exit status 1 if any."""
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    problems = 0
    compared = 0
    renamed = 0
    for scenario in sorted(set(left) | set(right)):
        files_a, files_b = left.get(scenario, {}), right.get(scenario, {})
        for name in sorted(set(files_a) | set(files_b)):
            if name not in files_a or name not in files_b:
                print(f"{scenario}/{name}: only in {'after' if name in files_b else 'before'}")
                problems += 1
                continue
            fa, fb = files_a[name], files_b[name]
            for field in sorted(set(fa) | set(fb)):
                compared += 1
                if (fa.get(field), fb.get(field)) in RENAMED:
                    renamed += 1
                elif fa.get(field) != fb.get(field):
                    print(f"{scenario}/{name} {field}: {fa.get(field)} != {fb.get(field)}")
                    problems += 1
    print(f"{compared} fields compared, {problems} differ, {renamed} name a moved object")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--quick", action="store_true", help="the demo's --smoke profile")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.out, args.quick)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    raise SystemExit(main())
