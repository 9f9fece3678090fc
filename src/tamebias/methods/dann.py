"""DANN: domain-adversarial training through a gradient-reversal layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch, UnlabeledBatch
from ..models.classifier import Classifier
from ..models.critics import DomainCritic
from ..models.layers import reverse_gradient
from ..models.norm import use_domain
from .base import DataNeeds, Method, Stage, StepContext
from .common import binary_accuracy, domain_labels
from .parts import (
    MCCConfig,
    SelfTraining,
    SelfTrainingConfig,
    mcc_term,
    needs_strong_view,
    validate_mcc,
)


@dataclass
class DANNConfig(MethodConfig):
    name: str = "dann"
    steps: int = 3000
    # source-only's optimizer (Adam 1e-3, constant): the paper's SGD (0.01, momentum 0.9,
    # inverse decay) trains the classifier more slowly, and the reversed domain gradient then
    # reshapes features that have not yet learned the classes (docs/colour-shift.md)
    optim: OptimConfig = field(default_factory=OptimConfig)
    domain_weight: float = 1.0  # the reversal coefficient's final value
    ramp: bool = True  # coefficient = weight * (2 / (1 + exp(-10 p)) - 1)
    critic_hidden: tuple[int, ...] = (500, 500)
    critic_dropout: float = 0.0
    # a target self-training term on top (methods/parts.py), e.g. mode=pseudo_label
    self_training: SelfTrainingConfig = field(default_factory=SelfTrainingConfig)
    # minimum class confusion on the target predictions (methods/mcc.py): method.mcc.weight=1
    mcc: MCCConfig = field(default_factory=MCCConfig)


class DANN(Method):
    """Domain-adversarial neural network (Ganin & Lempitsky, arXiv:1409.7495 / 1505.07818).

    Aligns source and target *features*: a domain critic learns to tell them apart, and its
    loss reaches the encoder through a gradient-reversal layer, so one optimizer over encoder,
    head and critic minimizes the class loss while the encoder maximizes the critic's loss.
    The reversal coefficient ramps from 0 to ``domain_weight`` over training. One stage."""

    Config = DANNConfig
    description = "DANN: feature alignment through gradient reversal (Ganin & Lempitsky 2015)"
    domain_aware = True
    # batch norm whose statistics see both domains (one pass over source + target) and weak
    # views of both: without them DANN falls below source-only on a colour/texture shift
    # (docs/colour-shift.md); set the keys (e.g. model.norm=none) for the paper's plain form
    part_defaults = {"model.norm": "bn", "data.augment.source": "weak",
                     "data.augment.target": "weak"}

    def __init__(self, config: DANNConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        self.critic = DomainCritic(classifier.feature_dim, config.critic_hidden,
                                   config.critic_dropout)
        self.self_training = SelfTraining(config.self_training, classifier)
        self.needs = DataNeeds(strong_target=needs_strong_view(config.self_training))
        validate_mcc(config.mcc)

    def coefficient(self, progress: float) -> float:
        ramp = 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0 if self.config.ramp else 1.0
        return self.config.domain_weight * ramp

    def stages(self) -> list[Stage]:
        return [Stage("adapt", self.adapt_step, {"model": [self.classifier, self.critic]},
                      self.config.optim, self.config.steps)]

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        coefficient = self.coefficient(ctx.progress)
        with ctx.autocast(), use_domain(self.classifier, len(source)):
            # one encoder pass over both domains; domain-specific norms split it at the seam
            features = self.classifier.features(torch.cat([source.images, target.images]))
            source_features = features[: len(source)]
            class_logits = self.classifier.head(source_features)
            class_loss = F.cross_entropy(class_logits, source.labels)
            labels = domain_labels(len(source), len(target), features.device)
            domain_logits = self.critic(reverse_gradient(features, coefficient))
            domain_loss = F.binary_cross_entropy_with_logits(domain_logits.float(), labels)
            mcc_loss, mcc_metrics = mcc_term(self.config.mcc, self.classifier.head(
                features[len(source):]) if self.config.mcc.weight > 0 else None)
        return self.finish(ctx, target, class_loss + domain_loss + mcc_loss, {
            **mcc_metrics,
            "class_loss": class_loss.detach(),
            "domain_loss": domain_loss.detach(),
            "domain_accuracy": binary_accuracy(domain_logits, labels),
            "source_accuracy": (class_logits.detach().argmax(1) == source.labels).float().mean(),
        })

    def finish(self, ctx: StepContext, target: UnlabeledBatch, loss: Tensor,
               metrics: dict[str, Tensor]) -> dict[str, Tensor]:
        """The step's one update: ``loss`` plus the optional self-training term on target
        (shared by the DANN family, e.g. CDAN); returns the step's metrics."""
        target_loss, extra = self.self_training.loss(target, ctx)
        ctx.update("model", loss + target_loss)
        self.self_training.after_update(ctx)
        return {**(extra if self.self_training.enabled else {}), **metrics}
