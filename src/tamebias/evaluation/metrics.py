"""Accuracy, per-class accuracy and confusion matrices, computed on device in large batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.imageset import ImageSet, as_float
from .confusion import confusion_matrix
from .openset import evaluate_logits

__all__ = ["Evaluation", "confusion_matrix", "evaluate", "predict", "prediction_statistics",
           "summarize"]


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
    """Outputs of ``model`` for uint8 images (or float feature vectors), moved to ``device``
    one chunk at a time."""
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(device, non_blocking=True)
        outputs.append(model(as_float(chunk)))
    return torch.cat(outputs)


def prediction_statistics(
    model: Callable[[Tensor], Tensor], images: Tensor, classes: list[str],
    device: torch.device,
) -> dict[str, Any]:
    """What a model predicts on unlabeled images, without labels: the share of each predicted
    class, the mean top-class probability and the mean prediction entropy (nats)."""
    logits = predict(model, images, device).float()
    probabilities = logits.softmax(1)
    shares = torch.bincount(probabilities.argmax(1), minlength=len(classes)).double()
    shares = shares / max(len(images), 1)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(1)
    return {"count": len(images),
            "predicted_class_share": dict(zip(classes, shares.tolist(), strict=False)),
            "mean_confidence": float(probabilities.max(1).values.mean()) if len(images) else None,
            "mean_entropy": float(entropy.mean()) if len(images) else None}


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
