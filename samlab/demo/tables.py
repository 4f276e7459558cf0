"""The demo's tables: CSV files with fixed columns, and fixed-width text tables to print."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape.io import atomic_write


def write_csv(
    path: Path,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    cell: Callable[[Any], Any] = lambda value: value,
) -> Path:
    """``path`` as CSV: a header of ``columns``, then one line per row (a mapping whose keys are
    among ``columns``), each value written as ``cell(value)``."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: cell(value) for key, value in row.items()})
    return atomic_write(path, text.getvalue())


def heading(columns: Sequence[tuple[str, str]]) -> str:
    """The header line of a text table: each ``(title, format spec)`` of ``columns`` padded by its
    spec (``"<12"``: left-aligned in 12 characters), separated by single spaces."""
    return " ".join(f"{title:{spec}}" for title, spec in columns)


def text_table(columns: Sequence[tuple[str, str]], lines: Iterable[str]) -> str:
    """A text table: the :func:`heading` of ``columns``, a rule of dashes as wide, ``lines``."""
    header = heading(columns)
    return "\n".join([header, "-" * len(header), *lines])
