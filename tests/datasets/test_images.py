"""samlab.datasets.images: names, the CIFAR reader on files in the real pickle format, the
augmentations (crop + flip, Cutout), ImageNet folders, digits, fake data, the data root and
the missing-files message. Nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from samlab.datasets import (
    Cutout,
    ImageDatasetSpec,
    data_root,
    get_image_dataset_spec,
    load_image_dataset,
    resolve_image_dataset,
)
from tests.image_fixtures import write_cifar10, write_cifar100, write_image_folder


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar10(root, n_train=13, n_test=5), write_cifar100(root, 7, 3, seed=1)


def normalised(data: np.ndarray, spec: ImageDatasetSpec) -> torch.Tensor:
    """The expected test-time tensor of raw CIFAR rows (N, 3072)."""
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (images - mean) / std


# -- names and specs ------------------------------------------------------------------------

SPELLINGS = [
    ("cifar10", ("cifar10", "base")),
    ("CIFAR10_base", ("cifar10", "base")),
    ("CIFAR10_cutout", ("cifar10", "cutout")),
    ("CIFAR10_cut", ("cifar10", "cutout")),
    ("cifar100", ("cifar100", "base")),
    ("CIFAR100_base", ("cifar100", "base")),
    ("CIFAR100_cutout", ("cifar100", "cutout")),
    ("ImageNet_base", ("imagenet", "base")),
    ("imagenet", ("imagenet", "base")),
    ("digits", ("digits", "none")),
    ("fakedata", ("fakedata", "base")),
    ("FakeData", ("fakedata", "base")),
]


@pytest.mark.parametrize(("spelling", "expected"), SPELLINGS)
def test_seed_spellings_resolve(spelling: str, expected: tuple[str, str]) -> None:
    assert resolve_image_dataset(spelling) == expected
    assert get_image_dataset_spec(spelling).name == expected[0]


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(ValueError, match="unknown image dataset 'svhn'") as info:
        resolve_image_dataset("svhn")
    for name in ("cifar10", "CIFAR10_cutout", "ImageNet_base", "digits", "fakedata"):
        assert name in str(info.value)


def test_specs() -> None:
    cifar10 = get_image_dataset_spec("cifar10")
    assert cifar10 == ImageDatasetSpec(
        "cifar10",
        10,
        (3, 32, 32),
        (125.3 / 255, 123.0 / 255, 113.9 / 255),
        (63.0 / 255, 62.1 / 255, 66.7 / 255),
    )
    assert get_image_dataset_spec("CIFAR100_cutout").num_classes == 100
    imagenet = get_image_dataset_spec("ImageNet_base")
    assert (imagenet.num_classes, imagenet.input_shape) == (1000, (3, 224, 224))
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    assert get_image_dataset_spec("digits").input_shape == (1, 8, 8)
    with pytest.raises(AttributeError):
        cifar10.num_classes = 11  # frozen


# -- CIFAR ------------------------------------------------------------------------------------


def test_cifar10_test_split_values_labels_and_normalisation(cifar_root) -> None:
    root, written, _ = cifar_root
    data = load_image_dataset("cifar10", "test", root=root)
    spec = get_image_dataset_spec("cifar10")
    assert len(data) == 5 and data.classes[:2] == ["airplane", "automobile"]
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = [data[i][1] for i in range(len(data))]
    torch.testing.assert_close(images, normalised(written["test"][0], spec))
    assert labels == written["test"][1].tolist()
    # pixel (channel 1, row 2, column 3) is byte 1024 + 2 * 32 + 3 of the row
    raw = int(written["test"][0][0, 1024 + 2 * 32 + 3])
    expected = (raw / 255 - spec.mean[1]) / spec.std[1]
    assert images[0, 1, 2, 3].item() == pytest.approx(expected, rel=1e-6)


def test_cifar10_train_reads_the_five_batches_in_order(cifar_root) -> None:
    root, written, _ = cifar_root
    data = load_image_dataset("CIFAR10_base", "train", root=root, augment="none")
    assert len(data) == 13
    spec = get_image_dataset_spec("cifar10")
    torch.testing.assert_close(
        torch.stack([x for x, _ in data]), normalised(written["train"][0], spec)
    )
    assert [y for _, y in data] == written["train"][1].tolist()


def test_cifar100_reads_fine_labels(cifar_root) -> None:
    root, _, written = cifar_root
    for split, n in (("train", 7), ("test", 3)):
        data = load_image_dataset("CIFAR100_base", split, root=root, augment="none")
        assert len(data) == n and data.classes[5] == "class_5"
        assert [y for _, y in data] == written[split][1].tolist()
        spec = get_image_dataset_spec("cifar100")
        torch.testing.assert_close(data[0][0], normalised(written[split][0][:1], spec)[0])


def test_base_augmentation_is_a_padded_crop_and_maybe_a_flip(cifar_root) -> None:
    root, written, _ = cifar_root
    spec = get_image_dataset_spec("cifar10")
    data = load_image_dataset("cifar10", "train", root=root)  # base by default for train
    raw = torch.from_numpy(written["train"][0][0].reshape(3, 32, 32)).float() / 255
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))  # black pixels
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    crops = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
    crops += [crop.flip(-1) for crop in crops]
    candidates = torch.stack([(crop - mean) / std for crop in crops])
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        image, _ = data[0]
        errors = (candidates - image).abs().flatten(1).max(1).values
        assert errors.min() < 1e-5
        seen.add(int(errors.argmin()))
    assert len(seen) > 5  # the crops and flips vary


def test_test_split_is_never_augmented_and_names_choose_cutout(cifar_root) -> None:
    root, _, _ = cifar_root
    test = load_image_dataset("CIFAR10_cutout", "test", root=root)
    assert torch.equal(test[0][0], test[0][0])
    assert test.transform.cutout is None and test.transform.padding is None
    train = load_image_dataset("CIFAR10_cut", "train", root=root)
    cutout = train.transform.cutout
    assert isinstance(cutout, Cutout) and (cutout.size, cutout.p) == (16, 0.5)
    assert train.transform.padding == 4
    base = load_image_dataset("CIFAR10_base", "train", root=root)
    assert base.transform.cutout is None and base.transform.padding == 4
    none = load_image_dataset("CIFAR10_cutout", "train", root=root, augment="none")
    assert none.transform.cutout is None and none.transform.padding is None
    with pytest.raises(ValueError, match="augment must be one of base, cutout, none"):
        load_image_dataset("cifar10", "train", root=root, augment="mixup")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_image_dataset("cifar10", "val", root=root)


def test_missing_cifar_files_name_the_files_and_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        load_image_dataset("CIFAR10_cutout", "train", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "data_batch_1" in message and "data_batch_5" in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "--download" in message and "--data-dir" in message
    write_cifar10(tmp_path, 5, 2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert len(load_image_dataset("cifar10", "train", root=tmp_path)) == 5
    with pytest.raises(FileNotFoundError, match="missing test_batch;"):
        load_image_dataset("cifar10", "test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*missing train;"):
        load_image_dataset("cifar100", "train", root=tmp_path)


def test_data_root_precedence(tmp_path, monkeypatch, cifar_root) -> None:
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    assert data_root() == data_root("") == data_root(None)
    assert str(data_root()) == "data"
    monkeypatch.setenv("SAMLAB_DATA", f"{cifar_root[0]}:{tmp_path}")
    assert data_root() == cifar_root[0]
    assert data_root(tmp_path) == tmp_path
    assert len(load_image_dataset("cifar10", "test")) == 5  # found through $SAMLAB_DATA
    with pytest.raises(FileNotFoundError, match=r"\(the data dir\)"):
        load_image_dataset("cifar10", "test", root=tmp_path)


# -- Cutout -----------------------------------------------------------------------------------


def expected_square(seed: int, size: int, height: int, width: int) -> tuple[slice, slice]:
    """Replay Cutout's draws: u, then the centre pixel as one integer below H * W."""
    generator = torch.Generator().manual_seed(seed)
    torch.rand((), generator=generator)
    y, x = divmod(int(torch.randint(height * width, (), generator=generator)), width)
    top, left = y - size // 2, x - size // 2
    return slice(max(top, 0), min(top + size, height)), slice(max(left, 0), min(left + size, width))


