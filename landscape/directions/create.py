"""Random directions, and the x (and y) directions of a surface (Li et al., NeurIPS 2018).

:func:`random_direction` draws one Gaussian direction and normalises it against the model's
tensors (filter, layer, weight or no normalisation; 1-D tensors by the ignore rule);
:func:`create_directions` makes the directions of a 1D or 2D surface: random ones drawn from one
seeded generator, differences towards other checkpoints (interpolation, the plane through
three models), optionally orthogonalised.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from landscape.directions.normalise import cosine, cpu32, gram_schmidt, normalize_
from landscape.directions.states import difference
from landscape.directions.value import (
    Directions,
    canonical_ignore,
    canonical_norm,
    check_dir_type,
    direction_targets,
)

# --------------------------------------------------------------------------------------------
# Random directions
# --------------------------------------------------------------------------------------------


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
    norm = canonical_norm(norm)
    ignore = canonical_ignore(ignore)
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
        w = cpu32(target)
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32)
        if w.ndim <= 1:
            d = torch.zeros_like(d) if ignore == "biasbn" else w.clone()
        else:
            normalize_(d, w, norm)
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
    check_dir_type(dir_type)
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")
    if ndim == 1 and (same_dir or orthogonalize or model3 is not None):
        raise ValueError("same_dir, orthogonalize and model3 need ndim=2")
    if same_dir and model3 is not None:
        raise ValueError("same_dir and model3 both define y; give one")
    if same_dir and orthogonalize:
        raise ValueError("same_dir and orthogonalize contradict each other (y would be 0)")
    xnorm, ynorm = canonical_norm(xnorm), canonical_norm(ynorm)
    xignore, yignore = canonical_ignore(xignore), canonical_ignore(yignore)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    targets = direction_targets(model, dir_type)

    x, xnorm_used, xignore_used = _axis_direction(
        model, targets, model2, "model2", xnorm, xignore, dir_type, generator, seed
    )
    y: dict[str, Tensor] | None = None
    ynorm_used: str | None = None
    yignore_used: str | None = None
    cos_xy: float | None = None
    if ndim == 2:
        if same_dir:
            y = {n: t.clone() for n, t in x.items()}
            ynorm_used, yignore_used = xnorm_used, xignore_used
        else:
            y, ynorm_used, yignore_used = _axis_direction(
                model, targets, model3, "model3", ynorm, yignore, dir_type, generator, seed
            )
        cos_xy = cosine(x, y)
        if orthogonalize:
            y = gram_schmidt(x, y)

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
        "cosine": cos_xy,
    }
    return Directions(x=x, y=y, dir_type=dir_type, meta=meta)


def _axis_direction(
    model: nn.Module,
    targets: dict[str, Tensor],
    other: Any,
    what: str,
    norm: str,
    ignore: str,
    dir_type: str,
    generator: torch.Generator,
    seed: int,
) -> tuple[dict[str, Tensor], str, str]:
    """One axis of a surface: ``(direction, norm applied, ignore rule applied)``. The plain
    difference ``other - model`` when another model is given, else the next random direction
    of ``generator``."""
    if other is not None:
        return difference(targets, other, what), "none", "none"
    direction = random_direction(
        model, seed=seed, norm=norm, ignore=ignore, dir_type=dir_type, generator=generator
    )
    return direction, norm, ignore
