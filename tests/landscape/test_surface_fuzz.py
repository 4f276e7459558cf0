"""Seeded fuzzing of a small surface file: ~150 corruptions (truncations, flipped bytes, extreme
values), each read by ``python -m landscape vtk`` (in this process) and by a resume
(``SurfaceWriter.open``).

Every case ends either in one ``error:`` line (exit status 1; a ``ValueError`` naming the file
from the library) or in a result equal to what h5py itself reads from the corrupted file, never
in a traceback. Half the cases corrupt a file written with ``fletcher32`` checksums (as landscape
writes them now: a flipped data byte is an error), half one written without (as before).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from landscape.cli import main  # noqa: E402
from landscape.grid import Surface  # noqa: E402
from landscape.io import SurfaceWriter, load_surface, save_surface  # noqa: E402
from landscape.io import layout as layout_module  # noqa: E402

SEED = 20261207
CASES = 150
EXTREMES = [np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324, 0.0, -0.0]


def small_surface() -> Surface:
    x, y = np.linspace(-1, 1, 4), np.linspace(-0.5, 0.5, 3)
    rng = np.random.default_rng(0)
    metrics = {
        "train_loss": rng.uniform(0.5, 3.0, (3, 4)),
        "train_acc": rng.uniform(0.0, 1.0, (3, 4)),
        "train_loss_se": rng.uniform(0.0, 0.1, (3, 4)),
        "train_acc_se": rng.uniform(0.0, 0.1, (3, 4)),
    }
    done = np.ones((3, 4), dtype=bool)
    done[2, 3] = False
    for values in metrics.values():
        values[~done] = np.nan
    provenance = {"model_sha256": "m" * 64, "data_sha256": "d" * 64, "loss_name": "crossentropy"}
    return Surface(x=x, y=y, metrics=metrics, done=done, provenance=provenance)


def corrupt(rng: np.random.Generator, clean: bytes, path: Path, case: int) -> str:
    """Write a corrupted copy of ``clean`` to ``path``; returns what was done."""
    kind = case % 5
    if kind == 0:  # truncation
        cut = int(rng.integers(0, len(clean)))
        path.write_bytes(clean[:cut])
        return f"truncated to {cut} bytes"
    if kind in (1, 2):  # flipped bytes anywhere
        raw = bytearray(clean)
        positions = rng.integers(0, len(raw), int(rng.integers(1, 9)))
        for position in positions:
            raw[position] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(raw))
        return f"flipped bytes at {sorted(positions.tolist())}"
    path.write_bytes(clean)
    with h5py.File(path, "r+") as f:
        if kind == 3:  # flipped bytes inside a dataset's stored data
            name = str(rng.choice(["train_loss", "train_acc", "done", "xcoordinates"]))
            offset = f[name].id.get_chunk_info(0).byte_offset
            size = f[name].id.get_chunk_info(0).size
        else:  # extreme values written properly
            name = str(rng.choice(["train_loss", "train_acc_se", "xcoordinates", "done"]))
            data = f[name][()]
            flat = data.reshape(-1)
            index = int(rng.integers(0, flat.size))
            if name == "done":
                flat[index] = int(rng.choice([0, 2, 255]))
            else:
                flat[index] = EXTREMES[int(rng.integers(0, len(EXTREMES)))]
            f[name][...] = data
            return f"{name}[{index}] = {flat[index]}"
    raw = bytearray(path.read_bytes())
    position = offset + int(rng.integers(0, size))
    raw[position] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(raw))
    return f"flipped byte {position} in the data of {name}"


def h5py_reading(path: Path) -> dict[str, np.ndarray]:
    """What h5py reads from the file, dataset by dataset (those it can read)."""
    values = {}
    with h5py.File(path, "r") as f:
        for name in f:
            try:
                values[name] = f[name][()]
            except Exception:  # noqa: BLE001 - the reference reader's own failures
                continue
    return values


def check_equal(surface: Surface, path: Path, what: str) -> None:
    reference = h5py_reading(path)
    np.testing.assert_array_equal(surface.x, reference["xcoordinates"], err_msg=what)
    np.testing.assert_array_equal(surface.y, reference["ycoordinates"], err_msg=what)
    np.testing.assert_array_equal(surface.done, reference["done"].astype(bool), err_msg=what)
    for name, values in surface.metrics.items():
        np.testing.assert_array_equal(values, reference[name], err_msg=what)


@pytest.mark.parametrize("checksums", [True, False], ids=["fletcher32", "no-checksums"])
def test_corrupted_surface_files_end_in_one_line_or_the_stored_values(
    tmp_path, capsys, monkeypatch, checksums
):
    clean_path = tmp_path / "clean.h5"
    if not checksums:  # a file as written before the checksums
        monkeypatch.setattr(layout_module, "CHECKSUMMED", {"chunks": True})
    surface = small_surface()
    save_surface(clean_path, surface)
    monkeypatch.undo()
    clean = clean_path.read_bytes()
    rng = np.random.default_rng(SEED + checksums)
    outcomes = {"error": 0, "equal": 0}
    for case in range(CASES // 2):
        path = tmp_path / f"case{case}.h5"
        what = corrupt(rng, clean, path, case)
        code = main(
            ["vtk", "--surf_file", str(path), "--output", str(tmp_path / "out.vtp")],
            prog="landscape",
        )
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, what
        if code == 0:
            check_equal(load_surface(path), path, what)
            outcomes["equal"] += 1
        else:
            assert code == 1, (what, captured.err)
            lines = [line for line in captured.err.splitlines() if "error:" in line]
            assert len(lines) == 1, (what, captured.err)
            assert captured.err.strip() == lines[0], (what, captured.err)
            outcomes["error"] += 1

        # A resume of the file (same grid and identity) reads it through the writer.
        copy = tmp_path / "resume.h5"
        shutil.copyfile(path, copy)
        try:
            writer = SurfaceWriter.open(
                copy,
                x=surface.x,
                y=surface.y,
                metric_names=sorted(surface.metrics),
                provenance=surface.provenance,
            )
        except (ValueError, FileNotFoundError) as err:
            assert str(copy) in str(err), (what, err)
        else:
            with writer:
                check_equal(writer.surface(), copy, what)
        copy.unlink()
    # The fuzzing reached both outcomes (the seed is fixed: this is deterministic).
    assert outcomes["error"] > 0 and outcomes["equal"] > 0, outcomes
