"""Accuracy, per-class accuracy and confusion matrices, computed on device in large batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.imageset import ImageSet
from .confusion import confusion_matrix
from .openset import evaluate_logits

__all__ = ["Evaluation", "confusion_matrix", "evaluate", "predict", "summarize"]


@dataclass
class Evaluation:
    accuracy: float
    mean_class_accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    count: int
    open_set: dict | None = None  # evaluation/openset.py, when a rejection rule was given
    classes: list[str] | None = None  # the class names, "unknown" last under a category shift

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(confusion: Tensor) -> Evaluation:
    confusion = confusion.cpu()
    total = int(confusion.sum())
    per_class_count = confusion.sum(1)
    correct = confusion.diagonal()
    per_class = (correct.double() / per_class_count.clamp(min=1)).tolist()
    present = per_class_count > 0
    mean_class = float((correct.double() / per_class_count.clamp(min=1))[present].mean())
    return Evaluation(
        accuracy=float(correct.sum()) / max(total, 1),
        mean_class_accuracy=mean_class if present.any() else 0.0,
        per_class_accuracy=per_class,
        confusion=confusion.tolist(),
        count=total,
    )


@torch.no_grad()
def predict(
    model: Callable[[Tensor], Tensor], images: Tensor, device: torch.device,
    batch_size: int = 1024,
) -> Tensor:
    """Outputs of ``model`` for uint8 images, moved to ``device`` one chunk at a time."""
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(device, non_blocking=True)
        outputs.append(model(chunk.float().div_(255)))
    return torch.cat(outputs)


def evaluate(
    model: Callable[[Tensor], Tensor], dataset: ImageSet, device: torch.device,
    batch_size: int = 1024, rejection: Any = None,
) -> Evaluation:
    """Classification metrics of ``model`` (images in [0, 1] -> logits) on ``dataset``; with a
    ``rejection`` rule (openset.RejectionRule) also the open-set metrics, from the same pass."""
    logits = predict(model, dataset.images, device, batch_size)
    predictions = logits.argmax(1)
    labels = dataset.labels.to(predictions.device)
    result = summarize(confusion_matrix(predictions, labels, dataset.num_classes))
    if rejection is not None:
        result.open_set = evaluate_logits(logits, labels, rejection).to_dict()
    result.classes = list(dataset.classes)
    return result
