"""Directions in weight space for loss surfaces (Li et al., NeurIPS 2018).

A loss surface is the loss along one or two directions through trained weights ``theta0``:
``f(a) = L(theta0 + a * dx)`` (1D) or ``f(a, b) = L(theta0 + a * dx + b * dy)`` (2D). Li, Xu,
Taylor, Studer and Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
draw ``dx`` and ``dy`` from N(0, 1) and *filter-normalise* them: every filter ``d[k]`` (a slice
along dim 0 of a weight tensor) is rescaled to the norm of the matching weight filter,
``d[k] <- d[k] * ||w[k]|| / ||d[k]||``, so that the picture does not depend on the scale
invariance of ReLU networks with BatchNorm.

This module builds such directions for any ``nn.Module``:

- :func:`random_direction` and :func:`create_directions`: random (filter, layer, weight or no
  normalisation), interpolation towards a second checkpoint, the plane through three;
- :func:`pca_directions`, :func:`load_trajectory` and :func:`project_trajectory`: the two
  principal directions of an optimisation path and the path projected onto them;
- :func:`save_directions` and :func:`load_directions`: HDF5 files with loss-landscape's groups
  ``xdirection/`` and ``ydirection/``, one dataset per parameter *name* (loss-landscape's
  position-indexed files are read too, given the model).

Every direction is a ``dict`` name -> float32 CPU tensor in the model's order, shaped like the
tensor it moves; the weights at a grid point are ``theta0 + x * dx (+ y * dy)``.

.. note::
   Where samlab deviates from tomgoldstein/loss-landscape (snapshot 64ef4d5):

   - the defaults are ``norm="filter"`` and ``ignore="biasbn"`` (the paper's setting);
     loss-landscape's empty defaults give raw N(0, 1) weight directions and set every 1-D
     entry equal to the weights themselves;
   - the ``seed`` is honoured and recorded (loss-landscape hard-codes 123, so ``--idx``
     repeats the same direction);
   - directions are stored by parameter name, not by position, so a file from another
     architecture is rejected instead of silently mis-applied;
   - ``dir_type="states"`` never moves integer buffers (``num_batches_tracked``), and tied
     tensors appear once;
   - the second direction can be made orthogonal to the first (``orthogonalize=True``);
     loss-landscape only prints their cosine.

``h5py`` is imported inside the functions that need it.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Directions",
    "create_directions",
    "direction_targets",
    "load_directions",
    "load_trajectory",
    "pca_directions",
    "project_trajectory",
    "random_direction",
    "save_directions",
]

SCHEMA_VERSION = 1
DIR_TYPES = ("weights", "states")
NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
IGNORES = ("biasbn", "none")
KINDS = ("random", "interpolation", "plane", "pca", "file")
_EPS = 1e-10
_BN_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_ARCH_HINT = "direction file from another architecture?"


# --------------------------------------------------------------------------------------------
# The value
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Directions:
    """One or two directions in weight space, by tensor name, in the model's order.

    Attributes:
        x: name -> direction tensor (float32, CPU), shaped like the tensor it moves.
        y: the second direction with the same names and shapes, or ``None`` for 1D.
        dir_type: ``"weights"`` (the model's ``named_parameters()``) or ``"states"`` (every
            floating-point ``state_dict()`` entry, BatchNorm running statistics included).
        meta: JSON-able description: ``kind`` ("random" | "interpolation" | "plane" | "pca" |
            "file"), ``seed``, ``xnorm``, ``ynorm``, ``xignore``, ``yignore``,
            ``orthogonalized``, ``cosine`` (``x . y / (|x| |y|)``, before any
            orthogonalisation; ``None`` in 1D) and, for PCA, ``explained_variance_ratio``
            (a list of 2 floats).
    """

    x: dict[str, Tensor]
    y: dict[str, Tensor] | None
    dir_type: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dir_type not in DIR_TYPES:
            raise ValueError(f"dir_type must be one of {DIR_TYPES}, got {self.dir_type!r}")
        if self.y is not None:
            if list(self.y) != list(self.x):
                raise ValueError(
                    "the y direction must have the same names, in the same order, as x"
                )
            for name, dx in self.x.items():
                if tuple(self.y[name].shape) != tuple(dx.shape):
                    raise ValueError(
                        f"direction shapes differ for {name!r}: x {tuple(dx.shape)}, "
                        f"y {tuple(self.y[name].shape)}"
                    )

    @property
    def ndim(self) -> int:
        """1 for a line, 2 for a plane."""
        return 1 if self.y is None else 2

    def names(self) -> list[str]:
        """The tensor names a direction moves, in model order (the keys of ``x``)."""
        return list(self.x)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_dir_type(dir_type: str) -> str:
    if dir_type not in DIR_TYPES:
        raise ValueError(f"dir_type must be one of {DIR_TYPES}, got {dir_type!r}")
    return dir_type


def _canonical_norm(norm: str | None) -> str:
    norm = "none" if norm in (None, "") else str(norm).lower()
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (or ''), got {norm!r}")
    return norm


def _canonical_ignore(ignore: str | None) -> str:
    ignore = "none" if ignore in (None, "") else str(ignore).lower()
    if ignore not in IGNORES:
        raise ValueError(f"ignore must be one of {IGNORES} (or ''), got {ignore!r}")
    return ignore


def _cpu32(t: Tensor) -> Tensor:
    """A float32 CPU view or copy of ``t`` (never modify the result in place)."""
    return t.detach().to(device="cpu", dtype=torch.float32)


def _same_storage_key(t: Tensor) -> tuple[Any, ...] | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # meta or exotic tensors
        return None
    if ptr == 0:
        return None
    return (t.device.type, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _as_state(obj: Any, what: str) -> Mapping[str, Tensor]:
    """A state_dict from a module, a state_dict, a checkpoint dict or a checkpoint path."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, (str, os.PathLike)):
        return _load_checkpoint_state(Path(obj))
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
        return obj
    raise TypeError(
        f"{what} must be an nn.Module, a state_dict, a checkpoint dict with a 'model' entry or "
        f"a checkpoint path, got {type(obj).__name__}"
    )


