"""Checkpoint integrity: a digest of a checkpoint's contents, written with it and checked on load.

samlab's ``save_checkpoint`` stores :func:`payload_sha256` of the dict it saves under the key
:data:`DIGEST_KEY`; :func:`check_checkpoint` (called by samlab's ``load_checkpoint`` and by
this package's checkpoint reader, :func:`landscape.cli.inputs.read_checkpoint`) recomputes it,
so bytes flipped inside a tensor's storage (which ``torch.load`` reads without complaint) are an
error naming the file instead of NaN metrics or a training run blaming its learning rate. A
plain state_dict, or a checkpoint written before the digest, has nothing to check: it loads,
with a one-line note. Non-finite weights are an error either way.

The digest is canonical over the loaded objects, not the file's bytes: it covers every tensor
(dtype, shape, bytes) and plain value (type and ``repr``) of the nested dicts, lists and tuples,
in order, so it is the same wherever the checkpoint is mapped (``map_location``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["DIGEST_KEY", "check_checkpoint", "check_finite_weights", "payload_sha256"]

#: the key of a checkpoint dict holding :func:`payload_sha256` of the rest of the dict
DIGEST_KEY = "sha256"


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}|".encode())
        for key, item in value.items():
            _update(digest, key)
            _update(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__[0]}{len(value)}|".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(f"{type(value).__name__}|{value!r}|".encode())


def payload_sha256(payload: Mapping[str, Any]) -> str:
    """sha256 of a checkpoint dict's contents (every entry but :data:`DIGEST_KEY`)."""
    digest = hashlib.sha256()
    _update(digest, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def check_finite_weights(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``ValueError`` naming ``path`` and the first tensor of ``state`` with a NaN or inf."""
    for name, tensor in state.items():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())
        ):
            raise ValueError(
                f"{path}: the weights {name!r} hold NaN or infinite values (a diverged run or a "
                "damaged file); use another checkpoint"
            )


def check_checkpoint(obj: Any, path: str | os.PathLike) -> str | None:
    """Check a loaded checkpoint against its digest.

    Returns ``None`` when it matches, or the one-line note to show when there is no digest to
    check (a plain state_dict, an older checkpoint). ``ValueError`` naming ``path`` when the
    contents differ from the digest written with them.
    """
    if not isinstance(obj, Mapping) or DIGEST_KEY not in obj:
        return (
            f"note: {path} carries no checksum (a plain state_dict or an older checkpoint); "
            "loaded without an integrity check"
        )
    if obj[DIGEST_KEY] != payload_sha256(obj):
        raise ValueError(
            f"{path} is damaged: its contents do not match the checksum written with it "
            "(bytes changed on disk or in transfer); use another copy or checkpoint"
        )
    return None
