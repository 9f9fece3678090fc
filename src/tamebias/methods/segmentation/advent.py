"""ADVENT: entropy minimization and adversarial entropy alignment for segmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ...config import MethodConfig, OptimConfig
from ...data.batch import DomainBatch
from ...models.critics import PixelCritic
from ...models.segmenters import Segmenter
from ..base import Method, Stage, StepContext
from .common import output_adversarial_step, self_information, source_stage


@dataclass
class AdventConfig(MethodConfig):
    name: str = "advent"
    source_steps: int = 0  # optional source-only warm-up stage (the paper trains jointly)
    steps: int = 2000
    adversarial_weight: float = 0.001  # AdvEnt's lambda_adv
    entropy_weight: float = 0.0  # > 0: AdvEnt + MinEnt
    critic_width: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig("adam", lr=1e-4, betas=(0.9, 0.99)))


@dataclass
class MinEntConfig(AdventConfig):
    name: str = "minent"
    adversarial_weight: float = 0.0
    entropy_weight: float = 0.001  # MinEnt's lambda_ent


class Advent(Method):
    """ADVENT (Vu et al., CVPR 2019, arXiv:1811.12833). AdvEnt: a fully convolutional critic
    on the weighted self-information maps ``-p log p`` (per class, normalized by log K) tells
    source from target; the segmenter minimizes source pixel cross-entropy plus
    ``adversarial_weight`` x the critic's loss on target maps labelled as source, plus
    ``entropy_weight`` x the mean normalized target pixel entropy (MinEnt; ``minent`` is this
    method with the critic off). Stages: optional ``source`` warm-up, then ``adapt``."""

    Config = AdventConfig
    description = "adversarial alignment of entropy maps (AdvEnt), plus optional MinEnt"

    def __init__(self, config: AdventConfig, classifier: Segmenter) -> None:
        super().__init__(config, classifier)
        self.critic = PixelCritic(classifier.num_classes, config.critic_width)

    def stages(self) -> list[Stage]:
        config = self.config
        stages = []
        if config.source_steps and "classifier" not in self.initialized:
            stages.append(source_stage(self.classifier, config.source_steps, config.optim))
        optimizers = {"segmenter": [self.classifier]}
        optims = {"segmenter": config.optim}
        if config.adversarial_weight:
            optimizers["critic"] = [self.critic]
            optims["critic"] = config.critic_optim
        stages.append(Stage("adapt", self.adapt_step, optimizers, optims, config.steps))
        return stages

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        return output_adversarial_step(self.classifier, self.critic, batch, ctx,
                                       self_information, self.config.adversarial_weight,
                                       self.config.entropy_weight)


class MinEnt(Advent):
    """MinEnt (Vu et al., CVPR 2019, arXiv:1811.12833): source pixel cross-entropy plus
    ``entropy_weight`` x the mean normalized pixel entropy on target; ADVENT without critic."""

    Config = MinEntConfig
    description = "entropy minimization over target pixels (ADVENT's MinEnt)"
