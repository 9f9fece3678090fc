"""Typed batches. An unlabeled target batch has no label field, so target labels cannot
reach an unsupervised update by construction."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class LabeledBatch:
    """Images as float tensors in [0, 1] (B x C x H x W), labels (B,), dataset indices (B,)."""

    images: Tensor
    labels: Tensor
    indices: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class SegmentedBatch:
    """Dense labels: images as float tensors in [0, 1] (B x C x H x W), per-pixel class maps
    (B x H x W, int64; ``IGNORE_INDEX`` 255 where a pixel has no label), dataset indices (B,).
    The target's unlabeled batch stays an ``UnlabeledBatch``: it has no mask field."""

    images: Tensor
    masks: Tensor
    indices: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class UnlabeledBatch:
    """Images as float tensors in [0, 1] and their dataset indices; deliberately no labels.
    ``strong`` is a second, strongly augmented view of the same images, present only for
    methods that declare ``DataNeeds(strong_target=True)``."""

    images: Tensor
    indices: Tensor
    strong: Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class DomainBatch:
    """One training step's data: labeled source, unlabeled target, optional labeled target.
    Each part is None when the method's ``DataNeeds`` do not ask for it (the oracle has no
    source batch)."""

    source: LabeledBatch | SegmentedBatch | None
    target: UnlabeledBatch | None = None
    labeled_target: LabeledBatch | SegmentedBatch | None = None
