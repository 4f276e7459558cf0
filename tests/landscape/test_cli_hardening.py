"""``python -m landscape`` with damaged, malformed or mismatching input, interrupts and failing
writes: every case ends in one ``error:`` line (or the documented exit status), and no result
file is lost or half-written.

Each test reproduces a fault a new user met: a resume on other data values, a truncated file
reported as locked, a grid too large for the machine, a bit-flipped file, ``--plot`` on a grid
without cells, a JSON record holding a list, a full disk, ``MIN = MAX`` with several points,
an unexpected exception, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")
pytest.importorskip("matplotlib")

from landscape.curvature.batches import OperatorBatches  # noqa: E402
from landscape.evaluate import data_sha256  # noqa: E402
from landscape.io import atomic_write, load_surface  # noqa: E402
from landscape.io.layout import is_lock_error  # noqa: E402
from tests.landscape.cli_helpers import (  # noqa: E402
    COMMON,
    assert_one_line_error,
    run,
    surface_cmd,
)

GRID = ["--x", "-1:1:3", "--y", "-1:1:3"]


@pytest.fixture(autouse=True)
def workdir(cli_workdir):
    return cli_workdir


def surface(surf, *extra, data="_factories:data"):
    return run(*surface_cmd(surf, *extra, data=data))


def files_in(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name != "__pycache__")


# --------------------------------------------------------------------------------------------
# item 1: a surface is tied to the values of its data
# --------------------------------------------------------------------------------------------


def test_data_digest_is_canonical_and_shared_with_the_hessian_operator():
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(10, 3, generator=generator), torch.arange(10) % 2
    whole = data_sha256([(inputs, targets)])
    split = data_sha256([(inputs[:4], targets[:4]), (inputs[4:], targets[4:])])
    assert whole == split  # batching does not enter the digest
    changed = inputs.clone()
    changed[7, 1] += 1e-6
    assert data_sha256([(changed, targets)]) != whole
    assert data_sha256([(inputs, targets.flip(0))]) != whole
    for batch_size in (3, 10):
        batches = OperatorBatches.load(
            (inputs, targets),
            loss="crossentropy",
            device=torch.device("cpu"),
            dtype=torch.float32,
            batch_size=batch_size,
        )
        assert batches.sha256 == whole


def save_data(shift=0.0):
    inputs, targets = _factories_data()
    torch.save((inputs + shift, targets), "data.pt")


def _factories_data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(128, 1, 8, 8, generator=generator), torch.arange(128) % 4


def test_resume_on_other_data_values_is_refused(workdir, capsys):
    surf = workdir / "surf.h5"
    save_data()
    assert surface(surf, *GRID, data="_factories:saved_data") == 0
    reference = load_surface(surf)
    digest = reference.provenance["data_sha256"]
    assert len(digest) == 64
    # A run killed after 3 points: the rest is not done.
    with h5py.File(surf, "r+") as f:
        done = f["done"][()]
        done.reshape(-1)[3:] = 0
        f["done"][...] = done
    capsys.readouterr()

    # The data file changed (same factory, sizes and indices, other values): refused, naming
    # what changed and the ways out.
    save_data(shift=0.01)
    code = surface(surf, *GRID, data="_factories:saved_data")
    line = assert_one_line_error(capsys, code, 1, str(surf), "other data values", "--overwrite")
    assert "--surf_file" in line
    assert int(load_surface(surf).done.sum()) == 3

    # The same data resume and give the uninterrupted surface.
    save_data()
    assert surface(surf, *GRID, data="_factories:saved_data") == 0
    assert "3 already done, 6 to compute" in capsys.readouterr().out
    resumed = load_surface(surf)
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values)

    # --overwrite starts afresh on the new data.
    save_data(shift=0.01)
    assert surface(surf, *GRID, "--overwrite", data="_factories:saved_data") == 0
    assert load_surface(surf).provenance["data_sha256"] != digest


def test_file_without_a_data_digest_is_accepted_once_and_stamped(workdir, capsys):
    surf = workdir / "old.h5"
    save_data()
    assert surface(surf, *GRID, data="_factories:saved_data") == 0
    digest = load_surface(surf).provenance["data_sha256"]
    with h5py.File(surf, "r+") as f:  # as written before the digest existed
        del f.attrs["data_sha256"], f.attrs["data_digest"]
    capsys.readouterr()

    assert surface(surf, *GRID, data="_factories:saved_data") == 0  # the finished file is kept
    out = capsys.readouterr().out
    assert "9 already done, 0 to compute" in out and "stamped" in out
    assert load_surface(surf).provenance["data_sha256"] == digest

    # An eigenvalue map's digest of the older, batch-wise kind: replaced once, then checked.
    with h5py.File(surf, "r+") as f:
        f.attrs["data_sha256"] = "0" * 64
        del f.attrs["data_digest"]
    assert surface(surf, *GRID, data="_factories:saved_data") == 0
    assert "stamped" in capsys.readouterr().out
    assert load_surface(surf).provenance["data_sha256"] == digest

    save_data(shift=0.01)  # from now on, checked
    code = surface(surf, *GRID, data="_factories:saved_data")
    assert_one_line_error(capsys, code, 1, "other data values")


# --------------------------------------------------------------------------------------------
# items 6 and 9: truncated and bit-flipped files
# --------------------------------------------------------------------------------------------


def test_truncated_file_is_not_reported_as_locked(workdir, capsys):
    surf = workdir / "cut.h5"
    assert surface(surf, *GRID) == 0
    data = surf.read_bytes()
    surf.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    for argv in (
        ["plot", "--surf_file", surf],
        ["vtk", "--surf_file", surf],
        ["surface", "--model", "_factories:cnn", "--data", "_factories:data"]
        + ["--surf_file", surf, *COMMON, *GRID],
    ):
        line = assert_one_line_error(capsys, run(*argv), 1, str(surf), "truncated")
        assert "lock" not in line.replace("sblock", "")
    # The exact text of HDF5's lock error is still recognised.
    assert is_lock_error(OSError("unable to lock file, errno = 11, error message = 'x'"))
    assert not is_lock_error(OSError("truncated file: eof = 96, sblock->base_addr = 0"))


def test_flipped_byte_in_a_metric_is_caught_by_the_checksum(workdir, capsys):
    surf = workdir / "flip.h5"
    assert surface(surf, *GRID) == 0
    with h5py.File(surf, "r") as f:
        dataset = f["train_loss"]
        assert dataset.fletcher32 and dataset.chunks is not None
        assert f["done"].fletcher32 and f["xcoordinates"].fletcher32
        offset = dataset.id.get_chunk_info(0).byte_offset
    raw = bytearray(surf.read_bytes())
    raw[offset + 3] ^= 0x10
    surf.write_bytes(bytes(raw))
    capsys.readouterr()
    for argv in (["plot", "--surf_file", surf], ["vtk", "--surf_file", surf]):
        assert_one_line_error(capsys, run(*argv), 1, str(surf), "checksum")
    code = surface(surf, *GRID)
    assert_one_line_error(capsys, code, 1, str(surf), "checksum")
    assert surf.read_bytes() == bytes(raw)  # never rewritten


# --------------------------------------------------------------------------------------------
# items 7, 9 and 13: refused up front, before any file
# --------------------------------------------------------------------------------------------


def test_grid_too_large_is_refused_before_any_file(workdir, capsys):
    before = files_in(workdir)
    code = surface(workdir / "huge.h5", "--x", "-1:1:100000000", "--y", "-1:1:100000000")
    needles = ("10,000,000,000,000,000 points", "memory", "fewer")
    line = assert_one_line_error(capsys, code, 1, *needles)
    assert "EiB" in line or "ZiB" in line or "PiB" in line
    assert files_in(workdir) == before


def test_min_equal_max_with_several_points_is_refused(capsys):
    code = surface("same.h5", "--x", "1:1:5")
    assert_one_line_error(capsys, code, 2, "--x", "same point")
    assert not Path("same.h5").exists()


def test_plot_on_a_grid_without_cells_is_refused_up_front(workdir, capsys):
    before = files_in(workdir)
    code = surface(workdir / "one.h5", "--x", "0:0:1", "--y", "0:0:1", "--plot")
    assert_one_line_error(capsys, code, 1, "--plot", "at least 2 points")
    assert files_in(workdir) == before
    # A 1 x 1 surface (computed without --plot) given to plot: one line as well.
    assert surface(workdir / "one.h5", "--x", "0:0:1", "--y", "0:0:1") == 0
    capsys.readouterr()
    assert_one_line_error(capsys, run("plot", "--surf_file", workdir / "one.h5"), 1, "1 x 1")


def test_json_record_holding_a_list_is_refused_and_kept(workdir, capsys):
    surf = workdir / "rec.h5"
    sidecar = workdir / "rec.h5.json"
    sidecar.write_text("[1, 2, 3]\n")
    before = files_in(workdir)
    code = surface(surf, *GRID)
    assert_one_line_error(capsys, code, 1, str(sidecar), "holds list", "--overwrite")
    assert sidecar.read_text() == "[1, 2, 3]\n" and files_in(workdir) == before
    sidecar.write_text('{"runs": [{"computed_points": 1}')  # truncated JSON
    assert_one_line_error(capsys, surface(surf, *GRID), 1, str(sidecar), "not readable JSON")
    assert surface(surf, *GRID, "--overwrite") == 0  # a new record
    assert len(json.loads(sidecar.read_text())["runs"]) == 1


# --------------------------------------------------------------------------------------------
# item 10: atomic, durable writes; a full disk or an unwritable output
# --------------------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(workdir, monkeypatch):
    target = workdir / "result.json"
    atomic_write(target, '{"old": 1}\n')
    names = set()
    real_replace = os.replace

    def spy(src, dst):
        names.add(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write(target, "a")
    atomic_write(target, "b")
    assert len(names) == 2 and all(f".{os.getpid()}." in name for name in names)
    atomic_write(target, '{"old": 1}\n')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic_write(target, '{"new": 2}\n')
    assert caught.value.errno == errno.ENOSPC and str(target) in str(caught.value)
    assert target.read_text() == '{"old": 1}\n'
    assert files_in(workdir) == ["_factories.py", "result.json"]


def test_full_disk_and_unwritable_output_end_in_one_line(workdir, capsys, monkeypatch):
    surf = workdir / "disk.h5"
    assert surface(surf, *GRID) == 0
    record = (workdir / "disk.h5.json").read_text()
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code = surface(surf, *GRID)  # the record written at the end fails
    assert_one_line_error(capsys, code, 1, "disk.h5.json", "No space left on device")
    monkeypatch.undo()
    assert (workdir / "disk.h5.json").read_text() == record  # nothing lost
    assert load_surface(surf).done.all()
    assert not [name for name in files_in(workdir) if name.endswith(".tmp")]

    (workdir / "afile").write_text("")
    code = surface(workdir / "afile" / "s.h5", *GRID)
    assert_one_line_error(capsys, code, 1, "afile")


# --------------------------------------------------------------------------------------------
# one line, never a traceback; interrupts
# --------------------------------------------------------------------------------------------


def test_unexpected_exception_is_one_line_with_the_debug_hint(capsys, monkeypatch):
    code = surface("x.h5", *GRID, data="_factories:broken_data")
    assert_one_line_error(
        capsys,
        code,
        1,
        "RuntimeError: the data server went away",
        "(run with SAMLAB_DEBUG=1 for the traceback)",
    )
    monkeypatch.setenv("SAMLAB_DEBUG", "1")
    with pytest.raises(RuntimeError, match="data server"):
        surface("x.h5", *GRID, data="_factories:broken_data")


def test_ctrl_c_exits_130_with_one_line(capsys):
    code = surface("x.h5", *GRID, data="_factories:interrupting_data")
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "landscape surface: interrupted (Ctrl-C); every point computed so far is kept in the "
        "file: rerun the same command to resume"
    ]


def test_sigterm_exits_143_and_leaves_a_resumable_file(workdir):
    surf = workdir / "term.h5"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    env.update(OMP_NUM_THREADS="1", LANDSCAPE_TEST_SLEEP="0.02", PYTHONDONTWRITEBYTECODE="1")
    argv = ["surface", "--model", "_factories:cnn", "--data", "_factories:data"]
    argv += ["--surf_file", str(surf), *COMMON, "--x", "-1:1:61", "--chunk_size", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "landscape", *argv],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        line = process.stdout.readline()
        if line.startswith("surface:"):  # the file exists: points are being computed
            time.sleep(1.0)
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .endswith(
            "terminated (SIGTERM); every point computed so far is kept in the file: rerun the "
            "same command to resume"
        )
    )
    partial = load_surface(surf)  # consistent: opens, every done point finite
    assert 0 < partial.done.sum() < 61
    assert np.isfinite(partial.metrics["train_loss"][partial.done]).all()
    assert surface(surf, "--x", "-1:1:61") == 0
    assert load_surface(surf).done.all()


def test_a_sigterm_dropped_inside_a_finalizer_still_stops_the_command(capsys):
    """SIGTERM arriving while a finalizer runs raises there, where Python drops the exception
    (printing a traceback); the command must stop anyway, without that traceback."""
    from landscape.cli import exits

    class Finalized:
        def __del__(self):
            raise exits.Terminated("signal 15")  # what the handler raises inside a finalizer

    start = time.monotonic()
    with pytest.raises(exits.Terminated):
        with exits.sigterm_as_exception():
            Finalized()  # collected at once: the exception is dropped
            time.sleep(30)  # the signal sent again interrupts this
    assert time.monotonic() - start < 10
    assert "Traceback" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


@pytest.mark.parametrize("device", ["bogus", "meta", "mps", "cpu:x"])
def test_a_device_other_than_cpu_or_cuda_is_refused_in_one_line(device):
    from landscape import resolve_device

    with pytest.raises(ValueError, match=r"must be cpu, cuda or cuda:N"):
        resolve_device(device)
