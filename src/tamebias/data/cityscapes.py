"""Readers of the real segmentation sets: GTA5 and Cityscapes, in their native layouts, with
the 19 Cityscapes training classes that the GTA5->Cityscapes papers evaluate.

- GTA5 (Richter et al., ECCV 2016): ``ROOT/images/NNNNN.png`` and ``ROOT/labels/NNNNN.png``
  (8-bit label ids, the Cityscapes id scheme). The papers' split files are optional:
  ``ROOT/{train,val}.txt`` (one file name per line); without them every image is training.
- Cityscapes (Cordts et al., CVPR 2016): ``ROOT/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png``
  and ``ROOT/gtFine/{train,val}/CITY/*_gtFine_labelIds.png``.

Label ids map to train ids 0..18 by the official table (``cityscapesscripts`` ``labels.py``);
every other id becomes ``IGNORE_INDEX`` (255). Images are resized to ``size`` on the short
side (bilinear), label maps with nearest neighbour, and kept as uint8 in memory: fine for the
tiny fixtures and a GPU machine's few thousand images at 512 px; the full sets at full size
need the streaming path (not built for dense data yet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import resolve_data_root
from .dense import IGNORE_INDEX, DenseSet
from .imageset import DataError, DatasetNotFoundError

# (label id, train id, name) of the 19 evaluated classes, from cityscapesscripts labels.py
CITYSCAPES_TRAIN_CLASSES: list[tuple[int, int, str]] = [
    (7, 0, "road"), (8, 1, "sidewalk"), (11, 2, "building"), (12, 3, "wall"),
    (13, 4, "fence"), (17, 5, "pole"), (19, 6, "traffic light"), (20, 7, "traffic sign"),
    (21, 8, "vegetation"), (22, 9, "terrain"), (23, 10, "sky"), (24, 11, "person"),
    (25, 12, "rider"), (26, 13, "car"), (27, 14, "truck"), (28, 15, "bus"),
    (31, 16, "train"), (32, 17, "motorcycle"), (33, 18, "bicycle"),
]
CITYSCAPES_CLASSES = [name for _, _, name in CITYSCAPES_TRAIN_CLASSES]


def id_to_train_id() -> np.ndarray:
    """A 256-entry lookup table: label id -> train id (``IGNORE_INDEX`` for the rest)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id, _ in CITYSCAPES_TRAIN_CLASSES:
        table[label_id] = train_id
    return table


def _read(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error


def _shape(height: int, width: int, size: int | None) -> tuple[int, int]:
    """``size`` on the short side, the aspect ratio kept (``None``: unchanged)."""
    if not size:
        return height, width
    scale = size / min(height, width)
    return round(height * scale), round(width * scale)


def _resize(image: np.ndarray, label: np.ndarray, shape: tuple[int, int]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)
    labels = torch.from_numpy(label.copy())
    if pixels.shape[-2:] != labels.shape:
        raise DataError(f"image {tuple(pixels.shape[-2:])} and label map "
                        f"{tuple(labels.shape)} differ in size")
    if tuple(labels.shape) != shape:
        pixels = F.interpolate(pixels[None].float(), size=shape, mode="bilinear",
                               antialias=True, align_corners=False)[0]
        pixels = pixels.round().clamp(0, 255).to(torch.uint8)
        labels = F.interpolate(labels[None, None].float(), size=shape, mode="nearest")[0, 0]
        labels = labels.to(torch.uint8)
    return pixels, labels


def _stack(pairs: list[tuple[Path, Path]], size: int | None, name: str,
           limit: int | None = None, seed: int = 0) -> DenseSet:
    """Every pair (or a fixed random ``limit`` of them, by ``seed``) decoded, ids mapped to
    train ids, resized to the first image's shape at ``size`` (a few GTA5 frames differ in
    size from the rest; all are brought to one shape)."""
    if limit is not None and limit < len(pairs):
        chosen = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:limit])
        pairs = [pairs[index] for index in chosen]
    table = id_to_train_id()
    images, masks = [], []
    shape = None
    for image_path, label_path in pairs:
        label = table[_read(label_path, "L")]
        shape = shape or _shape(*label.shape, size)
        pixels, labels = _resize(_read(image_path, "RGB"), label, shape)
        images.append(pixels)
        masks.append(labels)
    return DenseSet(torch.stack(images), torch.stack(masks), list(CITYSCAPES_CLASSES), name,
                    {"files": len(pairs)})


def read_gta5(root: str | Path, split: str = "train", size: int | None = None,
              limit: int | None = None, seed: int = 0) -> DenseSet:
    """GTA5 in its released layout (module docstring); ``split`` reads ``ROOT/SPLIT.txt``
    when present (else every image is ``train``; ``val`` is then empty and refused)."""
    root = Path(root)
    images, labels = root / "images", root / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise DatasetNotFoundError(f"gta5: expected {images} and {labels} (the GTA5 release "
                                   "layout: images/NNNNN.png, labels/NNNNN.png)")
    listing = root / f"{split}.txt"
    if listing.exists():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    elif split == "train":
        names = sorted(path.name for path in images.glob("*.png"))
    else:
        raise DatasetNotFoundError(f"gta5: no {listing} to say which images are {split}")
    pairs = [(images / name, labels / name) for name in names]
    missing = [str(label) for _, label in pairs if not label.exists()]
    if missing or not pairs:
        raise DatasetNotFoundError(f"gta5: {len(missing)} label maps missing under {labels} "
                                   f"(first: {missing[0]})" if missing else
                                   f"gta5: no images in {images}")
    return _stack(pairs, size, "gta5", limit, seed)


def read_cityscapes(root: str | Path, split: str = "train", size: int | None = None,
                    limit: int | None = None, seed: int = 0) -> DenseSet:
    """Cityscapes fine annotations (module docstring): ``leftImg8bit/SPLIT`` images paired
    with ``gtFine/SPLIT/*_gtFine_labelIds.png``."""
    root = Path(root)
    folder = root / "leftImg8bit" / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f"cityscapes: expected {folder} (leftImg8bit/{split}/CITY/"
                                   "*_leftImg8bit.png)")
    pairs = []
    for image in sorted(folder.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.exists():
            raise DatasetNotFoundError(f"cityscapes: no label map {label} for {image}")
        pairs.append((image, label))
    if not pairs:
        raise DatasetNotFoundError(f"cityscapes: no *_leftImg8bit.png under {folder}")
    return _stack(pairs, size, "cityscapes", limit, seed)


def read_dense(spec: str, split: str, size: int | None = None, root: str | Path | None = None,
               limit: int | None = None, seed: int = 0) -> DenseSet:
    """``gta5:PATH`` or ``cityscapes:PATH`` (``val`` is Cityscapes' evaluation split); a
    relative PATH not found in the working directory is looked up under the data root."""
    kind, _, path = spec.partition(":")
    folder = Path(path)
    if not folder.is_absolute() and not folder.exists():
        folder = resolve_data_root(root) / folder
    if kind == "gta5":
        return read_gta5(folder, split, size, limit, seed)
    if kind == "cityscapes":
        return read_cityscapes(folder, split, size, limit, seed)
    raise DataError(f"unknown segmentation data {spec!r}: use scenes:STYLE (both sides), "
                    "gta5:PATH or cityscapes:PATH")
