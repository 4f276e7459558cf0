"""samlab.datasets.images.has_cifar (is a CIFAR copy under the data root?) and image_eval_data
(a fixed, unaugmented batch as tensors), on tiny files in the real CIFAR pickle format."""

from __future__ import annotations

import pytest
import torch

from samlab.datasets import digits_eval_data, get_image_dataset_spec
from samlab.datasets.images import has_cifar, image_eval_data
from tests.image_fixtures import write_cifar10, write_cifar100


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    return root, write_cifar10(root, n_train=12, n_test=6)


def test_has_cifar_finds_the_files_through_root_and_samlab_data(
    cifar10_root, tmp_path, monkeypatch
) -> None:
    root, _ = cifar10_root
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    assert has_cifar("cifar10", root)
    assert has_cifar("CIFAR10_cutout", root)  # any spelling of the variant
    assert not has_cifar("cifar100", root)  # only CIFAR-10 is there
    assert not has_cifar("cifar10", tmp_path)  # an empty folder
    monkeypatch.setenv("SAMLAB_DATA", str(root))
    assert has_cifar()  # the default name and root: cifar10 under $SAMLAB_DATA
    monkeypatch.setenv("SAMLAB_DATA", str(tmp_path))
    assert not has_cifar()
    monkeypatch.delenv("SAMLAB_DATA")
    monkeypatch.chdir(root.parent)  # ./data relative to the working directory
    assert not has_cifar()
    (root.parent / "data").symlink_to(root, target_is_directory=True)
    assert has_cifar()


def test_has_cifar_needs_every_file_of_both_splits(tmp_path) -> None:
    write_cifar10(tmp_path, n_train=10, n_test=2)
    write_cifar100(tmp_path, n_train=4, n_test=2)
    assert has_cifar("cifar10", tmp_path) and has_cifar("cifar100", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert not has_cifar("cifar10", tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    assert not has_cifar("cifar100", tmp_path)


def test_has_cifar_refuses_other_datasets() -> None:
    with pytest.raises(ValueError, match="not a CIFAR variant"):
        has_cifar("digits")
    with pytest.raises(ValueError, match="unknown image dataset"):
        has_cifar("mnist")


def test_image_eval_data_is_the_normalised_unaugmented_split(cifar10_root) -> None:
    root, written = cifar10_root
    inputs, labels = image_eval_data("CIFAR10_cutout", 5, root=root)
    assert inputs.shape == (5, 3, 32, 32) and inputs.dtype == torch.float32
    assert labels.dtype == torch.int64
    spec = get_image_dataset_spec("cifar10")
    raw = torch.from_numpy(written["train"][0][:5].reshape(-1, 3, 32, 32)).float() / 255
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(inputs, (raw - mean) / std)  # never cropped, flipped or cut out
    assert labels.tolist() == written["train"][1][:5].tolist()
    again = image_eval_data("cifar10", 5, root=root)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)
    test_inputs, test_labels = image_eval_data("cifar10", split="test", root=root)
    assert len(test_inputs) == 6 and test_labels.tolist() == written["test"][1].tolist()
    assert len(image_eval_data("cifar10", 100, root=root)[0]) == 12  # capped at the split's size


def test_image_eval_data_of_the_digits_is_digits_eval_data() -> None:
    inputs, labels = image_eval_data("digits", 40)
    expected = digits_eval_data(seed=0, limit=40)
    assert torch.equal(inputs, expected[0]) and torch.equal(labels, expected[1])


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_image_eval_data_refuses_a_bad_limit(limit) -> None:
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        image_eval_data("digits", limit)


def test_image_eval_data_names_missing_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        image_eval_data("cifar10", 4, root=tmp_path)
