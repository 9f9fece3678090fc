"""Class-balanced self-training for segmentation (CBST)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...config import MethodConfig, OptimConfig
from ...data.batch import DomainBatch, SegmentedBatch
from ...data.dense import IGNORE_INDEX
from ...models.segmenters import Segmenter
from ..base import Method, Stage, StepContext
from .common import after_source, pixel_accuracy, pixel_cross_entropy


@dataclass
class CBSTConfig(MethodConfig):
    name: str = "cbst"
    source_steps: int = 2000
    steps: int = 2000
    rounds: int = 4  # the teacher is refreshed from the student at the start of each round
    start_portion: float = 0.2  # share of each class's pixels pseudo-labelled, first round
    portion_step: float = 0.05  # added per round (CBST's schedule)
    max_portion: float = 0.5
    target_weight: float = 1.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


def class_balanced_labels(probabilities: Tensor, portion: float) -> Tensor:
    """Per-pixel pseudo-labels (``B x H x W``): the predicted class where the pixel's
    confidence is in the top ``portion`` of the pixels predicted as that class, else
    ``IGNORE_INDEX``. One threshold per class (CBST's class-balanced rule), so rare classes
    keep pseudo-labels instead of being drowned by the confident majority class."""
    confidence, predicted = probabilities.max(1)
    labels = torch.full_like(predicted, IGNORE_INDEX)
    for cls in predicted.unique().tolist():
        chosen = predicted == cls
        values = confidence[chosen]
        keep = max(1, int(round(portion * values.numel())))
        threshold = values.topk(keep).values[-1]
        labels[chosen & (confidence >= threshold)] = cls
    return labels


class CBST(Method):
    """Class-balanced self-training (Zou et al., ECCV 2018, arXiv:1810.07911), per pixel and
    per batch: stage ``source`` trains on labelled source scenes; stage ``self_train`` trains
    on source pixel cross-entropy plus ``target_weight`` x cross-entropy on target pixels
    pseudo-labelled by a frozen teacher with one confidence threshold per class (the top
    ``portion`` of that class's pixels in the batch); the teacher is the student snapshotted
    at each of ``rounds`` rounds, and the portion grows by ``portion_step`` per round."""

    Config = CBSTConfig
    description = "class-balanced per-pixel self-training with a round-wise teacher (CBST)"
    frozen_modules = ("teacher",)

    def __init__(self, config: CBSTConfig, classifier: Segmenter) -> None:
        super().__init__(config, classifier)
        self.teacher = copy.deepcopy(classifier)

    def stages(self) -> list[Stage]:
        return after_source(self, Stage("self_train", self.self_train_step,
                                        {"segmenter": [self.classifier]}, self.config.optim,
                                        self.config.steps, on_start=self.refresh_teacher))

    def refresh_teacher(self) -> None:
        self.teacher.load_state_dict(self.classifier.state_dict())
        self.teacher.eval()

    def round_of(self, step: int) -> int:
        return min(step * self.config.rounds // max(self.config.steps, 1),
                   self.config.rounds - 1)

    def self_train_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert isinstance(source, SegmentedBatch) and target is not None
        round_ = self.round_of(ctx.step)
        if ctx.step > 0 and round_ != self.round_of(ctx.step - 1):
            self.refresh_teacher()
        portion = min(self.config.start_portion + round_ * self.config.portion_step,
                      self.config.max_portion)
        with torch.no_grad():
            pseudo = class_balanced_labels(self.teacher(target.images).float().softmax(1),
                                           portion)
        with ctx.autocast():
            source_logits = self.classifier(source.images)
            target_logits = self.classifier(target.images)
        class_loss = pixel_cross_entropy(source_logits, source.masks)
        target_loss = pixel_cross_entropy(target_logits, pseudo)
        ctx.update("segmenter", class_loss + self.config.target_weight * target_loss)
        return {"class_loss": class_loss.detach(), "target_loss": target_loss.detach(),
                "pseudo_share": (pseudo != IGNORE_INDEX).float().mean(),
                "pixel_accuracy": pixel_accuracy(source_logits, source.masks)}
