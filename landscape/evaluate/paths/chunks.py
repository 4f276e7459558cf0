"""The forward chunk of ``eager`` and ``compiled`` (:class:`ForwardChunks`), and the clock of
every timing probe (:class:`PassTimer`).

Forward chunk: ``forward_chunk`` rows per forward call, by default chosen at construction by a
timing probe at the centre (hill climbing from ``batch_size``: halving while smaller
activations stay in cache and save >= 10%, else doubling up to the whole set while fewer calls
do; a winner other than ``batch_size`` is confirmed against it in fresh rounds), on whole
passes for cheap models (a pass <= 0.25 s) and per sample on a prefix otherwise; no probe for
one of several MPI ranks (they would time each other's load, and cannot agree without a
collective: pass ``forward_chunk``). The chosen chunk is kept only if its outputs equal, bit
for bit, those of the batch-by-batch forward, so values never depend on it. Measured here (one
thread, shared 2-core AMD EPYC, AVX2): the digits MLP runs 1,024 rows per call (0.29 ms per
pass against 0.55 ms in batches of 128), the CIFAR ResNet-20 64 or 32 rows (1.6-2.4 ms per
sample against 2.0-3.3 ms at 128: 8 MB activations per tensor at 128), the digits CNN stays at
128.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from landscape.evaluate.data import EvalSet
from landscape.evaluate.spec import ProbeSettings, Timer
from landscape.evaluate.weights import MovedWeights

MIN_FORWARD_CHUNK = 16
PROBE_ROUNDS = 5  # best of 5, interleaved (2 for models timed on a prefix)


def launched_ranks() -> int:
    """The size of the MPI job this process belongs to (1 outside MPI): mpi4py's world when
    it is initialised, else the launcher's environment (Open MPI, MPICH/Hydra, MVAPICH)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            if mpi.Is_initialized() and not mpi.Is_finalized():
                return int(mpi.COMM_WORLD.Get_size())
        except Exception:  # noqa: BLE001 - fall back to the environment
            pass
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return 1


