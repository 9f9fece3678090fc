"""The confusion matrix, the one count every classification and open-set metric starts from."""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts with rows = true class, columns = predicted class, computed on device."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, -1)
