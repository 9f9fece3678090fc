"""Self-training on unlabeled target data as a method: source cross-entropy plus the
self-training term of ``methods/parts.py`` (pseudo-labels by default; ``fixmatch`` and
``mean_teacher`` are recipes of this method with another mode, ``recipes.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.norm import use_domain
from .base import DataNeeds, Method, Stage, StepContext
from .parts import SelfTraining, SelfTrainingConfig, needs_strong_view


@dataclass
class SelfTrainingMethodConfig(MethodConfig):
    """Source cross-entropy plus the self-training term; recipes ``fixmatch`` and
    ``mean_teacher`` set another mode."""

    name: str = "self_training"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    self_training: SelfTrainingConfig = field(
        default_factory=lambda: SelfTrainingConfig(mode="pseudo_label"))


def source_and_self_training_step(method: Method, batch: DomainBatch,
                                  ctx: StepContext) -> dict[str, Tensor]:
    source, target = batch.source, batch.target
    assert source is not None and target is not None
    classifier = method.classifier
    with ctx.autocast(), use_domain(classifier, "source"):
        logits = classifier(source.images)
        class_loss = F.cross_entropy(logits.float(), source.labels)
    target_loss, metrics = method.self_training.loss(target, ctx)
    ctx.update("model", class_loss + target_loss)
    method.self_training.after_update(ctx)
    return {"class_loss": class_loss.detach(),
            "source_accuracy": (logits.detach().argmax(1) == source.labels).float().mean(),
            **metrics}


class SelfTrainingMethod(Method):
    """Source cross-entropy plus target self-training (pseudo-labels by default)."""

    Config = SelfTrainingMethodConfig
    description = "pseudo-labeling: confident target predictions as labels (online or rounds)"
    needs = DataNeeds(target=True)
    domain_aware = True

    def __init__(self, config: SelfTrainingMethodConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        self.self_training = SelfTraining(config.self_training, classifier)
        self.needs = DataNeeds(strong_target=needs_strong_view(config.self_training))

    def stages(self) -> list[Stage]:
        return [Stage("adapt", self.step, {"model": [self.classifier]}, self.config.optim,
                      self.config.steps)]

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        return source_and_self_training_step(self, batch, ctx)
