"""Folders of images without class sub-folders: the unlabeled target every user has.

A folder is read as *labeled* (ImageFolder: one sub-folder per class) when it holds only
sub-folders, and as *unlabeled* when it holds image files at its top level; an unlabeled folder
is walked recursively (flat or nested). ``images:PATH`` reads any tree without labels, even
one that holds only sub-folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .imageset import DataError, ImageSet
from .readers import IMAGE_EXTENSIONS, decode_images


def _visible(name: str) -> bool:
    return not name.startswith(".")


def is_image_file(path: str | Path) -> bool:
    name = Path(path).name
    return _visible(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def has_top_level_images(path: str | Path) -> bool:
    """True when ``path`` is a folder with image files directly inside it."""
    path = Path(path)
    return path.is_dir() and any(
        entry.is_file() and is_image_file(entry) for entry in path.iterdir())


def list_images(path: str | Path) -> list[Path]:
    """Every image file under ``path`` (recursively, sorted, hidden entries skipped)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(path, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if _visible(d))
        found.extend(Path(directory) / file for file in sorted(files) if is_image_file(file))
    if not found:
        raise DataError(f"{path}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return found


def images_to_tensor(x) -> torch.Tensor:
    """uint8 ``N x H x W [x C]`` numpy images as a ``N x C x H x W`` tensor."""
    tensor = torch.from_numpy(x)
    if tensor.ndim == 3:
        return tensor.unsqueeze(1).contiguous()
    return tensor.permute(0, 3, 1, 2).contiguous()


def read_unlabeled_images(
    files: list[Path], name: str, size: tuple[int, int] | None = None, mode: str = "RGB",
    where: str | Path = "", **meta: object,
) -> ImageSet:
    """Decode ``files`` into an unlabeled :class:`ImageSet` (``meta["files"]`` keeps the order)."""
    x = decode_images(files, mode, size, where or name)
    return ImageSet.unlabeled(images_to_tensor(x), name,
                              {"files": [str(file) for file in files], "labeled": False,
                               **meta})


def read_unlabeled_folder(
    path: str | Path, name: str, size: tuple[int, int] | None = None, mode: str = "RGB",
    **meta: object,
) -> ImageSet:
    """Every image under ``path`` (flat or nested) as an unlabeled set."""
    return read_unlabeled_images(list_images(path), name, size, mode, path,
                                 format="folder-unlabeled", **meta)
