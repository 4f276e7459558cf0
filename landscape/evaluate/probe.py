"""Timing probes of :mod:`landscape.surface` and the forward chunk they choose.

The forward chunk of ``eager`` and ``compiled`` (samples per forward call) is chosen at
construction by hill climbing from the batch size, timed at the centre in interleaved rounds
and kept only where its outputs equal, bit for bit, those of the batch-by-batch forward (see
the module docstring of :mod:`landscape.surface`). :class:`_ForwardChunks` holds these methods of
:class:`~landscape.surface.SurfaceEvaluator` and the clock the other probes use
(``_pass_seconds``); they share ``_PROBE_MIN_GAIN`` too.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# Forward chunks (eager and compiled): the probe times whole passes over the training samples
# when one takes at most this (seconds), otherwise a prefix; the compiled-vs-eager probe runs
# only on such cheap models.
_PROBE_MAX_PASS_SECONDS = 0.25
_PROBE_MAX_BATCH_SECONDS = 5.0  # no probe at all beyond this (one batch forward, seconds)
_MIN_FORWARD_CHUNK = 16
_PROBE_ROUNDS = 5  # best of 5, interleaved (2 for models timed on a prefix)
# A probed chunk (or the compiled pass) must take <= 90% of the time of the best so far: on a
# shared machine smaller differences are within the noise of the probe. The compiled and vmap
# probes import it by name: a test that changes it sets it in each of those modules too.
_PROBE_MIN_GAIN = 0.9


def _launched_ranks() -> int:
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


class _ForwardChunks:
    """Forward chunks of :class:`~landscape.surface.SurfaceEvaluator` (a base class of it):
    the chunk probe, its bitwise check and the interleaved best-of-rounds clock."""

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _pass_seconds(
        self, passes: dict[Any, Callable[[], Any]], rounds: int = _PROBE_ROUNDS
    ) -> dict[Any, float]:
        """Best-of-rounds seconds of each callable (rounds interleaved and rotated): the
        calling thread's CPU time when it does all the work (CPU, one intra-op thread; not
        disturbed by other processes holding the core), else wall time."""
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

    def _setup_forward_chunks(self, requested: int | None) -> None:
        """Samples per forward call: ``requested``, or the timing probe's choice."""
        largest = max(len(s.inputs) for s in self._sets)
        ranks = _launched_ranks()
        if requested is not None:
            chunk, choice = min(requested, largest), "requested"
        elif ranks > 1:
            # Each rank would time its forward while the others load the same machine, and
            # the ranks cannot agree without a collective: no probe (forward_chunk chooses).
            chunk = self.batch_size
            choice = f"batch by batch, no probe: one of {ranks} MPI ranks"
        else:
            chunk, choice = self._probe_forward_chunk(largest)
        for evalset in self._sets:
            evalset.set_chunk(chunk)
        self._notes["forward_chunk"] = chunk
        self._notes["forward_chunk_choice"] = choice

    def _probe_forward_chunk(self, largest: int) -> tuple[int, str]:
        """The forward chunk that measures fastest at the centre, by hill climbing from the
        batch size: halving it (smaller activations stay in cache), or else doubling it up to
        the whole set (fewer calls), each step taken only while the candidate saves at least
        ``1 - _PROBE_MIN_GAIN`` of the time of the best so far, timed against it in
        interleaved rounds (cheap models on whole passes over the training samples, others
        per sample on a prefix). The winner is kept only if its outputs equal,
        bit for bit, those of the batch-by-batch forward (every row of every evaluation set
        for cheap models; otherwise the first two chunks and the last one of each set), so
        the values never depend on the choice."""
        batch = self.batch_size
        model = self.model
        train = self._sets[0]
        size = len(train.inputs)
        try:
            with self._prepared(), torch.no_grad():
                first = train.batches[0][0]
                out = model(first)
                if not isinstance(out, Tensor) or out.shape[:1] != first.shape[:1]:
                    return batch, "batch by batch: the outputs are not one tensor row per sample"
                seconds = self._pass_seconds({0: lambda: model(first)}, rounds=2)[0]
                self._probe_batch_seconds = seconds
                if seconds > _PROBE_MAX_BATCH_SECONDS:
                    return batch, f"batch by batch, no probe: one batch takes {seconds:.1f} s"
                cheap = seconds * len(train.bounds) <= _PROBE_MAX_PASS_SECONDS
                self._probe_cheap = cheap
                rounds = _PROBE_ROUNDS if cheap else 2

                def per_sample(chunks: dict[int, None]) -> dict[int, float]:
                    """Seconds per sample of forwards in each chunk size (interleaved)."""
                    rows = {
                        c: train.inputs if cheap else train.inputs[: max(c, batch)] for c in chunks
                    }
                    timed = self._pass_seconds(
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
                        if chunk < _MIN_FORWARD_CHUNK or chunk in timings or chunk == best:
                            break
                        # the candidate against the best so far, in interleaved rounds
                        pair = per_sample({best: None, chunk: None})
                        for key, value in pair.items():
                            timings[key] = min(timings.get(key, math.inf), value)
                        if pair[chunk] > _PROBE_MIN_GAIN * pair[best]:
                            break
                        best = chunk
                choice = "probe"
                if best != batch:
                    # confirm against the batch size in fresh interleaved rounds: on a loaded
                    # machine one lucky round can make a slower chunk look faster
                    pair = per_sample({batch: None, best: None})
                    confirmed = pair[best] <= _PROBE_MIN_GAIN * pair[batch]
                    self._notes["forward_chunk_confirm"] = {
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
                    self._notes["forward_chunk_not_bitwise"] = best
                    best, choice = batch, "probe; the faster chunk changed the outputs' bits"
        except Exception as error:  # noqa: BLE001 - the probe is an optimisation only
            message = f"batch by batch: the probe failed ({type(error).__name__}: {error})"
            return batch, message[:300]
        scale = size if cheap else 1
        unit = "ms per pass" if cheap else "ms per sample"
        self._notes["forward_chunk_probe"] = {
            "unit": unit,
            **{str(c): round(t * scale * 1e3, 4) for c, t in sorted(timings.items())},
        }
        return best, choice

    def _same_outputs(self, chunk: int, full: bool) -> bool:
        """Whether forward chunks of ``chunk`` rows give the batch-by-batch outputs bitwise:
        on every row (``full``), or on the first two chunks and the last one of each set."""
        model, batch = self.model, self.batch_size
        for evalset in self._sets:
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
