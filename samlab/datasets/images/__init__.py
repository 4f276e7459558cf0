"""Image classification data: CIFAR-10/100 from their python-pickle files, ImageNet folders,
the embedded 8x8 digits and generated fake data, under canonical names and the seed projects'
spellings, with the seeds' augmentations (crop + flip, Cutout).

* :func:`resolve_image_dataset`, :func:`get_image_dataset_spec`, :class:`ImageDatasetSpec`
  (:mod:`~samlab.datasets.images.specs`): names, classes, shapes, normalisation constants;
* :func:`load_image_dataset`, :func:`data_root`, :func:`has_cifar`, :func:`image_eval_data`
  (:mod:`~samlab.datasets.images.loading`): a ``Dataset`` per split, where the files are
  looked for (``root`` > ``$SAMLAB_DATA`` > ``./data``), whether a CIFAR copy is there, and a
  fixed unaugmented batch as tensors;
* :class:`Cutout` and the pipelines (:mod:`~samlab.datasets.images.transforms`);
* :class:`FakeImages`, generated data (:mod:`~samlab.datasets.images.fake`);
* the CIFAR reader (:mod:`~samlab.datasets.images.cifar`).
"""

from .cifar import CIFAR_LAYOUTS, CifarDataset, missing_cifar_files, read_cifar
from .fake import FakeImages
from .loading import (
    DEFAULT_FAKE_SIZES,
    data_root,
    has_cifar,
    image_eval_data,
    load_image_dataset,
)
from .specs import (
    AUGMENTATIONS,
    IMAGE_DATASET_NAMES,
    IMAGE_DATASETS,
    ImageDatasetSpec,
    get_image_dataset_spec,
    resolve_image_dataset,
)
from .transforms import Cutout, TensorAugment, imagenet_transform, tensor_transform

__all__ = [
    "AUGMENTATIONS",
    "CIFAR_LAYOUTS",
    "DEFAULT_FAKE_SIZES",
    "IMAGE_DATASETS",
    "IMAGE_DATASET_NAMES",
    "CifarDataset",
    "Cutout",
    "FakeImages",
    "ImageDatasetSpec",
    "TensorAugment",
    "data_root",
    "get_image_dataset_spec",
    "has_cifar",
    "image_eval_data",
    "imagenet_transform",
    "load_image_dataset",
    "missing_cifar_files",
    "read_cifar",
    "resolve_image_dataset",
    "tensor_transform",
]