def _load_checkpoint_state(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, foreign, or needs unpickling arbitrary objects
        raise ValueError(f"cannot load checkpoint {path} with weights_only=True: {err}") from err
    if isinstance(data, Mapping):
        for key in ("model", "state_dict"):
            inner = data.get(key)
            if isinstance(inner, Mapping):
                return inner
        if all(isinstance(v, Tensor) for v in data.values()):
            return data
    raise ValueError(
        f"{path} is neither a state_dict nor a checkpoint dict with a 'model' (or 'state_dict') "
        "entry"
    )


def _lookup(state: Mapping[str, Any], name: str, shape: torch.Size, what: str) -> Tensor:
    if name not in state:
        raise ValueError(f"{what} has no entry {name!r} (a checkpoint of another architecture?)")
    value = state[name]
    if not isinstance(value, Tensor):
        raise ValueError(f"{what}[{name!r}] is not a tensor")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"{what}[{name!r}] has shape {tuple(value.shape)}, the model {tuple(shape)} "
            "(a checkpoint of another architecture?)"
        )
    return value


def _difference(targets: Mapping[str, Tensor], other: Any, what: str) -> dict[str, Tensor]:
    """``other - targets``, name by name, as float32 CPU tensors (computed in >= float32)."""
    state = _as_state(other, what)
    out = {}
    for name, w in targets.items():
        w2 = _lookup(state, name, w.shape, what)
        dtype = torch.promote_types(w.dtype, torch.float32)
        w_cpu = w.detach().to(device="cpu", dtype=dtype)
        out[name] = (w2.detach().to(device="cpu", dtype=dtype) - w_cpu).to(torch.float32)
    return out


