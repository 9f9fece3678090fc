"""Source only: train on labeled source data, apply to the target unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from .base import DataNeeds, Method, Stage, StepContext


@dataclass
class SourceOnlyConfig(MethodConfig):
    name: str = "source_only"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


class SourceOnly(Method):
    """Source only (no adaptation): cross-entropy on the labeled source batch; the baseline
    every adaptation method must beat. One stage, ``source``."""

    Config = SourceOnlyConfig
    description = "no adaptation: cross-entropy on labeled source; the baseline to beat"
    needs = DataNeeds(target=False)
    demo = True

    def stages(self) -> list[Stage]:
        return [
            Stage("source", self.source_step, {"classifier": [self.classifier]},
                  self.config.optim, self.config.steps)
        ]

    def source_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        with ctx.autocast():
            logits = self.classifier(batch.source.images)
            loss = F.cross_entropy(logits, batch.source.labels)
        ctx.update("classifier", loss)
        accuracy = (logits.detach().argmax(1) == batch.source.labels).float().mean()
        return {"loss": loss.detach(), "source_accuracy": accuracy}
