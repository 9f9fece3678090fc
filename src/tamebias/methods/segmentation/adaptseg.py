"""AdaptSegNet: output-space adversarial alignment of segmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ...config import MethodConfig, OptimConfig
from ...data.batch import DomainBatch
from ...models.critics import PixelCritic
from ...models.segmenters import Segmenter
from ..base import Method, Stage, StepContext
from .common import output_adversarial_step, softmax_map, source_stage


@dataclass
class AdaptSegConfig(MethodConfig):
    name: str = "adaptseg"
    source_steps: int = 0  # optional source-only warm-up stage (the paper trains jointly)
    steps: int = 2000
    adversarial_weight: float = 0.001  # the paper's single-level lambda_adv
    critic_width: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig("adam", lr=1e-4, betas=(0.9, 0.99)))


class AdaptSeg(Method):
    """AdaptSegNet (Tsai et al., CVPR 2018, arXiv:1802.10349), single level: a fully
    convolutional critic (``PixelCritic``) learns to tell the segmenter's softmax maps on
    source scenes from those on target scenes; the segmenter minimizes source pixel
    cross-entropy plus ``adversarial_weight`` x the critic's loss on target maps labelled as
    source. Stages: optional ``source`` warm-up, then ``adapt`` (two updates per step:
    ``segmenter``, ``critic``)."""

    Config = AdaptSegConfig
    description = "output-space adversarial alignment of softmax maps (AdaptSegNet)"

    def __init__(self, config: AdaptSegConfig, classifier: Segmenter) -> None:
        super().__init__(config, classifier)
        self.critic = PixelCritic(classifier.num_classes, config.critic_width)

    def stages(self) -> list[Stage]:
        config = self.config
        stages = []
        if config.source_steps and "classifier" not in self.initialized:
            stages.append(source_stage(self.classifier, config.source_steps, config.optim))
        stages.append(Stage("adapt", self.adapt_step,
                            {"segmenter": [self.classifier], "critic": [self.critic]},
                            {"segmenter": config.optim, "critic": config.critic_optim},
                            config.steps))
        return stages

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        return output_adversarial_step(self.classifier, self.critic, batch, ctx, softmax_map,
                                       self.config.adversarial_weight)
