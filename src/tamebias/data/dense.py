"""Dense (per-pixel) labels: segmentation sets, joint image + mask augmentation, and the typed
batch streams of a segmentation run.

A :class:`DenseSet` holds uint8 images ``N x C x H x W`` and uint8 label maps ``N x H x W``
(class ids, ``IGNORE_INDEX`` where a pixel has no label); an unlabeled target set has
``masks=None``. :class:`DenseStreams` cuts typed batches from them as the classification
streams do (batch ``k`` a pure function of ``(seed, k)``): the source batch is a
``SegmentedBatch`` with masks, the target batch an ``UnlabeledBatch`` with none.

Augmentation goes through ``torchvision.transforms.v2`` with the mask wrapped as a
``tv_tensors.Mask``, so every geometric transform moves image and mask together (nearest
interpolation for the mask, ``IGNORE_INDEX`` where the warp leaves the frame), with each
sample's random parameters drawn from a generator seeded by ``(seed, stream, step)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .batch import DomainBatch, SegmentedBatch, UnlabeledBatch
from .domain import SourceClasses
from .imageset import DataError, as_float
from .streams import IndexStream

IGNORE_INDEX = 255
AUGMENT_POLICIES = ("none", "flip", "affine", "standard")


@dataclass
class DenseSet:
    """uint8 images ``N x C x H x W`` and uint8 label maps ``N x H x W`` (``None``: unlabeled).
    ``classes`` names the label ids 0..K-1; ``IGNORE_INDEX`` marks unlabeled pixels."""

    images: Tensor
    masks: Tensor | None
    classes: list[str]
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"{self.name}: images must be uint8 N x C x H x W, got "
                            f"{tuple(self.images.shape)} {self.images.dtype}")
        if self.masks is not None:
            if self.masks.shape != (self.images.shape[0], *self.images.shape[2:]):
                raise DataError(f"{self.name}: masks must be N x H x W matching the images "
                                f"{tuple(self.images.shape)}, got {tuple(self.masks.shape)}")
            bad = (self.masks != IGNORE_INDEX) & (self.masks >= len(self.classes))
            if bool(bad.any()):
                raise DataError(f"{self.name}: label maps hold ids >= {len(self.classes)} "
                                f"(the class count) other than the ignore index {IGNORE_INDEX}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def is_labeled(self) -> bool:
        return self.masks is not None

    @property
    def labels(self) -> Tensor:
        """The per-pixel labels (``masks``), under the name the classification probes read."""
        if self.masks is None:
            raise DataError(f"{self.name} is unlabeled")
        return self.masks

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Tensor) -> DenseSet:
        return DenseSet(self.images[indices],
                        None if self.masks is None else self.masks[indices],
                        list(self.classes), self.name, dict(self.meta))

    def unlabeled(self) -> DenseSet:
        """The same images without their label maps (an unlabeled target training set)."""
        return DenseSet(self.images, None, list(self.classes), self.name, dict(self.meta))


@dataclass
class DenseData(SourceClasses):
    """A segmentation task's splits: labeled source train / validation, the target's training
    images (labels kept only for the oracle, ``target_train_masks``) and the labeled target
    test split that is reported."""

    source_train: DenseSet
    source_val: DenseSet | None
    target_train: DenseSet  # unlabeled: masks None
    target_test: DenseSet | None
    target_train_masks: Tensor | None = None  # the oracle's labels (analysis only)
    target_val: None = None  # no labeled target validation in segmentation tasks
    target_shots: None = None


# -- joint augmentation ------------------------------------------------------------------------

def joint_transform(policy: str):
    """The ``torchvision.transforms.v2`` pipeline of ``policy`` for one image and its mask:
    ``flip`` (horizontal, p 0.5), ``affine`` (shift 10 %, scale 0.8-1.2, rotation 10 degrees),
    ``standard`` both. Pixels the warp brings in from outside are 0 in the image and
    ``IGNORE_INDEX`` in the mask."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    if policy not in AUGMENT_POLICIES:
        raise ValueError(f"no dense augmentation {policy!r}; choose from "
                         f"{', '.join(AUGMENT_POLICIES)}")
    steps = []
    if policy in ("flip", "standard"):
        steps.append(v2.RandomHorizontalFlip(0.5))
    if policy in ("affine", "standard"):
        steps.append(v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.8, 1.2),
                                     fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}))
    return v2.Compose(steps) if steps else None


