"""Synthetic segmentation scenes: several digits on a canvas, labelled per pixel.

A scene is a ``size x size`` RGB canvas (``SIZE`` 64 by default) with ``DIGITS`` digits
pasted at random places, each ``DIGIT_SCALE`` (0.3-0.45) of the canvas side (later digits over
earlier ones). The label map is the digit's class + 1 on its stroke
(digit intensity >= 128 after resizing), 0 (``background``) where no stroke is, and
``IGNORE_INDEX`` on the anti-aliased rim (intensity 32-127), where the class is ambiguous.

Styles (``SCENE_STYLES``) differ in appearance only, never in the label rule:

- ``mnist``: MNIST digits, white strokes on a black canvas (the source).
- ``usps``: USPS digits (another hand, thicker strokes that fill their box), same canvas.
- ``photo``: MNIST digits in a random colour per digit over a window cut from scikit-learn's
  sample photos (``china.jpg``, ``flower.jpg``): textured, coloured backgrounds.
- ``bold``: MNIST digits with strokes thickened (3x3 max filter) and coloured, on a flat
  random-colour canvas.

Everything is a pure function of ``(style, split, seed, count)`` (numpy generator seeded with
``[seed, style id, split id]``), made on the fly in memory and never written into the repo.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .blend import sample_photos
from .datasets import load_dataset
from .dense import IGNORE_INDEX, DenseSet
from .imageset import DataError

SIZE = 64
DIGITS = 3
DIGIT_SCALE = (0.3, 0.45)  # pasted digit side / canvas side (uniform, rounded)
SCENE_STYLES = {"mnist": 0, "usps": 1, "photo": 2, "bold": 3}
SCENE_CLASSES = ["background"] + [str(digit) for digit in range(10)]
STROKE, RIM = 128, 32


def _digits(style: str, split: str, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Gray digits (N x S x S uint8, white on black) and labels for a style."""
    name = "usps" if style == "usps" else "mnist"
    data = load_dataset(name, split, root)
    return data.images[:, 0].numpy(), data.labels.numpy()


def _resized(digit: np.ndarray, side: int) -> np.ndarray:
    tensor = torch.from_numpy(digit).float()[None, None]
    out = F.interpolate(tensor, size=(side, side), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[0, 0].clamp(0, 255).numpy()


def make_scenes(style: str, split: str, count: int, seed: int = 0,
                root: str | None = None, size: int = SIZE,
                digits: tuple[np.ndarray, np.ndarray] | None = None) -> DenseSet:
    """``count`` scenes of ``style`` from the digits of ``split`` (see the module docstring).
    ``digits`` (gray ``N x S x S`` uint8, labels) replaces the dataset read (tests)."""
    if style not in SCENE_STYLES:
        raise DataError(f"no scene style {style!r}; choose from {', '.join(SCENE_STYLES)}")
    if split not in ("train", "test"):
        raise DataError(f"scene split must be train or test, got {split!r}")
    gray, labels = digits if digits is not None else _digits(style, split, root)
    rng = np.random.default_rng([seed, SCENE_STYLES[style], 0 if split == "train" else 1])
    images = np.zeros((count, size, size, 3), dtype=np.float32)
    masks = np.zeros((count, size, size), dtype=np.uint8)
    photos = sample_photos() if style == "photo" else None
    for index in range(count):
        canvas = images[index]
        if photos is not None:
            photo = photos[rng.integers(len(photos))]
            top = rng.integers(0, photo.shape[0] - size + 1)
            left = rng.integers(0, photo.shape[1] - size + 1)
            canvas[:] = photo[top:top + size, left:left + size]
        elif style == "bold":
            canvas[:] = rng.integers(0, 256, 3)
        for _ in range(DIGITS):
            which = rng.integers(len(gray))
            side = int(rng.integers(round(DIGIT_SCALE[0] * size),
                                    round(DIGIT_SCALE[1] * size) + 1))
            digit = _resized(gray[which], side)
            if style == "bold":
                digit = F.max_pool2d(torch.from_numpy(digit)[None, None], 3, 1, 1)[0, 0].numpy()
            top, left = rng.integers(0, size - side + 1, 2)
            window = (slice(top, top + side), slice(left, left + side))
            alpha = (digit / 255.0)[..., None]
            colour = (np.full(3, 255.0) if style in ("mnist", "usps")
                      else rng.integers(0, 256, 3).astype(np.float32))
            canvas[window] = canvas[window] * (1 - alpha) + colour * alpha
            label = masks[index][window]
            label[digit >= RIM] = np.where(digit[digit >= RIM] >= STROKE,
                                           int(labels[which]) + 1, IGNORE_INDEX)
    pixels = torch.from_numpy(np.rint(images).clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2)
    return DenseSet(pixels.contiguous(), torch.from_numpy(masks), list(SCENE_CLASSES),
                    f"scenes-{style}", {"style": style, "split": split, "seed": seed,
                                        "count": count, "size": size, "digits": DIGITS})


def cached_scenes(style: str, split: str, count: int, seed: int = 0,
                  root: str | None = None, size: int = SIZE) -> DenseSet:
    """:func:`make_scenes`, kept as an npz under ``$TAMEBIAS_CACHE`` (default
    ``~/.cache/tamebias``)``/scenes`` after the first call (never inside the repository).
    The file name holds every argument, so a cached set is the set the arguments make."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("TAMEBIAS_CACHE", Path.home() / ".cache" / "tamebias"))
    path = folder / "scenes" / f"{style}-{split}-n{count}-s{seed}-{size}px-v2.npz"
    if path.exists():
        stored = np.load(path)
        return DenseSet(torch.from_numpy(stored["x"]), torch.from_numpy(stored["y"]),
                        list(SCENE_CLASSES), f"scenes-{style}",
                        {"style": style, "split": split, "seed": seed, "count": count,
                         "size": size, "digits": DIGITS, "cache": str(path)})
    scenes = make_scenes(style, split, count, seed, root, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, x=scenes.images.numpy(), y=scenes.masks.numpy())
        partial.replace(path)
    except OSError:  # a read-only home: the scenes are made again next time
        pass
    return scenes
