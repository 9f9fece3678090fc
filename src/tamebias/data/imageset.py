"""The in-memory image set every reader returns: decoded once, kept as uint8 tensors.

Two other kinds of data travel in the same container: an *unlabeled* set (every label is
:data:`UNLABELED`, no class names), and *feature vectors* (float32 ``N x D``, stored as
``N x D x 1 x 1`` so every path that indexes, moves and batches images serves them unchanged;
:func:`as_float` turns either kind into the float batch a model reads)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

#: The label of every sample of an unlabeled set.
UNLABELED = -1


def as_float(images: Tensor) -> Tensor:
    """A batch as the model reads it: uint8 images become floats in [0, 1]; float feature
    vectors are returned as float32 (a copy is not made when already float32)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


class DataError(ValueError):
    """A dataset cannot be used as asked: missing, corrupt, or the wrong shape."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """No readable copy of a dataset was found; the message lists what was looked for."""


@dataclass
class ImageSet:
    """Images as uint8 ``N x C x H x W`` with int64 labels ``N``; ``classes[i]`` names label i.

    Unlabeled sets have every label equal to :data:`UNLABELED` and no classes; feature
    vectors are float32 ``N x D x 1 x 1`` (see the module docstring)."""

    images: Tensor
    labels: Tensor
    classes: list[str]
    name: str = "dataset"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        vectors = self.images.dtype == torch.float32 and self.images.shape[2:] == (1, 1)
        if self.images.ndim != 4 or not (self.images.dtype == torch.uint8 or vectors):
            raise DataError(
                f"{self.name}: images must be uint8 N x C x H x W (or float32 feature vectors "
                f"N x D x 1 x 1), got {self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise DataError(f"{self.name}: labels must be int64 of shape (N,)")
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if len(self.labels) and bool((self.labels == UNLABELED).all()):
            if self.classes:
                raise DataError(f"{self.name}: an unlabeled set has no class names")
        elif len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DataError(
                f"{self.name}: labels span {int(self.labels.min())}..{int(self.labels.max())} "
                f"but there are {len(self.classes)} classes"
            )

    @classmethod
    def from_numpy(
        cls, x: np.ndarray, y: np.ndarray, classes: list[str] | None = None, name: str = "dataset"
    ) -> ImageSet:
        """Build from ``N x H x W`` (gray) or ``N x H x W x C`` uint8 arrays and integer labels."""
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        else:
            raise DataError(f"{name}: expected N x H x W or N x H x W x C images, got {x.shape}")
        if x.dtype != np.uint8:
            raise DataError(f"{name}: expected uint8 images, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name}: expected integer labels, got {y.dtype}")
        if classes is None:
            classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
        return cls(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), classes, name)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def is_labeled(self) -> bool:
        """False for an unlabeled set (every label is ``UNLABELED``)."""
        return not (len(self.labels) and bool((self.labels == UNLABELED).all()))

    @property
    def is_vectors(self) -> bool:
        """True for feature vectors (float32 ``N x D x 1 x 1``)."""
        return self.images.dtype != torch.uint8

    @classmethod
    def unlabeled(cls, images: Tensor, name: str = "dataset", meta: dict | None = None
                  ) -> ImageSet:
        """An unlabeled set of ``images`` (uint8 N x C x H x W or float32 N x D x 1 x 1)."""
        labels = torch.full((images.shape[0],), UNLABELED, dtype=torch.int64)
        return cls(images, labels, [], name, dict(meta or {}))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image geometry ``(C, H, W)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: Tensor | np.ndarray, name: str | None = None) -> ImageSet:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(
            self.images.select(indices) if not isinstance(self.images, Tensor)  # streamed
            else self.images[indices], self.labels[indices], list(self.classes),
            name or self.name, dict(self.meta),
        )
