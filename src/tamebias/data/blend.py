"""Colour/texture shift without a download: gray digits blended over photo patches.

MNIST-M's recipe (Ganin & Lempitsky, arXiv:1409.7495): each digit is combined with a patch cut
at random from a colour photo, ``|patch - digit|`` per channel, so strokes invert the photo and
the background is the photo itself. The photos here are the two that scikit-learn ships
(``sklearn.datasets.load_sample_images``: ``china.jpg``, ``flower.jpg``) instead of BSDS500,
so the blend needs nothing beyond the digits themselves. See :data:`BLEND_RECIPE`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .imageset import DataError, ImageSet
from .transforms import to_geometry

BLEND_SIZE = 32
BLEND_SEED = 0
_CHUNK = 4096
BLEND_RECIPE = (
    "digit resized to 32x32 (bilinear, antialiased; to_geometry), then for image i of the split "
    "a photo p_i and a 32x32 window (y_i, x_i) drawn uniformly by "
    "numpy.random.default_rng([seed, stream, split]) (seed 0; stream 0 for mnist, 1 for usps; "
    "split 0 train, 1 test) from scikit-learn's load_sample_images() (china.jpg, flower.jpg, "
    "427x640 RGB); pixel = |patch - digit| per channel, uint8 (MNIST-M's blend)"
)

Loader = Callable[[str, "str | Path | None", bool], ImageSet]


@functools.lru_cache(maxsize=1)
def sample_photos() -> np.ndarray:
    """scikit-learn's sample photos as one uint8 array ``P x H x W x 3`` (cropped to a common
    size: both are 427 x 640 today)."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as error:
        raise DataError("the blended digits need scikit-learn: pip install scikit-learn") \
            from error
    photos = load_sample_images().images
    height = min(photo.shape[0] for photo in photos)
    width = min(photo.shape[1] for photo in photos)
    return np.stack([np.asarray(photo[:height, :width, :3], dtype=np.uint8) for photo in photos])


def blend_digits(digits: np.ndarray, generator: np.random.Generator,
                 photos: np.ndarray | None = None) -> np.ndarray:
    """Gray digits ``N x S x S`` (uint8) -> ``N x S x S x 3`` uint8, each ``|patch - digit|``
    with a ``S x S`` patch cut at a random place of a random photo."""
    photos = sample_photos() if photos is None else photos
    count, size = digits.shape[0], digits.shape[1]
    if digits.shape[1:] != (size, size):
        raise DataError(f"blend_digits needs square gray digits, got {digits.shape}")
    which = generator.integers(0, photos.shape[0], count)
    top = generator.integers(0, photos.shape[1] - size + 1, count)
    left = generator.integers(0, photos.shape[2] - size + 1, count)
    window = np.arange(size)
    output = np.empty((count, size, size, 3), dtype=np.uint8)
    for start in range(0, count, _CHUNK):
        part = slice(start, start + _CHUNK)
        rows = (top[part, None] + window)[:, :, None]
        columns = (left[part, None] + window)[:, None, :]
        patches = photos[which[part, None, None], rows, columns].astype(np.int16)
        output[part] = np.abs(patches - digits[part, :, :, None].astype(np.int16))
    return output


def blended(base: Loader, base_name: str, stream: int) -> Loader:
    """A dataset loader: ``base``'s digits of the same split, blended (:data:`BLEND_RECIPE`)."""
    name = f"{base_name}blend"

    def load(split: str, root: str | Path | None, download: bool) -> ImageSet:
        digits = base(split, root, download)
        if digits.shape[0] != 1:
            raise DataError(f"{name}: {base_name} should be gray, got {digits.shape[0]} channels")
        gray = to_geometry(digits, BLEND_SIZE, 1).images[:, 0].numpy()
        generator = np.random.default_rng([BLEND_SEED, stream, 0 if split == "train" else 1])
        pixels = blend_digits(gray, generator)
        result = ImageSet.from_numpy(pixels, digits.labels.numpy(), list(digits.classes), name)
        result.meta.update({key: value for key, value in digits.meta.items()
                            if key in ("data_root", "files", "transductive")})
        result.meta.update(split=split, format=f"{digits.meta.get('format')}+blend",
                           blend=BLEND_RECIPE)
        return result

    return load
