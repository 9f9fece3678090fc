"""The baselines of semi-supervised domain adaptation (a few labeled target images per class,
``data.target_shots``), as MME's paper compares them: S+T and S+T with entropy minimization."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import DomainBatch
from .base import DataNeeds, Method, Stage, StepContext
from .common import labeled_loss, prediction_entropy, source_and_shots
from .parts import SourceTargetConfig


class SourceTarget(Method):
    """S+T: cross-entropy on labeled source and the few labeled target images together
    (the semi-supervised baseline of Saito et al., arXiv:1904.06487). One stage; no unlabeled
    target image is read."""

    Config = SourceTargetConfig
    description = "S+T: cross-entropy on labeled source + the k labeled target shots"
    needs = DataNeeds(target=False, target_shots=True)

    def stages(self) -> list[Stage]:
        return [Stage("train", self.step, {"model": [self.classifier]}, self.config.optim,
                      self.config.steps)]

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        loss, accuracy = labeled_loss(self.classifier, batch, ctx)
        ctx.update("model", loss)
        return {"class_loss": loss.detach(), "source_accuracy": accuracy}


@dataclass
class EntropyConfig(SourceTargetConfig):
    name: str = "ent"
    entropy_weight: float = 0.1  # MME's λ, also for this baseline


class EntropyMinimization(SourceTarget):
    """S+T plus entropy minimization on unlabeled target images (Grandvalet & Bengio 2005;
    the ENT baseline of arXiv:1904.06487): every part of the network lowers the entropy of
    its target predictions. One stage."""

    Config = EntropyConfig
    description = "ENT: S+T + entropy minimization on unlabeled target"
    needs = DataNeeds(target_shots=True)

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        labeled, target = source_and_shots(batch), batch.target
        assert target is not None
        with ctx.autocast():
            logits = self.classifier(torch.cat([labeled.images, target.images]))
            class_loss = F.cross_entropy(logits[: len(labeled)], labeled.labels)
            entropy = prediction_entropy(logits[len(labeled):])
        ctx.update("model", class_loss + self.config.entropy_weight * entropy)
        return {"class_loss": class_loss.detach(), "target_entropy": entropy.detach(),
                "source_accuracy": (logits[: len(labeled)].detach().argmax(1)
                                    == labeled.labels).float().mean()}

