"""Image lists: the split files of Office-31, Office-Home, DomainNet, VisDA and MME.

One image per line: ``relative/path label`` (labeled) or ``relative/path`` (unlabeled); blank
lines and lines starting with ``#`` are skipped. A line is labeled when its last
whitespace-separated token is an integer (so a path may contain spaces); one file is either
all labeled or all unlabeled. A relative path is looked up next to the list file first, then
under the data root. Class names come from the images' parent folders when every label has
one folder name of its own (``amazon/images/back_pack/frame_0001.jpg 0`` names class 0
``back_pack``), else they are the label numbers. Every error names the list file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .folder import images_to_tensor
from .imageset import DataError, DatasetNotFoundError, ImageSet
from .readers import decode_images


@dataclass
class ImageList:
    """The parsed list: ``files`` in order, ``labels`` (None for an unlabeled list) and the
    class names (empty when unlabeled)."""

    path: Path
    files: list[Path]
    labels: list[int] | None
    classes: list[str]


def _label(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def _class_names(files: list[Path], labels: list[int]) -> list[str]:
    """Parent-folder names when they map one-to-one onto labels, else the label numbers."""
    highest = max(labels)
    folders: dict[int, set[str]] = {}
    for file, label in zip(files, labels, strict=True):
        folders.setdefault(label, set()).add(file.parent.name)
    names = {label: next(iter(found)) for label, found in folders.items() if len(found) == 1}
    unique = len(set(names.values())) == len(names) == len(folders)
    digits = {str(label) for label in range(highest + 1)}
    if not unique or any(name == "" or name in digits for name in names.values()):
        return [str(label) for label in range(highest + 1)]
    return [names.get(label, str(label)) for label in range(highest + 1)]


def parse_image_list(path: str | Path, root: str | Path | None = None) -> ImageList:
    """Parse a list file; ``root`` is the data root, the second place relative paths are
    looked up. Raises :class:`DataError` naming the file and line of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such list file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the list file ({error})") from error
    bases = [path.parent] + ([Path(root).expanduser()] if root is not None else [])
    files: list[Path] = []
    labels: list[int] = []
    labeled: bool | None = None
    first_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        label = _label(parts[1]) if len(parts) == 2 else None
        entry = parts[0] if label is not None else line
        if labeled is None:
            labeled, first_line = label is not None, number
        elif labeled != (label is not None):
            kind = "has a label" if label is not None else "has no label"
            raise DataError(
                f"{path}, line {number}: {entry!r} {kind} but line {first_line} "
                f"{'has one' if labeled else 'has none'}; a list is all labeled "
                "('path label') or all unlabeled ('path')")
        if label is not None and label < 0:
            raise DataError(f"{path}, line {number}: negative label {label}")
        relative = Path(entry).expanduser()
        candidates = [relative] if relative.is_absolute() else [b / relative for b in bases]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            looked = ", ".join(str(c) for c in candidates)
            where = "" if relative.is_absolute() else (
                " (paths are relative to the list file's folder"
                + (" or the data root)" if root is not None else ")"))
            raise DatasetNotFoundError(
                f"{path}, line {number}: image {entry!r} not found{where}; looked at {looked}")
        files.append(found)
        if label is not None:
            labels.append(label)
    if not files:
        raise DataError(f"{path}: the list names no images")
    if not labeled:
        return ImageList(path, files, None, [])
    return ImageList(path, files, labels, _class_names(files, labels))


def read_image_list(
    path: str | Path, name: str, size: tuple[int, int] | None = None,
    root: str | Path | None = None, mode: str = "RGB", **meta: object,
) -> ImageSet:
    """Decode the images of a list file into an :class:`ImageSet` (unlabeled when the list
    has no labels); ``meta["files"]`` keeps the decoded files in order."""
    parsed = parse_image_list(path, root)
    x = decode_images(parsed.files, mode, size, parsed.path)
    info = {"files": [str(file) for file in parsed.files], "list": str(parsed.path),
            "format": "list", **meta}
    images = images_to_tensor(x)
    if parsed.labels is None:
        return ImageSet.unlabeled(images, name, {**info, "labeled": False})
    labels = torch.from_numpy(np.asarray(parsed.labels, dtype=np.int64))
    return ImageSet(images, labels, parsed.classes, name, info)
