"""Trajectories of :mod:`landscape.directions`: checkpoints, PCA directions, projections.

:func:`load_trajectory` reads a folder of checkpoints in natural order, :func:`pca_directions`
gives the two principal directions of the path (Li et al., 2018, §7) and
:func:`project_trajectory` the coordinates of checkpoints in a direction plane.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.directions.normalise import cosine
from landscape.directions.states import as_state, load_checkpoint_state, lookup
from landscape.directions.value import (
    Directions,
    canonical_ignore,
    check_dir_type,
    direction_targets,
    same_storage_key,
)

_BN_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


# --------------------------------------------------------------------------------------------
# Trajectories and PCA
# --------------------------------------------------------------------------------------------


def _natural_key(path: str) -> list[Any]:
    parts = re.split(r"(\d+)", os.path.basename(path))
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts] + [(2, 0, path)]


def load_trajectory(folder: str | os.PathLike, pattern: str = "*.pt") -> list[dict[str, Tensor]]:
    """The checkpoints of a training run, in natural (epoch) order.

    Files matching ``pattern`` in ``folder`` are sorted with numbers compared as numbers
    (``model_9.pt`` before ``model_10.pt``) and loaded with ``torch.load(weights_only=True)``
    on the CPU. A samlab checkpoint dict gives its ``"model"`` entry (a loss-landscape-style
    dict its ``"state_dict"`` entry); a plain state_dict is used as is.

    Raises:
        ValueError: the folder does not exist, no file matches, or a file cannot be loaded
            (the message names it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"trajectory folder {folder} does not exist")
    files = sorted(glob.glob(str(folder / pattern)), key=_natural_key)
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise ValueError(f"no checkpoint matches {pattern!r} in {folder}")
    return [dict(load_checkpoint_state(Path(f))) for f in files]


def _pca_names(
    final: Mapping[str, Tensor], model: nn.Module | None, dir_type: str
) -> dict[str, torch.Size]:
    if model is not None:
        return {n: t.shape for n, t in direction_targets(model, dir_type).items()}
    names: dict[str, torch.Size] = {}
    seen: set[Any] = set()
    for name, value in final.items():
        if not isinstance(value, Tensor) or not torch.is_floating_point(value):
            continue
        if dir_type == "weights" and name.rsplit(".", 1)[-1] in _BN_STAT_SUFFIXES:
            continue
        key = same_storage_key(value)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        names[name] = value.shape
    return names


def pca_directions(
    states: Sequence[Any],
    *,
    final: Any = None,
    ignore: str = "biasbn",
    dir_type: str = "weights",
    model: nn.Module | None = None,
) -> tuple[Directions, np.ndarray]:
    """The two principal directions of an optimisation path (Li et al., 2018, §7).

    With ``D`` the ``T x P`` matrix of ``diff_t = theta_t - theta_final`` (1-D tensors zeroed
    when ``ignore="biasbn"``), centred over ``t`` as scikit-learn's ``PCA`` does, the
    components come from the ``T x T`` Gram matrix ``G = Dc Dc^T = U diag(s^2) U^T`` (never a
    ``T x P`` SVD, never the whole of ``D`` in memory: ``G`` is accumulated tensor by tensor):
    ``d_k = Dc^T u_k / s_k`` (unit norm, orthogonal). The explained variance ratio is
    ``s_k^2 / trace(G)``. The path is projected as loss-landscape's ``cos`` method does:
    ``x_t = <diff_t, d1> / ||d1||``, ``y_t = <diff_t, d2> / ||d2||``.

    Args:
        states: the trajectory, oldest first: state_dicts, samlab checkpoint dicts or modules
            (e.g. from :func:`load_trajectory`); at least 3.
        final: the centre ``theta_final`` (default: the last state).
        ignore: ``"biasbn"`` (zero the 1-D tensors) or ``"none"``.
        dir_type: ``"weights"`` or ``"states"``.
        model: gives the exact tensor names (:func:`direction_targets`); without it,
            ``"weights"`` means every floating-point entry except BatchNorm running statistics
            and ``"states"`` every floating-point entry.

    Returns:
        ``(directions, path)``: ``directions.meta`` holds ``kind="pca"``,
        ``explained_variance_ratio``, ``explained_variance`` and ``singular_values`` (2 floats
        each, as scikit-learn's attributes); ``path`` is the ``(T, 2)`` float64 projection.
        Signs are fixed so that the largest entry of each ``u_k`` is positive.

    .. note::
       The PCA directions are not filter-normalised (as in loss-landscape). The surface
       around ``theta_final`` need not agree with the loss along the projected path, which
       leaves that plane (loss-landscape issue #1).
    """
    check_dir_type(dir_type)
    ignore = canonical_ignore(ignore)
    if len(states) < 3:
        raise ValueError(f"PCA of a trajectory needs at least 3 states, got {len(states)}")
    state_dicts = [as_state(s, f"states[{i}]") for i, s in enumerate(states)]
    final_sd = state_dicts[-1] if final is None else as_state(final, "final")
    names = _pca_names(final_sd, model, dir_type)
    if not names:
        raise ValueError("the trajectory has no floating-point tensors to analyse")
    moved = {n: s for n, s in names.items() if not (ignore == "biasbn" and len(s) <= 1)}
    n_states = len(state_dicts)

    def diffs(name: str, shape: torch.Size) -> Tensor:
        centre = lookup(final_sd, name, shape, "final").detach().to("cpu", torch.float64)
        rows = [
            lookup(sd, name, shape, f"states[{i}]").detach().to("cpu", torch.float64) - centre
            for i, sd in enumerate(state_dicts)
        ]
        return torch.stack(rows).reshape(n_states, -1)

    gram = torch.zeros(n_states, n_states, dtype=torch.float64)
    for name, shape in moved.items():
        block = diffs(name, shape)
        block = block - block.mean(dim=0, keepdim=True)
        gram += block @ block.T
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    order = torch.argsort(eigenvalues, descending=True)
    eigenvalues, eigenvectors = eigenvalues[order].clamp_min(0.0), eigenvectors[:, order]
    total = float(eigenvalues.sum())
    if total <= 0.0 or float(eigenvalues[1]) <= 1e-12 * total:
        raise ValueError("the trajectory spans fewer than 2 dimensions; PCA needs 2")
    u = eigenvectors[:, :2].clone()
    for k in range(2):
        if u[int(u[:, k].abs().argmax()), k] < 0:
            u[:, k] = -u[:, k]
    singular = eigenvalues[:2].sqrt()

    components = [dict.fromkeys(names), dict.fromkeys(names)]
    path = torch.zeros(n_states, 2, dtype=torch.float64)
    for name, shape in names.items():
        if name not in moved:
            for k in range(2):
                components[k][name] = torch.zeros(shape, dtype=torch.float32)
            continue
        block = diffs(name, shape)
        centred = block - block.mean(dim=0, keepdim=True)
        vectors = (centred.T @ u) / singular  # (p, 2), unit columns over all names
        path += block @ vectors
        for k in range(2):
            components[k][name] = vectors[:, k].reshape(shape).to(torch.float32)

    explained_variance = (eigenvalues[:2] / (n_states - 1)).tolist()
    ratio = (eigenvalues[:2] / total).tolist()
    x, y = components[0], components[1]
    meta = {
        "kind": "pca",
        "seed": None,
        "xnorm": "none",
        "ynorm": "none",
        "xignore": ignore,
        "yignore": ignore,
        "same_dir": False,
        "orthogonalized": False,
        "cosine": cosine(x, y),
        "explained_variance_ratio": [float(r) for r in ratio],
        "explained_variance": [float(v) for v in explained_variance],
        "singular_values": [float(s) for s in singular.tolist()],
        "n_states": n_states,
    }
    return Directions(x=x, y=y, dir_type=dir_type, meta=meta), path.numpy()


