"""Losses and stage helpers shared by methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import OptimConfig
from ..data.batch import DomainBatch, LabeledBatch
from ..models.classifier import Classifier
from .base import Stage, StepContext


def classification_step(
    classifier: Classifier, batch: LabeledBatch, ctx: StepContext, optimizer: str
) -> dict[str, Tensor]:
    """One cross-entropy update of ``classifier`` on a labeled batch."""
    with ctx.autocast():
        logits = classifier(batch.images)
        loss = F.cross_entropy(logits, batch.labels)
    ctx.update(optimizer, loss)
    accuracy = (logits.detach().argmax(1) == batch.labels).float().mean()
    return {"loss": loss.detach(), "source_accuracy": accuracy}


def source_stage(classifier: Classifier, steps: int, optim: OptimConfig,
                 name: str = "source") -> Stage:
    """Train ``classifier`` on labeled source batches (source-only training)."""

    def step(batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.source is not None
        return classification_step(classifier, batch.source, ctx, "classifier")

    return Stage(name, step, {"classifier": [classifier]}, optim, steps)


def domain_labels(source_count: int, target_count: int, device: torch.device) -> Tensor:
    """1 for source, 0 for target, as floats for binary cross-entropy."""
    return torch.cat([torch.ones(source_count, device=device),
                      torch.zeros(target_count, device=device)])


def binary_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return ((logits.detach() > 0).float() == labels).float().mean()