def test_cutout_p1_erases_exactly_one_clipped_square() -> None:
    image = torch.randn(3, 32, 32) + 5  # no zeros of its own
    clipped = 0
    for seed in range(60):
        out = Cutout(16, p=1.0, generator=torch.Generator().manual_seed(seed))(image)
        rows, cols = expected_square(seed, 16, 32, 32)
        expected = image.clone()
        expected[:, rows, cols] = 0
        assert torch.equal(out, expected)
        zero = (out == 0).all(0)
        height, width = rows.stop - rows.start, cols.stop - cols.start
        assert int(zero.sum()) == height * width <= 256
        clipped += height * width < 256
    assert clipped > 0  # centres near the border give clipped rectangles
    assert not (image == 0).any()  # the input is not modified


def test_cutout_p0_is_the_identity_and_p_half_is_seeded() -> None:
    image = torch.randn(3, 32, 32) + 5
    for seed in range(20):
        assert torch.equal(
            Cutout(16, p=0.0, generator=torch.Generator().manual_seed(seed))(image), image
        )
    cut = Cutout(16, p=0.5, generator=torch.Generator().manual_seed(7))
    again = Cutout(16, p=0.5, generator=torch.Generator().manual_seed(7))
    outs = [cut(image) for _ in range(40)]
    assert all(torch.equal(a, again(image)) for a in outs)
    erased = sum(bool((o == 0).any()) for o in outs)
    assert 5 < erased < 35  # about half
    torch.manual_seed(3)
    first = Cutout(8, p=1.0)(image)
    torch.manual_seed(3)
    assert torch.equal(first, Cutout(8, p=1.0)(image))  # global RNG when no generator


