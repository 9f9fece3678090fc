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
    classifier: Classifier, batch: LabeledBatch, ctx: StepContext, optimizer: str,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """One cross-entropy update of ``classifier`` on a labeled batch."""
    with ctx.autocast():
        logits = classifier(batch.images)
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=label_smoothing)
    ctx.update(optimizer, loss)
    accuracy = (logits.detach().argmax(1) == batch.labels).float().mean()
    return {"loss": loss.detach(), "source_accuracy": accuracy}


def source_stage(classifier: Classifier, steps: int, optim: OptimConfig,
                 name: str = "source", label_smoothing: float = 0.0) -> Stage:
    """Train ``classifier`` on labeled source batches (source-only training), with
    ``label_smoothing`` when set (SHOT's source model)."""
    options = {"label_smoothing": label_smoothing} if label_smoothing else {}

    def step(batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.source is not None
        return classification_step(classifier, batch.source, ctx, "classifier", **options)

    return Stage(name, step, {"classifier": [classifier]}, optim, steps)


def source_and_shots(batch: DomainBatch) -> LabeledBatch:
    """The labeled images of a step: the source batch, followed by the k-shot labeled target
    batch when the run has one (semi-supervised DA's S+T)."""
    parts = [part for part in (batch.source, batch.labeled_target) if part is not None]
    if not parts:
        raise ValueError("the step has no labeled batch")
    if len(parts) == 1:
        return parts[0]
    return LabeledBatch(torch.cat([part.images for part in parts]),
                        torch.cat([part.labels for part in parts]),
                        torch.cat([part.indices for part in parts]))


def labeled_loss(classifier: Classifier, batch: DomainBatch, ctx: StepContext
                 ) -> tuple[Tensor, Tensor]:
    """Cross-entropy over the source batch plus the k-shot labeled target batch (S+T), and
    the accuracy on those images."""
    labeled = source_and_shots(batch)
    with ctx.autocast():
        logits = classifier(labeled.images)
        loss = F.cross_entropy(logits, labeled.labels)
    return loss, (logits.detach().argmax(1) == labeled.labels).float().mean()


def prediction_entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of the softmax of ``logits``."""
    log_probabilities = logits.float().log_softmax(1)
    return -(log_probabilities.exp() * log_probabilities).sum(1).mean()


def diversity(probabilities: Tensor) -> Tensor:
    """Entropy of the batch-mean prediction (SHOT's diversity term, to be *maximized*)."""
    mean = probabilities.mean(0)
    return -(mean * torch.log(mean + 1e-5)).sum()


def information_maximization(logits: Tensor, diverse: bool = True
                             ) -> tuple[Tensor, dict[str, Tensor]]:
    """SHOT's information-maximization loss on a batch of logits: mean prediction entropy
    minus (when ``diverse``) the entropy of the mean prediction: confident, and diverse over
    the batch. Returns the loss and its two parts as metrics."""
    logits = logits.float()
    entropy = prediction_entropy(logits)
    spread = diversity(logits.softmax(1)) if diverse else torch.zeros_like(entropy)
    return entropy - spread, {"entropy": entropy.detach(), "diversity": spread.detach()}


def domain_labels(source_count: int, target_count: int, device: torch.device) -> Tensor:
    """1 for source, 0 for target, as floats for binary cross-entropy."""
    return torch.cat([torch.ones(source_count, device=device),
                      torch.zeros(target_count, device=device)])


def binary_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return ((logits.detach() > 0).float() == labels).float().mean()


def rotate_batch(images: Tensor) -> tuple[Tensor, Tensor]:
    """Image i turned by (i mod 4) quarter turns, and that number (0-3), the label of rotation
    prediction. Batches arrive shuffled, so which image gets which turn is random across
    steps; every part of a concatenated batch (source, then target) gets all four turns
    equally, so the turn says nothing about the domain. One rotated copy, no host sync.
    Square images only (a quarter turn swaps height and width)."""
    if images.shape[-2:] == (1, 1):
        raise ValueError("rotation prediction turns images, and the data are feature vectors; "
                         "set method.rotation_steps=0")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError("rotation prediction needs square images, got "
                         f"{images.shape[-2]}x{images.shape[-1]}")
    rotated = torch.empty_like(images)
    for k in range(4):
        rotated[k::4] = torch.rot90(images[k::4], k, dims=(-2, -1))
    turns = torch.arange(len(images), device=images.device) % 4
    return rotated, turns


def rotation_stage(classifier: Classifier, head: torch.nn.Module, steps: int,
                   optim: OptimConfig, name: str = "rotation") -> Stage:
    """Self-supervised pretraining by rotation prediction (Gidaris et al., ICLR 2018; the first
    stage of PAC, Mishra et al. 2021): the backbone learns from the images of *both* domains,
    labels unused, to tell how far each was turned, through a 4-way ``head``. It gives a
    network trained from scratch class-agnostic features, as an ImageNet-pretrained one has,
    instead of features shaped by the source classes. Not evaluated (no class head trains)."""

    def step(batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        images = torch.cat([part.images for part in (batch.source, batch.target)
                            if part is not None])
        rotated, turns = rotate_batch(images)
        with ctx.autocast():
            logits = head(classifier.features(rotated))
            loss = F.cross_entropy(logits, turns)
        ctx.update("rotation", loss)
        return {"rotation_loss": loss.detach(),
                "rotation_accuracy": (logits.detach().argmax(1) == turns).float().mean()}

    return Stage(name, step, {"rotation": [classifier.backbone, head]}, optim, steps,
                 evaluate=False)
