"""Segmentation metrics and the label-free validators over pixels.

Scores come from one confusion matrix accumulated over every labelled pixel (rows: true class,
columns: predicted class; pixels with the ignore index are left out), as the Cityscapes
benchmark and the GTA5->Cityscapes papers compute them:

- IoU of class c = TP / (TP + FP + FN); a class absent from the ground truth (no pixel of it
  in the evaluated set) has no IoU (``None``) and is left out of the mean, as the papers'
  evaluation scripts leave out a NaN;
- mIoU = the mean over the classes that have an IoU;
- pixel accuracy = correct pixels / labelled pixels.

The validators read the model's per-pixel class probabilities on unlabelled target images and
treat every pixel as a sample: ``entropy`` (minus the mean pixel entropy) and ``im`` (entropy
of the mean pixel prediction minus the mean pixel entropy), higher is better, as for
classification (``evaluation/validators.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..data.dense import IGNORE_INDEX, DenseSet
from ..data.imageset import as_float


def dense_confusion(predictions: Tensor, masks: Tensor, num_classes: int,
                    ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``K x K`` int64 confusion matrix over the pixels whose label is not ``ignore_index``."""
    masks = masks.long().flatten()
    predictions = predictions.long().flatten()
    keep = masks != ignore_index
    pairs = masks[keep] * num_classes + predictions[keep]
    return torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, num_classes)


@dataclass
class SegmentationScores:
    miou: float  # mean over classes present in the ground truth
    pixel_accuracy: float
    per_class_iou: list[float | None]  # None: class absent from the ground truth
    classes: list[str]
    pixels: int  # labelled pixels evaluated
    confusion: list[list[int]]

    def to_dict(self) -> dict:
        return asdict(self)


def scores_from_confusion(confusion: Tensor, classes: list[str]) -> SegmentationScores:
    """Per-class IoU, mIoU and pixel accuracy of a confusion matrix (module docstring)."""
    confusion = confusion.double().cpu()
    true_positive = confusion.diagonal()
    truth = confusion.sum(1)
    predicted = confusion.sum(0)
    union = truth + predicted - true_positive
    per_class: list[float | None] = [
        float(tp / u) if t > 0 else None
        for tp, t, u in zip(true_positive.tolist(), truth.tolist(), union.tolist(), strict=True)]
    present = [value for value in per_class if value is not None]
    total = float(confusion.sum())
    return SegmentationScores(
        miou=sum(present) / len(present) if present else 0.0,
        pixel_accuracy=float(true_positive.sum()) / total if total else 0.0,
        per_class_iou=per_class, classes=list(classes), pixels=int(total),
        confusion=confusion.long().tolist())


@torch.no_grad()
def dense_predictions(model: Callable[[Tensor], Tensor], images: Tensor, device: torch.device,
                      batch_size: int = 64) -> Tensor:
    """Per-pixel class ids (``N x H x W``, int64, on the CPU) for uint8 images."""
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = as_float(images[start:start + batch_size].to(device))
        outputs.append(model(chunk).argmax(1).cpu())
    return torch.cat(outputs)


@torch.no_grad()
def evaluate_dense(model: Callable[[Tensor], Tensor], dataset: DenseSet, device: torch.device,
                   batch_size: int = 64) -> SegmentationScores:
    """Segmentation scores of ``model`` (images in [0, 1] -> ``B x K x H x W`` logits) on a
    labelled dense set, accumulated batch by batch."""
    if dataset.masks is None:
        raise ValueError(f"{dataset.name} has no label maps to evaluate against")
    confusion = torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.int64)
    for start in range(0, len(dataset), batch_size):
        chunk = as_float(dataset.images[start:start + batch_size].to(device))
        predictions = model(chunk).argmax(1).cpu()
        confusion += dense_confusion(predictions, dataset.masks[start:start + batch_size],
                                     dataset.num_classes)
    return scores_from_confusion(confusion, dataset.classes)


def _entropy(probabilities: Tensor) -> Tensor:
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(1)


def pixel_validators(logits: Tensor) -> dict[str, float]:
    """``entropy`` and ``im`` over every pixel of ``B x K x H x W`` logits (higher is better)."""
    probabilities = logits.double().softmax(1)
    per_pixel = probabilities.movedim(1, -1).reshape(-1, probabilities.shape[1])
    mean_entropy = _entropy(per_pixel).mean()
    return {"entropy": float(-mean_entropy),
            "im": float(_entropy(per_pixel.mean(0, keepdim=True))[0] - mean_entropy)}


class DenseProbe:
    """The pixel validators on a fixed sample of unlabelled target training images (no label
    is read), recorded at every evaluation."""

    def __init__(self, target_images: Tensor, device: torch.device, samples: int = 128,
                 seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(target_images), generator=generator)[:samples].sort().values
        self.images, self.device = target_images[chosen], device

    @torch.no_grad()
    def scores(self, method: torch.nn.Module) -> dict[str, float]:
        was_training = method.training
        method.eval()
        try:
            logits = torch.cat([method.predict(as_float(self.images[i:i + 64].to(self.device)))
                                .float().cpu() for i in range(0, len(self.images), 64)])
        finally:
            method.train(was_training)
        return pixel_validators(logits)
