"""A synthetic feature-vector shift that needs no download: scikit-learn's 8x8 digits through a
fixed random projection, the target domain's vectors transformed again.

Protocol (fixed, seeds 0-3 below; never tuned on results):

- the 1,797 digits (pixels / 16, 64 values) are split into two disjoint halves by
  ``numpy.random.default_rng(0).permutation``: the first 898 images are the source domain,
  the other 899 the target domain (different handwriting samples, same classes);
- every image becomes a 48-d vector ``v = z @ P`` with ``P`` a fixed Gaussian projection
  (``default_rng(1)``, entries N(0, 1/64));
- target vectors are then ``(v @ R) * s + b``: ``R`` turns each of 24 disjoint pairs of
  dimensions (a random pairing, ``default_rng(2)``) by 30 degrees; per-dimension scales ``s``
  are uniform in [0.5, 2] and shifts ``b`` one source standard deviation times N(0, 1)
  (``default_rng(3)``): a covariate shift that per-dimension standardization cannot undo;
- each domain is split 70/30 into train/test, stratified (scikit-learn ``train_test_split``,
  ``random_state=0``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .imageset import ImageSet

DIMENSIONS = 48
CLASSES = [str(digit) for digit in range(10)]


@functools.lru_cache(maxsize=1)
def _domains() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.data / 16.0
    labels = np.asarray(digits.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    half = len(labels) // 2
    projection = np.random.default_rng(1).normal(0, 1 / 8, (pixels.shape[1], DIMENSIONS))
    vectors = pixels @ projection
    pairs = np.random.default_rng(2).permutation(DIMENSIONS).reshape(-1, 2)
    rotation = np.eye(DIMENSIONS)
    cos, sin = np.cos(np.pi / 6), np.sin(np.pi / 6)
    for first, second in pairs:
        rotation[[first, first, second, second], [first, second, first, second]] = (
            cos, sin, -sin, cos)
    generator = np.random.default_rng(3)
    scales = generator.uniform(0.5, 2.0, DIMENSIONS)
    shifts = generator.normal(0, 1, DIMENSIONS) * vectors[order[:half]].std(0)
    source, target = order[:half], order[half:]
    shifted = (vectors[target] @ rotation) * scales + shifts
    return {"source": (vectors[source], labels[source]), "target": (shifted, labels[target])}


def _load(domain: str, split: str) -> ImageSet:
    from sklearn.model_selection import train_test_split

    x, y = _domains()[domain]
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y,
                                   random_state=0)
    chosen = np.sort(train if split == "train" else test)
    images = torch.from_numpy(x[chosen].astype(np.float32))[:, :, None, None].contiguous()
    name = "digits-vectors" if domain == "source" else "digits-vectors-shifted"
    return ImageSet(images, torch.from_numpy(y[chosen]), list(CLASSES), name,
                    {"split": split, "format": "synthetic-vectors", "files": [],
                     "transductive": False, "protocol": __doc__.split("Protocol", 1)[1].strip()})


def load_source(split: str, root: object = None, download: bool = False) -> ImageSet:
    return _load("source", split)


def load_target(split: str, root: object = None, download: bool = False) -> ImageSet:
    return _load("target", split)


#: name -> (description, loader), registered in ``datasets.DATASETS``
VECTOR_DATASETS = {
    "digits-vectors": ("scikit-learn digits, half A, as 48-d vectors through a fixed random "
                       "projection (no download; data/vector_shift.py), 70/30 split",
                       load_source),
    "digits-vectors-shifted": ("scikit-learn digits, half B, the same projection then a fixed "
                               "rotation, scale and shift (a synthetic feature shift)",
                               load_target),
}
