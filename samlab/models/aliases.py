"""The seed projects' model spellings, resolved to registry names together with the dataset.

The same spelling can mean two networks: SSAM's ``--model resnet18`` is the CIFAR-stem ResNet-18
on CIFAR and torchvision's ResNet-18 on ImageNet. :func:`resolve_model_name` takes the dataset
into account and returns a registry name (registry names themselves pass through unchanged).

Spelling (projects) -> on CIFAR, the digits and fake data / on ImageNet:

* ``resnet18``, ``resnet34``, ``resnet50`` (SSAM; SAM.v2's ``--arch resnet --depth 18/50``) ->
  ``resnet{18,34,50}_cifar`` / ``torchvision:resnet{18,34,50}``;
* ``resnet101``, ``resnet152`` (SSAM) -> ValueError / ``torchvision:resnet{101,152}``;
* ``resnet20``, ``resnet32``, ``resnet56`` (sam.pytorch, SAM.v2, loss-landscape) ->
  ``resnet{20,32,56}_cifar`` on both (CIFAR-only networks);
* ``wideresnet28x10`` (SSAM), ``wideresnet16x8``, ``wideresnet28x2`` -> ``wrn28_10``,
  ``wrn16_8``, ``wrn28_2`` on both; sam.pytorch's ``wrn28_2`` etc. are registry names;
* ``vgg16_bn`` (SSAM), ``vgg16`` (SAM.v2's ``--arch vgg --depth 16``) -> ``vgg16_bn_cifar`` /
  ``torchvision:vgg16_bn``;
* ``vgg9`` (loss-landscape, seed 003) and ``resnext29_32x4d`` (sam.pytorch): registry names;
* ``vit_tiny`` (SSAM's ViT command) -> ``vit_small`` on both (*);
* any other torchvision classifier name -> ValueError / ``torchvision:<name>``.

(*) SSAM's run script names a ``vit_tiny`` that its code does not define; samlab's small ViT
stands in for it, at its own size.

SAM.v2 names its network by ``--arch`` and ``--depth``: pass ``depth`` with the family name
(``resolve_model_name("resnet", "cifar10", depth=20)`` -> ``resnet20_cifar``).

.. note:: The CIFAR networks of SAM.v2 (GraSP-style ResNet-32 and VGG-16) and of
   loss-landscape (option-B ResNet-56) differ in small details from samlab's; see the docstrings
   of :mod:`samlab.models.resnet` and :mod:`samlab.models.vgg` for what is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ._registry import MODELS
from .torchvision_models import TORCHVISION_PREFIX, is_torchvision_name, torchvision_classifiers

__all__ = ["ARCH_FAMILIES", "MODEL_ALIASES", "resolve_model_name"]

#: spelling -> (registry name on small images or None, registry name on ImageNet or None);
#: None on ImageNet means "the small-image network", None on small images means "ImageNet only".
MODEL_ALIASES: Mapping[str, tuple[str | None, str | None]] = MappingProxyType(
    {
        "resnet18": ("resnet18_cifar", "torchvision:resnet18"),
        "resnet34": ("resnet34_cifar", "torchvision:resnet34"),
        "resnet50": ("resnet50_cifar", "torchvision:resnet50"),
        "resnet101": (None, "torchvision:resnet101"),
        "resnet152": (None, "torchvision:resnet152"),
        "resnet20": ("resnet20_cifar", None),
        "resnet32": ("resnet32_cifar", None),
        "resnet56": ("resnet56_cifar", None),
        "wideresnet28x10": ("wrn28_10", None),
        "wideresnet16x8": ("wrn16_8", None),
        "wideresnet28x2": ("wrn28_2", None),
        "vgg16_bn": ("vgg16_bn_cifar", "torchvision:vgg16_bn"),
        "vgg16": ("vgg16_bn_cifar", "torchvision:vgg16_bn"),
        "vit_tiny": ("vit_small", None),
    }
)

#: SAM.v2's ``--arch`` values that take a ``--depth``, with the depths samlab builds.
ARCH_FAMILIES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"resnet": (18, 20, 32, 34, 50, 56, 101, 152), "vgg": (9, 16)}
)


def _is_imagenet(dataset: str | None) -> bool:
    return dataset is not None and str(dataset).lower().startswith("imagenet")


def _known() -> str:
    return (
        f"registry names: {', '.join(sorted(MODELS))}; "
        f"aliases: {', '.join(sorted(MODEL_ALIASES))}; "
        f"families with depth: {', '.join(ARCH_FAMILIES)}; and {TORCHVISION_PREFIX}<name> "
        "(or a bare torchvision name on ImageNet)"
    )


def _with_depth(name: str, depth: int) -> str:
    family = name.lower()
    if family not in ARCH_FAMILIES:
        raise ValueError(
            f"depth={depth} goes with an architecture family ({', '.join(ARCH_FAMILIES)}), "
            f"not with the model name {name!r}"
        )
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in ARCH_FAMILIES[family]:
        depths = ", ".join(str(d) for d in ARCH_FAMILIES[family])
        raise ValueError(f"{family} is available at depth {depths}; got depth={depth!r}")
    return f"{family}{depth}"


def resolve_model_name(name: str, dataset: str | None = None, *, depth: int | None = None) -> str:
    """The registry name meant by ``name`` on ``dataset`` (see the module's table).

    ``dataset`` is a dataset name in any spelling; names starting with ``imagenet`` (any case:
    ``imagenet``, ``ImageNet_base``) select the ImageNet networks, anything else (CIFAR, digits,
    fake data, None) the small-image ones. ``depth`` completes a family name (``"resnet"``,
    ``"vgg"``) as SAM.v2's ``--arch``/``--depth`` do. Registry names and ``torchvision:<name>``
    pass through unchanged. ``ValueError`` listing the known names and aliases otherwise.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}; {_known()}")
    if depth is not None:
        name = _with_depth(name, depth)
    elif name.lower() in ARCH_FAMILIES:
        raise ValueError(
            f"{name!r} is an architecture family: give its depth "
            f"({', '.join(str(d) for d in ARCH_FAMILIES[name.lower()])}), e.g. --depth"
        )
    if name in MODELS:
        return name
    imagenet = _is_imagenet(dataset)
    if is_torchvision_name(name):
        bare = name[len(TORCHVISION_PREFIX) :]
        if bare not in torchvision_classifiers():
            raise ValueError(f"torchvision has no ImageNet classifier {bare!r}; {_known()}")
        return name
    key = name.lower()
    if key in MODELS:
        return key
    if key in MODEL_ALIASES:
        small, large = MODEL_ALIASES[key]
        if imagenet:
            return large or small  # type: ignore[return-value]
        if small is None:
            raise ValueError(
                f"{name!r} is only available for ImageNet ({large}); samlab has no small-image "
                f"version. {_known()}"
            )
        return small
    if imagenet and key in torchvision_classifiers():
        return TORCHVISION_PREFIX + key
    raise ValueError(f"unknown model {name!r} for dataset {dataset!r}; {_known()}")
