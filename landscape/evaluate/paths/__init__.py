"""The evaluation paths of :class:`~landscape.evaluate.SurfaceEvaluator`: one is chosen at its
construction (:class:`PathChooser`, ``choose.py``, with the probes) and evaluates every point.

Every path is an object with its own state behind one protocol (:class:`EvaluationPath`:
``mode``, ``points_per_call``, ``batch_sums(coords)``, ``evaluate(coords)``), listed in
:data:`PATHS`:

- :class:`EagerPath` (``eager.py``, ``mode="eager"``): the plain loop, the reference twin. The
  forward runs in chunks of ``forward_chunk`` rows (``chunks.py``); the outputs of a group of
  points (up to 64 MiB) are kept and their metrics computed together: per-sample losses and
  correctness of all their rows in one call, per-batch sums by reshaping, one host copy and
  numpy over the whole group, so the metric bookkeeping costs O(1) tensor ops per group of
  points instead of a few per batch.
- :class:`CompiledPath` (``compiled.py``, ``mode="compiled"``): the same loop with the forward
  under ``torch.compile`` (at the chunk shape; the last chunk is padded) and, BatchNorm being
  in eval mode, folded into the preceding conv/linear layer (``fold.py``); the folded weights
  are recomputed from the perturbed weights at every point and written in place, so the
  compiled graph is built once (a recompile raises). ``mode="compiled"`` falls back to eager
  with one warning when compilation fails, and without a warning (noted in
  ``provenance["execution"]["compiled_fallback"]``) when, on a model cheap enough to time
  whole passes, the compiled pass does not measure faster than the eager one (a compiled call
  costs ~0.1 ms of guards and wrapper here: more than it saves on the digits MLP).
- :class:`CompiledPointsPath` (``compiled.py``, ``mode="compiled"``): on such cheap models
  ``mode="compiled"`` also tries K points per compiled call (``vmap`` over K stacked weight
  sets inside one compiled graph per evaluation set, the weights built from the coordinates in
  the graph, loss, accuracy and per-batch sums fused; K from a 32 MiB activation budget, at
  most 64, tried from 4), kept only when it is position-independent bitwise, agrees with the
  eager loop and measures >= 10% faster per point than the path chosen so far; then
  ``points_per_call`` and ``default_chunk_size`` are K.
- :class:`VmapPath` (``vmap.py``, ``mode="vmap"``): ``torch.func.functional_call`` + ``vmap``
  over K stacked sets of the moved tensors (the others, buffers included, stay unbatched), K
  points per forward; eval mode only.

``mode="auto"``: eager on CPU. On CUDA (``bn_mode="eval"``, one process) a probe at the centre
checks ``vmap`` (K points per forward) against the eager loop and times both in interleaved
rounds on a prefix of at most 1,024 training rows; ``vmap`` is taken only where it agrees
within tolerance and measures at least 10% faster per point, else eager (timings and choice in
``provenance["execution"]["auto_vmap_probe"]``). Eager with ``bn_mode="recompute"`` and on one
of several MPI ranks (which could choose differently). The probes' thresholds and clock
(:class:`PassTimer` by default) are :class:`~landscape.evaluate.spec.ProbeSettings`.

Measured by ``benchmarks/landscape_surface.py`` (ratio to the bare limit: one plain eager
forward per point at batch 128 over the same 1,024 samples, weights set by a plain axpy;
medians of paired per-round ratios, arms interleaved, process CPU time, one thread on a shared
2-core CPU; table in docs/performance.md): eager (with accuracy and standard
errors) 0.73 on the MLP, 0.94 on the CNN, 0.97 on ResNet-20; compiled 0.59 on the MLP (K = 64
points per compiled call), 0.61 on the CNN and 0.67 on ResNet-20; vmap 0.84-1.38 (K = 64, 5,
1): slower than eager on all three, hence eager on CPU. ``loss-landscapes`` (mean loss only,
all samples in one forward): 0.59 on the MLP (compiled / loss-landscapes 0.91 paired; eager
alone stays ~25% behind it there: the per-point cross-entropy and argmax kernels of 1,024
ten-class rows cost ~0.09 ms next to a 0.3 ms forward), 1.06 on the CNN and 2.2 on ResNet-20.
On GPUs a small model at batch 128 is launch-bound, which K points per forward may amortise,
so ``auto`` on CUDA measures ``vmap`` against eager at construction and keeps the faster one;
GPU timings are not recorded in this repository yet (the probe's are in the provenance).

Determinism: a point's value depends only on its coordinates, never on the chunk of points, the
group whose metrics are computed together, the forward chunk or the process that evaluates it
(per-sample values are row-independent and every per-batch sum reduces one contiguous row;
``vmap`` pads every chunk to the same K, and its per-point results were checked independent of
the point's position in the chunk on CPU; ``compiled`` pads the last chunk to the compiled
shape, and its K-point calls are padded to K and kept only where a check at construction finds
the same bits for the same points in another order). On CUDA, bitwise reproducibility also
needs deterministic kernels (``torch.use_deterministic_algorithms(True)``).
"""

from landscape.evaluate.paths.base import EvaluationPath, PointsPath
from landscape.evaluate.paths.choose import PathChooser
from landscape.evaluate.paths.chunks import PassTimer
from landscape.evaluate.paths.compiled import CompiledPath, CompiledPointsPath, cxx_available
from landscape.evaluate.paths.eager import EagerPath
from landscape.evaluate.paths.vmap import VmapPath

#: every evaluation path, in the order :class:`PathChooser` considers them
PATHS = (EagerPath, CompiledPath, CompiledPointsPath, VmapPath)

__all__ = [
    "PATHS",
    "CompiledPath",
    "CompiledPointsPath",
    "EagerPath",
    "EvaluationPath",
    "PassTimer",
    "PathChooser",
    "PointsPath",
    "VmapPath",
    "cxx_available",
]
