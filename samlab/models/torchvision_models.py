"""torchvision's ImageNet classifiers under registry names ``torchvision:<name>``.

Any name that ``torchvision.models.list_models(module=torchvision.models)`` returns
(``resnet50``, ``vgg16_bn``, ``vit_b_16``, ``convnext_tiny``, ...) is a samlab model spelled
``torchvision:<name>``; :func:`~samlab.models.create_model` builds it through
``torchvision.models.get_model(name, weights=None, num_classes=...)``: freshly initialised,
never downloading weights. Inputs are (N, 3, 224, 224) ImageNet images (299x299 for
``inception_v3``); most of these models average-pool before their head, so smaller images
(64x64 smoke runs) work too, but the ViTs need exactly their ``image_size``.

.. note:: ``googlenet`` and ``inception_v3`` are built with ``aux_logits=False`` unless asked
   otherwise: with auxiliary heads they return a named tuple in training mode, not logits.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._checks import check_positive

__all__ = [
    "TORCHVISION_PREFIX",
    "is_torchvision_name",
    "torchvision_classifiers",
    "torchvision_input_shape",
    "torchvision_model",
]

#: Registry names of torchvision models start with this.
TORCHVISION_PREFIX = "torchvision:"

_AUX_LOGITS = ("googlenet", "inception_v3")


def is_torchvision_name(name: object) -> bool:
    """True for a string spelled ``torchvision:<name>`` (the name itself is not checked)."""
    return isinstance(name, str) and name.startswith(TORCHVISION_PREFIX)


def torchvision_classifiers() -> list[str]:
    """The names (without the prefix) of torchvision's ImageNet classifiers, sorted."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _bare(name: str) -> str:
    bare = name[len(TORCHVISION_PREFIX) :] if is_torchvision_name(name) else name
    if bare not in torchvision_classifiers():
        raise ValueError(
            f"torchvision has no ImageNet classifier {bare!r}; known: "
            f"{', '.join(torchvision_classifiers())}"
        )
    return bare


def torchvision_input_shape(name: str) -> tuple[int, int, int]:
    """One sample's shape for ``name`` (with or without the prefix): (3, 299, 299) for
    ``inception_v3``, else (3, 224, 224)."""
    return (3, 299, 299) if _bare(name) == "inception_v3" else (3, 224, 224)


def torchvision_model(
    name: str, num_classes: int = 1000, *, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """torchvision's ``name`` (with or without the ``torchvision:`` prefix), no weights loaded.

    ``num_classes`` sizes the head; ``kwargs`` go to the torchvision builder. ``in_channels``
    must be 3 (torchvision's stems are built for RGB); ``ValueError`` otherwise.
    """
    import torchvision

    bare = _bare(name)
    check_positive(num_classes=num_classes)
    if in_channels != 3:
        raise ValueError(
            f"torchvision's {bare} takes 3-channel images, got in_channels={in_channels}; use a "
            "samlab CIFAR model (e.g. resnet18_cifar) for other channel counts"
        )
    if "weights" in kwargs and kwargs["weights"] is not None:
        raise ValueError("samlab builds torchvision models without weights (no downloads)")
    kwargs.pop("weights", None)
    if bare in _AUX_LOGITS:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    return torchvision.models.get_model(bare, weights=None, num_classes=num_classes, **kwargs)
