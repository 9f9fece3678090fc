"""One reader for whatever a user points at: a folder, a list file, an ``.npz``, image files.

:func:`read_inputs` turns "these inputs" into an :class:`ImageSet` decoded in memory (labeled
when the inputs carry labels, else unlabeled), for Python use; ``tamebias predict`` lists the
same inputs and decodes them a batch at a time (``prediction.collect_inputs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .datasets import load_dataset
from .folder import is_image_file, read_unlabeled_images
from .imageset import DataError, DatasetNotFoundError, ImageSet

PREFIXES = ("folder:", "npz:", "list:", "images:")


def read_inputs(
    inputs: str | Path | Sequence[str | Path], size: int | tuple[int, int] | None = None,
    root: str | Path | None = None, split: str = "train",
) -> ImageSet:
    """Read ``inputs`` into an :class:`ImageSet`.

    ``inputs`` is a dataset spec (``folder:``, ``npz:``, ``list:``, ``images:`` or a
    registered name), a path (a folder: class sub-folders are labels, loose images are
    unlabeled; an ``.npz``; an image file; any other file is an image list), or a sequence of
    image files (unlabeled). ``size`` resizes images while decoding (an int is square);
    ``root`` is the data root for relative paths; ``split`` picks ``train`` or ``test`` where
    the inputs have both. Feature vectors come back as float ``N x D x 1 x 1``.
    """
    hint = (size, size) if isinstance(size, int) else size
    if isinstance(inputs, (list, tuple)):
        files = [Path(file) for file in inputs]
        if not files:
            raise DataError("no inputs given")
        for file in files:
            if not file.is_file():
                raise DatasetNotFoundError(f"{file}: no such image file")
            if not is_image_file(file):
                raise DataError(f"{file}: not an image file (a list of inputs must be images)")
        return read_unlabeled_images(files, "images", hint, format="images")
    text = str(inputs)
    if text.startswith(PREFIXES) or not Path(text).expanduser().exists() and ":" not in text \
            and "/" not in text and "." not in text:
        return load_dataset(text, split, root, size=hint)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_dataset(f"folder:{path}", split, root, size=hint)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npz":
        return load_dataset(f"npz:{path}", split, root, size=hint)
    if is_image_file(path):
        return read_unlabeled_images([path], path.name, hint, format="images")
    return load_dataset(f"list:{path}", split, root, size=hint)
