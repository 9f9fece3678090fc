"""Streaming image sets: files decoded per batch instead of once into memory.

``data.cache`` chooses per run: ``memory`` decodes every image once into uint8 tensors (the
default path), ``stream`` keeps only the file lists and decodes each batch (in
``data.workers`` DataLoader worker processes, prefetched), ``auto`` streams when the decoded
size of the folder / list inputs (N x 3 x size x size bytes) passes ``data.cache_budget_gb``.

A streamed set is an :class:`ImageSet` whose ``images`` is a :class:`LazyImages`: it has the
length, shape and dtype of the decoded tensor, and indexing it decodes those images with the
same PIL decode, resize and channel conversion the memory path applies once. Batches are
still a pure function of the step (the index streams are), so a streamed run gives the same
batches as a memory run and resumes exactly from the step number alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .datasets import _choose_data_root, _find_path
from .folder import has_top_level_images, images_to_tensor, list_images
from .imageset import DataError, ImageSet
from .lists import parse_image_list
from .readers import decode_images, list_image_folder
from .transforms import to_geometry

STREAMABLE = ("folder:", "list:", "images:")


class LazyImages:
    """uint8 ``N x C x H x W`` images decoded from ``files`` when indexed (tensor-like)."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: Sequence[str | Path], size: tuple[int, int],
                 channels: int = 3) -> None:
        self.files = [str(file) for file in files]
        self.size = (int(size[0]), int(size[1]))
        self.channels = channels

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, *self.size))

    def __len__(self) -> int:
        return len(self.files)

    def decode(self, indices: Sequence[int]) -> Tensor:
        """The images at ``indices`` as one uint8 tensor (the memory path's exact pixels)."""
        files = [Path(self.files[index]) for index in indices]
        if not files:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        rgb = images_to_tensor(decode_images(files, "RGB", self.size))
        if self.channels == 3:
            return rgb
        batch = ImageSet(rgb, torch.zeros(len(files), dtype=torch.int64), ["image"])
        return to_geometry(batch, self.size, self.channels).images

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, int):
            return self.decode([key])[0]
        if isinstance(key, slice):
            return self.decode(range(*key.indices(len(self))))
        return self.decode(torch.as_tensor(key, dtype=torch.int64).reshape(-1).tolist())

    def select(self, indices: Tensor | np.ndarray | Sequence[int]) -> LazyImages:
        chosen = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).tolist()
        return LazyImages([self.files[index] for index in chosen], self.size, self.channels)

    def converted(self, size: tuple[int, int], channels: int) -> LazyImages:
        if tuple(size) != self.size:
            raise DataError(f"streamed images are decoded at {self.size[0]}x{self.size[1]}; "
                            f"they cannot be resized to {size[0]}x{size[1]} afterwards")
        return LazyImages(self.files, self.size, channels)

    def to(self, *args: Any, **kwargs: Any) -> LazyImages:
        return self  # stays on disk: batches are decoded, then moved


def is_lazy(images: Any) -> bool:
    return isinstance(images, LazyImages)


def _listing(spec: str, split: str, root: str | Path | None
             ) -> tuple[list[Path], list[int] | None, list[str], dict[str, Any]]:
    """The files (and labels, classes) the memory path would decode for ``spec``, in order."""
    kind, _, rest = spec.partition(":")
    path = _find_path(spec, rest, root)
    if kind == "list":
        parsed = parse_image_list(path, _choose_data_root(root)[0])
        return parsed.files, parsed.labels, parsed.classes, {"format": "list",
                                                             "transductive": True}
    if kind == "images":
        return ([path] if path.is_file() else list_images(path), None, [],
                {"format": "images", "transductive": True})
    train, test = path / "train", path / "test"
    split_folders = train.is_dir() and test.is_dir() and not has_top_level_images(path)
    folder = path / split if split_folders else path
    info = {"format": "folder", "transductive": not split_folders}
    if has_top_level_images(folder):
        return list_images(folder), None, [], {**info, "format": "folder-unlabeled"}
    classes, samples = list_image_folder(folder)
    return [file for file, _ in samples], [label for _, label in samples], classes, info


def lazy_dataset(spec: str, split: str, size: int, root: str | Path | None = None
                 ) -> ImageSet:
    """A streamed :class:`ImageSet` of a ``folder:`` / ``list:`` / ``images:`` spec."""
    files, labels, classes, info = _listing(spec, split, root)
    images = LazyImages(files, (size, size), 3)
    meta = {"files": [str(file) for file in files], "split": split, "cache": "stream",
            **info}
    if labels is None:
        return ImageSet.unlabeled(images, spec, {**meta, "labeled": False})  # type: ignore
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes, spec,  # type: ignore
                    meta)


def count_images(spec: str, split: str, root: str | Path | None = None) -> int:
    return len(_listing(spec, split, root)[0])


class StepBatches(torch.utils.data.Dataset):
    """Item ``step``: the decoded uint8 images of every stream's indices at that step."""

    def __init__(self, parts: dict[str, tuple[LazyImages, Any]]) -> None:
        self.parts = parts  # name -> (images, IndexStream)

    def __len__(self) -> int:  # pragma: no cover - steps are unbounded
        raise TypeError("step batches are unbounded")

    def __getitem__(self, step: int) -> dict[str, Tensor]:
        return {name: images.decode(stream.indices(step).tolist())
                for name, (images, stream) in self.parts.items()}


class Prefetcher:
    """Decoded batches for consecutive steps from ``workers`` processes (0: this process);
    asked for a step out of order (the first step, a resume) it restarts there."""

    def __init__(self, parts: dict[str, tuple[LazyImages, Any]], workers: int,
                 pin_memory: bool = False) -> None:
        self.dataset = StepBatches(parts)
        self.workers, self.pin_memory = workers, pin_memory
        self.iterator: Any = None
        self.next_step = -1

    def get(self, step: int) -> dict[str, Tensor]:
        if self.iterator is None or step != self.next_step:
            options = {"prefetch_factor": 2, "persistent_workers": False} if self.workers else {}
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=None, sampler=itertools.count(step),
                num_workers=self.workers, pin_memory=self.pin_memory,
                generator=torch.Generator().manual_seed(0),  # never draws from the global RNG
                **options)
            self.iterator = iter(loader)
        self.next_step = step + 1
        return next(self.iterator)


def choose_cache(config: Any) -> tuple[str, float | None]:
    """``memory`` or ``stream`` for a DataConfig, and the decoded size (GB) it estimated
    (None when it did not need to): ``auto`` streams when the folder / list inputs would
    decode to more than ``cache_budget_gb`` (training inputs and a separate test set)."""
    specs = [(config.source, "train"), (config.target, "train")]
    if config.target_test not in (None, "none", "transductive"):
        specs.append((config.target_test, "test"))
    streamable = [(spec, split) for spec, split in specs if spec.startswith(STREAMABLE)]
    if config.cache == "memory" or not streamable:
        return "memory", None
    if config.size is None or config.channels is None:
        if config.cache == "stream":
            raise DataError("data.cache=stream decodes every batch at one geometry: set "
                            "data.size and data.channels")
        return "memory", None
    total = 0
    for spec, split in streamable:
        try:
            total += count_images(spec, split, config.root)
        except DataError:
            continue  # a split that does not exist is reported by the loaders
    estimate = total * 3 * config.size * config.size / 1e9
    if config.cache == "stream" or estimate > config.cache_budget_gb:
        return "stream", round(estimate, 3)
    return "memory", round(estimate, 3)