class JointAugmenter:
    """Augments a batch of float images and their masks with the same random geometry per
    sample; a pure function of ``(seed, stream, step)`` (the global RNG is forked and
    restored, so training randomness is untouched)."""

    def __init__(self, policy: str, seed: int) -> None:
        self.policy, self.seed = policy, seed
        self.transform = joint_transform(policy)

    def __call__(self, images: Tensor, masks: Tensor | None, stream: int,
                 step: int) -> tuple[Tensor, Tensor | None]:
        if self.transform is None:
            return images, masks
        from torchvision import tv_tensors

        out_images, out_masks = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + stream) * 1_000_033 + step) % 2**63)
            for index in range(images.shape[0]):
                image = tv_tensors.Image(images[index])
                if masks is None:
                    out_images.append(self.transform(image).as_subclass(Tensor))
                    continue
                image, mask = self.transform(image, tv_tensors.Mask(masks[index]))
                out_images.append(image.as_subclass(Tensor))
                out_masks.append(mask.as_subclass(Tensor))
        return (torch.stack(out_images),
                torch.stack(out_masks) if masks is not None else None)


# -- batch streams -----------------------------------------------------------------------------

class DenseStreams:
    """Typed batches for step ``k`` of a segmentation run: ``SegmentedBatch`` (source; the
    oracle's labeled target) and ``UnlabeledBatch`` (target: images only)."""

    def __init__(self, data: DenseData, batch_size: int, seed: int, device: torch.device,
                 source: bool = True, target: bool = True, labeled_target: bool = False,
                 augment: str = "none", target_augment: str = "none") -> None:
        self.device = device
        self.augmenter = JointAugmenter(augment, seed)
        self.target_augmenter = JointAugmenter(target_augment, seed)
        self.data = data
        self.source = IndexStream(len(data.source_train), batch_size, seed * 3) \
            if source else None
        self.target = IndexStream(len(data.target_train), batch_size, seed * 3 + 1) \
            if target else None
        self.labeled_target = None
        if labeled_target:
            if data.target_train_masks is None:
                raise DataError("this method trains on target labels (the oracle), but the "
                                "target training set has no label maps")
            self.labeled_target = IndexStream(len(data.target_train), batch_size, seed * 3 + 2)

    def _segmented(self, images: Tensor, masks: Tensor, indices: Tensor, stream: int,
                   step: int, augmenter: JointAugmenter) -> SegmentedBatch:
        pixels = as_float(images[indices]).to(self.device)
        labels = masks[indices].to(self.device).long()
        pixels, labels = augmenter(pixels, labels, stream, step)
        return SegmentedBatch(pixels, labels, indices)

    def batch(self, step: int) -> DomainBatch:
        data = self.data
        source = target = labeled = None
        if self.source is not None:
            assert data.source_train.masks is not None
            source = self._segmented(data.source_train.images, data.source_train.masks,
                                     self.source.indices(step), 0, step, self.augmenter)
        if self.target is not None:
            indices = self.target.indices(step)
            pixels = as_float(data.target_train.images[indices]).to(self.device)
            pixels, _ = self.target_augmenter(pixels, None, 1, step)
            target = UnlabeledBatch(pixels, indices)
        if self.labeled_target is not None:
            assert data.target_train_masks is not None
            labeled = self._segmented(data.target_train.images, data.target_train_masks,
                                      self.labeled_target.indices(step), 2, step,
                                      self.target_augmenter)
        return DomainBatch(source, target, labeled)