def _dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Inner product of two name -> tensor dicts as flat vectors, in float64."""
    total = 0.0
    for name, t in a.items():
        total += float(torch.dot(t.reshape(-1).double(), b[name].reshape(-1).double()))
    return total


def _cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float | None:
    na, nb = math.sqrt(_dot(a, a)), math.sqrt(_dot(b, b))
    if na == 0.0 or nb == 0.0:
        return None
    return _dot(a, b) / (na * nb)


def _orthogonalize(x: Mapping[str, Tensor], y: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Gram–Schmidt of ``y`` against ``x`` on the flat vectors, rescaled to ``|y|``."""
    xx, xy, yy = _dot(x, x), _dot(x, y), _dot(y, y)
    if xx == 0.0:
        raise ValueError("cannot orthogonalize against a zero x direction")
    coef = xy / xx
    residual = {n: y[n].double() - coef * x[n].double() for n in y}
    rr = sum(float((r * r).sum()) for r in residual.values())
    if rr <= 1e-24 * max(yy, 1e-300):
        raise ValueError("cannot orthogonalize: y is parallel to x (same_dir?)")
    scale = math.sqrt(yy / rr)
    return {n: (r * scale).to(torch.float32) for n, r in residual.items()}


def _normalize_(d: Tensor, w: Tensor, norm: str) -> None:
    """Normalise one direction tensor ``d`` (ndim >= 2) against weights ``w`` in place."""
    if norm == "filter":
        rows_d = d.reshape(d.shape[0], -1)
        rows_w = w.reshape(w.shape[0], -1)
        scale = rows_w.norm(dim=1) / (rows_d.norm(dim=1) + _EPS)
        rows_d.mul_(scale.unsqueeze(1))
    elif norm == "layer":
        d.mul_(w.norm() / (d.norm() + _EPS))
    elif norm == "weight":
        d.mul_(w)
    elif norm == "dfilter":
        rows_d = d.reshape(d.shape[0], -1)
        rows_d.div_(rows_d.norm(dim=1, keepdim=True) + _EPS)
    elif norm == "dlayer":
        d.div_(d.norm() + _EPS)
    # "none": unchanged


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a dependency
        raise ImportError(
            "landscape direction files need h5py: pip install h5py (or conda install h5py)"
        ) from err
    return h5py


# --------------------------------------------------------------------------------------------
# Targets and random directions
# --------------------------------------------------------------------------------------------


def direction_targets(model: nn.Module, dir_type: str = "weights") -> dict[str, Tensor]:
    """The tensors a direction moves, by name, in model order.

    Args:
        model: any ``nn.Module``.
        dir_type: ``"weights"``: ``model.named_parameters()`` (frozen parameters included);
            ``"states"``: every floating-point ``state_dict()`` entry (parameters and
            buffers such as BatchNorm's ``running_mean`` and ``running_var``). Integer
            buffers such as ``num_batches_tracked`` are never moved.

    Returns:
        name -> the live tensor (a ``Parameter`` or buffer of ``model``, not a copy). Tied
        tensors appear once, under their first name.

    .. note::
       loss-landscape's ``states`` mode also perturbs ``num_batches_tracked`` and visits tied
       weights once per name; samlab does neither.
    """
    _check_dir_type(dir_type)
    if dir_type == "weights":
        return dict(model.named_parameters())
    targets: dict[str, Tensor] = {}
    seen: set[Any] = set()
    for name, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, Tensor) or not torch.is_floating_point(value):
            continue
        key = _same_storage_key(value)
        if id(value) in seen or (key is not None and key in seen):
            continue
        seen.add(id(value))
        if key is not None:
            seen.add(key)
        targets[name] = value
    return targets


