"""What a :class:`~landscape.evaluate.SurfaceEvaluator` computes, as stored with a surface.

:class:`Provenance` is fixed at construction from the frozen :class:`EvaluationSpec`, the model
and directions (identified by sha256 hashes of their tensors) and the evaluation sets (sizes,
sha256 of the sample indices and of the samples' values, :func:`data_sha256`);
:meth:`Provenance.describe` adds how the points are evaluated (mode, K, the probes' notes) as a
JSON-able dict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.evaluate.data import EvalSet
from landscape.evaluate.spec import EvaluationSpec


def tensor_bytes(tensor: Tensor) -> bytes:
    """The raw bytes of ``tensor`` (on the CPU, contiguous)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def hash_tensors(items: Sequence[tuple[str, Tensor]]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of named tensors, in order."""
    digest = hashlib.sha256()
    for name, tensor in items:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


DATA_DIGEST_SCHEME = "sha256 of inputs then targets, concatenated over batches (v1)"
"""The definition of :func:`data_sha256`, recorded next to the digests (``data_digest``)."""


def data_sha256(batches: Sequence[tuple[Tensor, Tensor]]) -> str:
    """sha256 of evaluation data's values: the ``(inputs, targets)`` batches, in order.

    Canonical: the digest is that of the inputs concatenated over the batches, then the
    targets (each with its dtype and the concatenated shape), so it does not depend on how the
    samples are split into batches; it does depend on their order, dtypes and every byte.
    Surface files (``data_sha256`` / ``test_data_sha256``), eigenvalue maps and the Hessian and
    sharpness outputs record it; a resumed surface must match it.
    """
    batches = list(batches)
    digest = hashlib.sha256()
    if not batches:  # e.g. an MPI shard holding no batch
        return digest.hexdigest()
    for part, name in ((0, "inputs"), (1, "targets")):
        tensors = [batch[part] for batch in batches]
        first = tensors[0]
        for tensor in tensors[1:]:
            if tensor.dtype != first.dtype or tensor.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"data_sha256: the batches' {name} differ in dtype or trailing shape "
                    f"({first.dtype} {tuple(first.shape)} and {tensor.dtype} {tuple(tensor.shape)})"
                )
        rows = sum(len(tensor) for tensor in tensors)
        digest.update(f"{name}|{first.dtype}|{(rows, *first.shape[1:])}|".encode())
        for tensor in tensors:
            digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def hash_indices(indices: np.ndarray) -> str:
    """sha256 of sample indices as little-endian int64."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def package_version() -> str:
    """The installed version of samlab-toolkit (``"unknown"`` when not installed)."""
    try:
        from importlib.metadata import version

        return version("samlab-toolkit")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def describe_subset(subset: Any) -> int | str | None:
    """A subset option as provenance: None, its size, or "indices" (their hash is recorded)."""
    if subset is None:
        return None
    return int(subset) if isinstance(subset, (int, np.integer)) else "indices"


def jsonable(value: Any) -> Any:
    """``value`` with numpy and torch values as plain Python (anything else unknown: str)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor):
        return jsonable(value.tolist())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class Provenance:
    """The provenance of an evaluator of ``model`` along ``directions`` with ``spec`` over the
    evaluation sets ``sets`` on ``device`` in ``dtype``; the model's and the directions' hashes
    are taken at construction (:attr:`model_sha256`, :attr:`directions_sha256`)."""

    def __init__(
        self,
        spec: EvaluationSpec,
        model: nn.Module,
        directions: Any,
        sets: Sequence[EvalSet],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.spec = spec
        self.sets = list(sets)
        self.model_class = type(model).__qualname__
        self.directions = directions
        self.device = device
        self.dtype = dtype
        self.model_sha256 = hash_tensors(list(model.state_dict().items()))
        items = [(f"x.{k}", v) for k, v in directions.x.items()]
        if directions.y is not None:
            items += [(f"y.{k}", v) for k, v in directions.y.items()]
        self.directions_sha256 = hash_tensors(items)
        self._data_sha256: list[str] | None = None

    @property
    def data_sha256(self) -> list[str]:
        """:func:`data_sha256` of each evaluation set (training, then test), computed once."""
        if self._data_sha256 is None:
            self._data_sha256 = [data_sha256([(s.inputs, s.targets)]) for s in self.sets]
        return self._data_sha256

    def describe(self, mode: str, points_per_call: int, notes: Mapping[str, Any]) -> dict[str, Any]:
        """JSON-able description of what the evaluator computes: the spec, identities and
        data, ``mode`` and ``points_per_call`` as chosen, and the probes' ``notes`` (read
        now, as are the TF32 flags on CUDA) under ``"execution"``."""
        spec, sets = self.spec, self.sets
        execution: dict[str, Any] = {"mode_requested": spec.mode}
        if points_per_call > 1:
            execution["points_per_call"] = points_per_call
        if self.device.type == "cuda":
            execution["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
            execution["matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        execution.update(notes)
        result: dict[str, Any] = {
            "directions": jsonable(dict(self.directions.meta)),
            "directions_sha256": self.directions_sha256,
            "dir_type": self.directions.dir_type,
            "loss_name": spec.loss_name,
            "bn_mode": spec.bn_mode,
            "subset": describe_subset(spec.subset),
            "subset_seed": spec.subset_seed,
            "train_size": int(sets[0].indices.size),
            "train_indices_sha256": hash_indices(sets[0].indices),
            "data_sha256": self.data_sha256[0],
            "data_digest": DATA_DIGEST_SCHEME,
            "model_sha256": self.model_sha256,
            "model_class": self.model_class,
            "dtype": str(self.dtype).replace("torch.", ""),
            "batch_size": spec.batch_size,
            "mode": mode,
            "device": self.device.type,
            "execution": execution,
            "torch_version": str(torch.__version__),
            "numpy_version": str(np.__version__),
            "landscape_version": package_version(),
        }
        if len(sets) > 1:
            result["test_subset"] = describe_subset(spec.test_subset)
            result["test_size"] = int(sets[1].indices.size)
            result["test_indices_sha256"] = hash_indices(sets[1].indices)
            result["test_data_sha256"] = self.data_sha256[1]
        return result