def project_trajectory(
    directions: Directions,
    center_state: Any,
    states: Sequence[Any],
    *,
    method: str = "lstsq",
) -> np.ndarray:
    """Coordinates of checkpoints in the (x, y) frame of ``directions`` around a centre.

    For every state, ``diff = theta_t - theta_center`` over ``directions.names()``; then

    - ``method="lstsq"`` (default): the least-squares grid coordinates, i.e. ``(a, b)``
      minimising ``||diff - a dx - b dy||`` (1D: ``a = <diff, dx> / ||dx||^2``), in the same
      units as the surface's ``x`` / ``y`` axes;
    - ``method="cos"``: loss-landscape's ``x = <diff, dx> / ||dx||``, ``y = <diff, dy> / ||dy||``.

    The two agree for orthonormal directions such as :func:`pca_directions`'.

    Args:
        directions: 1D or 2D directions.
        center_state: ``theta0`` (module, state_dict or checkpoint dict).
        states: the checkpoints to project (modules, state_dicts or checkpoint dicts).

    Returns:
        ``(T, ndim)`` float64 array.

    .. note::
       loss-landscape projects with ``cos`` by default, which is in grid units only for unit
       directions (not for filter-normalised random ones); samlab defaults to ``lstsq``.
    """
    if method not in ("lstsq", "cos"):
        raise ValueError(f"method must be 'lstsq' or 'cos', got {method!r}")
    dirs = [directions.x] if directions.y is None else [directions.x, directions.y]
    centre = as_state(center_state, "center_state")
    shapes = {n: directions.x[n].shape for n in directions.names()}

    def flat64(state: Mapping[str, Tensor], what: str) -> Tensor:
        return torch.cat(
            [
                lookup(state, n, s, what).detach().cpu().double().reshape(-1)
                for n, s in shapes.items()
            ]
        )

    centre_flat = flat64(centre, "center_state")
    flat_dirs = [torch.cat([d[n].reshape(-1).double() for n in shapes]) for d in dirs]
    gram = torch.stack([torch.stack([a @ b for b in flat_dirs]) for a in flat_dirs])
    if torch.any(torch.diagonal(gram) == 0):
        raise ValueError("cannot project onto a zero direction")
    out = np.zeros((len(states), len(dirs)), dtype=np.float64)
    for t, state in enumerate(states):
        diff = flat64(as_state(state, f"states[{t}]"), f"states[{t}]") - centre_flat
        inner = torch.stack([diff @ d for d in flat_dirs])
        if method == "cos":
            coords = inner / torch.diagonal(gram).sqrt()
        else:
            coords = torch.linalg.solve(gram, inner)
        out[t] = coords.numpy()
    return out