def random_direction(
    model: nn.Module,
    *,
    seed: int | None,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """A Gaussian direction, normalised against the model's tensors (Li et al., 2018, §4).

    For every target tensor ``w`` (see :func:`direction_targets`), in model order, draw
    ``d ~ N(0, 1)`` shaped like ``w`` in float32 on a CPU ``torch.Generator`` (so the same seed
    gives the same direction on any device and for any model dtype), then:

    - ``norm="filter"``: for every slice ``k`` along dim 0 (a conv output filter, a linear
      output row, an embedding row; a packed QKV projection is normalised per output row),
      ``d[k] *= ||w[k]|| / (||d[k]|| + 1e-10)``;
    - ``norm="layer"``: ``d *= ||w|| / (||d|| + 1e-10)``;
    - ``norm="weight"``: ``d *= w`` (element-wise);
    - ``norm="dfilter"`` / ``"dlayer"``: every filter / the whole tensor scaled to unit norm
      (loss-landscape's extra modes);
    - ``norm="none"`` (or ``""``): ``d`` left as drawn.

    Tensors with ``ndim <= 1`` (biases, norm-layer scales and shifts, scalars) are not
    normalised: ``ignore="biasbn"`` sets their direction to 0; ``ignore="none"`` (or ``""``)
    follows loss-landscape and sets it to a **copy of the weights themselves** (``d = w``,
    so a step ``a`` rescales them by ``1 + a``). A random tensor is drawn for every target
    either way, so the weight-matrix directions do not depend on ``ignore``.

    Args:
        model: the model at the centre ``theta0`` (any device and floating dtype).
        seed: seeds a fresh CPU generator; may be ``None`` only when ``generator`` is given.
        norm: ``"filter"``, ``"layer"``, ``"weight"``, ``"dfilter"``, ``"dlayer"`` or
            ``"none"``.
        ignore: ``"biasbn"`` or ``"none"``.
        dir_type: ``"weights"`` or ``"states"``.
        generator: a CPU generator to draw from instead (``seed`` is then not used); lets
            :func:`create_directions` draw x and y from one stream.

    Returns:
        name -> float32 CPU tensor shaped like the target, in model order.

    .. note::
       loss-landscape's defaults are ``norm=""`` and ``ignore=""`` (raw N(0, 1) weight
       directions and ``d = w`` for 1-D tensors) and its seed is fixed at 123; samlab defaults
       to the paper's ``filter`` / ``biasbn`` and honours ``seed``.
    """
    norm = _canonical_norm(norm)
    ignore = _canonical_ignore(ignore)
    targets = direction_targets(model, dir_type)
    if generator is None:
        if seed is None:
            raise ValueError("random_direction needs a seed (or a generator)")
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
    elif generator.device.type != "cpu":
        raise ValueError(
            f"directions are drawn on a CPU generator (device-independent), got one on "
            f"{generator.device}"
        )
    direction: dict[str, Tensor] = {}
    for name, target in targets.items():
        w = _cpu32(target)
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32)
        if w.ndim <= 1:
            d = torch.zeros_like(d) if ignore == "biasbn" else w.clone()
        else:
            _normalize_(d, w, norm)
        direction[name] = d
    return direction


# --------------------------------------------------------------------------------------------
# Directions for a surface
# --------------------------------------------------------------------------------------------