def test_cutout_validates() -> None:
    with pytest.raises(ValueError, match="size"):
        Cutout(0)
    with pytest.raises(ValueError, match="probability"):
        Cutout(16, p=1.5)


# -- ImageNet folders, digits, fake data ------------------------------------------------------


def test_imagenet_folders(tmp_path) -> None:
    write_image_folder(tmp_path / "imagenet", ["n01", "n02", "n03"], per_class=2, size=40)
    train = load_image_dataset("ImageNet_base", "train", root=tmp_path, image_size=32)
    assert len(train) == 6 and train.classes == ["n01", "n02", "n03"]
    image, label = train[5]
    assert image.shape == (3, 32, 32) and label == 2
    test = load_image_dataset("imagenet", "test", root=tmp_path / "imagenet", image_size=24)
    assert test[0][0].shape == (3, 24, 24)
    assert torch.equal(test[0][0], test[0][0])  # Resize + CenterCrop: deterministic
    batch, labels = next(iter(DataLoader(train, batch_size=4)))
    assert batch.shape == (4, 3, 32, 32) and labels.dtype == torch.int64
    with pytest.raises(FileNotFoundError, match=r"ImageNet train folder not found.*--data-dir"):
        load_image_dataset("imagenet", "train", root=tmp_path / "nothing")
    with pytest.raises(ValueError, match="cannot be downloaded"):
        load_image_dataset("imagenet", "train", root=tmp_path, download=True)


def test_digits() -> None:
    train, test = load_image_dataset("digits", "train"), load_image_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    image, label = test[0]
    assert image.shape == (1, 8, 8) and 0 <= int(label) < 10
    with pytest.raises(ValueError, match="no augmentation"):
        load_image_dataset("digits", "train", augment="base")


def test_fake_data_is_sized_per_spec_and_deterministic() -> None:
    train, test = load_image_dataset("fakedata", "train"), load_image_dataset("fakedata", "test")
    assert (len(train), len(test)) == (1024, 256)
    assert train[0][0].shape == (3, 32, 32) and train[0][0].dtype == torch.float32
    clean = load_image_dataset("fakedata", "train", augment="none")
    assert torch.equal(clean[3][0], clean[3][0])
    assert not torch.equal(clean[0][0], load_image_dataset("fakedata", "test")[0][0])
    fake100 = load_image_dataset("CIFAR100_cutout", "train", fake_size=50)
    assert len(fake100) == 50 and {y for _, y in fake100} <= set(range(100))
    big = load_image_dataset("ImageNet_base", "train", fake_size=3, image_size=64)
    assert big[0][0].shape == (3, 64, 64)
    digits = load_image_dataset("digits", "test", fake_size=4)
    assert digits[0][0].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="fake_size"):
        load_image_dataset("fakedata", "train", fake_size=0)


def test_loader_workers_batch_augmented_cifar(cifar_root) -> None:
    root, _, _ = cifar_root
    data = load_image_dataset("CIFAR10_cutout", "train", root=root)
    loader = DataLoader(data, batch_size=4, num_workers=1, shuffle=True)
    batches = list(loader)
    assert sum(len(y) for _, y in batches) == 13
    assert batches[0][0].shape == (4, 3, 32, 32) and batches[0][0].dtype == torch.float32
