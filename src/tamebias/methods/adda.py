"""ADDA: adversarial discriminative domain adaptation, in two stages."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.critics import DomainCritic
from .base import Method, Stage, StepContext
from .common import information_maximization, source_stage
from .parts import adversarial_feature_step


@dataclass
class ADDAConfig(MethodConfig):
    """Defaults are the paper's digits settings: LeNet, 500-500 critic, Adam (2e-4, beta1 0.5)
    for adaptation, batch 128, 10,000 iterations per stage."""

    name: str = "adda"
    source_steps: int = 10000
    steps: int = 10000  # adaptation steps
    source_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        "adam", lr=2e-4, betas=(0.5, 0.999)))
    critic_hidden: tuple[int, ...] = (500, 500)
    # information maximization on target predictions through the fixed source head, added to
    # the target encoder's loss (SHOT's term: confident and diverse; 0 = the paper's ADDA)
    im_weight: float = 0.0


class ADDA(Method):
    """Adversarial discriminative domain adaptation (Tzeng et al., CVPR 2017,
    arXiv:1702.05464).

    Stage ``source`` trains encoder + head on labeled source (skipped when the classifier
    comes from a trained source model: ``init.weights=RUN:classifier``). Stage ``adapt``
    snapshots the encoder into a frozen source encoder, then alternates a critic update
    (source features = 1, target features = 0) and a target-encoder update with inverted
    labels (target features = 1), the GAN loss of the paper. The target encoder starts from
    the source weights; the head is never retrained, so the adapted model is target encoder +
    source head."""

    Config = ADDAConfig
    description = "ADDA: frozen source encoder, target encoder trained against a critic (2017)"
    frozen_modules = ("source_encoder",)

    def __init__(self, config: ADDAConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        self.source_encoder = copy.deepcopy(classifier)  # filled when adaptation starts
        self.critic = DomainCritic(classifier.feature_dim, config.critic_hidden)

    def stages(self) -> list[Stage]:
        stages = []
        if "classifier" not in self.initialized:
            stages.append(source_stage(self.classifier, self.config.source_steps,
                                       self.config.source_optim))
        adapt = Stage(
            "adapt", self.adapt_step,
            {"critic": [self.critic], "target_encoder": [self.classifier.backbone]},
            self.config.optim, self.config.steps, on_start=self.start_adaptation,
        )
        return [*stages, adapt]

    def start_adaptation(self) -> None:
        self.source_encoder.load_state_dict(self.classifier.state_dict())

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        target_term = information_maximization if self.config.im_weight > 0 else None
        return adversarial_feature_step(self.source_encoder, self.classifier, self.critic,
                                        source.images, target.images, ctx,
                                        target_term, self.config.im_weight)

