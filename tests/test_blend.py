"""The blended-digits datasets (data/blend.py): MNIST-M's recipe on scikit-learn's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tamebias.compose import load_config
from tamebias.data.blend import BLEND_RECIPE, blend_digits, sample_photos
from tamebias.data.datasets import DATASETS, load_dataset
from tamebias.data.domain import prepare_data
from tamebias.tasks import SUITES, TASKS


def write_digits(root: Path, name: str, size: int, count: int = 12) -> np.ndarray:
    generator = np.random.default_rng(5)
    x = np.zeros((count, size, size), dtype=np.uint8)
    x[:, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = generator.integers(
        128, 256, (count, 1, 1), dtype=np.uint8)  # a bright bar on black, like a "1"
    y = np.arange(count) % 10
    for split in ("train", "test"):
        (root / name).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(root / name / f"{split}.npz", x=x, y=y)
    return x


def test_blend_is_the_absolute_difference_with_a_photo_window() -> None:
    photos = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    digits = np.random.default_rng(1).integers(0, 256, (7, 8, 8), dtype=np.uint8)
    generator = np.random.default_rng(3)
    which = generator.integers(0, 2, 7)
    top, left = generator.integers(0, 33, 7), generator.integers(0, 43, 7)
    blended = blend_digits(digits, np.random.default_rng(3), photos)
    assert blended.shape == (7, 8, 8, 3) and blended.dtype == np.uint8
    for i in range(7):
        patch = photos[which[i], top[i] : top[i] + 8, left[i] : left[i] + 8].astype(int)
        expected = np.abs(patch - digits[i, :, :, None].astype(int))
        np.testing.assert_array_equal(blended[i], expected)


def test_sample_photos_are_colour() -> None:
    photos = sample_photos()
    assert photos.ndim == 4 and photos.shape[0] == 2 and photos.shape[-1] == 3
    assert np.abs(photos[..., 0].astype(int) - photos[..., 2]).mean() > 10  # not gray


@pytest.mark.parametrize(("name", "base", "size"), [("mnistblend", "mnist", 28),
                                                    ("uspsblend", "usps", 16)])
def test_blended_dataset_is_deterministic_32px_rgb(tmp_path: Path, name: str, base: str,
                                                    size: int) -> None:
    write_digits(tmp_path, base, size)
    train = load_dataset(name, "train", root=tmp_path)
    again = load_dataset(name, "train", root=tmp_path)
    test = load_dataset(name, "test", root=tmp_path)
    assert train.shape == (3, 32, 32) and train.name == name and len(train) == 12
    np.testing.assert_array_equal(train.images.numpy(), again.images.numpy())
    np.testing.assert_array_equal(train.labels.numpy(), np.arange(12) % 10)
    assert not np.array_equal(train.images.numpy(), test.images.numpy())  # other windows
    assert train.meta["blend"] == BLEND_RECIPE and train.meta["split"] == "train"
    channels = train.images.float()
    assert (channels[:, 0] - channels[:, 2]).abs().mean() > 5  # coloured, unlike the source


def test_blended_datasets_and_tasks_are_registered(tmp_path: Path) -> None:
    assert {"mnistblend", "uspsblend"} <= set(DATASETS)
    assert SUITES["colour"] == ["mnist-mnistblend", "usps-uspsblend"]
    write_digits(tmp_path, "usps", 16)
    config = load_config(None, [*TASKS["usps-uspsblend"].overrides(),
                                f"data.root={tmp_path}", "data.source_val_fraction=0.25"])
    data = prepare_data(config.data)
    assert data.protocol["input"] == "32x32x3"
    assert data.source_train.shape == data.target_train.shape == (3, 32, 32)
