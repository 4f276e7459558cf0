"""Reading a forecasting CSV: parsing and its errors.

:func:`read_series` parses an Autoformer-format file (plain or ``.gz``; LF, CRLF or CR line ends)
into the channel names and a float64 array; when the fast parse fails or finds a NaN, the slow
path :func:`_locate_bad_cell` names the first bad row or cell. The structure is checked before
any value is used: ``date`` first, every row with the header's field count, every value finite,
the dates strictly increasing (:mod:`~samlab.datasets.timeseries.timestamps`); a damaged or
truncated ``.gz`` is a ``ValueError`` naming the file. :func:`read_cached` memoises the parse per
file version (resolved path, mtime, size).
"""

from __future__ import annotations

import csv
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from samlab.datasets.timeseries.timestamps import check_dates


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
            lines = fh.read().split("\n")  # universal newlines: LF, CRLF and CR read alike
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(
            f"{path}: damaged or truncated gzip file ({err or type(err).__name__}); fetch the "
            "file again (or decompress a good copy)"
        ) from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _locate_bad_cell(columns: list[str], body: list[str]) -> str:
    """Describe the first malformed row or cell (the slow path, run only after a failure)."""
    width = len(columns) + 1
    for row, fields in enumerate(csv.reader(body), start=1):
        where = f"data row {row} (line {row + 1})"
        if len(fields) != width:
            return f"{where} has {len(fields)} fields, the header has {width}"
        for name, cell in zip(columns, fields[1:]):
            text = cell.strip()
            if not text:
                return f"empty cell at {where}, column {name!r}"
            try:
                value = float(text)
            except ValueError:
                return f"non-numeric cell {cell!r} at {where}, column {name!r}"
            if not np.isfinite(value):
                return f"NaN or infinite cell {cell!r} at {where}, column {name!r}"
    return "unreadable numeric data"


def read_series(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Parse an Autoformer-format CSV (``.gz`` by suffix).

    Returns the channel names (the header after ``date``, as opaque text) and a float64
    ``(n_rows, n_channels)`` array. Raises ``ValueError`` naming the file for a missing ``date``
    column, empty/NaN/infinite/non-numeric cells (with row and column), ragged rows, dates that
    are not timestamps or do not increase strictly, files without data rows and damaged
    ``.gz`` files.
    """
    path = Path(path)
    lines = _read_lines(path)
    header = [h.strip() for h in next(csv.reader(lines[:1]), [])]
    if not header or header[0].lower() != "date":
        raise ValueError(f"{path}: the first column must be 'date', header is {header[:3]}...")
    columns, body = header[1:], lines[1:]
    if not columns:
        raise ValueError(f"{path}: no numeric columns after 'date'")
    if not body:
        raise ValueError(f"{path}: no data rows")
    try:
        values = np.loadtxt(
            body, delimiter=",", usecols=range(1, len(header)), comments=None, ndmin=2
        )
    except ValueError:
        values = None
    ragged = values is not None and any(line.count(",") != len(columns) for line in body)
    if values is None or ragged or not np.isfinite(values).all():
        raise ValueError(f"{path}: {_locate_bad_cell(columns, body)}")
    problem = check_dates([line.split(",", 1)[0] for line in body])
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    return columns, values


_CACHE: dict[tuple[str, int, int], tuple[list[str], np.ndarray]] = {}


def read_cached(path: Path) -> tuple[list[str], np.ndarray]:
    """:func:`read_series` memoised by resolved path, mtime and size (values read-only)."""
    path = path.resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        columns, values = read_series(path)
        values.flags.writeable = False
        for old in [k for k in _CACHE if k[0] == key[0]]:
            del _CACHE[old]
        _CACHE[key] = (columns, values)
    return _CACHE[key]
