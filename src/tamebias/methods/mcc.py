"""MCC: minimum class confusion on unlabeled target predictions — a loss term any method adds
through config (``method.mcc.weight=1``, as DANN and CDAN do), and a registered method that is
source cross-entropy plus the term."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.norm import use_domain
from .base import Method, Stage, StepContext


@dataclass
class MCCConfig:
    """``weight`` of the term (0: off); ``temperature`` rescales the logits before the softmax
    (the paper's T = 2.5)."""

    weight: float = 0.0
    temperature: float = 2.5


def validate_mcc(config: MCCConfig) -> None:
    if config.weight < 0:
        raise ValueError("method.mcc.weight must not be negative")
    if not config.temperature > 0:
        raise ValueError("method.mcc.temperature must be positive")


def class_confusion(logits: Tensor, temperature: float) -> Tensor:
    """The normalized class-confusion matrix (C x C) of a batch of target logits:
    ``P^T W P`` with P the softmax of ``logits / T`` and W the diagonal of the entropy weights
    ``1 + exp(-H(p_i))`` rescaled to sum to the batch size, then each column divided by its
    sum (Jin et al., Eq. 2-6)."""
    probabilities = (logits.float() / temperature).softmax(1)
    entropy = -(probabilities * torch.log(probabilities + 1e-5)).sum(1)
    weights = 1 + torch.exp(-entropy)
    weights = (len(logits) * weights / weights.sum()).unsqueeze(1)
    confusion = (probabilities * weights).t() @ probabilities
    return confusion / confusion.sum(0, keepdim=True)


def class_confusion_loss(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """Sum of the off-diagonal (between-class) confusion, divided by the class count."""
    confusion = class_confusion(logits, temperature)
    return (confusion.sum() - confusion.trace()) / confusion.shape[0]


def mcc_term(config: MCCConfig, target_logits: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted MCC term for a method's step (zero, no metric, when off)."""
    if config.weight <= 0 or target_logits is None:
        return torch.zeros((), device=None if target_logits is None
                           else target_logits.device), {}
    loss = class_confusion_loss(target_logits, config.temperature)
    return config.weight * loss, {"mcc_loss": loss.detach()}


@dataclass
class MCCMethodConfig(MethodConfig):
    """The paper's settings: T = 2.5, weight 1; SGD (momentum 0.9, weight decay 5e-4) with
    the inverse-decay schedule, lr 0.005."""

    name: str = "mcc"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        "sgd", lr=0.005, momentum=0.9, weight_decay=5e-4, schedule="inverse"))
    mcc: MCCConfig = field(default_factory=lambda: MCCConfig(weight=1.0))


class MCC(Method):
    """Minimum class confusion (Jin et al., ECCV 2020, arXiv:1912.03699).

    Nothing is aligned between domains: on each unlabeled target batch, the temperature-scaled
    predictions give a class-confusion matrix (how often two classes are predicted together,
    weighted toward confident samples) and the loss drives its between-class part down, so
    target predictions become confident *and* separate classes without collapsing. One stage:
    source cross-entropy plus the MCC term, one optimizer over the classifier."""

    Config = MCCMethodConfig
    description = "MCC: minimum class confusion on target predictions (Jin et al. 2020)"
    domain_aware = True

    def __init__(self, config: MCCMethodConfig, classifier) -> None:
        super().__init__(config, classifier)
        validate_mcc(config.mcc)

    def stages(self) -> list[Stage]:
        return [Stage("adapt", self.step, {"model": [self.classifier]}, self.config.optim,
                      self.config.steps)]

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        with ctx.autocast(), use_domain(self.classifier, len(source)):
            logits = self.classifier(torch.cat([source.images, target.images])).float()
        source_logits = logits[: len(source)]
        class_loss = F.cross_entropy(source_logits, source.labels)
        mcc_loss, metrics = mcc_term(self.config.mcc, logits[len(source):])
        ctx.update("model", class_loss + mcc_loss)
        return {"class_loss": class_loss.detach(), **metrics,
                "source_accuracy": (source_logits.detach().argmax(1)
                                    == source.labels).float().mean()}
