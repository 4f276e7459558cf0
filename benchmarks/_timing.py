"""Interleaved, paired-ratio timing shared by the benchmarks in ``benchmarks/``.

The method, in one place:

* Every arm is a callable that does one unit of work (one optimizer step, one grid point, ...).
  ``per_call`` says how many units one call does (a LookSAM cycle of ``k`` steps), and the
  seconds are divided by it.
* A warm-up phase runs first, round-robin, ``warmup`` calls per arm (an arm may ask for more);
  it absorbs one-time costs (``torch.compile`` compilation, first-touch allocation, oneDNN
  primitive creation) and is excluded from every statistic. Its excess over the steady time
  is reported separately (``ArmResult.warmup_excess``).
* Then ``repeats`` rounds; in each round every arm runs once, in an order rotated by one
  position per round, so that no arm always runs first or always after the same neighbour.
* Within each round the arm's time is divided by the baseline arm's time of *that same round*
  (a paired ratio): slow drift of a shared machine cancels. The figures are the median of
  these ratios, their quartiles and their min-max.
* A full garbage collection runs before every round (not before every call: with compiled
  code around it can take a second) and the collector is disabled during a call; an optional
  ``setup`` callable runs untimed before every call of its arm; an optional ``sync`` (e.g.
  ``torch.cuda.synchronize``) runs before the clock is read on both sides.
* The clock is ``timer`` (wall time by default). On a shared machine, process CPU time
  (``time.process_time``) of a one-thread benchmark is far steadier than wall time, which
  also counts the time other processes held the core; ``extra_timers`` record further clocks
  (e.g. wall time next to CPU time) on the same calls.

Nothing here imports torch; ``format_markdown_table`` renders rows for the reports and
:class:`Report` prints a report's lines as they come and keeps them for its markdown file.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Arm",
    "ArmResult",
    "format_markdown_table",
    "quartiles",
    "run_interleaved",
]


@dataclass
class Arm:
    """One contender: ``fn()`` does ``per_call`` units of work.

    Attributes:
        name: label in tables.
        fn: the timed callable.
        setup: untimed callable run before every call of ``fn`` (warm-up included).
        per_call: units of work per call; reported seconds are per unit.
        warmup: warm-up calls for this arm (None: the runner's default).
        info: free-form metadata carried into the result (target, notes, ...).
    """

    name: str
    fn: Callable[[], Any]
    setup: Callable[[], Any] | None = None
    per_call: int = 1
    warmup: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ArmResult:
    """Timings of one arm: seconds per unit, warm-up seconds per unit, paired ratios (all from
    the primary clock); ``extra`` / ``extra_warmup`` hold the same per extra clock."""

    name: str
    seconds: list[float]
    warmup_seconds: list[float]
    ratios: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, list[float]] = field(default_factory=dict)
    extra_warmup: dict[str, list[float]] = field(default_factory=dict)

    def median_of(self, clock: str | None = None) -> float:
        """Median seconds per unit on ``clock`` (None: the primary clock)."""
        return statistics.median(self.seconds if clock is None else self.extra[clock])

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_quartiles(self) -> tuple[float, float]:
        return quartiles(self.ratios)

    @property
    def ratio_range(self) -> tuple[float, float]:
        return min(self.ratios), max(self.ratios)

    @property
    def first_call_seconds(self) -> float | None:
        """Seconds per unit of the first warm-up call (None without warm-up)."""
        return self.warmup_seconds[0] if self.warmup_seconds else None

    def warmup_excess(self, clock: str | None = None) -> float:
        """Seconds of the warm-up calls beyond the steady median, summed over them (one-time
        costs such as compilation; noise for arms without any), on ``clock``."""
        warm = self.warmup_seconds if clock is None else self.extra_warmup[clock]
        if not warm:
            return 0.0
        per_unit_excess = sum(warm) - len(warm) * self.median_of(clock)
        return per_unit_excess * int(self.info.get("per_call", 1))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3) with linear interpolation between order statistics (numpy's default)."""
    if len(values) == 1:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def _timed_call(
    arm: Arm, timers: Sequence[Callable[[], float]], sync: Callable[[], Any] | None
) -> list[float]:
    """Seconds per unit of one call of ``arm`` on each of ``timers``."""
    if arm.setup is not None:
        arm.setup()
    gc.disable()
    try:
        if sync is not None:
            sync()
        start = [t() for t in timers]
        arm.fn()
        if sync is not None:
            sync()
        stop = [t() for t in timers]
        return [(b - a) / arm.per_call for a, b in zip(start, stop)]
    finally:
        gc.enable()


def run_interleaved(
    arms: Sequence[Arm],
    *,
    repeats: int,
    baseline: str | None = None,
    warmup: int = 1,
    rotate: bool = True,
    timer: Callable[[], float] = time.perf_counter,
    extra_timers: dict[str, Callable[[], float]] | None = None,
    sync: Callable[[], Any] | None = None,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, ArmResult]:
    """Run ``arms`` round-robin and return one :class:`ArmResult` per arm (in arm order).

    Args:
        arms: the contenders (names must be unique).
        repeats: measured rounds (each arm runs once per round).
        baseline: name of the arm that ratios are taken against (default: the first arm).
        warmup: warm-up calls per arm, excluded (an arm's own ``warmup`` overrides it).
        rotate: rotate the order by one position per round (warm-up rounds too).
        timer: the primary clock (seconds): ratios and ``seconds`` come from it.
        extra_timers: further clocks by name, read on the same calls (``ArmResult.extra``).
        sync: called before starting and before stopping the clock (device queues).
        progress: called with a short line after each round (e.g. ``print``).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    base = baseline if baseline is not None else names[0]
    if base not in names:
        raise ValueError(f"baseline {base!r} is not an arm ({names})")
    n = len(arms)
    extra_names = list(extra_timers or {})
    timers = [timer, *(extra_timers or {}).values()]

    def order(round_index: int) -> list[Arm]:
        shift = round_index % n if rotate else 0
        return list(arms[shift:]) + list(arms[:shift])

    # per arm: one list of per-call readings [primary, *extra]
    warm: dict[str, list[list[float]]] = {name: [] for name in names}
    rounds = max((arm.warmup if arm.warmup is not None else warmup) for arm in arms)
    for r in range(rounds):
        gc.collect()
        for arm in order(r):
            wanted = arm.warmup if arm.warmup is not None else warmup
            if len(warm[arm.name]) < wanted:
                warm[arm.name].append(_timed_call(arm, timers, sync))
        if progress is not None:
            progress(f"warm-up round {r + 1}/{rounds} done")

    timed: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(repeats):
        gc.collect()
        for arm in order(r):
            timed[arm.name].append(_timed_call(arm, timers, sync))
        if progress is not None:
            progress(f"round {r + 1}/{repeats}: {base} {timed[base][-1][0]:.4g} s")

    results = {}
    for arm in arms:
        seconds = [reading[0] for reading in timed[arm.name]]
        ratios = [t[0] / b[0] for t, b in zip(timed[arm.name], timed[base])]
        results[arm.name] = ArmResult(
            arm.name,
            seconds,
            [reading[0] for reading in warm[arm.name]],
            ratios,
            {"per_call": arm.per_call, **arm.info},
            {c: [reading[i + 1] for reading in timed[arm.name]] for i, c in enumerate(extra_names)},
            {c: [reading[i + 1] for reading in warm[arm.name]] for i, c in enumerate(extra_names)},
        )
    return results


def format_markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; every cell is ``str()``-ed (pre-format numbers yourself)."""
    lines = [
        "| " + " | ".join(str(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """The lines of a benchmark's report: printed as they come, kept for its markdown file.

    ``lines`` (the header, printed at once) is kept by reference: the caller writes
    ``"\n".join(lines)`` at the end. :meth:`emit` adds a line; :meth:`log` prints a progress
    line stamped with the seconds since ``started`` (not kept).
    """

    def __init__(self, lines: list[str], started: float) -> None:
        self.lines = lines
        self.started = started
        print("\n".join(lines), flush=True)

    def emit(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def log(self, msg: str) -> None:
        print(f"  [{time.perf_counter() - self.started:6.0f} s] {msg}", flush=True)

    def finish(self, out: Any, missed: Sequence[str], sep: str = "; ") -> None:
        """Add the "Missed targets" line and write the report to ``out`` (a path)."""
        from pathlib import Path

        self.emit("Missed targets: " + (sep.join(missed) if missed else "none"))
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(self.lines) + "\n")
        print(f"wrote {out}")
