"""Target oracle: train on the labeled target training set; the ceiling of adaptation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from .base import DataNeeds, Method, Stage, StepContext


@dataclass
class OracleConfig(MethodConfig):
    name: str = "oracle"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


class Oracle(Method):
    """Target-trained oracle: cross-entropy on *labeled target* training data with the same
    backbone and budget. It uses target labels, so it is an analysis row (the ceiling), never
    an adaptation result. One stage, ``target``; always selected by ``last``."""

    Config = OracleConfig
    description = "ceiling: trained on target labels (analysis only, never a headline)"
    needs = DataNeeds(target=False, labeled_target=True, source=False)
    analysis_only = True
    selection = "last"  # source validation says nothing about a target-trained model

    def stages(self) -> list[Stage]:
        return [
            Stage("target", self.target_step, {"classifier": [self.classifier]},
                  self.config.optim, self.config.steps)
        ]

    def target_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.labeled_target is not None
        with ctx.autocast():
            logits = self.classifier(batch.labeled_target.images)
            loss = F.cross_entropy(logits, batch.labeled_target.labels)
        ctx.update("classifier", loss)
        return {"loss": loss.detach()}
