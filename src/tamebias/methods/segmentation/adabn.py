"""AdaBN for segmentation: a source-trained segmenter whose batch-norm statistics are
recomputed on unlabelled target scenes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ...config import MethodConfig, OptimConfig
from ...data.batch import DomainBatch
from ..base import Method, Stage, StepContext
from .common import source_stage


@dataclass
class SegAdaBNConfig(MethodConfig):
    name: str = "adabn"
    source_steps: int = 2000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    target_batches: int = 50  # target batches averaged into the new statistics


class SegAdaBN(Method):
    """AdaBN (Li et al., arXiv:1603.04779) on a segmenter: stage ``source`` trains on labelled
    source scenes; stage ``adabn`` resets every batch norm's running statistics and replaces
    them by the exact average over ``target_batches`` unlabelled target batches (cumulative
    average, no gradient, no optimizer); weights and affine parameters stay."""

    Config = SegAdaBNConfig
    description = "source model, then batch-norm statistics recomputed on target scenes"

    def norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.classifier.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def stages(self) -> list[Stage]:
        stages = []
        if "classifier" not in self.initialized:
            stages.append(source_stage(self.classifier, self.config.source_steps,
                                       self.config.optim))
        stages.append(Stage("adabn", self.adabn_step, {}, self.config.optim,
                            self.config.target_batches, on_start=self.reset))
        return stages

    def reset(self) -> None:
        if not self.norms():
            raise ValueError("AdaBN needs batch-norm layers, and this segmenter has none")
        for layer in self.norms():
            layer.reset_running_stats()

    @torch.no_grad()
    def adabn_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.target is not None
        for layer in self.norms():
            layer.momentum = None  # cumulative: the exact mean over the batches seen
        self.classifier(batch.target.images)
        return {}