def create_directions(
    model: nn.Module,
    *,
    seed: int = 0,
    xnorm: str = "filter",
    ynorm: str = "filter",
    xignore: str = "biasbn",
    yignore: str = "biasbn",
    dir_type: str = "weights",
    ndim: int = 2,
    same_dir: bool = False,
    orthogonalize: bool = False,
    model2: Any = None,
    model3: Any = None,
) -> Directions:
    """The x (and y) directions of a 1D or 2D loss surface through ``model``.

    - Random (default): x and y from :func:`random_direction`, drawn from **one** CPU
      generator seeded with ``seed``, x first, each with its own norm / ignore rule.
    - ``model2``: x = model2 − model, a plain difference (not normalised, nothing ignored),
      so ``x = 1`` is model2 (interpolation between two checkpoints; use
      ``dir_type="states"`` to interpolate BatchNorm running statistics too). With
      ``ndim=2`` and no ``model3``, y is random (the first draw of the generator).
    - ``model3``: y = model3 − model, so the plane passes through all three models.
    - ``same_dir``: y is a copy of x.
    - ``orthogonalize``: y is made orthogonal to x by Gram–Schmidt on the flat vectors, then
      rescaled to its former norm (per-filter norms are then only approximately those of
      the weights); ``meta["cosine"]`` keeps the cosine *before* orthogonalisation.

    Args:
        model: the centre ``theta0``.
        seed: generator seed (recorded in ``meta``).
        xnorm, ynorm: normalisation of random x / y (see :func:`random_direction`).
        xignore, yignore: rule for 1-D tensors of random x / y.
        dir_type: ``"weights"`` or ``"states"``.
        ndim: 1 (x only) or 2.
        same_dir: y = x (2D only).
        orthogonalize: make y orthogonal to x (2D only).
        model2, model3: ``nn.Module``, state_dict, samlab checkpoint dict (its ``"model"``
            entry is used) or a checkpoint path (loaded with ``weights_only=True``).

    Returns:
        A :class:`Directions` with ``meta`` holding ``kind`` ("random", "interpolation" when
        x comes from model2, "plane" when y comes from model3), ``seed``, the norms and ignore
        rules actually applied (``"none"`` for a difference), ``same_dir``, ``orthogonalized``
        and ``cosine``.

    .. note::
       loss-landscape never orthogonalises (it only prints the cosine, ~0 for large random
       vectors); marcellodebernardi/loss-landscapes orthogonalises *before* normalising, which
       undoes the orthogonality. samlab orthogonalises after normalising, on request.
    """
    _check_dir_type(dir_type)
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")
    if ndim == 1 and (same_dir or orthogonalize or model3 is not None):
        raise ValueError("same_dir, orthogonalize and model3 need ndim=2")
    if same_dir and model3 is not None:
        raise ValueError("same_dir and model3 both define y; give one")
    if same_dir and orthogonalize:
        raise ValueError("same_dir and orthogonalize contradict each other (y would be 0)")
    xnorm, ynorm = _canonical_norm(xnorm), _canonical_norm(ynorm)
    xignore, yignore = _canonical_ignore(xignore), _canonical_ignore(yignore)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    targets = direction_targets(model, dir_type)

    if model2 is not None:
        x = _difference(targets, model2, "model2")
        xnorm_used, xignore_used = "none", "none"
    else:
        x = random_direction(
            model, seed=seed, norm=xnorm, ignore=xignore, dir_type=dir_type, generator=generator
        )
        xnorm_used, xignore_used = xnorm, xignore

    y: dict[str, Tensor] | None = None
    ynorm_used: str | None = None
    yignore_used: str | None = None
    cosine: float | None = None
    if ndim == 2:
        if same_dir:
            y = {n: t.clone() for n, t in x.items()}
            ynorm_used, yignore_used = xnorm_used, xignore_used
        elif model3 is not None:
            y = _difference(targets, model3, "model3")
            ynorm_used, yignore_used = "none", "none"
        else:
            y = random_direction(
                model, seed=seed, norm=ynorm, ignore=yignore, dir_type=dir_type, generator=generator
            )
            ynorm_used, yignore_used = ynorm, yignore
        cosine = _cosine(x, y)
        if orthogonalize:
            y = _orthogonalize(x, y)

    kind = "plane" if model3 is not None else "interpolation" if model2 is not None else "random"
    meta = {
        "kind": kind,
        "seed": int(seed),
        "xnorm": xnorm_used,
        "ynorm": ynorm_used,
        "xignore": xignore_used,
        "yignore": yignore_used,
        "same_dir": bool(same_dir),
        "orthogonalized": bool(orthogonalize),
        "cosine": cosine,
    }
    return Directions(x=x, y=y, dir_type=dir_type, meta=meta)


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
    return [dict(_load_checkpoint_state(Path(f))) for f in files]


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
        key = _same_storage_key(value)
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
    _check_dir_type(dir_type)
    ignore = _canonical_ignore(ignore)
    if len(states) < 3:
        raise ValueError(f"PCA of a trajectory needs at least 3 states, got {len(states)}")
    state_dicts = [_as_state(s, f"states[{i}]") for i, s in enumerate(states)]
    final_sd = state_dicts[-1] if final is None else _as_state(final, "final")
    names = _pca_names(final_sd, model, dir_type)
    if not names:
        raise ValueError("the trajectory has no floating-point tensors to analyse")
    moved = {n: s for n, s in names.items() if not (ignore == "biasbn" and len(s) <= 1)}
    n_states = len(state_dicts)

    def diffs(name: str, shape: torch.Size) -> Tensor:
        centre = _lookup(final_sd, name, shape, "final").detach().to("cpu", torch.float64)
        rows = [
            _lookup(sd, name, shape, f"states[{i}]").detach().to("cpu", torch.float64) - centre
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
        "cosine": _cosine(x, y),
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
    centre = _as_state(center_state, "center_state")
    shapes = {n: directions.x[n].shape for n in directions.names()}

    def flat64(state: Mapping[str, Tensor], what: str) -> Tensor:
        return torch.cat(
            [
                _lookup(state, n, s, what).detach().cpu().double().reshape(-1)
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
        diff = flat64(_as_state(state, f"states[{t}]"), f"states[{t}]") - centre_flat
        inner = torch.stack([diff @ d for d in flat_dirs])
        if method == "cos":
            coords = inner / torch.diagonal(gram).sqrt()
        else:
            coords = torch.linalg.solve(gram, inner)
        out[t] = coords.numpy()
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _encode_attr(value: Any) -> tuple[Any, bool]:
    """(attribute value, JSON-encoded?) for one meta entry."""
    if isinstance(value, (bool, int, float, str)) and not (
        isinstance(value, float) and not math.isfinite(value)
    ):
        return value, False
    return json.dumps(value), True


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def save_directions(path: str | os.PathLike, directions: Directions) -> Path:
    """Write ``directions`` to an HDF5 file (overwriting it), atomically.

    Layout: groups ``xdirection/`` and (2D) ``ydirection/`` with one float32 dataset per
    tensor **name**, in model order (the groups track creation order); file attributes: every
    ``meta`` entry (non-scalars and ``None`` JSON-encoded, their keys listed in the JSON
    attribute ``json_keys``), ``dir_type``, ``names`` (JSON list) and ``schema_version``. For
    PCA directions the datasets ``explained_variance_ratio_``, ``explained_variance_`` and
    ``singular_values_`` are written too, as loss-landscape's plotting reads them.

    .. note::
       loss-landscape stores datasets ``"0"``, ``"1"``, ... by position, so a file written for
       one architecture is silently applied to another; samlab stores names and checks them.
    """
    h5py = _import_h5py()
    path = Path(path)
    for name in directions.names():
        if "/" in name:
            raise ValueError(f"tensor name {name!r} contains '/', which HDF5 cannot store")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            groups = [("xdirection", directions.x)]
            if directions.y is not None:
                groups.append(("ydirection", directions.y))
            for group_name, direction in groups:
                group = f.create_group(group_name, track_order=True)
                for name, tensor in direction.items():
                    data = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
                    group.create_dataset(name, data=data)
            json_keys = []
            for key, value in directions.meta.items():
                encoded, is_json = _encode_attr(value)
                f.attrs[key] = encoded
                if is_json:
                    json_keys.append(key)
            f.attrs["json_keys"] = json.dumps(json_keys)
            f.attrs["names"] = json.dumps(directions.names())
            f.attrs["dir_type"] = directions.dir_type
            f.attrs["schema_version"] = SCHEMA_VERSION
            for key in ("explained_variance_ratio", "explained_variance", "singular_values"):
                if key in directions.meta:
                    f.create_dataset(key + "_", data=np.asarray(directions.meta[key], np.float64))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _read_group(group: Any, names: Sequence[str]) -> dict[str, Tensor]:
    return {
        name: torch.from_numpy(np.array(group[name][()], dtype=np.float32, copy=True))
        for name in names
    }


def _check_against(
    direction_names: Sequence[str],
    shapes: Mapping[str, tuple[int, ...]],
    targets: Mapping[str, Tensor],
    path: Path,
) -> None:
    for name, target in targets.items():
        if name not in shapes:
            raise ValueError(f"{path}: the model's tensor {name!r} has no direction ({_ARCH_HINT})")
        if tuple(shapes[name]) != tuple(target.shape):
            raise ValueError(
                f"{path}: direction {name!r} has shape {tuple(shapes[name])}, the model's tensor "
                f"{tuple(target.shape)} ({_ARCH_HINT})"
            )
    for name in direction_names:
        if name not in targets:
            raise ValueError(f"{path}: direction {name!r} is not in the model ({_ARCH_HINT})")


def _positional_targets(
    model: nn.Module, n: int, shapes: Sequence[tuple[int, ...]], dir_type: str | None, path: Path
) -> tuple[str, list[str | None]]:
    """(dir_type, name per position or None for positions samlab drops) for a loss-landscape
    file with ``n`` positional datasets."""
    candidates = {
        "weights": [(name, tuple(p.shape)) for name, p in model.named_parameters()],
        "states": [
            (name, tuple(v.shape))
            for name, v in model.state_dict(keep_vars=True).items()
            if isinstance(v, Tensor)
        ],
    }
    order = [dir_type] if dir_type is not None else ["weights", "states"]
    first_error = None
    for kind in order:
        entries = candidates[kind]
        if len(entries) != n:
            first_error = first_error or (
                f"{path}: {n} directions by position, the model has {len(entries)} "
                f"{'parameters' if kind == 'weights' else 'state_dict entries'} ({_ARCH_HINT})"
            )
            continue
        mismatch = next(
            (i for i, (_, shape) in enumerate(entries) if tuple(shapes[i]) != shape), None
        )
        if mismatch is not None:
            first_error = first_error or (
                f"{path}: direction {mismatch} has shape {tuple(shapes[mismatch])}, the model's "
                f"{kind} entry {mismatch} ({entries[mismatch][0]!r}) {entries[mismatch][1]} "
                f"({_ARCH_HINT})"
            )
            continue
        keep = set(direction_targets(model, kind))
        return kind, [name if name in keep else None for name, _ in entries]
    raise ValueError(first_error)


def load_directions(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    dir_type: str | None = None,
) -> Directions:
    """Read a direction file written by :func:`save_directions` or by loss-landscape.

    samlab files are read by name; with ``model`` given, their names and shapes must be
    exactly those of ``direction_targets(model, dir_type)``. loss-landscape files (datasets
    ``"0"``, ``"1"``, ... by position) need ``model``: positions are mapped to its
    ``named_parameters()`` order (``weights``) or its ``state_dict()`` order (``states``),
    chosen by the count and shapes unless ``dir_type`` says which; integer buffers and tied
    duplicates are dropped (samlab never moves them). Their ``meta`` has ``kind="file"`` and
    ``source="loss-landscape"`` (plus ``explained_variance_ratio`` for PCA files).

    Args:
        path: the HDF5 file.
        model: the model the directions belong to (checked against; required for
            loss-landscape files).
        dir_type: expected ``"weights"`` or ``"states"`` (``None``: as stored / inferred).

    Raises:
        ValueError: the file is missing, not HDF5 (corrupt or foreign), not a direction file,
            or does not match ``model`` (naming the first mismatch).
    """
    h5py = _import_h5py()
    path = Path(path)
    if dir_type is not None:
        _check_dir_type(dir_type)
    if not path.is_file():
        raise ValueError(f"direction file {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{path} is not a readable HDF5 file (corrupt or foreign?): {err}"
        ) from err
    with handle as f:
        if "xdirection" not in f or not isinstance(f["xdirection"], h5py.Group):
            raise ValueError(f"{path} is not a direction file (no 'xdirection' group)")
        x_group = f["xdirection"]
        y_group = f.get("ydirection")
        if y_group is not None and not isinstance(y_group, h5py.Group):
            raise ValueError(f"{path}: 'ydirection' is not a group")
        attrs = {key: _decode_attr(value) for key, value in f.attrs.items()}
        try:
            if "schema_version" in attrs:
                return _load_named(path, x_group, y_group, attrs, model, dir_type)
            return _load_positional(path, f, x_group, y_group, model, dir_type)
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: malformed direction file ({err})") from err


def _load_named(
    path: Path,
    x_group: Any,
    y_group: Any,
    attrs: dict[str, Any],
    model: nn.Module | None,
    dir_type: str | None,
) -> Directions:
    if int(attrs["schema_version"]) > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema_version {attrs['schema_version']}, newer than this landscape "
            f"({SCHEMA_VERSION})"
        )
    stored_type = attrs.get("dir_type")
    if stored_type not in DIR_TYPES:
        raise ValueError(f"{path}: dir_type attribute {stored_type!r} is not one of {DIR_TYPES}")
    if dir_type is not None and dir_type != stored_type:
        raise ValueError(f"{path} holds {stored_type!r} directions, {dir_type!r} was asked for")
    names = json.loads(attrs["names"]) if "names" in attrs else list(x_group.keys())
    if set(names) != set(x_group.keys()):
        raise ValueError(f"{path}: the 'names' attribute does not match the xdirection datasets")
    if y_group is not None and set(y_group.keys()) != set(names):
        raise ValueError(f"{path}: xdirection and ydirection hold different names")
    if model is not None:
        targets = direction_targets(model, stored_type)
        shapes = {name: tuple(x_group[name].shape) for name in names}
        _check_against(names, shapes, targets, path)
        names = list(targets)  # model order
    x = _read_group(x_group, names)
    y = None if y_group is None else _read_group(y_group, names)
    json_keys = set(json.loads(attrs.get("json_keys", "[]")))
    reserved = {"json_keys", "names", "dir_type", "schema_version"}
    meta = {
        key: json.loads(value) if key in json_keys else value
        for key, value in attrs.items()
        if key not in reserved
    }
    return Directions(x=x, y=y, dir_type=stored_type, meta=meta)


def _load_positional(
    path: Path,
    f: Any,
    x_group: Any,
    y_group: Any,
    model: nn.Module | None,
    dir_type: str | None,
) -> Directions:
    keys = list(x_group.keys())
    if not keys or not all(k.isdigit() for k in keys):
        raise ValueError(
            f"{path} has no schema_version and its xdirection datasets are not positional "
            "('0', '1', ...): not a direction file"
        )
    if model is None:
        raise ValueError(
            f"{path} is a loss-landscape direction file (datasets by position); pass model= "
            "to map positions to tensor names"
        )
    positions = sorted(keys, key=int)
    if positions != [str(i) for i in range(len(positions))]:
        raise ValueError(f"{path}: positional datasets are not 0..{len(positions) - 1}")
    if y_group is not None and sorted(y_group.keys(), key=int) != positions:
        raise ValueError(f"{path}: xdirection and ydirection hold different positions")
    shapes = [tuple(x_group[p].shape) for p in positions]
    kind, names = _positional_targets(model, len(positions), shapes, dir_type, path)

    def read(group: Any) -> dict[str, Tensor]:
        return {
            name: torch.from_numpy(np.array(group[p][()], dtype=np.float32, copy=True))
            for p, name in zip(positions, names)
            if name is not None
        }

    x = read(x_group)
    y = None if y_group is None else read(y_group)
    meta: dict[str, Any] = {
        "kind": "file",
        "source": "loss-landscape",
        "seed": None,
        "xnorm": None,
        "ynorm": None,
        "xignore": None,
        "yignore": None,
        "same_dir": False,
        "orthogonalized": False,
        "cosine": None if y is None else _cosine(x, y),
    }
    for key in ("explained_variance_ratio", "explained_variance", "singular_values"):
        if key + "_" in f:
            meta[key] = [float(v) for v in np.asarray(f[key + "_"][()]).reshape(-1)]
    return Directions(x=x, y=y, dir_type=kind, meta=meta)
