"""MDD: margin disparity discrepancy, minimized through an adversarial auxiliary head."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.layers import reverse_gradient
from ..models.norm import use_domain
from .base import Method, Stage, StepContext


@dataclass
class MDDConfig(MethodConfig):
    """The paper's settings: margin gamma = 4, trade-off 1; the reversal coefficient warms up
    from 0 to ``reversal`` = 0.1 (2 / (1 + exp(-10 p)) - 1 scaled); SGD (momentum 0.9, weight
    decay 5e-4) with the inverse-decay schedule."""

    name: str = "mdd"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        "sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="inverse"))
    margin: float = 4.0
    weight: float = 1.0
    reversal: float = 0.1


def margin_disparity(source_adversarial: Tensor, source_predictions: Tensor,
                     target_adversarial: Tensor, target_predictions: Tensor,
                     margin: float) -> Tensor:
    """The adversarial head's loss (its negative is the empirical disparity discrepancy):
    ``margin * CE(f'(source), h(source)) - mean log(1 - softmax(f'(target))[h(target)])``,
    with h the main head's hard predictions. Minimizing it makes the auxiliary head agree with
    h on source and disagree on target; the features, through gradient reversal, do the
    opposite."""
    source_term = F.cross_entropy(source_adversarial.float(), source_predictions)
    target_probabilities = target_adversarial.float().softmax(1)
    disagreement = 1 - target_probabilities.gather(1, target_predictions.unsqueeze(1))
    target_term = -torch.log(disagreement.clamp_min(1e-6)).mean()
    return margin * source_term + target_term


class MDD(Method):
    """Margin disparity discrepancy (Zhang et al., ICML 2019, arXiv:1904.05801).

    Aligns the domains as the classifier sees them: an auxiliary head f' (same form as the
    main head) is trained to agree with the main head's predictions on source (with margin
    weight gamma) and to disagree on target; the features, through gradient reversal, shrink
    that disparity. The main head learns from source labels only. One stage, one optimizer
    over encoder, main head and auxiliary head."""

    Config = MDDConfig
    description = "MDD: margin disparity discrepancy via an adversarial head (Zhang et al. 2019)"
    domain_aware = True

    def __init__(self, config: MDDConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        if config.margin <= 0:
            raise ValueError("method.margin must be positive")
        self.adversarial_head = copy.deepcopy(classifier.classifier_head)
        self.adversarial_head.reset_parameters()

    def coefficient(self, progress: float) -> float:
        return self.config.reversal * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)

    def stages(self) -> list[Stage]:
        return [Stage("adapt", self.step, {"model": [self.classifier, self.adversarial_head]},
                      self.config.optim, self.config.steps)]

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        count = len(source)
        with ctx.autocast(), use_domain(self.classifier, count):
            features = self.classifier.features(torch.cat([source.images, target.images]))
            logits = self.classifier.head(features)
            class_loss = F.cross_entropy(logits[:count].float(), source.labels)
            predictions = logits.detach().argmax(1)
            adversarial = self.adversarial_head(
                reverse_gradient(features, self.coefficient(ctx.progress)))
            transfer_loss = margin_disparity(adversarial[:count], predictions[:count],
                                             adversarial[count:], predictions[count:],
                                             self.config.margin)
        ctx.update("model", class_loss + self.config.weight * transfer_loss)
        return {"class_loss": class_loss.detach(), "transfer_loss": transfer_loss.detach(),
                "source_accuracy": (predictions[:count] == source.labels).float().mean()}
