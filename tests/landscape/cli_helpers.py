"""What the landscape CLI tests share: running ``landscape.cli.main`` in-process, the surface
command on the test factories, and the one-error-line check of a refused command.

Import from tests as ``from tests.landscape.cli_helpers import run, surface_cmd``.
"""

from __future__ import annotations

from landscape.cli import main

#: flags every test surface uses: small batches, one thread, no progress bars
COMMON = ["--batch_size", "64", "--threads", "1", "--no_progress"]


def run(*argv):
    """``python -m landscape ARGV`` in this process; returns the exit status."""
    return main([str(a) for a in argv], prog="landscape")


def surface_cmd(surf_file, *extra, model="_factories:cnn", data="_factories:data"):
    """The argv of a surface of the test factories' CNN into ``surf_file``."""
    return ["surface", "--model", model, "--data", data, "--surf_file", surf_file, *COMMON, *extra]


def assert_one_line_error(capsys, code, expected_code, *needles):
    """The command exited with ``expected_code`` and printed exactly one ``error:`` line, no
    traceback, containing every one of ``needles``; returns that line."""
    captured = capsys.readouterr()
    assert code == expected_code, captured.err
    assert "Traceback" not in captured.err
    error_lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, captured.err
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]
    return error_lines[0]