class PassTimer:
    """The probes' clock on ``device``: ``timer(passes, rounds)`` is the best-of-``rounds``
    seconds of each callable of ``passes`` (rounds interleaved and rotated), in the calling
    thread's CPU time when it does all the work (CPU, one intra-op thread; not disturbed by
    other processes holding the core), else in wall time (CUDA synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, passes: dict[Any, Callable[[], Any]], rounds: int) -> dict[Any, float]:
        one_thread = self.device.type == "cpu" and torch.get_num_threads() == 1
        clock = time.thread_time if one_thread else time.perf_counter
        keys = list(passes)
        best = dict.fromkeys(keys, math.inf)
        for round_index in range(rounds):
            shift = round_index % len(keys)
            for key in keys[shift:] + keys[:shift]:
                self._sync()
                tic = clock()
                passes[key]()
                self._sync()
                best[key] = min(best[key], clock() - tic)
        return best


class ForwardChunks:
    """Chooses and sets the forward chunk of the evaluation ``sets`` of ``weights.model``
    (nominal batches of ``batch_size``), timed with ``timer`` under ``settings``; the choice
    and timings go into ``notes``. :attr:`cheap`: the probe timed whole passes (a pass over
    the training samples takes at most ``settings.max_pass_seconds``)."""

    def __init__(
        self,
        weights: MovedWeights,
        sets: Sequence[EvalSet],
        batch_size: int,
        settings: ProbeSettings,
        timer: Timer,
        notes: dict[str, Any],
    ) -> None:
        self.weights = weights
        self.sets = list(sets)
        self.batch_size = batch_size
        self.settings = settings
        self.timer = timer
        self.notes = notes
        self.cheap = False

    def choose(self, requested: int | None) -> int:
        """Samples per forward call: ``requested``, or the timing probe's choice."""
        largest = max(len(s.inputs) for s in self.sets)
        ranks = launched_ranks()
        if requested is not None:
            chunk, choice = min(requested, largest), "requested"
        elif ranks > 1:
            # Each rank would time its forward while the others load the same machine, and
            # the ranks cannot agree without a collective: no probe (forward_chunk chooses).
            chunk = self.batch_size
            choice = f"batch by batch, no probe: one of {ranks} MPI ranks"
        else:
            chunk, choice = self._probe(largest)
        for evalset in self.sets:
            evalset.set_chunk(chunk)
        self.notes["forward_chunk"] = chunk
        self.notes["forward_chunk_choice"] = choice
        return chunk

    def _probe(self, largest: int) -> tuple[int, str]:
        """The forward chunk that measures fastest at the centre, by hill climbing from the
        batch size: halving it (smaller activations stay in cache), or else doubling it up to
        the whole set (fewer calls), each step taken only while the candidate takes at most
        ``min_gain`` of the time of the best so far, timed against it in interleaved rounds
        (cheap models on whole passes over the training samples, others per sample on a
        prefix). The winner is kept only if its outputs equal, bit for bit, those of the
        batch-by-batch forward (every row of every evaluation set for cheap models; otherwise
        the first two chunks and the last one of each set), so the values never depend on
        the choice."""
        batch, min_gain = self.batch_size, self.settings.min_gain
        model = self.weights.model
        train = self.sets[0]
        size = len(train.inputs)
        try:
            with self.weights.prepared(), torch.no_grad():
                first = train.batches[0][0]
                out = model(first)
                if not isinstance(out, Tensor) or out.shape[:1] != first.shape[:1]:
                    return batch, "batch by batch: the outputs are not one tensor row per sample"
                seconds = self.timer({0: lambda: model(first)}, 2)[0]
                if seconds > self.settings.max_batch_seconds:
                    return batch, f"batch by batch, no probe: one batch takes {seconds:.1f} s"
                cheap = seconds * len(train.bounds) <= self.settings.max_pass_seconds
                self.cheap = cheap
                rounds = PROBE_ROUNDS if cheap else 2

                def per_sample(chunks: dict[int, None]) -> dict[int, float]:
                    """Seconds per sample of forwards in each chunk size (interleaved)."""
                    rows = {
                        c: train.inputs if cheap else train.inputs[: max(c, batch)] for c in chunks
                    }
                    timed = self.timer(
                        {
                            c: lambda c=c: [model(x) for x in torch.split(rows[c], c)]
                            for c in chunks
                        },
                        rounds,
                    )
                    return {c: timed[c] / len(rows[c]) for c in chunks}

                timings: dict[int, float] = {}
                best = batch
                for step in (0.5, 2.0):
                    if best != batch:  # smaller chunks won (cache): larger ones will not
                        break
                    chunk = batch
                    while True:
                        chunk = min(int(chunk * step), largest)
                        if chunk < MIN_FORWARD_CHUNK or chunk in timings or chunk == best:
                            break
                        # the candidate against the best so far, in interleaved rounds
                        pair = per_sample({best: None, chunk: None})
                        for key, value in pair.items():
                            timings[key] = min(timings.get(key, math.inf), value)
                        if pair[chunk] > min_gain * pair[best]:
                            break
                        best = chunk
                choice = "probe"
                if best != batch:
                    # confirm against the batch size in fresh interleaved rounds: on a loaded
                    # machine one lucky round can make a slower chunk look faster
                    pair = per_sample({batch: None, best: None})
                    confirmed = pair[best] <= min_gain * pair[batch]
                    self.notes["forward_chunk_confirm"] = {
                        "unit": "ms per pass" if cheap else "ms per sample",
                        **{
                            str(c): round(t * (size if cheap else 1) * 1e3, 4)
                            for c, t in pair.items()
                        },
                        "kept": confirmed,
                    }
                    if not confirmed:
                        best = batch
                if best != batch and not self._same_outputs(best, full=cheap):
                    self.notes["forward_chunk_not_bitwise"] = best
                    best, choice = batch, "probe; the faster chunk changed the outputs' bits"
        except Exception as error:  # noqa: BLE001 - the probe is an optimisation only
            message = f"batch by batch: the probe failed ({type(error).__name__}: {error})"
            return batch, message[:300]
        scale = size if cheap else 1
        unit = "ms per pass" if cheap else "ms per sample"
        self.notes["forward_chunk_probe"] = {
            "unit": unit,
            **{str(c): round(t * scale * 1e3, 4) for c, t in sorted(timings.items())},
        }
        return best, choice

    def _same_outputs(self, chunk: int, full: bool) -> bool:
        """Whether forward chunks of ``chunk`` rows give the batch-by-batch outputs bitwise:
        on every row (``full``), or on the first two chunks and the last one of each set."""
        model, batch = self.weights.model, self.batch_size
        for evalset in self.sets:
            size = len(evalset.inputs)
            starts = list(range(0, size, chunk))
            if not full:
                starts = sorted({*starts[:2], starts[-1]})
            for start in starts:
                stop = min(start + chunk, size)
                got = model(evalset.inputs[start:stop])
                first = start // batch * batch
                nominal = torch.cat(
                    [
                        model(evalset.inputs[b : min(b + batch, size)])
                        for b in range(first, stop, batch)
                    ]
                )
                if not torch.equal(got, nominal[start - first : stop - first]):
                    return False
        return True
