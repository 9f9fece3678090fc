"""MCD: maximum classifier discrepancy, two heads and a three-step update."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from .base import Method, Stage, StepContext


@dataclass
class MCDConfig(MethodConfig):
    """The paper's digits settings: Adam, lr 2e-4, weight decay 5e-4; the generator step
    repeated ``generator_steps`` = 4 times per iteration."""

    name: str = "mcd"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        "adam", lr=2e-4, weight_decay=5e-4))
    generator_steps: int = 4


def discrepancy(logits_one: Tensor, logits_two: Tensor) -> Tensor:
    """Mean absolute difference of the two heads' class probabilities (the paper's L1)."""
    return (logits_one.float().softmax(1) - logits_two.float().softmax(1)).abs().mean()


class MCD(Method):
    """Maximum classifier discrepancy (Saito et al., CVPR 2018, arXiv:1712.02560).

    Aligns target features with the source *decision boundaries*: two heads F1 (the
    classifier's own) and F2 see the same features. Each iteration makes three updates:
    (A, ``source``) encoder and both heads on source labels; (B, ``heads``) the heads, encoder
    fixed, keep the source loss low while *maximizing* their disagreement on target; (C,
    ``generator``) the encoder alone, ``generator_steps`` times, *minimizes* that
    disagreement. One stage; predictions are F1's."""

    Config = MCDConfig
    description = "MCD: two heads maximize, the encoder minimizes their target discrepancy (2018)"

    def __init__(self, config: MCDConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        if config.generator_steps < 1:
            raise ValueError("method.generator_steps must be at least 1")
        self.second_head = copy.deepcopy(classifier.classifier_head)
        self.second_head.reset_parameters()

    def heads(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.classifier.head(features), self.second_head(features)

    def stages(self) -> list[Stage]:
        heads = [self.classifier.classifier_head, self.second_head]
        return [Stage("adapt", self.step,
                      {"source": [self.classifier, self.second_head], "heads": heads,
                       "generator": [self.classifier.backbone]},
                      self.config.optim, self.config.steps)]

    def source_loss(self, features: Tensor, labels: Tensor) -> Tensor:
        one, two = self.heads(features)
        return F.cross_entropy(one.float(), labels) + F.cross_entropy(two.float(), labels)

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        with ctx.autocast():  # A: encoder and both heads on source labels
            class_loss = self.source_loss(self.classifier.features(source.images),
                                          source.labels)
        ctx.update("source", class_loss)
        with ctx.autocast():  # B: heads only (features detached), maximize the discrepancy
            with torch.no_grad():
                source_features = self.classifier.features(source.images)
                target_features = self.classifier.features(target.images)
            heads_discrepancy = discrepancy(*self.heads(target_features))
            heads_loss = self.source_loss(source_features, source.labels) - heads_discrepancy
        ctx.update("heads", heads_loss)
        for _ in range(self.config.generator_steps):  # C: encoder only, minimize it
            with ctx.autocast():
                generator_loss = discrepancy(*self.heads(
                    self.classifier.features(target.images)))
            ctx.update("generator", generator_loss)
        return {"class_loss": class_loss.detach(),
                "heads_discrepancy": heads_discrepancy.detach(),
                "generator_discrepancy": generator_loss.detach()}
