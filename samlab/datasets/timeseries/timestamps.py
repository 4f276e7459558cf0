"""The ``date`` column of a forecasting CSV: parsed to seconds and checked strictly increasing.

Accepted forms (those of the Autoformer-format benchmarks): ``YYYY-MM-DD HH:MM:SS`` (ETT,
weather, electricity, traffic; ``T`` or a space between date and time), ``YYYY/M/D H:MM``
(exchange_rate), with ``-`` or ``/`` between the date's parts, the time optional and its
seconds optional (fractions allowed). A row whose date is not one of these, or is not later
than the row before, is an error naming the row: a file with shuffled, repeated or damaged
dates would otherwise be windowed across the gap.
"""

from __future__ import annotations

import datetime as _dt
import re

import numpy as np

_DATE = re.compile(
    r"\s*(\d{4})[-/](\d{1,2})[-/](\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?\s*$"
)
_EPOCH = _dt.datetime(1970, 1, 1)


def _seconds(text: str) -> float | None:
    match = _DATE.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        moment = _dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:  # e.g. month 13, 31 February
        return None
    return (moment - _EPOCH).total_seconds() + (float(fraction) if fraction else 0.0)


def parse_timestamps(dates: list[str]) -> tuple[np.ndarray, int | None]:
    """Seconds since 1970 of each date (float64) and the index of the first unreadable one
    (``None`` when all parse). ISO dates take numpy's vectorised parser; other forms (or a
    failure there) the per-row one."""
    try:
        stamps = np.array(dates, dtype="datetime64[us]")
        if not np.isnat(stamps).any():
            return (stamps - np.datetime64(0, "us")).astype(np.float64) / 1e6, None
    except ValueError:
        pass
    out = np.empty(len(dates), dtype=np.float64)
    for index, text in enumerate(dates):
        value = _seconds(text)
        if value is None:
            return out[:index], index
        out[index] = value
    return out, None


def check_dates(dates: list[str]) -> str | None:
    """``None`` when every date parses and each is later than the one before; else what is
    wrong, naming the first bad data row (1-based; line = row + 1)."""
    seconds, bad = parse_timestamps(dates)
    if bad is not None:
        return (
            f"data row {bad + 1} (line {bad + 2}): date {dates[bad].strip()!r} is not a "
            "timestamp (expected YYYY-MM-DD[ HH:MM[:SS]], '/' also accepted)"
        )
    steps = np.diff(seconds)
    if steps.size and not (steps > 0).all():
        row = int(np.argmax(~(steps > 0))) + 2
        return (
            f"data row {row} (line {row + 1}): date {dates[row - 1].strip()!r} is not later than "
            f"the row before ({dates[row - 2].strip()!r}); the dates must increase strictly"
        )
    return None
