"""Feature vectors (pre-extracted features: a frozen foundation model, SURF / DeCAF /
ResNet-50 feature benchmarks) and unlabeled arrays, read from ``.npz`` files, and the
feature-space augmentation that replaces image augmentation for them.

An ``.npz`` holds ``x`` and optionally ``y`` (integer labels; absent: unlabeled) and
``classes`` (a string array naming the labels). ``x`` float ``N x D`` is feature vectors; uint8
``N x H x W [x C]`` is images. Vectors are kept as float32 ``N x D x 1 x 1`` (see
``imageset.py``).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .folder import images_to_tensor
from .imageset import DataError, ImageSet
from .readers import check_npz_labels

FEATURE_POLICIES = ("auto", "features")


def npz_kind(path: str | Path) -> str:
    """``vectors`` (float ``x``), ``unlabeled`` (uint8 images without ``y``) or ``images``
    (the classic uint8 ``x`` with ``y``, read by ``readers.read_npz``)."""
    try:
        with np.load(path, allow_pickle=False) as contents:
            if "x" not in contents.files:
                return "images"  # read_npz names what is missing
            x = contents["x"]
            if np.issubdtype(x.dtype, np.floating):
                return "vectors"
            return "images" if "y" in contents.files else "unlabeled"
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error):
        return "images"  # read_npz reports the unreadable file


def read_array_npz(path: str | Path, name: str, **meta: object) -> ImageSet:
    """An ``.npz`` of feature vectors (labeled or not), or of unlabeled uint8 images."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as contents:
            if "x" not in contents.files:
                raise DataError(f"{path}: missing array 'x'; found {contents.files}")
            x = contents["x"]
            y = contents["y"] if "y" in contents.files else None
            names = contents["classes"] if "classes" in contents.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    info = {"files": [str(path)], **meta}
    if np.issubdtype(x.dtype, np.floating):
        if x.ndim != 2 or x.shape[1] < 1:
            raise DataError(f"{path}: feature vectors 'x' must be N x D, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise DataError(f"{path}: 'x' holds NaN or infinite values")
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, :, None, None]
        info["format"] = "npz-vectors"
    elif x.dtype == np.uint8 and x.ndim in (3, 4):
        images = images_to_tensor(x)
        info["format"] = "npz"
    else:
        raise DataError(f"{path}: 'x' must be float N x D (feature vectors) or uint8 "
                        f"N x H x W [x C] (images), got {x.dtype} {x.shape}")
    if y is None:
        return ImageSet.unlabeled(images, name, {**info, "labeled": False})
    check_npz_labels(path, x, y, rows="rows")
    count = int(y.max()) + 1 if len(y) else 0
    if names is not None:
        classes = [str(name) for name in np.asarray(names).reshape(-1)]
        if len(classes) < count:
            raise DataError(f"{path}: 'classes' names {len(classes)} classes but 'y' goes up "
                            f"to {count - 1}")
    else:
        classes = [str(label) for label in range(count)]
    return ImageSet(images, torch.from_numpy(y.astype(np.int64)), classes, name, info)


class FeatureAugmenter:
    """Two views of feature vectors, deterministic in ``(seed, stream, step)`` like the image
    augmenter: ``weak`` adds Gaussian noise of 0.1 per-dimension standard deviations;
    ``strong`` adds 0.3 and replaces 20% of the dimensions by their mean (feature dropout).
    The scale comes from the source training vectors (``reference``); ``strength`` scales
    both magnitudes."""

    VIEWS = {"weak": (0.1, 0.0), "strong": (0.3, 0.2)}

    def __init__(self, reference: Tensor, seed: int, strength: float = 1.0,
                 device: torch.device | str = "cpu", policy: str = "auto") -> None:
        if policy not in FEATURE_POLICIES:
            raise DataError(
                f"data.augment.policy={policy} augments images; feature vectors have no "
                "pixels to warp or colour: use policy auto or features (Gaussian noise and "
                "feature dropout)")
        self.policy = "features"
        flat = reference.flatten(1).float()
        self.mean = flat.mean(0).to(device)
        self.std = flat.std(0).clamp_min(1e-6).to(device) if len(flat) > 1 else (
            torch.ones_like(self.mean))
        self.seed, self.strength = seed, strength
        self.device = torch.device(device)

    def generator(self, stream: int, step: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed((self.seed * 1_000_003 + stream) * 10_000_019 + step)
        return generator

    def __call__(self, vectors: Tensor, view: str, stream: int, step: int) -> Tensor:
        if view == "none":
            return vectors
        if view not in self.VIEWS:
            raise ValueError(f"augmentation view must be none, weak or strong, got {view!r}")
        noise, dropout = (value * self.strength for value in self.VIEWS[view])
        generator = self.generator(stream, step)
        flat = vectors.flatten(1)
        mean, std = self.mean.to(flat.device), self.std.to(flat.device)
        noisy = flat + noise * std * torch.randn(flat.shape, generator=generator,
                                                 device=flat.device)
        if dropout:
            dropped = torch.rand(flat.shape, generator=generator, device=flat.device) < dropout
            noisy = torch.where(dropped, mean.expand_as(noisy), noisy)
        return noisy.view_as(vectors)
